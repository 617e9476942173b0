/**
 * Page-delta codec: the standby rebuilds byte-identical pages files from chunks that
 * carry only the pages that changed, and refuses every inconsistent chunk without
 * leaving a partial file behind.
 */
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import zlib from 'node:zlib'
import {
  IMG_COMMON_MAGIC,
  PAGEMAP_MAGIC,
  PAGE_SIZE,
  PE_PARENT,
  PE_PRESENT,
  isPagemapFile,
  pageLayout,
  pageLayoutFromPagemaps
} from '../../src/replication/criu-images.ts'
import {
  PagesFileWriter,
  PreviousPages,
  encodePages,
  maxChunkWireBytes,
  type ChunkStats
} from '../../src/replication/page-delta.ts'

const dirs: string[] = []
async function tmp (): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-page-delta-'))
  dirs.push(d)
  return d
}
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true })
})

function varint (v: number): number[] {
  const out: number[] = []
  let x = BigInt(v)
  do {
    const b = Number(x & 0x7fn)
    x >>= 7n
    out.push(x > 0n ? b | 0x80 : b)
  } while (x > 0n)
  return out
}

function u32 (v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24]
}

/** A mapping of a synthetic dump: its pages' contents, or a number of pages left in the parent. */
interface Mapping {
  vaddr: number
  pages: Uint8Array[] | number
}
interface Image {
  name: string
  pagesId: number
  maps: Mapping[]
}

function pagemapBytes (img: Image): Uint8Array {
  const msgs: number[][] = [[8, ...varint(img.pagesId)]]
  for (const m of img.maps) {
    const n = typeof m.pages === 'number' ? m.pages : m.pages.length
    const flags = typeof m.pages === 'number' ? PE_PARENT : PE_PRESENT
    msgs.push([8, ...varint(m.vaddr), 16, 0, 32, ...varint(flags), 40, ...varint(n)])
  }
  const out = [...u32(IMG_COMMON_MAGIC), ...u32(PAGEMAP_MAGIC)]
  for (const m of msgs) out.push(...u32(m.length), ...m)
  return new Uint8Array(out)
}

/** Writes the pagemaps and pages files of a dump into a new directory. */
async function writeDump (images: Image[]): Promise<string> {
  const d = await tmp()
  for (const img of images) {
    await fs.writeFile(path.join(d, img.name), pagemapBytes(img))
    const pages = img.maps.flatMap(m => typeof m.pages === 'number' ? [] : m.pages)
    await fs.writeFile(path.join(d, `pages-${img.pagesId}.img`), Buffer.concat(pages))
  }
  return d
}

function randomPages (n: number): Uint8Array[] {
  return Array.from({ length: n }, () => new Uint8Array(crypto.randomBytes(PAGE_SIZE)))
}

function changed (page: Uint8Array): Uint8Array {
  const p = new Uint8Array(page)
  p[100] = (p[100] as number) ^ 0xff
  return p
}

function sha256 (b: Uint8Array): string {
  return crypto.createHash('sha256').update(b).digest('hex')
}

interface Received {
  stats: ChunkStats[]
  sha256: string
  pages: number
}

/**
 * One generation sent and received: the standby first takes the pagemaps (copied into
 * its generation directory), then each pages file from the encoder's chunks.
 */
async function replicate (senderDir: string, acked: Map<string, string> | null, prevDir: string | null, chunkPages: number): Promise<{ recvDir: string; hashes: Map<string, string>; received: Map<string, Received> }> {
  const recvDir = await tmp()
  const pagemaps = new Map<string, Uint8Array>()
  for (const n of (await fs.readdir(senderDir)).filter(isPagemapFile)) {
    const b = await fs.readFile(path.join(senderDir, n))
    pagemaps.set(n, b)
    await fs.writeFile(path.join(recvDir, n), b)
  }
  const recvLayout = pageLayoutFromPagemaps(pagemaps)
  const prev = prevDir === null ? null : await PreviousPages.open(prevDir)
  const hashes = new Map<string, string>()
  const received = new Map<string, Received>()
  try {
    for (const [pagesName, keys] of await pageLayout(senderDir)) {
      assert.deepEqual(recvLayout.get(pagesName), keys, 'both sides agree on the layout')
      const w = new PagesFileWriter(path.join(recvDir, pagesName), keys, prev)
      const stats: ChunkStats[] = []
      let senderDigest = ''
      const onFileDigest = (d: string): void => {
        senderDigest = d
      }
      for await (const chunk of encodePages(path.join(senderDir, pagesName), keys, acked, hashes, { chunkPages, onFileDigest })) {
        assert.ok(chunk.length <= maxChunkWireBytes(chunkPages))
        stats.push(await w.write(chunk))
      }
      const done = await w.finish()
      assert.equal(done.sha256, senderDigest, "the sender's digest is what the receiver wrote")
      received.set(pagesName, { stats, ...done })
    }
  } finally {
    await prev?.close()
  }
  return { recvDir, hashes, received }
}

