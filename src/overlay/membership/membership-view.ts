import { TypedEventEmitter } from 'main-event'
import { verifyHandover } from '../../cluster/handover.ts'
import { DROP_REASONS, MAX_EPOCH, MAX_EPOCH_JUMP } from './heartbeat.ts'
import type { ContainerClaim, DropReason, Heartbeat } from './heartbeat.ts'
import { claimDigest, MAX_CLAIM_SET, rebuild, type ClaimSetCopy, type ClaimSummary } from './claim-set.ts'

/**
 * Who is in the cluster, in which state, and who owns which container at which epoch,
 * as this node sees it. Pure logic with an injected clock: the service feeds it
 * validated heartbeats, disconnects and ping results, and calls tick().
 *
 *   alive --(silent > suspectAfter, or disconnected)--> suspect
 *   suspect --(ping or heartbeat)--> alive
 *   suspect --(silent >= deadAfter and last confirmation ping failed)--> dead
 *   any --(leave message)--> left;  dead/left --(newer heartbeat)--> alive
 *   dead/left --(forgetAfter)--> forgotten
 *
 * With `externalVerdicts` (what msc runs: the SWIM detector, swim-probe.ts), states
 * come from setVerdict instead of silence and pings: a heartbeat makes a new member,
 * or a new incarnation, alive, a leave makes it left, and nothing else changes a state
 * here; tick() only forgets and prunes.
 *
 * A heartbeat from a peer that `isMember` refuses is dropped (`not-member`) before any
 * other check. Ownership rules, for a claim of NAME at epoch E by peer P (the same for
 * the node's own claims, applied silently), against the record the view holds:
 *
 *   - E below the held epoch: `epoch-regression`.
 *   - E equal to it: kept if P is the owner, or retaken if the name is a tombstone P
 *     released; otherwise `owner-conflict`.
 *   - E above it (0 for an unknown name): refused as `epoch-jump` if E >= MAX_EPOCH
 *     (2^40; so nextEpoch() is always a valid wire epoch) or E - held > maxEpochJump
 *     (MAX_EPOCH_JUMP, 2^20). Otherwise taken when the name is unknown, a
 *     tombstone (nobody runs it), or already P's (an owner may raise its own epoch).
 *   - E above the epoch of a name another peer O owns (O may be this node, alive or
 *     dead): taken only with proof, else `unproven-handover`, and the owner does not
 *     change (so nothing is fenced). Proof is a `handover` on the claim that verifies
 *     (signed with O's key), with from = O, to = P, container = NAME, epoch = E; or,
 *     for a claim without a handover, `verifyGrant(claim, P, record)` returning true
 *     (the failover grant; by default there is none). When O is this node, a handover
 *     must so be signed by this node's own key: no other member can take its names.
 *   - P keeps at most `maxClaimsPerPeer` names: accepted claims past that are
 *     `claim-limit`. What P owned and no longer validly claims becomes a tombstone.
 *
 * Tombstones (owner null, the epoch and the releasing peer kept) are pruned by tick()
 * once older than `tombstoneTtlMs`, and, past `maxTombstonesPerPeer` released by one
 * peer, oldest first. A pruned name is unknown again. Records are indexed by owner and
 * by releaser: a heartbeat costs O(its claims + the names its sender owned), whatever
 * the number of records, and the view holds at most, per peer, maxClaimsPerPeer names
 * and maxTombstonesPerPeer tombstones.
 *
 * Drops of claims are counted one by one; per heartbeat and reason, the first is
 * reported as a 'drop' event as it happens and the others in one summary event.
 *
 * Claim sets (claim-set.ts): the view keeps a copy of each peer's set at a revision.
 * A heartbeat with a summary brings the copy forward when the copy's revision is within
 * [base, rev] (or base is 0) and the result has the announced count and digest;
 * otherwise (`claims-digest` when it does not match) the view keeps applying the copy
 * it has and asks for the whole set (claimsWanted), which the service fetches from the
 * peer itself and hands to applyClaimSet. A heartbeat without a summary lists the whole
 * set. The rules above are applied to the whole set whenever it changed, and at every
 * heartbeat while some of its claims are not held (so refused claims are retried and
 * counted as before); a set that is all held and unchanged costs nothing.
 */

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left'

