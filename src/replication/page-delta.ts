/**
 * Page-level delta of CRIU pages files between two checkpoint generations, for
 * continuous replication. Every checkpoint is a full dump (no soft-dirty tracking here),
 * so the sender hashes each page and sends only those whose hash differs from what the
 * standby acknowledged for the same page key (criu-images.ts); the standby copies the
 * others from its own previous generation.
 *
 * Chunk payload (one per call of encodePages' iterator; all integers u32 little-endian):
 *
 *   pageCount | runCount | runCount × runLength | zstd data
 *
 *  - pageCount: pages in this chunk, 1..4096, never more than the pages file still lacks;
 *    chunks come in file order, each continuing where the previous one ended.
 *  - runs alternate, starting with a run of "same" pages (which may be 0 long; no other
 *    run may be 0), then literal, then same, ...; they sum to pageCount, so
 *    runCount ≤ pageCount + 1. A "same" page is copied from the receiver's previous
 *    generation, found by its key; the receiver refuses a key it does not have.
 *  - zstd data: the literal pages, in order, concatenated and compressed into one zstd
 *    frame; it decompresses to exactly (sum of the literal runs) × 4096 bytes. The frame
 *    declares its content size (as one-shot compressors write it), so its window is no
 *    larger than that: the receiver refuses a window above the expected size rounded up
 *    to a power of two (at least 1 KiB). With no literal page the zstd data is empty
 *    (0 bytes). Node's decoder ignores bytes after a complete frame; the decompressed
 *    size is what the receiver checks.
 *
 * The receiver (PagesFileWriter) bounds decompression by the expected size (output and
 * zstd window), so a chunk cannot make it allocate much more than its pages, and
 * validates a chunk completely before writing any of it.
 */
import fs from 'node:fs/promises'
import { constants as FS } from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import zlib from 'node:zlib'
import { promisify } from 'node:util'
import { PAGE_SIZE, pageLayout } from './criu-images.ts'

export const DEFAULT_CHUNK_PAGES = 256
export const MAX_CHUNK_PAGES = 4096
/** The cheapest regular level: the sender compresses a full dump every few seconds. */
export const DEFAULT_ZSTD_LEVEL = 1
const HEADER_BYTES = 8

const zstdCompress = promisify(zlib.zstdCompress)
const zstdDecompress = promisify(zlib.zstdDecompress)

/** ZSTD_COMPRESSBOUND: the most a zstd frame of `src` bytes can take. */
function compressBound (src: number): number {
  return src + (src >>> 8) + (src < 128 * 1024 ? ((128 * 1024 - src) >>> 11) : 0)
}

/** The largest payload a chunk of `pages` pages can take, for frame limits. */
export function maxChunkWireBytes (pages: number): number {
  return HEADER_BYTES + 4 * (pages + 1) + compressBound(pages * PAGE_SIZE)
}

/**
 * A page's identity for "unchanged": sha256 in base64. Per 4 KiB page it is as fast as
 * sha1 here (~1.3 GB/s, SHA extensions), 2x md5 or blake2b, and collision-resistant: a
 * program in the container cannot make a changed page look unchanged.
 */
export function pageHash (page: Uint8Array): string {
  return crypto.hash('sha256', page, 'base64')
}

async function readFully (fh: fs.FileHandle, buf: Uint8Array, length: number, position: number, what: string): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done)
    if (bytesRead === 0) throw new Error(`${what}: ended at byte ${position + done}, expected ${position + length} (file changed?)`)
    done += bytesRead
  }
}

export interface EncodeOptions {
  /** Pages per chunk, 1..4096. Default 256 (1 MiB before compression). */
  chunkPages?: number
  zstdLevel?: number
  onFileDigest?: (sha256Hex: string) => void
}

