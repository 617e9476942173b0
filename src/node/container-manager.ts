import fs from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import type { Runc, RuncState } from '../runtime/runc.ts'
import { runStateOf } from '../runtime/run-state.ts'
import { loadBundle, runtimeConfig, writeRuntimeBundle, type LoadedBundle, type OciConfig } from '../runtime/bundle.ts'
import { removeTree } from '../runtime/mounts.ts'
import { RecordCache } from './record-cache.ts'
import { CRIU_HOST_NETWORK_CONFIG, CRIU_LAN_NETWORK_CONFIG, type DataDir } from './data-dir.ts'
import type { CheckpointInfo, ContainerInfo, ContainerState, FenceInfo, LeaseLost } from '../api/types.ts'
import { KeyedMutex } from '../util/keyed-mutex.ts'
import { MAX_RESUMES, type Handover } from '../cluster/handover.ts'
import type { LeaseProof } from '../failover/grant.ts'
import { fsyncDir, fsyncTree, renameDurable, writeFileAtomic } from '../util/atomic-file.ts'
import type { LanNetwork } from '../network/lan-address.ts'
import type { LanNetworks } from '../network/lan-netns.ts'

/** What msc remembers of a container, in DIR/containers/NAME/container.json. */
export interface ContainerRecord {
  name: string
  bundle: string
  createdAt: string
  startedAt: string | null
  /** The last checkpoint was taken with --stop and not restored since. */
  checkpointed: boolean
  /** Ownership epoch in the cluster: set at run, raised by one at each handover. */
  epoch?: number
  /** Restored here by an incoming migration the source has not committed yet. */
  pendingMigration?: boolean
  /**
   * Another node owns the container at a higher epoch: this copy was stopped and never
   * runs again (not restarted, not restorable, not claimed); its data stays for the
   * operator until `msc rm`.
   */
  fenced?: FenceInfo
  /** The handover that made this node the owner at `epoch` (a migration), if any. */
  handover?: Handover
  /** Standbys that keep its checkpoints (0 or absent: not replicated, no failover). */
  replicas?: number
  /** The majority's grants that made this node the owner at `epoch` (a failover), if any. */
  lease?: LeaseProof
  /**
   * This node could not renew the container's lease in time and killed it (self-fencing),
   * or the container died while this node was down (`cause: 'node-down'`: a power cut,
   * a crash, the lease guard): another node may own it now. Kept, stopped, until that is
   * settled (a takeover fences it for good) or an operator restores it.
   */
  leaseLost?: LeaseLost
  /** Being restored here by a failover, not yet running: not claimed (replica-ops.ts). */
  failoverPending?: boolean
  /**
   * The migration (its id) whose dump sent the pages to the target and left the
   * container frozen here, when the node ended before the target said "restored".
   * Nothing thaws it automatically (the target may run it); `msc restore` does.
   */
  frozenByMigration?: string
  /** Its own address on the LAN (`--network lan`); absent: the host's network. Travels with it. */
  network?: LanNetwork
  /**
   * How often this node ran it again from a dump or checkpoint (a migration's rollback,
   * a thaw, `msc restore`), claimed with it. A migration target that lost its decision
   * must tell the source's resume from a claim made before the freeze.
   */
  resumes?: number
  /** Target side, pending: the source's `resumes` in its offer (what settle.ts compares against). */
  sourceResumes?: number
}

/**
 * Asked before a container name is taken on this node: returns the ownership epoch
 * to use, or throws when the cluster already has that name elsewhere. The name stays
 * claimed (reserved) until `releaseName` is called, when the start is over.
 */
export type NameClaimer = (name: string) => Promise<number>

export interface RunOptions {
  replicas?: number
  network?: LanNetwork
}

export interface ContainerManagerInit {
  dataDir: DataDir
  runc: Runc
  cgroupParent: string
  logMaxBytes: number
  stopTimeoutMs: number
  /** Pass --tcp-established to CRIU on checkpoint and restore. */
  tcpEstablished: boolean
  logger: Logger
  claimName?: NameClaimer
  /** A start that claimed a name is over (its record written, or everything undone). */
  releaseName?: (name: string) => void
  /** `--network lan`: the node's namespaces and links for containers with their own address. */
  lan?: LanNetworks
  /** Throws when a member's container holds ADDRESS (the cluster's view). */
  claimAddress?: (address: string, name: string) => void
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const CKPT_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/

/** A container's cgroupsPath: under the node's cgroup parent, named after the container. */
export function cgroupsPathOf (cgroupParent: string, name: string): string {
  return `/${cgroupParent}/${name}`
}

export function validateName (name: unknown): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new MscError('INVALID_ARGUMENT', `invalid container name ${JSON.stringify(name)}: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit`)
  }
  return name
}

