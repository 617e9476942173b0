/**
 * `/msc/pages/1.0.0`: carries CRIU's page-server connection (post-copy / lazy pages)
 * between two nodes over libp2p. CRIU only ever talks to a local TCP socket, so:
 *
 *   target: criu lazy-pages --page-server --address 127.0.0.1 --port <tunnel.port>
 *             -> TCP -> openPagesTunnel -> libp2p stream ->
 *   source:   handlePagesStream -> TCP -> the page server of `runc checkpoint --lazy-pages`
 *
 * Wire format, once per stream: the dialer sends one frame {v:1, transferId}, the
 * listener answers one frame {ok:true} or {ok:false, error}; then raw bytes both ways.
 * A frame is an unsigned-varint length and that many bytes of UTF-8 JSON. The answer
 * exists so that a refusal reaches the target as a reason, not as a bare reset, and so
 * that no CRIU byte is forwarded before the source has agreed to serve it. (A CRIU page
 * server serves ONE connection; a refused tunnel never touched it.)
 *
 * Memory is bounded in both directions (see host notes / libp2p notes):
 * - TCP -> libp2p: `stream.send()` never refuses, so we pause the socket while the
 *   stream's writeBufferLength is above HIGH_WATER and re-check on 'drain'/'idle'.
 * - libp2p -> TCP: when `socket.write()` returns false we `stream.pause()` (yamux stops
 *   sending window updates) and resume on the socket's 'drain'.
 * Half-close: TCP end -> stream.close() (our write side); stream 'end' -> socket.end().
 * Any error (either side, or the AbortSignal) aborts the stream and destroys the socket.
 */
import net from 'node:net'
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { MscError } from '../../util/errors.ts'

export const PAGES_PROTOCOL = '/msc/pages/1.0.0'

/** Headers are tiny; anything bigger is garbage or an attack. */
export const MAX_HEADER_BYTES = 4096
/** Pause the TCP reader while this much is queued on the libp2p stream. */
const HIGH_WATER = 1 << 20
/**
 * yamux grows a stream's receive window up to 16 MiB; after `pause()` the remote may
 * still send a full window, and more than maxReadBufferLength (default 4 MiB) buffered
 * while paused resets the stream. 32 MiB covers the largest window; memory stays
 * bounded by the window, not by this number.
 */
const READ_BUFFER_LIMIT = 32 << 20
const HEADER_TIMEOUT_MS = 10_000
const CONNECT_TIMEOUT_MS = 10_000

export interface PagesTunnelStats {
  /** Bytes that came from the remote (libp2p) and were written to local TCP. */
  bytesIn: number
  /** Bytes read from local TCP and sent to the remote. */
  bytesOut: number
  /** TCP connections accepted (target) or served (source). */
  connections: number
}

export interface PagesTunnel {
  /** 127.0.0.1 port for `criu lazy-pages --page-server --address 127.0.0.1 --port`. */
  port: number
  stats: () => PagesTunnelStats
  /** Last error of any connection (refusal, dial failure, reset), for diagnostics. */
  lastError: () => Error | null
  /** Stops listening and aborts every open connection. Idempotent. */
  close: () => Promise<void>
}

type Dialer = Pick<Libp2p, 'dialProtocol'>

export interface OpenPagesTunnelOptions {
  signal?: AbortSignal
  /** Where to listen; 127.0.0.1 unless told. */
  host?: string
  /**
   * Open the first stream (and have the source connect to its page server) before
   * returning: a refusal then rejects openPagesTunnel itself, before any restore
   * started, and the first page fault does not wait for a stream handshake. Default
   * true. The cost: the page server's one connection is taken now, so a stream lost
   * before CRIU connects cannot be replaced.
   */
  eager?: boolean
  onError?: (err: Error) => void
  /**
   * Awaited (at most BEFORE_RESET_TIMEOUT_MS) when a connection's remote side fails,
   * before CRIU's socket is reset. Once CRIU's lazy-pages daemon hears of the failure it
   * exits, and from then a page the restored process never received reads as zeros:
   * the target freezes its copy here, while every fault still just waits.
   */
  beforeReset?: (err: Error) => Promise<void>
}

const BEFORE_RESET_TIMEOUT_MS = 5_000

