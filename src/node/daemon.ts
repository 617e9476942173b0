import fs from 'node:fs/promises'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import { Runc } from '../runtime/runc.ts'
import { removeEmptyCgroupParent } from '../runtime/cgroups.ts'
import { removeTree } from '../runtime/mounts.ts'
import { ControlServer } from '../api/server.ts'
import type { ContainerInfo, NodeStatus, PeerInfo, MigrationResultInfo } from '../api/types.ts'
import { Overlay } from '../overlay/overlay.ts'
import { loadOrCreatePeerKey } from '../overlay/identity.ts'
import { pskKeyBytes, readPskFile } from '../overlay/psk.ts'
import { dialableAddrs } from '../overlay/membership/membership-service.ts'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ClusterService } from '../cluster/cluster-service.ts'
import { MigrationService } from './migration-service.ts'
import { FailoverService } from './failover-service.ts'
import { EventLog } from './events.ts'
import { verifyLeaseProof } from '../failover/grant.ts'
import { ContainerRequestServer } from './container-requests.ts'
import { cgroupsPathOf, validateName } from './container-manager.ts'
import { recoverOutgoing } from './migration-host.ts'
import type { Member } from '../overlay/membership/membership-view.ts'
import path from 'node:path'
import { ContainerManager } from './container-manager.ts'
import { DataDir } from './data-dir.ts'
import type { NodeConfig } from './config.ts'
import { VERSION } from '../version.ts'
import { writeFileAtomic } from '../util/atomic-file.ts'
import { createMetricsService, type MetricsService } from '../metrics/metrics-service.ts'
import { parseListenAddress } from '../metrics/listen-address.ts'
import type { NodeReader } from '../metrics/snapshot.ts'
import { logShimBinary } from '../runtime/shim/binary.ts'
import { LanNetworks, lanNetnsPrefix } from '../network/lan-netns.ts'
import { parseRunNetwork } from '../network/lan-address.ts'
import type { MigrateRequest, MigrationResult } from '../migration/source.ts'

/**
 * The msc node: the one place that wires components together. Starts them in order
 * (data dir, runtime, containers, control API) and stops them in reverse.
 */
export class MscNode {
  readonly config: NodeConfig
  readonly dataDir: DataDir
  private readonly log: Logger
  private readonly rootLog: Logger
  private runc?: Runc
  private containers?: ContainerManager
  private api?: ControlServer
  private overlay?: Overlay
  private cluster?: ClusterService
  private requests?: ContainerRequestServer
  private migration?: MigrationService
  private failover?: FailoverService
  private metrics?: MetricsService
  readonly events = new EventLog()
  private startedAt = ''
  private claimed = false
  private nodeId = ''
  private cgroupParent = ''

  constructor (config: NodeConfig, logger: Logger) {
    this.config = config
    this.rootLog = logger
    this.log = logger.child({ component: 'node' })
    this.dataDir = new DataDir(config.dataDir)
  }

  async start (): Promise<void> {
    try {
      await this.startComponents()
    } catch (err) {
      // Whatever did start (request relay, libp2p, pid file) must not keep a node that
      // failed to start alive, nor leave the data dir claimed.
      await this.stop().catch(() => {})
      throw err
    }
  }

