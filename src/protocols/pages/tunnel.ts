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
 * The bytes are piped by spliceSocket (../socket-splice.ts), which bounds memory both
 * ways and carries half-closes. Any error (either side, or the AbortSignal) aborts the
 * stream and destroys the socket.
 */
import net from 'node:net'
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { MscError } from '../../util/errors.ts'
import { reset, spliceSocket, type SpliceStream } from '../socket-splice.ts'

export const PAGES_PROTOCOL = '/msc/pages/1.0.0'

/** Headers are tiny; anything bigger is garbage or an attack. */
export const MAX_HEADER_BYTES = 4096
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
   * Awaited (at most 5 s) when a connection's remote side fails,
   * before CRIU's socket is reset. Once CRIU's lazy-pages daemon hears of the failure it
   * exits, and from then a page the restored process never received reads as zeros:
   * the target freezes its copy here, while every fault still just waits.
   */
  beforeReset?: (err: Error) => Promise<void>
}

/** Target side: a local TCP port whose connections are carried to `peer`. */
export async function openPagesTunnel (libp2p: Dialer, peer: PeerId | Multiaddr | Multiaddr[], transferId: string, opts: OpenPagesTunnelOptions = {}): Promise<PagesTunnel> {
  const stopped = new AbortController()
  const signal = opts.signal != null ? AbortSignal.any([opts.signal, stopped.signal]) : stopped.signal
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
  const preopened = opts.eager === false ? null : await handshake()
  try {
    const t = await serveLocalTunnel(handshake, preopened, `page tunnel for ${transferId}`, opts)
    return { ...t, close: async () => {
      stopped.abort()
      await t.close()
    } }
  } catch (err) {
    preopened?.abort(err as Error)
    throw err
  }
}

/**
 * A local TCP port (for CRIU's lazy-pages daemon) whose connections are each carried
 * by a stream from `open` (the first by `preopened` when given), until both ends ended.
 */
export async function serveLocalTunnel (open: () => Promise<SpliceStream>, first: SpliceStream | null, label: string, opts: Omit<OpenPagesTunnelOptions, 'eager'> = {}): Promise<PagesTunnel> {
  const stats: PagesTunnelStats = { bytesIn: 0, bytesOut: 0, connections: 0 }
  const closing = new AbortController()
  const signal = opts.signal != null ? AbortSignal.any([opts.signal, closing.signal]) : closing.signal
  const sockets = new Set<net.Socket>()
  let lastError: Error | null = null
  let preopened = first

  // allowHalfOpen: CRIU's end of writing must not end our writing back to it.
  // noDelay: page requests are small request/response exchanges (libp2p's TCP does the same).
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true })
  const serve = async (socket: net.Socket): Promise<void> => {
    let stream: SpliceStream | undefined
    try {
      stream = preopened ?? await open()
      preopened = null
      await spliceSocket(socket, stream, stats, signal, { beforeReset: opts.beforeReset })
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
    preopened = null
    throw err
  }
  const addr = server.address()
  const port = typeof addr === 'object' && addr != null ? addr.port : 0

  let closed: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closed ??= (async () => {
      const reason = new MscError('RUNTIME_ERROR', `${label} closed`)
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
  await spliceSocket(socket, stream, stats, signal, { cutAfterBytes: opts.cutAfterBytes })
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
