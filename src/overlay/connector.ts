import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { KEEP_ALIVE, type PeerId } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import type { MscLibp2p } from './libp2p-host.ts'

/**
 * Keeps this node connected to every member it knows of (small clusters: a full
 * mesh, so gossip never depends on a path through a third node). libp2p 3 has no
 * autodial: this dials what discovery finds, what heartbeats name, and redials
 * members that went away, with a per-peer backoff.
 */
export class PeerConnector {
  private readonly libp2p: MscLibp2p
  private readonly log: Logger
  private readonly inFlight = new Map<string, Promise<void>>()
  private readonly checking = new Map<string, Promise<boolean>>()
  private readonly backoff = new Map<string, { next: number; delay: number }>()
  private readonly onDiscovery = (evt: CustomEvent<{ id: PeerId; multiaddrs: Multiaddr[] }>): void => {
    void this.ensure(evt.detail.id.toString(), evt.detail.multiaddrs.map((m) => m.toString()))
  }

  constructor (libp2p: MscLibp2p, logger: Logger) {
    this.libp2p = libp2p
    this.log = logger
  }

  start (): void {
    this.libp2p.addEventListener('peer:discovery', this.onDiscovery)
  }

  stop (): void {
    this.libp2p.removeEventListener('peer:discovery', this.onDiscovery)
  }

  connected (peerId: string): boolean {
    return this.libp2p.getConnections(peerIdFromString(peerId)).some((c) => c.status === 'open')
  }

  /**
   * Dials the peer unless connected or recently failed. Never throws: a failed dial
   * only raises the peer's backoff (1 s doubling to 10 s).
   */
  async ensure (peerId: string, addrs: string[] = []): Promise<void> {
    if (peerId === this.libp2p.peerId.toString() || this.connected(peerId)) return
    const b = this.backoff.get(peerId)
    if (b != null && Date.now() < b.next) return
    const running = this.inFlight.get(peerId)
    if (running != null) return await running
    const p = this.dial(peerId, addrs).finally(() => this.inFlight.delete(peerId))
    this.inFlight.set(peerId, p)
    await p
  }

  private async dial (peerId: string, addrs: string[]): Promise<void> {
    const id = peerIdFromString(peerId)
    try {
      const mas = addrs.flatMap((a) => {
        try {
          return [multiaddr(a)]
        } catch {
          return []
        }
      })
      if (mas.length > 0) await this.libp2p.peerStore.merge(id, { multiaddrs: mas.map((m) => stripPeer(m)) })
      await this.libp2p.dial(id, { signal: AbortSignal.timeout(5_000) })
      this.backoff.delete(peerId)
      this.log.debug({ peer: peerId }, 'connected')
    } catch (err) {
      const prev = this.backoff.get(peerId)?.delay ?? 500
      const delay = Math.min(prev * 2, 10_000)
      this.backoff.set(peerId, { next: Date.now() + delay, delay })
      this.log.debug({ peer: peerId, err: (err as Error).message, retryMs: delay }, 'dial failed')
    }
  }

  /**
   * `msc join`: connect to a member of another cluster view at run time. The peer is
   * tagged keep-alive, so libp2p reconnects it if the connection drops.
   */
  async join (addr: string, signal?: AbortSignal): Promise<string> {
    let ma: Multiaddr
    try {
      ma = multiaddr(addr)
    } catch (err) {
      throw new MscError('INVALID_ARGUMENT', `not a multiaddr: ${addr} (${(err as Error).message})`)
    }
    const peer = ma.getComponents().find((c) => c.name === 'p2p')?.value
    try {
      const limit = AbortSignal.timeout(10_000)
      const conn = await this.libp2p.dial(ma, { signal: signal != null ? AbortSignal.any([signal, limit]) : limit })
      // A peer whose gater refuses us aborts the connection only after the handshake,
      // which the dial may not wait for: one round trip proves we were let in.
      // A few tries: the first connection may be the one libp2p closes when both sides
      // dialled each other at once.
      let admitted = false
      for (let i = 0; i < 3 && !admitted; i++) {
        if (i > 0) await new Promise((resolve) => setTimeout(resolve, 500))
        try {
          await this.libp2p.services.ping.ping(conn.remotePeer, { signal: signal != null ? AbortSignal.any([signal, limit]) : limit })
          admitted = true
        } catch {}
      }
      if (!admitted) throw new Error("the peer closed the connection: it is not in this node's cluster, or refuses this node (removed, or not yet a member)")
      await this.libp2p.peerStore.merge(conn.remotePeer, { tags: { [KEEP_ALIVE]: { value: 1 } } })
      return conn.remotePeer.toString()
    } catch (err) {
      // Our own gater refused to dial: the peer is not in this node's cluster.
      const reason = /blocked by gater/i.test((err as Error).message)
        ? "it is not a member of this node's cluster (a node enters another cluster with `msc node start --join TOKEN` on a fresh data dir)"
        : (err as Error).message
      throw new MscError('RUNTIME_ERROR', `cannot join ${addr}${peer == null ? ' (tip: end the address with /p2p/PEER_ID)' : ''}: ${reason}`)
    }
  }

  /**
   * Pings the peer over the connection it has open, and drops the connection when the
   * pong is not back within `timeoutMs` (a connection stalled by a cut: after the heal
   * its TCP may sit in retransmission backoff for minutes, and every stream on it with
   * it). Returns false when it dropped one. Asked only when a membership probe or a
   * lease request went unanswered: libp2p's connection monitor, which pinged every
   * connection every 10 s from both ends, cost an idle node of a 16-node cluster most
   * of its traffic.
   */
  async checkConnection (peerId: string, timeoutMs: number): Promise<boolean> {
    if (!this.connected(peerId)) return true
    const running = this.checking.get(peerId)
    if (running != null) return await running
    const p = (async () => {
      try {
        await this.libp2p.services.ping.ping(peerIdFromString(peerId), { signal: AbortSignal.timeout(timeoutMs) })
        return true
      } catch (err) {
        if (!this.connected(peerId)) return true
        this.log.info({ peer: peerId, err: (err as Error).message, timeoutMs }, 'connection stalled: replaced')
        await this.disconnect(peerId, 'connection stalled: no ping answer')
        return false
      }
    })().finally(() => this.checking.delete(peerId))
    this.checking.set(peerId, p)
    return await p
  }

  /** Drops every connection to a peer (declared dead: a stalled TCP may linger; or refused). */
  async disconnect (peerId: string, why = 'peer declared dead'): Promise<void> {
    for (const c of this.libp2p.getConnections(peerIdFromString(peerId))) {
      try {
        c.abort(new Error(why))
      } catch {}
    }
  }
}

function stripPeer (m: Multiaddr): Multiaddr {
  const parts = m.getComponents().filter((c) => c.name !== 'p2p')
  return multiaddr('/' + parts.map((c) => c.value == null ? c.name : `${c.name}/${c.value}`).join('/'))
}
