/**
 * What replication and failover do to this node's containers, each under the
 * container's lock like every other lifecycle operation: freeze-and-dump for a
 * generation, killing a container whose lease ran out, and turning a replica into a
 * container of this node.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../util/logger.ts'
import { MscError, errText } from '../util/errors.ts'
import type { Runc } from '../runtime/runc.ts'
import { loadBundle, writeRuntimeBundle } from '../runtime/bundle.ts'
import { removeTree } from '../runtime/mounts.ts'
import { fsyncDir } from '../util/atomic-file.ts'
import type { ContainerManager, ContainerRecord } from './container-manager.ts'
import type { DataDir } from './data-dir.ts'
import type { LeaseProof } from '../failover/grant.ts'
import type { ReplicaMeta } from '../replication/replica-store.ts'
import { checkReceivedNetwork, type LanNetwork } from '../network/lan-address.ts'

export class ReplicaOps {
  private readonly m: ContainerManager
  private readonly runc: Runc
  private readonly dd: DataDir
  private readonly log: Logger

  constructor (init: { manager: ContainerManager; runc: Runc; dataDir: DataDir; logger: Logger }) {
    this.m = init.manager
    this.runc = init.runc
    this.dd = init.dataDir
    this.log = init.logger
  }

  /**
   * runc pause first: CRIU then finds the cgroup frozen and skips its own freezing,
   * which waits in 100 ms steps; `capture` sees the rootfs as the dump does. The
   * container is resumed whatever happens. Returns how long it was frozen.
   */
  async freezeDump (name: string, imageDir: string, capture: () => Promise<void>, signal: AbortSignal): Promise<number> {
    return await this.m.exclusive(name, async () => {
      const r = await this.m.readRecord(name)
      if (r == null || r.fenced != null || r.leaseLost != null || r.pendingMigration === true) throw new MscError('INVALID_STATE', `${name} is not ours to replicate now`)
      const st = await this.runc.state(name)
      if (st?.status !== 'running') throw new MscError('INVALID_STATE', `${name} is ${st?.status ?? 'stopped'}`)
      await fs.mkdir(imageDir, { recursive: true })
      // A generation is only ever restored by a failover, long after its clients' view
      // moved on: a lan container's connections are dumped without their state (and
      // without touching them: the container runs on), like the host network's.
      const lan = r.network != null
      if (lan) await this.m.writeCriuConfig(name, 'closed')
      const t0 = performance.now()
      const at: number[] = []
      try {
        await this.runc.pause(name)
        try {
          at.push(performance.now())
          await capture()
          at.push(performance.now())
          await this.runc.checkpoint(name, { imageDir, workDir: imageDir, leaveRunning: true, tcpEstablished: lan ? false : this.m.settings.tcpEstablished, signal })
          at.push(performance.now())
        } finally {
          await this.runc.resume(name).catch((err) => this.log.error({ name, err: errText(err) }, 'could not resume a container after its replication dump'))
        }
      } finally {
        if (lan) await this.m.writeCriuConfig(name, 'established')
      }
      const ms = Math.round(performance.now() - t0)
      const [p = t0, c = p, d = c] = at
      this.log.debug({ name, ms, pauseMs: Math.round(p - t0), captureMs: Math.round(c - p), dumpMs: Math.round(d - c), resumeMs: Math.round(t0 + ms - d) }, 'replication freeze')
      return ms
    })
  }

  /**
   * Self-fencing: the lease could not be renewed, so another node may soon own the
   * container. It is killed at once (no grace period: the deadline is what keeps two
   * copies from running) and marked, so that nothing here restarts it by itself.
   */
  async selfFence (name: string, epoch: number): Promise<boolean> {
    return await this.m.exclusive(name, async () => {
      const r = await this.m.readRecord(name)
      if (r == null || (r.epoch ?? 1) !== epoch || r.fenced != null || r.pendingMigration === true) return false
      r.leaseLost = { epoch, at: new Date().toISOString(), cause: 'renewal' }
      r.startedAt = null
      await this.m.writeRecord(r)
      await this.runc.stop(name, 0)
      // A standby may take its address over now: this node must not answer for it.
      if (r.network != null) await this.m.releaseAddress(name)
      return true
    })
  }

  /**
   * Failover: generation `genDir` of a replica becomes this node's container at
   * `epoch`, owned by the grants in `proof`. The record is written before the restore,
   * marked failoverPending (not claimed: a node restarted in between keeps it if it
   * runs, removes it if not); a failed restore leaves nothing behind and returns the
   * generation's rootfs to the replica, so the caller may try it, or an older one, again.
   */
  /**
   * Moves a fenced copy's directory (its record, checkpoints and log) out of the name's
   * way, to DATA_DIR/containers/.fenced/NAME-epochE-MS, so that this node can restore
   * the container from a replica. A fenced copy is another node's container now; it is
   * kept there for whoever wants its checkpoints or log, and never restored or claimed.
   * The caller holds the name's lock and has deleted runc's container of that name.
   */
  private async setAsideFenced (r: ContainerRecord): Promise<void> {
    const aside = this.dd.fencedDir
    await fs.mkdir(aside, { recursive: true, mode: 0o700 })
    const to = path.join(aside, `${r.name}-epoch${r.epoch}-${Date.now()}`)
    await fs.rename(this.dd.containerDir(r.name), to)
    await fsyncDir(this.dd.containersDir)
    await fsyncDir(aside)
    this.log.info({ name: r.name, epoch: r.epoch, to }, 'a fenced copy was set aside to restore this container here')
  }

  async adoptReplica (meta: ReplicaMeta, genDir: string, epoch: number, proof: LeaseProof, signal: AbortSignal): Promise<void> {
    const name = meta.container
    await this.m.exclusive(name, async () => {
      const existing = await this.m.readRecord(name)
      if (existing != null && existing.fenced == null) throw new MscError('ALREADY_EXISTS', `a container named ${name} exists on this node`)
      // Its own address on the LAN: checked on receipt, and again here (replica.json is
      // read back from disk), then whether this node can build it now.
      const net: LanNetwork | undefined = meta.network != null ? checkReceivedNetwork(meta.network) : undefined
      if (net != null) await this.m.checkNetworkUsable(net, name)
      if (await this.runc.state(name) != null) await this.runc.delete(name, { force: true })
      if (existing != null) await this.setAsideFenced(existing)
      // Nothing of ours runs under this name: a namespace left by a fenced copy goes.
      if (net != null || existing?.network != null) await this.m.mustLan().remove(name)
      const cdir = this.dd.containerDir(name)
      const src = path.join(cdir, 'src')
      try {
        await fs.mkdir(src, { recursive: true, mode: 0o700 })
        await fsyncDir(this.dd.containersDir)
        await fs.rename(path.join(genDir, 'rootfs'), path.join(src, 'rootfs'))
        const config = { ...meta.config, root: { ...(meta.config.root as Record<string, unknown> | undefined), path: 'rootfs' } }
        await fs.writeFile(path.join(src, 'config.json'), JSON.stringify(config, null, 2), { mode: 0o600 })
        const bundle = await loadBundle(src)
        await writeRuntimeBundle(this.dd.runtimeBundle(name), this.m.runtimeConfigFor(name, bundle, net))
        const now = new Date().toISOString()
        // Not claimed while it restores (a failed restore must not take the name): a node
        // that dies meanwhile finds `failoverPending` and settles it at start.
        const rec: ContainerRecord = { name, bundle: src, createdAt: now, startedAt: null, checkpointed: false, epoch, lease: proof, replicas: meta.replicas, failoverPending: true, ...(net != null ? { network: net } : {}) }
        await this.m.writeRecord(rec)
        if (net != null) {
          // The address is built quiet (no traffic, no ARP) for the restore to bind its
          // sockets to, and made live once the container runs. The generation is older
          // than what its clients saw: its connections are restored closed (they get a
          // reset and reconnect), never repaired into a state that no longer exists.
          await this.m.mustLan().create(name, net, { quiet: true })
          await this.m.writeCriuConfig(name, 'closed')
        }
        const workDir = this.dd.workDir(name, `failover-${Date.now()}`)
        await fs.mkdir(workDir, { recursive: true })
        try {
          await this.runc.restore(name, this.dd.runtimeBundle(name), {
            imageDir: path.join(genDir, 'images'),
            workDir,
            tcpEstablished: net != null ? false : this.m.settings.tcpEstablished,
            logFile: this.dd.logFile(name),
            logMaxBytes: this.m.settings.logMaxBytes,
            pidFile: this.dd.pidFileOf(name),
            signal
          })
        } catch (err) {
          // CRIU's log outlives the container directory, for whoever debugs it.
          const keep = path.join(this.dd.tmp, `failover-${name}-${Date.now()}.restore.log`)
          await fs.copyFile(path.join(workDir, 'restore.log'), keep).catch(() => {})
          throw err
        }
        if (net != null) {
          await this.m.writeCriuConfig(name, 'established')
          // Live here: quiet rules gone, ARP on, a gratuitous ARP tells the LAN where it is now.
          await this.m.mustLan().activate(name, net)
        }
        delete rec.failoverPending
        rec.startedAt = new Date().toISOString()
        await this.m.writeRecord(rec)
      } catch (err) {
        await this.runc.delete(name, { force: true }).catch(() => {})
        // The generation's rootfs goes back where it came from, so that a later try can
        // restore this generation again (a restore fails for passing reasons too: a
        // loaded host, a PID taken meanwhile). Where that fails, the generation is used up.
        await fs.rename(path.join(src, 'rootfs'), path.join(genDir, 'rootfs')).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') this.log.warn({ name, genDir, err: e.message }, "could not return a generation's rootfs after a failed restore: that generation is used up")
        })
        if (net != null) await this.m.releaseAddress(name)
        await removeTree(cdir)
        throw err
      }
    })
  }
}
