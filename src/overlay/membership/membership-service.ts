import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from '../../util/logger.ts'
import type { MscLibp2p } from '../libp2p-host.ts'
import type { PeerConnector } from '../connector.ts'
import { decodeHeartbeat, encodeHeartbeat, HEARTBEAT_VERSION, type ContainerClaim, type Heartbeat } from './heartbeat.ts'
import type { MembershipView } from './membership-view.ts'

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

/**
 * Runs membership on gossipsub: publishes this node's heartbeat every interval,
 * validates every message on the topic (invalid ones are rejected, so gossipsub
 * neither delivers nor forwards them, and counted), feeds the view, pings suspects
 * directly, and cuts connections to the dead.
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

  constructor (init: MembershipServiceInit) {
    this.o = init
    this.log = init.logger
  }

  private get pubsub (): MscLibp2p['services']['pubsub'] { return this.o.libp2p.services.pubsub }

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
    }
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    this.o.view.markDisconnected(evt.detail.toString())
  }

  private readonly onConnect = (): void => { this.publishSoon() }

  private readonly onSubscriptionChange = (): void => { this.publishSoon() }

  async start (): Promise<void> {
    this.pubsub.topicValidators.set(MEMBERSHIP_TOPIC, this.validate)
    this.pubsub.addEventListener('message', this.onMessage)
    this.pubsub.addEventListener('subscription-change', this.onSubscriptionChange)
    this.o.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.o.libp2p.addEventListener('peer:connect', this.onConnect)
    // Our own containers first: a claim heard before them must not take a name in our view.
    this.o.view.setLocalClaims(await this.o.local.containers())
    this.pubsub.subscribe(MEMBERSHIP_TOPIC)
    this.publishTimer = setInterval(() => { void this.publish('heartbeat') }, this.o.intervalMs)
    this.tickTimer = setInterval(() => { this.tick() }, Math.max(50, Math.min(250, this.o.intervalMs / 2)))
    await this.publish('heartbeat')
  }

  /** Says goodbye (best effort, bounded), then stops. */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.publishTimer)
    clearInterval(this.tickTimer)
    clearTimeout(this.soonTimer)
    await Promise.race([this.publish('leave', true), new Promise((resolve) => setTimeout(resolve, 500))])
    this.pubsub.removeEventListener('message', this.onMessage)
    this.pubsub.removeEventListener('subscription-change', this.onSubscriptionChange)
    this.o.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    this.o.libp2p.removeEventListener('peer:connect', this.onConnect)
    this.pubsub.topicValidators.delete(MEMBERSHIP_TOPIC)
    try { this.pubsub.unsubscribe(MEMBERSHIP_TOPIC) } catch {}
  }

  private soonTimer?: NodeJS.Timeout

  publishNow (): void { void this.publish('heartbeat') }

  /** A new peer or mesh change: tell it who we are now, not at the next interval. */
  private publishSoon (): void {
    if (this.soonTimer != null || this.stopped) return
    this.soonTimer = setTimeout(() => { this.soonTimer = undefined; void this.publish('heartbeat') }, 100)
  }

  /** Builds our heartbeat (also what `msc status` shows of ourselves). */
  async selfHeartbeat (type: Heartbeat['type'] = 'heartbeat'): Promise<Heartbeat> {
    const l = this.o.local
    // A leaving node still owns what it runs: its containers outlive the daemon
    // (docs/architecture.md), so a goodbye must not hand their names to others.
    const containers = await l.containers()
    this.o.view.setLocalClaims(containers)
    const resources = await l.resources()
    // seq is taken after every await: two overlapping publishes must not go out with
    // their sequence numbers in the wrong order (peers would drop one as a replay).
    return {
      v: HEARTBEAT_VERSION, type, peerId: this.o.libp2p.peerId.toString(), incarnation: this.incarnation,
      seq: ++this.seq, sentAt: Date.now(), name: l.name, version: l.version, role: l.role,
      addrs: dialableAddrs(this.o.libp2p.getMultiaddrs().map((m) => m.toString())).slice(0, 32),
      containers, resources
    }
  }

  private async publish (type: Heartbeat['type'], force = false): Promise<void> {
    if (this.stopped && !force) return
    try {
      const hb = await this.selfHeartbeat(type)
      await this.pubsub.publish(MEMBERSHIP_TOPIC, encodeHeartbeat(hb))
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
