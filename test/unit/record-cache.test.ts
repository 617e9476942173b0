/**
 * The container record cache: whatever path writes a record (an atomic replace, a
 * directory moved into place, a removal, a record written into a directory listed
 * before it had one), the next read and the next listing say what is on disk now; and
 * each reader gets its own copy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { RecordCache } from '../../src/node/record-cache.ts'

interface Rec {
  name: string
  n: number
}

async function setup (): Promise<{ dir: string; cache: RecordCache<Rec>; write: (name: string, n: number) => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-record-cache-'))
  const cache = new RecordCache<Rec>(dir, 'container.json', (e) => /^[a-z][a-z0-9-]*$/.test(e))
  // As the node writes them: a temporary file renamed over the record.
  const write = async (name: string, n: number): Promise<void> => {
    await fs.mkdir(path.join(dir, name), { recursive: true })
    const tmp = path.join(dir, name, `.container.json.${n}.tmp`)
    await fs.writeFile(tmp, JSON.stringify({ name, n }))
    await fs.rename(tmp, path.join(dir, name, 'container.json'))
  }
  return { dir, cache, write }
}

test('an atomic replace, even of the same size within one clock tick, is read at once', async () => {
  const { dir, cache, write } = await setup()
  try {
    await write('web', 1)
    assert.deepEqual(await cache.read('web'), { name: 'web', n: 1 })
    for (let n = 2; n <= 9; n++) {
      await write('web', n)
      assert.deepEqual(await cache.read('web'), { name: 'web', n }, `version ${n}`)
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
})

test('each reader gets its own copy', async () => {
  const { dir, cache, write } = await setup()
  try {
    await write('web', 1)
    const a = (await cache.read('web'))!
    a.n = 42
    assert.equal((await cache.read('web'))!.n, 1)
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
})

test('the listing follows directories created, removed and moved into place, and records written after the listing', async () => {
  const { dir, cache, write } = await setup()
  try {
    assert.deepEqual(await cache.names(), [])
    await write('b', 1)
    await write('a', 1)
    assert.deepEqual(await cache.names(), ['a', 'b'])
    // A directory listed before its record exists: named once the record is there.
    await fs.mkdir(path.join(dir, 'c'))
    assert.deepEqual(await cache.names(), ['a', 'b'])
    await write('c', 1)
    assert.deepEqual(await cache.names(), ['a', 'b', 'c'])
    // Removed: gone from the listing, and its record reads as null.
    await fs.rm(path.join(dir, 'b'), { recursive: true })
    assert.deepEqual(await cache.names(), ['a', 'c'])
    assert.equal(await cache.read('b'), null)
    // A whole directory moved into place over another name's (as a failover restore does).
    await fs.mkdir(path.join(dir, '.staging'))
    await fs.writeFile(path.join(dir, '.staging', 'container.json'), JSON.stringify({ name: 'a', n: 7 }))
    assert.deepEqual(await cache.read('a'), { name: 'a', n: 1 })
    await fs.rm(path.join(dir, 'a'), { recursive: true })
    await fs.rename(path.join(dir, '.staging'), path.join(dir, 'a'))
    assert.deepEqual(await cache.read('a'), { name: 'a', n: 7 })
    assert.deepEqual(await cache.names(), ['a', 'c'], 'dot entries and other non-names are not listed')
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
})

test('a record that is not JSON reads as null, and reads again once fixed', async () => {
  const { dir, cache, write } = await setup()
  try {
    await fs.mkdir(path.join(dir, 'bad'))
    await fs.writeFile(path.join(dir, 'bad', 'container.json'), '{"name": "bad", ')
    assert.equal(await cache.read('bad'), null)
    await write('bad', 3)
    assert.deepEqual(await cache.read('bad'), { name: 'bad', n: 3 })
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
})

test('the containers directory missing: no names, no records', async () => {
  const cache = new RecordCache<Rec>(path.join(os.tmpdir(), 'msc-record-cache-none', 'x'), 'container.json', () => true)
  assert.deepEqual(await cache.names(), [])
  assert.equal(await cache.read('web'), null)
})