export interface Member {
  peerId: string
  name: string
  addrs: string[]
  version: string
  role: Heartbeat['role']
  state: MemberState
  /** When a heartbeat or a direct ping last proved it alive (ms since epoch). */
  lastHeard: number
  stateSince: number
  incarnation: number
  seq: number
  containers: ContainerClaim[]
  resources: Heartbeat['resources']
  rttMs: number | null
}

export interface Ownership {
  container: string
  /** null once the owner stopped claiming it (removed or handed over): a tombstone. */
  owner: string | null
  epoch: number
  since: number
  /** For a tombstone: who released it (only they may take it back at the same epoch). */
  releasedBy?: string
}

export interface MembershipTimers {
  suspectAfterMs: number
  deadAfterMs: number
  forgetAfterMs: number
  /** Heartbeats older (or further in the future) than this are stale. */
  maxAgeMs: number
}

export interface MembershipViewInit {
  selfId: string
  timers: MembershipTimers
  now?: () => number
  /** Whether a peer belongs to the cluster; heartbeats of others are `not-member` drops. Default: everyone. */
  isMember?: (peerId: string) => boolean
  /**
   * Proof other than a handover (the failover grant): asked for a claim without a
   * handover that would take a name another peer (or this node) owns at a lower
   * epoch. Default: none, such claims are refused. Must not throw (a throw is false).
   */
  verifyGrant?: (claim: ContainerClaim, claimant: string, current: Ownership) => boolean
  /** Names one peer may own in this view (default MAX_CLAIM_SET, 16384). */
  maxClaimsPerPeer?: number
  /** Tombstones kept per releasing peer, oldest pruned first (default 1024). */
  maxTombstonesPerPeer?: number
  /** Tombstones are pruned by tick() this long after the release (default 10 min). */
  tombstoneTtlMs?: number
  /** How far above the held epoch (0 for an unknown name) a claim may be (default MAX_EPOCH_JUMP, 2^20). */
  maxEpochJump?: number
  /**
   * Verdicts come from a failure detector (the SWIM detector, swim-probe.ts) through
   * setVerdict: a heartbeat then makes a new member, or a new incarnation, alive, but
   * leaves a known member's state as it is, and tick() suspects nobody for silence.
   */
  externalVerdicts?: boolean
}

export const DEFAULT_MAX_CLAIMS_PER_PEER = MAX_CLAIM_SET
export const DEFAULT_MAX_TOMBSTONES_PER_PEER = 1024
export const DEFAULT_TOMBSTONE_TTL_MS = 10 * 60_000

export interface MembershipEvents {
  'member:state': CustomEvent<{ peerId: string; from: MemberState | null; to: MemberState }>
  'owner:change': CustomEvent<{ container: string; from: string | null; to: string | null; epoch: number }>
  'drop': CustomEvent<{ peerId: string; reason: DropReason; detail: string }>
}

/** A claim set the view could not rebuild: the revision its owner announced. */
export interface ClaimsWanted {
  incarnation: number
  rev: number
  digest: string
  count: number
}

type Verdict = true | { reason: DropReason; detail: string }

export class MembershipView extends TypedEventEmitter<MembershipEvents> {
  readonly selfId: string
  private readonly timers: MembershipTimers
  private readonly now: () => number
  private readonly isMember: (peerId: string) => boolean
  private readonly verifyGrant?: (claim: ContainerClaim, claimant: string, current: Ownership) => boolean
  /** Names of containers being started here (reserveLocal): name -> epoch. */
  private readonly reserved = new Map<string, number>()
  private readonly maxClaimsPerPeer: number
  private readonly maxTombstonesPerPeer: number
  private readonly tombstoneTtlMs: number
  private readonly maxEpochJump: number
  private readonly byPeer = new Map<string, Member>()
  private readonly owners = new Map<string, Ownership>()
  /** owner -> the names it owns. */
  private readonly ownedBy = new Map<string, Set<string>>()
  /** Every tombstone, oldest release first (re-released names move to the end). */
  private readonly tombstones = new Set<string>()
  /** releaser -> its tombstones, oldest first. */
  private readonly tombstonesBy = new Map<string, Set<string>>()
  private readonly pingFailedSince = new Map<string, number>()
  /** Each peer's claim set as last rebuilt or fetched. */
  private readonly copies = new Map<string, ClaimSetCopy>()
  /** Peers whose set this view could not rebuild from their heartbeats: what it should fetch. */
  private readonly wanted = new Map<string, ClaimsWanted>()
  private readonly dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>