/** How long one `runc list` serves the periodic readers (ContainerManager.runcStates). */
export const RUNC_LIST_TTL_MS = 1000

/**
 * The containers of one node: runs, stops, checkpoints and restores them through the
 * runtime, and keeps msc's record of each on disk so a restarted node adopts the
 * containers that outlived it. One operation at a time per container.
 */
export class ContainerManager {
  private readonly init: ContainerManagerInit
  private readonly log: Logger
  private readonly lock = new KeyedMutex()
  private listed: { at: number; states: Promise<RuncState[]> } | null = null

  /** Read at every heartbeat, lease and replication check: parsed once per version of each file. */
  private readonly records: RecordCache<ContainerRecord>

  constructor (init: ContainerManagerInit) {
    this.init = init
    this.log = init.logger
    this.records = new RecordCache(init.dataDir.containersDir, path.basename(init.dataDir.recordFile('x')), (e) => NAME_RE.test(e))
  }

  private get dd (): DataDir {
    return this.init.dataDir
  }
  private get runc (): Runc {
    return this.init.runc
  }

  async names (): Promise<string[]> {
    return await this.records.names()
  }

  async readRecord (name: string): Promise<ContainerRecord | null> {
    return await this.records.read(name)
  }

  private async mustRecord (name: string): Promise<ContainerRecord> {
    validateName(name)
    const r = await this.readRecord(name)
    if (r == null) throw new MscError('NOT_FOUND', `no container named ${name} on this node`)
    return r
  }

  /**
   * NAME is a container of this node that is not fenced: it runs, or may run again here.
   * A fenced copy belongs to another node now, so it does not keep this node from
   * keeping that node's replicas of it (failover sets the copy aside).
   */
  async holdsUnfenced (name: string): Promise<boolean> {
    const r = await this.readRecord(name)
    return r != null && r.fenced == null
  }

  async writeRecord (r: ContainerRecord): Promise<void> {
    this.records.forget(r.name)
    await writeRecordFile(this.dd, r)
  }

  /** Runs `fn` with the container locked (migration holds it for its whole run). */
  async exclusive<T> (name: string, fn: () => Promise<T>): Promise<T> {
    return await this.locked(name, fn)
  }

  /**
   * Every container runc knows, from one `runc list` shared by the periodic readers
   * (heartbeat claims, lease and replication checks) for up to RUNC_LIST_TTL_MS. Spawning
   * runc blocks the node's event loop for several milliseconds each time, which made
   * these polls the largest part of an idle node's CPU. Every lifecycle operation drops
   * the shared list when it ends, so the node's own changes are seen at once; a
   * container that exits on its own is seen within the TTL.
   */
  async runcStates (): Promise<RuncState[]> {
    // Every reader joins runc's list with msc's records: with none, runc is not asked
    // (an idle node spawned one `runc list` a second for nothing).
    if (this.listed === null && (await this.names()).length === 0) return []
    const now = Date.now()
    if (this.listed === null || now - this.listed.at > RUNC_LIST_TTL_MS) {
      const states = this.runc.list()
      this.listed = { at: now, states }
      states.catch(() => {
        if (this.listed?.states === states) this.listed = null
      })
    }
    return await this.listed.states
  }

