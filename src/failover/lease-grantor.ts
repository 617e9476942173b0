import fs from 'node:fs/promises'
import path from 'node:path'
import { z } from 'zod'
import { MAX_EPOCH, verifyHandover, type Handover } from '../cluster/handover.ts'
import { writeFileAtomic } from '../util/atomic-file.ts'
import { MscError } from '../util/errors.ts'
import { containerName, epochNumber, peerIdText } from './grant.ts'

/**
 * The grantor: every member's vote on who holds the lease of each container
 * (protocols/lease.md, "The grantor's rules"). Pure logic over an injected monotonic
 * clock and an injected store, so that every rule can be tested with a fake clock.
 *
 * Per container it remembers, on disk, the highest epoch it granted and to whom
 * ({epoch, holder}), and, in memory only, until when that lease runs (`expiresAt`, on
 * its own monotonic clock: receipt of the last grant or renewal + leaseMs). It grants
 * at most one holder per (container, epoch), ever: the record is persisted before the
 * answer leaves, and epochs only go up. Another holder gets a higher epoch only with
 * the current holder's signed handover (a migration), or once the lease has run out on
 * this grantor's clock and the node's membership view does not see the old holder
 * running it (a failover).
 *
 * Decisions are serialized (one at a time, including the save), so two requests racing
 * for the same epoch cannot both win.
 */

/** The persisted part of a record. */
export interface GrantorRecord {
  epoch: number
  holder: string
  /**
   * The holder keeps the container without renewing (stopped by its user, or its node
   * stopped on purpose with the container left running): never taken over, however
   * long ago it expired, until the holder renews it again or leaves the cluster.
   */
  parked?: boolean
}
/** Container name -> record, as persisted. */
export type GrantorRecords = Record<string, GrantorRecord>

export interface GrantorStore {
  load: () => Promise<GrantorRecords>
  save: (records: GrantorRecords) => Promise<void>
}

export type GrantorRefusalReason =
  | 'bad-request' // epoch out of range, a jump over 2^20, an invalid name
  | 'stale-epoch' // below the epoch this grantor granted
  | 'held' // this epoch is another holder's
  | 'bad-handover' // the handover does not move this lease to the requester
  | 'lease-live' // a failover while the current lease still runs here
  | 'owner-alive' // a failover while the membership view sees the owner running it
  | 'full' // MAX_GRANTOR_RECORDS containers already
  | 'store-failed' // the record could not be persisted: nothing granted
  | 'parked' // a failover of a lease its holder parked (stopped on purpose)
  | 'unknown-lease' // a failover of a lease this grantor never granted: it cannot know it ran out
  | 'not-owner' // a new lease (or epoch) for a name the membership view says another peer owns

export type LeaseDecision =
  | { granted: true; expiresInMs: number }
  | { granted: false; reason: GrantorRefusalReason; detail: string; epoch?: number; holder?: string }

export interface LeaseRequestItem {
  container: string
  epoch: number
  /** The current holder's handover of the container to the requester at `epoch`. */
  handover?: Handover
  /** A failover (see 'unknown-lease'). */
  takeover?: boolean
}

export interface LeaseGrantorInit {
  leaseMs: number
  /** Monotonic milliseconds. */
  now: () => number
  store: GrantorStore
  /**
   * The node's membership view: false when `holder` is seen alive and running
   * `container`, so a failover must not take it even if its lease ran out here.
   */
  mayTakeOver?: (container: string, holder: string) => boolean
  /** The membership view on a new lease or a raised epoch (no handover, no takeover): false when another peer owns the name. */
  mayHold?: (container: string, holder: string) => boolean
  /** Whether a peer is still a member of the cluster (not removed). */
  isMember?: (peer: string) => boolean
}

/** Most containers a grantor keeps records of (and a store file may hold). */
export const MAX_GRANTOR_RECORDS = 100_000
/** Largest epoch step one request may take (as membership's MAX_EPOCH_JUMP). */
export const MAX_EPOCH_STEP = 2 ** 20

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/

interface LiveRecord extends GrantorRecord {
  expiresAt: number
}

export class LeaseGrantor {
  readonly leaseMs: number
  private readonly now: () => number
  private readonly store: GrantorStore
  private readonly mayTakeOver?: (container: string, holder: string) => boolean
  private readonly mayHold?: (container: string, holder: string) => boolean
  private readonly isMember?: (peer: string) => boolean
  private readonly map = new Map<string, LiveRecord>()
  private tail: Promise<unknown> = Promise.resolve()
  private started = false

  constructor (init: LeaseGrantorInit) {
    if (!(init.leaseMs > 0)) throw new Error('leaseMs must be positive')
    this.leaseMs = init.leaseMs
    this.now = init.now
    this.store = init.store
    this.mayTakeOver = init.mayTakeOver
    this.mayHold = init.mayHold
    this.isMember = init.isMember
  }