  private async startComponents (): Promise<void> {
    await this.dataDir.init()
    await this.claimDataDir()
    await this.clearTmp()
    this.nodeId = await this.dataDir.nodeId()
    this.cgroupParent = this.config.cgroupParent !== '' ? this.config.cgroupParent : `msc-${this.nodeId}`
    this.runc = new Runc({
      runcPath: this.config.runcPath,
      criuPath: this.config.criuPath,
      root: this.dataDir.runcRoot,
      logger: this.rootLog.child({ component: 'runc' })
    })
    // runc is required to run anything; CRIU only to checkpoint, so its absence is a
    // warning here and a clear error on the first checkpoint.
    const runcVersion = await this.runc.version()
    // Every container's output goes through the compiled log shim: built now if
    // `npm run setup` did not, or start-up fails here naming it, not at the first run.
    await logShimBinary()
    this.containers = new ContainerManager({
      dataDir: this.dataDir,
      runc: this.runc,
      cgroupParent: this.cgroupParent,
      logMaxBytes: this.config.containerLogMaxBytes,
      stopTimeoutMs: this.config.stopTimeoutMs,
      tcpEstablished: this.config.tcpEstablished,
      logger: this.rootLog.child({ component: 'containers' }),
      claimName: async (name) => this.claimName(name),
      releaseName: (name) => {
        this.overlay?.view.unreserveLocal(name)
        // Peers learn of the new container now, not at the next interval.
        this.overlay?.announce()
      },
      lan: new LanNetworks({ nodeId: this.nodeId, iface: this.config.lanInterface, driver: this.config.lanDriver, logger: this.rootLog.child({ component: 'lan' }) }),
      claimAddress: (address, name) => this.claimAddress(address, name)
    })
    await this.dropStalePendingMigrations()
    // A replication dump or failover restore cut short by the node's end left a lan
    // container's CRIU configuration at `closed`.
    await this.containers.settleCriuConfigs()
    const adopted = await this.containers.list()
    const c = this.containers
    const cfg = this.config
    const privateKey = await loadOrCreatePeerKey(path.join(cfg.dataDir, 'peer.key'))
    const psk = cfg.pskFile !== '' ? await readPskFile(cfg.pskFile) : undefined
    const cluster = this.cluster = await ClusterService.load({
      dataDir: cfg.dataDir,
      privateKey,
      selfId: peerIdFromPrivateKey(privateKey).toString(),
      name: cfg.name,
      clusterKey: psk != null ? pskKeyBytes(psk) : undefined,
      joinToken: cfg.joinToken,
      logger: this.rootLog.child({ component: 'cluster' })
    })
    // Before the overlay: libp2p's metrics go to the same registry, from its creation on.
    const metrics = this.metrics = createMetricsService({
      listen: cfg.metricsListen !== '' ? parseListenAddress(cfg.metricsListen) : null,
      node: this.metricsReader(),
      events: this.events,
      statfsLocation: cfg.dataDir,
      logger: this.rootLog.child({ component: 'metrics' })
    })
    this.overlay = await Overlay.create({
      privateKey,
      psk,
      dataDir: cfg.dataDir,
      name: cfg.name,
      version: VERSION,
      listen: cfg.listen,
      announce: cfg.announce,
      bootstrap: cfg.bootstrap,
      mdns: cfg.mdns,
      mdnsIntervalMs: cfg.mdnsIntervalMs,
      pingIntervalMs: cfg.pingIntervalMs,
      pingTimeoutMs: cfg.pingTimeoutMs,
      suspectTimeoutMs: cfg.suspectTimeoutMs,
      role: cfg.witness ? 'observer' : 'node'
    }, {
      claims: async () => await c.claims(),
      logger: this.rootLog.child({ component: 'overlay' }),
      gate: { gater: cluster.gater, isMember: (peer) => cluster.isMember(peer) },
      // A failover's claim: a majority of the persisted member list granted the claimant
      // the lease at this epoch (protocols/lease.md).
      verifyGrant: (claim, claimant) =>
        claim.grant != null && verifyLeaseProof(claim.grant, {
          container: claim.name,
          epoch: claim.epoch,
          holder: claimant,
          members: new Set(cluster.members().map((m) => m.peerId))
        }),
      metrics: metrics?.libp2pMetrics()
    })
    // Early: a bad --metrics-listen stops the node before it takes part in the cluster.
    await metrics?.start()
    // Before any container starts or restores: bundles may bind-mount this socket.
    this.requests = new ContainerRequestServer({
      socketPath: this.dataDir.requestSocket,
      cgroupParent: this.cgroupParent,
      logger: this.rootLog.child({ component: 'requests' }),
      onCheckpoint: async (name) => {
        await this.requireCriu()
        return await this.containers!.checkpoint(name)
      },
      onMigrate: async (name, peer) => {
        const r = await this.migrate({ container: name, to: peer, strategy: 'auto' })
        if (!r.ok) throw new MscError('RUNTIME_ERROR', r.error?.message ?? 'migration failed')
        return r
      }
    })
    await this.requests.start().catch((err) => this.log.warn({ err: (err as Error).message }, 'container request socket unavailable (python3 missing?)'))
    // Before the overlay starts: the first heartbeats may already move a name away.
    // Epoch fencing: a peer claiming a container we run, at a higher epoch, owns it
    // (a migration we gave up on was committed there after all, e.g. across a long
    // partition). Two copies must not stay: ours goes.
    this.overlay.view.addEventListener('owner:change', (evt) => {
      const { container, from, to, epoch } = evt.detail
      if (from === this.overlay?.peerId && to != null && to !== from) void this.fence(container, to, epoch)
    })
    const failover = this.failover = new FailoverService({
      dumpIntervalMs: cfg.dumpIntervalMs,
      leaseMs: cfg.leaseTimeoutMs,
      witness: cfg.witness,
      allowPrivilegedBundles: cfg.allowPrivilegedBundles,
      overlay: this.overlay,
      cluster,
      privateKey,
      manager: c,
      runc: this.runc,
      dataDir: this.dataDir,
      events: this.events,
      logger: this.rootLog.child({ component: 'failover' }),
      lanNetnsPrefix: lanNetnsPrefix(this.nodeId),
      fence: async (name, owner, epoch) => {
        await this.fence(name, owner, epoch)
      }
    })
    await failover.startVoting()
    await this.overlay.start()
    const o = this.overlay
    cluster.onChange(({ added, removed }) => {
      for (const p of removed) o.view.forget(p)
      // A new member dropped our heartbeats until now (and we its): exchange them at once.
      if (added.length > 0) o.admitted(added)
    })
    await cluster.start({
      addresses: () => dialableAddrs(o.addresses()),
      handleOpen: async (protocol, handler, max) => {
        await o.handleOpen(protocol, handler, max)
      },
      dial: async (peer, protocol, signal) => await o.dialProtocol(peer, protocol, signal),
      dialAddr: async (addr, protocol, signal) => await o.dialAddr(addr, protocol, signal),
      connectedPeers: () => o.connectedPeers(),
      disconnect: async (peer, why) => {
        await o.disconnect(peer, why)
      },
      onConnect: (fn) => o.onConnect(fn)
    })
    const migration = new MigrationService({
      overlay: o,
      cluster,
      privateKey,
      manager: c,
      runc: this.runc,
      dataDir: this.dataDir,
      selfName: cfg.name,
      pingTimeoutMs: cfg.pingTimeoutMs,
      allowPrivilegedBundles: cfg.allowPrivilegedBundles,
      dataChannel: cfg.dataChannel,
      // A rollback must not resume a container whose lease ran out while it was frozen.
      mayRun: (name) => this.failover?.mayRun(name) ?? true,
      timeouts: { stallTimeoutMs: 15_000, restoreTimeoutMs: 300_000, decisionTimeoutMs: 30_000, settleTimeoutMs: 120_000 },
      logger: this.rootLog.child({ component: 'migration' })
    })
    await migration.start()
    this.migration = migration
    migration.addImageDestinations((h) => failover.imageDestination(h))
    await failover.start()
    this.api = new ControlServer({
      status: async () => await this.status(),
      list: async () => (await c.list()).map((x) => withReplication(x, failover)),
      inspect: async (name) => withReplication(await c.inspect(name), failover),
      events: (fn) => {
        for (const e of this.events.history()) fn(e)
        return this.events.subscribe(fn)
      },
      run: async (req, signal) => {
        if (cfg.witness) throw new MscError('INVALID_STATE', `${cfg.name} is a witness: it votes on leases and runs no container`)
        const network = parseRunNetwork(req.network, req.ip, cfg.lanDriver) ?? undefined
        // A lan container is replicated like any other: a failover restores it at its
        // address on the standby (docs/networking.md).
        const replicas = req.replicas ?? cfg.defaultReplicas
        if (!Number.isInteger(replicas) || replicas < 0 || replicas > 8) throw new MscError('INVALID_ARGUMENT', `--replicas takes a whole number from 0 to 8, not ${String(req.replicas)}`)
        return withReplication(await c.run(req.name, req.bundle, signal, { replicas, network }), failover)
      },
      stop: async (name) => await c.stop(name),
      remove: async (name, force) => {
        const epoch = (await c.readRecord(validateName(name)))?.epoch
        await c.remove(name, { force })
        if (epoch != null) await failover.forget(name, epoch)
      },
      checkpoint: async (name, req, signal) => {
        await this.requireCriu()
        return await c.checkpoint(name, { stop: req.stop === true, signal })
      },
      checkpoints: async (name) => {
        await c.inspect(name)
        return await c.checkpoints(name)
      },
      restore: async (name, req, signal) => {
        await this.requireCriu()
        const done = await failover.beforeRestore(name)
        try {
          return await c.restore(name, { from: req.from, signal })
        } finally {
          done()
        }
      },
      logFiles: async (name) => {
        try {
          return await c.logFiles(name)
        } catch (err) {
          const moved = err instanceof MscError && err.code === 'NOT_FOUND' ? await this.dataDir.readMoved(name) : null
          if (moved != null) throw new MscError('NOT_FOUND', `${name} moved to ${moved.toName} (${moved.to}): run msc logs there`)
          throw err
        }
      },
      peers: async () => o.members().filter((m) => cluster.isMember(m.peerId)).map((m) => toPeerInfo(m, o.connected(m.peerId), cluster.member(m.peerId)?.name)),
      clusterInfo: async () => ({
        ...cluster.status(),
        members: cluster.members().map((m) => ({ ...m, admittedAt: new Date(m.admittedAt).toISOString(), self: m.peerId === o.peerId, state: m.peerId === o.peerId ? 'self' : o.view.get(m.peerId)?.state ?? 'unknown' })),
        conflicts: cluster.conflicts().map((m) => ({ peerId: m.peerId, name: m.name, heldBy: m.heldBy }))
      }),
      clusterToken: async (ttlMs) => await cluster.issueToken(ttlMs),
      removePeer: async (idOrName) => {
        const m = await cluster.remove(idOrName)
        return { peerId: m.peerId, name: m.name }
      },
      join: async (req, signal) => ({ peerId: await o.join(req.addr, signal) }),
      migrate: async (name, req, onEvent, signal) => {
        validateName(name)
        const strategy = req.strategy ?? 'auto'
        if (!['auto', 'stop-copy', 'post-copy', 'pre-copy'].includes(strategy)) throw new MscError('INVALID_ARGUMENT', `unknown strategy ${String(strategy)}: auto, stop-copy, post-copy or pre-copy`)
        if (req.dataChannel != null && typeof req.dataChannel !== 'boolean') throw new MscError('INVALID_ARGUMENT', 'dataChannel must be true or false')
        if (req.streamPages != null && typeof req.streamPages !== 'boolean') throw new MscError('INVALID_ARGUMENT', 'streamPages must be true or false')
        await this.requireCriu()
        return await this.migrate({
          container: name,
          to: req.to,
          strategy,
          dataChannel: req.dataChannel !== false,
          streamPages: req.streamPages !== false,
          signal,
          onProgress: (p) => onEvent({ type: 'progress', phase: p.phase, bytes: p.bytes, totalBytes: p.totalBytes })
        }) as MigrationResultInfo
      },
      movedTo: async (name) => {
        validateName(name)
        const m = await this.dataDir.readMoved(name)
        return m == null ? null : { to: m.to, toName: m.toName, at: m.at }
      }
    }, this.rootLog.child({ component: 'api' }))
    await this.api.listen(this.config.apiSocket)
    this.startedAt = new Date().toISOString()
    this.log.info({
      dataDir: this.config.dataDir,
      api: this.config.apiSocket,
      nodeId: this.nodeId,
      runc: runcVersion,
      criu: this.config.criuPath,
      adopted: adopted.filter((x) => x.state === 'running').map((x) => x.name)
    }, 'msc node started')
  }

