/**
 * Receiving side of /msc/image. Everything lands in a fresh temporary directory inside
 * tmpRoot; every message is checked before it touches the disk; only a transfer that
 * arrived complete and verified is committed into destDir (commit.ts). Any problem:
 * stop reading, remove the temporary directory, answer {ok: false, reason}, throw.
 */
import fs from 'node:fs/promises'
import { constants as C } from 'node:fs'
import crypto from 'node:crypto'
import path from 'node:path'
import { FramedStream, type ByteStream, joined, parseJsonFrame, type ProtocolError } from '../framing.ts'
import { pathProblem, parentOf, symlinkProblem, type LookupResult, type SymlinkMode } from './paths.ts'
import { commitTree, checkDestination, checkSameFilesystem, type Received } from './commit.ts'
import {
  BodyMessageSchema,
  FRAME_DATA,
  FRAME_MSG,
  HeaderSchema,
  IMAGE_VERSION,
  MAX_FRAME_BYTES,
  asRefusal,
  refusal,
  type Entry,
  type TreeHeader,
  type Verdict
} from './messages.ts'

export interface TreeLimits {
  maxTotalBytes: number
  maxFileBytes: number
  /** Entries of every kind. */
  maxFiles: number
}

/** Where a tree goes; chosen from its header when `resolve` is used. */
export interface TreeDestination {
  destDir: string
  /** replace: destDir must not exist; overlay: merge into the existing destDir and apply deletes. */
  mode: 'replace' | 'overlay'
  limits: TreeLimits
  /** Called once with the outcome (after the verdict was sent). */
  onDone?: (err?: Error) => void
  /**
   * Runs once the tree is committed, before the verdict goes out, so the sender waits
   * for it. Its failure does not fail the tree (it should not throw).
   */
  beforeVerdict?: () => Promise<void>
  /**
   * 'contained' (default): every symlink must resolve inside the tree. 'rootfs': a
   * container's root filesystem, whose links (absolute ones included) are meant to be
   * resolved inside the container; the receiver stores them verbatim and, as always,
   * never creates or commits anything through a symlink. 'none': any symlink refuses
   * the transfer (files and directories only).
   */
  symlinks?: SymlinkMode
}

interface CommonOptions {
  /** Parent of the temporary directory; on destDir's filesystem (commit renames). */
  tmpRoot: string
  idleTimeoutMs: number
  signal?: AbortSignal
  onProgress?: (bytesSoFar: number, totalBytes: number) => void
}

export type ReceiveTreeOptions = CommonOptions & (
  | (TreeDestination & { expectTransferId?: string })
  /** Picks the destination from the header; null refuses the transfer (UNKNOWN_TRANSFER). */
  | { resolve: (header: TreeHeader) => TreeDestination | null }
)

export interface ReceiveTreeResult {
  files: number
  bytes: number
  ms: number
  label: string
  transferId: string
}

export async function receiveTree (stream: ByteStream, o: ReceiveTreeOptions): Promise<ReceiveTreeResult> {
  const started = performance.now()
  const framed = new FramedStream(stream, { maxFrameBytes: MAX_FRAME_BYTES, idleTimeoutMs: o.idleTimeoutMs })
  let dest: TreeDestination | undefined
  let tmp: string | undefined
  try {
    const header = parseHeader(await framed.readJson(HeaderSchema, o.signal))
    dest = chooseDestination(header, o)
    checkHeader(header, dest)
    await checkDestination(dest.destDir, dest.mode)
    tmp = await fs.mkdtemp(path.join(o.tmpRoot, 'msc-image-'))
    await checkSameFilesystem(tmp, dest.destDir, dest.mode)
    const got = await receiveBody(framed, header, tmp, dest, o)
    // 'none' let no link through, so commit has nothing to resolve: 'contained' it is.
    await commitTree(tmp, dest.destDir, dest.mode, header, got, dest.symlinks === 'rootfs' ? 'rootfs' : 'contained')
    tmp = undefined // moved into destDir (replace) or removed by commitTree (overlay)
    await dest.beforeVerdict?.().catch(() => {})
    // The tree is in place whatever happens to the answer: a sender that misses it
    // fails on its side, and a retry finds destDir there (DEST_EXISTS in replace mode).
    const verdict: Verdict = { type: 'verdict', ok: true, files: header.files, bytes: header.bytes }
    const answered = anySignal(o.signal, AbortSignal.timeout(5000))
    await framed.writeJson(verdict, answered).then(async () => {
      await framed.closeWrite(answered)
    }).catch(() => {})
    dest.onDone?.()
    return { files: header.files, bytes: header.bytes, ms: performance.now() - started, label: header.label, transferId: header.transferId }
  } catch (err) {
    const r = asRefusal(err, o.signal)
    if (tmp != null) await fs.rm(tmp, { recursive: true, force: true }).catch(() => {})
    await answerRefusal(framed, r)
    dest?.onDone?.(r)
    throw r
  }
}

