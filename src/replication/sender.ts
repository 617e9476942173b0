/**
 * The owner side of /msc/replicate for one generation and one standby: the images
 * of a dump, the small ones whole and zstd-compressed, the memory pages as a delta
 * against what that standby acknowledged last (page-delta.ts). The rootfs travels over
 * /msc/image beside it (replicator.ts decides what).
 */
import fs from 'node:fs/promises'
import crypto from 'node:crypto'
import path from 'node:path'
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import type { FramedStream } from '../protocols/framing.ts'
import { isPagemapFile, isPagesFile, pageLayout } from './criu-images.ts'
import { encodePages } from './page-delta.ts'
import { FILE_CHUNK_BYTES, FRAME_FILE_DATA, FRAME_PAGES_CHUNK, MAX_IMAGE_FILES } from './messages.ts'

const zstdCompress = promisify(zlib.zstdCompress)

export interface PreparedImages {
  dir: string
  /** In sending order: every other image first (pagemaps among them), pages files last. */
  files: Array<{ name: string; size: number; sha256: string; pages?: string[] }>
  bytes: number
}

/** What CRIU leaves in an image dir that a restore elsewhere does not read. */
const NOT_SENT = new Set(['dump.log', 'stats-dump', 'parent', 'restore.log'])

/** Lists, hashes and orders a dump's images; pages files get their page keys. */
export async function prepareImages (dir: string): Promise<PreparedImages> {
  const names = (await fs.readdir(dir)).filter((n) => !NOT_SENT.has(n)).sort()
  if (names.length > MAX_IMAGE_FILES) throw new Error(`${names.length} image files: more than ${MAX_IMAGE_FILES}`)
  const layout = await pageLayout(dir)
  const files: PreparedImages['files'] = []
  let bytes = 0
  for (const name of [...names.filter((n) => !isPagesFile(n)), ...names.filter(isPagesFile)]) {
    const p = path.join(dir, name)
    const st = await fs.lstat(p)
    if (!st.isFile()) continue
    const sha256 = await fileSha256(p)
    bytes += st.size
    files.push(isPagesFile(name) ? { name, size: st.size, sha256, pages: layout.get(name) ?? [] } : { name, size: st.size, sha256 })
  }
  for (const name of layout.keys()) {
    if (!files.some((f) => f.name === name)) throw new Error(`the pagemaps name ${name}, which is not in ${dir}`)
  }
  return { dir, files, bytes }
}

/**
 * Streams every image after `begin`/`ready`. `acked` are the page hashes this standby
 * acknowledged last (null: all pages go literally); the hashes of this generation's
 * pages land in `hashes`. Returns the bytes put on the wire.
 */
export async function sendImages (framed: FramedStream, images: PreparedImages, acked: ReadonlyMap<string, string> | null, hashes: Map<string, string>, signal: AbortSignal,
  beforePages?: () => Promise<void>): Promise<{ wireBytes: number; literalPages: number; samePages: number }>
{
  let wireBytes = 0
  let literalPages = 0
  let samePages = 0
  let paged = false
  for (const f of images.files) {
    signal.throwIfAborted()
    const p = path.join(images.dir, f.name)
    if (f.pages != null) {
      if (!paged) {
        paged = true
        await beforePages?.()
      }
      await framed.writeJson({ type: 'pages', name: f.name, pages: f.pages.length, sha256: f.sha256 }, signal)
      for await (const chunk of encodePages(p, f.pages, acked, hashes)) {
        await framed.writeFrame(FRAME_PAGES_CHUNK, chunk, signal)
        wireBytes += chunk.length
        const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength)
        const pageCount = view.getUint32(0, true)
        const runs = view.getUint32(4, true)
        let lit = 0
        for (let i = 1; i < runs; i += 2) lit += view.getUint32(8 + 4 * i, true)
        literalPages += lit
        samePages += pageCount - lit
      }
      continue
    }
    if (isPagemapFile(f.name) && f.size > 16 * 1024 * 1024) throw new Error(`pagemap ${f.name} is ${f.size} bytes`)
    await framed.writeJson({ type: 'file', name: f.name, size: f.size, sha256: f.sha256 }, signal)
    const fh = await fs.open(p, 'r')
    try {
      const buf = Buffer.allocUnsafe(FILE_CHUNK_BYTES)
      let off = 0
      while (off < f.size) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(FILE_CHUNK_BYTES, f.size - off), off)
        if (bytesRead === 0) throw new Error(`${f.name} shrank while it was sent`)
        const z = await zstdCompress(buf.subarray(0, bytesRead), { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } })
        await framed.writeFrame(FRAME_FILE_DATA, z, signal)
        wireBytes += z.length
        off += bytesRead
      }
    } finally {
      await fh.close()
    }
  }
  return { wireBytes, literalPages, samePages }
}

async function fileSha256 (p: string): Promise<string> {
  const h = crypto.createHash('sha256')
  const fh = await fs.open(p, 'r')
  try {
    for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer)
  } finally {
    await fh.close().catch(() => {})
  }
  return h.digest('hex')
}
