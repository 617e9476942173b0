/**
 * Post-copy (lazy pages) processes: the source's `runc checkpoint --lazy-pages` (which
 * becomes CRIU's page server) and the target's `criu lazy-pages` daemon (which serves
 * the restored process's page faults from that page server). The restore itself is
 * `Runc.restore(..., { lazyPages: true, workDir })` with the daemon's work dir.
 *
 * What made this work on these hosts (see /work/shared/notes/host.md):
 * - fs.pipe-max-size must be raised (setup does it), else the page server fails with
 *   `page-pipe: tee: ... Operation not permitted` at the first request;
 * - the page server serves ONE connection: a failed attempt uses it up;
 * - the daemon and the restore share one work dir (lazy-pages.socket lives there).
 *
 * Cleanup rules (callers):
 * - A failed lazy restore can leave CRIU's cgroup yard (`<workDir>/.criu.cgyard.*`)
 *   and `<runc root>/<id>/criu-root` (a bind of the bundle's rootfs) mounted:
 *   unmount everything under both (mounts.ts unmountAllUnder) BEFORE `runc delete`
 *   or removing the dirs, or the delete goes through the bind and wipes the rootfs.
 *   Runc.restore does this itself when the restore fails.
 * - Kill the daemon only after (or together with) the restored container: until all
 *   pages are copied, the container's missing memory lives only on the source, and a
 *   userfaultfd whose monitor died turns into plain anonymous memory, so the process
 *   would read zeros where its pages were. The daemon exits by itself once every page
 *   is copied; that is the normal end.
 * - The source container stays frozen until the daemon fetched every page; then
 *   `runc checkpoint` exits 0 and the source container is gone (`done`; runc no longer
 *   knows it). If CRIU dies or gives up before that, the source container resumes.
 * - Start the restore only after the daemon is `ready` (its socket exists), and
 *   only after `imagesReady` on the source (the daemon connects to the page server
 *   as soon as the restore registered with it).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs, { mkdirSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { MscError } from '../util/errors.ts'
import { criuErrorLines, runcMessage } from './criu-log.ts'
import type { Runc } from './runc.ts'

export interface LazyCheckpoint {
  /** Resolves when CRIU wrote the images (all but the memory pages) and its page server listens. */
  imagesReady: Promise<void>
  /** Resolves when `runc checkpoint` exited 0: every page was fetched, the source is released. */
  done: Promise<void>
  /**
   * Kills runc and CRIU (idempotent). Measured here: the frozen source container then
   * RUNS ON (CRIU holds it by ptrace, not by the freezer; runc state says 'running'
   * throughout), so cancelling is the rollback only while no restored copy runs. Once
   * the target restore has started, kill the source container instead.
   */
  cancel: () => void
  pid: number
}

export interface LazyCheckpointOptions {
  imageDir: string
  /** CRIU's work dir (dump.log); defaults to imageDir. */
  workDir?: string
  /** ADDR:PORT the page server listens on. */
  pageServer: string
  tcpEstablished?: boolean
  signal?: AbortSignal
}

/** `runc checkpoint --lazy-pages --page-server ADDR:PORT --status-fd 3` with fd 3 a pipe to us. */
export function checkpointLazy (runc: Runc, id: string, opts: LazyCheckpointOptions): LazyCheckpoint {
  const workDir = opts.workDir ?? opts.imageDir
  mkdirSync(opts.imageDir, { recursive: true })
  mkdirSync(workDir, { recursive: true })
  const { runcPath, criuPath, root } = runc.config
  const argv = ['--root', root, '--criu', criuPath, 'checkpoint', '--lazy-pages', '--page-server', opts.pageServer, '--status-fd', '3', '--image-path', opts.imageDir, '--work-path', workDir]
  if (opts.tcpEstablished === true) argv.push('--tcp-established')
  argv.push(id)
  const p = launch(runcPath, argv, workDir, opts.signal)

  const failure = async (code: number | null): Promise<MscError> => new MscError('CRIU_ERROR', `lazy checkpoint of ${id} failed (exit ${code ?? 'by signal'}): ${runcMessage(p.output())}`, await criuErrorLines(workDir, 'dump.log'))
  const imagesReady = Promise.race([p.status, p.exited.then(async (code) => {
    throw await failure(code)
  })])
  const done = p.exited.then(async (code) => {
    if (code !== 0) throw await failure(code)
  })
  // Callers often await only one of the two: the other must not crash the process.
  imagesReady.catch(() => {})
  done.catch(() => {})
  return { imagesReady, done, cancel: p.kill, pid: p.pid }
}

