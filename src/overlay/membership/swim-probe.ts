/**
 * The SWIM failure detector with Lifeguard's refinements, as pure logic over an
 * injected clock, randomness and transport (the service gives it libp2p streams,
 * swim-protocol.ts; tests give it fakes). protocols/membership.md, "Failure detection".
 *
 * Each round (probeIntervalMs, stretched by local health) it probes ONE member, in a
 * shuffled round-robin order (every member is probed within N rounds). No ack within
 * the probe timeout: up to `indirectProbes` other members are asked to probe it
 * (ping-req). Still nothing: the member becomes suspect, and this node's suspicion is
 * announced. A suspicion becomes a dead verdict only when its timeout runs out:
 * Lifeguard's timeout, scaled by log10(N) and shortened, down to a minimum, as
 * independent suspicions of the same member arrive from other members. A member that
 * hears it is suspected refutes by raising its `refuted` count, which only it may do.
 *
 * Verdicts are ordered by (incarnation, refuted): incarnation is the member's start
 * time (a restart is a new one), refuted counts its refutations within it.
 *
 *   alive --(own probe and ping-reqs fail, or a suspect/dead change at >= its order)--> suspect
 *   suspect --(the member's own alive change at a higher order)--> alive
 *   suspect --(suspicion timeout)--> dead
 *   any --(its heartbeat at a newer incarnation)--> alive;  any --(its leave)--> left
 *
 * Who may say what (every change's sender is authenticated by the caller):
 *   - alive at a higher order: only the member itself (a refutation; never relayed as proof).
 *   - suspect, dead: any member; a relayed or remote `dead` is only a suspicion here
 *     (every node reaches its own dead verdict by its own timeout), and it counts as
 *     an independent confirmation only when its `by` is its sender.
 *   - left: only the member itself (its leave message), never relayed.
 *
 * Lifeguard's local health (0 to maxHealth): +1 for each of this node's probes that
 * failed, +1 more when no helper answered a ping-req at all (not even with a nack),
 * +1 for each refutation this node had to make; -1 for each probe acked. Probe interval
 * and timeout are multiplied by (1 + health), so a node that is itself slow (its acks
 * arrive late, its event loop stalls) suspects less.
 */

export type SwimState = 'alive' | 'suspect' | 'dead' | 'left'

/** A state change as it travels: piggy-backed on probes, published on the topic, in a sync. */
export interface SwimChange {
  peer: string
  incarnation: number
  refuted: number
  state: 'alive' | 'suspect' | 'dead'
  /** Who reached this verdict first (for alive: the member itself). */
  by: string
}

/** What a probed member or a helper answered: its ack or nack, with its piggy-backed changes. */
export interface ProbeReply {
  ack: boolean
  changes: SwimChange[]
}

export interface SwimTransport {
  /** Direct probe. Resolves with the target's ack, or null when none came within `timeoutMs` (never rejects). */
  ping: (target: string, changes: SwimChange[], timeoutMs: number) => Promise<ProbeReply | null>
  /**
   * Asks `via` to probe `target` within `timeoutMs`. Resolves with `via`'s answer (ack:
   * the target answered it; nack: it did not), or null when `via` did not answer at all.
   */
  pingReq: (via: string, target: string, changes: SwimChange[], timeoutMs: number) => Promise<ProbeReply | null>
}