  /**
   * Loads the records. Each gets a whole lease from now: after a restart this grantor
   * does not know when it last renewed a lease, so it waits a full lease before it
   * lets anyone else take it (the holder, renewing meanwhile, keeps it).
   */
  async start (): Promise<void> {
    const loaded = await this.store.load()
    const expiresAt = this.now() + this.leaseMs
    this.map.clear()
    for (const [container, r] of Object.entries(loaded)) this.map.set(container, { epoch: r.epoch, holder: r.holder, ...(r.parked === true ? { parked: true } : {}), expiresAt })
    this.started = true
  }

  /** Decides whether `holder` (the authenticated requester) gets the lease; see the file comment and protocols/lease.md. */
  async decide (holder: string, req: LeaseRequestItem): Promise<LeaseDecision> {
    return await this.serial(async () => await this.decideNow(holder, req))
  }

  /**
   * The holder gives its lease up (its container was removed, stopped, handed over):
   * if the record is still `holder`'s at `epoch`, it expires now. The record stays, so
   * epochs only go up. True if something was released.
   */
  async release (holder: string, container: string, epoch: number, mode: ReleaseMode = 'expire'): Promise<boolean> {
    return await this.serial(async () => {
      const r = this.map.get(container)
      if (r == null || r.holder !== holder || r.epoch !== epoch) return false
      if (mode === 'expire' && r.parked !== true) {
        r.expiresAt = Number.NEGATIVE_INFINITY
        return true
      }
      // Park, remove, and the expiry of a parked lease change what a restart must
      // remember: persisted before the answer. Its holder expiring a parked lease says
      // the container died while the holder was down: no longer parked, and over, so
      // that a standby may take it over.
      const next = new Map(this.map)
      if (mode === 'remove') next.delete(container)
      else if (mode === 'park') next.set(container, { ...r, parked: true })
      else next.set(container, { epoch: r.epoch, holder: r.holder, expiresAt: Number.NEGATIVE_INFINITY })
      await this.store.save(recordsOf(next))
      this.map.clear()
      for (const [c, x] of next) this.map.set(c, x)
      return true
    })
  }

  /** Every record, with the time its lease has left here (0 once expired), for status. */
  records (): Array<{ container: string; epoch: number; holder: string; msLeft: number }> {
    const now = this.now()
    return [...this.map].map(([container, r]) => ({ container, epoch: r.epoch, holder: r.holder, msLeft: Math.max(0, Math.ceil(r.expiresAt - now)) }))
  }

  private async serial<T> (fn: () => Promise<T>): Promise<T> {
    const next = this.tail.catch(() => {}).then(fn)
    this.tail = next
    return await next
  }

  private async decideNow (holder: string, req: LeaseRequestItem): Promise<LeaseDecision> {
    if (!this.started) throw new Error('lease grantor not started')
    const { container, epoch, handover } = req
    if (!Number.isInteger(epoch) || epoch < 1 || epoch > MAX_EPOCH - 1) {
      return refuse('bad-request', `epoch ${epoch} is not an integer from 1 to ${MAX_EPOCH - 1}`)
    }
    if (typeof container !== 'string' || !NAME_RE.test(container)) return refuse('bad-request', 'invalid container name')
    const r = this.map.get(container)
    if (r == null) {
      // A takeover needs grantors that know the old lease ran out. One that never granted
      // it (a member the holder did not know of yet, or one that lost its records) could
      // otherwise make a majority with others while the holder still renews.
      if (req.takeover === true) return refuse('unknown-lease', `this grantor holds no lease of ${container}: it cannot tell that its holder stopped renewing`)
      if (req.handover == null && this.mayHold?.(container, holder) === false) return refuse('not-owner', `the membership says another peer owns ${container}`)
      if (this.map.size >= MAX_GRANTOR_RECORDS) return refuse('full', `this grantor keeps at most ${MAX_GRANTOR_RECORDS} leases`)
      return await this.grant(container, epoch, holder)
    }
    const current = { epoch: r.epoch, holder: r.holder }
    if (epoch < r.epoch) {
      return refuse('stale-epoch', `${container} is at epoch ${r.epoch} (holder ${r.holder}), above ${epoch}`, current)
    }
    if (epoch === r.epoch) {
      if (holder !== r.holder) return refuse('held', `${container} at epoch ${epoch} is held by ${r.holder}`, current)
      // A renewal, even of a lease that ran out here: nobody else took it meanwhile.
      if (r.parked === true) return await this.grant(container, epoch, holder)
      r.expiresAt = this.now() + this.leaseMs
      return { granted: true, expiresInMs: this.leaseMs }
    }
    if (epoch - r.epoch > MAX_EPOCH_STEP) {
      return refuse('bad-request', `epoch ${epoch} jumps more than ${MAX_EPOCH_STEP} over ${r.epoch}`, current)
    }
    if (handover != null) {
      // A migration: the holder itself signed the lease over to the requester.
      const why = handoverMismatch(handover, { container, epoch, from: r.holder, to: holder })
      if (why != null) return refuse('bad-handover', why, current)
      return await this.grant(container, epoch, holder)
    }
    // The holder raising its own epoch: still one holder.
    if (holder === r.holder && req.takeover !== true) {
      if (this.mayHold?.(container, holder) === false) return refuse('not-owner', `the membership says another peer owns ${container}`, current)
      return await this.grant(container, epoch, holder)
    }
    // A failover. The lease must have run out on this grantor's clock, whether or not
    // the old holder is still a member: a removed node cannot renew, but its copy runs
    // until its own deadline, which only the expiry here waits out.
    const left = r.expiresAt - this.now()
    if (left > 0) {
      return refuse('lease-live', `the lease of ${container} at epoch ${r.epoch} (holder ${r.holder}) runs ${Math.ceil(left)} ms more here`, current)
    }
    // A removed member is not in the membership view's judgement any more.
    const removed = this.isMember != null && !this.isMember(r.holder)
    if (r.parked === true && !removed && holder !== r.holder) {
      return refuse('parked', `${r.holder} keeps ${container} at epoch ${r.epoch} without renewing (stopped, or its node stopped on purpose): only it, or its removal from the cluster, frees it`, current)
    }
    if (!removed && this.mayTakeOver?.(container, r.holder) === false) {
      return refuse('owner-alive', `${r.holder} is seen alive and running ${container}`, current)
    }
    return await this.grant(container, epoch, holder)
  }

