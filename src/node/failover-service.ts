/**
 * Replication, ownership leases and failover on one node: the pieces in
 * src/replication and src/failover, wired to this node's containers, membership view
 * and member list. One Startable for the daemon's list.
 *
 *   - LeaseService: this node's vote on everyone's leases, and the leases it holds
 *     for its own replicated containers (renewed by a majority, or the container is
 *     killed before the lease can run out anywhere: self-fencing).
 *   - Replicator: checkpoints of its replicated containers to their standbys.
 *   - ReplicationReceiver: the replicas it keeps for others (DIR/replicas).
 *   - FailoverController: brings a replica back here when its owner is gone.
 * A witness (--witness) runs only the lease service: it votes, keeps nothing.
 */
import path from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { MscError, errText } from '../util/errors.ts'
import type { Runc } from '../runtime/runc.ts'
import type { Overlay } from '../overlay/overlay.ts'
import type { ClusterService } from '../cluster/cluster-service.ts'
import type { TreeDestination, TreeHeader } from '../protocols/image/index.ts'
import type { FailoverSummary, ReplicationInfo } from '../api/types.ts'
import { LeaseService, leasePaths } from '../failover/lease-service.ts'
import { LeaseGuard, LEASE_GUARD_SCRIPT } from '../failover/lease-guard.ts'
import { quorum, type LeaseProof } from '../failover/grant.ts'
import { FailoverController } from '../failover/failover.ts'
import { ReplicaStore } from '../replication/replica-store.ts'
import { ReplicationReceiver } from '../replication/receiver.ts'
import { Replicator, type ReplicatedContainer } from '../replication/replicator.ts'
import { REPLICATE_PROTOCOL } from '../replication/messages.ts'
import { loadBundle } from '../runtime/bundle.ts'
import type { ContainerManager, ContainerRecord } from './container-manager.ts'
import type { DataDir } from './data-dir.ts'
import type { EventLog } from './events.ts'
import { ReplicaOps } from './replica-ops.ts'

export interface FailoverServiceInit {
  dumpIntervalMs: number
  leaseMs: number
  witness: boolean
  allowPrivilegedBundles: boolean
  overlay: Overlay
  cluster: ClusterService
  privateKey: PrivateKey
  manager: ContainerManager
  runc: Runc
  dataDir: DataDir
  events: EventLog
  logger: Logger
  /** `msc-NODEID-`: the lease guard takes down the LAN link of a lan container it kills (src/network/lan-netns.ts names its namespace so). */
  lanNetnsPrefix?: string
  /** The daemon's fencing: another node owns `name` at `epoch`; our copy stops for good. */
  fence: (name: string, owner: string, epoch: number) => Promise<void>
}

const LIVE_CLAIMS = new Set(['running', 'paused', 'created'])

export class FailoverService {
  readonly lease: LeaseService
  private readonly i: FailoverServiceInit
  private readonly log: Logger
  private readonly store: ReplicaStore
  private readonly receiver: ReplicationReceiver
  private readonly ops: ReplicaOps
  private readonly replicator?: Replicator
  private readonly failover?: FailoverController
  private readonly guard: LeaseGuard
  private ownTimer?: NodeJS.Timeout
  private stopped = false
  private readonly acquiring = new Set<string>()
  /** Containers being killed because their lease ran out here. */
  private readonly fencing = new Set<string>()
  /** Replicated containers running here without a lease, since when (ms). */
  private readonly unleased = new Map<string, number>()
  private readonly startedAt = Date.now()

