/**
 * Page connections, the target's side: one sealed listener per incoming migration,
 * keyed with that migration's data-channel secret, that takes one authenticated
 * connection.
 * - Stop-copy (openPageReceiver): the connection is spliced into a `criu page-server`
 *   writing the pages into a directory of the migration's staging. The source's dump
 *   sends them as CRIU dumps them, so they are here when the dump ends.
 * - Post-copy (listenPageLink): the connection reaches the source's page server, and
 *   carries the lazy-pages daemon's connection once the restore starts, instead of a
 *   libp2p stream (/msc/pages).
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import { listenSealed } from '../protocols/sealed/channel.ts'
import type { SealedStream } from '../protocols/sealed/sealed-stream.ts'
import { spliceSocket, type SpliceStats } from '../protocols/socket-splice.ts'
import { startPageServer, type PageServer } from '../runtime/page-server.ts'

export interface PageReceiver {
  port: number
  /** Resolves once the page server wrote every page and exited 0; rejects otherwise. */
  done: Promise<SpliceStats>
  /** Stops listening, kills the page server if it runs. Idempotent. */
  close: () => void
}

export interface OpenPageReceiverOptions {
  host: string
  secret: Uint8Array
  criuPath: string
  /** Where the page server writes (created). */
  dir: string
  logger: Logger
  /** Fails when no byte moved for this long once the source connected. Default 30 s. */
  idleTimeoutMs?: number
}

export interface PageLink {
  port: number
  /** The source's authenticated connection, once it came. */
  stream: Promise<SealedStream>
  close: () => void
}

/** Post-copy: the listener for the source's page server connection. */
export async function listenPageLink (o: { host: string; secret: Uint8Array; logger: Logger }): Promise<PageLink> {
  const got = Promise.withResolvers<SealedStream>()
  got.promise.catch(() => {})
  let taken: SealedStream | undefined
  const listener = await listenSealed({
    host: o.host,
    secret: o.secret,
    maxPending: 2,
    onStream: (s) => {
      if (taken != null) {
        s.abort(new Error('one page connection per migration'))
        return
      }
      taken = s
      listener.close()
      got.resolve(s)
    },
    onRefused: (reason, remote) => o.logger.warn({ remote, reason }, 'page connection refused')
  })
  const close = (): void => {
    listener.close()
    got.reject(new MscError('RUNTIME_ERROR', 'the page link closed before the source connected'))
    taken?.abort(new Error('page link closed'))
  }
  return { port: listener.port, stream: got.promise, close }
}

export async function openPageReceiver (o: OpenPageReceiverOptions): Promise<PageReceiver> {
  const life = new AbortController()
  const done = Promise.withResolvers<SpliceStats>()
  done.promise.catch(() => {})
  const stats: SpliceStats = { bytesIn: 0, bytesOut: 0 }
  let server: PageServer | undefined
  let taken = false
  const listener = await listenSealed({
    host: o.host,
    secret: o.secret,
    maxPending: 2,
    onStream: (s) => {
      if (taken || life.signal.aborted) {
        s.abort(new Error('one page connection per migration'))
        return
      }
      taken = true
      listener.close()
      const ps = startPageServer(o.criuPath, o.dir)
      server = ps
      const spliced = spliceSocket(ps.socket, s, stats, life.signal, { idleTimeoutMs: o.idleTimeoutMs ?? 30_000 })
      Promise.all([spliced, ps.exited]).then(() => done.resolve(stats), (err: Error) => {
        ps.kill()
        done.reject(err)
      })
    },
    onRefused: (reason, remote) => o.logger.warn({ remote, reason }, 'page connection refused')
  })
  const close = (): void => {
    listener.close()
    life.abort(new Error('page receiver closed'))
    server?.kill()
    done.reject(new MscError('RUNTIME_ERROR', 'the page receiver closed before every page arrived'))
  }
  return { port: listener.port, done: done.promise, close }
}

/** What a CRIU page server writes: a pagemap and the pages it names. */
const PAGE_IMAGE = /^(pagemap|pages)-\d{1,10}\.img$/

/**
 * Moves the page server's images into the received images: regular files named as CRIU
 * names them, none of them already there (the images tree must not have carried pages
 * of its own). Returns the bytes moved.
 */
export async function mergePageImages (pagesDir: string, imageDir: string): Promise<number> {
  let bytes = 0
  const names = (await fs.readdir(pagesDir)).filter((n) => PAGE_IMAGE.test(n))
  if (!names.some((n) => n.startsWith('pagemap-'))) throw new MscError('CRIU_ERROR', 'the page server wrote no pagemap')
  for (const n of names) {
    const st = await fs.lstat(path.join(pagesDir, n))
    if (!st.isFile()) throw new MscError('CRIU_ERROR', `${n} from the page server is not a regular file`)
    const dest = path.join(imageDir, n)
    if (await fs.lstat(dest).then(() => true, () => false)) throw new MscError('INVALID_ARGUMENT', `the images tree carried ${n}, which the page server wrote`)
    await fs.rename(path.join(pagesDir, n), dest)
    bytes += st.size
  }
  return bytes
}
