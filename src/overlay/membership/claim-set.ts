import crypto from 'node:crypto'
import type { ContainerClaim } from './heartbeat.ts'

/**
 * A node's ownership claims as a versioned set: what a heartbeat says of them (a
 * revision, a count, a digest, and the claims that changed lately) and what a receiver
 * rebuilds from that (protocols/membership.md, "Claims at any count").
 *
 * The digest is sha256, in hex, over the claims in name order, each as its canonical
 * JSON (object keys sorted at every level, no whitespace), one per line ending in a
 * newline. It names the whole set: a receiver that rebuilt a set from changes checks it
 * against the digest, and fetches the set from its owner when they differ.
 */

/** Claims one node may hold, in its own heartbeats and in every view (MembershipView.maxClaimsPerPeer). */
export const MAX_CLAIM_SET = 16384
/** A heartbeat lists the whole set when it is at most this many claims... */
export const INLINE_MAX_CLAIMS = 64
/** ...and this many bytes of canonical JSON; the changes it lists are bounded the same way. */
export const INLINE_MAX_BYTES = 16 * 1024
/** Names one heartbeat may list as removed (the receiver's bound: MAX_REMOVED in heartbeat.ts). */
export const MAX_REMOVED_NAMES = 512
/** Revisions of changes the sender remembers, to send a receiver that missed a few heartbeats what it lacks. */
export const HISTORY_REVISIONS = 32

/** What a heartbeat says of the sender's claim set (its `claims` field). */
export interface ClaimSummary {
  /** The set's revision within the sender's incarnation: 0 is the empty set before the first update. */
  rev: number
  /** The heartbeat's containers and removed names bring a copy at any revision from `base` to `rev`. */
  base: number
  count: number
  digest: string
  removed: string[]
}