export interface SwimDetectorInit {
  selfId: string
  incarnation: number
  transport: SwimTransport
  probeIntervalMs: number
  probeTimeoutMs: number
  /** Suspicion timeout with every expected confirmation in, before the log10(N) scaling. */
  suspicionMinMs: number
  /** Suspicion timeout with no confirmation, before the log10(N) scaling. */
  suspicionMaxMs: number
  /** Members asked to probe a target that did not answer (SWIM's k). Default 3. */
  indirectProbes?: number
  /** Each change is piggy-backed retransmitMult * ceil(log10(N + 1)) times. Default 4. */
  retransmitMult?: number
  /** Changes per message. Default MAX_PIGGYBACK. */
  maxPiggyback?: number
  maxHealth?: number
  now?: () => number
  /** [0, 1) */
  random?: () => number
  /** A member's state changed here (alive, suspect, dead, left). */
  onState?: (peer: string, state: SwimState) => void
  /**
   * This node reached a verdict of its own (it suspects or declares dead a member, or
   * refutes a suspicion of itself): the service publishes it on the topic.
   */
  onVerdict?: (change: SwimChange) => void
  /** Direct evidence that a member is up (it acked this node's probe), with the round trip. */
  onAck?: (peer: string, rttMs: number) => void
  /**
   * A direct probe of `peer` got no ack in time (before any ping-req goes out). The
   * service checks the connection it went over and replaces a stalled one. With lease
   * requests' own check (a grantor silent for a second), it is all the liveness checking
   * a connection gets: an idle node pings nothing else.
   */
  onDirectMiss?: (peer: string) => void
}

/** Changes piggy-backed on one probe message, at most. */
export const MAX_PIGGYBACK = 8
/** Lifeguard's expected independent confirmations of a suspicion (at most; N - 2 in small clusters). */
export const EXPECTED_CONFIRMATIONS = 3
export const DEFAULT_MAX_HEALTH = 8

interface Suspicion {
  since: number
  /** Distinct members that told this node directly they suspect it (the first included). */
  confirmers: Set<string>
}

interface SwimMember {
  peer: string
  incarnation: number
  refuted: number
  state: SwimState
  suspicion?: Suspicion
}

/** Orders two (incarnation, refuted) pairs: negative, zero or positive. */
function order (a: { incarnation: number; refuted: number }, b: { incarnation: number; refuted: number }): number {
  return a.incarnation !== b.incarnation ? a.incarnation - b.incarnation : a.refuted - b.refuted
}

export class SwimDetector {
  readonly selfId: string
  readonly incarnation: number
  private refutedCount = 0
  private healthScore = 0
  private readonly o: SwimDetectorInit
  private readonly now: () => number
  private readonly random: () => number
  private readonly members = new Map<string, SwimMember>()
  /** Latest change per subject, with how often it was sent. */
  private readonly queue = new Map<string, { change: SwimChange; sent: number }>()
  private order: string[] = []
  private next = 0
  /** Targets with a probe round in flight: one round per target at a time. */
  private readonly probing = new Set<string>()
  private readonly counters = { probes: 0, acks: 0, indirectAcks: 0, failed: 0, refutations: 0, deaths: 0 }

  constructor (init: SwimDetectorInit) {
    this.o = init
    this.selfId = init.selfId
    this.incarnation = init.incarnation
    this.now = init.now ?? Date.now
    this.random = init.random ?? Math.random
  }

  /** How many times this node refuted a suspicion of itself (in this incarnation). */
  get refuted (): number {
    return this.refutedCount
  }

  /** Lifeguard's local health score: 0 is healthy. */
  get health (): number {
    return this.healthScore
  }

  get stats (): Readonly<typeof this.counters> {
    return { ...this.counters }
  }

  /** The probe interval, stretched by local health. */
  intervalMs (): number {
    return this.o.probeIntervalMs * (1 + this.healthScore)
  }

  /** The direct probe timeout, stretched by local health. */
  probeTimeoutMs (): number {
    return this.o.probeTimeoutMs * (1 + this.healthScore)
  }

  /** Members this node knows (alive or suspect; dead and left ones too), itself excluded. */
  state (peer: string): SwimState | undefined {
    return this.members.get(peer)?.state
  }

  /** Known members and their order, for a push-pull sync; this node first, as alive. */
  snapshot (): SwimChange[] {
    const out: SwimChange[] = [{ peer: this.selfId, incarnation: this.incarnation, refuted: this.refutedCount, state: 'alive', by: this.selfId }]
    for (const m of this.members.values()) {
      if (m.state === 'left') continue
      out.push({ peer: m.peer, incarnation: m.incarnation, refuted: m.refuted, state: m.state, by: m.state === 'alive' ? m.peer : this.selfId })
    }
    return out
  }

  private countLive (): number {
    let n = 1
    for (const m of this.members.values()) if (m.state === 'alive' || m.state === 'suspect') n++
    return n
  }