  /** Runs FN under NAME's lock; the shared runc list is stale afterwards. */
  private async locked<T> (name: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await this.lock.run(name, fn)
    } finally {
      this.listed = null
    }
  }

  get settings (): { logMaxBytes: number; stopTimeoutMs: number; tcpEstablished: boolean } {
    return { logMaxBytes: this.init.logMaxBytes, stopTimeoutMs: this.init.stopTimeoutMs, tcpEstablished: this.init.tcpEstablished }
  }

  cgroupsPath (name: string): string {
    return cgroupsPathOf(this.init.cgroupParent, name)
  }

  /**
   * The config.json runc runs NAME's bundle with on this node. Unless the node restores
   * connections established (`--tcp-established`), CRIU gets the node's configuration
   * that dumps connections stateless and restores them closed (CRIU_HOST_NETWORK_CONFIG).
   */
  runtimeConfigFor (name: string, bundle: LoadedBundle, network?: LanNetwork): OciConfig {
    if (network != null) {
      // Its address is the same on every node: connections are restored established
      // (its own configuration file, which writeCriuConfig switches for replication and failover).
      return runtimeConfig(bundle, {
        cgroupsPath: this.cgroupsPath(name),
        requestSocket: this.dd.requestSocket,
        criuConfig: this.dd.criuConfigOf(name),
        netnsPath: this.mustLan().nsPath(name)
      })
    }
    return runtimeConfig(bundle, {
      cgroupsPath: this.cgroupsPath(name),
      requestSocket: this.dd.requestSocket,
      criuConfig: this.init.tcpEstablished ? null : this.dd.criuConfigFile
    })
  }

  /**
   * What a lan container's own CRIU configuration (DataDir.criuConfigOf) tells CRIU
   * until the next call: `established`, connections dumped with TCP repair and restored
   * established (a migration, a checkpoint: the same address, the peers still there);
   * `closed`, dumped without their state and restored closed (a replication generation,
   * restored by a failover long after the clients' view moved on: they get a reset).
   * runc hands CRIU the file named in the container's config at every checkpoint and
   * restore, and has no option of its own for closing connections. Callers hold the
   * container's lock and put `established` back when done; a node restarted meanwhile
   * does so at start (settleCriuConfigs).
   */
  async writeCriuConfig (name: string, tcp: 'established' | 'closed'): Promise<void> {
    await writeFileAtomic(this.dd.criuConfigOf(name), tcp === 'established' ? CRIU_LAN_NETWORK_CONFIG : CRIU_HOST_NETWORK_CONFIG, { mode: 0o600 })
  }

  /** At start: every lan container's own CRIU configuration is back at `established` (a dump or restore may have been cut short). */
  async settleCriuConfigs (): Promise<void> {
    for (const n of await this.names()) {
      const r = await this.readRecord(n)
      if (r?.network == null) continue
      if (await fs.access(this.dd.criuConfigOf(n)).then(() => true, () => false)) await this.writeCriuConfig(n, 'established')
    }
  }

  /** Whether CRIU restores NAME's connections established (its own address, or the node's option). */
  tcpEstablishedFor (r: Pick<ContainerRecord, 'network'> | null): boolean {
    return r?.network != null || this.init.tcpEstablished
  }

  mustLan (): LanNetworks {
    if (this.init.lan == null) throw new MscError('NETWORK', 'this node has no LAN networking')
    return this.init.lan
  }

  /** Throws when ADDRESS is taken by another container of this node or claimed by a member's. */
  async checkAddressFree (address: string, name: string): Promise<void> {
    for (const n of await this.names()) {
      if (n === name) continue
      const r = await this.readRecord(n)
      if (r?.network?.address === address && r.fenced == null) throw new MscError('ALREADY_EXISTS', `address ${address} is taken by container ${n} on this node`)
    }
    this.init.claimAddress?.(address, name)
  }

  /** Throws unless this node can give container NAME the address NET: its LAN interface and subnet fit, and the address is free. */
  async checkNetworkUsable (net: LanNetwork, name: string): Promise<void> {
    await this.mustLan().check(net)
    await this.checkAddressFree(net.address, name)
  }

  /**
   * Every container of this node (`msc ps`, `msc status`): one fresh `runc list` for
   * all, not one `runc state` process per container (a node with 500 containers took
   * half a minute for a `ps`).
   */
  async list (): Promise<ContainerInfo[]> {
    const names = await this.names()
    if (names.length === 0) return []
    const states = new Map((await this.runc.list()).map((s) => [s.id, s]))
    const out: ContainerInfo[] = []
    for (const n of names) {
      const r = await this.readRecord(n).catch(() => null)
      if (r == null) continue
      out.push(toInfo(r, states.get(n) ?? null, await this.checkpoints(n)))
    }
    return out
  }

  async inspect (name: string): Promise<ContainerInfo> {
    const r = await this.mustRecord(name)
    const st = await this.runc.state(name)
    const cps = await this.checkpoints(name)
    return toInfo(r, st, cps)
  }

  async run (name: string, bundleDir: string, signal?: AbortSignal, opts: RunOptions = {}): Promise<ContainerInfo> {
    validateName(name)
    if (typeof bundleDir !== 'string' || bundleDir === '') throw new MscError('INVALID_ARGUMENT', 'a bundle directory is required')
    return await this.locked(name, async () => {
      if (await this.readRecord(name) != null) {
        throw new MscError('ALREADY_EXISTS', `a container named ${name} already exists on this node (remove it with \`msc rm ${name}\`)`)
      }
      if (await this.runc.state(name) != null) {
        throw new MscError('ALREADY_EXISTS', `runc already has a container ${name} under this node's root`)
      }
      const bundle = await loadBundle(bundleDir)
      const net = opts.network
      if (net != null) {
        // Everything that can refuse comes before anything is made.
        await this.checkNetworkUsable(net, name)
      }
      const epoch = this.init.claimName != null ? await this.init.claimName(name) : 1
      try {
        return await this.runNew(name, bundle, epoch, opts, signal)
      } finally {
        this.init.releaseName?.(name)
      }
    })
  }

  /** run(), once everything that can refuse has been checked and the name claimed. The caller holds the name's lock. */
  private async runNew (name: string, bundle: LoadedBundle, epoch: number, opts: RunOptions, signal?: AbortSignal): Promise<ContainerInfo> {
    const net = opts.network
    const dir = this.dd.containerDir(name)
    await fs.mkdir(dir, { recursive: true, mode: 0o700 })
    const now = new Date().toISOString()
    const rec: ContainerRecord = { name, bundle: bundle.dir, createdAt: now, startedAt: now, checkpointed: false, epoch, replicas: opts.replicas ?? 0, ...(net != null ? { network: net } : {}) }
    let netMade = false
    try {
      await fsyncDir(this.dd.containersDir) // the new containers/NAME entry itself, before anything runs
      if (net != null) {
        await this.mustLan().create(name, net)
        netMade = true
        await this.writeCriuConfig(name, 'established')
      }
      await writeRuntimeBundle(this.dd.runtimeBundle(name), this.runtimeConfigFor(name, bundle, net))
      const st = await this.runc.run(name, this.dd.runtimeBundle(name), {
        logFile: this.dd.logFile(name),
        logMaxBytes: this.init.logMaxBytes,
        pidFile: this.dd.pidFileOf(name),
        signal
      })
      await this.writeRecord(rec)
      this.log.info({ name, pid: st.pid, bundle: bundle.dir }, 'container started')
      return toInfo(rec, st, [])
    } catch (err) {
      // Whatever runc got to make (an interrupted run) goes too, or the name would be
      // stuck: unknown to msc, yet taken in runc's root.
      await this.runc.delete(name, { force: true }).catch(() => {})
      if (netMade) await this.mustLan().remove(name)
      await removeTree(dir)
      throw err
    }
  }

  async stop (name: string): Promise<ContainerInfo> {
    return await this.locked(name, async () => {
      const r = await this.mustRecord(name)
      const st = await this.runc.state(name)
      if (st == null || st.status === 'stopped') {
        if (st != null) await this.runc.delete(name, { force: true })
        throw new MscError('INVALID_STATE', `container ${name} is not running`)
      }
      await this.runc.stop(name, this.init.stopTimeoutMs)
      r.startedAt = null
      await this.writeRecord(r)
      this.log.info({ name }, 'container stopped')
      return toInfo(r, null, await this.checkpoints(name))
    })
  }

  /** Removes a stopped container with its checkpoints and logs. */
  async remove (name: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.locked(name, async () => {
      const r = await this.mustRecord(name)
      const st = await this.runc.state(name)
      if (st != null && st.status !== 'stopped') {
        if (opts.force !== true) throw new MscError('INVALID_STATE', `container ${name} is ${st.status}: stop it first (or --force)`)
        await this.runc.stop(name, this.init.stopTimeoutMs)
      } else if (st != null) {
        await this.runc.delete(name, { force: true })
      }
      if (r.network != null) await this.init.lan?.remove(name)
      await removeTree(this.dd.containerDir(name))
      this.log.info({ name }, 'container removed')
    })
  }

  async checkpoints (name: string): Promise<CheckpointInfo[]> {
    const dir = this.dd.checkpointsDir(name)
    const entries = await fs.readdir(dir).catch(() => [] as string[])
    const out: CheckpointInfo[] = []
    for (const id of entries) {
      try {
        out.push(JSON.parse(await fs.readFile(path.join(dir, id, 'meta.json'), 'utf8')) as CheckpointInfo)
      } catch {} // no meta.json: a checkpoint that never completed
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
  }

  /**
   * Writes a checkpoint. The container keeps running unless `stop`; with `stop` it is
   * gone from runc afterwards and only the images remain (state 'checkpointed').
   */
  async checkpoint (name: string, opts: { stop?: boolean; signal?: AbortSignal } = {}): Promise<CheckpointInfo> {
    return await this.locked(name, async () => {
      const r = await this.mustRecord(name)
      const st = await this.runc.state(name)
      if (st == null || (st.status !== 'running' && st.status !== 'paused')) {
        throw new MscError('INVALID_STATE', `container ${name} is ${st?.status ?? 'stopped'}: only a running container can be checkpointed`)
      }
      const created = new Date()
      const id = `ck-${created.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${Math.random().toString(16).slice(2, 6)}`
      const imageDir = this.dd.checkpointDir(name, id)
      const started = Date.now()
      try {
        await this.runc.checkpoint(name, { imageDir, workDir: imageDir, leaveRunning: opts.stop !== true, tcpEstablished: this.tcpEstablishedFor(r), signal: opts.signal })
      } catch (err) {
        // Keep CRIU's log for whoever debugs it; drop the partial images.
        await fs.mkdir(this.dd.workDir(name, 'failed'), { recursive: true })
        await fs.copyFile(path.join(imageDir, 'dump.log'), path.join(this.dd.workDir(name, 'failed'), `dump-${id}.log`)).catch(() => {})
        await removeTree(imageDir)
        // A failed dump without --leave-running may still leave the task frozen or
        // killed; whatever runc says now is the truth the next `ps` shows.
        throw err
      }
      const info: CheckpointInfo = {
        id,
        container: name,
        createdAt: created.toISOString(),
        leftRunning: opts.stop !== true,
        sizeBytes: await dirSize(imageDir),
        durationMs: Date.now() - started
      }
      // meta.json marks the checkpoint complete: CRIU's images must be on disk before it.
      await fsyncTree(imageDir)
      await writeFileAtomic(path.join(imageDir, 'meta.json'), JSON.stringify(info, null, 2), { mode: 0o600 })
      if (opts.stop === true) {
        await this.runc.delete(name, { force: true })
        r.startedAt = null
        r.checkpointed = true
        await this.writeRecord(r)
      }
      this.log.info({ name, id, ms: info.durationMs, bytes: info.sizeBytes, stop: opts.stop === true }, 'checkpoint written')
      return info
    })
  }

  /** Brings a stopped container back from a checkpoint (the latest unless `from`). */
  async restore (name: string, opts: { from?: string; signal?: AbortSignal } = {}): Promise<ContainerInfo> {
    return await this.locked(name, async () => {
      const r = await this.mustRecord(name)
      if (r.fenced != null) {
        const f = r.fenced
        throw new MscError('INVALID_STATE',
          `container ${name} was fenced: another node (${f.ownerName ?? f.owner}, peer ${f.owner}) owns it at epoch ${f.epoch} since ${f.at}; this copy never runs again (its checkpoints and log stay here until \`msc rm ${name}\`)`)
      }
      const st = await this.runc.state(name)
      if (r.frozenByMigration != null && st?.status === 'paused') {
        // Its memory is whole in the frozen processes: thawing is the restore.
        await this.runc.resume(name)
        // Its address went quiet for that migration's dump: live here again.
        if (r.network != null) await this.mustLan().activate(name, r.network)
        const id = r.frozenByMigration
        delete r.frozenByMigration
        delete r.leaseLost
        countResume(r)
        await this.writeRecord(r)
        this.log.info({ name, migration: id }, 'container thawed: frozen by an interrupted migration')
        return toInfo(r, await this.runc.state(name), await this.checkpoints(name))
      }
      if (st != null && st.status !== 'stopped') {
        throw new MscError('INVALID_STATE', `container ${name} is ${st.status}: stop it before restoring (a container never runs twice)`)
      }
      const cps = await this.checkpoints(name)
      let cp: CheckpointInfo | undefined
      if (opts.from != null) {
        if (!CKPT_RE.test(opts.from)) throw new MscError('INVALID_ARGUMENT', `invalid checkpoint id ${JSON.stringify(opts.from)}`)
        cp = cps.find((c) => c.id === opts.from)
        if (cp == null) throw new MscError('NOT_FOUND', `container ${name} has no checkpoint ${opts.from} (see \`msc checkpoints ${name}\`)`)
      } else {
        cp = cps.at(-1)
        if (cp == null) throw new MscError('NOT_FOUND', `container ${name} has no checkpoint to restore from`)
      }
      if (st != null) await this.runc.delete(name, { force: true })
      // Refuse early, with a clear message, if the user's bundle went away.
      await loadBundle(r.bundle)
      const workDir = this.dd.workDir(name, `restore-${Date.now()}`)
      await fs.mkdir(workDir, { recursive: true })
      const started = Date.now()
      // A lan container that lost its lease, or died with its host, gave its address up:
      // it is built again, quiet until the restore ran.
      let netMade = false
      if (r.network != null && !(await this.mustLan().exists(name))) {
        await this.checkNetworkUsable(r.network, name)
        await this.mustLan().create(name, r.network, { quiet: true })
        netMade = true
      }
      let pid: number
      try {
        pid = (await this.runc.restore(name, this.dd.runtimeBundle(name), {
          imageDir: this.dd.checkpointDir(name, cp.id),
          workDir,
          tcpEstablished: this.tcpEstablishedFor(r),
          logFile: this.dd.logFile(name),
          logMaxBytes: this.init.logMaxBytes,
          pidFile: this.dd.pidFileOf(name),
          signal: opts.signal
        })).pid
      } catch (err) {
        if (netMade) await this.releaseAddress(name)
        throw err
      }
      // A dump a migration left here (recoverInterruptedDump) was taken with the address quiet.
      if (r.network != null) await this.mustLan().activate(name, r.network)
      r.startedAt = new Date().toISOString()
      r.checkpointed = false
      delete r.leaseLost
      countResume(r)
      await this.writeRecord(r)
      this.log.info({ name, from: cp.id, ms: Date.now() - started, pid }, 'container restored')
      return toInfo(r, await this.runc.state(name), cps)
    })
  }

  /** Output files, oldest first (the rotated LOG.1, then LOG). */
  async logFiles (name: string): Promise<string[]> {
    await this.mustRecord(name)
    const f = this.dd.logFile(name)
    return [f + '.1', f]
  }

  /** What this node owns, for its membership heartbeat. */
  async claims (): Promise<Array<{ name: string; epoch: number; state: ClaimState; handover?: Handover; grant?: LeaseProof; address?: string; resumes?: number }>> {
    const out: Array<{ name: string; epoch: number; state: ClaimState; handover?: Handover; grant?: LeaseProof; address?: string; resumes?: number }> = []
    // One shared `runc list` for all (this runs at every heartbeat), not one `runc state` each.
    const states = new Map((await this.runcStates().catch(() => [])).map((x) => [x.id, x]))
    for (const n of await this.names()) {
      const r = await this.readRecord(n)
      if (r == null || r.pendingMigration === true || r.failoverPending === true) continue // not ours until committed / restored
      const st = states.get(n) ?? null
      if (r.fenced != null) {
        // Someone else's now. Still running only if the node died between marking
        // and killing it: this heartbeat-time check finishes the job.
        if (st != null && st.status !== 'stopped') void this.killFenced(n)
        continue
      }
      // The certificate that made it ours, so that views that knew the previous owner accept the claim.
      const proof = r.handover != null && r.handover.epoch === r.epoch
        ? { handover: r.handover }
        : r.lease != null && r.lease.epoch === r.epoch
        ? { grant: r.lease }
        : {}
      out.push({ name: n, epoch: r.epoch ?? 1, state: runState(r, st), ...proof, ...(r.network != null ? { address: r.network.address } : {}), ...((r.resumes ?? 0) > 0 ? { resumes: r.resumes } : {}) })
    }
    return out
  }

  /**
   * Fencing: another node owns `name` at `f.epoch`, above ours. Our copy is killed (two
   * must never run) but its directory, checkpoints and log stay until an operator runs
   * `msc rm`. The record is marked first, so a node that dies in between never claims
   * or runs this copy again (claims() kills it if it still runs). Returns false when
   * there is nothing to fence (no record, an uncommitted incoming copy, our epoch is
   * not lower, or already fenced).
   */
  async fence (name: string, f: FenceInfo): Promise<boolean> {
    return await this.locked(name, async () => {
      const r = await this.readRecord(name)
      if (r == null || r.pendingMigration === true || r.fenced != null || (r.epoch ?? 1) >= f.epoch) return false
      r.fenced = f
      r.startedAt = null
      await this.writeRecord(r)
      await this.runc.stop(name, 0) // no grace period: the other copy already runs
      // Its address is the new owner's now: this copy never runs again, so its link goes.
      if (r.network != null) await this.releaseAddress(name)
      return true
    })
  }

  /**
   * A lan container that no longer runs here, and may run elsewhere (fenced, self-fenced,
   * dead while the node was down), gives its address up: its namespace and link go, so
   * that this node never answers for the address (ARP, resets) while a standby's copy
   * holds it. `msc restore` builds them again. Errors are logged, never thrown.
   */
  async releaseAddress (name: string): Promise<void> {
    await this.init.lan?.remove(name).catch((err: Error) => this.log.error({ name, err: err.message }, "could not remove a stopped container's lan network"))
  }

  private readonly killing = new Set<string>()

  private async killFenced (name: string): Promise<void> {
    if (this.killing.has(name)) return
    this.killing.add(name)
    try {
      await this.locked(name, async () => {
        if ((await this.readRecord(name))?.fenced == null) return
        this.log.error({ name }, 'a fenced container was running (the node stopped while fencing it): killing it')
        await this.runc.stop(name, 0)
      })
    } catch (err) {
      this.log.error({ err: (err as Error).message, name }, 'killing a fenced container failed')
    } finally {
      this.killing.delete(name)
    }
  }

  async stopAll (): Promise<void> {
    for (const n of await this.names()) {
      const st = await this.runc.state(n).catch(() => null)
      if (st != null && st.status !== 'stopped') await this.stop(n).catch((err) => this.log.warn({ err, name: n }, 'stop on exit failed'))
    }
  }
}

