import { TypedEventEmitter } from 'main-event'
import type { ContainerClaim, DropReason, Heartbeat } from './heartbeat.ts'

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

export interface MembershipEvents {
  'member:state': CustomEvent<{ peerId: string, from: MemberState | null, to: MemberState }>
  'owner:change': CustomEvent<{ container: string, from: string | null, to: string | null, epoch: number }>
  'drop': CustomEvent<{ peerId: string, reason: DropReason, detail: string }>
}

export class MembershipView extends TypedEventEmitter<MembershipEvents> {
  readonly selfId: string
  private readonly timers: MembershipTimers
  private readonly now: () => number
  private readonly byPeer = new Map<string, Member>()
  private readonly owners = new Map<string, Ownership>()
  private readonly pingFailedSince = new Map<string, number>()
  private readonly dropped: Record<DropReason, number> = {
    oversized: 0, malformed: 0, version: 0, 'forged-sender': 0, stale: 0, replayed: 0, 'epoch-regression': 0, 'owner-conflict': 0
  }

  private acceptedCount = 0

  constructor (init: { selfId: string, timers: MembershipTimers, now?: () => number }) {
    super()
    this.selfId = init.selfId
    this.timers = init.timers
    this.now = init.now ?? Date.now
  }

  /** Counts a message the codec refused (it never reached ingest). */
  countDrop (peerId: string, reason: DropReason, detail: string): void {
    this.dropped[reason]++
    this.safeDispatch('drop', { peerId, reason, detail })
  }

  /** Applies a validated heartbeat or leave. Returns false when it was dropped. */
  ingest (hb: Heartbeat): boolean {
    const now = this.now()
    if (hb.peerId === this.selfId) return false
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
      peerId: hb.peerId, name: hb.name, addrs: hb.addrs, version: hb.version, role: hb.role,
      state: known?.state ?? 'alive', lastHeard: now, stateSince: known?.stateSince ?? now,
      incarnation: hb.incarnation, seq: hb.seq, containers: [], resources: hb.resources, rttMs: known?.rttMs ?? null
    }
    this.byPeer.set(hb.peerId, m)
    this.pingFailedSince.delete(hb.peerId)
    if (hb.type === 'leave') {
      this.setState(m, 'left', known == null ? null : known.state)
      this.applyClaims(m, hb.containers)
      return true
    }
    this.setState(m, 'alive', known == null ? null : known.state)
    this.applyClaims(m, hb.containers)
    return true
  }

  /**
   * Ownership changes only upward: a claim at a higher epoch takes the container, the
   * same owner at the same epoch refreshes it, anything else is dropped and counted.
   */
  private applyClaims (m: Member, claims: ContainerClaim[]): void {
    const kept: ContainerClaim[] = []
    const claimed = new Set<string>()
    for (const c of claims) {
      const o = this.owners.get(c.name)
      if (o == null || c.epoch > o.epoch) {
        this.setOwner(c.name, m.peerId, c.epoch)
      } else if (c.epoch === o.epoch && (o.owner === m.peerId || (o.owner == null && o.releasedBy === m.peerId))) {
        if (o.owner == null) this.setOwner(c.name, m.peerId, c.epoch)
      } else if (c.epoch < o.epoch) {
        this.countDrop(m.peerId, 'epoch-regression', `${c.name} at epoch ${c.epoch} < ${o.epoch}`)
        continue
      } else {
        this.countDrop(m.peerId, 'owner-conflict', `${c.name} at epoch ${c.epoch} is owned by ${o.owner ?? '-'}`)
        continue
      }
      kept.push(c)
      claimed.add(c.name)
    }
    m.containers = kept
    // What this peer owned and no longer claims is released, its epoch remembered.
    for (const o of this.owners.values()) {
      if (o.owner === m.peerId && !claimed.has(o.container)) this.setOwner(o.container, null, o.epoch)
    }
  }

  /** Our own containers: the same rules, so the view never disagrees with itself. */
  setLocalClaims (claims: ContainerClaim[]): void {
    const mine = new Set<string>()
    for (const c of claims) {
      const o = this.owners.get(c.name)
      if (o == null || c.epoch > o.epoch || (c.epoch === o.epoch && (o.owner === this.selfId || (o.owner == null && o.releasedBy === this.selfId)))) {
        if (o?.owner !== this.selfId || o.epoch !== c.epoch) this.setOwner(c.name, this.selfId, c.epoch)
        mine.add(c.name)
      }
    }
    for (const o of this.owners.values()) {
      if (o.owner === this.selfId && !mine.has(o.container)) this.setOwner(o.container, null, o.epoch)
    }
  }

  private setOwner (container: string, owner: string | null, epoch: number): void {
    const prev = this.owners.get(container)
    const entry: Ownership = { container, owner, epoch, since: this.now() }
    if (owner == null && prev?.owner != null) entry.releasedBy = prev.owner
    this.owners.set(container, entry)
    if (prev?.owner !== owner || prev?.epoch !== epoch) {
      this.safeDispatch('owner:change', { container, from: prev?.owner ?? null, to: owner, epoch })
    }
  }

  /** The transport lost its connection to the peer: suspect it now, not later. */
  markDisconnected (peerId: string): void {
    const m = this.byPeer.get(peerId)
    if (m?.state === 'alive') this.setState(m, 'suspect', 'alive')
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
    for (const m of [...this.byPeer.values()]) {
      const silent = now - m.lastHeard
      if (m.state === 'alive' && silent > this.timers.suspectAfterMs) this.setState(m, 'suspect', 'alive')
      if (m.state === 'suspect') {
        if (silent >= this.timers.deadAfterMs && this.pingFailedSince.has(m.peerId)) this.setState(m, 'dead', 'suspect')
        else confirm.push(m.peerId)
      }
      if ((m.state === 'dead' || m.state === 'left') && now - m.stateSince > this.timers.forgetAfterMs) {
        this.byPeer.delete(m.peerId)
        this.pingFailedSince.delete(m.peerId)
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

  get (peerId: string): Member | undefined { return this.byPeer.get(peerId) }
  members (): Member[] { return [...this.byPeer.values()].sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId)) }
  alive (): Member[] { return this.members().filter((m) => m.state === 'alive') }
  ownership (): Ownership[] { return [...this.owners.values()].sort((a, b) => a.container.localeCompare(b.container)) }
  ownerOf (container: string): Ownership | undefined { return this.owners.get(container) }
  /** The epoch a new owner of `container` must use. */
  nextEpoch (container: string): number { return (this.owners.get(container)?.epoch ?? 0) + 1 }
  stats (): { accepted: number, dropped: Record<DropReason, number> } { return { accepted: this.acceptedCount, dropped: { ...this.dropped } } }
}