  constructor (init: FailoverServiceInit) {
    this.i = init
    this.log = init.logger
    const o = init.overlay
    const view = o.view
    const cluster = init.cluster
    const dd = init.dataDir
    this.store = new ReplicaStore(path.join(dd.root, 'replicas'))
    this.ops = new ReplicaOps({ manager: init.manager, runc: init.runc, dataDir: dd, logger: init.logger })
    this.guard = new LeaseGuard({
      dir: leasePaths(dd.root).guardDir,
      runcPath: init.runc.config.runcPath,
      runcRoot: init.runc.config.root,
      scriptPath: LEASE_GUARD_SCRIPT,
      ...(init.lanNetnsPrefix != null ? { netnsPrefix: init.lanNetnsPrefix } : {}),
      logger: init.logger.child({ component: 'lease-guard' })
    })
    const emit = init.events
    this.lease = new LeaseService({
      selfId: o.peerId,
      privateKey: init.privateKey,
      leaseMs: init.leaseMs,
      dataDir: dd.root,
      members: () => cluster.members().map((m) => m.peerId),
      isMember: (p) => cluster.isMember(p),
      handle: async (protocol, handler, max) => {
        await o.handle(protocol, handler, max)
      },
      dial: async (peer, protocol, signal) => await o.dialProtocol(peer, protocol, signal),
      checkConnection: async (peer, timeoutMs) => {
        await o.checkConnection(peer, timeoutMs)
      },
      // A failover never takes a container from an owner this node sees running it,
      // nor from one that left on purpose (its containers outlive its daemon).
      // A new lease, or a raised epoch, only for the owner the view knows (or for a
      // name nobody holds): no member can take a name's lease from its owner and make it
      // fence itself.
      mayHold: (container, holder) => {
        const own = view.ownerOf(container)
        return own?.owner == null || own.owner === holder
      },
      mayTakeOver: (container, holder) => {
        const m = view.get(holder)
        if (m == null || m.state === 'dead') return true
        if (m.state === 'left') return false
        const c = m.containers.find((x) => x.name === container)
        return c == null || !LIVE_CLAIMS.has(c.state)
      },
      onExpired: async (container, epoch) => {
        // Until its record says so, the container still looks like one of ours running
        // unleased: keepLeases must not ask for the lease it is being killed for.
        this.fencing.add(container)
        try {
          if (await this.ops.selfFence(container, epoch).catch((err) => {
            this.log.error({ container, err: errText(err) }, 'self-fencing failed')
            return false
          })) {
            this.log.error({ container, epoch }, 'lease not renewed in time: the container was killed (self-fencing); a standby may bring it back elsewhere')
            emit.emit('lease', { type: 'self-fenced', container, epoch })
            o.announce()
          }
        } finally {
          this.fencing.delete(container)
        }
      },
      guard: this.guard,
      logger: init.logger.child({ component: 'lease' })
    })
    this.receiver = new ReplicationReceiver(this.store, {
      selfId: o.peerId,
      witness: init.witness,
      hasContainer: async (name) => await init.manager.holdsUnfenced(name),
      ownerOf: (name) => view.ownerOf(name),
      freeBytes: async () => {
        const s = await (await import('node:fs/promises')).statfs(dd.root)
        return s.bavail * s.bsize
      },
      bundlePolicy: { allowPrivileged: init.allowPrivilegedBundles },
      diskReserveBytes: 256 * 1024 * 1024,
      onGeneration: (m) => emit.emit('replication', { type: 'replica-stored', container: m.container, owner: m.owner, epoch: m.epoch, generation: m.generations.at(-1) }),
      // A standby of a lan container must be able to take its address over.
      networkProblem: async (net, name) => {
        try {
          await init.manager.checkNetworkUsable(net, name)
          return null
        } catch (err) {
          return errText(err)
        }
      }
    }, init.logger.child({ component: 'replicas' }))
    if (init.witness) return
    this.replicator = new Replicator({
      selfId: o.peerId,
      replicated: async () => await this.replicated(),
      candidates: () => view.alive().filter((m) => m.role === 'node' && cluster.isMember(m.peerId)).map((m) => m.peerId),
      peerName: (p) => cluster.member(p)?.name ?? view.get(p)?.name ?? p,
      dial: async (peer, protocol, signal) => await o.dialProtocol(peer, protocol, signal),
      freezeDump: async (name, imageDir, capture, signal) => await this.ops.freezeDump(name, imageDir, capture, signal),
      shouldDrop: async (name) => {
        const r = await init.manager.readRecord(name)
        if (r == null) return true // removed, or moved away (its new owner replicates it now)
        if (r.leaseLost != null || r.fenced != null || r.failoverPending === true) return false
        // Killed by the lease guard: its deadline passed before the answer to a renewal
        // sent in time arrived, so this daemon, counting from the send, still holds the
        // lease. Not stopped for good: dropping its replicas then left it running
        // nowhere. It is marked lease-lost and the grantors are told, so a standby
        // brings it back.
        if ((await this.guard.fenced().catch(() => [] as string[])).includes(name)) {
          if (await this.markLeaseLost(name, 'renewal', 'the lease guard killed it: its deadline passed before a renewal was answered')) {
            this.log.error({ container: name }, 'the lease guard killed this container (its deadline passed before a renewal was answered): a standby may bring it back')
          }
          // This daemon still renews that lease: it stops, and gives it back.
          await this.lease.release(name).catch((err) => this.log.warn({ container: name, err: errText(err) }, 'could not give back the lease of a container the guard killed'))
          await this.guard.clearFenced(name).catch(() => {})
          return false
        }
        // Stopped (by its user, or it exited): not to be brought back. A `runc list` that
        // failed says nothing: the replicas stay.
        const running = await this.running().catch(() => null)
        return running != null && !running.has(name)
      },
      staging: async (id) => {
        const d = path.join(dd.tmp, id)
        await (await import('node:fs/promises')).mkdir(d, { recursive: true, mode: 0o700 })
        return d
      },
      removeStaging: async (d) => {
        if (d.startsWith(dd.tmp + '/')) await (await import('../runtime/mounts.ts')).removeTree(d)
      }
    }, {
      dumpIntervalMs: init.dumpIntervalMs,
      logger: init.logger.child({ component: 'replication' }),
      onEvent: (e) => emit.emit('replication', e)
    })
    this.failover = new FailoverController({
      selfId: o.peerId,
      replicas: async () => await this.store.list(),
      ownerOf: (name) => view.ownerOf(name),
      peerState: (p) => view.get(p)?.state,
      isMember: (p) => cluster.isMember(p),
      claimState: (p, name) => view.get(p)?.containers.find((c) => c.name === name)?.state,
      // From the grant until the restore ran or the lease went back, the lease is held
      // with no record of the container here (before the restore writes one, after a
      // failed one removed it): keepLeases must not read that as "removed" and have the
      // grantors forget the lease, which a later try at this epoch needs them to know.
      acquire: async (name, epoch, signal) => {
        this.takingOver.add(name)
        try {
          return await this.lease.acquire(name, epoch, { takeover: true, signal })
        } catch (err) {
          this.takingOver.delete(name)
          throw err
        }
      },
      release: async (name) => {
        try {
          await this.lease.release(name)
        } finally {
          this.takingOver.delete(name)
        }
      },
      restore: async (meta, generation, epoch, proof, signal) => {
        // Never restore on a lease that went back meanwhile: another standby may hold it.
        if (!this.lease.holds(meta.container)) throw new MscError('INVALID_STATE', `the failover lease of ${meta.container} at epoch ${epoch} is no longer held here`)
        await this.ops.adoptReplica(meta, this.store.genDir(meta.container, generation), epoch, proof as LeaseProof, signal)
        this.takingOver.delete(meta.container)
        o.announce()
      },
      drop: async (name) => {
        await this.store.drop(name)
      },
      hasContainer: async (name) => await init.manager.holdsUnfenced(name)
    }, {
      leaseMs: init.leaseMs,
      logger: init.logger.child({ component: 'failover' }),
      onEvent: (e) => emit.emit(e.type.startsWith('lease') ? 'lease' : 'failover', e)
    })
  }