  /**
   * The member's own heartbeat (or leave) was heard: it is a member at this incarnation.
   * A new member, or a newer incarnation, is alive; the same incarnation changes nothing
   * (only the member's refutation brings a suspect back).
   */
  heard (peer: string, incarnation: number, leaving = false): void {
    if (peer === this.selfId) return
    const m = this.members.get(peer)
    if (leaving) {
      if (m == null || incarnation >= m.incarnation) this.set(peer, { peer, incarnation, refuted: m?.incarnation === incarnation ? m.refuted : 0, state: 'left' })
      return
    }
    // Not queued for piggy-backing: others take a member's alive only from the member itself.
    if (m == null || incarnation > m.incarnation) this.set(peer, { peer, incarnation, refuted: 0, state: 'alive' })
  }

  /** Forgets a member (removed from the cluster, or forgotten by the view). */
  forget (peer: string): void {
    this.members.delete(peer)
    this.queue.delete(peer)
  }

  known (): string[] {
    return [...this.members.keys()]
  }

  private set (peer: string, m: SwimMember): void {
    const before = this.members.get(peer)?.state
    this.members.set(peer, m)
    if (before !== m.state) this.o.onState?.(peer, m.state)
  }

  /**
   * Changes received from `sender` (authenticated by the caller). `confirm`: the
   * message is the sender's own word (a probe, an ack, its published verdict), so a
   * suspicion whose `by` is the sender counts as its independent confirmation.
   */
  receive (changes: SwimChange[], sender: string, confirm = true): void {
    for (const c of changes) this.apply(c, sender, confirm)
  }

  private apply (c: SwimChange, sender: string, confirm: boolean): void {
    if (c.peer === this.selfId) {
      if (c.state === 'alive' || c.incarnation !== this.incarnation) return
      if (c.refuted >= this.refutedCount) this.refute(c.refuted)
      // An older suspicion still going round: the sender missed the refutation, so say it again.
      else if (!this.queue.has(this.selfId)) this.enqueue({ peer: this.selfId, incarnation: this.incarnation, refuted: this.refutedCount, state: 'alive', by: this.selfId })
      return
    }
    const m = this.members.get(c.peer)
    // Members are learnt from their own heartbeats, never from what others say of them.
    if (m == null || m.state === 'left') return
    const cmp = order(c, m)
    if (c.state === 'alive') {
      if (sender !== c.peer || cmp <= 0) return
      this.set(c.peer, { peer: c.peer, incarnation: c.incarnation, refuted: c.refuted, state: 'alive' })
      // A suspicion of it still queued here is stale now.
      this.queue.delete(c.peer)
      return
    }
    if (cmp < 0) return
    if (cmp > 0 || m.state === 'alive') {
      this.suspect(c.peer, c.incarnation, c.refuted, c.by, confirm && c.by === sender ? c.by : undefined)
      return
    }
    if (m.state === 'suspect' && m.suspicion != null && confirm && c.by === sender && !m.suspicion.confirmers.has(sender)) {
      m.suspicion.confirmers.add(sender)
    }
  }

  private refute (seen: number): void {
    this.refutedCount = seen + 1
    this.counters.refutations++
    this.healthDelta(1)
    const change: SwimChange = { peer: this.selfId, incarnation: this.incarnation, refuted: this.refutedCount, state: 'alive', by: this.selfId }
    this.enqueue(change)
    this.o.onVerdict?.(change)
  }

  /** `by` is who reached the verdict; only this node's own (by === selfId from a probe here) is published. */
  private suspect (peer: string, incarnation: number, refuted: number, by: string, confirmer: string | undefined, own = false): void {
    const s: Suspicion = { since: this.now(), confirmers: new Set(confirmer != null ? [confirmer] : []) }
    this.set(peer, { peer, incarnation, refuted, state: 'suspect', suspicion: s })
    const change: SwimChange = { peer, incarnation, refuted, state: 'suspect', by }
    this.enqueue(change)
    if (own) this.o.onVerdict?.(change)
  }

