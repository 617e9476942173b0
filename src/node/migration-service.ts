import net from 'node:net'
import path from 'node:path'
import type { Logger } from '../util/logger.ts'
import type { Runc } from '../runtime/runc.ts'
import type { Overlay } from '../overlay/overlay.ts'
import { MIGRATE_PROTOCOL } from '../migration/messages.ts'
import { MigrationSource, type MigrateRequest, type MigrationResult } from '../migration/source.ts'
import { MigrationTarget } from '../migration/target.ts'
import { IMAGE_PROTOCOL, receiveTree } from '../protocols/image/index.ts'
import { PAGES_PROTOCOL, handlePagesStream, openPagesTunnel } from '../protocols/pages/tunnel.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import type { ContainerManager } from './container-manager.ts'
import type { DataDir } from './data-dir.ts'
import { NodeMigrationHost } from './migration-host.ts'
import { clusterPort } from './cluster-port.ts'

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
  private readonly pageServers = new Map<string, { host: string, port: number }>()
  private readonly host: NodeMigrationHost

  constructor (init: { overlay: Overlay, manager: ContainerManager, runc: Runc, dataDir: DataDir, selfName: string, timeouts: MigrationTimeouts, pingTimeoutMs: number, logger: Logger }) {
    this.overlay = init.overlay
    this.dd = init.dataDir
    this.log = init.logger
    const host = this.host = new NodeMigrationHost({ manager: init.manager, runc: init.runc, dataDir: init.dataDir, logger: init.logger, announce: () => init.overlay.announce() })
    const cluster = clusterPort(init.overlay, init.selfName)
    this.source = new MigrationSource({
      host, cluster, pageServers: this.pageServers, logger: init.logger,
      dial: async (peer, protocol, signal) => await init.overlay.dialProtocol(peer, protocol, signal),
      freePort, stagingRoot: async (id) => await host.staging(`out-${id}`), removeStaging: async (d) => await host.removeStaging(d),
      stallTimeoutMs: init.timeouts.stallTimeoutMs, restoreTimeoutMs: init.timeouts.restoreTimeoutMs, ownerWaitMs: 5_000
    })
    this.target = new MigrationTarget({
      host, cluster, logger: init.logger, diskReserveBytes: 256 * 1024 * 1024,
      transferTimeoutMs: 30 * 60_000, decisionTimeoutMs: init.timeouts.decisionTimeoutMs,
      settleTimeoutMs: init.timeouts.settleTimeoutMs,
      openPages: async (peer, transferId, signal) => {
        const t = await openPagesTunnel(init.overlay.host, peerIdFromString(peer), transferId, { signal })
        return { port: t.port, close: () => { void t.close() } }
      }
    })
  }

  async start (): Promise<void> {
    // CRIU's feature probes take a few hundred ms: do them now, not inside a migration.
    void this.host.features().catch(() => {})
    await this.overlay.handle(MIGRATE_PROTOCOL, async (stream, peer) => await this.target.handle(stream, peer), 4)
    await this.overlay.handle(IMAGE_PROTOCOL, async (stream) => {
      await receiveTree(stream, {
        tmpRoot: this.dd.tmp,
        resolve: (header) => this.target.imageDestination(header),
        idleTimeoutMs: 30_000
      })
    }, 16)
    await this.overlay.handle(PAGES_PROTOCOL, async (stream) => {
      await handlePagesStream(stream, (id) => this.pageServers.get(id) ?? null)
    }, 16)
  }

  async migrate (req: MigrateRequest): Promise<MigrationResult> {
    return await this.source.migrate(req)
  }

  get tmpDir (): string { return path.join(this.dd.tmp) }
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
