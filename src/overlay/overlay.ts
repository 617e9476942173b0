import fs from 'node:fs/promises'
import os from 'node:os'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { ConnectionGater, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2pHost, type Libp2pHostOptions, type MscLibp2p } from './libp2p-host.ts'
import { PeerConnector } from './connector.ts'
import { LanQueries } from './lan-queries.ts'
import { MembershipView, type Member, type MembershipViewInit } from './membership/membership-view.ts'
import { MembershipService } from './membership/membership-service.ts'
import type { ContainerClaim, Heartbeat } from './membership/heartbeat.ts'

export interface OverlayConfig {
  privateKey: PrivateKey
  /** The pnet pre-shared key (a key-file cluster), if any. */
  psk?: Uint8Array
  dataDir: string
  name: string
  version: string
  listen: string[]
  announce: string[]
  bootstrap: string[]
  mdns: boolean
  mdnsIntervalMs: number
  pingIntervalMs: number
  pingTimeoutMs: number
  suspectTimeoutMs: number
  /** What the heartbeat says this node is: 'observer' for a witness (votes, runs nothing). */
  role?: 'node' | 'observer'
}

/**
 * Who may talk to this node (the cluster decides): the libp2p connection gater, and the
 * membership test every msc protocol handler and every heartbeat goes through.
 */
export interface OverlayGate {
  gater: ConnectionGater
  isMember: (peerId: string) => boolean
}

export interface OverlayDeps {
  claims: () => Promise<ContainerClaim[]>
  logger: Logger
  gate?: OverlayGate
  /** The failover proof check of the membership view (MembershipViewInit.verifyGrant). */
  verifyGrant?: MembershipViewInit['verifyGrant']
  /** libp2p's own metrics (createLibp2pHost's `metrics`), when the node serves metrics. */
  metrics?: Libp2pHostOptions['metrics']
}

/** Gossipsub refuses frames past this; membership's own limit (64 KiB) is far below. */
const MAX_PUBSUB_MESSAGE_BYTES = 16 * 1024 * 1024

/**
 * The peer-to-peer layer of a node: libp2p host, discovery and dialling, membership.
 * Knows nothing of runc or CRIU: containers reach it only as claims (name, epoch).
 */
export class Overlay {
  readonly view: MembershipView
  private readonly cfg: OverlayConfig
  private readonly log: Logger
  private readonly claims: () => Promise<ContainerClaim[]>
  private readonly gate?: OverlayGate
  private refusedStreams = 0
  private libp2p?: MscLibp2p
  private connector?: PeerConnector
  private membership?: MembershipService
  private readonly onState = (evt: CustomEvent<{ peerId: string; from: string | null; to: string }>): void => {
    const { peerId, from, to } = evt.detail
    const m = this.view.get(peerId)
    this.log.info({ peer: peerId, name: m?.name, from, to }, `peer ${to}`)
    if (to === 'dead' || to === 'left') void this.connector?.disconnect(peerId)
  }

  private readonly onDrop = (evt: CustomEvent<{ peerId: string; reason: string; detail: string }>): void => {
    this.log.warn({ peer: evt.detail.peerId, reason: evt.detail.reason, detail: evt.detail.detail }, 'membership message dropped')
  }

  constructor (cfg: OverlayConfig, deps: OverlayDeps, selfId?: string) {
    this.cfg = cfg
    this.log = deps.logger
    this.claims = deps.claims
    this.gate = deps.gate
    this.view = new MembershipView({
      selfId: selfId ?? '',
      timers: {
        suspectAfterMs: cfg.suspectTimeoutMs,
        deadAfterMs: cfg.pingTimeoutMs,
        forgetAfterMs: Math.max(600_000, cfg.pingTimeoutMs * 10),
        maxAgeMs: Math.max(30_000, cfg.pingTimeoutMs * 3)
      },
      externalVerdicts: true,
      verifyGrant: deps.verifyGrant
    })
  }