/** A chunk payload from its runs and its literal pages (compressed on the thread pool). */
async function buildChunk (pages: number, runs: number[], literal: Uint8Array, level: number): Promise<Uint8Array> {
  // Output in one piece: with zlib's default 16 KiB chunkSize, the work bounces between
  // the thread pool and the event loop per 16 KiB (3-4x slower here).
  const z = literal.length === 0
    ? new Uint8Array(0)
    : await zstdCompress(literal, {
      chunkSize: compressBound(literal.length),
      // Declares the content size in the frame, which bounds its window (see the format).
      pledgedSrcSize: literal.length,
      params: { [zlib.constants.ZSTD_c_compressionLevel]: level }
    })
  const out = new Uint8Array(HEADER_BYTES + 4 * runs.length + z.length)
  const dv = new DataView(out.buffer)
  dv.setUint32(0, pages, true)
  dv.setUint32(4, runs.length, true)
  for (let i = 0; i < runs.length; i++) dv.setUint32(HEADER_BYTES + 4 * i, runs[i] as number, true)
  out.set(z, HEADER_BYTES + 4 * runs.length)
  return out
}

/**
 * Sender side. Reads pagesFile (path), whose page keys are `keys` (from pageLayout), and
 * yields chunk payloads of at most `chunkPages` pages each. A page whose hash equals
 * `acked.get(key)` is sent as "same", others as literal bytes. `hashes` receives the hash
 * of every page read (key -> hash): the caller keeps them as the next `acked` once the
 * standby acknowledged this generation.
 *
 * `onFileDigest`, when given, receives the sha256 (hex) of the whole file, what
 * PagesFileWriter.finish reports on the other side, once every page was read (before the
 * generator ends). It costs a second hash pass over the data, so it is opt-in.
 *
 * Pipelined over two sets of buffers: while the event loop hashes chunk c, chunk c+1 is
 * read and chunk c-1 compressed on the thread pool.
 */
export async function* encodePages (pagesFile: string, keys: string[], acked: ReadonlyMap<string, string> | null, hashes: Map<string, string>, opts: EncodeOptions = {}): AsyncGenerator<Uint8Array> {
  const chunkPages = opts.chunkPages ?? DEFAULT_CHUNK_PAGES
  if (!Number.isInteger(chunkPages) || chunkPages < 1 || chunkPages > MAX_CHUNK_PAGES) {
    throw new Error(`chunkPages must be an integer in 1..${MAX_CHUNK_PAGES}, got ${chunkPages}`)
  }
  const level = opts.zstdLevel ?? DEFAULT_ZSTD_LEVEL
  const what = path.basename(pagesFile)
  const fileHash = opts.onFileDigest === undefined ? null : crypto.createHash('sha256')
  const fh = await fs.open(pagesFile, FS.O_RDONLY | FS.O_NOFOLLOW)
  let reading: Promise<void> | null = null
  let building: Promise<Uint8Array> | null = null
  try {
    const size = (await fh.stat()).size
    if (size !== keys.length * PAGE_SIZE) throw new Error(`${what}: ${size} bytes, but ${keys.length} pages expected`)
    const chunks = Math.ceil(keys.length / chunkPages)
    const bufs = [new Uint8Array(chunkPages * PAGE_SIZE), new Uint8Array(chunkPages * PAGE_SIZE)]
    const literals = [new Uint8Array(chunkPages * PAGE_SIZE), new Uint8Array(chunkPages * PAGE_SIZE)]
    const pagesOf = (c: number): number => Math.min(chunkPages, keys.length - c * chunkPages)
    const startRead = (c: number): Promise<void> => {
      const p = readFully(fh, bufs[c % 2] as Uint8Array, pagesOf(c) * PAGE_SIZE, c * chunkPages * PAGE_SIZE, what)
      p.catch(() => {}) // awaited below; this only keeps an abandoned one from being "unhandled"
      return p
    }
    if (chunks > 0) reading = startRead(0)
    for (let c = 0; c < chunks; c++) {
      await reading
      // bufs[(c + 1) % 2] is free: chunk c - 1 was hashed and copied in the previous turn.
      reading = c + 1 < chunks ? startRead(c + 1) : null
      const buf = bufs[c % 2] as Uint8Array
      // literals[c % 2] is free: chunk c - 2's compression was awaited in the previous turn.
      const literal = literals[c % 2] as Uint8Array
      const first = c * chunkPages
      const n = pagesOf(c)
      const runs: number[] = []
      let run = 0
      let runSame = true
      let nLiteral = 0
      for (let i = 0; i < n; i++) {
        const page = buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)
        const key = keys[first + i] as string
        const h = pageHash(page)
        hashes.set(key, h)
        const same = acked !== null && acked.get(key) === h
        if (same !== runSame) {
          runs.push(run)
          run = 0
          runSame = same
        }
        run++
        if (!same) literal.set(page, (nLiteral++) * PAGE_SIZE)
      }
      runs.push(run)
      fileHash?.update(buf.subarray(0, n * PAGE_SIZE))
      const next = buildChunk(n, runs, literal.subarray(0, nLiteral * PAGE_SIZE), level)
      next.catch(() => {})
      const done = building
      building = next
      if (done !== null) yield await done
    }
    if (fileHash !== null) opts.onFileDigest?.(fileHash.digest('hex'))
    if (building !== null) {
      const last = building
      building = null
      yield await last
    }
  } finally {
    // Nothing may still use the fd or the buffers once this returns.
    await Promise.allSettled([reading, building])
    await fh.close()
  }
}