function totals (r: Map<string, Received>): { pages: number; same: number; literal: number } {
  const all = [...r.values()].flatMap(x => x.stats)
  return {
    pages: all.reduce((s, x) => s + x.pages, 0),
    same: all.reduce((s, x) => s + x.samePages, 0),
    literal: all.reduce((s, x) => s + x.literalPages, 0)
  }
}

async function assertSameFiles (a: string, b: string, names: string[]): Promise<void> {
  for (const n of names) {
    const x = await fs.readFile(path.join(a, n))
    const y = await fs.readFile(path.join(b, n))
    assert.ok(x.equals(y), `${n} differs`)
  }
}

describe('encodePages + PagesFileWriter round trip', () => {
  const heapA = randomPages(4)
  const stackB = randomPages(9)
  const moved = randomPages(3)
  const shmem = randomPages(3)
  const gen1: Image[] = [
    {
      name: 'pagemap-1.img',
      pagesId: 1,
      maps: [
        { vaddr: 0x400000, pages: heapA },
        { vaddr: 0x600000, pages: 2 },
        { vaddr: 0x7f0000000000, pages: moved },
        { vaddr: 0x7ffd00000000, pages: stackB }
      ]
    },
    { name: 'pagemap-shmem-77.img', pagesId: 2, maps: [{ vaddr: 0, pages: shmem }] }
  ]
  // Generation 2: the heap grew by 2 pages and one of its pages changed, the mapping at
  // 0x7f0000000000 moved (same bytes, new addresses), two stack pages changed, the
  // shared memory did not change at all.
  const heapA2 = [heapA[0], changed(heapA[1] as Uint8Array), heapA[2], heapA[3], ...randomPages(2)] as Uint8Array[]
  const stackB2 = stackB.map((p, i) => i === 0 || i === 7 ? changed(p) : p)
  const gen2: Image[] = [
    {
      name: 'pagemap-1.img',
      pagesId: 1,
      maps: [
        { vaddr: 0x400000, pages: heapA2 },
        { vaddr: 0x600000, pages: 2 },
        { vaddr: 0x7f0000100000, pages: moved },
        { vaddr: 0x7ffd00000000, pages: stackB2 }
      ]
    },
    { name: 'pagemap-shmem-77.img', pagesId: 2, maps: [{ vaddr: 0, pages: shmem }] }
  ]
  const files = ['pages-1.img', 'pages-2.img']

  for (const chunkPages of [256, 4, 1]) {
    test(`generation 1 all literal, generation 2 only the changed pages (chunks of ${chunkPages})`, async () => {
      const send1 = await writeDump(gen1)
      const r1 = await replicate(send1, null, null, chunkPages)
      await assertSameFiles(send1, r1.recvDir, files)
      assert.deepEqual(totals(r1.received), { pages: 19, same: 0, literal: 19 })
      assert.equal(r1.hashes.size, 19)
      for (const f of files) {
        assert.equal(r1.received.get(f)?.sha256, sha256(await fs.readFile(path.join(send1, f))))
      }

      const send2 = await writeDump(gen2)
      const r2 = await replicate(send2, r1.hashes, r1.recvDir, chunkPages)
      await assertSameFiles(send2, r2.recvDir, files)
      // Literal: 1 changed + 2 new heap pages, 3 moved pages, 2 changed stack pages.
      assert.deepEqual(totals(r2.received), { pages: 21, same: 13, literal: 8 })
      assert.equal(r2.received.get('pages-2.img')?.stats.every(s => s.literalPages === 0), true)
      for (const f of files) {
        const r = r2.received.get(f)
        assert.equal(r?.sha256, sha256(await fs.readFile(path.join(send2, f))))
        assert.equal(r?.pages, (await fs.stat(path.join(send2, f))).size / PAGE_SIZE)
      }
      const wire = [...r2.received.values()].flatMap(x => x.stats).reduce((s, x) => s + x.wireBytes, 0)
      assert.ok(wire < 9 * PAGE_SIZE + 1000, `generation 2 took ${wire} bytes on the wire`)
      assert.equal((await fs.stat(path.join(r2.recvDir, 'pages-1.img'))).mode & 0o777, 0o600)
    })
  }

  test('identical generations cost a few bytes per chunk; an empty pages file round-trips', async () => {
    const send1 = await writeDump(gen1)
    const r1 = await replicate(send1, null, null, 256)
    const r2 = await replicate(send1, r1.hashes, r1.recvDir, 256)
    assert.deepEqual(totals(r2.received), { pages: 19, same: 19, literal: 0 })
    assert.deepEqual([...r2.received.values()].map(x => x.stats.map(s => s.wireBytes)), [[12], [12]])
    await assertSameFiles(send1, r2.recvDir, files)

    const empty = await writeDump([{ name: 'pagemap-9.img', pagesId: 9, maps: [{ vaddr: 0x1000, pages: 4 }] }])
    const r3 = await replicate(empty, null, null, 256)
    assert.equal(r3.received.get('pages-9.img')?.sha256, sha256(new Uint8Array(0)))
    assert.equal((await fs.stat(path.join(r3.recvDir, 'pages-9.img'))).size, 0)
  })

  test('a stale ack (page changed since) is sent literal: only equal hashes count as same', async () => {
    const send1 = await writeDump(gen1)
    const r1 = await replicate(send1, null, null, 256)
    const acked = new Map([...r1.hashes].map(([k, h]) => [k, k.endsWith(':400000') ? 'stale' : h]))
    const r2 = await replicate(send1, acked, r1.recvDir, 256)
    assert.deepEqual(totals(r2.received), { pages: 19, same: 18, literal: 1 })
    await assertSameFiles(send1, r2.recvDir, files)
  })

  test('PreviousPages reads a page by key, false for an unknown key', async () => {
    const send1 = await writeDump(gen1)
    const prev = await PreviousPages.open(send1)
    try {
      const buf = new Uint8Array(PAGE_SIZE)
      assert.equal(await prev.read('pagemap-1.img:7ffd00003000', buf), true)
      assert.deepEqual(buf, stackB[3])
      assert.equal(await prev.read('pagemap-shmem-77.img:2000', buf), true)
      assert.deepEqual(buf, shmem[2])
      assert.equal(await prev.read('pagemap-1.img:600000', buf), false, 'a parent-only page is not in this generation')
      assert.equal(await prev.read('pagemap-2.img:400000', buf), false)
    } finally {
      await prev.close()
    }
  })

  test('chunks of the maximum 4096 pages (16 MiB) round-trip', async () => {
    const pages = Array.from({ length: 4100 }, (_, i) => i % 97 === 0 ? new Uint8Array(crypto.randomBytes(PAGE_SIZE)) : new Uint8Array(PAGE_SIZE).fill(i & 0xff))
    const send = await writeDump([{ name: 'pagemap-3.img', pagesId: 3, maps: [{ vaddr: 0x10000000, pages }] }])
    const r = await replicate(send, null, null, 4096)
    assert.deepEqual(r.received.get('pages-3.img')?.stats.map(s => s.pages), [4096, 4])
    await assertSameFiles(send, r.recvDir, ['pages-3.img'])
  })

  test('a consumer that stops early leaves no file descriptor open', async () => {
    const send1 = await writeDump(gen1)
    const keys = (await pageLayout(send1)).get('pages-1.img') as string[]
    const fds = async (): Promise<number> => (await fs.readdir('/proc/self/fd')).length
    const before = await fds()
    const hashes = new Map<string, string>()
    for await (const c of encodePages(path.join(send1, 'pages-1.img'), keys, null, hashes, { chunkPages: 2 })) {
      assert.deepEqual([...c.subarray(0, 12)], [2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
      break
    }
    assert.equal(await fds(), before)
    assert.ok(hashes.size >= 2 && hashes.size <= 6, 'pages are hashed at most two chunks ahead')
  })

  test('the encoder refuses a pages file whose size does not match its keys, and a bad chunk size', async () => {
    const send1 = await writeDump(gen1)
    const keys = (await pageLayout(send1)).get('pages-1.img') as string[]
    const drain = async (it: AsyncGenerator<Uint8Array>): Promise<number> => {
      let n = 0
      for await (const c of it) n += c.length
      return n
    }
    await assert.rejects(drain(encodePages(path.join(send1, 'pages-1.img'), keys.slice(1), null, new Map())), /65536 bytes, but 15 pages expected/)
    await assert.rejects(drain(encodePages(path.join(send1, 'pages-1.img'), keys, null, new Map(), { chunkPages: 4097 })), /chunkPages/)
  })
})

/** Builds a chunk by hand: literal page bytes compressed, or `z` as given. */
function chunk (pageCount: number, runs: number[], literal: Uint8Array[] | Uint8Array = []): Uint8Array {
  const z = literal instanceof Uint8Array ? literal : (literal.length === 0 ? new Uint8Array(0) : zlib.zstdCompressSync(Buffer.concat(literal)))
  return new Uint8Array([...u32(pageCount), ...u32(runs.length), ...runs.flatMap(u32), ...z])
}

describe('PagesFileWriter refuses hostile chunks', () => {
  // The previous generation has the 8 pages at 0x1000..0x8000; the new one expects 10
  // pages, the last two of which are new.
  async function setup (): Promise<{ prevDir: string; out: string; keys: string[]; prev: PreviousPages }> {
    const prevDir = await writeDump([{ name: 'pagemap-1.img', pagesId: 1, maps: [{ vaddr: 0x1000, pages: randomPages(8) }] }])
    const keys = Array.from({ length: 10 }, (_, i) => `pagemap-1.img:${(0x1000 * (i + 1)).toString(16)}`)
    return { prevDir, out: path.join(await tmp(), 'pages-1.img'), keys, prev: await PreviousPages.open(prevDir) }
  }

  const cases: Array<[string, () => Uint8Array, RegExp]> = [
    ['more pages than remain', () => chunk(10, [0, 10], randomPages(10)), /chunk of 10 pages, only 9 remain/],
    ['runs not summing to the page count (short)', () => chunk(4, [1, 2], randomPages(2)), /runs sum to 3, chunk has 4/],
    ['runs not summing to the page count (long)', () => chunk(2, [1, 2], randomPages(2)), /runs sum past/],
    ['an empty run other than the first', () => chunk(4, [0, 2, 0, 2], randomPages(4)), /run #2 is empty/],
    ['a same page the previous generation lacks', () => chunk(8, [8]), /page pagemap-1\.img:9000 sent as same, but the previous generation does not have it/],
    ['too few literal bytes', () => chunk(3, [1, 2], randomPages(1)), /decompress to 4096 bytes, expected 8192/],
    ['too many literal bytes', () => chunk(3, [1, 2], randomPages(3)), /do not decompress to 8192 bytes/],
    ['literal bytes that are not zstd', () => chunk(1, [0, 1], new Uint8Array([1, 2, 3, 4, 5])), /do not decompress/],
    ['literal bytes missing', () => chunk(1, [0, 1], new Uint8Array(0)), /do not decompress|decompress to 0 bytes/],
    ['a zstd frame declaring a 128 MiB window', () => chunk(1, [0, 1], new Uint8Array([...Buffer.from('28b52ffd0088018000', 'hex'), ...new Uint8Array(PAGE_SIZE)])), /too much memory/],
    ['zstd data with no literal page', () => chunk(1, [1], randomPages(1)), /zstd data in a chunk without literal pages/],
    ['more runs than pages + 1', () => chunk(2, [0, 1, 0, 1], randomPages(2)), /4 runs for 2 pages/],
    ['a page count of 0', () => chunk(0, [0]), /page count 0 not in 1\.\.4096/],
    ['a page count over 4096', () => chunk(4097, [4097]), /page count 4097/],
    ['no header', () => new Uint8Array([1, 0, 0]), /no header/],
    ['run lengths cut short', () => new Uint8Array([...u32(2), ...u32(2), ...u32(1)]), /truncated in its run lengths/],
    ['a huge run count', () => new Uint8Array([...u32(4), ...u32(0xffffffff)]), /4294967295 runs for 4 pages/]
  ]
  for (const [name, make, re] of cases) {
    test(`${name}: throws, and abort() leaves no file`, async () => {
      const { out, keys, prev } = await setup()
      try {
        const w = new PagesFileWriter(out, keys, prev)
        // One good chunk first, so there is a partial file to clean up.
        assert.deepEqual(await w.write(chunk(1, [1])), { pages: 1, samePages: 1, literalPages: 0, wireBytes: 12 })
        await assert.rejects(w.write(make()), re)
        await assert.rejects(w.write(chunk(1, [1])), /writer is failed/, 'no chunk is taken after a refusal')
        await w.abort()
        await assert.rejects(fs.stat(out), { code: 'ENOENT' })
      } finally {
        await prev.close()
      }
    })
  }

  test('without a previous generation every page must be literal; the error names the key', async () => {
    const out = path.join(await tmp(), 'pages-1.img')
    const keys = ['pagemap-1.img:1000', 'pagemap-1.img:2000']
    const w = new PagesFileWriter(out, keys, null)
    await assert.rejects(w.write(chunk(2, [0, 1, 1], randomPages(1))), /page pagemap-1\.img:2000 sent as same, but there is no previous generation/)
    await w.abort()
    await assert.rejects(fs.stat(out), { code: 'ENOENT' })
  })

  test('finish throws when pages are missing, and the partial file can be aborted', async () => {
    const { out, keys, prev } = await setup()
    try {
      const w = new PagesFileWriter(out, keys, prev)
      await w.write(chunk(8, [0, 3, 5], randomPages(3)))
      await assert.rejects(w.finish(), /8 of 10 pages arrived/)
      await w.abort()
      await assert.rejects(fs.stat(out), { code: 'ENOENT' })
    } finally {
      await prev.close()
    }
  })

  test('never writes through an existing path or symlink, and abort leaves it alone', async () => {
    const d = await tmp()
    const target = path.join(d, 'victim')
    await fs.writeFile(target, 'keep')
    const out = path.join(d, 'pages-1.img')
    await fs.symlink(target, out)
    const w = new PagesFileWriter(out, ['pagemap-1.img:1000'], null)
    await assert.rejects(w.write(chunk(1, [0, 1], randomPages(1))), { code: 'EEXIST' })
    await w.abort()
    assert.equal(await fs.readFile(target, 'utf8'), 'keep')
    assert.equal((await fs.lstat(out)).isSymbolicLink(), true)
  })

  test('a mixed chunk is rebuilt from the previous generation and the literal pages', async () => {
    const { prevDir, out, keys, prev } = await setup()
    try {
      const old = await fs.readFile(path.join(prevDir, 'pages-1.img'))
      const lit = randomPages(4)
      const w = new PagesFileWriter(out, keys, prev)
      const first = chunk(6, [2, 1, 3], [lit[0] as Uint8Array])
      assert.deepEqual(await w.write(first), { pages: 6, samePages: 5, literalPages: 1, wireBytes: first.length })
      await w.write(chunk(4, [0, 1, 1, 2], lit.slice(1)))
      const { pages, sha256: digest } = await w.finish()
      const expected = Buffer.concat([
        old.subarray(0, 2 * PAGE_SIZE),
        lit[0] as Uint8Array,
        old.subarray(3 * PAGE_SIZE, 6 * PAGE_SIZE),
        lit[1] as Uint8Array,
        old.subarray(7 * PAGE_SIZE, 8 * PAGE_SIZE),
        lit[2] as Uint8Array,
        lit[3] as Uint8Array
      ])
      const got = await fs.readFile(out)
      assert.equal(pages, 10)
      assert.ok(got.equals(expected))
      assert.equal(digest, sha256(expected))
      await assert.rejects(w.write(chunk(1, [1])), /writer is finished/)
    } finally {
      await prev.close()
    }
  })
})