  private acceptedCount = 0
  private workCount = 0
  private readonly externalVerdicts: boolean

  constructor (init: MembershipViewInit) {
    super()
    this.selfId = init.selfId
    this.timers = init.timers
    this.now = init.now ?? Date.now
    this.isMember = init.isMember ?? (() => true)
    this.verifyGrant = init.verifyGrant
    this.maxClaimsPerPeer = init.maxClaimsPerPeer ?? DEFAULT_MAX_CLAIMS_PER_PEER
    this.maxTombstonesPerPeer = init.maxTombstonesPerPeer ?? DEFAULT_MAX_TOMBSTONES_PER_PEER
    this.tombstoneTtlMs = init.tombstoneTtlMs ?? DEFAULT_TOMBSTONE_TTL_MS
    this.maxEpochJump = init.maxEpochJump ?? MAX_EPOCH_JUMP
    this.externalVerdicts = init.externalVerdicts === true
  }

  /** Counts a message the codec refused (it never reached ingest). */
  countDrop (peerId: string, reason: DropReason, detail: string): void {
    this.dropped[reason]++
    this.safeDispatch('drop', { peerId, reason, detail })
  }

  /** Applies a validated heartbeat or leave. Returns false when it was dropped. */
  ingest (hb: Heartbeat): boolean {
    if (hb.peerId === this.selfId) return false
    if (!this.isMember(hb.peerId)) {
      this.countDrop(hb.peerId, 'not-member', `${hb.type} from a peer that is not a member of this cluster`)
      return false
    }
    const now = this.now()
    if (Math.abs(now - hb.sentAt) > this.timers.maxAgeMs) {
      this.countDrop(hb.peerId, 'stale', `sent ${now - hb.sentAt} ms ago`)
      return false
    }
    const known = this.byPeer.get(hb.peerId)
    if (known != null && (hb.incarnation < known.incarnation || (hb.incarnation === known.incarnation && hb.seq <= known.seq))) {
      this.countDrop(hb.peerId, 'replayed', `incarnation ${hb.incarnation} seq ${hb.seq} <= ${known.incarnation}/${known.seq}`)
      return false
    }
    this.acceptedCount++
    const m: Member = {
      peerId: hb.peerId,
      name: hb.name,
      addrs: hb.addrs,
      version: hb.version,
      role: hb.role,
      state: known?.state ?? 'alive',
      lastHeard: now,
      stateSince: known?.stateSince ?? now,
      incarnation: hb.incarnation,
      seq: hb.seq,
      containers: known?.containers ?? [],
      resources: hb.resources,
      rttMs: known?.rttMs ?? null
    }
    this.byPeer.set(hb.peerId, m)
    this.pingFailedSince.delete(hb.peerId)
    const keep = this.externalVerdicts && known != null && known.incarnation === hb.incarnation && known.state !== 'left'
    this.setState(m, hb.type === 'leave' ? 'left' : keep ? known.state : 'alive', known == null ? null : known.state)
    this.syncClaims(m, hb)
    return true
  }

