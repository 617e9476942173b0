import type { PeerDiscovery, Startable } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'

/**
 * When this node asks the LAN for msc nodes by mDNS: every interval while it is
 * connected to nobody, never once it is connected to someone.
 *
 * Every node answers every query, by multicast, so each query costs every node on the
 * link one packet per node: with each of N nodes querying every interval, each node
 * received about N² packets per interval (8 nodes: 7 KB/s each, 32 nodes: about 100).
 * A connected node learns of the others, and of joiners, from membership (a joiner's
 * own query is answered by everyone, and every node hears the answers); members it
 * lost are redialled at the addresses membership keeps. So only a node that is alone
 * (starting, or cut off from all) queries, and a quiet cluster sends no mDNS at all.
 */
export class LanQueries implements Startable {
  private timer?: NodeJS.Timeout
  private restarting = false
  private readonly mdns: PeerDiscovery & Startable
  private readonly o: { intervalMs: number; connections: () => number; logger: Logger }

  constructor (mdns: PeerDiscovery & Startable, o: { intervalMs: number; connections: () => number; logger: Logger }) {
    this.mdns = mdns
    this.o = o
  }

  start (): void {
    this.timer = setInterval(() => {
      if (this.o.connections() === 0) void this.query()
    }, this.o.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  /** @libp2p/mdns queries when it starts (and answers while it runs): a restart is one query. */
  private async query (): Promise<void> {
    if (this.restarting) return
    this.restarting = true
    try {
      await this.mdns.stop()
      await this.mdns.start()
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message }, 'mDNS query not sent')
    } finally {
      this.restarting = false
    }
  }
}