/** Target side: a local TCP port whose connections are carried to `peer`. */
export async function openPagesTunnel (libp2p: Dialer, peer: PeerId | Multiaddr | Multiaddr[], transferId: string, opts: OpenPagesTunnelOptions = {}): Promise<PagesTunnel> {
  const stats: PagesTunnelStats = { bytesIn: 0, bytesOut: 0, connections: 0 }
  const closing = new AbortController()
  const signal = opts.signal != null ? AbortSignal.any([opts.signal, closing.signal]) : closing.signal
  const sockets = new Set<net.Socket>()
  let lastError: Error | null = null

  /** A stream to the source that has passed the header exchange. */
  const handshake = async (): Promise<Stream> => {
    const stream = await libp2p.dialProtocol(peer, PAGES_PROTOCOL, { signal: AbortSignal.any([signal, AbortSignal.timeout(CONNECT_TIMEOUT_MS)]) })
    try {
      stream.maxReadBufferLength = READ_BUFFER_LIMIT
      stream.send(encodeFrame({ v: 1, transferId }))
      const reply = await readFrame(stream, MAX_HEADER_BYTES, AbortSignal.any([signal, AbortSignal.timeout(HEADER_TIMEOUT_MS)])) as { ok?: unknown; error?: unknown }
      if (reply.ok !== true) {
        throw new MscError('RUNTIME_ERROR', `page tunnel for ${transferId} refused by the source: ${typeof reply.error === 'string' ? reply.error : 'no reason given'}`)
      }
      return stream
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }
  let preopened: Stream | null = opts.eager === false ? null : await handshake()

  // allowHalfOpen: CRIU's end of writing must not end our writing back to it.
  // noDelay: page requests are small request/response exchanges (libp2p's TCP does the same).
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true })
  const serve = async (socket: net.Socket): Promise<void> => {
    let stream: Stream | undefined
    try {
      stream = preopened ?? await handshake()
      preopened = null
      await splice(socket, stream, stats, signal, { beforeReset: opts.beforeReset })
    } catch (err) {
      lastError = err as Error
      stream?.abort(lastError)
      reset(socket)
      opts.onError?.(lastError)
    } finally {
      sockets.delete(socket)
    }
  }

  server.on('connection', (socket) => {
    stats.connections++
    sockets.add(socket)
    socket.on('error', () => {}) // reported through splice/serve
    void serve(socket)
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, opts.host ?? '127.0.0.1', () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    preopened?.abort(err as Error)
    throw err
  }
  const addr = server.address()
  const port = typeof addr === 'object' && addr != null ? addr.port : 0

  let closed: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closed ??= (async () => {
      const reason = new MscError('RUNTIME_ERROR', `page tunnel for ${transferId} closed`)
      closing.abort(reason)
      preopened?.abort(reason)
      preopened = null
      for (const s of sockets) reset(s)
      await new Promise<void>((resolve) => server.close(() => resolve()))
    })()
    await closed
  }
  opts.signal?.addEventListener('abort', () => {
    void close()
  }, { once: true })
  return { port, stats: () => ({ ...stats }), lastError: () => lastError, close }
}

/** Waits for `p` (its failure ignored) for at most `ms`. */
async function bounded (p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p.catch(() => {}), new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
  })])
  clearTimeout(timer)
}

export interface PageServerAddress {
  host: string
  port: number
}

export interface PagesStreamResult {
  transferId: string | null
  /** Why the stream was refused (nothing was connected), or null when it was served. */
  refused: string | null
  bytesIn: number
  bytesOut: number
}

/**
 * Source side: the handler body for PAGES_PROTOCOL. Validates the header, connects to
 * the page server `lookup` names and pipes until both directions ended. Refusals
 * resolve (the reason went to the dialer); transport errors reject, with both ends
 * already torn down.
 */
export async function handlePagesStream (stream: Stream, lookup: (transferId: string) => PageServerAddress | null, opts: { signal?: AbortSignal; cutAfterBytes?: number } = {}): Promise<PagesStreamResult> {
  const signal = opts.signal ?? new AbortController().signal
  const stats: PagesTunnelStats = { bytesIn: 0, bytesOut: 0, connections: 0 }
  stream.maxReadBufferLength = READ_BUFFER_LIMIT
  let transferId: string | null = null
  const refuse = async (reason: string): Promise<PagesStreamResult> => {
    try {
      stream.send(encodeFrame({ ok: false, error: reason }))
      await stream.close({ signal: AbortSignal.timeout(5_000) })
    } catch {
      stream.abort(new Error(reason))
    }
    return { transferId, refused: reason, bytesIn: 0, bytesOut: 0 }
  }

  let header: unknown
  try {
    header = await readFrame(stream, MAX_HEADER_BYTES, AbortSignal.any([signal, AbortSignal.timeout(HEADER_TIMEOUT_MS)]))
  } catch (err) {
    return await refuse(`bad header: ${(err as Error).message}`)
  }
  const h = header as { v?: unknown; transferId?: unknown } | null
  if (h == null || typeof h !== 'object' || h.v !== 1 || typeof h.transferId !== 'string' || h.transferId === '') {
    return await refuse('bad header: expected {v:1, transferId}')
  }
  transferId = h.transferId
  const target = lookup(transferId)
  if (target == null) return await refuse(`unknown transfer ${transferId}`)

  let socket: net.Socket
  try {
    socket = await connect(target, AbortSignal.any([signal, AbortSignal.timeout(CONNECT_TIMEOUT_MS)]))
  } catch (err) {
    return await refuse(`page server ${target.host}:${target.port} unreachable: ${(err as Error).message}`)
  }
  try {
    stream.send(encodeFrame({ ok: true }))
  } catch (err) {
    socket.destroy()
    throw err
  }
  await splice(socket, stream, stats, signal, { cutAfterBytes: opts.cutAfterBytes })
  return { transferId, refused: null, bytesIn: stats.bytesIn, bytesOut: stats.bytesOut }
}

