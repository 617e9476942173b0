/**
 * Pagemap parsing and page layout: synthetic CRIU images built here with a tiny
 * protobuf encoder; malformed images (they come from another node) must throw, never
 * read out of range.
 */
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {
  IMG_COMMON_MAGIC,
  IMG_SERVICE_MAGIC,
  PAGEMAP_MAGIC,
  PAGE_SIZE,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  isPagemapFile,
  isPagesFile,
  pageLayout,
  pageLayoutFromPagemaps,
  parsePagemap
} from '../../src/replication/criu-images.ts'

function varint (v: number | bigint): number[] {
  let x = BigInt(v)
  const out: number[] = []
  do {
    const b = Number(x & 0x7fn)
    x >>= 7n
    out.push(x > 0n ? b | 0x80 : b)
  } while (x > 0n)
  return out
}

function field (no: number, v: number | bigint): number[] {
  return [...varint(no << 3), ...varint(v)]
}

function u32 (v: number): number[] {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, v, true)
  return [...b]
}

interface Pe {
  vaddr: number
  nrPages: number
  flags?: number
  inParent?: boolean
  compat?: boolean
}

/** A pagemap image as CRIU writes it (nr_pages in field 5, compat_nr_pages 0), or old-style with `compat`. */
function pagemapImage (pagesId: number, entries: Pe[], head = IMG_COMMON_MAGIC): Uint8Array {
  const msgs: number[][] = [field(1, pagesId)]
  for (const e of entries) {
    const m = [...field(1, e.vaddr)]
    if (e.compat === true) {
      m.push(...field(2, e.nrPages))
    } else {
      m.push(...field(2, 0), ...field(5, e.nrPages))
    }
    if (e.inParent !== undefined) m.push(...field(3, e.inParent ? 1 : 0))
    if (e.flags !== undefined) m.push(...field(4, e.flags))
    msgs.push(m)
  }
  return raw([...u32(head), ...u32(PAGEMAP_MAGIC)], msgs)
}

function raw (prefix: number[], msgs: number[][]): Uint8Array {
  const out = [...prefix]
  for (const m of msgs) out.push(...u32(m.length), ...m)
  return new Uint8Array(out)
}

const MAGICS = [...u32(IMG_COMMON_MAGIC), ...u32(PAGEMAP_MAGIC)]

const dirs: string[] = []
async function tmp (): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-criu-images-'))
  dirs.push(d)
  return d
}
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true })
})

