import { createLibp2p, type Libp2p, type Libp2pOptions } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { mdns, type MulticastDNSComponents } from '@libp2p/mdns'
import { bootstrap } from '@libp2p/bootstrap'
import { slicedPreSharedKey } from './pnet.ts'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { ConnectionGater, PrivateKey, ComponentLogger, PeerDiscovery, Startable } from '@libp2p/interface'

export type MscServices = { identify: Identify; ping: Ping; pubsub: GossipSub; mdns?: PeerDiscovery & Startable }
export type MscLibp2p = Libp2p<MscServices>

export interface Libp2pHostOptions {
  privateKey: PrivateKey
  listen: string[]
  announce: string[]
  bootstrap: string[]
  mdns: boolean
  psk?: Uint8Array
  /** Frames above this are refused by gossipsub itself (it closes the stream). */
  maxPubsubMessageBytes: number
  logger?: ComponentLogger
  /** Who may connect (the cluster's member gate); everyone without one. */
  connectionGater?: ConnectionGater
  /** libp2p's own metrics (the node's --metrics-listen): none without. */
  metrics?: Libp2pOptions['metrics']
}

/** Inbound connections in their handshakes at once (libp2p's default: 10). */
export const MAX_INCOMING_PENDING_CONNECTIONS = 64
/** Inbound connections accepted per second from one IP address (libp2p's default: 5). */
export const INBOUND_CONNECTIONS_PER_SECOND = 32

/** Longer than any node runs, and within setInterval's range (2^31 - 1 ms): @libp2p/mdns repeats no query of its own. */
const MDNS_NO_REPEAT_MS = 2_000_000_000

/** msc's own mDNS service name: msc nodes find msc nodes, not every libp2p peer. */
export const MDNS_SERVICE_TAG = '_msc._udp.local'

/**
 * Builds the libp2p host: TCP, noise, yamux, identify, ping, gossipsub, and optional
 * mDNS, bootstrap and pnet. There is no autodial in libp2p 3: the PeerConnector
 * dials what discovery finds.
 */
export async function createLibp2pHost (o: Libp2pHostOptions): Promise<MscLibp2p> {
  const discovery: NonNullable<Libp2pOptions['peerDiscovery']> = []
  if (o.bootstrap.length > 0) discovery.push(bootstrap({ list: o.bootstrap, timeout: 100 }))
  return await createLibp2p({
    privateKey: o.privateKey,
    start: false,
    addresses: { listen: o.listen, announce: o.announce },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(o.psk != null ? { connectionProtector: slicedPreSharedKey({ psk: o.psk }) } : {}),
    peerDiscovery: discovery,
    ...(o.logger != null ? { logger: o.logger } : {}),
    ...(o.connectionGater != null ? { connectionGater: o.connectionGater } : {}),
    ...(o.metrics != null ? { metrics: o.metrics } : {}),
    // libp2p's connection monitor pings every connection every 10 s from both ends: with
    // a connection to every member, most of an idle node's traffic at 16 nodes (1.6 of
    // 2.8 KB/s measured). Off: a membership probe that goes unanswered pings its
    // member's connection instead, and replaces it when that is late too
    // (PeerConnector.checkConnection), as does a lease request a grantor leaves
    // unanswered for a second, so a connection stalled by a cut (TCP in retransmission
    // backoff after the heal) is still replaced before a lease runs out on it.
    connectionMonitor: { enabled: false },
    connectionManager: {
      // A node joining a cluster of N is dialled by the N - 1 others within about a
      // second (full mesh). libp2p's defaults (10 pending inbound connections, 5 per
      // second per IP address) refused most of them past 10 nodes, and the refused
      // dialled again only after their backoff, so large clusters took minutes to form.
      maxIncomingPendingConnections: MAX_INCOMING_PENDING_CONNECTIONS,
      inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_SECOND
    },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        // Membership heartbeats repeat every interval: losing one before the mesh
        // forms is harmless, throwing NoPeersSubscribedToTopic is not.
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        maxInboundDataLength: o.maxPubsubMessageBytes
      }),
      // A service, not a plain discovery, so that LanQueries can restart it: it queries
      // once when it starts, and answers queries for as long as it runs.
      ...(o.mdns ? { mdns: mdns({ interval: MDNS_NO_REPEAT_MS, serviceTag: MDNS_SERVICE_TAG }) as (c: MulticastDNSComponents) => PeerDiscovery & Startable } : {})
    }
  })
}
