/**
 * Streamed pages, the pure parts: the page server's images join the received images
 * only as CRIU names them and never over a file the images tree carried; and a dump
 * whose pages went to the target is never taken for a checkpoint after a crash.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { mergePageImages } from '../../src/node/page-receiver.ts'
import { interruptedDumpProblem } from '../../src/node/container-manager.ts'

let dir: string
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-streamed-pages-'))
})
after(async () => {
  await fs.rm(dir, { recursive: true, force: true })
})

async function layout (name: string, pages: Record<string, string>, images: Record<string, string>): Promise<{ pagesDir: string; imageDir: string }> {
  const pagesDir = path.join(dir, name, 'pages')
  const imageDir = path.join(dir, name, 'images')
  await fs.mkdir(pagesDir, { recursive: true })
  await fs.mkdir(imageDir, { recursive: true })
  for (const [f, v] of Object.entries(pages)) await fs.writeFile(path.join(pagesDir, f), v)
  for (const [f, v] of Object.entries(images)) await fs.writeFile(path.join(imageDir, f), v)
  return { pagesDir, imageDir }
}

describe('merging the page server images', () => {
  test('pagemap and pages move into the images; the log and anything else stay out', async () => {
    const { pagesDir, imageDir } = await layout('ok', { 'pagemap-1.img': 'map', 'pages-65537.img': 'data!', 'page-server.log': 'log', 'other.img': 'x' }, { 'inventory.img': 'inv' })
    assert.equal(await mergePageImages(pagesDir, imageDir), 8)
    assert.deepEqual((await fs.readdir(imageDir)).sort(), ['inventory.img', 'pagemap-1.img', 'pages-65537.img'])
    assert.equal(await fs.readFile(path.join(imageDir, 'pages-65537.img'), 'utf8'), 'data!')
  })

  test('a page image the images tree carried already is refused, not overwritten', async () => {
    const { pagesDir, imageDir } = await layout('clash', { 'pagemap-1.img': 'map', 'pages-2.img': 'true pages' }, { 'pages-2.img': 'from the tree' })
    await assert.rejects(mergePageImages(pagesDir, imageDir), /the images tree carried pages-2\.img/)
    assert.equal(await fs.readFile(path.join(imageDir, 'pages-2.img'), 'utf8'), 'from the tree')
  })

  test('no pagemap: the page server wrote nothing usable', async () => {
    const { pagesDir, imageDir } = await layout('empty', { 'page-server.log': 'log' }, {})
    await assert.rejects(mergePageImages(pagesDir, imageDir), /wrote no pagemap/)
  })

  test('a link in place of a page image is refused', async () => {
    const { pagesDir, imageDir } = await layout('link', { 'pagemap-1.img': 'map' }, {})
    await fs.symlink('/etc/passwd', path.join(pagesDir, 'pages-3.img'))
    await assert.rejects(mergePageImages(pagesDir, imageDir), /not a regular file/)
  })
})

describe('a dump left by a crash', () => {
  const files = ['inventory.img', 'pagemap-1.img', 'core-1.img']
  const ok = '(00.1) Dumping finished successfully\n'
  test('a dump that streamed its pages is no checkpoint', () => {
    assert.match(interruptedDumpProblem(files, `(00.02) Connecting to server 127.0.0.1:4000\n(00.7) page-xfer: Disconnect from the page server\n${ok}`) ?? '', /streamed its memory pages/)
  })
  test('a whole local dump is one', () => {
    assert.equal(interruptedDumpProblem([...files, 'pages-1.img'], ok), null)
  })
})