describe('parsePagemap', () => {
  test('reads head and entries, with CRIU 4.x nr_pages and flags', () => {
    const pm = parsePagemap(pagemapImage(7, [
      { vaddr: 0x400000, nrPages: 2, flags: PE_PRESENT },
      { vaddr: 0x7f12a3c45000, nrPages: 3, flags: PE_LAZY | PE_PRESENT },
      { vaddr: 0x7ffd0000_0000, nrPages: 1, flags: PE_PARENT }
    ]))
    assert.equal(pm.pagesId, 7)
    assert.deepEqual(pm.entries, [
      { vaddr: 0x400000, nrPages: 2, flags: PE_PRESENT },
      { vaddr: 0x7f12a3c45000, nrPages: 3, flags: PE_LAZY | PE_PRESENT },
      { vaddr: 0x7ffd0000_0000, nrPages: 1, flags: PE_PARENT }
    ])
  })

  test('normalizes old images like CRIU: no flags is present, in_parent is PE_PARENT', () => {
    const pm = parsePagemap(pagemapImage(1, [
      { vaddr: 0x1000, nrPages: 4, compat: true },
      { vaddr: 0x10000, nrPages: 2, compat: true, inParent: true },
      { vaddr: 0x20000, nrPages: 1, compat: true, inParent: false }
    ]))
    assert.deepEqual(pm.entries.map(e => [e.nrPages, e.flags]), [[4, PE_PRESENT], [2, PE_PARENT], [1, PE_PRESENT]])
  })

  test('accepts the service head magic, an empty pagemap, and skips unknown fields of every wire type', () => {
    assert.deepEqual(parsePagemap(pagemapImage(3, [], IMG_SERVICE_MAGIC)), { pagesId: 3, entries: [] })
    const entry = [
      ...field(1, 0x5000),
      ...varint((9 << 3) | 2),
      3,
      0xff,
      0xff,
      0xff, // length-delimited
      ...varint((10 << 3) | 5),
      1,
      2,
      3,
      4, // 32-bit
      ...varint((11 << 3) | 1),
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8, // 64-bit
      ...field(12, 2n ** 63n), // varint
      ...field(2, 0),
      ...field(5, 2),
      ...field(4, PE_PRESENT)
    ]
    const pm = parsePagemap(raw(MAGICS, [field(1, 9), entry]))
    assert.deepEqual(pm.entries, [{ vaddr: 0x5000, nrPages: 2, flags: PE_PRESENT }])
  })

  test('parses a pagemap written by CRIU 4.2.1 (lazy anonymous pages are present too)', () => {
    // pagemap-1.img of a dump of a small program; its pages-1.img had 73728 bytes = 18 pages.
    const hex = '19435654254008560200000008010b0000000880a080021000200428010b000000088080f8021000200428050b00000008' +
      '80a0f9021000200628010b0000000880a0fa021000200628030c0000000880e0f1b7011000200628040e000000088080eb8ce1f61f' +
      '1000200428020e0000000880a0d5a3eeff1f100020062802'
    const pm = parsePagemap(Buffer.from(hex, 'hex'))
    assert.equal(pm.pagesId, 1)
    assert.deepEqual(pm.entries.map(e => [e.vaddr.toString(16), e.nrPages, e.flags]), [
      ['401000', 1, PE_PRESENT],
      ['5e0000', 5, PE_PRESENT],
      ['5e5000', 1, PE_LAZY | PE_PRESENT],
      ['5e9000', 3, PE_LAZY | PE_PRESENT],
      ['16fc7000', 4, PE_LAZY | PE_PRESENT],
      ['7fb6119ac000', 2, PE_PRESENT],
      ['7ffee4755000', 2, PE_LAZY | PE_PRESENT]
    ])
    const layout = pageLayoutFromPagemaps(new Map([['pagemap-1.img', Buffer.from(hex, 'hex')]]))
    assert.equal(layout.get('pages-1.img')?.length, 18)
  })

  test('keeps 48-bit addresses exact', () => {
    const pm = parsePagemap(pagemapImage(1, [{ vaddr: 0xffff_ffff_f000, nrPages: 1, flags: PE_PRESENT }]))
    assert.equal(pm.entries[0]?.vaddr, 0xffff_ffff_f000)
  })

  const bad: Array<[string, Uint8Array, RegExp]> = [
    ['too short for the magics', new Uint8Array([0x19, 0x43, 0x56]), /too short/],
    ['a bad head magic', new Uint8Array([...u32(0x12345678), ...u32(PAGEMAP_MAGIC)]), /head magic/],
    ["another image's magic", new Uint8Array([...u32(IMG_COMMON_MAGIC), ...u32(0x55105940)]), /not a pagemap/],
    ['no head', new Uint8Array(MAGICS), /no pagemap_head/],
    ['a truncated entry length', new Uint8Array([...pagemapImage(1, []), 4, 0]), /truncated/],
    ['an entry length past the end', new Uint8Array([...pagemapImage(1, []), ...u32(100), 8, 1]), /truncated: entry of 100 bytes/],
    ['a 4 GiB entry length', new Uint8Array([...pagemapImage(1, []), ...u32(0xffffffff)]), /truncated/],
    ['a varint of 11 bytes', raw(MAGICS, [[8, ...new Array(10).fill(0xff), 1]]), /varint/],
    ['a varint overflowing 64 bits', raw(MAGICS, [[8, ...new Array(9).fill(0xff), 0x02]]), /overflows/],
    ['a varint cut by the entry end', raw(MAGICS, [[8, 0x80, 0x80]]), /truncated varint/],
    ['a head without pages_id', raw(MAGICS, [[]]), /pages_id missing/],
    ['a pages_id beyond 32 bits', raw(MAGICS, [field(1, 2 ** 32)]), /32 bits/],
    ['an entry without vaddr', raw(MAGICS, [field(1, 1), field(2, 1)]), /vaddr missing/],
    ['an entry without nr_pages', raw(MAGICS, [field(1, 1), field(1, 0x1000)]), /compat_nr_pages missing/],
    ['an empty entry', raw(MAGICS, [field(1, 1), []]), /missing/],
    ['a length-delimited field past the end', raw(MAGICS, [field(1, 1), [...field(1, 0x1000), (9 << 3) | 2, 50, 1]]), /past the end/],
    ['a 32-bit field past the end', raw(MAGICS, [field(1, 1), [...field(1, 0x1000), (9 << 3) | 5, 1]]), /past the end/],
    ['a group wire type', raw(MAGICS, [field(1, 1), [...field(1, 0x1000), (9 << 3) | 3]]), /wire type 3/],
    ['field number 0', raw(MAGICS, [field(1, 1), [0, 1]]), /field number/],
    ['vaddr with the wrong wire type', raw(MAGICS, [field(1, 1), [(1 << 3) | 2, 0]]), /wire type 2/],
    ['an unaligned vaddr', pagemapImage(1, [{ vaddr: 0x1001, nrPages: 1 }]), /page-aligned/],
    ['a range past 2^53', pagemapImage(1, [{ vaddr: 0x1000, nrPages: 2 ** 42 }]), /beyond/],
    ['a huge nr_pages', raw(MAGICS, [field(1, 1), [...field(1, 0), ...field(2, 0), ...field(5, 2n ** 64n - 1n)]]), /beyond/],
    ['overlapping entries', pagemapImage(1, [{ vaddr: 0x4000, nrPages: 1 }, { vaddr: 0x1000, nrPages: 4 }]), /overlap at 0x4000/]
  ]
  for (const [name, buf, re] of bad) {
    test(`throws on ${name}`, () => {
      assert.throws(() => parsePagemap(buf), re)
    })
  }

  test('every truncation of a valid image throws or parses a prefix, never reads out of range', () => {
    const img = pagemapImage(5, [
      { vaddr: 0x400000, nrPages: 2, flags: PE_PRESENT },
      { vaddr: 0x7f0000000000, nrPages: 300, flags: PE_LAZY | PE_PRESENT }
    ])
    for (let n = 0; n < img.length; n++) {
      try {
        const pm = parsePagemap(img.subarray(0, n))
        assert.ok(pm.entries.length < 2, `a truncation at ${n} parsed all entries`)
      } catch (err) {
        assert.ok(err instanceof Error && err.message.length > 0)
      }
    }
  })
})

