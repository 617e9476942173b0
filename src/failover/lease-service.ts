import path from 'node:path'
import type { PrivateKey, Stream } from '@libp2p/interface'
import type { Handover } from '../cluster/handover.ts'
import { FramedStream } from '../protocols/framing.ts'
import { MscError } from '../util/errors.ts'
import { KeyedMutex } from '../util/keyed-mutex.ts'
import type { Logger } from '../util/logger.ts'
import { LeaseRefusedError, type GrantorRefusal } from './errors.ts'
import { containerName, epochNumber, holdThreshold, quorum, signGrant, takeoverPossible, verifyGrant, type LeaseGrant, type LeaseProof } from './grant.ts'
import type { LeaseGuard } from './lease-guard.ts'
import { fileGrantorStore, LeaseGrantor, type GrantorStore, type LeaseRequestItem, type ReleaseMode } from './lease-grantor.ts'
import { LeaseKeeper } from './lease-keeper.ts'
import {
  GrantsResponseSchema,
  LEASE_PROTOCOL,
  LEASE_VERSION,
  MAX_LEASE_FRAME,
  MAX_LEASE_ITEMS,
  ReleasedResponseSchema,
  RequestSchema,
  sanitizeDetail,
  type GrantsResponse,
  type LeaseProtocolRequest,
  type RefusedItem,
  type ReleasedResponse
} from './lease-messages.ts'

/**
 * Ownership by lease, on one node (protocols/lease.md): the grantor that votes on
 * every member's requests, the keeper of the leases this node holds, the renewal
 * timer, self-fencing, and the lease guard that fences even if this daemon dies.
 *
 * A lease of a container is held from a majority of the cluster's persisted member
 * list (never "who is alive now": two halves of a split cluster cannot both have a
 * majority). This node's own vote is asked of its local grantor directly; the others
 * over `/msc/lease/1.0.0`, one request and one response per stream, served to members
 * only (the `handle` given is members-only).
 *
 * What the node must wire: `mayTakeOver` (its membership view: false while the holder
 * is seen alive and running the container, which keeps a failover away from a live
 * owner even if its lease ran out somewhere), `onExpired` (kill the container: its
 * lease could not be renewed by its deadline), and the guard, whose `fenced()` tells at
 * start which containers it killed while the daemon was down.
 */

/** How far ahead of now a deadline written for the lease guard always is (it looks every 0.5 s until one is 0.6 s away). */
const GUARD_LEAD_MS = 700

/** The guard as the service uses it (LeaseGuard; a fake in tests). */
export type LeaseGuardPort = Pick<LeaseGuard, 'start' | 'arm' | 'disarm' | 'clearFenced' | 'stop'> & Partial<Pick<LeaseGuard, 'armed'>>

export interface LeaseServiceInit {
  selfId: string
  privateKey: PrivateKey
  leaseMs: number
  /** leases.json (the grantor's records) lives here; the guard's dir is leasePaths(dataDir).guardDir. */
  dataDir: string
  /** The persisted member list: every admitted, not removed member, this node included. */
  members: () => string[]
  isMember: (peer: string) => boolean
  /** Serves a protocol to members only (Overlay.handle). */
  handle: (protocol: string, handler: (stream: Stream, peerId: string) => Promise<void>, maxStreams: number) => Promise<void>
  unhandle?: (protocol: string) => Promise<void>
  dial: (peer: string, protocol: string, signal: AbortSignal) => Promise<Stream>
  /**
   * A request to `peer` has gone unanswered for a while: check the connection it went
   * over and replace it if it is stalled (Overlay.checkConnection). Leases are the one
   * traffic that cannot wait for TCP's retransmission backoff after a cut heals.
   */
  checkConnection?: (peer: string, timeoutMs: number) => Promise<void>
  /** The membership view's say on a new lease or a raised epoch without handover: false when another peer owns the name. */
  mayHold?: (container: string, holder: string) => boolean
  /** The membership view's say on a failover: false while `holder` is seen alive and running `container`. */
  mayTakeOver: (container: string, holder: string) => boolean
  /** Self-fencing: kill the container, its lease could not be renewed in time. */
  onExpired: (container: string, epoch: number) => Promise<void>
  guard?: LeaseGuardPort
  logger: Logger
  /** Monotonic milliseconds. Default performance.now(). */
  now?: () => number
  /** The grantor's store. Default fileGrantorStore(DATA_DIR/leases.json). */
  store?: GrantorStore
  /** Per request to one member. Default min(leaseMs / 2, 2000). */
  requestTimeoutMs?: number
  /** false: no timers; the caller drives tick() (tests). */
  timers?: boolean
}