export interface ChunkStats {
  pages: number
  samePages: number
  literalPages: number
  wireBytes: number
}

// A page's place in the previous generation, packed in one number: file index in the low
// bits, page index above them (Map values stay small numbers, not objects).
const FILE_SLOTS = 2 ** 20

/** Receiver side: the previous generation's pages, looked up by key. */
export class PreviousPages {
  private readonly files: fs.FileHandle[]
  private readonly names: string[]
  private readonly where: Map<string, number>

  private constructor (files: fs.FileHandle[], names: string[], where: Map<string, number>) {
    this.files = files
    this.names = names
    this.where = where
  }

  /** Builds key -> (pages file, offset) with pageLayout; keeps the pages files open. */
  static async open (genImageDir: string): Promise<PreviousPages> {
    const layout = await pageLayout(genImageDir)
    if (layout.size >= FILE_SLOTS) throw new Error(`${genImageDir}: too many pages files (${layout.size})`)
    const files: fs.FileHandle[] = []
    const names: string[] = []
    const where = new Map<string, number>()
    try {
      for (const [name, keys] of layout) {
        const fh = await fs.open(path.join(genImageDir, name), FS.O_RDONLY | FS.O_NOFOLLOW)
        files.push(fh)
        names.push(name)
        // pageLayout checked the size by name; this checks the file actually opened.
        const size = (await fh.stat()).size
        if (size !== keys.length * PAGE_SIZE) throw new Error(`${name} changed size while opening ${genImageDir}`)
        if (keys.length * FILE_SLOTS > Number.MAX_SAFE_INTEGER) throw new Error(`${name}: too many pages`)
        const fileIndex = files.length - 1
        for (let i = 0; i < keys.length; i++) where.set(keys[i] as string, i * FILE_SLOTS + fileIndex)
      }
    } catch (err) {
      await Promise.allSettled(files.map(async fh => {
        await fh.close()
      }))
      throw err
    }
    return new PreviousPages(files, names, where)
  }

  /** Pages known. */
  get size (): number {
    return this.where.size
  }

  has (key: string): boolean {
    return this.where.has(key)
  }

  /** Copies the page with this key into `into` (4096 bytes); false when the previous generation has no such page. */
  async read (key: string, into: Uint8Array): Promise<boolean> {
    const w = this.where.get(key)
    if (w === undefined) return false
    if (into.length < PAGE_SIZE) throw new Error(`read: buffer of ${into.length} bytes, a page is ${PAGE_SIZE}`)
    await this.readRange(w % FILE_SLOTS, Math.floor(w / FILE_SLOTS), 1, into)
    return true
  }

  /**
   * Copies the pages of `keys`, in order, into `into`; pages consecutive in one previous
   * file are read with one call. Throws, naming the key, for a page it does not have.
   */
  async readPages (keys: readonly string[], into: Uint8Array): Promise<void> {
    if (into.length < keys.length * PAGE_SIZE) throw new Error(`readPages: buffer too small for ${keys.length} pages`)
    let i = 0
    while (i < keys.length) {
      const w = this.locate(keys[i] as string)
      const file = w % FILE_SLOTS
      const page = Math.floor(w / FILE_SLOTS)
      let n = 1
      while (i + n < keys.length && this.locate(keys[i + n] as string) === w + n * FILE_SLOTS) n++
      await this.readRange(file, page, n, into.subarray(i * PAGE_SIZE))
      i += n
    }
  }

