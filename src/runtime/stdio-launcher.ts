import { spawn } from 'node:child_process'
import { MscError } from '../util/errors.ts'
import { logShimBinary } from './shim/binary.ts'

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
 * Runs a detaching runc command (`run -d`, `restore -d`) under the container's log shim
 * (shim/log-shim.c): the shim, in its own session, starts runc with stdin /dev/null and
 * stdout and stderr the write end of a real pipe(2), and stays behind as that pipe's
 * reader, appending to the container's log, after runc returned.
 * Resolves with runc's exit code once runc returns; the shim lives on.
 *
 * fd 3 is our only channel back: the shim writes runc's exit status there as one line
 * (or `error: ...` when it could not start runc) and closes it; neither runc nor the
 * container inherits it.
 */
export async function launchWithLogShim (opts: LaunchOptions): Promise<number> {
  const shim = await logShimBinary()
  opts.signal?.throwIfAborted()
  const child = spawn(shim, opts.argv, {
    detached: true, // own session: survives the node and its terminal
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, MSC_SHIM_LOG: opts.logFile, MSC_SHIM_MAX: String(opts.logMaxBytes) }
  })
  child.unref()
  const status = child.stdio[3] as NodeJS.ReadableStream & { destroy: () => void }

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
    // (the shim and runc; the caller then deletes whatever runc created).
    const killGroup = (): void => {
      try {
        if (child.pid != null) process.kill(-child.pid, 'SIGKILL')
      } catch {}
    }
    const onAbort = (): void => {
      killGroup()
      finish(new MscError('RUNTIME_ERROR', 'aborted while runc was starting the container'))
    }
    const timer = setTimeout(() => {
      killGroup()
      finish(new MscError('RUNTIME_ERROR', `runc did not return within ${opts.timeoutMs} ms`))
    }, opts.timeoutMs)
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    status.on('data', (d: Buffer) => {
      out += d.toString()
      const nl = out.indexOf('\n')
      if (nl < 0) return
      const line = out.slice(0, nl)
      if (/^\d+$/.test(line)) finish(null, Number(line))
      else finish(new MscError('RUNTIME_ERROR', `log shim: ${line.replace(/^error: /, '')}`))
    })
    status.on('end', () => finish(new MscError('RUNTIME_ERROR', 'runc ended without an exit status (killed?)')))
    status.on('error', (err) => finish(err))
    child.on('error', (err) => finish(new MscError('RUNTIME_ERROR', `cannot start the log shim ${shim}: ${err.message}`)))
  })
}