/** The states a node claims for its own containers (a fenced one is never claimed). */
export type ClaimState = Exclude<ContainerState, 'fenced'>

/** One more run of the container from a dump or checkpoint (ContainerRecord.resumes), up to MAX_RESUMES. */
export function countResume (r: ContainerRecord): void {
  r.resumes = Math.min((r.resumes ?? 0) + 1, MAX_RESUMES)
}

function runState (r: ContainerRecord, st: RuncState | null): ClaimState {
  return runStateOf(st?.status, r.checkpointed)
}

async function recordNames (dd: DataDir): Promise<string[]> {
  const entries = await fs.readdir(dd.containersDir, { withFileTypes: true }).catch(() => [])
  const out: string[] = []
  for (const e of entries) {
    if (e.isDirectory() && NAME_RE.test(e.name)) {
      try {
        await fs.access(dd.recordFile(e.name))
        out.push(e.name)
      } catch {}
    }
  }
  return out.sort()
}

export async function writeRecordFile (dd: DataDir, r: ContainerRecord): Promise<void> {
  await writeFileAtomic(dd.recordFile(r.name), JSON.stringify(r, null, 2), { mode: 0o600 })
}

export async function readRecordFile (dd: DataDir, name: string): Promise<ContainerRecord | null> {
  try {
    return JSON.parse(await fs.readFile(dd.recordFile(name), 'utf8')) as ContainerRecord
  } catch {
    return null
  }
}

