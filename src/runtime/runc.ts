import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import { launchWithLogShim } from './stdio-launcher.ts'
import { criuErrorLines, runcMessage } from './criu-log.ts'
import { unmountAllUnder } from './mounts.ts'

export type ContainerStatus = 'creating' | 'created' | 'running' | 'pausing' | 'paused' | 'stopped'

export interface RuncState {
  id: string
  pid: number
  status: ContainerStatus
  bundle: string
  created: string
}

/** Tries of a `runc list` that raced with a container's deletion. */
const LIST_ATTEMPTS = 4

export interface RuncConfig {
  runcPath: string
  criuPath: string
  /** runc's state directory: one per msc node, so nodes sharing a kernel never meet. */
  root: string
  logger: Logger
}

export interface StartOptions {
  logFile: string
  logMaxBytes: number
  pidFile: string
  timeoutMs?: number
  signal?: AbortSignal
}

export interface CheckpointOptions {
  imageDir: string
  /** CRIU writes dump.log here; defaults to imageDir. */
  workDir?: string
  leaveRunning?: boolean
  /** Parent image directory (relative to imageDir or absolute), for incremental dumps. */
  parentPath?: string
  preDump?: boolean
  /** ADDR:PORT of a CRIU page server that receives the memory pages. */
  pageServer?: string
  lazyPages?: boolean
  /** Written to when images are ready and the lazy page server listens. */
  statusFd?: number
  tcpEstablished?: boolean
  fileLocks?: boolean
  /** Checkpoint does not manage the cgroups (`--manage-cgroups-mode`). */
  manageCgroupsMode?: 'soft' | 'full' | 'strict' | 'ignore'
  timeoutMs?: number
  signal?: AbortSignal
}

export interface RestoreOptions extends StartOptions {
  imageDir: string
  workDir?: string
  lazyPages?: boolean
  tcpEstablished?: boolean
  fileLocks?: boolean
  manageCgroupsMode?: 'soft' | 'full' | 'strict' | 'ignore'
}

/**
 * A typed wrapper over the runc binary. Knows nothing of msc's containers, the network
 * or migration: one call, one runc command, errors as MscError with CRIU's log lines.
 */
export class Runc {
  readonly config: RuncConfig
  private readonly log: Logger

  constructor (config: RuncConfig) {
    this.config = config
    this.log = config.logger
  }

  private globalArgs (): string[] {
    return ['--root', this.config.root, '--criu', this.config.criuPath]
  }

  private async exec (args: string[], opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const argv = [...this.globalArgs(), ...args]
    this.log.debug({ argv }, 'runc')
    try {
      const r = await execa(this.config.runcPath, argv, {
        reject: false,
        timeout: opts.timeoutMs ?? 60_000,
        cancelSignal: opts.signal,
        stdin: 'ignore'
      })
      if (r.failed && r.exitCode == null) {
        const e = r as unknown as { code?: string; timedOut?: boolean; isCanceled?: boolean; shortMessage?: string }
        if (e.code === 'ENOENT') throw new MscError('RUNC_MISSING', `runc not found at ${this.config.runcPath}: run \`npm run setup\` or set MSC_RUNC`)
        if (e.timedOut === true) throw new MscError('RUNTIME_ERROR', `runc ${args[0]} timed out`)
        if (e.isCanceled === true) throw new MscError('RUNTIME_ERROR', `runc ${args[0]} aborted`)
        throw new MscError('RUNTIME_ERROR', `runc ${args[0]} failed: ${e.shortMessage ?? 'unknown'}`)
      }
      return { stdout: String(r.stdout), stderr: String(r.stderr), exitCode: r.exitCode ?? -1 }
    } catch (err) {
      if (err instanceof MscError) throw err
      throw new MscError('RUNTIME_ERROR', `runc ${args[0]}: ${(err as Error).message}`)
    }
  }

  async version (): Promise<string> {
    const r = await execa(this.config.runcPath, ['--version'], { reject: false, timeout: 10_000 })
    if (r.exitCode !== 0) throw new MscError('RUNC_MISSING', `runc not usable at ${this.config.runcPath}`)
    return String(r.stdout).split('\n')[0]!.replace(/^runc version /, '')
  }

  /** The container's state, or null when runc does not know it. */
  async state (id: string, signal?: AbortSignal): Promise<RuncState | null> {
    const r = await this.exec(['state', id], { timeoutMs: 15_000, signal })
    if (r.exitCode !== 0) {
      if (/does not exist/.test(r.stderr)) return null
      throw new MscError('RUNTIME_ERROR', `runc state ${id}: ${runcMessage(r.stderr)}`)
    }
    const j = JSON.parse(r.stdout) as { id: string; pid: number; status: ContainerStatus; bundle: string; created: string }
    return { id: j.id, pid: j.pid, status: j.status, bundle: j.bundle, created: j.created }
  }