function connect (to: PageServerAddress, signal: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true })
    const onAbort = (): void => {
      socket.destroy()
      reject(signal.reason as Error)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('error', (err) => {
      signal.removeEventListener('abort', onAbort)
      reject(err)
    })
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort)
      socket.pause() // nothing is read until splice() is ready for it
      resolve(socket)
    })
  })
}

/**
 * Pipes `socket` <-> `stream` until both directions ended. Resolves on a clean finish;
 * on any error aborts the stream, destroys the socket and rejects. A failure of the
 * stream (not of the socket, nor our own abort) awaits `beforeReset` before the socket
 * learns of it.
 */
function splice (socket: net.Socket, stream: Stream, stats: PagesTunnelStats, signal: AbortSignal, opts: { cutAfterBytes?: number; beforeReset?: (err: Error) => Promise<void> } = {}): Promise<void> {
  const { cutAfterBytes, beforeReset } = opts
  return new Promise<void>((resolve, reject) => {
    let settled = false
    let tcpPaused = false // by us, for backpressure
    let tcpEnded = false // CRIU's side ended writing
    let upDone = false // ... and our write side of the stream is closed
    let downDone = false // stream ended and the socket's write side finished
    const cleanup = (): void => {
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
function reset (socket: net.Socket): void {
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

function encodeFrame (value: unknown): Uint8Array {
  const body = Buffer.from(JSON.stringify(value), 'utf8')
  const prefix: number[] = []
  let n = body.byteLength
  while (n >= 0x80) {
    prefix.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  prefix.push(n)
  return Buffer.concat([Buffer.from(prefix), body])
}

/**
 * Reads one length-prefixed JSON frame from the stream; bytes after it are pushed back
 * (`unshift`) for whoever reads next. Rejects on oversize, bad JSON, close or abort.
 */
function readFrame (stream: Stream, maxBytes: number, signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    const done = (err: Error | null, value?: unknown, rest?: Buffer): void => {
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onEnd)
      signal.removeEventListener('abort', onAbort)
      if (err != null) {
        reject(err)
        return
      }
      if (rest != null && rest.byteLength > 0) stream.unshift(rest)
      resolve(value)
    }
    const onMessage = (evt: { data: Uint8Array | Iterable<Uint8Array> }): void => {
      const parts = evt.data instanceof Uint8Array ? [evt.data] : [...evt.data]
      buf = Buffer.concat([buf, ...parts])
      // unsigned varint; 4 bytes (2^28) is far beyond any header we accept
      let len = 0
      let start = -1
      for (let i = 0; i < buf.byteLength && i < 4; i++) {
        len += (buf[i]! & 0x7f) * 2 ** (7 * i)
        if ((buf[i]! & 0x80) === 0) {
          start = i + 1
          break
        }
      }
      if (start < 0 && buf.byteLength < 4) return // length not complete yet
      if (start < 0 || len > maxBytes) {
        done(new MscError('INVALID_ARGUMENT', `frame larger than ${maxBytes} bytes`))
        return
      }
      if (buf.byteLength < start + len) return
      let value: unknown
      try {
        value = JSON.parse(buf.subarray(start, start + len).toString('utf8'))
      } catch {
        done(new MscError('INVALID_ARGUMENT', 'frame is not JSON'))
        return
      }
      done(null, value, buf.subarray(start + len))
    }
    const onEnd = (): void => done(new MscError('RUNTIME_ERROR', 'stream ended before a complete frame'))
    const onAbort = (): void => done(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
    if (signal.aborted) {
      onAbort()
      return
    }
    signal.addEventListener('abort', onAbort, { once: true })
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onEnd)
    if (stream.readableEnded) onEnd()
  })
}