  /** Brings the peer's claim set up to what its heartbeat says (class comment). */
  private syncClaims (m: Member, hb: Heartbeat): void {
    const s = hb.claims
    const copy = this.copies.get(m.peerId)
    if (s == null) {
      this.wanted.delete(m.peerId)
      this.adopt(m, { incarnation: hb.incarnation, rev: -1, digest: '', claims: new Map(hb.containers.map((c) => [c.name, c])) })
      return
    }
    const current = copy != null && copy.incarnation === hb.incarnation ? copy : undefined
    if (current != null && current.rev >= s.rev) {
      if (current.rev === s.rev && current.digest !== s.digest) {
        this.countDrop(m.peerId, 'claims-digest', `revision ${s.rev}: digest ${s.digest.slice(0, 12)}, the set held here has ${current.digest.slice(0, 12)}`)
        this.want(m, hb, s)
      }
      this.reapply(m, current)
      return
    }
    const from = s.base === 0 ? new Map<string, ContainerClaim>() : current != null && current.rev >= s.base ? current.claims : null
    const next = from == null ? null : rebuild(from, hb.containers, s)
    if (next == null) {
      if (from != null) this.countDrop(m.peerId, 'claims-digest', `revision ${s.rev} from ${s.base}: the changes do not give ${s.count} claims with digest ${s.digest.slice(0, 12)}`)
      if (hb.type === 'heartbeat') this.want(m, hb, s)
      if (copy != null) this.reapply(m, copy)
      return
    }
    this.wanted.delete(m.peerId)
    this.adopt(m, { incarnation: hb.incarnation, rev: s.rev, digest: s.digest, claims: next })
  }

  private want (m: Member, hb: Heartbeat, s: ClaimSummary): void {
    this.wanted.set(m.peerId, { incarnation: hb.incarnation, rev: s.rev, digest: s.digest, count: s.count })
  }

  private adopt (m: Member, copy: ClaimSetCopy): void {
    this.copies.set(m.peerId, copy)
    this.applyClaims(m, [...copy.claims.values()])
  }

  /** The rules again, unless every claim of the set is held as claimed (then nothing would change). */
  private reapply (m: Member, copy: ClaimSetCopy): void {
    const owned = this.ownedBy.get(m.peerId)?.size ?? 0
    if (owned === copy.claims.size && m.containers.length === copy.claims.size) return
    this.applyClaims(m, [...copy.claims.values()])
  }

  /** The set this view lacks for `peerId` (the revision its last heartbeat announced), if any. */
  claimsWanted (peerId: string): ClaimsWanted | undefined {
    return this.wanted.get(peerId)
  }

  /**
   * A peer's whole claim set, fetched from the peer itself (the caller authenticated
   * it and checked every page). Applied when it is for the peer's current incarnation,
   * newer than the copy held, and has the digest it says; a set at the revision the
   * peer's heartbeat announced must also have that heartbeat's digest. Returns whether
   * it was applied.
   */
  applyClaimSet (peerId: string, set: { incarnation: number; rev: number; digest: string; claims: ContainerClaim[] }): boolean {
    const m = this.byPeer.get(peerId)
    if (m == null || m.incarnation !== set.incarnation) return false
    const copy = this.copies.get(peerId)
    if (copy != null && copy.incarnation === set.incarnation && copy.rev >= set.rev) return false
    const claims = new Map(set.claims.map((c) => [c.name, c]))
    const w = this.wanted.get(peerId)
    if (claims.size !== set.claims.length || claimDigest(claims.values()) !== set.digest) {
      this.countDrop(peerId, 'claims-digest', `fetched revision ${set.rev}: ${set.claims.length} claims do not give digest ${set.digest.slice(0, 12)}`)
      return false
    }
    if (w != null && w.incarnation === set.incarnation && w.rev === set.rev && w.digest !== set.digest) {
      this.countDrop(peerId, 'claims-digest', `fetched revision ${set.rev} has digest ${set.digest.slice(0, 12)}, its heartbeat said ${w.digest.slice(0, 12)}`)
      return false
    }
    if (w != null && (w.incarnation !== set.incarnation || w.rev <= set.rev)) this.wanted.delete(peerId)
    this.adopt(m, { incarnation: set.incarnation, rev: set.rev, digest: set.digest, claims })
    return true
  }

  /**
   * Whether `claimant` may hold `c` in this view (the rules in the class comment).
   * Changes nothing.
   */
  private judge (claimant: string, c: ContainerClaim): Verdict {
    const o = this.owners.get(c.name)
    if (o != null && c.epoch < o.epoch) return { reason: 'epoch-regression', detail: `${c.name} at epoch ${c.epoch} < ${o.epoch}` }
    if (o != null && c.epoch === o.epoch) {
      if (o.owner === claimant || (o.owner == null && o.releasedBy === claimant)) return true
      return { reason: 'owner-conflict', detail: `${c.name} at epoch ${c.epoch} is owned by ${o.owner ?? `- (released by ${o.releasedBy ?? '-'})`}` }
    }
    const held = o?.epoch ?? 0
    if (c.epoch >= MAX_EPOCH || c.epoch - held > this.maxEpochJump) {
      return { reason: 'epoch-jump', detail: `${c.name} at epoch ${c.epoch}, ${o == null ? 'unknown name' : `held at ${held}`}: at most ${this.maxEpochJump} above, below ${MAX_EPOCH}` }
    }
    if (o == null || o.owner == null || o.owner === claimant) return true
    return this.proven(claimant, c, o)
  }

