import fs from 'node:fs/promises'
import { execa } from 'execa'

/** Mount points at or below `dir`, deepest first (so they can be unmounted in order). */
export async function mountsUnder (dir: string): Promise<string[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8')
  const prefix = dir.endsWith('/') ? dir : dir + '/'
  const points = text.split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p != null && (p === dir || p.startsWith(prefix)))
    .map((p) => p.replace(/\\040/g, ' '))
  return [...new Set(points)].sort((a, b) => b.length - a.length)
}

/**
 * Unmounts everything below `dir`. A failed CRIU restore leaves the rootfs bind
 * (`<runc root>/<id>/criu-root`) and its cgroup yard mounted; deleting through them
 * would wipe the bundle's rootfs (seen on these hosts), so this runs before any delete.
 */
export async function unmountAllUnder (dir: string): Promise<string[]> {
  const points = await mountsUnder(dir)
  for (const p of points) {
    await execa('umount', ['-l', p], { reject: false, timeout: 10_000 })
  }
  return points
}

/** rm -rf that never crosses into another file system (mount). */
export async function removeTree (dir: string): Promise<void> {
  await unmountAllUnder(dir)
  await execa('rm', ['-rf', '--one-file-system', '--', dir], { reject: false, timeout: 60_000 })
}
