/**
 * Sending side of /msc/image: walks a directory, announces it, streams every file from
 * disk in DATA_CHUNK_BYTES frames (memory stays bounded by the framing's high-water
 * mark, whatever the file sizes) and waits for the receiver's verdict.
 */
import fs from 'node:fs/promises'
import { constants as C } from 'node:fs'
import crypto from 'node:crypto'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { FramedStream, type ByteStream, ProtocolError } from '../framing.ts'
import { walkTree, type WalkEntry } from './manifest.ts'
import { pathProblem } from './paths.ts'
import {
  DATA_CHUNK_BYTES,
  FRAME_DATA,
  IMAGE_VERSION,
  MAX_FRAME_BYTES,
  VerdictSchema,
  codeForReason,
  type Entry,
  type Meta,
  type TreeHeader,
  type Verdict
} from './messages.ts'

export interface SendTreeOptions {
  transferId: string
  label: string
  /** Which entries to send; the directories above an included entry are always sent. */
  include?: ((relPath: string) => boolean) | undefined
  /** Paths the receiver removes from its copy (overlay mode). */
  deletes?: string[] | undefined
  signal: AbortSignal
  onProgress?: ((bytesSoFar: number, totalBytes: number) => void) | undefined
  /** How long the receiver may go without taking data, or without answering after the end. Default 30 s. */
  idleTimeoutMs?: number
}

export interface SendTreeResult {
  /** Entries sent, of every kind. */
  files: number
  bytes: number
  ms: number
  goodputMBps: number
  /** Sockets, fifos and devices that were left out, as 'kind path'. */
  skipped: string[]
}

interface Planned {
  rel: string
  entry: Entry
}

export async function sendTree (stream: ByteStream, dir: string, o: SendTreeOptions): Promise<SendTreeResult> {
  const started = performance.now()
  const idleTimeoutMs = o.idleTimeoutMs ?? 30_000
  const framed = new FramedStream(stream, { idleTimeoutMs })
  const deletes = o.deletes ?? []
  let planned: Awaited<ReturnType<typeof planTree>>
  try {
    for (const d of deletes) {
      const problem = pathProblem(d)
      if (problem != null) throw new ProtocolError('BAD_PATH', `cannot delete ${JSON.stringify(d)}: ${problem}`, 'INVALID_ARGUMENT')
    }
    planned = await planTree(dir, o.include)
  } catch (err) {
    framed.abort(err as Error) // the receiver sees a reset, not a silent stream
    throw err
  }
  const { plan, skipped, root } = planned
  const totalBytes = plan.reduce((n, p) => n + (p.entry.kind === 'file' ? p.entry.size : 0), 0)
  const header: TreeHeader = {
    type: 'header',
    v: IMAGE_VERSION,
    transferId: o.transferId,
    label: o.label,
    files: plan.length,
    bytes: totalBytes,
    deletes,
    root
  }

  // The receiver may refuse at any moment and stop reading: listen for its verdict
  // from the start, and stop writing as soon as one arrives.
  const stopWriting = new AbortController()
  const writeSignal = AbortSignal.any([o.signal, stopWriting.signal])
  const verdictWait = new AbortController()
  let early: Verdict | undefined
  const verdictP = framed.readJson(VerdictSchema, AbortSignal.any([o.signal, verdictWait.signal]), 0)
  verdictP.then((v) => {
    early = v
    stopWriting.abort(new Error('the receiver answered early'))
  }, (err) => {
    stopWriting.abort(err)
  })

  let sent = 0
  // A stream that copies what it is given (the sealed data channel) lets one read
  // buffer serve every chunk; a libp2p stream queues the buffer itself.
  const reuse = (stream as { sendCopies?: boolean }).sendCopies === true
  // Fault injection for tests only (see corruptHook below); a no-op unless the env asks.
  const corrupt = { pending: process.env.MSC_TEST_CORRUPT_TRANSFER === o.label }
  try {
    const headerBytes = new TextEncoder().encode(JSON.stringify(header))
    if (headerBytes.byteLength > MAX_FRAME_BYTES) throw new ProtocolError('LIMIT_EXCEEDED', `the header (${deletes.length} deletes) is over ${MAX_FRAME_BYTES} bytes`, 'INVALID_ARGUMENT')
    await framed.writeJson(header, writeSignal)
    for (const p of plan) {
      await framed.writeJson(p.entry, writeSignal)
      if (p.entry.kind !== 'file') continue
      const sha256 = await sendFile(framed, path.join(dir, p.rel), p.entry.size, reuse, writeSignal, (n) => {
        sent += n
        o.onProgress?.(sent, totalBytes)
      }, corrupt)
      await framed.writeJson({ type: 'trailer', sha256 }, writeSignal)
    }
    await framed.writeJson({ type: 'end' }, writeSignal)
    await framed.closeWrite(writeSignal)
  } catch (err) {
    // A verdict that arrived first explains the failure better than the write error.
    const v = early ?? await Promise.race([verdictP.catch(() => undefined), sleep(1000, undefined)])
    framed.abort(err as Error)
    if (v != null && !v.ok) throw refused(o.label, v)
    throw err
  }

  // Everything is out: now the receiver has idleTimeoutMs to verify, commit and answer.
  const timer = setTimeout(() => verdictWait.abort(new ProtocolError('IDLE_TIMEOUT', `no verdict from the receiver within ${idleTimeoutMs} ms`, 'INTERNAL')), idleTimeoutMs)
  let verdict: Verdict
  try {
    verdict = await verdictP
  } catch (err) {
    framed.abort(err as Error)
    throw err
  } finally {
    clearTimeout(timer)
  }
  if (!verdict.ok) throw refused(o.label, verdict)
  const ms = performance.now() - started
  return { files: plan.length, bytes: totalBytes, ms, goodputMBps: ms > 0 ? totalBytes / 1e6 / (ms / 1000) : 0, skipped }
}

