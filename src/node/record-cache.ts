/**
 * Container records (DIR/containers/NAME/container.json) read at every heartbeat and
 * every lease and replication check: parsed once, then kept while the file is the same.
 *
 * Each read still looks at the file (one stat, synchronous: microseconds, where opening,
 * reading and parsing a thousand files every second was most of an idle node's CPU),
 * so a write by any path is seen at the next read: records are written atomically
 * (a new file renamed over the old), which gives the path a new inode, and a container
 * directory moved into place is another inode too. Size and change times are compared
 * as well. The directory listing is kept while the containers directory's own
 * modification time stays the same (an entry created, removed or renamed changes it);
 * a record is only ever removed with its directory.
 *
 * Readers get their own copy: callers change a record and write it back.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import type { BigIntStats } from 'node:fs'

function identity (st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`
}

function statOf (file: string): BigIntStats | null {
  try {
    return fs.statSync(file, { bigint: true, throwIfNoEntry: false }) ?? null
  } catch {
    return null // not a directory on the way, permissions: as absent
  }
}

export class RecordCache<R> {
  private readonly dir: string
  private readonly fileName: string
  private readonly isName: (entry: string) => boolean
  private readonly records = new Map<string, { id: string; text: string }>()
  private listing: { id: string; entries: string[] } | null = null

  /** Records are `dir/<name>/<fileName>`, for the entries of `dir` that `isName` accepts. */
  constructor (dir: string, fileName: string, isName: (entry: string) => boolean) {
    this.dir = dir
    this.fileName = fileName
    this.isName = isName
  }

  private file (name: string): string {
    return path.join(this.dir, name, this.fileName)
  }

  /** Names with a record, sorted. */
  async names (): Promise<string[]> {
    const st = statOf(this.dir)
    if (st == null) {
      this.listing = null
      return []
    }
    const id = identity(st)
    if (this.listing?.id !== id) {
      const entries = await fsp.readdir(this.dir, { withFileTypes: true }).catch(() => [])
      this.listing = { id, entries: entries.filter((e) => e.isDirectory() && this.isName(e.name)).map((e) => e.name).sort() }
    }
    // A directory gets its record after it was created (not a change of `dir`): one not
    // read yet is looked at each time. A record is only ever removed with its directory.
    return this.listing.entries.filter((n) => this.records.has(n) || statOf(this.file(n))?.isFile() === true)
  }

  /** The record, parsed from the file as it is now; null when there is none or it is not JSON. */
  async read (name: string): Promise<R | null> {
    const file = this.file(name)
    const st = statOf(file)
    if (st == null) {
      this.records.delete(name)
      return null
    }
    const id = identity(st)
    let hit = this.records.get(name)
    if (hit?.id !== id) {
      const text = await fsp.readFile(file, 'utf8').catch(() => null)
      if (text == null) {
        this.records.delete(name)
        return null
      }
      // Keyed by the identity seen before reading: had the file been replaced in between,
      // the next read sees another identity and reads it again.
      hit = { id, text }
      this.records.set(name, hit)
    }
    try {
      return JSON.parse(hit.text) as R
    } catch {
      return null
    }
  }

  /** After this process wrote the record itself: the next read checks the file again. */
  forget (name: string): void {
    this.records.delete(name)
  }
}
