import crypto from 'node:crypto'
import net from 'node:net'
import path from 'node:path'
import type { Logger } from '../util/logger.ts'
import type { Runc } from '../runtime/runc.ts'
import type { Overlay } from '../overlay/overlay.ts'
import { MIGRATE_PROTOCOL } from '../migration/messages.ts'
import { MigrationSource, type MigrateRequest, type MigrationResult } from '../migration/source.ts'
import { MigrationTarget, type PageLinkPort, type PageReceiverPort } from '../migration/target.ts'
import { settleLeftIncoming } from '../migration/settle.ts'
import { testCutPagesAfter } from '../migration/test-knobs.ts'
import type { ClusterPort } from '../migration/host.ts'
import { IMAGE_PROTOCOL, receiveTree, type TreeDestination, type TreeHeader } from '../protocols/image/index.ts'
import type { ByteStream } from '../protocols/framing.ts'
import { listenSealed } from '../protocols/sealed/channel.ts'
import { SECRET_BYTES } from '../protocols/sealed/sealed-stream.ts'
import { PAGES_PROTOCOL, handlePagesStream, openPagesTunnel, serveLocalTunnel } from '../protocols/pages/tunnel.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import type { ContainerManager } from './container-manager.ts'
import type { DataDir } from './data-dir.ts'
import { NodeMigrationHost } from './migration-host.ts'
import { listenPageLink, mergePageImages, openPageReceiver } from './page-receiver.ts'
import { clusterPort } from './cluster-port.ts'
import type { ClusterService } from '../cluster/cluster-service.ts'
import type { PrivateKey } from '@libp2p/interface'

export interface MigrationTimeouts {
  stallTimeoutMs: number
  restoreTimeoutMs: number
  decisionTimeoutMs: number
  settleTimeoutMs: number
}

/**
 * Wires migration to this node: the source and target state machines, the three
 * protocols they speak over the overlay, and the container host they act on.
 */
export class MigrationService {
  private readonly source: MigrationSource
  private readonly target: MigrationTarget
  private readonly overlay: Overlay
  private readonly dd: DataDir
  private readonly log: Logger
  private readonly pageServers = new Map<string, { host: string; port: number }>()
  private readonly host: NodeMigrationHost
  private readonly cluster: ClusterPort
  private readonly settleTimeoutMs: number
  private readonly stopping = new AbortController()
  private readonly inflight = new Set<Promise<void>>()
  /** Other receivers of /msc/image trees (replication's rootfs), asked after migration's own. */
  private readonly imageDestinations: Array<(h: TreeHeader) => TreeDestination | null> = []
  /** The settling of incoming migrations left pending by the previous run (start()). */
  leftovers: Promise<unknown> = Promise.resolve()

  constructor (
    init: { overlay: Overlay; cluster: ClusterService; privateKey: PrivateKey; manager: ContainerManager; runc: Runc; dataDir: DataDir; selfName: string; timeouts: MigrationTimeouts; pingTimeoutMs: number; allowPrivilegedBundles: boolean;
      dataChannel?: boolean; logger: Logger; mayRun?: (name: string) => boolean }
  ) {
    this.overlay = init.overlay
    this.dd = init.dataDir
    this.log = init.logger
    const host = this.host = new NodeMigrationHost({ manager: init.manager, runc: init.runc, dataDir: init.dataDir, logger: init.logger, announce: () => init.overlay.announce(), mayRun: init.mayRun })
    const cluster = this.cluster = clusterPort(init.overlay, init.cluster, init.privateKey, init.selfName)
    this.settleTimeoutMs = init.timeouts.settleTimeoutMs
    this.source = new MigrationSource({
      host,
      cluster,
      pageServers: this.pageServers,
      logger: init.logger,
      dial: async (peer, protocol, signal) => await init.overlay.dialProtocol(peer, protocol, signal),
      ...(init.dataChannel !== false ? { peerIp: (peer: string) => init.overlay.peerIp(peer) } : {}),
      freePort,
      stagingRoot: async (id) => await host.staging(`out-${id}`),
      removeStaging: async (d) => await host.removeStaging(d),
      stallTimeoutMs: init.timeouts.stallTimeoutMs,
      restoreTimeoutMs: init.timeouts.restoreTimeoutMs,
      ownerWaitMs: 5_000
    })
    this.target = new MigrationTarget({
      host,
      cluster,
      logger: init.logger,
      diskReserveBytes: 256 * 1024 * 1024,
      bundlePolicy: { allowPrivileged: init.allowPrivilegedBundles },
      transferTimeoutMs: 30 * 60_000,
      decisionTimeoutMs: init.timeouts.decisionTimeoutMs,
      settleTimeoutMs: init.timeouts.settleTimeoutMs,
      ...(init.dataChannel !== false
        ? {
          openDataChannel: async (migrationId: string) => await this.openDataChannel(migrationId),
          openPageReceiver: async (migrationId: string, secret: Uint8Array, dir: string) => await this.openPageReceiver(migrationId, secret, dir, init.runc.config.criuPath),
          openPageLink: async (migrationId: string, secret: Uint8Array) => await this.openPageLink(migrationId, secret)
        }
        : {}),
      openPages: async (peer, transferId, signal, onBroken) => {
        const t = await openPagesTunnel(init.overlay.host, peerIdFromString(peer), transferId, { signal, beforeReset: onBroken })
        return { port: t.port, close: () => {
          void t.close()
        } }
      }
    })
  }

