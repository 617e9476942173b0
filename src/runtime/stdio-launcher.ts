import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { MscError } from '../util/errors.ts'

const SHIM = fileURLToPath(new URL('./shim/log-shim.ts', import.meta.url))

export interface LaunchOptions {
  /** Full argv of the runc command (`runc --root ... run -d ...`). */
  argv: string[]
  /** The container's output log, appended to by the shim. */
  logFile: string
  logMaxBytes: number
  /** How long runc itself may take (restores of large containers take seconds). */
  timeoutMs: number
  signal?: AbortSignal
}

/**
 * Runs a detaching runc command (`run -d`, `restore -d`) with the container's stdout and
 * stderr connected, through a real pipe, to a detached log shim (see shim/log-shim.ts).
 * Resolves with runc's exit code once runc returns; the shim lives on.
 *
 * Layout of the spawned shell: `{ runc ... 3>&-; echo $? >&3; } 2>&1 | log-shim 3>&-`.
 * fd 3 is our only channel back: it carries runc's exit status, and neither the
 * container nor the shim keeps it open.
 */
export async function launchWithLogShim (opts: LaunchOptions): Promise<number> {
  const script = '{ "$@" 3>&-; echo "$?" >&3; } 2>&1 </dev/null | exec "$MSC_NODE" "$MSC_SHIM_FILE" 3>&-'
  const child = spawn('/bin/sh', ['-c', script, 'msc-shim', ...opts.argv], {
    detached: true, // own session: survives the node and its terminal
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: {
      ...process.env,
      MSC_NODE: process.execPath,
      MSC_SHIM_FILE: SHIM,
      MSC_SHIM_LOG: opts.logFile,
      MSC_SHIM_MAX: String(opts.logMaxBytes)
    }
  })
  child.unref()
  const status = child.stdio[3] as NodeJS.ReadableStream & { destroy: () => void, unref?: () => void }

  return await new Promise<number>((resolve, reject) => {
    let out = ''
    let done = false
    const finish = (err: Error | null, code?: number): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      status.destroy()
      if (err != null) reject(err)
      else resolve(code!)
    }
    // Giving up must not leave runc working on behind our back: kill its process group
    // (the shell, runc and the shim; the caller then deletes whatever runc created).
    const killGroup = (): void => { try { if (child.pid != null) process.kill(-child.pid, 'SIGKILL') } catch {} }
    const onAbort = (): void => { killGroup(); finish(new MscError('RUNTIME_ERROR', 'aborted while runc was starting the container')) }
    const timer = setTimeout(() => { killGroup(); finish(new MscError('RUNTIME_ERROR', `runc did not return within ${opts.timeoutMs} ms`)) }, opts.timeoutMs)
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    // The status line arrives as soon as runc returns; the pipe itself stays open as
    // long as the parent shell waits for the shim, so a newline, not EOF, ends it.
    status.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) finish(null, Number.parseInt(out.trim(), 10))
    })
    status.on('end', () => finish(new MscError('RUNTIME_ERROR', 'runc ended without an exit status (killed?)')))
    status.on('error', (err) => finish(err))
    child.on('error', (err) => finish(new MscError('RUNTIME_ERROR', `cannot start /bin/sh for runc: ${err.message}`)))
  })
}
