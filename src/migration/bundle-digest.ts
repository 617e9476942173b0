import crypto from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'

/**
 * A content digest of a bundle: its config and every entry of its rootfs (path, type,
 * mode, owner, size, content or link target). Two nodes with the same digest hold the same
 * bundle, so a target that has it is not sent it again.
 */
export async function bundleDigest (config: unknown, rootfs: string): Promise<{ digest: string; files: number; bytes: number }> {
  const h = crypto.createHash('sha256')
  h.update(JSON.stringify(config))
  let files = 0
  let bytes = 0
  const walk = async (dir: string, rel: string): Promise<void> => {
    const entries = (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
    for (const e of entries) {
      const abs = path.join(dir, e.name)
      const r = rel === '' ? e.name : `${rel}/${e.name}`
      const st = await fsp.lstat(abs)
      // Owners too: a set-uid file owned by root is not the bundle that had it owned by 1000.
      h.update(`\n${r}\0${st.mode}\0${st.uid}:${st.gid}\0`)
      if (st.isDirectory()) {
        await walk(abs, r)
      } else if (st.isSymbolicLink()) {
        h.update(await fsp.readlink(abs))
      } else if (st.isFile()) {
        files++
        bytes += st.size
        h.update(`${st.size}\0`)
        await new Promise<void>((resolve, reject) => {
          fs.createReadStream(abs).on('data', (d) => h.update(d)).on('end', resolve).on('error', reject)
        })
      }
    }
  }
  await walk(rootfs, '')
  return { digest: h.digest('hex'), files, bytes }
}