  /** A claim that would take a name another peer owns: a verifying handover from that owner, or a grant. */
  private proven (claimant: string, c: ContainerClaim, o: Ownership): Verdict {
    const refuse = (why: string): Verdict => ({ reason: 'unproven-handover', detail: `${c.name} at epoch ${c.epoch} is owned by ${o.owner ?? '-'} at ${o.epoch}: ${why}` })
    const h = c.handover
    if (h == null) {
      let granted = false
      try {
        granted = this.verifyGrant?.(c, claimant, o) === true
      } catch {}
      return granted ? true : refuse('no handover')
    }
    if (h.container !== c.name || h.epoch !== c.epoch || h.to !== claimant) return refuse(`the handover is for ${h.container}@${h.epoch} to ${h.to}`)
    if (h.from !== o.owner) return refuse(`the handover is from ${h.from}, not from the owner`)
    if (!verifyHandover(h)) return refuse('the handover signature does not verify')
    return true
  }

  private applyClaims (m: Member, claims: ContainerClaim[]): void {
    const kept: ContainerClaim[] = []
    const claimed = new Set<string>()
    const more = new Map<DropReason, string[]>()
    const refuse = (reason: DropReason, detail: string, name: string): void => {
      const names = more.get(reason)
      if (names == null) {
        // The first of its kind in this heartbeat is reported at once, the rest together below.
        more.set(reason, [])
        this.countDrop(m.peerId, reason, detail)
      } else {
        this.dropped[reason]++
        names.push(name)
      }
    }
    for (const c of claims) {
      this.workCount++
      const verdict = this.judge(m.peerId, c)
      if (verdict !== true) {
        refuse(verdict.reason, verdict.detail, c.name)
        continue
      }
      if (kept.length >= this.maxClaimsPerPeer) {
        refuse('claim-limit', `${c.name}: ${m.peerId} already holds ${this.maxClaimsPerPeer} names`, c.name)
        continue
      }
      const o = this.owners.get(c.name)
      if (o?.owner !== m.peerId || o.epoch !== c.epoch) this.setOwner(c.name, m.peerId, c.epoch)
      kept.push(c)
      claimed.add(c.name)
    }
    for (const [reason, names] of more) {
      if (names.length === 0) continue
      const shown = names.slice(0, 5).join(', ')
      this.safeDispatch('drop', { peerId: m.peerId, reason, detail: `${names.length} more claims in this heartbeat: ${shown}${names.length > 5 ? ', ...' : ''}` })
    }
    m.containers = kept
    // What this peer owned and no longer claims is released, its epoch remembered.
    this.releaseAllBut(m.peerId, claimed)
  }

  /** Our own containers: the same rules, so the view never disagrees with itself. */
  setLocalClaims (claims: ContainerClaim[]): void {
    const mine = new Set<string>()
    for (const c of claims) {
      this.workCount++
      if (this.takeLocal(c)) mine.add(c.name)
    }
    // A name being started here has no record yet: still ours.
    for (const [name, epoch] of this.reserved) {
      if (mine.has(name)) continue
      const o = this.owners.get(name)
      if (o?.owner === this.selfId && o.epoch === epoch) mine.add(name)
    }
    this.releaseAllBut(this.selfId, mine)
  }

  /**
   * A container is about to start here under `name` at `epoch`: the name is ours in
   * this view from now on, before its record exists and before the next heartbeat
   * lists it. Without this, a member's claim of the name heard in between (any
   * epoch: the name was unknown) would take it, and this node would fence its own new
   * container. Judged like our own claims; false (nothing changed) when the view gives
   * the name to another peer. `unreserveLocal` ends it, once the record is written or
   * the start failed.
   */
  reserveLocal (name: string, epoch: number): boolean {
    if (!this.takeLocal({ name, epoch, state: 'created' })) return false
    this.reserved.set(name, epoch)
    return true
  }

