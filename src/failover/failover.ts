/**
 * The standby side of failover: for every replica this node keeps, watch its owner;
 * when the owner is dead (or alive but no longer runs it: it lost its lease and killed
 * it), ask the cluster's majority for the lease at epoch + 1 and, once granted, restore
 * the newest generation here (the one before it if that fails). The grantors decide:
 * they grant only once the old lease expired by their own clocks, so the old copy is
 * gone before this one starts. Standbys further down the container's standby order
 * wait longer before asking, so the first standby (which every generation reaches at
 * the same time as the others) normally wins; the others are refused and back off.
 *
 * Pure decisions over a port to the node, so the state machine is tested against fakes.
 */
import { errText } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import type { ReplicaMeta } from '../replication/replica-store.ts'

export interface FailoverPort {
  selfId: string
  replicas: () => Promise<ReplicaMeta[]>
  /** The owner and epoch the membership view holds for the name (tombstone: owner null). */
  ownerOf: (name: string) => { owner: string | null; epoch: number } | undefined
  peerState: (peer: string) => 'alive' | 'suspect' | 'dead' | 'left' | undefined
  /** Still in the persisted member list (not removed with `msc peer rm`). */
  isMember: (peer: string) => boolean
  /** The state the peer last claimed the container in. */
  claimState: (peer: string, name: string) => string | undefined
  /** Resolves with the lease at `epoch` (held from then on), or throws when refused. */
  acquire: (name: string, epoch: number, signal: AbortSignal) => Promise<unknown>
  release: (name: string) => Promise<void>
  /** Restores generation `generation` of the replica as this node's container at `epoch`, with the lease proof. */
  restore: (meta: ReplicaMeta, generation: number, epoch: number, proof: unknown, signal: AbortSignal) => Promise<void>
  drop: (name: string) => Promise<void>
  hasContainer: (name: string) => Promise<boolean>
}

export interface FailoverInit {
  leaseMs: number
  logger: Logger
  /** Extra wait per place down the standby order before asking for the lease. */
  rankDelayMs?: number
  now?: () => number
  onEvent?: (e: FailoverEvent) => void
}

export type FailoverEvent =
  | { type: 'owner-lost'; container: string; owner: string; reason: string }
  | { type: 'lease-requested'; container: string; epoch: number }
  | { type: 'lease-refused'; container: string; epoch: number; reason: string }
  | { type: 'failover'; container: string; epoch: number; generation: number; from: string; ms: number; dumpedAt: number }
  | { type: 'failover-failed'; container: string; epoch: number; reason: string }
  | { type: 'replica-dropped'; container: string; reason: string }

const LIVE_STATES = new Set(['running', 'paused', 'created'])

/**
 * Rounds of restore attempts (every generation, newest first) before a standby gives
 * a replica up, and the wait before the second and third: a restore fails for passing
 * reasons too (a loaded host), and with one replica giving up loses the container.
 */
export const RESTORE_ROUNDS = 3
export const RESTORE_RETRY_MS = [10_000, 30_000]

/** Why the replica's owner no longer runs it, or null while it does (or may). Pure. */
export function ownerGone (meta: Pick<ReplicaMeta, 'owner' | 'epoch'>, own: { owner: string | null; epoch: number } | undefined, state: string | undefined, claim: string | undefined, member = true): string | null {
  // Removing a member releases its names in the view; its containers are still only in its replicas.
  if (!member && (own == null || (own.epoch === meta.epoch && (own.owner == null || own.owner === meta.owner)))) return 'its node was removed from the cluster'
  // No claim of it at all in this view: the owner died before this node started (the
  // caller passes 'dead' for an owner unheard of for long enough).
  if (own == null) return state === 'dead' ? 'its node has not been heard from since this node started' : null
  if (own.owner !== meta.owner || own.epoch !== meta.epoch) return null
  if (state === 'dead') return 'its node is dead'
  // A node that left on purpose keeps its containers running without renewing: only
  // its return, or its removal from the cluster, settles them.
  if (state === 'alive' && claim != null && !LIVE_STATES.has(claim)) return `its node no longer runs it (${claim})`
  return null
}

