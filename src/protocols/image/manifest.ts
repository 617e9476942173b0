/**
 * Walking a directory tree without following symlinks, and comparing two snapshots of
 * one, so a caller can send only what changed (for example a container's rootfs
 * between the first copy and the final checkpoint).
 */
import fs from 'node:fs/promises'
import type { Stats } from 'node:fs'
import path from 'node:path'

export type EntryKind = 'dir' | 'file' | 'symlink' | 'other'

export interface WalkEntry {
  /** Relative, '/'-separated; never empty (the root itself is not listed). */
  rel: string
  kind: EntryKind
  stat: Stats
}

export function kindOf (st: Stats): EntryKind {
  if (st.isDirectory()) return 'dir'
  if (st.isFile()) return 'file'
  if (st.isSymbolicLink()) return 'symlink'
  return 'other' // socket, fifo, device: not transferable as bytes
}

/**
 * Pre-order walk (a directory comes before its contents), names in byte order so two
 * walks of the same tree agree. Uses lstat: symlinks are reported, never followed.
 */
export async function* walkTree (root: string, rel = ''): AsyncGenerator<WalkEntry> {
  const names = (await fs.readdir(rel === '' ? root : path.join(root, rel))).sort(compareBytes)
  for (const name of names) {
    const r = rel === '' ? name : `${rel}/${name}`
    const stat = await fs.lstat(path.join(root, r))
    const kind = kindOf(stat)
    yield { rel: r, kind, stat }
    if (kind === 'dir') yield* walkTree(root, r)
  }
}

function compareBytes (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

export interface ManifestEntry {
  kind: EntryKind
  size: number
  mtimeMs: number
  mode: number
  /** Changes on every write, chmod and chown, even when mtime is put back. */
  ctimeMs: number
  uid: number
  gid: number
}

export type TreeManifest = Map<string, ManifestEntry>

/** Every entry under `dir` with what is needed to notice a change. */
export async function treeManifest (dir: string): Promise<TreeManifest> {
  const m: TreeManifest = new Map()
  for await (const e of walkTree(dir)) {
    const s = e.stat
    m.set(e.rel, { kind: e.kind, size: s.size, mtimeMs: s.mtimeMs, mode: s.mode & 0o7777, ctimeMs: s.ctimeMs, uid: s.uid, gid: s.gid })
  }
  return m
}

/**
 * What differs between two manifests of one tree: `changed` = new or modified paths
 * (content, kind, mode, owner or times), `deleted` = paths gone, listing only the top
 * of a deleted subtree (removing it removes the rest). Sockets and the like are
 * ignored, as sendTree skips them. Both lists sorted.
 */
export function changedSince (before: TreeManifest, after: TreeManifest): { changed: string[]; deleted: string[] } {
  const changed: string[] = []
  for (const [p, a] of after) {
    if (a.kind === 'other') continue
    const b = before.get(p)
    if (b == null || b.kind !== a.kind || b.size !== a.size || b.mtimeMs !== a.mtimeMs || b.mode !== a.mode ||
      b.ctimeMs !== a.ctimeMs || b.uid !== a.uid || b.gid !== a.gid) changed.push(p)
  }
  const deleted: string[] = []
  for (const p of before.keys()) {
    if (after.has(p)) continue
    const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : ''
    // A path whose parent is also gone is covered by the parent's removal.
    if (parent !== '' && before.has(parent) && !after.has(parent)) continue
    deleted.push(p)
  }
  return { changed: changed.sort(compareBytes), deleted: deleted.sort(compareBytes) }
}
