/**
 * Moving a received, verified tree from its temporary directory into place.
 * replace: one rename of the whole tree (destDir must not exist).
 * overlay: deletes first, then every entry moved over the existing destDir; never
 *   through a symlink that exists there (each directory on the way is lstat-checked
 *   or created by us). Not atomic: a failure half-way leaves destDir partly updated.
 */
import fs from 'node:fs/promises'
import type { Stats } from 'node:fs'
import path from 'node:path'
import { parentOf, symlinkProblem, type LookupResult } from './paths.ts'
import { refusal, type Entry, type Meta, type TreeHeader } from './messages.ts'

export interface Received {
  /** In arrival order: parents before their contents. */
  entries: Entry[]
  symlinks: Array<Extract<Entry, { kind: 'symlink' }>>
}

/** Refuses early when destDir cannot take the tree. */
export async function checkDestination (destDir: string, mode: 'replace' | 'overlay'): Promise<void> {
  const st = await lstatOrNull(destDir)
  if (mode === 'replace' && st != null) throw refusal('DEST_EXISTS', `${destDir} already exists`)
  if (mode === 'replace' && (await lstatOrNull(path.dirname(destDir)))?.isDirectory() !== true) {
    throw refusal('DEST_MISSING', `${path.dirname(destDir)} is not an existing directory`)
  }
  if (mode === 'overlay' && st?.isDirectory() !== true) throw refusal('DEST_MISSING', `${destDir} is not an existing directory`)
}

/** Commit renames: the temporary directory must be on destDir's filesystem (no EXDEV at the end). */
export async function checkSameFilesystem (tmp: string, destDir: string, mode: 'replace' | 'overlay'): Promise<void> {
  const there = mode === 'replace' ? path.dirname(destDir) : destDir
  const [a, b] = await Promise.all([fs.stat(tmp), fs.stat(there)])
  if (a.dev !== b.dev) throw refusal('IO_ERROR', `tmpRoot and ${there} are on different filesystems: the commit could not rename`)
}

export async function commitTree (tmp: string, destDir: string, mode: 'replace' | 'overlay', h: TreeHeader, got: Received, symlinks: 'contained' | 'rootfs' = 'contained'): Promise<void> {
  if (symlinks === 'contained') await checkSymlinks(destDir, mode, h, got)
  // Files and symlinks keep their inode through rename: set their metadata now.
  for (const e of got.entries) if (e.kind !== 'dir') await applyMeta(path.join(tmp, e.path), e)
  if (mode === 'replace') {
    await applyDirMeta(tmp, got.entries)
    if (h.root != null) await applyMeta(tmp, { kind: 'dir', ...h.root })
    await checkDestination(destDir, 'replace') // rename(2) would silently replace an empty directory
    await fs.rename(tmp, destDir)
    return
  }
  for (const p of h.deletes) await deleteInside(destDir, p)
  for (const e of got.entries) await place(tmp, destDir, e)
  await applyDirMeta(destDir, got.entries)
  if (h.root != null) await applyMeta(destDir, { kind: 'dir', ...h.root })
  await fs.rm(tmp, { recursive: true, force: true })
}

/**
 * Every received symlink must resolve inside the tree as it will be after the commit:
 * received entries first, then (overlay) what destDir holds and is not deleted.
 */
async function checkSymlinks (destDir: string, mode: 'replace' | 'overlay', h: TreeHeader, got: Received): Promise<void> {
  if (got.symlinks.length === 0) return
  const received = new Map<string, LookupResult>()
  for (const e of got.entries) received.set(e.path, e.kind === 'symlink' ? { kind: 'symlink', target: e.target } : { kind: 'other' })
  const deleted = new Set(h.deletes)
  const lookup = async (rel: string): Promise<LookupResult> => {
    const r = received.get(rel)
    if (r != null || mode === 'replace') return r ?? { kind: 'other' }
    for (let p = rel; p !== ''; p = parentOf(p)) if (deleted.has(p)) return { kind: 'other' }
    // A directory above it that destDir holds as anything but a real directory is
    // replaced by a received one (or the path is unreachable): then `rel` won't exist.
    if (!await realDirs(destDir, parentOf(rel))) return { kind: 'other' }
    const st = await lstatOrNull(path.join(destDir, rel))
    if (st?.isSymbolicLink() === true) return { kind: 'symlink', target: await fs.readlink(path.join(destDir, rel)) }
    return { kind: 'other' }
  }
  for (const s of got.symlinks) {
    const why = await symlinkProblem(s.path, s.target, lookup)
    if (why != null) throw refusal('SYMLINK_ESCAPE', why)
  }
}

/** Overlay: puts one received entry at its place in destDir (parents were placed before). */
async function place (tmp: string, destDir: string, e: Entry): Promise<void> {
  const d = path.join(destDir, e.path)
  const st = await lstatOrNull(d)
  if (e.kind === 'dir') {
    if (st?.isDirectory() === true) return // merge into it; metadata comes after its contents
    if (st != null) await fs.rm(d, { recursive: true, force: true })
    await fs.mkdir(d, { mode: 0o700 })
    return
  }
  if (st?.isDirectory() === true) await fs.rm(d, { recursive: true, force: true })
  await fs.rename(path.join(tmp, e.path), d) // replaces a file or symlink; never follows it
}

/** Overlay: removes `rel` from destDir unless reaching it would go through a symlink. */
async function deleteInside (destDir: string, rel: string): Promise<void> {
  if (!await realDirs(destDir, parentOf(rel))) return // gone, or reached through a symlink
  const target = path.join(destDir, rel)
  const st = await lstatOrNull(target)
  if (st == null) return
  // fs.rm does not follow symlinks, neither the target nor any inside it.
  if (st.isDirectory()) await fs.rm(target, { recursive: true, force: true })
  else await fs.unlink(target)
}

/** True when every component of `relDir` under root is a real directory (lstat, no symlink). */
async function realDirs (root: string, relDir: string): Promise<boolean> {
  if (relDir === '') return true
  let p = root
  for (const seg of relDir.split('/')) {
    p = path.join(p, seg)
    if ((await lstatOrNull(p))?.isDirectory() !== true) return false
  }
  return true
}

/** Directory metadata last, deepest first: adding entries changes a directory's mtime. */
async function applyDirMeta (root: string, entries: Entry[]): Promise<void> {
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i] as Entry
    if (e.kind === 'dir') await applyMeta(path.join(root, e.path), e)
  }
}

const isRoot = process.getuid?.() === 0

/** Owner, then mode (chown clears set-uid bits), then times; symlinks are never followed. */
async function applyMeta (p: string, m: Meta & { kind: Entry['kind'] }): Promise<void> {
  try {
    await fs.lchown(p, m.uid, m.gid)
  } catch (err) {
    // Without root, files belong to us: keep going rather than refuse the transfer.
    if (isRoot || (err as NodeJS.ErrnoException).code !== 'EPERM') throw err
  }
  if (m.kind !== 'symlink') await fs.chmod(p, m.mode)
  const t = m.mtimeMs / 1000
  await fs.lutimes(p, t, t)
}

async function lstatOrNull (p: string): Promise<Stats | null> {
  try {
    return await fs.lstat(p)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return null
    throw err
  }
}
