import fs from 'node:fs/promises'
import path from 'node:path'

const CGROUP_ROOT = '/sys/fs/cgroup'

/** Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers, unified, or v2 itself). */
async function hierarchies (): Promise<string[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8')
  const out = new Set<string>()
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    const sep = f.indexOf('-')
    const type = f[sep + 1]
    if ((type === 'cgroup' || type === 'cgroup2') && f[4]?.startsWith(CGROUP_ROOT)) out.add(f[4])
  }
  return [...out]
}

/**
 * Removes a node's cgroup parent where it is empty (no container cgroups left in it).
 * runc deletes each container's cgroup, never the parent msc named for the node;
 * a parent that still holds a living container is kept (rmdir fails, as it should).
 */
export async function removeEmptyCgroupParent (parent: string): Promise<void> {
  for (const h of await hierarchies()) {
    const dir = path.join(h, parent)
    await fs.rmdir(dir).catch(() => {})
  }
}
