/**
 * Opening sealed data channels (sealed-stream.ts): a listener that lives as long as one
 * migration, on one address, with one secret, and the dialer's side. A connection is
 * handed on only once its first record authenticated under that secret; anything else
 * (a port scan, a non-member guessing, a wrong key) is closed and reported, and never
 * reaches a protocol handler.
 */
import crypto from 'node:crypto'
import net from 'node:net'
import { SALT_BYTES, SealedStream } from './sealed-stream.ts'

export interface SealedListener {
  host: string
  port: number
  /** Stops accepting; connections already handed on carry on. */
  close: () => void
}

export interface ListenSealedOptions {
  host: string
  secret: Uint8Array
  /** An authenticated connection; the callee owns it from here. */
  onStream: (s: SealedStream) => void
  /** Why a connection was closed before it authenticated, and from where. */
  onRefused?: (reason: string, remote: string) => void
  /** Unauthenticated connections open at once; more are closed at once. Default 4. */
  maxPending?: number
  /** Time a connection has to send its salt and hello. Default 5 s. */
  helloTimeoutMs?: number
}

export async function listenSealed (o: ListenSealedOptions): Promise<SealedListener> {
  const maxPending = o.maxPending ?? 4
  const helloTimeoutMs = o.helloTimeoutMs ?? 5_000
  let pending = 0
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`
    if (pending >= maxPending) {
      o.onRefused?.(`more than ${maxPending} connections waiting to authenticate`, remote)
      socket.destroy()
      return
    }
    pending++
    let settled = false
    const refuse = (reason: string): void => {
      if (settled) return
      settled = true
      pending--
      clearTimeout(timer)
      o.onRefused?.(reason, remote)
      socket.destroy()
    }
    const timer = setTimeout(() => refuse(`no authenticated hello within ${helloTimeoutMs} ms`), helloTimeoutMs)
    socket.on('error', () => refuse('connection error before the hello'))
    let head = Buffer.alloc(0)
    const onSalt = (d: Buffer): void => {
      head = Buffer.concat([head, d])
      if (head.byteLength < SALT_BYTES) return
      socket.pause()
      socket.off('data', onSalt)
      if (head.byteLength > SALT_BYTES) socket.unshift(head.subarray(SALT_BYTES))
      const stream = new SealedStream(socket, o.secret, head.subarray(0, SALT_BYTES), 'listener')
      socket.resume()
      stream.hello().then(() => {
        if (settled) return
        settled = true
        pending--
        clearTimeout(timer)
        o.onStream(stream)
      }, (err: Error) => refuse(err.message))
    }
    socket.on('data', onSalt)
    socket.on('end', () => {
      if (head.byteLength < SALT_BYTES) refuse('the connection ended before its salt')
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: o.host, port: 0 }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  server.on('error', () => {})
  const port = (server.address() as net.AddressInfo).port
  return { host: o.host, port, close: () => server.close() }
}

/** Connects, sends the salt and the hello; the stream is ready to carry a protocol. */
export async function dialSealed (host: string, port: number, secret: Uint8Array, signal: AbortSignal): Promise<SealedStream> {
  signal.throwIfAborted()
  const socket = net.connect({ host, port, allowHalfOpen: true })
  const onAbort = (): void => {
    socket.destroy(signal.reason as Error)
  }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
      socket.once('close', () => reject(signal.reason ?? new Error(`the connection to ${host}:${port} closed`)))
    })
  } finally {
    signal.removeEventListener('abort', onAbort)
    socket.removeAllListeners('connect').removeAllListeners('error').removeAllListeners('close')
  }
  const salt = crypto.randomBytes(SALT_BYTES)
  socket.write(salt)
  const stream = new SealedStream(socket, secret, salt, 'dialer')
  stream.sendHello()
  return stream
}