  /**
   * The vote first, before the overlay connects: a member that others count must answer
   * their lease requests from its first connection on (a node joining the cluster raises
   * everyone's threshold at once).
   */
  async startVoting (): Promise<void> {
    await this.lease.start()
  }

  async start (): Promise<void> {
    const cleared = await this.store.clearIncoming()
    if (cleared > 0) this.log.info({ cleared }, 'removed replica generations a previous run had not finished receiving')
    // Containers the guard killed while this daemon was down: their lease had run out.
    for (const name of await this.guard.fenced().catch(() => [] as string[])) {
      if (await this.markDiedWhileDown(name)) this.log.error({ container: name }, 'the lease guard killed this container while the node was down (its lease ran out)')
      await this.guard.clearFenced(name).catch(() => {})
    }
    // Replicated containers that died while this daemon was down (a power cut, a crash):
    // not stopped by their user, so not "exited" either. Marked like a self-fenced one,
    // so that their standbys keep the replicas and one of them brings the container back;
    // left as they were, this node would tell the standbys to drop them (it stopped, as
    // if for good) and the container would run nowhere.
    const live = new Set((await this.i.manager.runcStates().catch(() => [])).filter((x) => x.status !== 'stopped').map((x) => x.id))
    for (const name of await this.i.manager.names()) {
      const r = await this.i.manager.readRecord(name)
      if (r == null || (r.replicas ?? 0) === 0 || r.startedAt == null || live.has(name)) continue
      if (r.fenced != null || r.leaseLost != null || r.pendingMigration === true || r.failoverPending === true) continue
      if (await this.markDiedWhileDown(name)) this.log.error({ container: name, epoch: r.epoch ?? 1 }, 'this container died while the node was down: its standbys may bring it back')
    }
    // A failover the previous run was restoring: running means restored (ours, its lease
    // taken again below); not running means nothing of it is here.
    for (const name of await this.i.manager.names()) {
      const r = await this.i.manager.readRecord(name)
      if (r?.failoverPending !== true) continue
      const st = await this.i.runc.state(name).catch(() => null)
      if (st?.status === 'running' || st?.status === 'paused') {
        delete r.failoverPending
        r.startedAt = new Date().toISOString()
        await this.i.manager.writeRecord(r)
      } else {
        await this.i.manager.remove(name, { force: true }).catch(() => {})
        this.log.warn({ container: name }, 'removed a failover restore that the previous run did not finish')
      }
    }
    await this.i.overlay.handle(REPLICATE_PROTOCOL, async (stream, peer) => {
      await this.receiver.handle(stream, peer)
    }, 16)
    this.ownTimer = setInterval(() => {
      void this.keepLeases()
    }, Math.max(200, Math.min(1000, this.i.leaseMs / 4)))
    this.replicator?.start()
    this.failover?.start()
  }