function toInfo (r: ContainerRecord, st: RuncState | null, cps: CheckpointInfo[]): ContainerInfo {
  if (r.fenced != null) {
    // Whatever runc says: a fenced copy is never ours to run (claims() kills a live one).
    const pid = st != null && st.status !== 'stopped' ? st.pid : null
    return { ...baseInfo(r, cps), state: 'fenced', pid, started: null, fenced: r.fenced }
  }
  const state = runState(r, st)
  const live = state === 'running' || state === 'paused' || state === 'created'
  return { ...baseInfo(r, cps), state, pid: live ? st!.pid : null, started: live ? r.startedAt : null }
}

function baseInfo (r: ContainerRecord, cps: CheckpointInfo[]): Omit<ContainerInfo, 'state' | 'pid' | 'started'> {
  return {
    name: r.name,
    createdAt: r.createdAt,
    bundle: r.bundle,
    checkpoints: cps.length,
    lastCheckpoint: cps.at(-1)?.id ?? null,
    epoch: r.epoch ?? 1,
    replicas: r.replicas ?? 0,
    ...(r.network != null ? { network: { mode: 'lan' as const, address: r.network.address, prefix: r.network.prefix, driver: r.network.driver } } : {}),
    ...(r.leaseLost != null ? { leaseLost: r.leaseLost } : {})
  }
}