  async stop (): Promise<void> {
    await this.api?.close().catch((err) => this.log.warn({ err }, 'closing API'))
    await this.metrics?.stop().catch((err) => this.log.warn({ err }, 'stopping the metrics endpoint'))
    this.migration?.stop()
    await this.failover?.stop().catch((err) => this.log.warn({ err }, 'stopping replication and leases'))
    // Containers first (if asked), so the goodbye heartbeat tells the truth about them.
    if (this.config.stopContainersOnExit) await this.containers?.stopAll()
    await this.cluster?.stop().catch((err) => this.log.warn({ err }, 'stopping the cluster service'))
    await this.overlay?.stop().catch((err) => this.log.warn({ err }, 'stopping overlay'))
    await this.migration?.drained(5_000)
    await this.requests?.stop().catch((err) => this.log.warn({ err }, 'stopping the request socket'))
    if (this.cgroupParent !== '') await removeEmptyCgroupParent(this.cgroupParent)
    if (this.claimed) {
      // Only what this process made: a node refused for a taken data dir must not
      // delete the running node's socket and pid file.
      await fs.rm(this.config.apiSocket, { force: true })
      await fs.rm(this.dataDir.pidFile, { force: true })
    }
    this.log.info('msc node stopped')
  }

  /** An outgoing migration, counted in the metrics however it ends. */
  private async migrate (req: MigrateRequest): Promise<MigrationResult> {
    if (this.migration == null) throw new MscError('INVALID_STATE', 'migration is not ready yet')
    let r: MigrationResult | undefined
    try {
      r = await this.migration.migrate(req)
      return r
    } finally {
      this.metrics?.migrationEnded(r ?? { ok: false, strategy: req.strategy, from: '', downtimeMs: null, bytes: 0 })
    }
  }

