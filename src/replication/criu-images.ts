/**
 * Reading CRIU's pagemap images, to know which memory page each 4 KiB of a pages-N.img
 * holds: the basis of the page-level delta between two checkpoints (page-delta.ts).
 *
 * Format (CRIU 4.x: criu/include/magic.h, criu/image.c, criu/protobuf.c,
 * images/pagemap.proto, criu/pagemap.c, criu/include/pagemap.h):
 *  - u32 LE IMG_COMMON_MAGIC, u32 LE PAGEMAP_MAGIC (pagemap images are not O_SERVICE,
 *    but IMG_SERVICE_MAGIC is accepted as the first word too);
 *  - then entries, each a u32 LE length and that many protobuf bytes: one pagemap_head
 *    { pages_id = 1 }, then pagemap_entry { vaddr = 1, compat_nr_pages = 2,
 *    in_parent = 3, flags = 4, nr_pages = 5 (uint64; CRIU ≥ 3.x writes it and leaves
 *    compat_nr_pages 0) };
 *  - flags are normalized as init_compat_pagemap_entry does: in_parent adds PE_PARENT,
 *    an entry without flags (and not in_parent) is PE_PRESENT. Only PE_PRESENT entries
 *    have bytes in pages-<pages_id>.img, 4096 per page, in entry order (skip_pagemap_pages
 *    advances the pages file offset for present entries only; a lazy entry that was
 *    transferred is PE_LAZY|PE_PRESENT and has its bytes).
 *
 * Pagemaps also arrive from another node, so everything here is untrusted: every length
 * is checked against the buffer, and malformed input throws.
 */
import fs from 'node:fs/promises'
import path from 'node:path'

export const PAGE_SIZE = 4096
export const IMG_COMMON_MAGIC = 0x54564319
export const IMG_SERVICE_MAGIC = 0x55105940
export const PAGEMAP_MAGIC = 0x56084025
export const PE_PARENT = 1 << 0
export const PE_LAZY = 1 << 1
export const PE_PRESENT = 1 << 2

/**
 * The most pages pageLayoutFromPagemaps accepts by default (16 GiB): a few bytes of
 * pagemap can claim any number of pages, and each becomes a key string in memory.
 */
export const DEFAULT_MAX_PAGES = 1 << 22

export interface PagemapEntry {
  vaddr: number
  nrPages: number
  flags: number
}
export interface Pagemap {
  pagesId: number
  entries: PagemapEntry[]
}

const PAGEMAP_RE = /^pagemap-(?:shmem-)?(?:0|[1-9][0-9]{0,19})\.img$/
const PAGES_RE = /^pages-(?:0|[1-9][0-9]{0,9})\.img$/
const U32_MAX = 0xffffffff
// Addresses are kept as JS numbers; they are exact below 2^53 (user space ends below 2^57
// only with 5-level paging, and CRIU does not dump the vsyscall page).
const ADDR_LIMIT = 2n ** 53n

/** Reads protobuf wire format from one message's bytes, bounds-checked. */
class ProtoReader {
  private readonly buf: Uint8Array
  private pos: number
  private readonly what: string

  constructor (buf: Uint8Array, what: string) {
    this.buf = buf
    this.pos = 0
    this.what = what
  }

  done (): boolean {
    return this.pos >= this.buf.length
  }

  varint (): bigint {
    let v = 0n
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Error(`${this.what}: truncated varint`)
      const b = this.buf[this.pos++] as number
      // The 10th byte carries bit 63 only: anything more does not fit in 64 bits.
      if (i === 9 && b > 1) throw new Error(`${this.what}: varint overflows 64 bits`)
      v |= BigInt(b & 0x7f) << BigInt(7 * i)
      if ((b & 0x80) === 0) return v
    }
    throw new Error(`${this.what}: varint longer than 10 bytes`)
  }

  skip (n: number): void {
    if (n > this.buf.length - this.pos) throw new Error(`${this.what}: field runs past the end of the entry`)
    this.pos += n
  }

  /** Skips the value of a field of an unknown number. */
  skipValue (wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint()
        break
      case 1:
        this.skip(8)
        break
      case 2: {
        const len = this.varint()
        if (len > BigInt(this.buf.length - this.pos)) throw new Error(`${this.what}: field runs past the end of the entry`)
        this.skip(Number(len))
        break
      }
      case 5:
        this.skip(4)
        break
      default:
        throw new Error(`${this.what}: unsupported protobuf wire type ${wireType}`)
    }
  }

  /** The next field's number and wire type. */
  tag (): { field: number; wireType: number } {
    const t = this.varint()
    const field = t >> 3n
    if (field === 0n || field > 0x1fffffffn) throw new Error(`${this.what}: invalid protobuf field number ${field}`)
    return { field: Number(field), wireType: Number(t & 7n) }
  }
}