async function dirSize (dir: string): Promise<number> {
  let total = 0
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await fs.stat(path.join(e.parentPath, e.name))).size
  }
  return total
}

// ---- dumps left by an outgoing migration that the node's end interrupted ----

/**
 * Why the images CRIU left in DIR/tmp/mig-out-ID/images cannot serve as a checkpoint,
 * or null when they can. `files` is the directory's listing, `dumpLog` its dump.log.
 * Pure. CRIU writes inventory.img at the very end of a dump and then logs success; a
 * post-copy (lazy) dump is never usable: its memory pages were only in the page
 * server, which died with the node; nor is a stop-copy dump that streamed its pages to
 * the target's page server (the container was left frozen here instead).
 */
export function interruptedDumpProblem (files: string[], dumpLog: string | null): string | null {
  if (!files.includes('inventory.img')) return 'the final dump did not complete (no inventory.img)'
  if (dumpLog == null) return 'no dump.log to tell whether the dump completed'
  if (!/Dumping finished successfully/.test(dumpLog)) return 'CRIU did not log "Dumping finished successfully"'
  if (/Starting lazy pages server/.test(dumpLog) || /Pagemap generated: \d+ pages \([1-9]\d* lazy\)/.test(dumpLog)) {
    return 'a post-copy dump: its memory pages were never written to the images'
  }
  if (!files.some((f) => /^pages-\d+\.img$/.test(f)) && /Disconnect from the page server/.test(dumpLog)) {
    return 'a dump that streamed its memory pages to the target: they are not in the images'
  }
  return null
}