  /**
   * Lifeguard's suspicion timeout for a member with `confirmations` independent
   * confirmations beyond the first suspicion, in a cluster of `n` live members.
   */
  suspicionTimeoutMs (confirmations: number, n = this.countLive()): number {
    const scale = Math.max(1, Math.log10(n))
    const min = this.o.suspicionMinMs * scale
    const max = this.o.suspicionMaxMs * scale
    const k = this.expectedConfirmations(n)
    if (k < 1) return max
    const c = Math.max(0, Math.min(confirmations, k))
    return Math.max(min, max - (max - min) * Math.log(c + 1) / Math.log(k + 1))
  }

  /** Lifeguard's K: the independent confirmations a suspicion needs for its shortest timeout. */
  private expectedConfirmations (n = this.countLive()): number {
    return Math.min(EXPECTED_CONFIRMATIONS, n - 2)
  }

  /**
   * A suspicion this node holds with K + 1 members' own words (its first and K
   * confirmations) was published on the topic by that many already: every member has
   * heard enough of it to reach its shortest timeout, and a verdict of this node's on it
   * (its own failed probe, its dead verdict) is only piggy-backed, not published. When a
   * node dies, all N - 1 others see their connections close and probe it at once, and
   * each publishing its suspicion and then its dead verdict to all was 2 N^2 deliveries
   * at the moment the cluster has one member fewer to spread the load.
   */
  private heardEnough (s: Suspicion): boolean {
    const k = this.expectedConfirmations()
    return k >= 1 && s.confirmers.size >= k + 1
  }

  /** Expires suspicions whose timeout ran out: those members are dead here. */
  tick (): void {
    const now = this.now()
    for (const m of [...this.members.values()]) {
      if (m.state !== 'suspect' || m.suspicion == null) continue
      const timeout = this.suspicionTimeoutMs(Math.max(0, m.suspicion.confirmers.size - 1))
      if (now - m.suspicion.since < timeout) continue
      this.counters.deaths++
      this.set(m.peer, { peer: m.peer, incarnation: m.incarnation, refuted: m.refuted, state: 'dead' })
      const change: SwimChange = { peer: m.peer, incarnation: m.incarnation, refuted: m.refuted, state: 'dead', by: this.selfId }
      this.enqueue(change)
      if (!this.heardEnough(m.suspicion)) this.o.onVerdict?.(change)
    }
  }

  private enqueue (change: SwimChange): void {
    this.queue.set(change.peer, { change, sent: 0 })
  }

  /**
   * Changes to piggy-back on a message to `to`: a suspicion of `to` itself first (so it
   * can refute at once: Lifeguard's buddy system), then the least sent. Each change is
   * dropped from the queue after retransmitMult * ceil(log10(N + 1)) sends.
   */
  piggyback (to?: string): SwimChange[] {
    const max = this.o.maxPiggyback ?? MAX_PIGGYBACK
    const limit = (this.o.retransmitMult ?? 4) * Math.max(1, Math.ceil(Math.log10(this.countLive() + 1)))
    const entries = [...this.queue.values()].sort((a, b) => a.sent - b.sent)
    const own = to != null ? this.queue.get(to) : undefined
    const m = to != null ? this.members.get(to) : undefined
    const picked: Array<{ change: SwimChange; sent: number }> = []
    if (m != null && (m.state === 'suspect' || m.state === 'dead')) {
      const buddy = own ?? { change: { peer: m.peer, incarnation: m.incarnation, refuted: m.refuted, state: m.state, by: this.selfId } as SwimChange, sent: 0 }
      picked.push(buddy)
    }
    // This node's own refutation next: the receiver may be one that suspects it.
    const mine = this.queue.get(this.selfId)
    if (mine != null) picked.push(mine)
    for (const e of entries) {
      if (picked.length >= max) break
      if (!picked.includes(e)) picked.push(e)
    }
    const out: SwimChange[] = []
    for (const e of picked) {
      out.push(e.change)
      if (this.queue.get(e.change.peer) !== e) continue
      e.sent++
      if (e.sent >= limit) this.queue.delete(e.change.peer)
    }
    return out
  }