  /**
   * `runc list`. runc reads its root directory and then each container's state; a
   * container deleted in between (a migration's release, a stop) makes the whole list
   * fail with ENOENT, so that case is asked again, a few times.
   */
  async list (signal?: AbortSignal): Promise<RuncState[]> {
    for (let attempt = 1;; attempt++) {
      const r = await this.exec(['list', '--format', 'json'], { timeoutMs: 15_000, signal })
      if (r.exitCode === 0) return (JSON.parse(r.stdout.trim() === '' ? 'null' : r.stdout) as RuncState[] | null) ?? []
      if (attempt >= LIST_ATTEMPTS || !/no such file or directory/i.test(r.stderr)) throw new MscError('RUNTIME_ERROR', `runc list: ${runcMessage(r.stderr)}`)
    }
  }

  /** `runc run -d` with the container's output through the log shim. */
  async run (id: string, bundleDir: string, opts: StartOptions): Promise<RuncState> {
    const runcLog = `${opts.pidFile}.runc.json`
    await fs.rm(runcLog, { force: true })
    const argv = [this.config.runcPath, '--log', runcLog, '--log-format', 'json', ...this.globalArgs(), 'run', '--detach', '--bundle', bundleDir, '--pid-file', opts.pidFile, id]
    const code = await launchWithLogShim({ argv, logFile: opts.logFile, logMaxBytes: opts.logMaxBytes, timeoutMs: opts.timeoutMs ?? 60_000, signal: opts.signal })
    if (code !== 0) {
      const msg = runcMessage(await fs.readFile(runcLog, 'utf8').catch(() => ''))
      await this.delete(id, { force: true }).catch(() => {})
      throw new MscError('RUNTIME_ERROR', `runc run ${id} failed: ${msg || `exit ${code}`}`)
    }
    return await this.mustState(id)
  }

  async checkpoint (id: string, opts: CheckpointOptions): Promise<void> {
    const workDir = opts.workDir ?? opts.imageDir
    await fs.mkdir(opts.imageDir, { recursive: true })
    await fs.mkdir(workDir, { recursive: true })
    const args = ['checkpoint', '--image-path', opts.imageDir, '--work-path', workDir]
    if (opts.leaveRunning === true) args.push('--leave-running')
    if (opts.parentPath != null) args.push('--parent-path', opts.parentPath)
    if (opts.preDump === true) args.push('--pre-dump')
    if (opts.pageServer != null) args.push('--page-server', opts.pageServer)
    if (opts.lazyPages === true) args.push('--lazy-pages')
    if (opts.statusFd != null) args.push('--status-fd', String(opts.statusFd))
    if (opts.tcpEstablished === true) args.push('--tcp-established')
    if (opts.fileLocks === true) args.push('--file-locks')
    if (opts.manageCgroupsMode != null) args.push('--manage-cgroups-mode', opts.manageCgroupsMode)
    args.push(id)
    const started = Date.now()
    const r = await this.exec(args, { timeoutMs: opts.timeoutMs ?? 300_000, signal: opts.signal })
    if (r.exitCode !== 0) {
      const lines = await criuErrorLines(workDir, opts.preDump === true ? 'predump.log' : 'dump.log')
      throw new MscError('CRIU_ERROR', `checkpoint of ${id} failed: ${runcMessage(r.stderr)}`, lines)
    }
    this.log.debug({ id, ms: Date.now() - started }, 'checkpoint written')
  }