  /** What the metrics read of this node at a scrape (parts not started yet read as empty). */
  private metricsReader (): NodeReader {
    return {
      runcStates: async () => await this.containers?.runcStates() ?? [],
      containerNames: async () => await this.containers?.names() ?? [],
      containerRecord: async (name) => await this.containers?.readRecord(name) ?? null,
      peers: () => (this.overlay?.members() ?? []).filter((m) => this.cluster?.isMember(m.peerId) ?? false),
      replication: (name) => this.failover?.containerStatus(name),
      leases: () => {
        const st = this.failover?.lease.status()
        return { held: st?.held.length ?? 0, granted: st?.granted.filter((g) => g.msLeft > 0).length ?? 0 }
      }
    }
  }

  private async status (): Promise<NodeStatus> {
    const list = await this.containers!.list()
    const o = this.overlay!
    const members = o.members()
    const cluster = this.cluster!.status()
    return {
      peerId: o.peerId,
      name: this.config.name,
      addrs: o.addresses(),
      peersAlive: members.filter((m) => m.state === 'alive').length,
      peersKnown: members.length,
      membership: o.view.stats(),
      cluster: { ...cluster, refused: { ...cluster.refused, streams: cluster.refused.streams + o.refusedStreamCount } },
      version: VERSION,
      pid: process.pid,
      dataDir: this.config.dataDir,
      nodeId: this.nodeId,
      cgroupParent: this.cgroupParent,
      runc: this.config.runcPath,
      criu: this.config.criuPath,
      containers: list.length,
      startedAt: this.startedAt,
      failover: await this.failover!.summary()
    }
  }

