/**
 * `criu page-server --ps-socket 3`: receives the memory pages of a dump made elsewhere
 * (`runc checkpoint --page-server`) into an image directory, as CRIU writes them on the
 * other host. fd 3 is one end of a socketpair (Node's extra stdio pipes are socketpairs),
 * so the page server listens nowhere: no local process can reach it, and the node
 * pipes the one connection it was given into it.
 *
 * It writes `pagemap-N.img` and `pages-M.img` files (the pages id differs from the
 * pagemap's; the pagemap names it) and exits 0 once the dumping CRIU sent its last page
 * and closed; any other exit is a failed transfer.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import type net from 'node:net'
import { MscError } from '../util/errors.ts'
import { criuErrorLines } from './criu-log.ts'

export const PAGE_SERVER_LOG = 'page-server.log'

export interface PageServer {
  /** The page server's end of the connection: what the dumping CRIU sends goes here. */
  socket: net.Socket
  /** Resolves when the page server exited 0 (every page written); rejects otherwise. */
  exited: Promise<void>
  /** SIGKILLs it (and its process group) if it still runs. */
  kill: () => void
}

/** Starts `criu page-server` writing into `imageDir` (its log goes there too). */
export function startPageServer (criuPath: string, imageDir: string, opts: { verbose?: boolean } = {}): PageServer {
  fs.mkdirSync(imageDir, { recursive: true, mode: 0o700 })
  const argv = ['page-server', '--ps-socket', '3', '-D', imageDir, '-o', PAGE_SERVER_LOG, opts.verbose === true ? '-v4' : '-v2']
  const child: ChildProcess = spawn(criuPath, argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] })
  let out = ''
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-8_192)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  let gone = false
  const code = new Promise<number | null>((resolve) => {
    child.once('error', (err) => {
      gone = true
      out += `\n${err.message}`
      resolve(null)
    })
    child.once('exit', (c) => {
      gone = true
      resolve(c)
    })
  })
  const exited = code.then(async (c) => {
    if (c === 0) return
    const lines = await criuErrorLines(imageDir, PAGE_SERVER_LOG)
    throw new MscError('CRIU_ERROR', `criu page-server failed (exit ${c ?? 'by signal'})${out.trim() !== '' ? `: ${out.trim()}` : ''}`, lines)
  })
  exited.catch(() => {})
  const kill = (): void => {
    if (gone || child.pid == null) return
    try {
      process.kill(-child.pid, 'SIGKILL')
    } catch {}
  }
  const socket = child.stdio[3] as net.Socket
  // The page server answers the dump's last flush and exits, often before the dumping
  // side's end arrived here: its end must not close our half too early.
  socket.allowHalfOpen = true
  return { socket, exited, kill }
}