/**
 * Does CRIU's cgroup.img name `cgroupPath`? The images do not name the runc container,
 * but each task's cgroup (msc's /PARENT/NAME) is there as a protobuf string (field 2
 * of a cgroup member: tag 0x12, varint length, bytes). Matching the whole field keeps
 * /p/web from matching /p/web2. Pure.
 */
export function cgroupImageNames (img: Uint8Array, cgroupPath: string): boolean {
  const str = Buffer.from(cgroupPath)
  const len: number[] = []
  for (let n = str.length;; n >>>= 7) {
    if (n < 0x80) {
      len.push(n)
      break
    }
    len.push((n & 0x7f) | 0x80)
  }
  return Buffer.from(img).includes(Buffer.concat([Buffer.from([0x12, ...len]), str]))
}

export interface DumpRecoveryEnv {
  dataDir: DataDir
  runc: Pick<Runc, 'state' | 'delete'>
  /** msc's cgroupsPath of a container (/PARENT/NAME), to find whose dump it is. */
  cgroupsPath: (name: string) => string
}

export type DumpRecovery = { container: string; checkpoint: CheckpointInfo } | { reason: string }

/**
 * A source node that died after its final dump left the only copy of the container's
 * state in `staging` (DIR/tmp/mig-out-ID). When the container is still recorded here,
 * not running, and the dump is complete, its images become an ordinary checkpoint
 * `migration-ID` (meta.json written inside before the durable rename, so it appears
 * whole or not at all) and the record says `checkpointed`. Never restored
 * automatically: only an operator can know that the target did not commit it.
 */