/** Whether a replica is someone else's business now (moved, failed over, a newer epoch). Pure. */
export function replicaStale (meta: Pick<ReplicaMeta, 'owner' | 'epoch'>, own: { owner: string | null; epoch: number } | undefined): string | null {
  if (own == null) return null
  if (own.epoch > meta.epoch) return `the cluster holds it at epoch ${own.epoch}`
  if (own.owner != null && own.owner !== meta.owner) return `another node (${own.owner}) owns it`
  return null
}

export class FailoverController {
  private readonly port: FailoverPort
  private readonly init: FailoverInit
  private readonly log: Logger
  private readonly now: () => number
  /** container -> when its owner was first seen gone, when we last asked, and for which epoch. */
  private readonly gone = new Map<string, { since: number; lastTry: number; epoch: number }>()
  private readonly busy = new Set<string>()
  /** container -> restore rounds that failed here, and when the next may start. */
  private readonly failedRounds = new Map<string, { rounds: number; retryAt: number }>()
  private timer?: NodeJS.Timeout
  private readonly stopping = new AbortController()
  private readonly inflight = new Set<Promise<void>>()
  private readonly startedAt: number

  constructor (port: FailoverPort, init: FailoverInit) {
    this.port = port
    this.init = init
    this.log = init.logger
    this.now = init.now ?? Date.now
    this.startedAt = this.now()
  }

  start (): void {
    this.timer = setInterval(() => {
      void this.tick()
    }, 250)
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    this.stopping.abort()
    await Promise.allSettled([...this.inflight])
  }

  /** One look at every replica; exported for tests. */
  async tick (): Promise<void> {
    for (const meta of await this.port.replicas().catch(() => [] as ReplicaMeta[])) {
      const name = meta.container
      if (this.busy.has(name) || meta.generations.length === 0) continue
      const own = this.port.ownerOf(name)
      // Ours now (it migrated here, or we restored it): a replica of it is of no use.
      const ours = own?.owner === this.port.selfId && own.epoch > meta.epoch && await this.port.hasContainer(name)
      const stale = ours ? 'it runs on this node now' : own?.owner === this.port.selfId ? null : replicaStale(meta, own)
      if (stale != null) {
        this.gone.delete(name)
        this.failedRounds.delete(name)
        this.busy.add(name)
        await this.port.drop(name).catch(() => {})
        this.busy.delete(name)
        this.log.info({ container: name, reason: stale }, 'replica dropped')
        this.init.onEvent?.({ type: 'replica-dropped', container: name, reason: stale })
        continue
      }
      // An owner this node has not heard of at all since it started (it died before, or
      // was forgotten): as good as dead once the others would have been heard.
      const state = this.port.peerState(meta.owner) ?? (this.now() - this.startedAt > 3 * this.init.leaseMs ? 'dead' : undefined)
      const why = ownerGone(meta, own, state, this.port.claimState(meta.owner, name), this.port.isMember(meta.owner))
      if (why == null) {
        this.gone.delete(name)
        continue
      }
      const t = this.now()
      if (t < (this.failedRounds.get(name)?.retryAt ?? Number.NEGATIVE_INFINITY)) continue
      let g = this.gone.get(name)
      if (g == null) {
        g = { since: t, lastTry: Number.NEGATIVE_INFINITY, epoch: meta.epoch + 1 }
        this.gone.set(name, g)
        this.log.warn({ container: name, owner: meta.owner, reason: why }, 'the owner of a replica is gone: failover once its lease has expired')
        this.init.onEvent?.({ type: 'owner-lost', container: name, owner: meta.owner, reason: why })
      }
      const rank = Math.max(0, meta.standbys.indexOf(this.port.selfId))
      // A replica that stopped being updated long before the owner went (this standby was
      // replaced, and missed its drop) yields to fresher ones.
      const behind = g.since - meta.receivedAt > 60_000 ? 5 : 0
      const delay = (rank + behind) * (this.init.rankDelayMs ?? 2_000)
      // Asking is cheap, but each refusal is logged by every grantor: not more than twice a lease.
      if (t - g.since < delay || t - g.lastTry < Math.max(500, this.init.leaseMs / 2)) continue
      g.lastTry = t
      this.busy.add(name)
      const p = this.takeOver(meta, g).finally(() => {
        this.busy.delete(name)
        this.inflight.delete(p)
      })
      this.inflight.add(p)
    }
  }

