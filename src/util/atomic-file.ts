import fs from 'node:fs/promises'
import path from 'node:path'
import crypto from 'node:crypto'

/**
 * Crash-safe writes of msc's state files. A plain writeFile truncates first, so a
 * crash (or a full disk) mid-write leaves a torn or empty record; a rename without
 * fsyncs can, after a power loss, leave the new name pointing at data that never
 * reached the disk. So: write a temp file in the same directory (rename is atomic
 * only within one file system), fsync it, rename it over the target, fsync the
 * directory so the rename itself is durable. Readers see the old content or the new,
 * never a mix.
 */
export async function writeFileAtomic (file: string, data: string | Uint8Array, opts: { mode?: number } = {}): Promise<void> {
  const dir = path.dirname(file)
  // Unique per call: two writers of one file never share a temp. A leading dot and the
  // .tmp suffix keep it out of every listing msc reads (*.json, NAME_RE directories).
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`)
  const mode = opts.mode ?? 0o600
  let fh: fs.FileHandle | undefined
  try {
    fh = await fs.open(tmp, 'wx', mode)
    await fh.chmod(mode) // open's mode passes through the umask; state files need exactly this one
    await fh.writeFile(data)
    await fh.sync()
    await fh.close()
    fh = undefined
    await fs.rename(tmp, file)
  } catch (err) {
    await fh?.close().catch(() => {})
    await fs.rm(tmp, { force: true }).catch(() => {})
    throw err
  }
  await fsyncDir(dir)
}

/** Makes the entries of `dir` (creations, renames, removals) durable. */
export async function fsyncDir (dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r')
  try {
    await fh.sync()
  } catch (err) {
    // Some file systems cannot fsync a directory; there is nothing more to do there.
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err
  } finally {
    await fh.close()
  }
}

/** rename(2), then fsync of both parent directories: the move survives a power loss. */
export async function renameDurable (from: string, to: string): Promise<void> {
  await fs.rename(from, to)
  const a = path.dirname(path.resolve(to))
  const b = path.dirname(path.resolve(from))
  await fsyncDir(a)
  if (b !== a) await fsyncDir(b)
}

/**
 * fsyncs every regular file and directory under `root` (not following symlinks).
 * For trees written by other programs (CRIU's images) before msc records them as
 * complete: the record must never reach the disk before the data it describes.
 */
export async function fsyncTree (root: string): Promise<void> {
  for (const e of await fs.readdir(root, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) {
      const fh = await fs.open(path.join(e.parentPath, e.name), 'r')
      try {
        await fh.sync()
      } finally {
        await fh.close()
      }
    } else if (e.isDirectory()) {
      await fsyncDir(path.join(e.parentPath, e.name))
    }
  }
  await fsyncDir(root)
}