/**
 * Tells the sender why, then resets the stream so it stops sending. Before the reset it
 * reads and drops what the sender still has in flight, for at most REFUSAL_LINGER_MS:
 * closing a TCP connection with unread bytes sends a TCP reset, and a sender whose
 * write fails on that reset loses the verdict it had not read yet, and with it the
 * reason. A sender that read the verdict stops and resets its end, which ends this at once.
 */
async function answerRefusal (framed: FramedStream, r: ProtocolError): Promise<void> {
  const verdict: Verdict = { type: 'verdict', ok: false, reason: r.reason, error: r.message.slice(0, 4096) }
  const grace = AbortSignal.timeout(2000)
  try {
    await framed.writeJson(verdict, grace)
    await framed.closeWrite(grace)
  } catch { /* the stream may already be gone */ }
  const linger = AbortSignal.timeout(REFUSAL_LINGER_MS)
  try {
    while (await framed.readFrameParts(linger) != null) { /* dropped */ }
  } catch { /* reset by the sender, or the linger is over */ }
  framed.abort(r)
}

/** How long a refusing receiver drains the sender's bytes before it resets the stream. */
const REFUSAL_LINGER_MS = 1500

function parseHeader (h: TreeHeader): TreeHeader {
  if (h.v !== IMAGE_VERSION) throw refusal('UNSUPPORTED_VERSION', `protocol version ${h.v} is not supported (this node speaks ${IMAGE_VERSION})`)
  return h
}

function chooseDestination (h: TreeHeader, o: ReceiveTreeOptions): TreeDestination {
  if ('resolve' in o) {
    const d = o.resolve(h)
    if (d == null) throw refusal('UNKNOWN_TRANSFER', `no transfer ${h.transferId} is expected here`)
    return d
  }
  if (o.expectTransferId != null && o.expectTransferId !== h.transferId) {
    throw refusal('WRONG_TRANSFER', `expected transfer ${o.expectTransferId}, got ${h.transferId}`)
  }
  return o
}

function checkHeader (h: TreeHeader, d: TreeDestination): void {
  const l = d.limits
  if (h.files > l.maxFiles) throw refusal('LIMIT_EXCEEDED', `${h.files} entries announced, the limit is ${l.maxFiles}`)
  if (h.bytes > l.maxTotalBytes) throw refusal('LIMIT_EXCEEDED', `${h.bytes} bytes announced, the limit is ${l.maxTotalBytes}`)
  if (h.deletes.length > 0 && d.mode !== 'overlay') throw refusal('MALFORMED', 'deletes are only allowed in overlay mode')
  if (h.deletes.length > l.maxFiles) throw refusal('LIMIT_EXCEEDED', `${h.deletes.length} deletes announced, the limit is ${l.maxFiles}`)
  for (const p of h.deletes) {
    const problem = pathProblem(p)
    if (problem != null) throw refusal('BAD_PATH', `delete ${JSON.stringify(p)}: ${problem}`)
  }
}

/** The open file being received. */
interface Incoming {
  entry: Extract<Entry, { kind: 'file' }>
  fh: fs.FileHandle
  hash: crypto.Hash
  got: number
}