  private async takeOver (meta: ReplicaMeta, g: { epoch: number }): Promise<void> {
    const name = meta.container
    const epoch = g.epoch
    const signal = this.stopping.signal
    if (await this.port.hasContainer(name)) return
    this.init.onEvent?.({ type: 'lease-requested', container: name, epoch })
    let proof: unknown
    try {
      proof = await this.port.acquire(name, epoch, signal)
    } catch (err) {
      const reason = errText(err)
      // Another standby took this epoch and gave it up (its restore failed): the next
      // try asks for the epoch above it, which the grantors judge like any takeover.
      const above = (err as { refusals?: Array<{ currentEpoch?: number; currentHolder?: string }> }).refusals
        // Bounded: one grantor's word (it could lie) moves the epoch a few steps at most.
        ?.filter((r) => r.currentHolder != null && r.currentHolder !== this.port.selfId && r.currentHolder !== meta.owner && (r.currentEpoch ?? 0) >= epoch && (r.currentEpoch ?? 0) <= epoch + 8)
        .map((r) => r.currentEpoch!) ?? []
      if (above.length > 0) g.epoch = Math.max(...above) + 1
      this.log.info({ container: name, epoch, reason }, 'failover lease refused')
      this.init.onEvent?.({ type: 'lease-refused', container: name, epoch, reason })
      return
    }
    // From here this node holds the lease: the old owner's copy is gone (it fenced
    // itself, or died), and no other standby can restore it at this epoch.
    const started = this.now()
    const errors: string[] = []
    for (const generation of [...meta.generations].reverse()) {
      try {
        await this.port.restore(meta, generation, epoch, proof, signal)
        const ms = this.now() - started
        this.gone.delete(name)
        this.failedRounds.delete(name)
        this.log.warn({ container: name, epoch, generation, from: meta.owner, ms }, 'failover: container restored here from its replica')
        this.init.onEvent?.({ type: 'failover', container: name, epoch, generation, from: meta.owner, ms, dumpedAt: meta.dumpedAt })
        await this.port.drop(name).catch(() => {})
        return
      } catch (err) {
        errors.push(`generation ${generation}: ${errText(err)}`)
        this.log.error({ container: name, generation, err: errText(err) }, 'failover restore failed')
      }
    }
    // Nothing of it runs here: give the lease up so that another standby may try. This
    // one tries again later (a failed restore returns its generation's rootfs), and
    // drops the replica only after RESTORE_ROUNDS rounds failed.
    await this.port.release(name).catch(() => {})
    const rounds = (this.failedRounds.get(name)?.rounds ?? 0) + 1
    const last = rounds >= RESTORE_ROUNDS
    if (last) {
      await this.port.drop(name).catch(() => {})
      this.failedRounds.delete(name)
      this.gone.delete(name)
    } else {
      this.failedRounds.set(name, { rounds, retryAt: this.now() + RESTORE_RETRY_MS[rounds - 1]! })
    }
    const reason = `${errors.join('; ')}${last ? `; replica dropped after ${rounds} rounds` : `; round ${rounds} of ${RESTORE_ROUNDS}, next in ${RESTORE_RETRY_MS[rounds - 1]! / 1000} s`}`
    this.log.error({ container: name, epoch, rounds }, last ? 'failover gave up: no generation of this replica restores' : 'failover restore failed: trying again later')
    this.init.onEvent?.({ type: 'failover-failed', container: name, epoch, reason })
  }
}
