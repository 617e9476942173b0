/**
 * The holder's side of leases: which containers this node holds a lease of, when each
 * must be renewed, and the deadline by which it must be dead if it was not.
 *
 * Timing argument (protocols/lease.md, "The holder's timing"). Let S be the monotonic
 * time, on the holder's clock, at which the holder SENT the request that reached a
 * quorum Q. Every grantor g in Q received that request after S, and set its expiry to
 * (its decision time) + leaseMs on its own clock. Any later holder needs a quorum too,
 * which shares a member g with Q, and g grants another holder (without a handover) only
 * once its expiry has passed: at least leaseMs after S, measured on g's clock.
 *
 * The holder kills its container (self-fencing) at
 *
 *     deadline = S + leaseMs - margin,   margin = max(leaseMs x driftFraction, minMarginMs)
 *
 * on its own clock. If the two clocks' rates differ by less than driftFraction (real
 * clocks differ by parts per million: NTP slews at most 500 ppm), leaseMs on g's clock
 * lasts at least leaseMs x (1 - driftFraction) on the holder's, so the deadline comes
 * first, with the rest of the margin (and minMarginMs at least, for short leases) left
 * for noticing the deadline and for the kill itself to land (the lease guard polls
 * every 100 ms). Nothing here depends on the clocks' offsets: each side only measures
 * intervals on its own monotonic clock.
 *
 * Renewals are sent every leaseMs/4, so about three of them can fail before the
 * deadline. A renewal moves the deadline only forward (a late answer to an old request
 * counts from that old request's send time, which is earlier).
 *
 * Pure logic over times the caller passes in: no timers, no I/O.
 */

export interface LeaseKeeperInit {
  leaseMs: number
  /** Monotonic milliseconds. */
  now: () => number
  /** Largest tolerated clock-rate difference between holder and grantors. Default 0.1. */
  driftFraction?: number
  /** The margin is never below this. Default 300 ms. */
  minMarginMs?: number
}

export interface HeldLease {
  container: string
  epoch: number
  /** Send time of the request the current deadline counts from. */
  sentAt: number
  /** Send time of the last renewal request (answered or not). */
  lastSend: number
  /** The container must be dead by then. */
  deadline: number
}

export class LeaseKeeper {
  readonly leaseMs: number
  readonly marginMs: number
  /** Renewals are due this long after the last send. */
  readonly renewEveryMs: number
  private readonly now: () => number
  private readonly leases = new Map<string, HeldLease>()

  constructor (init: LeaseKeeperInit) {
    const drift = init.driftFraction ?? 0.1
    if (!(drift >= 0 && drift < 0.5)) throw new Error('driftFraction must be in [0, 0.5)')
    this.leaseMs = init.leaseMs
    this.marginMs = Math.max(init.leaseMs * drift, init.minMarginMs ?? 300)
    // Renewals at leaseMs/4 must leave room for a few of them before the deadline.
    if (!(this.marginMs < init.leaseMs / 2)) throw new Error(`leaseMs ${init.leaseMs} is too short for a margin of ${this.marginMs} ms`)
    this.renewEveryMs = init.leaseMs / 4
    this.now = init.now
  }

  /** Holds `container` at `epoch` from a quorum reached by a request sent at `sentAt` (replaces any earlier lease of it). */
  hold (container: string, epoch: number, sentAt: number): HeldLease {
    const l: HeldLease = { container, epoch, sentAt, lastSend: sentAt, deadline: this.deadlineOf(sentAt) }
    this.leases.set(container, l)
    return l
  }

  /** A renewal sent at `sentAt` reached a quorum. Moves the deadline only forward; false if nothing moved. */
  renewed (container: string, epoch: number, sentAt: number): boolean {
    const l = this.leases.get(container)
    if (l == null || l.epoch !== epoch || sentAt <= l.sentAt) return false
    l.sentAt = sentAt
    l.deadline = this.deadlineOf(sentAt)
    return true
  }

  /** A renewal request for `container` was sent at `at` (answered or not): the next is due leaseMs/4 later. */
  sent (container: string, at: number): void {
    const l = this.leases.get(container)
    if (l != null && at > l.lastSend) l.lastSend = at
  }

  /** A renewal that fell short: due again at once (the deadline does not move). */
  retry (container: string): void {
    const l = this.leases.get(container)
    if (l != null) l.lastSend = Number.NEGATIVE_INFINITY
  }

  /** The leases whose renewal is due: leaseMs/4 or more since the last send. */
  due (now: number = this.now()): Array<{ container: string; epoch: number }> {
    const out: Array<{ container: string; epoch: number }> = []
    for (const l of this.leases.values()) if (now - l.lastSend >= this.renewEveryMs) out.push({ container: l.container, epoch: l.epoch })
    return out
  }

  /** The leases past their deadline: their containers must be killed now. */
  expired (now: number = this.now()): Array<{ container: string; epoch: number }> {
    const out: Array<{ container: string; epoch: number }> = []
    for (const l of this.leases.values()) if (now >= l.deadline) out.push({ container: l.container, epoch: l.epoch })
    return out
  }

  /** The container's deadline, if held. */
  deadline (container: string): number | undefined {
    return this.leases.get(container)?.deadline
  }

  /** The earliest deadline of all held leases. */
  nextDeadline (): number | undefined {
    let min: number | undefined
    for (const l of this.leases.values()) if (min == null || l.deadline < min) min = l.deadline
    return min
  }

  get (container: string): HeldLease | undefined {
    const l = this.leases.get(container)
    return l == null ? undefined : { ...l }
  }

  held (): HeldLease[] {
    return [...this.leases.values()].map((l) => ({ ...l }))
  }

  /** Stops tracking `container` (released, handed over, or fenced). */
  drop (container: string): void {
    this.leases.delete(container)
  }

  private deadlineOf (sentAt: number): number {
    return sentAt + this.leaseMs - this.marginMs
  }
}