  /** Records and persists the grant, then answers: a grant is never given that a restart could forget. */
  private async grant (container: string, epoch: number, holder: string): Promise<LeaseDecision> {
    const out = recordsOf(this.map)
    out[container] = { epoch, holder }
    try {
      await this.store.save(out)
    } catch (err) {
      // Nothing changes in memory: a record that did reach the disk anyway only makes
      // this grantor stricter after a restart (the requester never got the grant).
      return refuse('store-failed', `the lease record could not be saved: ${(err as Error).message}`)
    }
    // The expiry counts from after the save: later than the receipt, the safe side.
    this.map.set(container, { epoch, holder, expiresAt: this.now() + this.leaseMs })
    return { granted: true, expiresInMs: this.leaseMs }
  }
}

/** What release does: expire (the next holder need not wait), park (no takeover), remove (forget the record). */
export type ReleaseMode = 'expire' | 'park' | 'remove'

function recordsOf (map: Map<string, GrantorRecord>): GrantorRecords {
  const out: GrantorRecords = {}
  for (const [c, r] of map) out[c] = { epoch: r.epoch, holder: r.holder, ...(r.parked === true ? { parked: true } : {}) }
  return out
}

function refuse (reason: GrantorRefusalReason, detail: string, current?: GrantorRecord): LeaseDecision {
  return current == null ? { granted: false, reason, detail } : { granted: false, reason, detail, epoch: current.epoch, holder: current.holder }
}

function handoverMismatch (h: Handover, want: { container: string; epoch: number; from: string; to: string }): string | undefined {
  if (!verifyHandover(h)) return 'the handover does not verify'
  if (h.container !== want.container) return `the handover is of ${h.container}, not ${want.container}`
  if (h.epoch !== want.epoch) return `the handover is for epoch ${h.epoch}, not ${want.epoch}`
  if (h.from !== want.from) return `the handover is from ${h.from}, not from the holder ${want.from}`
  if (h.to !== want.to) return `the handover is to ${h.to}, not to the requester`
  return undefined
}

const StoreFileSchema = z.object({
  v: z.literal(1),
  records: z.record(containerName, z.object({ epoch: epochNumber, holder: peerIdText, parked: z.boolean().optional() }).strict())
}).strict()

/**
 * The grantor's records in one JSON file, `{ v: 1, records: { NAME: { epoch, holder } } }`,
 * written with writeFileAtomic (fsynced before the grant is answered). A missing file
 * is an empty grantor (a new node); a file that cannot be read or parsed is an error:
 * a grantor that starts from nothing could grant a second owner.
 */
export function fileGrantorStore (file: string): GrantorStore {
  return {
    async load (): Promise<GrantorRecords> {
      let text: string
      try {
        text = await fs.readFile(file, 'utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
        throw new MscError('INVALID_STATE', `cannot read the lease records ${file}: ${(err as Error).message}`, [], { cause: err })
      }
      let parsed: z.infer<typeof StoreFileSchema>
      try {
        parsed = StoreFileSchema.parse(JSON.parse(text))
      } catch (err) {
        throw new MscError('INVALID_STATE',
          `the lease records ${file} are corrupt: this node will not vote on leases from an empty memory, which could give a container a second owner. Restore the file; remove it only once every container of the cluster has been stopped or renewed by a quorum without this node`,
          [(err as Error).message.slice(0, 500)], { cause: err })
      }
      const n = Object.keys(parsed.records).length
      if (n > MAX_GRANTOR_RECORDS) throw new MscError('INVALID_STATE', `the lease records ${file} hold ${n} containers, over the limit of ${MAX_GRANTOR_RECORDS}`)
      return parsed.records
    },
    async save (records: GrantorRecords): Promise<void> {
      await fs.mkdir(path.dirname(file), { recursive: true })
      await writeFileAtomic(file, JSON.stringify({ v: 1, records }))
    }
  }
}
