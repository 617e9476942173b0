/**
 * writeFileAtomic: the target holds the old content or the new, never a mix, and no
 * temp file stays behind, whether the write succeeds or fails.
 */
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { fsyncDir, fsyncTree, renameDurable, writeFileAtomic } from '../../src/util/atomic-file.ts'

const dirs: string[] = []
async function tmp (): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-atomic-'))
  dirs.push(d)
  return d
}
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true })
})

describe('writeFileAtomic', () => {
  test('replaces the content whole, with the mode asked, and leaves no temp file', async () => {
    const d = await tmp()
    const f = path.join(d, 'container.json')
    await fs.writeFile(f, 'x'.repeat(10_000))
    await writeFileAtomic(f, '{"a":1}', { mode: 0o640 })
    assert.equal(await fs.readFile(f, 'utf8'), '{"a":1}', 'a shorter new content is not mixed with the old tail')
    assert.equal((await fs.stat(f)).mode & 0o777, 0o640)
    assert.deepEqual(await fs.readdir(d), ['container.json'])
  })

  test('creates a missing file 0600 by default (whatever the umask) and writes bytes as given', async () => {
    const d = await tmp()
    const f = path.join(d, 'peer.key')
    const old = process.umask(0o000)
    try {
      await writeFileAtomic(f, new Uint8Array([0, 1, 2, 255]))
    } finally {
      process.umask(old)
    }
    assert.deepEqual([...await fs.readFile(f)], [0, 1, 2, 255])
    assert.equal((await fs.stat(f)).mode & 0o777, 0o600)
  })

  test('many concurrent writers of one file: one whole content wins, no temp left', async () => {
    const d = await tmp()
    const f = path.join(d, 'node-id')
    const contents = Array.from({ length: 20 }, (_, i) => `${i}`.repeat(1000 + i))
    await Promise.all(contents.map(async (c) => {
      await writeFileAtomic(f, c)
    }))
    assert.ok(contents.includes(await fs.readFile(f, 'utf8')))
    assert.deepEqual(await fs.readdir(d), ['node-id'])
  })

  test('a path whose parent is a file fails (ENOTDIR) and leaves nothing behind', async () => {
    const d = await tmp()
    await fs.writeFile(path.join(d, 'file'), 'keep')
    await assert.rejects(writeFileAtomic(path.join(d, 'file', 'x.json'), 'new'), { code: 'ENOTDIR' })
    assert.deepEqual(await fs.readdir(d), ['file'])
    assert.equal(await fs.readFile(path.join(d, 'file'), 'utf8'), 'keep')
  })

  test('a failing rename (the target is a directory) keeps the old content and removes the temp', async () => {
    const d = await tmp()
    const target = path.join(d, 'meta.json')
    await fs.mkdir(target)
    await fs.writeFile(path.join(target, 'inside'), 'old')
    await assert.rejects(writeFileAtomic(target, 'new'))
    assert.deepEqual(await fs.readdir(d), ['meta.json'])
    assert.equal(await fs.readFile(path.join(target, 'inside'), 'utf8'), 'old')
  })

  test('a failing write (bad data) keeps the old content and removes the temp', async () => {
    const d = await tmp()
    const f = path.join(d, 'r.json')
    await fs.writeFile(f, 'old')
    await assert.rejects(writeFileAtomic(f, 42 as unknown as string))
    assert.equal(await fs.readFile(f, 'utf8'), 'old')
    assert.deepEqual(await fs.readdir(d), ['r.json'])
  })

  // Root ignores directory permissions, so a full disk and a read-only file system are
  // made for real: a small tmpfs (skipped where mounting is not allowed).
  describe('on a small tmpfs', () => {
    let mnt = ''
    const mounted = async (): Promise<boolean> => {
      if (mnt !== '') return true
      const d = await tmp()
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'msc-atomic-test', d], { stdio: 'ignore' })
      } catch {
        return false
      }
      mnt = d
      return true
    }
    after(() => {
      if (mnt !== '') execFileSync('umount', ['-l', mnt])
    })

    test('disk full (ENOSPC): the old content stays and no temp is left', async (t) => {
      if (!await mounted()) {
        t.skip('cannot mount a tmpfs here')
        return
      }
      const f = path.join(mnt, 'container.json')
      await fs.writeFile(f, 'old')
      await assert.rejects(writeFileAtomic(f, Buffer.alloc(1024 * 1024, 1)), { code: 'ENOSPC' })
      assert.equal(await fs.readFile(f, 'utf8'), 'old')
      assert.deepEqual(await fs.readdir(mnt), ['container.json'])
    })

    test('read-only file system (EROFS): the old content stays and no temp is left', async (t) => {
      if (!await mounted()) {
        t.skip('cannot mount a tmpfs here')
        return
      }
      const f = path.join(mnt, 'ro.json')
      await fs.writeFile(f, 'old')
      execFileSync('mount', ['-o', 'remount,ro', mnt])
      try {
        await assert.rejects(writeFileAtomic(f, 'new'), { code: 'EROFS' })
      } finally {
        execFileSync('mount', ['-o', 'remount,rw', mnt])
      }
      assert.equal(await fs.readFile(f, 'utf8'), 'old')
      assert.ok(!(await fs.readdir(mnt)).some((e) => e.endsWith('.tmp')))
    })
  })
})

describe('renameDurable, fsyncDir, fsyncTree', () => {
  test('renameDurable moves a directory across parents', async () => {
    const d = await tmp()
    await fs.mkdir(path.join(d, 'a', 'images'), { recursive: true })
    await fs.mkdir(path.join(d, 'b'))
    await fs.writeFile(path.join(d, 'a', 'images', 'inventory.img'), 'i')
    await renameDurable(path.join(d, 'a', 'images'), path.join(d, 'b', 'ck'))
    assert.equal(await fs.readFile(path.join(d, 'b', 'ck', 'inventory.img'), 'utf8'), 'i')
    assert.deepEqual(await fs.readdir(path.join(d, 'a')), [])
  })

  test('fsyncDir of a missing dir fails; fsyncTree walks files, dirs and skips symlinks', async () => {
    const d = await tmp()
    await assert.rejects(fsyncDir(path.join(d, 'missing')), { code: 'ENOENT' })
    await fs.mkdir(path.join(d, 'x', 'y'), { recursive: true })
    await fs.writeFile(path.join(d, 'x', 'y', 'f'), 'f')
    await fs.symlink('/nonexistent', path.join(d, 'x', 'dangling'))
    await fsyncTree(d)
  })
})
