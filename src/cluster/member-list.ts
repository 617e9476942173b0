import { recordKey, type AdmitRecord, type ClusterRecord, type RemoveRecord } from './records.ts'

/** A member as every node of the cluster agrees on it, from the records alone. */
export interface ClusterMember {
  peerId: string
  name: string
  addrs: string[]
  admittedAt: number
  /** The member who admitted it, or 'key' (key-file cluster). */
  admittedBy: string
}

/** How many records one cluster keeps; past it, new ones are refused (and said so). */
export const MAX_RECORDS = 4096

/**
 * The member list of one cluster: a grow-only set of records whose proofs were already
 * checked (records.ts), and the rules that make members out of them. Pure: every node
 * holding the same records computes the same members, whatever order they came in.
 *
 * - A genesis admission (the creator's own, with the nonce its id derives from) and a
 *   key-file admission are valid by their proof.
 * - Any other admission is valid when its signer holds a valid admission.
 * - A removal is valid when its signer holds a valid admission; a validly removed peer
 *   is never a member again.
 * - Names are unique: among members sharing a name, the earliest admission (then the
 *   smaller peer id) keeps it; the others are conflicts, not members.
 */
export class MemberList {
  readonly clusterId: string
  private readonly records = new Map<string, ClusterRecord>()
  private computed?: { members: Map<string, ClusterMember>; removed: Set<string>; conflicts: Array<ClusterMember & { heldBy: string }> }

  constructor (clusterId: string) {
    this.clusterId = clusterId
  }

  /** Adds a proof-checked record. Returns false for a duplicate, another cluster's record, or one past the limit. */
  add (r: ClusterRecord): boolean {
    if (r.cluster !== this.clusterId) return false
    const k = recordKey(r)
    if (this.records.has(k) || this.records.size >= MAX_RECORDS) return false
    this.records.set(k, r)
    this.computed = undefined
    return true
  }

  get full (): boolean {
    return this.records.size >= MAX_RECORDS
  }

  all (): ClusterRecord[] {
    return [...this.records.values()].sort((a, b) => recordKey(a).localeCompare(recordKey(b)))
  }

  has (r: ClusterRecord): boolean {
    return this.records.has(recordKey(r))
  }

  members (): ClusterMember[] {
    return [...this.compute().members.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  get (peerId: string): ClusterMember | undefined {
    return this.compute().members.get(peerId)
  }
  isMember (peerId: string): boolean {
    return this.compute().members.has(peerId)
  }
  isRemoved (peerId: string): boolean {
    return this.compute().removed.has(peerId)
  }
  byName (name: string): ClusterMember | undefined {
    return this.members().find((m) => m.name === name)
  }
  /** Peers validly admitted whose name an earlier member holds: refused until renamed. */
  conflicts (): Array<ClusterMember & { heldBy: string }> {
    return this.compute().conflicts
  }

  private compute (): NonNullable<MemberList['computed']> {
    if (this.computed != null) return this.computed
    const admits = [...this.records.values()].filter((r): r is AdmitRecord => r.kind === 'admit')
      .sort((a, b) => a.admittedAt - b.admittedAt || a.peerId.localeCompare(b.peerId))
    const removes = [...this.records.values()].filter((r): r is RemoveRecord => r.kind === 'remove')
    // Valid admissions, to a fixpoint: a signer's own admission may come later in time
    // order than one it signed only through clock skew, so loop until nothing changes.
    const valid = new Map<string, AdmitRecord>()
    let grew = true
    while (grew) {
      grew = false
      for (const a of admits) {
        if (valid.has(a.peerId)) continue
        const selfProven = a.admittedBy === 'key' || (a.nonce != null && a.admittedBy === a.peerId)
        if (selfProven || valid.has(a.admittedBy)) {
          valid.set(a.peerId, a)
          grew = true
        }
      }
    }
    const removed = new Set(removes.filter((r) => valid.has(r.removedBy)).map((r) => r.peerId))
    const members = new Map<string, ClusterMember>()
    const conflicts: Array<ClusterMember & { heldBy: string }> = []
    const nameHolder = new Map<string, string>()
    const ordered = [...valid.values()].sort((a, b) => a.admittedAt - b.admittedAt || a.peerId.localeCompare(b.peerId))
    for (const a of ordered) {
      if (removed.has(a.peerId)) continue
      const m: ClusterMember = { peerId: a.peerId, name: a.name, addrs: a.addrs, admittedAt: a.admittedAt, admittedBy: a.admittedBy }
      const holder = nameHolder.get(a.name)
      if (holder != null) {
        conflicts.push({ ...m, heldBy: holder })
        continue
      }
      nameHolder.set(a.name, a.peerId)
      members.set(a.peerId, m)
    }
    this.computed = { members, removed, conflicts }
    return this.computed
  }
}