  /**
   * Marks a container that died while this daemon was down as lost here (`leaseLost`,
   * cause `node-down`), and has the grantors expire its lease at once (in the
   * background: the overlay may not be connected yet), a parked one included, so that a
   * standby need not wait. False when there was nothing to mark.
   */
  private async markDiedWhileDown (name: string): Promise<boolean> {
    return await this.markLeaseLost(name, 'node-down', 'it died while this node was down')
  }

  /** A replicated container that no longer runs for want of its lease: marked so, its lease given back, its standbys keep their replicas. */
  private async markLeaseLost (name: string, cause: 'renewal' | 'node-down', reason: string): Promise<boolean> {
    const r = await this.i.manager.readRecord(name)
    if (r == null || r.leaseLost != null || r.fenced != null) return false
    const epoch = r.epoch ?? 1
    r.leaseLost = { epoch, at: new Date().toISOString(), cause }
    r.startedAt = null
    await this.i.manager.writeRecord(r)
    await this.i.runc.delete(name, { force: true }).catch(() => {})
    // Its address stayed on this host if only the daemon and the container died (the
    // guard killed it, a crash): a standby may hold the address by now.
    if (r.network != null) await this.i.manager.releaseAddress(name)
    this.i.events.emit('lease', { type: 'self-fenced', container: name, epoch, reason })
    this.expireLater(name, epoch)
    return true
  }