  /** The next member to probe: round-robin over a shuffled order, reshuffled each pass. */
  nextTarget (): string | undefined {
    for (let tries = 0; tries < 2; tries++) {
      while (this.next < this.order.length) {
        const peer = this.order[this.next++] as string
        const s = this.members.get(peer)?.state
        if (s === 'alive' || s === 'suspect') return peer
      }
      this.order = this.shuffle([...this.members.keys()])
      this.next = 0
    }
    return undefined
  }

  private shuffle<T> (a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1))
      const t = a[i] as T
      a[i] = a[j] as T
      a[j] = t
    }
    return a
  }

  private healthDelta (d: number): void {
    this.healthScore = Math.max(0, Math.min(this.o.maxHealth ?? DEFAULT_MAX_HEALTH, this.healthScore + d))
  }

  /**
   * One probe round, of `target` or the next member in order. Resolves when the
   * member answered (directly or through a helper) or is suspect. One round per target
   * at a time: a second call for a target being probed returns at once.
   */
  async probe (target = this.nextTarget(), indirect = true): Promise<void> {
    if (target == null || this.probing.has(target)) return
    const m = this.members.get(target)
    if (m == null || (m.state !== 'alive' && m.state !== 'suspect')) return
    this.probing.add(target)
    try {
      this.counters.probes++
      const started = this.now()
      const timeout = this.probeTimeoutMs()
      const direct = await this.o.transport.ping(target, this.piggyback(target), timeout)
      if (direct?.ack === true) {
        this.counters.acks++
        this.healthDelta(-1)
        this.o.onAck?.(target, this.now() - started)
        this.receive(direct.changes, target)
        return
      }
      this.o.onDirectMiss?.(target)
      // A suspect probed again needs no helpers: the probe is there to carry the suspicion to it.
      const helpers = indirect || m.state === 'alive' ? this.helpers(target) : []
      const replies = await Promise.all(helpers.map(async (via) => {
        const r = await this.o.transport.pingReq(via, target, this.piggyback(via), Math.max(timeout, this.intervalMs() - timeout))
        if (r != null) this.receive(r.changes, via)
        return r
      }))
      if (replies.some((r) => r?.ack === true)) {
        this.counters.indirectAcks++
        this.healthDelta(-1)
        return
      }
      this.counters.failed++
      // Lifeguard: no nack either means our own messages are not getting through.
      if (helpers.length > 0) this.healthDelta(replies.every((r) => r == null) ? 2 : 1)
      const now = this.members.get(target)
      if (now == null || (now.state !== 'alive' && now.state !== 'suspect')) return
      if (now.state === 'alive') {
        this.suspect(target, now.incarnation, now.refuted, this.selfId, this.selfId, true)
        return
      }
      // Already suspect on another's word: this node's own failed probe is one more
      // independent suspicion, which the others should hear in its name.
      if (now.suspicion == null || now.suspicion.confirmers.has(this.selfId)) return
      const enough = this.heardEnough(now.suspicion)
      now.suspicion.confirmers.add(this.selfId)
      if (!enough) this.o.onVerdict?.({ peer: target, incarnation: now.incarnation, refuted: now.refuted, state: 'suspect', by: this.selfId })
    } finally {
      this.probing.delete(target)
    }
  }

  /** Up to `indirectProbes` alive members other than `target`, at random. */
  private helpers (target: string): string[] {
    const alive = [...this.members.values()].filter((m) => m.state === 'alive' && m.peer !== target).map((m) => m.peer)
    return this.shuffle(alive).slice(0, this.o.indirectProbes ?? 3)
  }

  /** Members this node holds suspect: probed every round besides the round-robin one, so a refutation is heard in time. */
  suspects (): string[] {
    return [...this.members.values()].filter((m) => m.state === 'suspect').map((m) => m.peer)
  }

  /** Whether `peer` may be the target of a ping-req (a member this node holds alive or suspect). */
  mayProbe (peer: string): boolean {
    const s = this.members.get(peer)?.state
    return s === 'alive' || s === 'suspect'
  }
}