  async close (): Promise<void> {
    const results = await Promise.allSettled(this.files.map(async fh => {
      await fh.close()
    }))
    this.files.length = 0
    for (const r of results) if (r.status === 'rejected') throw r.reason
  }

  private locate (key: string): number {
    const w = this.where.get(key)
    if (w === undefined) throw new Error(`page ${key} is not in the previous generation`)
    return w
  }

  private async readRange (file: number, page: number, n: number, into: Uint8Array): Promise<void> {
    const fh = this.files[file]
    if (fh === undefined) throw new Error('PreviousPages is closed')
    await readFully(fh, into, n * PAGE_SIZE, page * PAGE_SIZE, `previous ${this.names[file] as string}`)
  }
}

/**
 * Receiver side: writes one pages file from the chunks, in order. `keys` come from
 * pageLayoutFromPagemaps on the generation's received pagemaps; `prev` may be null (then
 * every page must be literal). After any error the writer is unusable: call abort().
 */
export class PagesFileWriter {
  private readonly outPath: string
  private readonly keys: string[]
  private readonly prev: PreviousPages | null
  private readonly what: string
  private readonly hash = crypto.createHash('sha256')
  private fh: fs.FileHandle | null = null
  private created = false
  private pages = 0
  private state: 'open' | 'failed' | 'finished' | 'aborted' = 'open'
  private busy: Promise<unknown> | null = null

  constructor (outPath: string, keys: string[], prev: PreviousPages | null) {
    this.outPath = outPath
    this.keys = keys
    this.prev = prev
    this.what = path.basename(outPath)
  }

  /** Validates the chunk whole, then appends its pages. Throws on any inconsistency. */
  async write (chunk: Uint8Array): Promise<ChunkStats> {
    return await this.exclusive(async () => await this.writeChunk(chunk))
  }

  /** Throws if fewer pages than keys arrived; fsyncs the file; sha256 hex of the whole file. */
  async finish (): Promise<{ pages: number; sha256: string }> {
    return await this.exclusive(async () => {
      if (this.pages !== this.keys.length) throw new Error(`${this.what}: ${this.pages} of ${this.keys.length} pages arrived`)
      const fh = await this.ensureOpen()
      await fh.sync()
      this.fh = null
      await fh.close()
      this.state = 'finished'
      return { pages: this.pages, sha256: this.hash.digest('hex') }
    })
  }

  /** Closes and removes the file (even a finished one): after abort, nothing stays at outPath that this writer made. */
  async abort (): Promise<void> {
    if (this.busy !== null) await this.busy.catch(() => {})
    this.state = 'aborted'
    const fh = this.fh
    this.fh = null
    if (fh !== null) await fh.close().catch(() => {})
    // Only what this writer created: when 'wx' failed, the path is someone else's.
    if (this.created) await fs.rm(this.outPath, { force: true })
    this.created = false
  }

  // One operation at a time; a failure leaves the writer failed, so a half-validated
  // sequence cannot continue.
  private async exclusive<T> (op: () => Promise<T>): Promise<T> {
    if (this.state !== 'open') throw new Error(`${this.what}: writer is ${this.state}`)
    if (this.busy !== null) throw new Error(`${this.what}: an operation is already in progress`)
    const p = op()
    this.busy = p
    try {
      return await p
    } catch (err) {
      if (this.state === 'open') this.state = 'failed'
      throw err
    } finally {
      this.busy = null
    }
  }

  private async ensureOpen (): Promise<fs.FileHandle> {
    if (this.fh === null) {
      // 'wx' is O_CREAT|O_EXCL: refuses any existing path, a symlink included, dangling or not.
      this.fh = await fs.open(this.outPath, 'wx', 0o600)
      this.created = true
    }
    return this.fh
  }