  /** Tells the grantors, until a majority confirmed or a minute passed, that this node's lease of `name` at `epoch` is over. */
  private expireLater (name: string, epoch: number): void {
    const until = Date.now() + 60_000
    const attempt = async (): Promise<void> => {
      const confirmed = await this.lease.expire(name, epoch).catch(() => 0)
      if (confirmed >= this.lease.status().quorum || Date.now() > until || this.stopped) return
      setTimeout(() => void attempt(), 1_000).unref()
    }
    setTimeout(() => void attempt(), 0).unref()
  }

  /** A node stopping on purpose parks its leases: its containers run on, and nobody takes them over meanwhile. */
  async stop (): Promise<void> {
    this.stopped = true
    clearInterval(this.ownTimer)
    await this.failover?.stop()
    await this.replicator?.stop()
    await this.lease.stop({ park: true })
  }

  /** Whether this node may (re)start the container now: not if its lease ran out here (a standby may own it). */
  mayRun (name: string): boolean {
    return !this.lease.lost(name)
  }

  /**
   * `msc restore` of a container that lost its lease here: a standby may run it by
   * now. It runs here again only with the lease at a new epoch, granted by a majority
   * as a takeover (which they refuse while anyone else holds it).
   */
  async beforeRestore (name: string): Promise<() => void> {
    const m = this.i.manager
    const r = await m.readRecord(name)
    if (r == null || (r.replicas ?? 0) === 0 || r.leaseLost == null || (await m.checkpoints(name)).length === 0) return () => {}
    const own = this.i.overlay.view.ownerOf(name)
    const self = this.i.overlay.peerId
    if (own?.owner != null && own.owner !== self && own.epoch > (r.epoch ?? 1)) {
      throw new MscError('INVALID_STATE', `${name} is owned by ${this.i.cluster.member(own.owner)?.name ?? own.owner} at epoch ${own.epoch} now: this copy does not run again (msc rm ${name})`)
    }
    const epoch = Math.max(r.epoch ?? 1, own?.epoch ?? 0) + 1
    let proof: LeaseProof
    try {
      proof = await this.lease.acquire(name, epoch, { takeover: true, signal: AbortSignal.timeout(Math.max(5_000, 2 * this.i.leaseMs)) })
    } catch (err) {
      throw new MscError('INVALID_STATE', `${name} lost its lease here and a majority did not grant it back (a standby may run it: see msc ps on the other nodes): ${errText(err)}`)
    }
    // Until the restore ends, the lease is not given back for want of a running container.
    this.restoring.add(name)
    r.epoch = epoch
    r.lease = proof
    await m.writeRecord(r)
    return () => {
      this.restoring.delete(name)
    }
  }

  private readonly restoring = new Set<string>()
  /** Replicas this node holds the failover lease of and restores (or tries to). */
  private readonly takingOver = new Set<string>()

  /** `msc rm`: the grantors forget the container's lease (a parked one would keep its name from a new container). */
  async forget (name: string, epoch: number): Promise<void> {
    await this.lease.release(name, 'remove', epoch).catch((err) => this.log.warn({ container: name, err: errText(err) }, 'could not tell the grantors that a container was removed'))
  }

  /** Rootfs transfers of incoming generations arrive over /msc/image. */
  imageDestination (header: TreeHeader): TreeDestination | null {
    return this.receiver.imageDestination(header)
  }

  /** For `msc inspect` / `ps`: the replication of a container this node owns. */
  containerStatus (name: string): ReplicationInfo | undefined {
    const s = this.replicator?.status(name)
    if (s == null) return undefined
    return { ...s, leaseHeld: this.lease.holds(name) }
  }

  /** For `msc status`. */
  async summary (): Promise<FailoverSummary> {
    const n = this.i.cluster.members().length
    const q = quorum(n)
    const failover = n < 3
      ? `not possible: ${n} member${n === 1 ? '' : 's'}, a majority is ${q}; add a third member (any node, or one with --witness)`
      : `possible while ${q} of ${n} members are up`
    const st = this.lease.status()
    return {
      witness: this.i.witness,
      leaseMs: this.i.leaseMs,
      members: n,
      quorum: q,
      failover,
      held: st.held.length,
      lost: [...this.lostSince].filter(([, l]) => l.reported).map(([container, l]) => ({ container, owner: l.owner, epoch: l.epoch, since: new Date(l.since).toISOString() })),
      replicas: (await this.store.list()).map((m) => ({ container: m.container, owner: m.owner, epoch: m.epoch, generation: m.generations.at(-1) ?? null, dumpedAt: new Date(m.dumpedAt).toISOString() }))
    }
  }