export interface LeaseStatus {
  leaseMs: number
  quorum: number
  members: number
  /** Leases this node holds; msLeft until its self-fencing deadline. */
  held: Array<{ container: string; epoch: number; msLeft: number }>
  /** This node's votes; msLeft until the lease runs out here (0: expired). */
  granted: Array<{ container: string; epoch: number; holder: string; msLeft: number }>
}

/** Where the lease state of a data dir lives. */
export function leasePaths (dataDir: string): { records: string; guardDir: string } {
  return { records: path.join(dataDir, 'leases.json'), guardDir: path.join(dataDir, 'leases', 'guard') }
}

type ItemAnswer =
  | { granted: true; grant: LeaseGrant }
  | ({ granted: false } & Omit<GrantorRefusal, 'grantor'>)

const MAX_LOGGED = 10_000
const MAX_SIGNED = 4096

export class LeaseService {
  readonly grantor: LeaseGrantor
  readonly keeper: LeaseKeeper
  readonly leaseMs: number
  private readonly init: LeaseServiceInit
  private readonly log: Logger
  private readonly now: () => number
  private readonly requestTimeoutMs: number
  private readonly tickMs: number
  private readonly acquiring = new KeyedMutex()
  private readonly guardOps = new KeyedMutex()
  /** container -> the refusals already logged: `side reason epoch`. */
  private readonly logged = new Map<string, Set<string>>()
  /** Signed grants by container, reused while epoch and holder stay (renewals). */
  private readonly signed = new Map<string, LeaseGrant>()
  private readonly fencing = new Set<Promise<void>>()
  private stopping = new AbortController()
  private running = false
  private timer?: NodeJS.Timeout
  private deadlineTimer?: NodeJS.Timeout

  constructor (init: LeaseServiceInit) {
    this.init = init
    this.log = init.logger
    this.leaseMs = init.leaseMs
    this.now = init.now ?? (() => performance.now())
    this.requestTimeoutMs = init.requestTimeoutMs ?? Math.min(init.leaseMs / 2, 2_000)
    this.tickMs = Math.max(50, init.leaseMs / 8)
    this.keeper = new LeaseKeeper({ leaseMs: init.leaseMs, now: this.now })
    this.grantor = new LeaseGrantor({
      leaseMs: init.leaseMs,
      now: this.now,
      store: init.store ?? fileGrantorStore(leasePaths(init.dataDir).records),
      mayTakeOver: init.mayTakeOver,
      mayHold: init.mayHold,
      isMember: init.isMember
    })
  }

  async start (): Promise<void> {
    this.stopping = new AbortController()
    await this.grantor.start()
    // When this grantor's restart wait began: what it had granted goes to no other holder for a lease from now.
    this.log.info({ grants: this.grantor.records().length, leaseMs: this.leaseMs }, 'grantor started: no other holder for a lease')
    await this.init.guard?.start()
    await this.init.handle(LEASE_PROTOCOL, async (stream, peer) => {
      await this.onStream(stream, peer)
    }, 32)
    this.running = true
    if (this.init.timers !== false) {
      this.timer = setInterval(() => {
        void this.tick()
      }, this.tickMs)
      this.timer.unref()
    }
    this.log.info({ leaseMs: this.leaseMs, members: this.members().length, grants: this.grantor.records().length }, 'lease service started')
  }

  /**
   * Stops renewing and serving. keepArmed (default true): the guard keeps every armed
   * container's deadline, for containers left running while the daemon is away; false
   * only once no container runs under a lease here (everything disarmed, guard stopped).
   */
  async stop (opts: { keepArmed?: boolean; park?: boolean } = {}): Promise<void> {
    this.running = false
    clearInterval(this.timer)
    clearTimeout(this.deadlineTimer)
    await Promise.allSettled([...this.fencing])
    if (opts.park === true) await this.park()
    this.stopping.abort(new MscError('INVALID_STATE', 'lease service stopped'))
    await this.init.unhandle?.(LEASE_PROTOCOL).catch(() => {})
    // Nothing left to watch: the guard goes too, rather than outlive the node idle.
    const armed = await this.init.guard?.armed?.().catch(() => ['?']) ?? ['?']
    await this.init.guard?.stop({ keepArmed: (opts.keepArmed ?? true) && armed.length > 0 })
  }