/** Reads entries and data until 'end' and the sender's half-close; returns what arrived. */
async function receiveBody (framed: FramedStream, h: TreeHeader, tmp: string, dest: TreeDestination, o: CommonOptions): Promise<Received> {
  const kinds = new Map<string, LookupResult & { entryKind: Entry['kind'] }>()
  const got: Received = { entries: [], symlinks: [] }
  let file: Incoming | undefined
  let announcedBytes = 0
  let bytes = 0
  try {
    for (;;) {
      const fp = await framed.readFrameParts(o.signal)
      if (fp == null) throw refusal('TRUNCATED', 'the stream ended before the end message')
      if (fp.type === FRAME_DATA) {
        // Written and hashed piece by piece, as the chunks came: no joined copy.
        const n = fp.parts.reduce((s, p) => s + p.byteLength, 0)
        if (file == null) throw refusal('MALFORMED', 'file data outside a file')
        if (file.got + n > file.entry.size) {
          throw refusal('FILE_OVERSIZE', `${file.entry.path}: more than the announced ${file.entry.size} bytes`)
        }
        for (const part of fp.parts) {
          await writeAll(file.fh, part)
          file.hash.update(part)
        }
        file.got += n
        bytes += n
        o.onProgress?.(bytes, h.bytes)
        continue
      }
      const f = { type: fp.type, payload: joined(fp.parts) }
      if (f.type !== FRAME_MSG) throw refusal('MALFORMED', `unknown frame type ${f.type}`)
      const m = parseJsonFrame(f, BodyMessageSchema)
      if (m.type === 'trailer') {
        if (file == null) throw refusal('MALFORMED', 'trailer outside a file')
        const done = file
        file = undefined
        await finishFile(done, m.sha256)
        continue
      }
      if (file != null) throw refusal('MALFORMED', `${file.entry.path}: ${m.type} before the file's trailer`)
      if (m.type === 'end') {
        if (got.entries.length !== h.files || bytes !== h.bytes) {
          throw refusal('INCOMPLETE', `got ${got.entries.length} entries and ${bytes} bytes, ${h.files} and ${h.bytes} were announced`)
        }
        // The sender half-closes after 'end': anything more is a protocol violation.
        if (await framed.readFrame(o.signal) != null) throw refusal('MALFORMED', 'data after the end message')
        return got
      }
      if (got.entries.length >= h.files) throw refusal('TOO_MANY_FILES', `more than the ${h.files} announced entries`)
      await checkEntry(m, kinds, h, dest.limits, announcedBytes, dest.symlinks)
      if (m.kind === 'file') announcedBytes += m.size
      got.entries.push(m)
      kinds.set(m.path, m.kind === 'symlink' ? { kind: 'symlink', target: m.target, entryKind: 'symlink' } : { kind: 'other', entryKind: m.kind })
      const p = path.join(tmp, m.path)
      if (m.kind === 'dir') {
        // 0700 while filling it (its real mode may forbid writing); commit sets the mode.
        await fs.mkdir(p, { mode: 0o700 })
      } else if (m.kind === 'symlink') {
        await fs.symlink(m.target, p)
        got.symlinks.push(m)
      } else {
        // O_EXCL | O_NOFOLLOW: never write through anything that already exists.
        const fh = await fs.open(p, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600)
        file = { entry: m, fh, hash: crypto.createHash('sha256'), got: 0 }
      }
    }
  } finally {
    await file?.fh.close().catch(() => {})
  }
}

/** Everything that can be checked about an entry before it is created. */
async function checkEntry (
  m: Entry,
  kinds: Map<string, { entryKind: Entry['kind'] } & LookupResult>,
  h: TreeHeader,
  l: TreeLimits,
  announcedBytes: number,
  symlinks: SymlinkMode = 'contained'
): Promise<void> {
  const problem = pathProblem(m.path)
  if (problem != null) throw refusal('BAD_PATH', `${JSON.stringify(m.path)}: ${problem}`)
  if (kinds.has(m.path)) throw refusal('DUPLICATE_PATH', `${m.path} was sent twice`)
  // Parents first, and only directories received in this transfer: so nothing is ever
  // created through a symlink, nor through anything that existed before.
  const parent = parentOf(m.path)
  if (parent !== '') {
    const pk = kinds.get(parent)?.entryKind
    if (pk === 'symlink') throw refusal('PATH_THROUGH_SYMLINK', `${m.path} is inside the symlink ${parent}`)
    if (pk !== 'dir') throw refusal('NO_PARENT', `${m.path} comes before (or without) its directory ${parent}`)
  }
  if (m.kind === 'file') {
    if (m.size > l.maxFileBytes) throw refusal('LIMIT_EXCEEDED', `${m.path}: ${m.size} bytes, the limit per file is ${l.maxFileBytes}`)
    if (announcedBytes + m.size > h.bytes) throw refusal('TOTAL_EXCEEDED', `${m.path}: the files add up to more than the ${h.bytes} bytes announced`)
  }
  if (m.kind === 'symlink' && symlinks === 'none') {
    throw refusal('SYMLINK_ESCAPE', `${m.path} is a symlink (-> ${m.target}): this tree takes regular files and directories only`)
  }
  if (m.kind === 'symlink' && symlinks === 'contained') {
    // Early check against what arrived so far; commit re-checks with the whole tree.
    const why = await symlinkProblem(m.path, m.target, (rel) => kinds.get(rel) ?? { kind: 'other' })
    if (why != null) throw refusal('SYMLINK_ESCAPE', why)
  }
}

async function finishFile (f: Incoming, sha256: string): Promise<void> {
  try {
    if (f.got !== f.entry.size) throw refusal('FILE_TRUNCATED', `${f.entry.path}: ${f.got} of the announced ${f.entry.size} bytes`)
    const actual = f.hash.digest('hex')
    if (actual !== sha256) throw refusal('HASH_MISMATCH', `${f.entry.path}: SHA-256 ${actual} differs from the sender's ${sha256}`)
  } finally {
    await f.fh.close()
  }
}

/** FileHandle.write may write less than asked (nearly full disk): loop, so nothing is lost silently. */
async function writeAll (fh: fs.FileHandle, data: Uint8Array): Promise<void> {
  let off = 0
  while (off < data.byteLength) {
    const { bytesWritten } = await fh.write(data, off, data.byteLength - off)
    off += bytesWritten
  }
}

function anySignal (a: AbortSignal | undefined, b: AbortSignal): AbortSignal {
  return a == null ? b : AbortSignal.any([a, b])
}