  /**
   * Incoming migrations the previous run restored but did not commit. One whose
   * container died with it (a host crash) is removed here: nothing of it runs, and the
   * source either resumed it or released it into this copy, which is gone. One that
   * still runs is kept, unclaimed, and settled once the overlay runs
   * (MigrationService.start, migration/settle.ts).
   */
  private async dropStalePendingMigrations (): Promise<void> {
    const c = this.containers!
    for (const n of await c.names()) {
      const r = await c.readRecord(n)
      if (r?.pendingMigration !== true) continue
      const st = await this.runc!.state(n).catch(() => null)
      if (st?.status === 'running' || st?.status === 'paused') continue
      this.log.warn({ container: n }, 'dropping an uncommitted incoming migration left by a previous run (its container does not run)')
      await c.remove(n, { force: true }).catch(() => {})
    }
  }

  /**
   * Our copy is stopped, never to run again, but its directory (checkpoints, log) is
   * kept: a wrong fence must not destroy the only good copy. `msc rm` removes it.
   */
  private async fence (name: string, owner: string, epoch: number): Promise<void> {
    try {
      const ownerName = this.peerName(owner)
      if (!await this.containers!.fence(name, { owner, ownerName, epoch, at: new Date().toISOString() })) return
      this.log.error({ container: name, owner, ownerName, epoch }, `another node owns this container at a higher epoch: our copy was stopped (fenced); its checkpoints and log stay until \`msc rm ${name}\``)
      await this.dataDir.writeMoved(name, { peerId: owner, name: ownerName }, { fenced: true })
    } catch (err) {
      this.log.error({ err: (err as Error).message, container: name }, 'fencing failed')
    }
  }