  /** The containers to replicate now: ours, running, replicated, with the lease held. */
  private async replicated (): Promise<ReplicatedContainer[]> {
    const out: ReplicatedContainer[] = []
    // Every 250 ms: only the records of containers whose lease this node holds are read.
    for (const r of await this.records((n) => this.lease.holds(n))) {
      const b = await loadBundle(r.bundle).catch(() => null)
      if (b == null) continue
      out.push({ name: r.name, epoch: r.epoch ?? 1, replicas: r.replicas ?? 0, rootfs: b.rootfs, config: b.config as Record<string, unknown>, ...(r.network != null ? { network: r.network } : {}) })
    }
    return out
  }

  /** Replicated containers of this node that run (or should) and are ours; only names `only` accepts, if given. */
  private async records (only?: (name: string) => boolean): Promise<ContainerRecord[]> {
    const m = this.i.manager
    const out: ContainerRecord[] = []
    for (const n of await m.names()) {
      if (only != null && !only(n)) continue
      const r = await m.readRecord(n)
      if (r == null || (r.replicas ?? 0) === 0 || r.fenced != null || r.leaseLost != null || r.pendingMigration === true || r.failoverPending === true) continue
      out.push(r)
    }
    if (out.length === 0) return out // no runc call on a node with nothing to replicate
    const running = await this.running().catch(() => new Set<string>())
    return out.filter((r) => running.has(r.name))
  }

  /** Containers runc runs (or has paused), from the manager's shared `runc list`; rejects when that list failed. */
  private async running (): Promise<Set<string>> {
    const l = await this.i.manager.runcStates()
    return new Set(l.filter((s) => s.status === 'running' || s.status === 'paused').map((s) => s.id))
  }

  /** container -> since when (ms) its holder is dead, its lease over here, and nobody took it over. */
  private readonly lostSince = new Map<string, { owner: string; epoch: number; since: number; reported: boolean }>()

  /**
   * A container nobody can bring back is reported, by every member that voted on its
   * lease: its owner is dead (or removed) and no standby took it over within two leases
   * after its lease ran out here (its standbys died with it, or there is no majority).
   */
  private watchLost (): void {
    const view = this.i.overlay.view
    const seen = new Set<string>()
    for (const g of this.lease.status().granted) {
      if (g.holder === this.i.overlay.peerId || g.msLeft > 0) continue
      const state = this.i.cluster.isMember(g.holder) ? view.get(g.holder)?.state : 'dead'
      const own = view.ownerOf(g.container)
      if (state !== 'dead' || (own != null && (own.owner !== g.holder || own.epoch !== g.epoch))) continue
      seen.add(g.container)
      let l = this.lostSince.get(g.container)
      if (l == null || l.epoch !== g.epoch) this.lostSince.set(g.container, l = { owner: g.holder, epoch: g.epoch, since: Date.now(), reported: false })
      if (!l.reported && Date.now() - l.since > 2 * this.i.leaseMs) {
        l.reported = true
        this.log.error({ container: g.container, owner: g.holder, epoch: g.epoch }, 'container lost: its node is dead and no standby brought it back (its standbys died too, or no majority is up)')
        this.i.events.emit('failover', { type: 'lost', container: g.container, owner: g.holder, epoch: g.epoch })
      }
    }
    for (const c of [...this.lostSince.keys()]) if (!seen.has(c)) this.lostSince.delete(c)
  }

