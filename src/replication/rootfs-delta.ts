/**
 * The rootfs side of a generation. While the container is frozen, the entries that
 * changed since a standby's base generation are copied aside (with every directory
 * above them, metadata included), so that what travels afterwards is the rootfs as it
 * was at the instant of the dump, not as the resumed container goes on changing it.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { changedSince, type TreeManifest } from '../protocols/image/index.ts'

export interface RootfsChanges {
  /** Per base manifest (one per standby): what changed and what went since. */
  changed: string[]
  deleted: string[]
}

/** What changed since each base, and the union to copy aside. */
export function rootfsChanges (bases: TreeManifest[], now: TreeManifest): { perBase: RootfsChanges[]; union: string[] } {
  const perBase = bases.map((b) => changedSince(b, now))
  const union = [...new Set(perBase.flatMap((c) => c.changed))].sort()
  return { perBase, union }
}

/**
 * Copies `rels` (relative paths in `rootfs`) into `dest`, keeping kind, content, mode,
 * owner and times; the directories above each get the metadata of theirs in `rootfs`.
 * Never follows a symlink (lstat, readlink). An entry that vanished meanwhile is skipped.
 */
export async function copyEntries (rootfs: string, dest: string, rels: string[]): Promise<number> {
  await fs.mkdir(dest, { recursive: true, mode: 0o700 })
  const dirsDone = new Set<string>()
  const dirs: string[] = []
  let copied = 0
  const ensureDir = async (rel: string): Promise<void> => {
    if (rel === '' || dirsDone.has(rel)) return
    await ensureDir(parent(rel))
    dirsDone.add(rel)
    const st = await fs.lstat(path.join(rootfs, rel))
    if (!st.isDirectory()) throw new Error(`${rel} is not a directory in the rootfs any more`)
    await fs.mkdir(path.join(dest, rel), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err
    })
    dirs.push(rel)
  }
  for (const rel of rels) {
    const src = path.join(rootfs, rel)
    const st = await fs.lstat(src).catch(() => null)
    if (st == null) continue
    await ensureDir(parent(rel))
    const d = path.join(dest, rel)
    if (st.isDirectory()) {
      await ensureDir(rel)
    } else if (st.isFile()) {
      await fs.copyFile(src, d)
      await setMeta(d, st, false)
      copied++
    } else if (st.isSymbolicLink()) {
      await fs.symlink(await fs.readlink(src), d)
      await setMeta(d, st, true)
      copied++
    }
  }
  // Directories last, deepest first: creating entries inside changes their times. The
  // root too: the receiver gives the rootfs it updates the metadata of this one (CRIU
  // refuses a restore whose root directory changed mode).
  for (const rel of dirs.sort((a, b) => b.length - a.length)) await setMeta(path.join(dest, rel), await fs.lstat(path.join(rootfs, rel)), false)
  await setMeta(dest, await fs.lstat(rootfs), false)
  return copied
}

async function setMeta (p: string, st: import('node:fs').Stats, link: boolean): Promise<void> {
  await fs.lchown(p, st.uid, st.gid)
  if (!link) await fs.chmod(p, st.mode & 0o7777)
  await fs.lutimes(p, st.atime, st.mtime)
}

function parent (rel: string): string {
  const i = rel.lastIndexOf('/')
  return i < 0 ? '' : rel.slice(0, i)
}