  static async create (cfg: OverlayConfig, deps: OverlayDeps): Promise<Overlay> {
    const overlay = new Overlay(cfg, deps, peerIdFromPrivateKey(cfg.privateKey).toString())
    overlay.libp2p = await createLibp2pHost({
      privateKey: cfg.privateKey,
      listen: cfg.listen,
      announce: cfg.announce,
      bootstrap: cfg.bootstrap,
      mdns: cfg.mdns,
      psk: cfg.psk,
      maxPubsubMessageBytes: MAX_PUBSUB_MESSAGE_BYTES,
      connectionGater: deps.gate?.gater,
      metrics: deps.metrics
    })
    return overlay
  }

  get peerId (): string {
    return this.view.selfId
  }

  get host (): MscLibp2p {
    if (this.libp2p == null) throw new MscError('INTERNAL', 'overlay not created')
    return this.libp2p
  }

  async start (): Promise<void> {
    const libp2p = this.host
    try {
      await libp2p.start()
    } catch (err) {
      throw new MscError('INVALID_ARGUMENT', `cannot listen on ${this.cfg.listen.join(', ')}: ${(err as Error).message}`)
    }
    this.connector = new PeerConnector(libp2p, this.log.child({ component: 'connector' }))
    this.connector.start()
    this.view.addEventListener('member:state', this.onState)
    this.view.addEventListener('drop', this.onDrop)
    this.membership = new MembershipService({
      libp2p,
      view: this.view,
      connector: this.connector,
      intervalMs: this.cfg.pingIntervalMs,
      suspicionMinMs: this.cfg.suspectTimeoutMs,
      suspicionMaxMs: this.cfg.pingTimeoutMs,
      isMember: this.isMember,
      logger: this.log.child({ component: 'membership' }),
      local: { name: this.cfg.name, version: this.cfg.version, role: this.cfg.role ?? 'node', containers: this.claims, resources: async () => await this.resources() }
    })
    await this.membership.start()
    // @libp2p/bootstrap dials each address once, at start: a bootstrap peer that comes
    // up later would never be joined. Keep trying those we are not connected to.
    if (this.cfg.bootstrap.length > 0) {
      this.bootstrapTimer = setInterval(() => {
        void this.redialBootstrap()
      }, 5_000)
    }
    const mdns = libp2p.services.mdns
    if (mdns != null) {
      this.lanQueries = new LanQueries(mdns, { intervalMs: this.cfg.mdnsIntervalMs, connections: () => libp2p.getConnections().length, logger: this.log.child({ component: 'mdns' }) })
      this.lanQueries.start()
    }
    this.log.info({ peerId: this.peerId, name: this.cfg.name, addrs: this.addresses() }, 'overlay started')
  }

  private bootstrapTimer?: NodeJS.Timeout
  private lanQueries?: LanQueries

  private async redialBootstrap (): Promise<void> {
    for (const addr of this.cfg.bootstrap) {
      const peer = addr.split('/p2p/')[1]
      if (peer == null || this.connected(peer)) continue
      await this.connector?.join(addr, AbortSignal.timeout(4_000)).catch(() => {})
    }
  }

  async stop (): Promise<void> {
    clearInterval(this.bootstrapTimer)
    this.lanQueries?.stop()
    this.view.removeEventListener('member:state', this.onState)
    this.view.removeEventListener('drop', this.onDrop)
    await this.membership?.stop()
    this.connector?.stop()
    await this.libp2p?.stop()
  }

  addresses (): string[] {
    return this.libp2p?.getMultiaddrs().map((m) => m.toString()) ?? []
  }

  connected (peerId: string): boolean {
    return this.connector?.connected(peerId) ?? false
  }

  async join (addr: string, signal?: AbortSignal): Promise<string> {
    if (this.connector == null) throw new MscError('INTERNAL', 'overlay not started')
    return await this.connector.join(addr, signal)
  }

  members (): Member[] {
    return this.view.members()
  }

  /** The cluster admitted these peers: exchange heartbeats with them now. */
  admitted (peers: string[]): void {
    this.membership?.admitted(peers)
  }

  /** Publish our heartbeat now (an ownership change must not wait for the interval). */
  announce (): void {
    this.membership?.publishNow()
  }

  /** Pings `peerId` over its open connection and replaces the connection if the pong is later than `timeoutMs`. */
  async checkConnection (peerId: string, timeoutMs: number): Promise<void> {
    await this.connector?.checkConnection(peerId, timeoutMs)
  }