export async function recoverInterruptedDump (env: DumpRecoveryEnv, staging: string): Promise<DumpRecovery> {
  const dd = env.dataDir
  const id = path.basename(staging).replace(/^mig-out-/, '')
  const ckId = `migration-${id}`
  if (!CKPT_RE.test(ckId)) return { reason: `unexpected staging name ${path.basename(staging)}` }
  const images = path.join(staging, 'images')
  const files = await fs.readdir(images).catch(() => null)
  if (files == null) return { reason: 'no final dump (images/ is missing)' }
  const problem = interruptedDumpProblem(files, await fs.readFile(path.join(images, 'dump.log'), 'utf8').catch(() => null))
  if (problem != null) return { reason: problem }
  const cg = await fs.readFile(path.join(images, 'cgroup.img')).catch(() => null)
  if (cg == null) return { reason: 'no cgroup.img to tell whose dump it is' }
  const owners: string[] = []
  for (const n of await recordNames(dd)) {
    const r = await readRecordFile(dd, n)
    if (r != null && r.pendingMigration !== true && cgroupImageNames(cg, env.cgroupsPath(n))) owners.push(n)
  }
  if (owners.length !== 1) return { reason: owners.length === 0 ? 'no container recorded here matches the dump (released already?)' : `several containers match the dump: ${owners.join(', ')}` }
  const name = owners[0]!
  const st = await env.runc.state(name)
  if (st != null && st.status !== 'stopped') return { reason: `runc still has ${name} ${st.status}: the dump did not stop it` }
  const dest = dd.checkpointDir(name, ckId)
  if (await fs.access(dest).then(() => true, () => false)) return { reason: `${dest} exists already` }
  // Pre-copy: the final dump's `parent` link is ../pre-N, and each pre-K links to
  // ../pre-(K-1). Moving the pre-dumps inside the images keeps every link valid once
  // images/parent says pre-N.
  const parent = await fs.readlink(path.join(images, 'parent')).catch(() => null)
  if (parent != null) {
    for (const e of await fs.readdir(staging)) {
      if (/^pre-\d+$/.test(e)) await fs.rename(path.join(staging, e), path.join(images, e))
    }
    await fs.rm(path.join(images, 'parent'))
    await fs.symlink(path.basename(parent), path.join(images, 'parent'))
  }
  const inv = await fs.stat(path.join(images, 'inventory.img'))
  const info: CheckpointInfo = {
    id: ckId,
    container: name,
    createdAt: inv.mtime.toISOString(),
    leftRunning: false,
    sizeBytes: await dirSize(images),
    durationMs: 0
  }
  await fsyncTree(images)
  await writeFileAtomic(path.join(images, 'meta.json'), JSON.stringify(info, null, 2), { mode: 0o600 })
  await fs.mkdir(dd.checkpointsDir(name), { recursive: true })
  await fsyncDir(dd.containerDir(name))
  await renameDurable(images, dest)
  if (st != null) await env.runc.delete(name, { force: true })
  const r = await readRecordFile(dd, name)
  if (r != null) {
    r.startedAt = null
    r.checkpointed = true
    await writeRecordFile(dd, r)
  }
  // Only what was ours to move: anything else there (a migration journal, say) stays.
  await fs.rmdir(staging).catch(() => {})
  return { container: name, checkpoint: info }
}