  /**
   * Any record of ours that the cluster holds at a higher epoch elsewhere (a failover
   * happened while this node was away) is fenced, whatever the membership events said
   * or missed.
   */
  private async sweepFences (): Promise<void> {
    const m = this.i.manager
    const self = this.i.overlay.peerId
    for (const n of await m.names()) {
      const own = this.i.overlay.view.ownerOf(n)
      if (own?.owner == null || own.owner === self) continue
      const r = await m.readRecord(n)
      if (r == null || r.fenced != null || r.pendingMigration === true || r.failoverPending === true || (r.epoch ?? 1) >= own.epoch) continue
      await this.i.fence(n, own.owner, own.epoch)
    }
  }

  /**
   * Every replicated container that runs here must hold its lease: asked for at once
   * (after a run, a migration's commit, a restart). Refused because another node holds
   * a newer epoch: our copy is fenced. Not granted for a whole lease (no majority
   * reachable): it is killed, as the holder of an expired lease would be.
   */
  private async keepLeases (): Promise<void> {
    await this.sweepFences().catch(() => {})
    this.watchLost()
    const live = new Set<string>()
    for (const r of await this.records().catch(() => [])) {
      live.add(r.name)
      if (this.fencing.has(r.name)) continue
      if (this.lease.holds(r.name) || this.acquiring.has(r.name)) {
        if (this.lease.holds(r.name)) this.unleased.delete(r.name)
        continue
      }
      const epoch = r.epoch ?? 1
      if (!this.unleased.has(r.name)) this.unleased.set(r.name, Date.now())
      this.acquiring.add(r.name)
      const handover = r.handover?.epoch === epoch ? r.handover : undefined
      void this.lease.acquire(r.name, epoch, { handover, signal: AbortSignal.timeout(Math.max(2_000, this.i.leaseMs)) })
        .then(() => {
          this.unleased.delete(r.name)
          this.i.events.emit('lease', { type: 'lease-acquired', container: r.name, epoch })
        })
        .catch(async (err) => {
          // A grantor's word that someone else holds a newer epoch is not proof (any
          // member could say it): our copy is fenced when the view holds a verified claim
          // (sweepFences), or killed below when no majority grants us the lease.
          const since = this.unleased.get(r.name) ?? Date.now()
          if (Date.now() - since > this.i.leaseMs && Date.now() - this.startedAt > this.i.leaseMs) {
            this.log.error({ container: r.name, epoch, err: errText(err) }, "no majority granted this container's lease for a whole lease time: killing it (self-fencing)")
            if (await this.ops.selfFence(r.name, epoch).catch(() => false)) this.i.events.emit('lease', { type: 'self-fenced', container: r.name, epoch, reason: errText(err) })
            this.unleased.delete(r.name)
          } else {
            this.log.debug({ container: r.name, err: errText(err) }, 'lease not granted yet')
          }
        })
        .finally(() => this.acquiring.delete(r.name))
    }
    for (const n of this.unleased.keys()) if (!live.has(n)) this.unleased.delete(n)
    // Leases of containers that are gone (removed, moved away) or stopped by the user go
    // back: a standby must not bring back what nobody runs on purpose. Not while a
    // migration has it frozen: its record stays, started, until the target owns it.
    for (const h of this.lease.status().held) {
      if (live.has(h.container)) continue
      const r = await this.i.manager.readRecord(h.container).catch(() => null)
      if (r?.failoverPending === true || this.restoring.has(h.container) || this.takingOver.has(h.container)) continue // being restored: the lease is what allows it
      if (r != null && r.startedAt != null && r.leaseLost == null && r.fenced == null) continue
      // Gone from here: forgotten. Killed for want of renewals (self-fenced): expired at
      // once, so that a standby brings it back (parked, a container that lost its lease
      // to a flapping link stayed down everywhere). Stopped by its user: parked, never
      // failed over.
      const mode = r == null || r.fenced != null ? 'remove' : r.leaseLost != null ? 'expire' : 'park'
      await this.lease.release(h.container, mode).catch(() => {})
      this.i.events.emit('lease', { type: 'lease-released', container: h.container, epoch: h.epoch, mode })
    }
  }
}
