/**
 * One local socket (CRIU's page-server connection, a TCP or a socketpair end) piped
 * both ways through one stream to another node: a libp2p stream (/msc/pages) or a
 * sealed data channel. Memory is bounded in both directions:
 * - socket -> stream: `stream.send()` never refuses, so the socket is paused while the
 *   stream's writeBufferLength is above HIGH_WATER, and re-checked on 'drain'/'idle'.
 * - stream -> socket: when `socket.write()` returns false the stream is paused (yamux
 *   stops sending window updates, a sealed channel stops reading TCP) and resumed on the
 *   socket's 'drain'.
 * Half-close: socket end -> stream.close() (our write side); stream 'end' -> socket.end().
 */
import type net from 'node:net'
import type { Stream } from '@libp2p/interface'
import { MscError } from '../util/errors.ts'
import type { ByteStream } from './framing.ts'

/** Pause the socket reader while this much is queued on the stream. */
const HIGH_WATER = 1 << 20
/** At most this long for `beforeReset` before the socket hears of a failed stream. */
export const BEFORE_RESET_TIMEOUT_MS = 5_000

export type SpliceStream = ByteStream & Pick<Stream, 'readStatus'>

export interface SpliceStats {
  /** Bytes that came from the remote (the stream) and were written to the socket. */
  bytesIn: number
  /** Bytes read from the socket and sent to the remote. */
  bytesOut: number
}

export interface SpliceOptions {
  /** A test's fault: the link fails once this many bytes went out. */
  cutAfterBytes?: number | undefined
  /** Awaited (bounded) when the stream fails, before the socket learns of it. */
  beforeReset?: ((err: Error) => Promise<void>) | undefined
  /** Fails when no byte moved either way for this long (a link cut without a reset). */
  idleTimeoutMs?: number | undefined
}

/** Waits for `p` (its failure ignored) for at most `ms`. */
export async function bounded (p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p.catch(() => {}), new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
  })])
  clearTimeout(timer)
}

/**
 * Pipes `socket` <-> `stream` until both directions ended. Resolves on a clean finish;
 * on any error aborts the stream, destroys the socket and rejects. A failure of the
 * stream (not of the socket, nor our own abort) awaits `beforeReset` before the socket
 * learns of it.
 */
