import fs from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import type { Runc, RuncState } from '../runtime/runc.ts'
import { loadBundle, runtimeConfig, writeRuntimeBundle } from '../runtime/bundle.ts'
import { removeTree } from '../runtime/mounts.ts'
import type { DataDir } from './data-dir.ts'
import type { CheckpointInfo, ContainerInfo, ContainerState } from '../api/types.ts'
import { KeyedMutex } from '../util/keyed-mutex.ts'

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
}

/**
 * Asked before a container name is taken on this node: returns the ownership epoch
 * to use, or throws when the cluster already has that name elsewhere.
 */
export type NameClaimer = (name: string) => Promise<number>

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
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const CKPT_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/

export function validateName (name: unknown): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new MscError('INVALID_ARGUMENT', `invalid container name ${JSON.stringify(name)}: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit`)
  }
  return name
}

/**
 * The containers of one node: runs, stops, checkpoints and restores them through the
 * runtime, and keeps msc's record of each on disk so a restarted node adopts the
 * containers that outlived it. One operation at a time per container.
 */
export class ContainerManager {
  private readonly init: ContainerManagerInit
  private readonly log: Logger
  private readonly lock = new KeyedMutex()

  constructor (init: ContainerManagerInit) {
    this.init = init
    this.log = init.logger
  }

  private get dd (): DataDir { return this.init.dataDir }
  private get runc (): Runc { return this.init.runc }

  async names (): Promise<string[]> {
    const entries = await fs.readdir(this.dd.containersDir, { withFileTypes: true }).catch(() => [])
    const out: string[] = []
    for (const e of entries) {
      if (e.isDirectory() && NAME_RE.test(e.name)) {
        try { await fs.access(this.dd.recordFile(e.name)); out.push(e.name) } catch {}
      }
    }
    return out.sort()
  }

  async readRecord (name: string): Promise<ContainerRecord | null> {
    try {
      return JSON.parse(await fs.readFile(this.dd.recordFile(name), 'utf8')) as ContainerRecord
    } catch {
      return null
    }
  }

  private async mustRecord (name: string): Promise<ContainerRecord> {
    validateName(name)
    const r = await this.readRecord(name)
    if (r == null) throw new MscError('NOT_FOUND', `no container named ${name} on this node`)
    return r
  }

  async writeRecord (r: ContainerRecord): Promise<void> {
    const file = this.dd.recordFile(r.name)
    await fs.writeFile(file + '.tmp', JSON.stringify(r, null, 2), { mode: 0o600 })
    await fs.rename(file + '.tmp', file)
  }

  /** Runs `fn` with the container locked (migration holds it for its whole run). */
  async exclusive<T> (name: string, fn: () => Promise<T>): Promise<T> {
    return await this.lock.run(name, fn)
  }

  get settings (): { logMaxBytes: number, stopTimeoutMs: number, tcpEstablished: boolean } {
    return { logMaxBytes: this.init.logMaxBytes, stopTimeoutMs: this.init.stopTimeoutMs, tcpEstablished: this.init.tcpEstablished }
  }

  cgroupsPath (name: string): string {
    return `/${this.init.cgroupParent}/${name}`
  }

  async list (): Promise<ContainerInfo[]> {
    const out: ContainerInfo[] = []
    for (const n of await this.names()) {
      const info = await this.inspect(n).catch(() => null)
      if (info != null) out.push(info)
    }
    return out
  }

  async inspect (name: string): Promise<ContainerInfo> {
    const r = await this.mustRecord(name)
    const st = await this.runc.state(name)
    const cps = await this.checkpoints(name)
    return toInfo(r, st, cps)
  }

  async run (name: string, bundleDir: string, signal?: AbortSignal): Promise<ContainerInfo> {
    validateName(name)
    if (typeof bundleDir !== 'string' || bundleDir === '') throw new MscError('INVALID_ARGUMENT', 'a bundle directory is required')
    return await this.lock.run(name, async () => {
      if (await this.readRecord(name) != null) {
        throw new MscError('ALREADY_EXISTS', `a container named ${name} already exists on this node (remove it with \`msc rm ${name}\`)`)
      }
      if (await this.runc.state(name) != null) {
        throw new MscError('ALREADY_EXISTS', `runc already has a container ${name} under this node's root`)
      }
      const bundle = await loadBundle(bundleDir)
      const epoch = this.init.claimName != null ? await this.init.claimName(name) : 1
      const dir = this.dd.containerDir(name)
      await fs.mkdir(dir, { recursive: true, mode: 0o700 })
      const now = new Date().toISOString()
      const rec: ContainerRecord = { name, bundle: bundle.dir, createdAt: now, startedAt: now, checkpointed: false, epoch }
      try {
        await writeRuntimeBundle(this.dd.runtimeBundle(name), runtimeConfig(bundle, this.cgroupsPath(name), this.dd.requestSocket))
        const st = await this.runc.run(name, this.dd.runtimeBundle(name), {
          logFile: this.dd.logFile(name), logMaxBytes: this.init.logMaxBytes, pidFile: this.dd.pidFileOf(name), signal
        })
        await this.writeRecord(rec)
        this.log.info({ name, pid: st.pid, bundle: bundle.dir }, 'container started')
        return toInfo(rec, st, [])
      } catch (err) {
        // Whatever runc got to make (an interrupted run) goes too, or the name would be
        // stuck: unknown to msc, yet taken in runc's root.
        await this.runc.delete(name, { force: true }).catch(() => {})
        await removeTree(dir)
        throw err
      }
    })
  }