  /** One claim of ours, judged by the rules for everyone's: recorded (true) or not. */
  private takeLocal (c: ContainerClaim): boolean {
    if (this.judge(this.selfId, c) !== true) return false
    const o = this.owners.get(c.name)
    if (o?.owner !== this.selfId || o.epoch !== c.epoch) this.setOwner(c.name, this.selfId, c.epoch)
    return true
  }

  /** Ends a reservation; the next local claims keep the name or release it. */
  unreserveLocal (name: string): void {
    this.reserved.delete(name)
  }

  /**
   * A peer removed from the cluster for good (`msc peer rm`): forgotten at once, without
   * an event, and every name it owned is released (a tombstone), so that others may
   * take it at a higher epoch without a handover.
   */
  forget (peerId: string): void {
    this.byPeer.delete(peerId)
    this.pingFailedSince.delete(peerId)
    this.copies.delete(peerId)
    this.wanted.delete(peerId)
    this.releaseAllBut(peerId, new Set())
  }

  private releaseAllBut (owner: string, keep: Set<string>): void {
    const owned = this.ownedBy.get(owner)
    if (owned == null) return
    for (const name of [...owned]) {
      this.workCount++
      if (keep.has(name)) continue
      const o = this.owners.get(name)
      if (o != null) this.setOwner(name, null, o.epoch)
    }
  }

  private setOwner (container: string, owner: string | null, epoch: number): void {
    const prev = this.owners.get(container)
    if (prev != null) this.unindex(prev)
    const entry: Ownership = { container, owner, epoch, since: this.now() }
    if (owner == null && prev?.owner != null) entry.releasedBy = prev.owner
    this.owners.set(container, entry)
    this.index(entry)
    if (prev?.owner !== owner || prev?.epoch !== epoch) {
      this.safeDispatch('owner:change', { container, from: prev?.owner ?? null, to: owner, epoch })
    }
    if (owner == null) {
      const mine = this.tombstonesBy.get(entry.releasedBy ?? '')
      for (const name of mine ?? []) {
        if (mine == null || mine.size <= this.maxTombstonesPerPeer) break
        this.prune(name)
      }
    }
  }

  private index (o: Ownership): void {
    if (o.owner != null) {
      let set = this.ownedBy.get(o.owner)
      if (set == null) this.ownedBy.set(o.owner, set = new Set())
      set.add(o.container)
      return
    }
    this.tombstones.add(o.container)
    const by = o.releasedBy ?? ''
    let set = this.tombstonesBy.get(by)
    if (set == null) this.tombstonesBy.set(by, set = new Set())
    set.add(o.container)
  }

  private unindex (o: Ownership): void {
    const map = o.owner != null ? this.ownedBy : this.tombstonesBy
    const key = o.owner ?? o.releasedBy ?? ''
    const set = map.get(key)
    set?.delete(o.container)
    if (set?.size === 0) map.delete(key)
    if (o.owner == null) this.tombstones.delete(o.container)
  }

  /** Forgets a tombstone: the name is unknown again. */
  private prune (container: string): void {
    this.workCount++
    const o = this.owners.get(container)
    if (o == null || o.owner != null) {
      this.tombstones.delete(container)
      return
    }
    this.unindex(o)
    this.owners.delete(container)
  }

  /** The transport lost its connection to the peer: suspect it now, not later. */
  markDisconnected (peerId: string): void {
    const m = this.byPeer.get(peerId)
    if (m?.state === 'alive') this.setState(m, 'suspect', 'alive')
  }

  /** The failure detector's verdict on a member this view knows (externalVerdicts). A left member stays left. */
  setVerdict (peerId: string, state: 'alive' | 'suspect' | 'dead'): void {
    const m = this.byPeer.get(peerId)
    if (m == null || m.state === 'left') return
    if (state === 'alive') m.lastHeard = this.now()
    this.setState(m, state, m.state)
  }