  /**
   * A node stopping on purpose leaves its containers running without renewing their
   * leases: it parks them, so that no takeover happens while it is away. A container
   * whose park enough grantors confirmed (holdThreshold: the others cannot make a
   * quorum) is disarmed in the guard; any other stays armed, and the guard kills it at
   * its deadline, as if the node had died.
   */
  private async park (): Promise<void> {
    const held = this.keeper.held()
    if (held.length === 0) return
    const members = this.members()
    const confirmed = await this.releaseAt(members, held.map((l) => ({ container: l.container, epoch: l.epoch })), 'park', AbortSignal.timeout(Math.min(2_000, this.leaseMs / 2)))
    const need = holdThreshold(members.length)
    for (const l of held) {
      this.keeper.drop(l.container)
      if ((confirmed.get(l.container) ?? 0) >= need) {
        await this.disarm(l.container)
        this.log.info({ container: l.container, epoch: l.epoch }, 'lease parked: the container runs on while this node is away')
      } else {
        this.log.warn({ container: l.container, epoch: l.epoch, confirmed: confirmed.get(l.container) ?? 0, needed: need }, 'lease could not be parked: the lease guard kills the container at its deadline unless this node is back first')
      }
    }
  }

  /**
   * Takes the lease of `container` at `epoch`: asks every member (this one locally) at
   * once, resolves with the proof as soon as a quorum granted (the lease is then held:
   * renewed from now on, and armed in the guard), rejects with LeaseRefusedError as
   * soon as a quorum cannot be reached. With `handover`, a migration's target takes the
   * lease from the holder that signed it. Acquiring the epoch already held renews it
   * (a restarted daemon takes its leases back this way).
   */
  async acquire (container: string, epoch: number, opts: { handover?: Handover; takeover?: boolean; signal?: AbortSignal } = {}): Promise<LeaseProof> {
    if (!containerName.safeParse(container).success) throw new MscError('INVALID_ARGUMENT', `invalid container name ${JSON.stringify(container)}`)
    if (!epochNumber.safeParse(epoch).success) throw new MscError('INVALID_ARGUMENT', `invalid epoch ${epoch}`)
    return await this.acquiring.run(container, async () => await this.acquireNow(container, epoch, opts))
  }