function refused (label: string, v: Extract<Verdict, { ok: false }>): ProtocolError {
  return new ProtocolError(v.reason, `the receiver refused ${label}: ${v.error}`, codeForReason(v.reason))
}

/** The entries to send, in walk order (parents first); metadata from lstat. */
async function planTree (dir: string, include: ((rel: string) => boolean) | undefined): Promise<{ plan: Planned[]; skipped: string[]; root: Meta }> {
  const all: WalkEntry[] = []
  const skipped: string[] = []
  for await (const e of walkTree(dir)) {
    if (e.kind === 'other') skipped.push(`${specialKind(e)} ${e.rel}`)
    else all.push(e)
  }
  let chosen = all
  if (include != null) {
    const wanted = new Set<string>()
    for (const e of all) {
      if (!include(e.rel)) continue
      // Ancestors too: the receiver only accepts an entry inside a directory it received.
      for (let p = e.rel; p !== '' && !wanted.has(p); p = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '') wanted.add(p)
    }
    chosen = all.filter((e) => wanted.has(e.rel))
  }
  const plan: Planned[] = []
  for (const e of chosen) plan.push({ rel: e.rel, entry: await toEntry(dir, e) })
  const st = await fs.stat(dir)
  return { plan, skipped, root: metaOf(st) }
}

function metaOf (st: { mode: number; uid: number; gid: number; mtimeMs: number }): Meta {
  return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs }
}

async function toEntry (dir: string, e: WalkEntry): Promise<Entry> {
  const m = metaOf(e.stat)
  if (e.kind === 'dir') return { type: 'entry', kind: 'dir', path: e.rel, ...m }
  if (e.kind === 'symlink') return { type: 'entry', kind: 'symlink', path: e.rel, ...m, target: await fs.readlink(path.join(dir, e.rel)) }
  return { type: 'entry', kind: 'file', path: e.rel, ...m, size: e.stat.size }
}

function specialKind (e: WalkEntry): string {
  const s = e.stat
  if (s.isSocket()) return 'socket'
  if (s.isFIFO()) return 'fifo'
  if (s.isCharacterDevice()) return 'char-device'
  if (s.isBlockDevice()) return 'block-device'
  return 'special'
}

/**
 * FAULT-INJECTION HOOK FOR TESTS ONLY (test/integration/migration-faults.test.ts).
 * With MSC_TEST_CORRUPT_TRANSFER=LABEL in the sending node's environment, the first
 * data chunk of every tree labelled LABEL (e.g. `images`) goes out with one byte
 * flipped, after it was hashed: the trailer carries the true SHA-256, so the receiver
 * must detect the mismatch and refuse the tree. Never set it outside tests.
 */
function corruptHook (chunk: Uint8Array, corrupt: { pending: boolean } | undefined): Uint8Array {
  if (corrupt?.pending !== true || chunk.byteLength === 0) return chunk
  corrupt.pending = false
  const bad = chunk.slice()
  bad[0] = bad[0]! ^ 0xff
  return bad
}

/** Streams exactly `size` bytes of one file; returns their SHA-256 (hex). */
async function sendFile (framed: FramedStream, file: string, size: number, reuse: boolean, signal: AbortSignal, progress: (n: number) => void, corrupt?: { pending: boolean }): Promise<string> {
  const hash = crypto.createHash('sha256')
  const fh = await fs.open(file, C.O_RDONLY | C.O_NOFOLLOW)
  const shared = reuse ? new Uint8Array(Math.min(DATA_CHUNK_BYTES, size)) : undefined
  try {
    let off = 0
    while (off < size) {
      // A fresh buffer per chunk unless the stream copies: it may queue a reference.
      const want = Math.min(DATA_CHUNK_BYTES, size - off)
      const buf = shared != null ? shared.subarray(0, want) : new Uint8Array(want)
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, off)
      if (bytesRead === 0) throw new ProtocolError('SOURCE_CHANGED', `${file} shrank while being sent`, 'INTERNAL')
      const chunk = buf.subarray(0, bytesRead)
      hash.update(chunk)
      await framed.writeFrame(FRAME_DATA, corruptHook(chunk, corrupt), signal)
      off += bytesRead
      progress(bytesRead)
    }
  } finally {
    await fh.close()
  }
  return hash.digest('hex')
}