describe('file names', () => {
  test('pagemap and pages images are told apart', () => {
    for (const n of ['pagemap-1.img', 'pagemap-shmem-123456.img', 'pagemap-0.img']) assert.ok(isPagemapFile(n), n)
    for (const n of ['pagemap-.img', 'pagemap-1.img.tmp', 'pagemap-x.img', 'pages-1.img', '../pagemap-1.img', 'pagemap-01.img']) {
      assert.ok(!isPagemapFile(n), n)
    }
    for (const n of ['pages-1.img', 'pages-4294967295.img']) assert.ok(isPagesFile(n), n)
    for (const n of ['pages-.img', 'pages-shmem-1.img', 'pagemap-1.img', 'pages-1.img/x', 'pages-01.img']) assert.ok(!isPagesFile(n), n)
  })
})

function pageBytes (tag: number): Uint8Array {
  return new Uint8Array(PAGE_SIZE).fill(tag)
}

describe('pageLayout', () => {
  async function dumpDir (): Promise<string> {
    const d = await tmp()
    await fs.writeFile(path.join(d, 'pagemap-1.img'), pagemapImage(1, [
      { vaddr: 0x400000, nrPages: 2, flags: PE_PRESENT },
      { vaddr: 0x600000, nrPages: 3, flags: PE_PARENT },
      { vaddr: 0x700000, nrPages: 2, flags: PE_LAZY },
      { vaddr: 0x7f12a3c45000, nrPages: 1, flags: PE_LAZY | PE_PRESENT }
    ]))
    await fs.writeFile(path.join(d, 'pagemap-shmem-77.img'), pagemapImage(2, [
      { vaddr: 0, nrPages: 1, compat: true },
      { vaddr: 0x3000, nrPages: 2, compat: true, inParent: true }
    ]))
    await fs.writeFile(path.join(d, 'pages-1.img'), Buffer.concat([pageBytes(1), pageBytes(2), pageBytes(3)]))
    await fs.writeFile(path.join(d, 'pages-2.img'), pageBytes(9))
    await fs.writeFile(path.join(d, 'core-1.img'), 'not ours')
    return d
  }

  test('lists the keys of each pages file in file order, without parent-only or lazy-only pages', async () => {
    const d = await dumpDir()
    const layout = await pageLayout(d)
    assert.deepEqual([...layout.keys()].sort(), ['pages-1.img', 'pages-2.img'])
    assert.deepEqual(layout.get('pages-1.img'), ['pagemap-1.img:400000', 'pagemap-1.img:401000', 'pagemap-1.img:7f12a3c45000'])
    assert.deepEqual(layout.get('pages-2.img'), ['pagemap-shmem-77.img:0'])
  })

  test('the in-memory form gives the same layout', async () => {
    const d = await dumpDir()
    const pagemaps = new Map<string, Uint8Array>()
    for (const n of ['pagemap-1.img', 'pagemap-shmem-77.img']) pagemaps.set(n, await fs.readFile(path.join(d, n)))
    assert.deepEqual(pageLayoutFromPagemaps(pagemaps), await pageLayout(d))
  })

  test('a pages file of the wrong size throws', async () => {
    const d = await dumpDir()
    await fs.appendFile(path.join(d, 'pages-1.img'), new Uint8Array(100))
    await assert.rejects(pageLayout(d), /pages-1\.img has 12388 bytes, pagemap-1\.img says 3 pages/)
    await fs.writeFile(path.join(d, 'pages-1.img'), pageBytes(1))
    await assert.rejects(pageLayout(d), /pages-1\.img has 4096 bytes/)
  })

  test('a missing pages file, a shared one, an unnamed one and a bad pagemap throw', async () => {
    let d = await dumpDir()
    await fs.rm(path.join(d, 'pages-2.img'))
    await assert.rejects(pageLayout(d), /pagemap-shmem-77\.img names pages-2\.img/)

    d = await dumpDir()
    await fs.writeFile(path.join(d, 'pagemap-5.img'), pagemapImage(1, []))
    await assert.rejects(pageLayout(d), /both name pages-1\.img/)

    d = await dumpDir()
    await fs.writeFile(path.join(d, 'pages-3.img'), pageBytes(0))
    await assert.rejects(pageLayout(d), /pages-3\.img is not named by any pagemap/)

    d = await dumpDir()
    await fs.writeFile(path.join(d, 'pagemap-1.img'), new Uint8Array([...pagemapImage(1, []), 1]))
    await assert.rejects(pageLayout(d), /^Error: pagemap-1\.img: pagemap image truncated/)
  })

  test('in memory: refuses names that are not pagemaps, and more pages than allowed before building keys', () => {
    assert.throws(() => pageLayoutFromPagemaps(new Map([['../pagemap-1.img', pagemapImage(1, [])]])), /not a pagemap image name/)
    const huge = pagemapImage(1, [{ vaddr: 0, nrPages: 2 ** 40, flags: PE_PRESENT }])
    assert.throws(() => pageLayoutFromPagemaps(new Map([['pagemap-1.img', huge]])), /more than 4194304 pages/)
    const two = new Map([
      ['pagemap-1.img', pagemapImage(1, [{ vaddr: 0, nrPages: 3 }])],
      ['pagemap-2.img', pagemapImage(2, [{ vaddr: 0, nrPages: 3 }])]
    ])
    assert.throws(() => pageLayoutFromPagemaps(two, { maxPages: 5 }), /more than 5 pages/)
    assert.equal(pageLayoutFromPagemaps(two, { maxPages: 6 }).size, 2)
  })
})