  private async acquireNow (container: string, epoch: number, opts: { handover?: Handover; takeover?: boolean; signal?: AbortSignal }): Promise<LeaseProof> {
    if (!this.running) throw new MscError('INVALID_STATE', 'lease service not started')
    opts.signal?.throwIfAborted()
    const members = this.members()
    // A takeover (a failover: an epoch raised without the holder's handover) needs a
    // quorum, and its grants are the proof others check. Holding a lease that nobody
    // else can take (a new container, a handover, the same epoch again) needs only
    // enough grantors that the rest cannot make a quorum.
    const need = opts.takeover === true ? quorum(members.length) : holdThreshold(members.length)
    const item: LeaseRequestItem = opts.handover != null ? { container, epoch, handover: opts.handover } : opts.takeover === true ? { container, epoch, takeover: true } : { container, epoch }
    const sentAt = this.now()
    const grants = new Map<string, LeaseGrant>()
    const refusals: GrantorRefusal[] = []
    const signal = opts.signal != null ? AbortSignal.any([opts.signal, this.stopping.signal]) : this.stopping.signal
    const { promise, resolve, reject } = Promise.withResolvers<LeaseProof>()
    let settled = false
    const refused = (): LeaseRefusedError => new LeaseRefusedError({ container, epoch, granted: grants.size, needed: need, refusals })
    const onAbort = (): void => {
      if (!settled) {
        settled = true
        reject(signal.reason)
      }
    }
    signal.addEventListener('abort', onAbort, { once: true })
    for (const peer of members) {
      void this.ask(peer, [item], signal).then(([a]) => {
        if (a == null || settled) return
        if (a.granted) grants.set(peer, a.grant)
        else refusals.push({ grantor: peer, reason: a.reason, detail: a.detail, ...current(a) })
        if (grants.size >= need) {
          settled = true
          resolve({ epoch, grants: [...grants.values()] })
        } else if (members.length - refusals.length < need) {
          settled = true
          reject(refused())
        }
      })
    }
    if (members.length < need) {
      settled = true
      reject(refused())
    }
    let proof: LeaseProof
    try {
      proof = await promise
    } catch (err) {
      if (err instanceof LeaseRefusedError) {
        for (const r of err.refusals) this.logOnce('holder', container, r.reason, { grantor: r.grantor, epoch, detail: r.detail }, 'lease refused')
      }
      // The votes we did get are not given back: this may be a restarted daemon taking
      // back the lease of a container still running here, and they expire in a lease.
      throw err
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
    const l = this.keeper.hold(container, epoch, sentAt)
    this.ranOut.delete(container)
    if (this.now() >= l.deadline) {
      this.keeper.drop(container)
      throw new MscError('INVALID_STATE', `the lease of ${container} was granted too late to be used`)
    }
    try {
      await this.arm(container)
    } catch (err) {
      // The lease stays held (giving it up could free it while a copy runs here); each
      // renewal arms the guard again.
      this.log.error({ container, err: (err as Error).message }, 'the lease guard could not be armed')
    }
    this.scheduleDeadline()
    this.log.info({ container, epoch, grants: proof.grants.length, members: members.length }, 'lease acquired')
    return proof
  }

  /**
   * Gives the lease of `container` up: stops renewing, disarms the guard, tells the
   * grantors (best effort) so that the next holder need not wait. Only once the
   * container is dead here (stopped, removed, or checkpointed and handed over).
   */
  async release (container: string, mode: ReleaseMode = 'expire', epoch?: number): Promise<void> {
    const l = this.keeper.get(container)
    this.keeper.drop(container)
    await this.disarm(container)
    const e = l?.epoch ?? epoch
    if (e == null) return
    await this.releaseAt(this.members(), [{ container, epoch: e }], mode, this.stopping.signal)
    this.log.info({ container, epoch: e, mode }, 'lease released')
  }

  /**
   * Ends this node's lease of `container` at `epoch` on every grantor at once, parked or
   * not, though this node does not hold it now (the container died while the node was
   * down). Resolves with how many grantors confirmed.
   */
  async expire (container: string, epoch: number): Promise<number> {
    const confirmed = await this.releaseAt(this.members(), [{ container, epoch }], 'expire', this.stopping.signal)
    return confirmed.get(container) ?? 0
  }

  holds (container: string): boolean {
    return this.keeper.get(container) != null
  }

  status (): LeaseStatus {
    const now = this.now()
    const members = this.members()
    return {
      leaseMs: this.leaseMs,
      quorum: quorum(members.length),
      members: members.length,
      held: this.keeper.held().map((l) => ({ container: l.container, epoch: l.epoch, msLeft: Math.max(0, Math.ceil(l.deadline - now)) })),
      granted: this.grantor.records()
    }
  }

  /**
   * One round: fences what is past its deadline, renews what is due (one batched
   * request per member). The timer calls it; resolves when the round is over.
   */
  async tick (): Promise<void> {
    if (!this.running) return
    const now = this.now()
    for (const { container, epoch } of this.keeper.expired(now)) this.fence(container, epoch)
    const due = this.keeper.due(now)
    const round = due.length > 0 ? this.renew(due) : Promise.resolve()
    this.scheduleDeadline()
    await round
    await Promise.allSettled([...this.fencing])
  }

  /** Containers whose lease ran out here since they last acquired it: they must not run again before they do. */
  private readonly ranOut = new Set<string>()

  /** The lease of `container` ran out here (and was not taken again since). */
  lost (container: string): boolean {
    return this.ranOut.has(container)
  }

  private fence (container: string, epoch: number): void {
    // Dropped first: it is not renewed or fenced again unless acquired again.
    this.keeper.drop(container)
    this.ranOut.add(container)
    this.log.warn({ container, epoch }, 'lease not renewed by its deadline: killing the container')
    const p = (async () => {
      try {
        await this.init.onExpired(container, epoch)
      } catch (err) {
        // The guard is still armed: it kills the container at once.
        this.log.error({ container, epoch, err: (err as Error).message }, 'self-fencing failed; the lease guard will kill the container')
        return
      }
      await this.disarm(container, true)
    })().catch((err) => this.log.error({ container, err: (err as Error).message }, 'lease guard update failed'))
    this.fencing.add(p)
    void p.finally(() => this.fencing.delete(p))
  }

  private async renew (items: Array<{ container: string; epoch: number }>): Promise<void> {
    const sentAt = this.now()
    for (const i of items) this.keeper.sent(i.container, sentAt)
    const members = this.members()
    const need = holdThreshold(members.length)
    const counts = new Map<string, number>()
    // An answer is worth waiting for until the deadline it would move has passed, not
    // just the usual request time: after a short cut of the link, TCP's retransmission
    // timer has backed off and the first answers arrive late (a flapping link otherwise
    // made an owner fence itself while every grant was on its way).
    // Never so long that the deadline a late answer writes for the lease guard is less
    // than GUARD_LEAD_MS away: the guard looks every 0.5 s until one is that close.
    const latest = Math.max(...items.map((i) => this.keeper.deadline(i.container) ?? 0))
    const lastUseful = Math.min(latest, sentAt + this.leaseMs - this.keeper.marginMs - GUARD_LEAD_MS)
    const timeoutMs = Math.max(this.requestTimeoutMs, Math.ceil(lastUseful - sentAt))
    await Promise.all(members.map(async (peer) => {
      const answers = await this.ask(peer, items, this.stopping.signal, timeoutMs)
      for (let k = 0; k < items.length; k++) {
        const { container, epoch } = items[k] as { container: string; epoch: number }
        const a = answers[k]
        if (a == null) continue
        if (!a.granted) {
          this.logOnce('holder', container, a.reason, { grantor: peer, epoch, detail: a.detail }, 'lease renewal refused')
          continue
        }
        const n = (counts.get(container) ?? 0) + 1
        counts.set(container, n)
        if (n === need) await this.renewed(container, epoch, sentAt)
      }
    }))
    // A round that fell short (a member slow or briefly cut off) is tried again at the
    // next tick, not a whole renewal period later: the deadline is what it must beat.
    for (const i of items) {
      if ((counts.get(i.container) ?? 0) < need) this.keeper.retry(i.container)
    }
  }

  private async renewed (container: string, epoch: number, sentAt: number): Promise<void> {
    const l = this.keeper.get(container)
    // Past its deadline already: a late quorum does not bring it back; tick fences it.
    if (l == null || l.epoch !== epoch || this.now() >= l.deadline) return
    if (!this.keeper.renewed(container, epoch, sentAt)) return
    try {
      await this.arm(container)
    } catch (err) {
      // The guard keeps the earlier (sooner) deadline: safe, but it will kill the container then.
      this.log.error({ container, err: (err as Error).message }, 'the lease guard could not be re-armed')
    }
    this.scheduleDeadline()
  }

  /**
   * Writes the container's current deadline to the guard. One write per container at a
   * time, reading the deadline when it runs: two renewals landing together cannot
   * leave the older deadline on disk, nor an arm resurrect a disarmed entry.
   */
  private async arm (container: string): Promise<void> {
    const guard = this.init.guard
    if (guard == null) return
    await this.guardOps.run(container, async () => {
      const deadline = this.keeper.deadline(container)
      // With one or two members every takeover needs this node's own vote, which its
      // grantor never gives while it holds the lease: a dead daemon endangers nothing.
      if (!takeoverPossible(this.members().length)) await guard.disarm(container)
      else if (deadline != null) await guard.arm(container, deadline, this.now())
    })
  }

  private async disarm (container: string, clearFenced = false): Promise<void> {
    const guard = this.init.guard
    if (guard == null) return
    await this.guardOps.run(container, async () => {
      if (this.keeper.get(container) != null) return // held again meanwhile: armed anew
      await guard.disarm(container)
      if (clearFenced) await guard.clearFenced(container)
    })
  }

  /** A timer at the earliest deadline: the periodic tick alone could notice it leaseMs/8 late. */
  private scheduleDeadline (): void {
    if (!this.running || this.init.timers === false) return
    clearTimeout(this.deadlineTimer)
    const next = this.keeper.nextDeadline()
    if (next == null) return
    this.deadlineTimer = setTimeout(() => {
      void this.tick()
    }, Math.max(0, Math.ceil(next - this.now())))
    this.deadlineTimer.unref()
  }

  /** Asks one member about `items` (this node: its grantor directly). Never throws: failures are refusals. */
  private async ask (peer: string, items: LeaseRequestItem[], signal: AbortSignal, timeoutMs = this.requestTimeoutMs): Promise<ItemAnswer[]> {
    const out: ItemAnswer[] = []
    for (let i = 0; i < items.length; i += MAX_LEASE_ITEMS) {
      const chunk = items.slice(i, i + MAX_LEASE_ITEMS)
      const req: LeaseProtocolRequest = { type: 'lease', v: LEASE_VERSION, items: chunk }
      let res: GrantsResponse
      try {
        res = peer === this.init.selfId
          ? await this.serve(peer, req) as GrantsResponse
          : await this.exchange(peer, req, GrantsResponseSchema, signal, timeoutMs)
      } catch (err) {
        // Anything may be thrown here (an abort reason need not be an Error): never let it
        // throw again while being described.
        const e = (err ?? {}) as Partial<Error> & { reason?: unknown }
        const reason = e.name === 'TimeoutError' || e.reason === 'IDLE_TIMEOUT' ? 'timeout' : signal.aborted ? 'aborted' : 'unreachable'
        const detail = String(typeof e.message === 'string' ? e.message : err).slice(0, 500)
        for (let k = 0; k < chunk.length; k++) out.push({ granted: false, reason, detail })
        continue
      }
      for (let k = 0; k < chunk.length; k++) out.push(this.check(peer, chunk[k] as LeaseRequestItem, res.items[k], res.items.length === chunk.length))
    }
    return out
  }

  /** An answer counts only if it is this grant: by `peer`, to this node, for this container and epoch, signed. */
  private check (peer: string, want: LeaseRequestItem, got: GrantsResponse['items'][number] | undefined, sameLength: boolean): ItemAnswer {
    const invalid = (detail: string): ItemAnswer => ({ granted: false, reason: 'invalid-answer', detail })
    if (!sameLength || got == null) return invalid('the answer does not have one item per request item')
    if (got.container !== want.container || got.epoch !== want.epoch) return invalid("the answer items are not in the request's order")
    if (!got.granted) {
      return { granted: false, reason: got.reason, detail: got.detail, ...current({ currentEpoch: got.currentEpoch, currentHolder: got.currentHolder }) }
    }
    const g = got.grant
    if (g.grantor !== peer || g.holder !== this.init.selfId || g.container !== want.container || g.epoch !== want.epoch) {
      return invalid("the grant is not this grantor's grant of this lease to this node")
    }
    if (!verifyGrant(g)) return invalid("the grant's signature does not verify")
    return { granted: true, grant: g }
  }

  private async exchange<S extends typeof GrantsResponseSchema | typeof ReleasedResponseSchema> (
    peer: string,
    req: LeaseProtocolRequest,
    schema: S,
    outer: AbortSignal,
    timeoutMs = this.requestTimeoutMs
  ): Promise<ReturnType<S['parse']>> {
    const signal = AbortSignal.any([outer, AbortSignal.timeout(timeoutMs)])
    const t0 = performance.now()
    let phase = 'dial'
    let f: FramedStream | undefined
    // A grantor answers within milliseconds: one silent for half the request time is
    // slow, or its connection stalled. A stalled one is replaced so that the renewal
    // retried at the next tick goes over a fresh connection while the lease still runs.
    const stallMs = this.requestTimeoutMs / 2
    const stallCheck = this.init.checkConnection == null
      ? undefined
      : setTimeout(() => {
        void this.init.checkConnection?.(peer, stallMs).catch(() => {})
      }, stallMs)
    try {
      const stream = await this.init.dial(peer, LEASE_PROTOCOL, signal)
      f = new FramedStream(stream, { maxFrameBytes: MAX_LEASE_FRAME, idleTimeoutMs: timeoutMs })
      phase = 'write'
      await f.writeJson(req, signal)
      phase = 'read'
      const res = await f.readJson(schema, signal)
      await f.closeWrite(signal).catch(() => {})
      return res as ReturnType<S['parse']>
    } catch (err) {
      this.log.debug({ peer, phase, ms: Math.round(performance.now() - t0), err: (err as Error).message }, 'lease exchange failed')
      f?.abort(err as Error)
      throw err
    } finally {
      clearTimeout(stallCheck)
    }
  }

  /** Serves one request from a member (the stream's authenticated peer). */
  private async onStream (stream: Stream, peer: string): Promise<void> {
    const f = new FramedStream(stream, { maxFrameBytes: MAX_LEASE_FRAME, idleTimeoutMs: 10_000 })
    try {
      const req = await f.readJson(RequestSchema, AbortSignal.any([this.stopping.signal, AbortSignal.timeout(10_000)]))
      await f.writeJson(await this.serve(peer, req))
      await f.closeWrite().catch(() => {})
    } catch (err) {
      this.log.debug({ peer, err: (err as Error).message }, 'lease request failed')
      f.abort(err as Error)
    }
  }

  private async serve (peer: string, req: LeaseProtocolRequest): Promise<GrantsResponse | ReleasedResponse> {
    if (req.type === 'release') {
      const done: boolean[] = []
      for (const i of req.items) done.push(await this.grantor.release(peer, i.container, i.epoch, i.mode ?? 'expire'))
      return { type: 'released', done }
    }
    const items: GrantsResponse['items'] = []
    for (const i of req.items) {
      const d = await this.grantor.decide(peer, i)
      if (d.granted) {
        items.push({ container: i.container, epoch: i.epoch, granted: true, grant: await this.grantFor(i.container, i.epoch, peer), expiresInMs: Math.round(d.expiresInMs) })
        continue
      }
      this.logOnce('grantor', i.container, d.reason, { holder: peer, epoch: i.epoch, detail: d.detail }, 'lease request refused')
      const refusal: RefusedItem = { container: i.container, epoch: i.epoch, granted: false, reason: d.reason, detail: sanitizeDetail(d.detail) }
      if (d.epoch != null && d.epoch <= Number.MAX_SAFE_INTEGER) refusal.currentEpoch = d.epoch
      if (d.holder != null) refusal.currentHolder = d.holder
      items.push(refusal)
    }
    return { type: 'grants', items }
  }

  /** The signed grant; Ed25519 is deterministic, so a renewal reuses the one signed before. */
  private async grantFor (container: string, epoch: number, holder: string): Promise<LeaseGrant> {
    const known = this.signed.get(container)
    if (known != null && known.epoch === epoch && known.holder === holder) return known
    const g = await signGrant(this.init.privateKey, { container, epoch, holder, grantor: this.init.selfId })
    if (this.signed.size >= MAX_SIGNED) this.signed.delete(this.signed.keys().next().value as string)
    this.signed.set(container, g)
    return g
  }

  /** Tells `peers` (this node: its grantor) that these leases are given up. Best effort, never throws. */
  /** Tells each peer; returns, per container, how many confirmed. */
  private async releaseAt (peers: string[], items: Array<{ container: string; epoch: number }>, mode: ReleaseMode, signal: AbortSignal): Promise<Map<string, number>> {
    const confirmed = new Map<string, number>()
    await Promise.allSettled(peers.map(async (peer) => {
      for (let i = 0; i < items.length; i += MAX_LEASE_ITEMS) {
        const chunk = items.slice(i, i + MAX_LEASE_ITEMS)
        const req: LeaseProtocolRequest = { type: 'release', v: LEASE_VERSION, items: chunk.map((x) => ({ ...x, mode })) }
        const res = peer === this.init.selfId
          ? await this.serve(peer, req) as ReleasedResponse
          : await this.exchange(peer, req, ReleasedResponseSchema, signal)
        // Only what the grantor really held for us counts (a park confirmed by others is no park).
        chunk.forEach((x, k) => {
          if (res.done?.[k] === true) confirmed.set(x.container, (confirmed.get(x.container) ?? 0) + 1)
        })
      }
    }))
    return confirmed
  }

  private members (): string[] {
    return [...new Set(this.init.members())]
  }

  /** Logs a refusal once per (container, side, reason, epoch): a holder renewing against a minority that moved on is not logged every round. */
  private logOnce (side: 'holder' | 'grantor', container: string, reason: string, fields: { epoch: number } & Record<string, unknown>, msg: string): void {
    const key = `${side} ${reason} ${fields.epoch}`
    let seen = this.logged.get(container)
    if (seen?.has(key) === true) return
    if (seen == null) {
      if (this.logged.size >= MAX_LOGGED) this.logged.clear()
      seen = new Set()
      this.logged.set(container, seen)
    }
    seen.add(key)
    this.log.info({ container, reason, ...fields }, msg)
  }
}

function current (a: { currentEpoch?: number; currentHolder?: string }): { currentEpoch?: number; currentHolder?: string } {
  const out: { currentEpoch?: number; currentHolder?: string } = {}
  if (a.currentEpoch != null) out.currentEpoch = a.currentEpoch
  if (a.currentHolder != null) out.currentHolder = a.currentHolder
  return out
}