  async dialProtocol (peerId: string, protocol: string, signal: AbortSignal): Promise<Stream> {
    return await this.host.dialProtocol(peerIdFromString(peerId), protocol, { signal })
  }

  /**
   * The IP address this node's open connection to `peer` reaches it at (where a data
   * channel the peer offers can be dialled), or undefined without a direct TCP one.
   */
  peerIp (peerId: string): string | undefined {
    for (const c of this.host.getConnections(peerIdFromString(peerId))) {
      if (c.status !== 'open') continue
      const ip = c.remoteAddr.getComponents().find((x) => x.name === 'ip4' || x.name === 'ip6')?.value
      const tcp = c.remoteAddr.getComponents().some((x) => x.name === 'tcp')
      if (ip != null && tcp) return ip
    }
    return undefined
  }

  /** The host of this node's first TCP listen address (a data channel listens there too). */
  listenIp (): string | undefined {
    for (const a of this.cfg.listen) {
      const parts = multiaddr(a).getComponents()
      const ip = parts.find((x) => x.name === 'ip4' || x.name === 'ip6')?.value
      if (ip != null && parts.some((x) => x.name === 'tcp')) return ip
    }
    return undefined
  }

  /** Whether the cluster counts the peer as a member (every peer, without a gate). */
  readonly isMember = (peerId: string): boolean => this.gate == null || this.gate.isMember(peerId)

  /**
   * Serves a protocol to members only: a stream from any other peer (one let in to
   * join, say) is reset before the handler sees it, and counted.
   */
  async handle (protocol: string, handler: (stream: Stream, remotePeer: string) => Promise<void>, maxInboundStreams = 16): Promise<void> {
    await this.handleOpen(protocol, async (stream, peer) => {
      if (!this.isMember(peer)) {
        this.refusedStreams++
        this.log.warn({ protocol, peer }, 'stream from a non-member refused')
        stream.abort(new Error('not a member of this cluster'))
        return
      }
      await handler(stream, peer)
    }, maxInboundStreams)
  }

  /** Serves a protocol to any connected peer; the handler gets the authenticated peer id and decides. */
  async handleOpen (protocol: string, handler: (stream: Stream, remotePeer: string) => Promise<void>, maxInboundStreams = 16): Promise<void> {
    await this.host.handle(protocol, (stream, connection) => {
      handler(stream, connection.remotePeer.toString()).catch((err) => {
        this.log.warn({ protocol, peer: connection.remotePeer.toString(), err: (err as Error).message }, 'stream handler failed')
        try {
          stream.abort(err as Error)
        } catch {}
      })
    }, { maxInboundStreams })
  }

  /** Streams from non-members reset by handle(). */
  get refusedStreamCount (): number {
    return this.refusedStreams
  }

  async dialAddr (addr: string, protocol: string, signal: AbortSignal): Promise<Stream> {
    return await this.host.dialProtocol(multiaddr(addr), protocol, { signal })
  }

  connectedPeers (): string[] {
    return [...new Set(this.host.getConnections().filter((c) => c.status === 'open').map((c) => c.remotePeer.toString()))]
  }

  /** Closes every connection to the peer (what it claimed is the view's: see MembershipView.forget). */
  async disconnect (peerId: string, why: string): Promise<void> {
    this.log.info({ peer: peerId, why }, 'disconnecting')
    await this.connector?.disconnect(peerId, why)
  }

  onConnect (fn: (peerId: string) => void): () => void {
    const h = (evt: CustomEvent<PeerId>): void => {
      fn(evt.detail.toString())
    }
    this.host.addEventListener('peer:connect', h)
    return () => {
      this.host.removeEventListener('peer:connect', h)
    }
  }

  private async resources (): Promise<Heartbeat['resources']> {
    let diskFreeBytes = 0
    try {
      const s = await fs.statfs(this.cfg.dataDir)
      diskFreeBytes = s.bavail * s.bsize
    } catch {}
    return { memFreeBytes: os.freemem(), memTotalBytes: os.totalmem(), diskFreeBytes }
  }
}
