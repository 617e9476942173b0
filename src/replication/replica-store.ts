/**
 * What a standby keeps of other nodes' containers, under DIR/replicas:
 *
 *   DIR/replicas/NAME/replica.json   owner, epoch, config, latest generation (atomic, fsynced)
 *   DIR/replicas/NAME/gen-K/         one complete generation: images/, rootfs/, gen.json
 *   DIR/replicas/NAME/.incoming-K/   a generation being received (never restorable)
 *
 * A generation is staged in .incoming-K, verified, fsynced and renamed into gen-K; only
 * then does replica.json name it. The last two generations are kept: a partial or
 * broken newer one never displaces the good one before it. Each generation's rootfs is
 * complete: it starts as a hard-linked copy of its base's (cp -al) and received files
 * replace entries by rename (protocols/image commit), so an older generation's files
 * are never written through a link.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import { fsyncDir, fsyncTree, renameDurable, writeFileAtomic } from '../util/atomic-file.ts'
import { removeTree } from '../runtime/mounts.ts'
import type { LanNetwork } from '../network/lan-address.ts'

export interface ReplicaMeta {
  container: string
  /** Peer id of the owner whose generations these are. */
  owner: string
  epoch: number
  /** Generations on disk, in the order they arrived; the last is the newest complete one. */
  generations: number[]
  config: Record<string, unknown>
  replicas: number
  standbys: string[]
  /** The owner's wall clock when the newest generation was frozen. */
  dumpedAt: number
  receivedAt: number
  /** Its own address on the LAN (checked on receipt): a failover restores it there. Absent: the host's network. */
  network?: LanNetwork
}

export interface GenerationInfo {
  generation: number
  epoch: number
  owner: string
  dumpedAt: number
  receivedAt: number
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const KEEP = 2

export class ReplicaStore {
  readonly root: string

  constructor (root: string) {
    this.root = root
  }

  dir (name: string): string {
    return path.join(this.root, name)
  }
  genDir (name: string, k: number): string {
    return path.join(this.dir(name), `gen-${k}`)
  }
  private metaFile (name: string): string {
    return path.join(this.dir(name), 'replica.json')
  }

  async read (name: string): Promise<ReplicaMeta | null> {
    if (!NAME_RE.test(name)) return null
    try {
      return JSON.parse(await fs.readFile(this.metaFile(name), 'utf8')) as ReplicaMeta
    } catch {
      return null
    }
  }

  async list (): Promise<ReplicaMeta[]> {
    const names = await fs.readdir(this.root).catch(() => [] as string[])
    const out: ReplicaMeta[] = []
    for (const n of names.sort()) {
      const m = await this.read(n)
      if (m != null) out.push(m)
    }
    return out
  }

  /**
   * A fresh staging dir for generation `k`: its rootfs is a hard-linked copy of `base`'s
   * (a delta goes on top), or absent (a full rootfs arrives there). Leftovers of an
   * earlier attempt go first.
   */
  async stage (name: string, k: number, base: number | null): Promise<string> {
    await fs.mkdir(this.dir(name), { recursive: true, mode: 0o700 })
    const dir = path.join(this.dir(name), `.incoming-${k}`)
    await removeTree(dir)
    await fs.mkdir(path.join(dir, 'images'), { recursive: true, mode: 0o700 })
    if (base != null) {
      await execa('cp', ['-al', path.join(this.genDir(name, base), 'rootfs'), path.join(dir, 'rootfs')], { timeout: 120_000 })
    }
    return dir
  }

  /**
   * Makes a verified staging dir generation `info.generation`: fsync it, rename it into
   * place, then name it in replica.json; older generations beyond the last two go.
   */
  async commit (name: string, staging: string, info: GenerationInfo, meta: Omit<ReplicaMeta, 'generations' | 'dumpedAt' | 'receivedAt'>): Promise<ReplicaMeta> {
    await writeFileAtomic(path.join(staging, 'gen.json'), JSON.stringify(info, null, 2), { mode: 0o600 })
    await fsyncTree(staging)
    const dest = this.genDir(name, info.generation)
    await removeTree(dest)
    await renameDurable(staging, dest)
    const prev = await this.read(name)
    // Another owner's (or another epoch's) generations cannot serve as a base any more.
    const sameLine = prev != null && prev.owner === meta.owner && prev.epoch === meta.epoch
    // In the order they arrived: an owner restarted counts from 1 again, and its new
    // generations are the newest all the same.
    const kept = [...(sameLine ? prev.generations.filter((g) => g !== info.generation) : []), info.generation].slice(-KEEP)
    const next: ReplicaMeta = { ...meta, generations: kept, dumpedAt: info.dumpedAt, receivedAt: info.receivedAt }
    await writeFileAtomic(this.metaFile(name), JSON.stringify(next, null, 2), { mode: 0o600 })
    await this.prune(name, new Set(kept))
    return next
  }

  /** Removes generation dirs (and stale staging) not in `keep`. */
  private async prune (name: string, keep: Set<number>): Promise<void> {
    for (const e of await fs.readdir(this.dir(name)).catch(() => [] as string[])) {
      const m = /^gen-(\d+)$/.exec(e)
      if (m != null && !keep.has(Number(m[1]))) await removeTree(path.join(this.dir(name), e))
    }
  }

  async abort (staging: string): Promise<void> {
    await removeTree(staging)
  }

  /** Forgets a replica entirely (the container was removed, moved, or restored here). */
  async drop (name: string): Promise<void> {
    if (!NAME_RE.test(name)) return
    await fs.rm(this.metaFile(name), { force: true })
    await fsyncDir(this.dir(name)).catch(() => {})
    await removeTree(this.dir(name))
  }

  /** At start: staging dirs of generations that never completed are garbage. */
  async clearIncoming (): Promise<number> {
    let n = 0
    for (const name of await fs.readdir(this.root).catch(() => [] as string[])) {
      for (const e of await fs.readdir(this.dir(name)).catch(() => [] as string[])) {
        if (e.startsWith('.incoming-')) {
          await removeTree(path.join(this.dir(name), e))
          n++
        }
      }
    }
    return n
  }

  async generationInfo (name: string, k: number): Promise<GenerationInfo | null> {
    try {
      return JSON.parse(await fs.readFile(path.join(this.genDir(name, k), 'gen.json'), 'utf8')) as GenerationInfo
    } catch {
      return null
    }
  }

  async bytes (name: string): Promise<number> {
    let total = 0
    for (const e of await fs.readdir(this.dir(name), { withFileTypes: true, recursive: true }).catch(() => [])) {
      if (e.isFile()) total += (await fs.lstat(path.join(e.parentPath, e.name))).size
    }
    return total
  }
}