function u32Field (r: ProtoReader, wireType: number, name: string, what: string): number {
  if (wireType !== 0) throw new Error(`${what}: ${name} has wire type ${wireType}, expected varint`)
  const v = r.varint()
  if (v > BigInt(U32_MAX)) throw new Error(`${what}: ${name} ${v} does not fit in 32 bits`)
  return Number(v)
}

function u64Field (r: ProtoReader, wireType: number, name: string, what: string): bigint {
  if (wireType !== 0) throw new Error(`${what}: ${name} has wire type ${wireType}, expected varint`)
  return r.varint()
}

function parseHead (msg: Uint8Array): number {
  const what = 'pagemap_head'
  const r = new ProtoReader(msg, what)
  let pagesId: number | undefined
  while (!r.done()) {
    const { field, wireType } = r.tag()
    if (field === 1) pagesId = u32Field(r, wireType, 'pages_id', what)
    else r.skipValue(wireType)
  }
  if (pagesId === undefined) throw new Error(`${what}: required field pages_id missing`)
  return pagesId
}

function parseEntry (msg: Uint8Array, index: number): PagemapEntry {
  const what = `pagemap_entry #${index}`
  const r = new ProtoReader(msg, what)
  let vaddr: bigint | undefined
  let compatNrPages: number | undefined
  let nrPages: bigint | undefined
  let inParent = false
  let flags: number | undefined
  while (!r.done()) {
    const { field, wireType } = r.tag()
    switch (field) {
      case 1:
        vaddr = u64Field(r, wireType, 'vaddr', what)
        break
      case 2:
        compatNrPages = u32Field(r, wireType, 'compat_nr_pages', what)
        break
      case 3:
        inParent = u64Field(r, wireType, 'in_parent', what) !== 0n
        break
      case 4:
        flags = u32Field(r, wireType, 'flags', what)
        break
      case 5:
        nrPages = u64Field(r, wireType, 'nr_pages', what)
        break
      default:
        r.skipValue(wireType)
    }
  }
  // Both are `required` in pagemap.proto: protobuf-c refuses an entry without them.
  if (vaddr === undefined) throw new Error(`${what}: required field vaddr missing`)
  if (compatNrPages === undefined) throw new Error(`${what}: required field compat_nr_pages missing`)
  const pages = nrPages ?? BigInt(compatNrPages)
  if (vaddr % BigInt(PAGE_SIZE) !== 0n) throw new Error(`${what}: vaddr 0x${vaddr.toString(16)} is not page-aligned`)
  if (vaddr + pages * BigInt(PAGE_SIZE) > ADDR_LIMIT) {
    throw new Error(`${what}: range 0x${vaddr.toString(16)} + ${pages} pages is beyond 2^53`)
  }
  // As init_compat_pagemap_entry: in_parent is PE_PARENT; no flags at all means present.
  let f = flags ?? 0
  if (inParent) f |= PE_PARENT
  else if (flags === undefined) f = PE_PRESENT
  return { vaddr: Number(vaddr), nrPages: Number(pages), flags: f }
}

/** Parses a pagemap image (pagemap-PID.img or pagemap-shmem-ID.img). Throws on malformed input. */
export function parsePagemap (buf: Uint8Array): Pagemap {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  if (buf.length < 8) throw new Error(`pagemap image too short (${buf.length} bytes): no magic`)
  const head = dv.getUint32(0, true)
  if (head !== IMG_COMMON_MAGIC && head !== IMG_SERVICE_MAGIC) {
    throw new Error(`not a CRIU image: head magic 0x${head.toString(16)}`)
  }
  const magic = dv.getUint32(4, true)
  if (magic !== PAGEMAP_MAGIC) throw new Error(`not a pagemap image: magic 0x${magic.toString(16)}`)
  let pos = 8
  let pagesId: number | undefined
  const entries: PagemapEntry[] = []
  while (pos < buf.length) {
    if (buf.length - pos < 4) throw new Error(`pagemap image truncated: ${buf.length - pos} bytes where an entry length is expected`)
    const len = dv.getUint32(pos, true)
    pos += 4
    if (len > buf.length - pos) throw new Error(`pagemap image truncated: entry of ${len} bytes, ${buf.length - pos} left`)
    const msg = buf.subarray(pos, pos + len)
    pos += len
    if (pagesId === undefined) pagesId = parseHead(msg)
    else entries.push(parseEntry(msg, entries.length))
  }
  if (pagesId === undefined) throw new Error('pagemap image has no pagemap_head')
  checkNoOverlap(entries)
  return { pagesId, entries }
}