  /**
   * A container name is one thing cluster-wide: refuse a name another live peer owns,
   * and start above any epoch the cluster remembers for it.
   */
  private claimName (name: string): number {
    const o = this.overlay
    if (o == null) return 1
    const own = o.view.ownerOf(name)
    if (own?.owner != null && own.owner !== o.peerId) {
      const m = o.view.get(own.owner)
      const who = this.peerName(own.owner)
      // A node that left still runs its containers (they outlive the daemon); one that
      // is dead may come back with them. Only its removal (or a failover) frees the name:
      // no other member would accept our claim without the owner's handover.
      if (m?.state === 'dead') throw new MscError('ALREADY_EXISTS', `the name ${name} belongs to peer ${who} (epoch ${own.epoch}), which is dead: its container may come back with it; \`msc peer rm ${who}\` frees the name`)
      throw new MscError('ALREADY_EXISTS', `the name ${name} is taken in the cluster by peer ${who} (epoch ${own.epoch})`)
    }
    const epoch = o.view.nextEpoch(name)
    // Ours in this node's view from now, before the record exists: a member's claim of
    // the name heard before our next heartbeat must not take it (and fence our copy).
    if (!o.view.reserveLocal(name, epoch)) throw new MscError('ALREADY_EXISTS', `the name ${name} is taken in the cluster`)
    return epoch
  }

  /** Refuses ADDRESS when a member's container holds it (its claim says so). */
  private claimAddress (address: string, name: string): void {
    const h = this.overlay?.view.addressHolder(address)
    if (h != null && h.name !== name) throw new MscError('ALREADY_EXISTS', `address ${address} is taken in the cluster by container ${h.name} on peer ${this.peerName(h.peerId)}`)
  }

  /** The name a peer was admitted under; what its heartbeat says only for a non-member. */
  private peerName (peerId: string): string {
    return this.cluster?.member(peerId)?.name ?? this.overlay?.view.get(peerId)?.name ?? peerId
  }

  private async requireCriu (): Promise<void> {
    const p = this.config.criuPath
    const { execa } = await import('execa')
    const r = await execa(p, ['--version'], { reject: false, timeout: 10_000 })
    if (r.exitCode !== 0) {
      throw new MscError('CRIU_MISSING', `CRIU is not usable at ${p}: run \`npm run setup\`, or point --criu / MSC_CRIU at CRIU >= 4.2 (\`msc doctor\` checks it)`)
    }
  }

