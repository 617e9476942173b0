import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import type { PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from '../../util/logger.ts'
import type { MscLibp2p } from '../libp2p-host.ts'
import type { PeerConnector } from '../connector.ts'
import { decodeHeartbeat, decodeMessage, encodeHeartbeat, HEARTBEAT_VERSION, MAX_TOPIC_CHANGES, type ContainerClaim, type Heartbeat } from './heartbeat.ts'
import type { MembershipView } from './membership-view.ts'
import { ClaimLedger } from './claim-set.ts'
import { CLAIMS_PROTOCOL, ClaimsPageError, encodePages, FETCH_TIMEOUT_MS, fetchClaims, serveClaims } from './claims-protocol.ts'
import { SwimDetector, type ProbeReply, type SwimChange, type SwimState } from './swim-probe.ts'
import { exchange, MAX_SYNC_ADDRS, membersDigest, MAX_SWIM_STREAMS, readRequest, reply, SWIM_PROTOCOL, SWIM_VERSION, SwimRefusal, type SyncMessage } from './swim-protocol.ts'

export const MEMBERSHIP_TOPIC = '/msc/membership/1'

/** What this node says about itself in each heartbeat. */
export interface LocalState {
  name: string
  version: string
  role: Heartbeat['role']
  containers: () => Promise<ContainerClaim[]>
  resources: () => Promise<Heartbeat['resources']>
}

export interface MembershipServiceInit {
  libp2p: MscLibp2p
  view: MembershipView
  connector: PeerConnector
  local: LocalState
  /** The probe interval (--ping-interval). */
  intervalMs: number
  /** Suspicion timeouts before Lifeguard's log10(N) scaling: all confirmations in (min), none (max). */
  suspicionMinMs: number
  suspicionMaxMs: number
  logger: Logger
  /** Heartbeats from peers that are not members of the cluster are dropped. */
  isMember?: (peerId: string) => boolean
}

/** Inbound /msc/claims/1 streams per connection: a peer asks for one set at a time. */
const MAX_CLAIMS_STREAMS = 2
/** After a failed fetch of a peer's claims, the next waits this long, doubling, at most MAX_FETCH_BACKOFF_MS. */
const MAX_FETCH_BACKOFF_MS = 30_000
/**
 * The shortest direct probe timeout. memberlist's 0.5 s is too short for nodes sharing
 * a loaded 2-core host: while a cluster forms, answers took longer and members were
 * suspected (and refuted) for nothing.
 */
const MIN_PROBE_TIMEOUT_MS = 1000
/**
 * Added to a probe's timeout when there is no connection to the target yet: a new
 * connection's handshakes (noise, pnet) cost more than an answer. A killed node's
 * refused dial still fails at once.
 */
const DIAL_ALLOWANCE_MS = 2000
/**
 * How long a ping over a member's connection may take, once a probe of it went
 * unanswered, before the connection counts as stalled and is replaced (libp2p's
 * connection monitor, which this stands in for, allowed a few seconds).
 */
const CONNECTION_CHECK_MS = 3_000
/** Attempts at the sync of a new connection (0.5, 1, 2 and 4 s apart). */
const SYNC_ON_CONNECT_TRIES = 5
/** Peers named in syncs whose addresses are kept until the cluster admits them. */
const MAX_UNADMITTED = 1024
/** Changes messages older (or further in the future) than this are stale. */
const MAX_CHANGES_AGE_MS = 30_000

export type SwimRefusalReason = SwimRefusal['reason']

/**
 * A push-pull sync with one random member this often: 10 probe intervals (within 5 to
 * 30 s). A settled cluster's syncs carry two heartbeats and two digests, not the member
 * list (membersDigest), so their bytes do not grow with N and neither does the period.
 * Syncs are also the heartbeats' anti-entropy: a node publishes its heartbeat on the
 * topic only when it changes, and a member that missed that publish gets it from the
 * next sync between the two (about every N / 2 periods for a given pair).
 */
export function syncEveryMs (intervalMs: number): number {
  return Math.min(30_000, Math.max(5_000, 10 * intervalMs))
}

/** The direct probe timeout: half the interval, at least MIN_PROBE_TIMEOUT_MS, at most a third of the longest suspicion. */
export function probeTimeoutMs (intervalMs: number, suspicionMaxMs: number): number {
  return Math.max(50, Math.min(suspicionMaxMs / 3, Math.max(MIN_PROBE_TIMEOUT_MS, intervalMs / 2)))
}

/**
 * Runs membership: the SWIM failure detector (swim-probe.ts) over /msc/swim/1, whose
 * verdicts are the view's member states; SWIM verdicts published on the gossipsub
 * topic as small changes messages; this node's full heartbeat on the same topic only
 * at start and when its claims or addresses change; and push-pull syncs with one
 * member at a time, which hand over heartbeats and repair missed gossip (syncEveryMs).
 * Every message on the topic is validated (invalid ones are
 * rejected, so gossipsub neither delivers nor forwards them, and counted). Serves this
 * node's claim set over /msc/claims/1 to members, and fetches a peer's set when the
 * view cannot rebuild it from heartbeats (one fetch per peer at a time, backing off
 * after failures). Cuts connections to the dead and redials them.
 */
export class MembershipService {
  private readonly o: MembershipServiceInit
  private readonly log: Logger
  private readonly incarnation = Date.now()
  private seq = 0
  private publishTimer?: NodeJS.Timeout
  private tickTimer?: NodeJS.Timeout
  private stopped = false
  private readonly ledger = new ClaimLedger()
  private omittedClaims = 0
  private readonly fetching = new Set<string>()
  private readonly fetchBackoff = new Map<string, { until: number; ms: number }>()
  private readonly stopping = new AbortController()
  private pages?: { rev: number; pages: Uint8Array[] }
  readonly detector: SwimDetector
  private probeTimer?: NodeJS.Timeout
  private syncTimer?: NodeJS.Timeout
  /** The latest heartbeat built, as sent in syncs. */
  private heartbeatText?: string
  private publishedRev = -1
  private publishedAddrs = ''
  /** Addresses of peers named in syncs before the cluster admitted them here (rememberAddrs). */
  private readonly unadmittedAddrs = new Map<string, string[]>()
  private readonly refused: Record<SwimRefusalReason, number> = { 'not-member': 0, malformed: 0, 'target-not-member': 0 }
  /** Syncs this node started, by whether the peer's member list had the same digest as ours. */
  private readonly syncs = { same: 0, differed: 0 }

  constructor (init: MembershipServiceInit) {
    this.o = init
    this.log = init.logger
    this.detector = new SwimDetector({
      selfId: init.libp2p.peerId.toString(),
      incarnation: this.incarnation,
      probeIntervalMs: init.intervalMs,
      probeTimeoutMs: probeTimeoutMs(init.intervalMs, init.suspicionMaxMs),
      suspicionMinMs: init.suspicionMinMs,
      suspicionMaxMs: init.suspicionMaxMs,
      transport: {
        ping: async (target, changes, timeoutMs) => await this.sendProbe(target, { v: SWIM_VERSION, type: 'ping', changes }, timeoutMs + (this.o.connector.connected(target) ? 0 : DIAL_ALLOWANCE_MS)),
        pingReq: async (via, target, changes, timeoutMs) => await this.sendProbe(via, { v: SWIM_VERSION, type: 'ping-req', target, timeoutMs: Math.round(timeoutMs), changes }, timeoutMs * 2)
      },
      onState: (peer, state) => {
        this.onVerdict(peer, state)
      },
      onVerdict: (change) => {
        void this.publishChanges([change])
      },
      onAck: (peer, rttMs) => {
        this.o.view.heard(peer, rttMs)
      },
      onDirectMiss: (peer) => {
        void this.checkConnection(peer)
      }
    })
  }

  /** Syncs this node started whose answer had the same member digest as its own, and those that differed (and carried the list). */
  syncCounts (): { same: number; differed: number } {
    return { ...this.syncs }
  }

  /** /msc/swim/1 requests refused, by reason (a test per reason: test/unit/swim-service.test.ts). */
  swimRefused (): Record<SwimRefusalReason, number> {
    return { ...this.refused }
  }

  private onVerdict (peer: string, state: SwimState): void {
    if (state === 'left') return
    const before = this.o.view.get(peer)?.state
    this.o.view.setVerdict(peer, state)
    if (state !== before) this.log.debug({ peer, from: before, to: state, health: this.detector.health }, 'swim verdict')
  }

  /** A member's direct probe went unanswered: replace its connection if a ping over it is late too. */
  private async checkConnection (peer: string): Promise<void> {
    if (this.stopped) return
    await this.o.connector.checkConnection(peer, CONNECTION_CHECK_MS)
  }

  /** One request to `peer`, its reply as a ProbeReply; null when none valid came within `timeoutMs`. */
  private async sendProbe (peer: string, request: Parameters<typeof exchange>[1], timeoutMs: number): Promise<ProbeReply | null> {
    if (this.stopped) return null
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(Math.max(1, timeoutMs))])
    try {
      const stream = await this.o.libp2p.dialProtocol(peerIdFromString(peer), SWIM_PROTOCOL, { signal })
      const r = await exchange(stream, request, signal)
      if (r.type === 'sync') return null
      this.o.view.heard(peer)
      return { ack: r.type === 'ack', changes: r.changes }
    } catch (err) {
      this.log.debug({ peer, err: (err as Error).message }, 'probe not answered')
      return null
    }
  }

  /**
   * This node's side of a push-pull sync: its latest heartbeat, the digest of the
   * members it knows, and with `full` the members themselves with where to dial them.
   */
  private syncMessage (full: boolean): SyncMessage {
    const self = this.detector.selfId
    const list = this.detector.snapshot()
    const msg: SyncMessage = { v: SWIM_VERSION, type: 'sync', ...(this.heartbeatText != null ? { heartbeat: this.heartbeatText } : {}), digest: membersDigest(list) }
    if (!full) return msg
    const own = dialableAddrs(this.o.libp2p.getMultiaddrs().map((m) => m.toString()))
    return { ...msg, members: list.map((c) => ({ ...c, addrs: (c.peer === self ? own : this.o.view.get(c.peer)?.addrs ?? []).slice(0, MAX_SYNC_ADDRS) })) }
  }

  /**
   * The other side of a sync: its heartbeat (checked as one from the topic, attributed to
   * the stream's peer), its view of the members when it sent them (SWIM's rules), and
   * members this node has not heard of, which it dials: so a node that joins through
   * one member, or missed gossip, catches up.
   */
  private onSync (peer: string, m: SyncMessage): void {
    if (m.heartbeat != null) {
      const r = decodeHeartbeat(new TextEncoder().encode(m.heartbeat), peer)
      if (!r.ok) this.o.view.countDrop(peer, r.reason, `in a sync: ${r.detail}`)
      else {
        const known = this.o.view.get(peer)
        const seen = known != null && (r.heartbeat.incarnation < known.incarnation || (r.heartbeat.incarnation === known.incarnation && r.heartbeat.seq <= known.seq))
        if (!seen) this.ingestHeartbeat(r.heartbeat, true)
      }
    }
    if (m.members == null) return
    this.detector.receive(m.members, peer, false)
    for (const x of m.members) {
      if (x.peer === this.detector.selfId || x.addrs.length === 0 || this.o.view.get(x.peer) != null) continue
      if (this.o.isMember != null && !this.o.isMember(x.peer)) {
        this.rememberAddrs(x.peer, x.addrs)
        continue
      }
      void this.o.connector.ensure(x.peer, x.addrs)
    }
  }

  /**
   * Push-pull with `peer`: both hand over their heartbeats and the digests of their
   * member lists. When the digests differ, the answer carries its list, and this node
   * sends its own in a second exchange (`full`), which is answered with the list again
   * only if the two still differ: a settled cluster's syncs carry no list at all, and a
   * sync never takes more than two exchanges. True when `peer` answered.
   */
  private async sync (peer: string, full = false): Promise<boolean> {
    if (this.stopped) return false
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(Math.max(5_000, this.o.intervalMs * 5))])
    try {
      const stream = await this.o.libp2p.dialProtocol(peerIdFromString(peer), SWIM_PROTOCOL, { signal })
      const r = await exchange(stream, this.syncMessage(full), signal)
      if (r.type !== 'sync') return false
      this.onSync(peer, r)
      this.syncs[r.members == null ? 'same' : 'differed']++
      if (!full && r.members != null) return await this.sync(peer, true)
      return true
    } catch (err) {
      this.log.debug({ peer, err: (err as Error).message }, 'sync failed')
      return false
    }
  }

  /**
   * The sync of a new connection, tried again after 0.5, 1, 2 and 4 s until answered.
   * Each end admits the other to the cluster on its own schedule, and refuses a sync
   * from a peer it has not admitted yet; nothing else hands the two their heartbeats
   * soon (the next random sync between the two may be minutes away), so a refused
   * first sync left a peer's claims unseen for that long.
   */
  private async syncOnConnect (peer: string): Promise<void> {
    for (let i = 0; i < SYNC_ON_CONNECT_TRIES; i++) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** i))
      if (this.stopped || !this.o.connector.connected(peer)) return
      if (this.o.isMember != null && !this.o.isMember(peer)) continue
      if (await this.sync(peer)) return
    }
  }

  private readonly onSwimStream = (stream: Stream, connection: { remotePeer: PeerId }): void => {
    const peer = connection.remotePeer.toString()
    if (this.o.isMember != null && !this.o.isMember(peer)) {
      this.refuse(peer, new SwimRefusal('not-member', 'the sender is not a member of this cluster'))
      stream.abort(new Error('not a member of this cluster'))
      return
    }
    void this.serveSwim(stream, peer)
  }

  private refuse (peer: string, err: SwimRefusal): void {
    this.refused[err.reason]++
    this.log.warn({ peer, reason: err.reason, detail: err.message }, 'swim request refused')
  }

  private async serveSwim (stream: Stream, peer: string): Promise<void> {
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(10_000)])
    try {
      const { request, framed } = await readRequest(stream, signal)
      this.o.view.heard(peer)
      if (request.type === 'ping') {
        this.detector.receive(request.changes, peer)
        await reply(framed, { v: SWIM_VERSION, type: 'ack', changes: this.detector.piggyback(peer) }, signal)
        return
      }
      if (request.type === 'ping-req') {
        const target = request.target
        if (target === peer || (this.o.isMember != null && !this.o.isMember(target)) || (target !== this.detector.selfId && this.detector.state(target) == null)) {
          throw new SwimRefusal('target-not-member', `ping-req for ${target}, not a member this node knows`)
        }
        this.detector.receive(request.changes, peer)
        let ack = target === this.detector.selfId
        if (!ack && this.detector.mayProbe(target)) {
          const r = await this.sendProbe(target, { v: SWIM_VERSION, type: 'ping', changes: this.detector.piggyback(target) }, Math.min(request.timeoutMs, 10_000))
          if (r?.ack === true) {
            ack = true
            this.detector.receive(r.changes, target)
          }
        }
        await reply(framed, { v: SWIM_VERSION, type: ack ? 'ack' : 'nack', changes: this.detector.piggyback(peer) }, signal)
        return
      }
      // Compared before applying: the asker's list differs from ours, so it gets ours.
      const differs = request.digest !== membersDigest(this.detector.snapshot())
      this.onSync(peer, request)
      await reply(framed, this.syncMessage(differs), signal)
    } catch (err) {
      if (err instanceof SwimRefusal) this.refuse(peer, err)
      else this.log.debug({ peer, err: (err as Error).message }, 'swim request not served')
      try {
        stream.abort(err as Error)
      } catch {}
    }
  }

  private get pubsub (): MscLibp2p['services']['pubsub'] {
    return this.o.libp2p.services.pubsub
  }

  private readonly validate = (peer: PeerId, msg: Message): TopicValidatorResult => {
    if (msg.type !== 'signed') {
      this.o.view.countDrop(peer.toString(), 'forged-sender', 'unsigned message')
      return TopicValidatorResult.Reject
    }
    if (this.o.isMember != null && !this.o.isMember(msg.from.toString())) {
      this.o.view.countDrop(msg.from.toString(), 'not-member', 'the sender is not a member of this cluster')
      return TopicValidatorResult.Reject
    }
    const r = decodeMessage(msg.data, msg.from.toString())
    if (!r.ok) {
      this.o.view.countDrop(msg.from.toString(), r.reason, r.detail)
      this.log.debug({ from: msg.from.toString(), reason: r.reason, detail: r.detail }, 'heartbeat dropped')
      return TopicValidatorResult.Reject
    }
    return TopicValidatorResult.Accept
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== MEMBERSHIP_TOPIC || msg.type !== 'signed') return
    const r = decodeMessage(msg.data, msg.from.toString())
    if (!r.ok) return
    if ('changes' in r) {
      const c = r.changes
      if (c.peerId === this.detector.selfId) return
      if (Math.abs(Date.now() - c.sentAt) > MAX_CHANGES_AGE_MS) {
        this.o.view.countDrop(c.peerId, 'stale', `changes sent ${Date.now() - c.sentAt} ms ago`)
        return
      }
      if (this.o.view.get(c.peerId) == null) return // not heard of yet: its heartbeat comes first
      this.detector.receive(c.changes, c.peerId)
      return
    }
    this.ingestHeartbeat(r.heartbeat)
  }

  /** A validated heartbeat of `hb.peerId`'s own (from the topic, or from a sync with it). */
  /**
   * `inSync`: it came in a sync with its sender, which carries this node's view of the
   * sender already: no second sync to tell it. (With a fresh heartbeat in every sync, a
   * sync answered by syncing back made two nodes, one holding the other suspect, sync
   * with each other without pause: a storm that starved a 16-node testbed.)
   */
  private ingestHeartbeat (hb: Heartbeat, inSync = false): void {
    if (this.o.view.ingest(hb)) {
      this.detector.heard(hb.peerId, hb.incarnation, hb.type === 'leave')
      if (hb.type !== 'heartbeat') return
      // Full mesh: a member we hear of through another must be dialled directly.
      // (It learns our heartbeat from the sync each side starts on the new connection, not
      // from a publish: every member publishing to every member on each join made a
      // join cost the cluster N² deliveries, enough to starve a 2-core host at 16 nodes.)
      void this.o.connector.ensure(hb.peerId, hb.addrs)
      // It talks, but this node holds it suspect or dead: tell it, so that it refutes.
      const now = this.detector.state(hb.peerId)
      if (!inSync && (now === 'suspect' || now === 'dead')) void this.sync(hb.peerId)
      if (this.o.view.claimsWanted(hb.peerId) != null) void this.fetchClaimsOf(hb.peerId)
    }
  }

  private readonly onClaimsStream = (stream: Stream, connection: { remotePeer: PeerId }): void => {
    const peer = connection.remotePeer.toString()
    if (this.o.isMember != null && !this.o.isMember(peer)) {
      stream.abort(new Error('not a member of this cluster'))
      return
    }
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(FETCH_TIMEOUT_MS)])
    serveClaims(stream, () => this.claimPages(), signal)
      .catch((err) => {
        this.log.debug({ peer, err: (err as Error).message }, 'claims not served')
        try {
          stream.abort(err as Error)
        } catch {}
      })
  }

  /** This node's set as /msc/claims/1 pages, encoded once per revision. */
  private claimPages (): Uint8Array[] {
    if (this.pages?.rev !== this.ledger.rev) {
      const snapshot = { peerId: this.o.libp2p.peerId.toString(), incarnation: this.incarnation, ...this.ledger.snapshot() }
      this.pages = { rev: snapshot.rev, pages: encodePages(snapshot) }
    }
    return this.pages.pages
  }

  /**
   * Fetches the peer's whole claim set from the peer itself and hands it to the view.
   * A set that breaks the protocol's rules is a `claims-page` drop; any failure backs off.
   */
  private async fetchClaimsOf (peer: string): Promise<void> {
    const backoff = this.fetchBackoff.get(peer)
    if (this.fetching.has(peer) || this.stopped || (backoff != null && Date.now() < backoff.until)) return
    this.fetching.add(peer)
    let ok = false
    try {
      const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(FETCH_TIMEOUT_MS)])
      const stream = await this.o.libp2p.dialProtocol(peerIdFromString(peer), CLAIMS_PROTOCOL, { signal })
      const set = await fetchClaims(stream, peer, signal)
      const wanted = this.o.view.claimsWanted(peer)
      ok = this.o.view.applyClaimSet(peer, set) || wanted == null || set.rev < wanted.rev
      this.log.debug({ peer, rev: set.rev, claims: set.claims.length, applied: ok }, 'claims fetched')
    } catch (err) {
      if (err instanceof ClaimsPageError) this.o.view.countDrop(peer, 'claims-page', err.message)
      else this.log.debug({ peer, err: (err as Error).message }, 'claims not fetched')
    } finally {
      this.fetching.delete(peer)
    }
    if (ok) {
      this.fetchBackoff.delete(peer)
      return
    }
    const ms = Math.min(MAX_FETCH_BACKOFF_MS, (backoff?.ms ?? this.o.intervalMs / 2) * 2)
    this.fetchBackoff.set(peer, { until: Date.now() + ms, ms })
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    // A lost connection is a hint, not a verdict: probe it now rather than in its turn.
    const peer = evt.detail.toString()
    if (!this.stopped && this.detector.mayProbe(peer)) void this.detector.probe(peer)
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    const peer = evt.detail.toString()
    // Each side's heartbeat and members, whatever gossipsub delivers: a joining node is
    // known to its first contact at once, and learns (and dials) the rest. A member
    // reconnecting after a cut may be dead here (and we there): each side learns it, and refutes.
    if (this.stopped) return
    void this.syncOnConnect(peer)
  }

  async start (): Promise<void> {
    this.pubsub.topicValidators.set(MEMBERSHIP_TOPIC, this.validate)
    this.pubsub.addEventListener('message', this.onMessage)
    this.o.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.o.libp2p.addEventListener('peer:connect', this.onConnect)
    await this.o.libp2p.handle(CLAIMS_PROTOCOL, this.onClaimsStream, { maxInboundStreams: MAX_CLAIMS_STREAMS })
    await this.o.libp2p.handle(SWIM_PROTOCOL, this.onSwimStream, { maxInboundStreams: MAX_SWIM_STREAMS })
    // Our own containers first: a claim heard before them must not take a name in our view.
    this.o.view.setLocalClaims(await this.o.local.containers())
    this.pubsub.subscribe(MEMBERSHIP_TOPIC)
    // Every interval the heartbeat is rebuilt (which also checks this node's containers),
    // but published only when it changed (syncs carry it otherwise).
    this.publishTimer = setInterval(() => {
      void this.publish('heartbeat', false, true)
    }, this.o.intervalMs)
    this.tickTimer = setInterval(() => {
      this.tick()
    }, Math.max(50, Math.min(250, this.o.intervalMs / 2)))
    this.scheduleProbe()
    this.scheduleSync()
    await this.publish('heartbeat')
  }

  /** The next push-pull round (syncEveryMs). */
  private scheduleSync (): void {
    if (this.stopped) return
    this.syncTimer = setTimeout(() => {
      this.syncRound()
      this.scheduleSync()
    }, syncEveryMs(this.o.intervalMs))
  }

  /** One push-pull with a random alive member, and one with a connected member held suspect or dead here (it learns it, and refutes if it can). */
  private syncRound (): void {
    const members = this.o.view.members()
    const alive = members.filter((m) => m.state === 'alive')
    const pick = alive[Math.floor(Math.random() * alive.length)]
    if (pick != null) void this.sync(pick.peerId)
    const doubted = members.filter((m) => (m.state === 'suspect' || m.state === 'dead') && this.o.connector.connected(m.peerId))
    const other = doubted[Math.floor(Math.random() * doubted.length)]
    if (other != null) void this.sync(other.peerId)
  }

  /** The next probe round, one interval (stretched by local health) from now. */
  private scheduleProbe (): void {
    if (this.stopped) return
    this.probeTimer = setTimeout(() => {
      void this.detector.probe()
      // Suspects too, each round: the suspicion rides first on the probe, the refutation on the ack.
      for (const peer of this.detector.suspects()) void this.detector.probe(peer, false)
      this.scheduleProbe()
    }, this.detector.intervalMs())
  }

  /** Says goodbye (best effort, bounded), then stops. */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.publishTimer)
    clearInterval(this.tickTimer)
    clearTimeout(this.syncTimer)
    clearTimeout(this.probeTimer)
    this.stopping.abort(new Error('membership stopped'))
    await Promise.race([this.publish('leave', true), new Promise((resolve) => setTimeout(resolve, 500))])
    this.pubsub.removeEventListener('message', this.onMessage)
    this.o.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    this.o.libp2p.removeEventListener('peer:connect', this.onConnect)
    this.pubsub.topicValidators.delete(MEMBERSHIP_TOPIC)
    await this.o.libp2p.unhandle(CLAIMS_PROTOCOL).catch(() => {})
    await this.o.libp2p.unhandle(SWIM_PROTOCOL).catch(() => {})
    try {
      this.pubsub.unsubscribe(MEMBERSHIP_TOPIC)
    } catch {}
  }

  /**
   * Peers the cluster admitted just now dropped this node's heartbeats until now, as it
   * dropped theirs: each connected one gets a push-pull sync at once, which hands both
   * their heartbeats point to point. (Publishing to the topic instead, as every member
   * did on each admission, cost each join N publishes of N deliveries each.) One not
   * connected yet is dialled if a sync named its addresses before (rememberAddrs), and
   * syncs when the connection comes up.
   */
  admitted (peers: string[]): void {
    for (const p of peers) {
      const addrs = this.unadmittedAddrs.get(p)
      this.unadmittedAddrs.delete(p)
      if (this.o.connector.connected(p)) void this.sync(p)
      else if (addrs != null) void this.o.connector.ensure(p, addrs)
    }
  }

  /**
   * A member that a sync named before the cluster admitted it here (a node joining
   * through one member learns the others from its sync before their admissions reach
   * it): where to dial it once it is admitted. At most MAX_UNADMITTED entries, oldest
   * dropped first: a sync is a member's word, not proof of anything.
   */
  private rememberAddrs (peer: string, addrs: string[]): void {
    this.unadmittedAddrs.delete(peer)
    this.unadmittedAddrs.set(peer, addrs)
    if (this.unadmittedAddrs.size > MAX_UNADMITTED) this.unadmittedAddrs.delete(this.unadmittedAddrs.keys().next().value!)
  }

  publishNow (): void {
    void this.publish('heartbeat')
  }

  /** Builds our heartbeat (also what `msc status` shows of ourselves). */
  async selfHeartbeat (type: Heartbeat['type'] = 'heartbeat'): Promise<Heartbeat> {
    const l = this.o.local
    // A leaving node still owns what it runs: its containers outlive the daemon
    // (docs/architecture.md), so a goodbye must not hand their names to others.
    const all = await l.containers()
    this.o.view.setLocalClaims(all)
    const { omitted } = this.ledger.update(all)
    if (omitted !== this.omittedClaims) {
      this.omittedClaims = omitted
      if (omitted > 0) this.log.error({ claims: all.length, omitted }, `more container records than a node may claim: ${omitted} names are not claimed, so other nodes may take them`)
    }
    const { containers, claims } = this.ledger.summary()
    const resources = await l.resources()
    // seq is taken after every await: two overlapping publishes must not go out with
    // their sequence numbers in the wrong order (peers would drop one as a replay).
    return {
      v: HEARTBEAT_VERSION,
      type,
      peerId: this.o.libp2p.peerId.toString(),
      incarnation: this.incarnation,
      seq: ++this.seq,
      sentAt: Date.now(),
      name: l.name,
      version: l.version,
      role: l.role,
      addrs: dialableAddrs(this.o.libp2p.getMultiaddrs().map((m) => m.toString())).slice(0, 32),
      containers,
      ...(claims != null ? { claims } : {}),
      resources
    }
  }

  /**
   * Publishes this node's heartbeat. `onlyIfChanged`: only when its claims or addresses
   * changed since the last one published. There is no periodic publish: each published
   * heartbeat reaches every node about D + 1 times (gossipsub's flood publish, then its
   * mesh of D = 6), which made a periodic one, at 16 nodes, most of an idle node's
   * traffic; the syncs (syncEveryMs) hand it over point to point instead.
   */
  private async publish (type: Heartbeat['type'], force = false, onlyIfChanged = false): Promise<void> {
    if (this.stopped && !force) return
    let hb: Heartbeat
    try {
      hb = await this.selfHeartbeat(type)
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'heartbeat not built')
      return
    }
    let bytes: Uint8Array
    try {
      bytes = encodeHeartbeat(hb)
    } catch (err) {
      // Bounded by construction (claim-set.ts): reaching this is a bug, and peers go without our heartbeat.
      this.log.error({ err: (err as Error).message }, 'heartbeat over its size bound, not sent')
      return
    }
    // What a sync hands over, fresh every interval even when nothing is published: the
    // last published heartbeat may be minutes old, older than receivers accept (30 s),
    // and its resources out of date.
    if (type === 'heartbeat') this.heartbeatText = new TextDecoder().decode(bytes)
    const addrs = hb.addrs.join(' ')
    if (onlyIfChanged && this.ledger.rev === this.publishedRev && addrs === this.publishedAddrs) return
    this.publishedRev = this.ledger.rev
    this.publishedAddrs = addrs
    try {
      await this.pubsub.publish(MEMBERSHIP_TOPIC, bytes)
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'heartbeat not published')
    }
  }

  /** SWIM verdicts of this node's own, on the topic: each member hears them first-hand. */
  private async publishChanges (changes: SwimChange[]): Promise<void> {
    if (this.stopped && changes.every((c) => c.peer !== this.detector.selfId)) return
    const msg = {
      v: HEARTBEAT_VERSION,
      type: 'changes' as const,
      peerId: this.detector.selfId,
      incarnation: this.incarnation,
      seq: ++this.seq,
      sentAt: Date.now(),
      changes: changes.slice(0, MAX_TOPIC_CHANGES)
    }
    try {
      await this.pubsub.publish(MEMBERSHIP_TOPIC, new TextEncoder().encode(JSON.stringify(msg)))
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'changes not published')
    }
  }

  private tick (): void {
    this.o.view.tick()
    this.detector.tick()
    // The dead are redialled (with the connector's backoff): a healed link or a
    // restarted host comes back without anyone running `msc join`.
    for (const m of this.o.view.members()) {
      if (m.state === 'dead') void this.o.connector.ensure(m.peerId, m.addrs)
      // Heartbeats are rare now: a set still wanted is fetched again once its backoff ran out.
      else if (m.state === 'alive' && this.o.view.claimsWanted(m.peerId) != null) void this.fetchClaimsOf(m.peerId)
    }
    // Members the view forgot (long dead, or removed from the cluster) leave the detector too.
    for (const peer of this.detector.known()) {
      if (this.o.view.get(peer) == null) this.detector.forget(peer)
    }
  }
}

/**
 * Loopback addresses are useless to a peer on another host (it would dial itself);
 * keep them only when there is nothing else (a single-host cluster).
 */
export function dialableAddrs (addrs: string[]): string[] {
  const external = addrs.filter((a) => !/^\/ip4\/127\.|^\/ip6\/::1\//.test(a))
  return external.length > 0 ? external : addrs
}