  async start (): Promise<void> {
    // CRIU's feature probes take a few hundred ms: do them now, not inside a migration.
    void this.host.features().catch(() => {})
    await this.overlay.handle(MIGRATE_PROTOCOL, async (stream, peer) => {
      const p = this.target.handle(stream, peer)
      this.inflight.add(p)
      try {
        await p
      } finally {
        this.inflight.delete(p)
      }
    }, 4)
    await this.overlay.handle(IMAGE_PROTOCOL, async (stream) => {
      await this.receiveImage(stream)
    }, 16)
    await this.overlay.handle(PAGES_PROTOCOL, async (stream) => {
      await handlePagesStream(stream, (id) => this.pageServers.get(id) ?? null, { cutAfterBytes: testCutPagesAfter() })
    }, 16)
    // Incoming migrations the previous run restored but never saw decided: settled by
    // the same rule as a live one that lost its decision, in the background (the
    // membership view fills from the heartbeats that follow).
    this.leftovers = settleLeftIncoming({
      host: this.host,
      cluster: this.cluster,
      logger: this.log,
      settleTimeoutMs: this.settleTimeoutMs,
      signal: this.stopping.signal
    }).catch((err) => this.log.error({ err: (err as Error).message }, 'settling incoming migrations left by the previous run failed'))
  }

  /** A tree over /msc/image or a sealed data channel, into the destination its header names. */
  private async receiveImage (stream: ByteStream): Promise<void> {
    await receiveTree(stream, {
      tmpRoot: this.dd.tmp,
      resolve: (header) => {
        const own = this.target.imageDestination(header)
        if (own != null) return own
        for (const d of this.imageDestinations) {
          const x = d(header)
          if (x != null) return x
        }
        return null
      },
      idleTimeoutMs: 30_000
    })
  }

  /**
   * An incoming migration's sealed data channel: a fresh secret and a listener on this
   * node's libp2p listen address, whose connections carry trees like /msc/image.
   */
  private async openDataChannel (migrationId: string): Promise<{ port: number; secret: Uint8Array; close: () => void } | null> {
    const host = this.overlay.listenIp()
    if (host == null) return null
    const secret = crypto.randomBytes(SECRET_BYTES)
    const log = this.log.child({ migrationId })
    const l = await listenSealed({
      host,
      secret,
      onStream: (s) => {
        this.receiveImage(s).catch((err: Error) => {
          log.warn({ err: err.message }, 'a tree over the sealed data channel failed')
          s.abort(err)
        })
      },
      onRefused: (reason, remote) => log.warn({ remote, reason }, 'sealed data channel: connection refused')
    })
    return { port: l.port, secret, close: l.close }
  }

  /** A stop-copy's page server, behind one sealed connection on the data channel's address. */
  private async openPageReceiver (migrationId: string, secret: Uint8Array, dir: string, criuPath: string): Promise<PageReceiverPort> {
    const host = this.overlay.listenIp()
    if (host == null) throw new Error('no listen address for a page connection')
    const r = await openPageReceiver({ host, secret, criuPath, dir, logger: this.log.child({ migrationId }) })
    return { port: r.port, done: r.done, close: r.close, placeInto: async (imageDir) => await mergePageImages(dir, imageDir) }
  }

  /** A post-copy's page link: the source's page server over one sealed connection. */
  private async openPageLink (migrationId: string, secret: Uint8Array): Promise<PageLinkPort> {
    const host = this.overlay.listenIp()
    if (host == null) throw new Error('no listen address for a page connection')
    const link = await listenPageLink({ host, secret, logger: this.log.child({ migrationId }) })
    return {
      port: link.port,
      close: link.close,
      tunnel: async (signal, onBroken) => {
        // The source dialled it before it sent the trees; a restore without it fails.
        const stream = await Promise.race([link.stream, rejectAfter(10_000, 'the source never connected its page link')])
        const t = await serveLocalTunnel(async () => {
          throw new Error('the page link carries one connection')
        }, stream, `page link of migration ${migrationId}`, { signal, beforeReset: onBroken })
        return { port: t.port, close: () => void t.close() }
      }
    }
  }

  /**
   * Before the overlay stops: incoming migrations stop waiting; one restored here but
   * not yet reported is removed (the source resumes it), one reported but undecided
   * stays pending for the next start to settle. drained() waits for them.
   */
  stop (): void {
    this.stopping.abort()
    this.target.shutdown()
  }

  /** Resolves when the incoming migrations in flight have ended, or after `ms`. */
  async drained (ms: number): Promise<void> {
    if (this.inflight.size === 0) return
    let t: NodeJS.Timeout | undefined
    await Promise.race([Promise.allSettled([...this.inflight]), new Promise((resolve) => {
      t = setTimeout(resolve, ms)
    })])
    clearTimeout(t)
  }

  addImageDestinations (fn: (h: TreeHeader) => TreeDestination | null): void {
    this.imageDestinations.push(fn)
  }

  async migrate (req: MigrateRequest): Promise<MigrationResult> {
    return await this.source.migrate(req)
  }

  get tmpDir (): string {
    return path.join(this.dd.tmp)
  }
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => resolve(typeof a === 'object' && a != null ? a.port : 0))
    })
    s.on('error', reject)
  })
}

function rejectAfter (ms: number, why: string): Promise<never> {
  return new Promise((_resolve, reject) => setTimeout(() => reject(new Error(why)), ms).unref())
}