  /** Direct evidence the member is up (it answered a probe): when it was last heard, not its state. */
  heard (peerId: string, rttMs?: number): void {
    const m = this.byPeer.get(peerId)
    if (m == null || m.state === 'left') return
    m.lastHeard = this.now()
    if (rttMs != null) m.rttMs = rttMs
  }

  /** A direct ping answered. */
  confirmAlive (peerId: string, rttMs: number): void {
    const m = this.byPeer.get(peerId)
    if (m == null || m.state === 'left') return
    m.lastHeard = this.now()
    m.rttMs = rttMs
    this.pingFailedSince.delete(peerId)
    if (m.state !== 'alive') this.setState(m, 'alive', m.state)
  }

  /** A direct ping failed. */
  confirmFailed (peerId: string): void {
    if (!this.byPeer.has(peerId)) return
    if (!this.pingFailedSince.has(peerId)) this.pingFailedSince.set(peerId, this.now())
  }

  /**
   * Advances timers. Returns the suspects to confirm with a direct ping; the caller
   * reports back through confirmAlive / confirmFailed.
   */
  tick (): { confirm: string[] } {
    const now = this.now()
    const confirm: string[] = []
    for (const name of this.tombstones) {
      const o = this.owners.get(name)
      if (o != null && now - o.since <= this.tombstoneTtlMs) break
      this.prune(name)
    }
    for (const m of [...this.byPeer.values()]) {
      const silent = now - m.lastHeard
      if (m.state === 'alive' && !this.externalVerdicts && silent > this.timers.suspectAfterMs) this.setState(m, 'suspect', 'alive')
      if (m.state === 'suspect' && !this.externalVerdicts) {
        if (silent >= this.timers.deadAfterMs && this.pingFailedSince.has(m.peerId)) this.setState(m, 'dead', 'suspect')
        else confirm.push(m.peerId)
      }
      if ((m.state === 'dead' || m.state === 'left') && now - m.stateSince > this.timers.forgetAfterMs) {
        this.byPeer.delete(m.peerId)
        this.pingFailedSince.delete(m.peerId)
        this.copies.delete(m.peerId)
        this.wanted.delete(m.peerId)
      }
    }
    return { confirm }
  }

  private setState (m: Member, to: MemberState, from: MemberState | null): void {
    if (from === to && from != null) return
    m.state = to
    m.stateSince = this.now()
    this.safeDispatch('member:state', { peerId: m.peerId, from, to })
  }

  private safeDispatch<K extends keyof MembershipEvents> (type: K, detail: MembershipEvents[K]['detail']): void {
    this.dispatchEvent(new CustomEvent(type, { detail }))
  }

  get (peerId: string): Member | undefined {
    return this.byPeer.get(peerId)
  }
  members (): Member[] {
    return [...this.byPeer.values()].sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId))
  }
  alive (): Member[] {
    return this.members().filter((m) => m.state === 'alive')
  }
  ownership (): Ownership[] {
    return [...this.owners.values()].sort((a, b) => a.container.localeCompare(b.container))
  }
  /**
   * Which other peer's container holds ADDRESS (its claim says so and the view has the
   * peer as the name's owner), if any.
   */
  addressHolder (address: string): { peerId: string; name: string } | undefined {
    for (const [peerId, copy] of this.copies) {
      if (peerId === this.selfId) continue
      for (const c of copy.claims.values()) {
        if (c.address === address && this.owners.get(c.name)?.owner === peerId) return { peerId, name: c.name }
      }
    }
    return undefined
  }

  ownerOf (container: string): Ownership | undefined {
    return this.owners.get(container)
  }
  /** The epoch a new owner of `container` must use. */
  nextEpoch (container: string): number {
    return (this.owners.get(container)?.epoch ?? 0) + 1
  }
  stats (): { accepted: number; dropped: Record<DropReason, number> } {
    return { accepted: this.acceptedCount, dropped: { ...this.dropped } }
  }
  /** How many ownership records the view holds: names with an owner, and tombstones. */
  records (): { owned: number; tombstones: number } {
    return { owned: this.owners.size - this.tombstones.size, tombstones: this.tombstones.size }
  }
  /** Record operations done so far (claims judged, names released, tombstones pruned): ingest's cost, for tests and diagnostics. */
  get work (): number {
    return this.workCount
  }
}