// Two entries covering one address would give two pages the same key.
function checkNoOverlap (entries: PagemapEntry[]): void {
  const sorted = entries.filter(e => e.nrPages > 0).sort((a, b) => a.vaddr - b.vaddr)
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1] as PagemapEntry
    const cur = sorted[i] as PagemapEntry
    if (prev.vaddr + prev.nrPages * PAGE_SIZE > cur.vaddr) {
      throw new Error(`pagemap entries overlap at 0x${cur.vaddr.toString(16)}`)
    }
  }
}

export function isPagemapFile (name: string): boolean {
  return PAGEMAP_RE.test(name)
}

export function isPagesFile (name: string): boolean {
  return PAGES_RE.test(name)
}

export function pagesFileName (pagesId: number): string {
  return `pages-${pagesId}.img`
}

/** How many pages of this pagemap are stored in its pages file. */
export function presentPages (pm: Pagemap): number {
  let n = 0
  for (const e of pm.entries) if ((e.flags & PE_PRESENT) !== 0) n += e.nrPages
  return n
}

/** The keys of the pages stored in the pagemap's pages file, in file order. */
export function pageKeys (pagemapName: string, pm: Pagemap): string[] {
  const keys: string[] = []
  for (const e of pm.entries) {
    if ((e.flags & PE_PRESENT) === 0) continue
    for (let i = 0; i < e.nrPages; i++) keys.push(`${pagemapName}:${(e.vaddr + i * PAGE_SIZE).toString(16)}`)
  }
  return keys
}

/** Parsed pagemaps by name, each checked to name a distinct pages file. */
function pagesFilesOf (pagemaps: Iterable<[string, Pagemap]>): Map<string, [string, Pagemap]> {
  const byPages = new Map<string, [string, Pagemap]>()
  for (const [name, pm] of pagemaps) {
    const pages = pagesFileName(pm.pagesId)
    const other = byPages.get(pages)
    if (other !== undefined) throw new Error(`${other[0]} and ${name} both name ${pages}`)
    byPages.set(pages, [name, pm])
  }
  return byPages
}

/** For a dump directory: for each pages-N.img, the ordered page keys of its content. */
export async function pageLayout (dumpDir: string): Promise<Map<string, string[]>> {
  const names = (await fs.readdir(dumpDir)).sort()
  const parsed: Array<[string, Pagemap]> = []
  for (const name of names.filter(isPagemapFile)) {
    try {
      parsed.push([name, parsePagemap(await fs.readFile(path.join(dumpDir, name)))])
    } catch (err) {
      throw new Error(`${name}: ${(err as Error).message}`, { cause: err })
    }
  }
  const byPages = pagesFilesOf(parsed)
  for (const name of names.filter(isPagesFile)) {
    if (!byPages.has(name)) throw new Error(`${name} is not named by any pagemap in ${dumpDir}`)
  }
  const layout = new Map<string, string[]>()
  for (const [pages, [name, pm]] of byPages) {
    let size: number
    try {
      const st = await fs.lstat(path.join(dumpDir, pages))
      if (!st.isFile()) throw new Error('not a regular file')
      size = st.size
    } catch (err) {
      throw new Error(`${name} names ${pages}, which cannot be used: ${(err as Error).message}`, { cause: err })
    }
    // Checked before building the keys: the size bounds how many we make.
    const n = presentPages(pm)
    if (size !== n * PAGE_SIZE) throw new Error(`${pages} has ${size} bytes, ${name} says ${n} pages (${n * PAGE_SIZE} bytes)`)
    layout.set(pages, pageKeys(name, pm))
  }
  return layout
}

/**
 * The same from pagemap file contents already in memory (name -> bytes), for the
 * receiver. Refuses more than `maxPages` pages in all, before building any key.
 */
export function pageLayoutFromPagemaps (pagemaps: Map<string, Uint8Array>, opts: { maxPages?: number } = {}): Map<string, string[]> {
  const maxPages = opts.maxPages ?? DEFAULT_MAX_PAGES
  const parsed: Array<[string, Pagemap]> = []
  let total = 0
  for (const [name, bytes] of pagemaps) {
    if (!isPagemapFile(name)) throw new Error(`${JSON.stringify(name)} is not a pagemap image name`)
    let pm: Pagemap
    try {
      pm = parsePagemap(bytes)
    } catch (err) {
      throw new Error(`${name}: ${(err as Error).message}`, { cause: err })
    }
    total += presentPages(pm)
    if (total > maxPages) throw new Error(`pagemaps describe more than ${maxPages} pages`)
    parsed.push([name, pm])
  }
  const layout = new Map<string, string[]>()
  for (const [pages, [name, pm]] of pagesFilesOf(parsed)) layout.set(pages, pageKeys(name, pm))
  return layout
}