/** Object keys sorted at every level, no whitespace: the same claim gives the same text wherever it was parsed. */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value != null && typeof value === 'object') {
    const o = value as Record<string, unknown>
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort()
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`
  }
  return JSON.stringify(value)
}

/** The digest of a set given as canonical texts by name. */
export function digestOfTexts (texts: ReadonlyMap<string, string>): string {
  const h = crypto.createHash('sha256')
  for (const name of [...texts.keys()].sort()) h.update(texts.get(name) as string).update('\n')
  return h.digest('hex')
}

export function claimDigest (claims: Iterable<ContainerClaim>): string {
  const texts = new Map<string, string>()
  for (const c of claims) texts.set(c.name, canonicalJson(c))
  return digestOfTexts(texts)
}

export const EMPTY_DIGEST = claimDigest([])

/** A receiver's copy of one peer's claim set. `rev` -1: a heartbeat listed the whole set without a summary. */
export interface ClaimSetCopy {
  incarnation: number
  rev: number
  digest: string
  claims: Map<string, ContainerClaim>
}

/**
 * What `changes` and `removed` make of `from` (not modified): null when the result is not
 * `count` claims with `digest`.
 */
export function rebuild (from: ReadonlyMap<string, ContainerClaim>, changes: ContainerClaim[], s: ClaimSummary): Map<string, ContainerClaim> | null {
  const next = new Map(from)
  for (const name of s.removed) next.delete(name)
  for (const c of changes) next.set(c.name, c)
  if (next.size !== s.count) return null
  return claimDigest(next.values()) === s.digest ? next : null
}

interface HistoryEntry {
  rev: number
  names: string[]
}

export interface LedgerUpdate {
  changed: boolean
  /** Claims left out because the set is over MAX_CLAIM_SET (names last in order first). */
  omitted: number
}

/**
 * The sender's side: this node's claim set, its revision and digest, and the names
 * changed in the last HISTORY_REVISIONS revisions. update() is called with the full
 * list each time a heartbeat is built; the revision moves only when the set changed.
 */
export class ClaimLedger {
  private revision = 0
  private readonly claims = new Map<string, ContainerClaim>()
  private readonly texts = new Map<string, string>()
  private digestHex = EMPTY_DIGEST
  private readonly history: HistoryEntry[] = []
  private snapshotCache?: { rev: number; claims: ContainerClaim[]; texts: string[] }
  private readonly limit: number

  constructor (limit = MAX_CLAIM_SET) {
    this.limit = limit
  }

  get rev (): number {
    return this.revision
  }
  get digest (): string {
    return this.digestHex
  }
  get size (): number {
    return this.claims.size
  }

  update (list: ContainerClaim[]): LedgerUpdate {
    let omitted = 0
    if (list.length > this.limit) {
      // Loud at the caller; the set stays within what every view accepts.
      const sorted = [...list].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
      omitted = list.length - this.limit
      list = sorted.slice(0, this.limit)
    }
    const changed: string[] = []
    const seen = new Set<string>()
    for (const c of list) {
      if (seen.has(c.name)) continue
      seen.add(c.name)
      const text = canonicalJson(c)
      if (this.texts.get(c.name) === text) continue
      this.texts.set(c.name, text)
      this.claims.set(c.name, c)
      changed.push(c.name)
    }
    for (const name of [...this.claims.keys()]) {
      if (seen.has(name)) continue
      this.claims.delete(name)
      this.texts.delete(name)
      changed.push(name)
    }
    if (changed.length === 0) return { changed: false, omitted }
    this.revision++
    this.digestHex = digestOfTexts(this.texts)
    this.history.push({ rev: this.revision, names: changed })
    if (this.history.length > HISTORY_REVISIONS) this.history.shift()
    return { changed: true, omitted }
  }

  /**
   * What the next heartbeat says: the whole set, without a summary, when it is small (a
   * heartbeat then costs what it did before claim sets); otherwise the summary and the
   * changes of as many recent revisions as fit in the inline bounds (none: base = rev).
   */
  summary (): { containers: ContainerClaim[]; claims?: ClaimSummary } {
    const head = { rev: this.revision, count: this.claims.size, digest: this.digestHex }
    if (this.claims.size <= INLINE_MAX_CLAIMS) {
      let bytes = 0
      for (const t of this.texts.values()) bytes += t.length + 1
      if (bytes <= INLINE_MAX_BYTES) return { containers: [...this.claims.values()] }
    }
    const names = new Set<string>()
    let base = this.revision
    let upserts = 0
    let removals = 0
    let bytes = 0
    for (let i = this.history.length - 1; i >= 0; i--) {
      const e = this.history[i] as HistoryEntry
      const fresh = e.names.filter((n) => !names.has(n))
      let u = 0
      let r = 0
      let b = 0
      for (const n of fresh) {
        const t = this.texts.get(n)
        if (t == null) {
          r++
          b += n.length + 3
        } else {
          u++
          b += t.length + 1
        }
      }
      if (upserts + u > INLINE_MAX_CLAIMS || removals + r > MAX_REMOVED_NAMES || bytes + b > INLINE_MAX_BYTES) break
      for (const n of fresh) names.add(n)
      upserts += u
      removals += r
      bytes += b
      base = e.rev - 1
    }
    const containers: ContainerClaim[] = []
    const removed: string[] = []
    for (const n of names) {
      const c = this.claims.get(n)
      if (c == null) removed.push(n)
      else containers.push(c)
    }
    return { containers, claims: { ...head, base, removed } }
  }

  /** The whole set in name order, with each claim's canonical text (for pages); cached per revision. */
  snapshot (): { rev: number; digest: string; claims: ContainerClaim[]; texts: string[] } {
    if (this.snapshotCache?.rev !== this.revision) {
      const names = [...this.claims.keys()].sort()
      this.snapshotCache = {
        rev: this.revision,
        claims: names.map((n) => this.claims.get(n) as ContainerClaim),
        texts: names.map((n) => this.texts.get(n) as string)
      }
    }
    return { ...this.snapshotCache, digest: this.digestHex }
  }
}
