/**
 * Streamed pages, the source's side: CRIU's dump sends its memory pages to a page
 * server while it dumps (`runc checkpoint --page-server ADDR:PORT`), and runc only
 * speaks TCP. So the relay listens on 127.0.0.1 for exactly one connection, the dumping
 * CRIU's, and splices it into one sealed connection to the target, whose page server
 * writes the pages into the incoming images (src/node/page-receiver.ts).
 *
 * The listener takes the first connection and closes: a local process that raced CRIU
 * to it makes CRIU's own connection fail, so the dump fails and the migration rolls back
 * (nothing it sent is ever restored). The bytes are authenticated end to end by the
 * sealed channel; the page server sees them only if they arrive whole.
 */
import net from 'node:net'
import { spliceSocket, type SpliceStats } from '../socket-splice.ts'
import { dialSealed } from './channel.ts'

export interface PageRelay {
  /** 127.0.0.1 port for `runc checkpoint --page-server 127.0.0.1:PORT`. */
  port: number
  /** Resolves once CRIU's connection and the sealed one both ended cleanly. */
  done: Promise<SpliceStats>
  /** Stops listening and tears down the connection if it is still open. Idempotent. */
  close: () => void
}

export interface OpenPageRelayOptions {
  /** How long the target's page connection may take to answer. Default 3 s. */
  dialTimeoutMs?: number
  /** A test's fault: the link fails once this many bytes went out. */
  cutAfterBytes?: number | undefined
  /** The relay fails when no byte moved for this long (a cut link sends no reset). */
  idleTimeoutMs?: number | undefined
}

/** Dials the target's page connection, then listens for CRIU on 127.0.0.1. */
export async function openPageRelay (host: string, port: number, secret: Uint8Array, signal: AbortSignal, opts: OpenPageRelayOptions = {}): Promise<PageRelay> {
  const stream = await dialSealed(host, port, secret, AbortSignal.any([signal, AbortSignal.timeout(opts.dialTimeoutMs ?? 3_000)]))
  const life = new AbortController()
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: '127.0.0.1', port: 0 }, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
  server.on('error', () => {})
  const stats: SpliceStats = { bytesIn: 0, bytesOut: 0 }
  const done = Promise.withResolvers<SpliceStats>()
  done.promise.catch(() => {})
  let taken = false
  server.on('connection', (socket) => {
    if (taken) {
      socket.destroy()
      return
    }
    taken = true
    server.close()
    socket.setNoDelay(true)
    spliceSocket(socket, stream, stats, AbortSignal.any([signal, life.signal]), { cutAfterBytes: opts.cutAfterBytes, idleTimeoutMs: opts.idleTimeoutMs })
      .then(() => done.resolve(stats), (err: Error) => done.reject(err))
  })
  const close = (): void => {
    server.close()
    life.abort(new Error('page relay closed'))
    if (!taken) {
      stream.abort(new Error('page relay closed before CRIU connected'))
      done.reject(new Error('page relay closed before CRIU connected'))
    }
  }
  return { port: (server.address() as net.AddressInfo).port, done: done.promise, close }
}