  /** `runc restore -d` with fresh output pipes through the log shim. */
  /** Resolves with the restored process's pid once it runs (detached). */
  async restore (id: string, bundleDir: string, opts: RestoreOptions): Promise<{ pid: number }> {
    const workDir = opts.workDir ?? opts.imageDir
    const runcLog = `${opts.pidFile}.runc.json`
    await fs.rm(runcLog, { force: true })
    const args = ['restore', '--detach', '--image-path', opts.imageDir, '--work-path', workDir, '--bundle', bundleDir, '--pid-file', opts.pidFile]
    if (opts.lazyPages === true) args.push('--lazy-pages')
    if (opts.tcpEstablished === true) args.push('--tcp-established')
    if (opts.fileLocks === true) args.push('--file-locks')
    if (opts.manageCgroupsMode != null) args.push('--manage-cgroups-mode', opts.manageCgroupsMode)
    args.push(id)
    const argv = [this.config.runcPath, '--log', runcLog, '--log-format', 'json', ...this.globalArgs(), ...args]
    const code = await launchWithLogShim({ argv, logFile: opts.logFile, logMaxBytes: opts.logMaxBytes, timeoutMs: opts.timeoutMs ?? 300_000, signal: opts.signal })
    if (code !== 0) {
      const msg = runcMessage(await fs.readFile(runcLog, 'utf8').catch(() => ''))
      const lines = await criuErrorLines(workDir, 'restore.log')
      await this.cleanupFailedRestore(id, workDir)
      throw new MscError('CRIU_ERROR', `restore of ${id} failed: ${msg || `exit ${code}`}`, lines)
    }
    // runc wrote the pid file before it exited: no `runc state` (30-100 ms here) while
    // the container's downtime runs.
    const pid = Number((await fs.readFile(opts.pidFile, 'utf8').catch(() => '')).trim())
    if (Number.isInteger(pid) && pid > 0) return { pid }
    return await this.mustState(id)
  }

  /**
   * After a failed restore: unmount what CRIU left (the rootfs bind under the runc
   * state dir, the cgroup yard in the work dir) BEFORE runc delete, which would
   * otherwise delete through the bind into the bundle's rootfs.
   */
  async cleanupFailedRestore (id: string, workDir: string): Promise<void> {
    await unmountAllUnder(path.join(this.config.root, id))
    await unmountAllUnder(workDir)
    await this.delete(id, { force: true }).catch((err) => this.log.warn({ err, id }, 'delete after failed restore'))
  }

  async kill (id: string, signal: string = 'TERM', opts: { all?: boolean } = {}): Promise<void> {
    const args = ['kill']
    if (opts.all === true) args.push('--all')
    args.push(id, signal)
    const r = await this.exec(args, { timeoutMs: 15_000 })
    if (r.exitCode !== 0 && !/not running|process already finished|does not exist/.test(r.stderr)) {
      throw new MscError('RUNTIME_ERROR', `runc kill ${id}: ${runcMessage(r.stderr)}`)
    }
  }

  async delete (id: string, opts: { force?: boolean } = {}): Promise<void> {
    await unmountAllUnder(path.join(this.config.root, id))
    const args = ['delete']
    if (opts.force === true) args.push('--force')
    args.push(id)
    const r = await this.exec(args, { timeoutMs: 30_000 })
    if (r.exitCode !== 0 && !/does not exist/.test(r.stderr)) {
      throw new MscError('RUNTIME_ERROR', `runc delete ${id}: ${runcMessage(r.stderr)}`)
    }
  }

  async pause (id: string): Promise<void> {
    const r = await this.exec(['pause', id], { timeoutMs: 15_000 })
    if (r.exitCode !== 0) throw new MscError('RUNTIME_ERROR', `runc pause ${id}: ${runcMessage(r.stderr)}`)
  }

  async resume (id: string): Promise<void> {
    const r = await this.exec(['resume', id], { timeoutMs: 15_000 })
    if (r.exitCode !== 0) throw new MscError('RUNTIME_ERROR', `runc resume ${id}: ${runcMessage(r.stderr)}`)
  }

  /**
   * Stops a container: SIGTERM, then SIGKILL to every process after `graceMs`, then
   * delete. Idempotent: a container runc does not know is already stopped.
   */
  async stop (id: string, graceMs = 5_000): Promise<void> {
    let st = await this.state(id)
    if (st == null) return
    if (st.status === 'paused') await this.resume(id).catch(() => {})
    if (st.status === 'running' || st.status === 'paused' || st.status === 'created') {
      await this.kill(id, 'TERM')
      const deadline = Date.now() + graceMs
      while (Date.now() < deadline) {
        st = await this.state(id)
        if (st == null || st.status === 'stopped') break
        await sleep(100)
      }
      if (st != null && st.status !== 'stopped') {
        await this.kill(id, 'KILL', { all: true })
        const killDeadline = Date.now() + 5_000
        while (Date.now() < killDeadline) {
          st = await this.state(id)
          if (st == null || st.status === 'stopped') break
          await sleep(50)
        }
      }
    }
    await this.delete(id, { force: true })
  }

  private async mustState (id: string): Promise<RuncState> {
    const st = await this.state(id)
    if (st == null) throw new MscError('RUNTIME_ERROR', `runc reported success but does not know container ${id}`)
    return st
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