export function spliceSocket (socket: net.Socket, stream: SpliceStream, stats: SpliceStats, signal: AbortSignal, opts: SpliceOptions = {}): Promise<void> {
  const { cutAfterBytes, beforeReset, idleTimeoutMs } = opts
  return new Promise<void>((resolve, reject) => {
    let settled = false
    let tcpPaused = false // by us, for backpressure
    let tcpEnded = false // CRIU's side ended writing
    let upDone = false // ... and our write side of the stream is closed
    let downDone = false // stream ended and the socket's write side finished
    let moved = 0
    let seen = -1
    const idle = idleTimeoutMs == null
      ? undefined
      : setInterval(() => {
        if (moved === seen) fail(new MscError('RUNTIME_ERROR', `no byte moved for ${idleTimeoutMs} ms`))
        seen = moved
      }, idleTimeoutMs)
    idle?.unref()
    const cleanup = (): void => {
      clearInterval(idle)
      signal.removeEventListener('abort', onAbort)
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('drain', onStreamDrain)
      stream.removeEventListener('idle', onStreamDrain)
      stream.removeEventListener('end', onStreamEnd)
      stream.removeEventListener('close', onStreamClose)
      socket.off('data', onData).off('end', onSocketEnd).off('drain', onSocketDrain)
        .off('error', socketFailed).off('close', onSocketClose)
    }
    const fail = (err: Error, from: 'stream' | 'socket' | 'abort' = 'stream'): void => {
      if (settled) return
      settled = true
      cleanup()
      stream.abort(err)
      const hangUp = (): void => {
        reset(socket)
        reject(err)
      }
      if (beforeReset != null && from === 'stream') void bounded(beforeReset(err), BEFORE_RESET_TIMEOUT_MS).then(hangUp)
      else hangUp()
    }
    const socketFailed = (err: Error): void => fail(err, 'socket')
    const maybeDone = (): void => {
      if (settled || !upDone || !downDone) return
      settled = true
      cleanup()
      socket.destroy() // both halves are finished; release the fd now
      resolve()
    }

    // TCP -> libp2p
    const onData = (chunk: Buffer): void => {
      moved++
      stats.bytesOut += chunk.byteLength
      // A test's fault (MSC_TEST_CUT_PAGES_AFTER): the link fails mid-transfer.
      if (cutAfterBytes != null && stats.bytesOut >= cutAfterBytes) {
        fail(new Error(`page stream cut after ${stats.bytesOut} bytes (test)`))
        return
      }
      try {
        stream.send(chunk)
      } catch (err) {
        fail(err as Error)
        return
      }
      if (stream.writeBufferLength > HIGH_WATER && !tcpPaused) {
        tcpPaused = true
        socket.pause()
      }
    }
    // 'drain' fires before the stream has pushed its queue (that happens in a
    // microtask), so look at the queue after it; 'idle' covers a queue that emptied.
    const onStreamDrain = (): void => {
      setImmediate(() => {
        if (!settled && tcpPaused && stream.writeBufferLength <= HIGH_WATER) {
          tcpPaused = false
          socket.resume()
        }
      })
    }
    const onSocketEnd = (): void => {
      tcpEnded = true
      stream.close({ signal }).then(() => {
        upDone = true
        maybeDone()
      }, (err: Error) => fail(err))
    }

    // libp2p -> TCP
    const onMessage = (evt: { data: Uint8Array | Iterable<Uint8Array> }): void => {
      moved++
      let ok = true
      for (const b of evt.data instanceof Uint8Array ? [evt.data] : evt.data) {
        stats.bytesIn += b.byteLength
        ok = socket.write(b)
      }
      if (!ok && !resuming && stream.readStatus === 'readable') stream.pause()
    }
    // stream.resume() first dispatches the buffered data (into onMessage) and only then
    // tells yamux to send window updates again: a pause() from inside that dispatch is
    // undone, and the remote then sends without limit until the read buffer overflows
    // and the stream resets (seen: ECONNRESET at ~32 MiB). So pause again afterwards.
    let resuming = false
    const onSocketDrain = (): void => {
      if (stream.readStatus !== 'paused') return
      resuming = true
      try {
        stream.resume()
      } catch {
      } finally {
        resuming = false
      } // throws once closed: nothing left to resume
      if (socket.writableNeedDrain) {
        try {
          stream.pause()
        } catch {}
      } // throws once closing/closed
    }
    const onStreamEnd = (): void => {
      // A reset also dispatches 'end' (before 'close'): that is an abort, not an end.
      if (stream.status === 'reset' || stream.status === 'aborted') {
        fail(new MscError('RUNTIME_ERROR', `page stream ${stream.status}`))
        return
      }
      socket.end(() => {
        downDone = true
        maybeDone()
      })
    }

    const onStreamClose = (evt: { error?: Error }): void => {
      if (evt.error != null) fail(evt.error)
    }
    const onSocketClose = (hadError: boolean): void => {
      // Closed before both TCP halves finished: what was in flight is lost. (With both
      // finished, the stream's close may still be flushing: wait for it.)
      if (!tcpEnded || !downDone) fail(new MscError('RUNTIME_ERROR', `page connection closed early${hadError ? ' (socket error)' : ''}`), 'socket')
    }
    const onAbort = (): void => fail(signal.reason instanceof Error ? signal.reason : new Error('aborted'), 'abort')

    if (signal.aborted) {
      onAbort()
      return
    }
    signal.addEventListener('abort', onAbort, { once: true })
    stream.addEventListener('message', onMessage)
    stream.addEventListener('drain', onStreamDrain)
    stream.addEventListener('idle', onStreamDrain)
    stream.addEventListener('end', onStreamEnd)
    stream.addEventListener('close', onStreamClose)
    socket.on('data', onData).on('end', onSocketEnd).on('drain', onSocketDrain)
      .on('error', socketFailed).on('close', onSocketClose)
    socket.resume()
    // 'end' may have fired while nobody listened (remote closed right after its header).
    if (stream.readableEnded) onStreamEnd()
    if (stream.status === 'aborted' || stream.status === 'reset') fail(new MscError('RUNTIME_ERROR', `stream ${stream.status} before piping`))
  })
}

/** Hang up with RST, not FIN: a half-open peer must see the abort as an error, not as an end. */
export function reset (socket: net.Socket): void {
  // After end() libuv refuses the RST (EINVAL) and Node then never closes the handle,
  // which keeps the process alive: a socket already ending just gets destroyed.
  if (socket.writableEnded || socket.destroyed) {
    socket.destroy()
    return
  }
  try {
    socket.resetAndDestroy()
  } catch {
    socket.destroy()
  }
}