  /**
   * DIR/tmp holds what a running node is working on: staging of incoming migrations
   * (mig-ID), of outgoing ones (mig-out-ID) and partial transfers (msc-image-*). A node
   * killed mid-migration left them behind: remove the incoming ones and partial
   * transfers now that this node owns the data dir (mounts inside, e.g. a CRIU cgroup
   * yard, are unmounted first). An outgoing staging dir may hold the only dump of a
   * container that was frozen when the node died: a complete one becomes a checkpoint
   * of that container (recoverInterruptedDump); anything else is kept, and said so.
   */
  private async clearTmp (): Promise<void> {
    const entries = await fs.readdir(this.dataDir.tmp).catch(() => [] as string[])
    const outgoing = entries.filter((e) => e.startsWith('mig-out-'))
    const removed = entries.filter((e) => !e.startsWith('mig-out-'))
    for (const e of removed) await removeTree(path.join(this.dataDir.tmp, e))
    if (removed.length > 0) this.log.info({ removed }, 'removed leftovers of an interrupted run from DIR/tmp')
    if (outgoing.length === 0) return
    // This runs before the node's runc and container manager exist (nothing may start
    // before DIR/tmp is settled); the recovery needs only runc state and the cgroup names.
    const nodeId = await this.dataDir.nodeId()
    const parent = this.config.cgroupParent !== '' ? this.config.cgroupParent : `msc-${nodeId}`
    const runc = new Runc({ runcPath: this.config.runcPath, criuPath: this.config.criuPath, root: this.dataDir.runcRoot, logger: this.rootLog.child({ component: 'runc' }) })
    for (const e of outgoing) {
      const dir = path.join(this.dataDir.tmp, e)
      const r = await recoverOutgoing({ dataDir: this.dataDir, runc, cgroupsPath: (n) => cgroupsPathOf(parent, n) }, dir)
        .catch((err) => ({ reason: `recovery failed: ${(err as Error).message}` }))
      if ('released' in r) {
        this.log.warn({ container: r.released, to: r.to, toName: r.toName, phase: r.phase },
          `an outgoing migration of ${r.released} was interrupted by the node's end after ${r.toName} had restored it: past the point of no return, so it was released to ${r.toName} (which keeps and owns it) and its dump here deleted`)
      } else if ('frozen' in r) {
        this.log.warn({ container: r.frozen, migration: r.migrationId }, `an outgoing migration of ${r.frozen} was interrupted by the node's end after a dump that sent its pages to the target: ${r.frozen} is kept frozen here. ` +
          `Nothing thaws it automatically: if no other node runs ${r.frozen} (the target may have taken it over; see \`msc peer ls\`), \`msc restore ${r.frozen}\` thaws it`)
      } else if ('container' in r) {
        this.log.warn({ container: r.container, checkpoint: r.checkpoint.id }, `an outgoing migration of ${r.container} was interrupted by the node's end after its final dump: the dump is now its checkpoint ${r.checkpoint.id}. ` +
          `Nothing restores it automatically: if no other node runs ${r.container} (the target may have taken it over; see \`msc peer ls\`), \`msc restore ${r.container}\` brings it back here`)
      } else {
        this.log.warn({ dir, reason: r.reason }, "an outgoing migration was interrupted by the node's end; its staging dir is kept (remove it once it is not needed)")
      }
    }
  }

  /** One node per data dir: a live pid in node.pid means the dir is taken. */
  private async claimDataDir (): Promise<void> {
    const file = this.dataDir.pidFile
    try {
      const pid = Number((await fs.readFile(file, 'utf8')).trim())
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new MscError('ALREADY_EXISTS', `another msc node (pid ${pid}) already uses data dir ${this.config.dataDir}`)
      }
    } catch (err) {
      if (err instanceof MscError) throw err
    }
    await writeFileAtomic(file, `${process.pid}\n`, { mode: 0o600 })
    this.claimed = true
  }
}

/** A container as the API shows it, with its replication when this node replicates it. */
function withReplication (info: ContainerInfo, f: FailoverService): ContainerInfo {
  const replication = f.containerStatus(info.name)
  return replication != null ? { ...info, replication } : info
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** `memberName`: the name the cluster admitted it under (its heartbeat's is self-reported). */
function toPeerInfo (m: Member, connected: boolean, memberName?: string): PeerInfo {
  return {
    peerId: m.peerId,
    name: memberName ?? m.name,
    addrs: m.addrs,
    state: m.state,
    lastHeard: new Date(m.lastHeard).toISOString(),
    stateSince: new Date(m.stateSince).toISOString(),
    connected,
    version: m.version,
    role: m.role,
    rttMs: m.rttMs,
    containers: m.containers.map((c) => ({ name: c.name, epoch: c.epoch, state: c.state })),
    resources: m.resources
  }
}
