import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import type { PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from '../../util/logger.ts'
import type { MscLibp2p } from '../libp2p-host.ts'
import type { PeerConnector } from '../connector.ts'
import { decodeHeartbeat, encodeHeartbeat, HEARTBEAT_VERSION, type ContainerClaim, type Heartbeat } from './heartbeat.ts'
import type { MembershipView } from './membership-view.ts'
import { ClaimLedger } from './claim-set.ts'
import { CLAIMS_PROTOCOL, ClaimsPageError, encodePages, FETCH_TIMEOUT_MS, fetchClaims, serveClaims } from './claims-protocol.ts'

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
  intervalMs: number
  logger: Logger
  /** Heartbeats from peers that are not members of the cluster are dropped. */
  isMember?: (peerId: string) => boolean
}

/** Inbound /msc/claims/1 streams per connection: a peer asks for one set at a time. */
const MAX_CLAIMS_STREAMS = 2
/** After a failed fetch of a peer's claims, the next waits this long, doubling, at most MAX_FETCH_BACKOFF_MS. */
const MAX_FETCH_BACKOFF_MS = 30_000

/**
 * Runs membership on gossipsub: publishes this node's heartbeat every interval,
 * validates every message on the topic (invalid ones are rejected, so gossipsub
 * neither delivers nor forwards them, and counted), feeds the view, pings suspects
 * directly, and cuts connections to the dead. Serves this node's claim set over
 * /msc/claims/1 to members, and fetches a peer's set when the view cannot rebuild it
 * from heartbeats (one fetch per peer at a time, backing off after failures).
 */
export class MembershipService {
  private readonly o: MembershipServiceInit
  private readonly log: Logger
  private readonly incarnation = Date.now()
  private seq = 0
  private publishTimer?: NodeJS.Timeout
  private tickTimer?: NodeJS.Timeout
  private readonly pinging = new Set<string>()
  private stopped = false
  private readonly ledger = new ClaimLedger()
  private omittedClaims = 0
  private readonly fetching = new Set<string>()
  private readonly fetchBackoff = new Map<string, { until: number; ms: number }>()
  private readonly stopping = new AbortController()
  private pages?: { rev: number; pages: Uint8Array[] }

  constructor (init: MembershipServiceInit) {
    this.o = init
    this.log = init.logger
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
    const r = decodeHeartbeat(msg.data, msg.from.toString())
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
    const r = decodeHeartbeat(msg.data, msg.from.toString())
    if (!r.ok) return
    const before = this.o.view.get(r.heartbeat.peerId)?.state
    if (this.o.view.ingest(r.heartbeat) && r.heartbeat.type === 'heartbeat') {
      // Full mesh: a member we hear of through another must be dialled directly.
      void this.o.connector.ensure(r.heartbeat.peerId, r.heartbeat.addrs)
      if (before !== 'alive') this.publishSoon()
      if (this.o.view.claimsWanted(r.heartbeat.peerId) != null) void this.fetchClaimsOf(r.heartbeat.peerId)
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
    this.o.view.markDisconnected(evt.detail.toString())
  }

  private readonly onConnect = (): void => {
    this.publishSoon()
  }

  private readonly onSubscriptionChange = (): void => {
    this.publishSoon()
  }

  async start (): Promise<void> {
    this.pubsub.topicValidators.set(MEMBERSHIP_TOPIC, this.validate)
    this.pubsub.addEventListener('message', this.onMessage)
    this.pubsub.addEventListener('subscription-change', this.onSubscriptionChange)
    this.o.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.o.libp2p.addEventListener('peer:connect', this.onConnect)
    await this.o.libp2p.handle(CLAIMS_PROTOCOL, this.onClaimsStream, { maxInboundStreams: MAX_CLAIMS_STREAMS })
    // Our own containers first: a claim heard before them must not take a name in our view.
    this.o.view.setLocalClaims(await this.o.local.containers())
    this.pubsub.subscribe(MEMBERSHIP_TOPIC)
    this.publishTimer = setInterval(() => {
      void this.publish('heartbeat')
    }, this.o.intervalMs)
    this.tickTimer = setInterval(() => {
      this.tick()
    }, Math.max(50, Math.min(250, this.o.intervalMs / 2)))
    await this.publish('heartbeat')
  }

  /** Says goodbye (best effort, bounded), then stops. */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.publishTimer)
    clearInterval(this.tickTimer)
    clearTimeout(this.soonTimer)
    this.stopping.abort(new Error('membership stopped'))
    await Promise.race([this.publish('leave', true), new Promise((resolve) => setTimeout(resolve, 500))])
    this.pubsub.removeEventListener('message', this.onMessage)
    this.pubsub.removeEventListener('subscription-change', this.onSubscriptionChange)
    this.o.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    this.o.libp2p.removeEventListener('peer:connect', this.onConnect)
    this.pubsub.topicValidators.delete(MEMBERSHIP_TOPIC)
    await this.o.libp2p.unhandle(CLAIMS_PROTOCOL).catch(() => {})
    try {
      this.pubsub.unsubscribe(MEMBERSHIP_TOPIC)
    } catch {}
  }

  private soonTimer?: NodeJS.Timeout

  publishNow (): void {
    void this.publish('heartbeat')
  }

  /** A new peer or mesh change: tell it who we are now, not at the next interval. */
  private publishSoon (): void {
    if (this.soonTimer != null || this.stopped) return
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined
      void this.publish('heartbeat')
    }, 100)
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

  private async publish (type: Heartbeat['type'], force = false): Promise<void> {
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
    try {
      await this.pubsub.publish(MEMBERSHIP_TOPIC, bytes)
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'heartbeat not published')
    }
  }

  private tick (): void {
    const { confirm } = this.o.view.tick()
    // The dead are redialled (with the connector's backoff): a healed link or a
    // restarted host comes back without anyone running `msc join`.
    for (const m of this.o.view.members()) {
      if (m.state === 'dead') void this.o.connector.ensure(m.peerId, m.addrs)
    }
    for (const peerId of confirm) {
      if (this.pinging.has(peerId)) continue
      this.pinging.add(peerId)
      const member = this.o.view.get(peerId)
      void this.o.connector.ensure(peerId, member?.addrs ?? [])
        .then(async () => await this.o.libp2p.services.ping.ping(peerIdFromMember(this.o.libp2p, peerId), { signal: AbortSignal.timeout(Math.max(500, this.o.intervalMs)) }))
        .then((rtt) => this.o.view.confirmAlive(peerId, rtt))
        .catch(() => this.o.view.confirmFailed(peerId))
        .finally(() => this.pinging.delete(peerId))
    }
  }
}

function peerIdFromMember (libp2p: MscLibp2p, peerId: string): PeerId {
  const conn = libp2p.getConnections().find((c) => c.remotePeer.toString() === peerId)
  if (conn == null) throw new Error('not connected')
  return conn.remotePeer
}

/**
 * Loopback addresses are useless to a peer on another host (it would dial itself);
 * keep them only when there is nothing else (a single-host cluster).
 */
export function dialableAddrs (addrs: string[]): string[] {
  const external = addrs.filter((a) => !/^\/ip4\/127\.|^\/ip6\/::1\//.test(a))
  return external.length > 0 ? external : addrs
}