  async stop (name: string): Promise<ContainerInfo> {
    return await this.lock.run(name, async () => {
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
    await this.lock.run(name, async () => {
      await this.mustRecord(name)
      const st = await this.runc.state(name)
      if (st != null && st.status !== 'stopped') {
        if (opts.force !== true) throw new MscError('INVALID_STATE', `container ${name} is ${st.status}: stop it first (or --force)`)
        await this.runc.stop(name, this.init.stopTimeoutMs)
      } else if (st != null) {
        await this.runc.delete(name, { force: true })
      }
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
  async checkpoint (name: string, opts: { stop?: boolean, signal?: AbortSignal } = {}): Promise<CheckpointInfo> {
    return await this.lock.run(name, async () => {
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
        await this.runc.checkpoint(name, { imageDir, workDir: imageDir, leaveRunning: opts.stop !== true, tcpEstablished: this.init.tcpEstablished, signal: opts.signal })
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
        id, container: name, createdAt: created.toISOString(), leftRunning: opts.stop !== true,
        sizeBytes: await dirSize(imageDir), durationMs: Date.now() - started
      }
      await fs.writeFile(path.join(imageDir, 'meta.json'), JSON.stringify(info, null, 2), { mode: 0o600 })
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
  async restore (name: string, opts: { from?: string, signal?: AbortSignal } = {}): Promise<ContainerInfo> {
    return await this.lock.run(name, async () => {
      const r = await this.mustRecord(name)
      const st = await this.runc.state(name)
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
      const state = await this.runc.restore(name, this.dd.runtimeBundle(name), {
        imageDir: this.dd.checkpointDir(name, cp.id), workDir, tcpEstablished: this.init.tcpEstablished,
        logFile: this.dd.logFile(name), logMaxBytes: this.init.logMaxBytes, pidFile: this.dd.pidFileOf(name), signal: opts.signal
      })
      r.startedAt = new Date().toISOString()
      r.checkpointed = false
      await this.writeRecord(r)
      this.log.info({ name, from: cp.id, ms: Date.now() - started, pid: state.pid }, 'container restored')
      return toInfo(r, state, cps)
    })
  }

  /** Output files, oldest first (the rotated LOG.1, then LOG). */
  async logFiles (name: string): Promise<string[]> {
    await this.mustRecord(name)
    const f = this.dd.logFile(name)
    return [f + '.1', f]
  }

  /** What this node owns, for its membership heartbeat. */
  async claims (): Promise<Array<{ name: string, epoch: number, state: ContainerState }>> {
    const out: Array<{ name: string, epoch: number, state: ContainerState }> = []
    // One `runc list` for all (this runs at every heartbeat), not one `runc state` each.
    const states = new Map((await this.runc.list().catch(() => [])).map((x) => [x.id, x]))
    for (const n of await this.names()) {
      const r = await this.readRecord(n)
      if (r == null || r.pendingMigration === true) continue // not ours until committed
      const st = states.get(n) ?? null
      out.push({ name: n, epoch: r.epoch ?? 1, state: toInfo(r, st, []).state })
    }
    return out
  }

  async stopAll (): Promise<void> {
    for (const n of await this.names()) {
      const st = await this.runc.state(n).catch(() => null)
      if (st != null && st.status !== 'stopped') await this.stop(n).catch((err) => this.log.warn({ err, name: n }, 'stop on exit failed'))
    }
  }
}

function toInfo (r: ContainerRecord, st: RuncState | null, cps: CheckpointInfo[]): ContainerInfo {
  let state: ContainerState
  if (st == null || st.status === 'stopped') state = r.checkpointed ? 'checkpointed' : 'stopped'
  else if (st.status === 'paused' || st.status === 'pausing') state = 'paused'
  else if (st.status === 'running') state = 'running'
  else state = 'created'
  const live = state === 'running' || state === 'paused' || state === 'created'
  return {
    name: r.name,
    state,
    pid: live ? st!.pid : null,
    started: live ? r.startedAt : null,
    createdAt: r.createdAt,
    bundle: r.bundle,
    checkpoints: cps.length,
    lastCheckpoint: cps.at(-1)?.id ?? null
  }
}

async function dirSize (dir: string): Promise<number> {
  let total = 0
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await fs.stat(path.join(e.parentPath, e.name))).size
  }
  return total
}