export interface LazyPagesDaemon {
  /** Resolves when the daemon listens on <workDir>/lazy-pages.socket: start the restore after it. */
  ready: Promise<void>
  /** Resolves when the daemon exited 0 (all pages copied); rejects with its log lines otherwise. */
  exited: Promise<void>
  /** SIGKILL (idempotent). See the file comment: only together with the restored container. */
  kill: () => void
  pid: number
}

export interface LazyPagesDaemonOptions {
  imageDir: string
  /** Shared with the `runc restore --lazy-pages --work-path`. Its log is lazy-pages.log here. */
  workDir: string
  /** Where the page server (or the pages tunnel) listens. */
  address: string
  port: number
  /** -v4 (every fault and copy, with timestamps) instead of -v2 (errors and warnings). */
  verbose?: boolean
  signal?: AbortSignal
}

/** `criu lazy-pages --page-server --address A --port P -D IMG -W WORK` in the foreground. */
export function startLazyPagesDaemon (criuPath: string, opts: LazyPagesDaemonOptions): LazyPagesDaemon {
  mkdirSync(opts.workDir, { recursive: true })
  const argv = ['lazy-pages', '--page-server', '--address', opts.address, '--port', String(opts.port), '-D', opts.imageDir, '-W', opts.workDir, '-o', 'lazy-pages.log', opts.verbose === true ? '-v4' : '-v2', '--status-fd', '3']
  const p = launch(criuPath, argv, opts.workDir, opts.signal)
  const failure = async (code: number | null): Promise<MscError> =>
    new MscError('CRIU_ERROR', `criu lazy-pages failed (exit ${code ?? 'by signal'})${p.output().trim() !== '' ? `: ${p.output().trim()}` : ''}`, await criuErrorLines(opts.workDir, 'lazy-pages.log'))
  const ready = Promise.race([p.status, p.exited.then(async (code) => {
    throw await failure(code)
  })])
  const exited = p.exited.then(async (code) => {
    if (code !== 0) throw await failure(code)
  })
  ready.catch(() => {})
  exited.catch(() => {})
  return { ready, exited, kill: p.kill, pid: p.pid }
}

interface Launched {
  pid: number
  /** Resolves at the first byte CRIU writes to fd 3. */
  status: Promise<void>
  exited: Promise<number | null>
  output: () => string
  kill: () => void
}

/**
 * Spawns `cmd` in its own process group with fd 3 the write end of a real pipe (CRIU's
 * --status-fd), and stdout/stderr kept (last 16 KiB) for error messages. kill()
 * SIGKILLs the group (runc and its CRIU child), only while it has not exited: after
 * exit the pgid could be reused by an unrelated process.
 *
 * Why a FIFO and not stdio 'pipe': Node's extra stdio pipes are socketpairs (O_RDWR),
 * and runc refuses a status fd whose flags lack O_WRONLY ("invalid --status-fd
 * argument 3: not writable"). Both ends are opened, then the name is unlinked.
 */
function launch (cmd: string, argv: string[], dir: string, signal?: AbortSignal): Launched {
  const fifo = path.join(dir, `.msc-status-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`)
  const mk = spawnSync('mkfifo', ['-m', '600', fifo])
  if (mk.status !== 0) throw new MscError('RUNTIME_ERROR', `mkfifo ${fifo} failed: ${String(mk.stderr).trim()}`)
  let rfd: number, wfd: number
  try {
    rfd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    wfd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
  } finally {
    fs.rmSync(fifo, { force: true })
  }
  let child: ChildProcess
  try {
    child = spawn(cmd, argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe', wfd] })
  } finally {
    fs.closeSync(wfd)
  } // only the child holds the write end: EOF when it is gone
  let out = ''
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-16_384)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  let exitedFlag = false
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', (err) => {
      exitedFlag = true
      out += `\n${err.message}`
      resolve(null)
    })
    child.once('exit', (code) => {
      exitedFlag = true
      resolve(code)
    })
  })
  const fd3 = new net.Socket({ fd: rfd, readable: true, writable: false })
  fd3.on('error', () => {})
  const status = new Promise<void>((resolve) => {
    fd3.once('data', () => resolve())
  })
  // CRIU's children may inherit the write end: do not let it hold our event loop.
  void status.then(() => fd3.destroy())
  void exited.then(() => fd3.destroy())
  const kill = (): void => {
    if (exitedFlag || child.pid == null) return
    try {
      process.kill(-child.pid, 'SIGKILL')
    } catch {}
  }
  if (signal != null) {
    if (signal.aborted) kill()
    else signal.addEventListener('abort', kill, { once: true })
    void exited.then(() => signal.removeEventListener('abort', kill))
  }
  return { pid: child.pid ?? -1, status, exited, output: () => out, kill }
}