  private async writeChunk (chunk: Uint8Array): Promise<ChunkStats> {
    const what = this.what
    if (chunk.length < HEADER_BYTES) throw new Error(`${what}: chunk of ${chunk.length} bytes has no header`)
    const dv = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const pageCount = dv.getUint32(0, true)
    const runCount = dv.getUint32(4, true)
    const remaining = this.keys.length - this.pages
    if (pageCount === 0 || pageCount > MAX_CHUNK_PAGES) throw new Error(`${what}: chunk page count ${pageCount} not in 1..${MAX_CHUNK_PAGES}`)
    if (pageCount > remaining) throw new Error(`${what}: chunk of ${pageCount} pages, only ${remaining} remain`)
    if (runCount > pageCount + 1) throw new Error(`${what}: ${runCount} runs for ${pageCount} pages`)
    const runsEnd = HEADER_BYTES + 4 * runCount
    if (chunk.length < runsEnd) throw new Error(`${what}: chunk truncated in its run lengths`)
    const runs: number[] = []
    let sum = 0
    let literalPages = 0
    for (let i = 0; i < runCount; i++) {
      const r = dv.getUint32(HEADER_BYTES + 4 * i, true)
      if (r === 0 && i > 0) throw new Error(`${what}: run #${i} is empty (only the first may be)`)
      sum += r
      if (sum > pageCount) throw new Error(`${what}: runs sum past the chunk's ${pageCount} pages`)
      if (i % 2 === 1) literalPages += r
      runs.push(r)
    }
    if (sum !== pageCount) throw new Error(`${what}: runs sum to ${sum}, chunk has ${pageCount} pages`)
    const samePages = pageCount - literalPages
    const base = this.pages
    if (samePages > 0) {
      const prev = this.prev
      let at = base
      for (let i = 0; i < runs.length; i++) {
        const r = runs[i] as number
        if (i % 2 === 0) {
          for (let j = at; j < at + r; j++) {
            const key = this.keys[j] as string
            if (prev === null) throw new Error(`${what}: page ${key} sent as same, but there is no previous generation`)
            if (!prev.has(key)) throw new Error(`${what}: page ${key} sent as same, but the previous generation does not have it`)
          }
        }
        at += r
      }
    }

    const z = chunk.subarray(runsEnd)
    const expected = literalPages * PAGE_SIZE
    let literal: Uint8Array
    if (literalPages === 0) {
      if (z.length !== 0) throw new Error(`${what}: ${z.length} bytes of zstd data in a chunk without literal pages`)
      literal = new Uint8Array(0)
    } else {
      try {
        // A frame may declare any window size, which the decoder would allocate; frames
        // that declare their content size never need more than that.
        const windowLogMax = Math.max(10, Math.ceil(Math.log2(expected)))
        literal = await zstdDecompress(z, {
          maxOutputLength: expected,
          chunkSize: expected,
          params: { [zlib.constants.ZSTD_d_windowLogMax]: windowLogMax }
        })
      } catch (err) {
        throw new Error(`${what}: literal pages do not decompress to ${expected} bytes: ${(err as Error).message}`, { cause: err })
      }
      if (literal.length !== expected) throw new Error(`${what}: literal pages decompress to ${literal.length} bytes, expected ${expected}`)
    }

    let out: Uint8Array
    if (samePages === 0) {
      out = literal
    } else {
      out = new Uint8Array(pageCount * PAGE_SIZE)
      let at = 0
      let lit = 0
      for (let i = 0; i < runs.length; i++) {
        const r = runs[i] as number
        if (i % 2 === 0) {
          await (this.prev as PreviousPages).readPages(this.keys.slice(base + at, base + at + r), out.subarray(at * PAGE_SIZE))
        } else {
          out.set(literal.subarray(lit * PAGE_SIZE, (lit + r) * PAGE_SIZE), at * PAGE_SIZE)
          lit += r
        }
        at += r
      }
    }

    const fh = await this.ensureOpen()
    let done = 0
    while (done < out.length) {
      const { bytesWritten } = await fh.write(out, done, out.length - done, base * PAGE_SIZE + done)
      done += bytesWritten
    }
    this.hash.update(out)
    this.pages += pageCount
    return { pages: pageCount, samePages, literalPages, wireBytes: chunk.length }
  }
}
