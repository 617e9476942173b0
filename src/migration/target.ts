import fs from 'node:fs/promises'
import path from 'node:path'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { MscError, toMscError } from '../util/errors.ts'
import { FramedStream } from '../protocols/framing.ts'
import type { TreeDestination, TreeHeader } from '../protocols/image/index.ts'
import type { ClusterPort, ContainerHost } from './host.ts'
import { chooseStrategy, DecisionSchema, MAX_CONTROL_FRAME, OfferSchema, PreRoundSchema, RestoreSchema, type Offer } from './messages.ts'
import { z } from 'zod'

export interface TargetDeps {
  host: ContainerHost
  cluster: ClusterPort
  /** Opens the post-copy page tunnel to the source; resolves to the local port CRIU dials. */
  openPages: (sourcePeer: string, transferId: string, signal: AbortSignal) => Promise<{ port: number, close: () => void }>
  logger: Logger
  /** Bytes of disk kept free whatever a migration asks for. */
  diskReserveBytes: number
  /** How long to wait for the source's restore request once accepted. */
  transferTimeoutMs: number
  decisionTimeoutMs: number
  /** How long to watch membership to settle an unacknowledged outcome. */
  settleTimeoutMs: number
}

interface Expected {
  migrationId: string
  destDir: string
  mode: 'replace' | 'overlay'
  symlinks: 'contained' | 'rootfs'
  maxTotalBytes: number
  done: PromiseWithResolvers<void>
}

/**
 * The target side: checks an offer, receives the trees into a staging directory of
 * its own, restores, and only owns the container once the source commits. When the
 * decision never arrives, the cluster settles it: if the source still claims the
 * container, it resumed it and this copy goes; if it released it (or died), this
 * copy stays. Either way exactly one copy runs.
 */
export class MigrationTarget {
  private readonly d: TargetDeps
  private readonly expected = new Map<string, Expected>()
  private readonly busy = new Set<string>()

  constructor (deps: TargetDeps) {
    this.d = deps
  }

  /** Where an incoming /msc/image tree goes, or null for a transfer nobody announced. */
  imageDestination (header: TreeHeader): TreeDestination | null {
    const e = this.expected.get(header.transferId)
    if (e == null) return null
    return {
      destDir: e.destDir, mode: e.mode, symlinks: e.symlinks,
      limits: { maxTotalBytes: e.maxTotalBytes, maxFileBytes: e.maxTotalBytes, maxFiles: 500_000 },
      onDone: (err?: Error) => { if (err == null) e.done.resolve(); else e.done.reject(err) }
    }
  }

  async handle (stream: Stream, remotePeer: string): Promise<void> {
    const control = new FramedStream(stream, { maxFrameBytes: MAX_CONTROL_FRAME, idleTimeoutMs: 0 })
    let offer: Offer
    try {
      offer = await control.readJson(OfferSchema, AbortSignal.timeout(15_000))
    } catch (err) {
      this.d.logger.warn({ from: remotePeer, err: (err as Error).message }, 'bad migration offer')
      control.abort(new Error('bad offer'))
      return
    }
    const log = this.d.logger.child({ migration: offer.migrationId, container: offer.container, from: offer.source.name })
    const refuse = async (code: string, reason: string): Promise<void> => {
      log.warn({ code, reason }, 'migration refused')
      await control.writeJson({ type: 'refuse', code, reason }).catch(() => {})
      await control.closeWrite().catch(() => {})
    }
    if (offer.source.peerId !== remotePeer) return await refuse('FORGED', 'the offer speaks for another peer')
    if (this.busy.has(offer.container)) return await refuse('BUSY', `a migration of ${offer.container} is already in progress here`)
    if (!await this.d.host.nameFree(offer.container)) return await refuse('NAME_TAKEN', `a container named ${offer.container} already exists on ${this.d.cluster.selfName}`)
    const owner = this.d.cluster.ownerOf(offer.container)
    if (owner?.owner != null && owner.owner !== remotePeer && owner.owner !== this.d.cluster.selfId) {
      return await refuse('NAME_TAKEN', `the cluster says ${offer.container} belongs to ${this.d.cluster.peerName(owner.owner)}`)
    }
    const features = await this.d.host.features()
    const choice = chooseStrategy(offer.strategy, offer.features, features, this.d.cluster.selfName)
    if ('refuse' in choice) return await refuse('STRATEGY', choice.refuse)
    const free = await this.d.host.freeBytes()
    if (free - this.d.diskReserveBytes < offer.estimatedBytes) {
      return await refuse('NO_SPACE', `${this.d.cluster.selfName} has ${Math.floor(free / 1e6)} MB free, needs about ${Math.ceil((offer.estimatedBytes + this.d.diskReserveBytes) / 1e6)} MB`)
    }

    this.busy.add(offer.container)
    const staging = await this.d.host.staging(offer.migrationId)
    const bundleDir = path.join(staging, 'bundle')
    const ids: string[] = []
    let adopted = false
    let pages: { port: number, close: () => void } | undefined
    // Lives as long as this migration: the page tunnel must outlast the restore.
    const lifetime = new AbortController()
    try {
      const cached = await this.d.host.cachedBundle(offer.bundle.digest)
      await fs.mkdir(bundleDir, { recursive: true })
      if (cached != null) await fs.cp(path.join(cached, 'rootfs'), path.join(bundleDir, 'rootfs'), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true })
      const budget = free - this.d.diskReserveBytes
      const expect = (id: string, destDir: string, mode: 'replace' | 'overlay', symlinks: 'contained' | 'rootfs' = 'contained'): Expected => {
        const e: Expected = { migrationId: offer.migrationId, destDir, mode, symlinks, maxTotalBytes: budget, done: Promise.withResolvers<void>() }
        e.done.promise.catch(() => {})
        this.expected.set(id, e)
        ids.push(id)
        return e
      }
      const t = offer.transfers
      // A rootfs keeps its links as they are (absolute ones too): they are resolved
      // inside the container, and the receiver never writes through a link.
      const bundleT = cached == null ? expect(t.bundle, path.join(bundleDir, 'rootfs'), 'replace', 'rootfs') : null
      expect(t.delta, path.join(bundleDir, 'rootfs'), 'overlay', 'rootfs')
      const imagesT = expect(t.images, path.join(staging, 'images'), 'replace')
      const logT = expect(t.log, path.join(staging, 'log'), 'replace')
      const config = { ...offer.config, root: { ...(offer.config.root as object ?? {}), path: 'rootfs' } }
      await fs.writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(config, null, 2), { mode: 0o600 })
      await control.writeJson({ type: 'accept', strategy: choice.strategy, needBundle: cached == null, features })
      log.info({ strategy: choice.strategy, cachedBundle: cached != null }, 'migration accepted')

      // Pre-copy rounds (if any) come first, each announced before its tree is sent.
      const pre: Array<Promise<void>> = []
      let req: z.infer<typeof RestoreSchema>
      while (true) {
        const msg = await control.readJson(z.union([PreRoundSchema, RestoreSchema]), AbortSignal.timeout(this.d.transferTimeoutMs))
        if (msg.type === 'restore') { req = msg; break }
        if (msg.round !== pre.length + 1) throw new MscError('INVALID_ARGUMENT', `pre-copy round ${msg.round} out of order`)
        const e = expect(msg.transferId, path.join(staging, `pre-${msg.round}`), 'replace')
        pre.push(e.done.promise)
        await control.writeJson({ type: 'pre-ready', round: msg.round })
      }
      if ((req.preRounds ?? 0) !== pre.length) throw new MscError('INVALID_ARGUMENT', `restore names ${req.preRounds ?? 0} pre-copy rounds, ${pre.length} were announced`)
      const pending = [imagesT.done.promise, logT.done.promise, ...pre]
      if (bundleT != null) pending.push(bundleT.done.promise)
      await Promise.race([Promise.all(pending), rejectAfter(30_000, 'the announced transfers did not complete')])
      if (bundleT != null) await this.d.host.cacheBundle(offer.bundle.digest, bundleDir).catch(() => {})
      // CRIU finds earlier rounds through `parent` links, which the trees leave out.
      for (let r = 2; r <= pre.length; r++) await fs.symlink(`../pre-${r - 1}`, path.join(staging, `pre-${r}`, 'parent'))
      if (pre.length > 0) await fs.symlink(`../pre-${pre.length}`, path.join(staging, 'images', 'parent'))
      try {
        if (req.lazy) pages = await this.d.openPages(remotePeer, t.pages, lifetime.signal)
        const started = Date.now()
        const r = await this.d.host.adopt({
          name: offer.container, bundleDir, imageDir: path.join(staging, 'images'), workDir: path.join(staging, 'work'),
          logDir: path.join(staging, 'log'), lazyPagesPort: pages?.port, signal: AbortSignal.timeout(300_000)
        })
        adopted = true
        await control.writeJson({ type: 'restored', pid: r.pid, restoreMs: Date.now() - started })
      } catch (err) {
        const e = toMscError(err)
        await control.writeJson({ type: 'failed', reason: e.message, details: e.details.slice(0, 32) }).catch(() => {})
        throw e
      }

      let decision: 'commit' | 'abort' | 'unknown' = 'unknown'
      try {
        const dec = await control.readJson(DecisionSchema, AbortSignal.timeout(this.d.decisionTimeoutMs))
        decision = dec.type
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'no decision from the source; settling it from membership')
        decision = await this.settle(offer, remotePeer)
      }
      if (decision === 'commit') {
        await this.d.host.commit(offer.container, offer.epoch + 1)
        await control.writeJson({ type: 'committed', epoch: offer.epoch + 1 }).catch(() => {})
        log.info({ epoch: offer.epoch + 1 }, 'migration committed: container owned here')
      } else {
        await this.d.host.discard(offer.container)
        adopted = false
        log.warn('migration aborted by the source: restored copy removed')
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'incoming migration failed')
      if (adopted) await this.d.host.discard(offer.container).catch(() => {})
      control.abort(err as Error)
    } finally {
      lifetime.abort()
      pages?.close()
      for (const id of ids) this.expected.delete(id)
      this.busy.delete(offer.container)
      await this.d.host.removeStaging(staging).catch(() => {})
      await control.closeWrite().catch(() => {})
    }
  }

  /**
   * The source's decision never arrived. The source decides when it reads 'restored':
   * after that it releases the container; before that (or without it) it resumes it.
   * So the answer is in what the source says of the container once we hear it again:
   * still running it at its epoch -> it resumed, this copy goes; not claiming it ->
   * it released it, this copy stays. While the source cannot be heard (a partition, a
   * crash) this copy keeps running unowned; after `settleTimeoutMs` of silence it is
   * kept (a source dead that long cannot be running it), and epoch fencing resolves a
   * source that comes back from a long partition still running its own.
   */
  private async settle (offer: Offer, source: string): Promise<'commit' | 'abort'> {
    const deadline = Date.now() + this.d.settleTimeoutMs
    const log = this.d.logger.child({ migration: offer.migrationId, container: offer.container })
    while (Date.now() < deadline) {
      const state = this.d.cluster.peerState(source)
      if (state === 'alive') {
        const claim = this.d.cluster.claimOf(source, offer.container)
        if (claim == null) return 'commit'
        if (claim.epoch >= offer.epoch && (claim.state === 'running' || claim.state === 'paused')) return 'abort'
        if (claim.state !== 'running' && claim.state !== 'paused') return 'commit'
      } else if (state === 'left') {
        return 'commit'
      }
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    log.warn('the source stayed silent for the whole settle window: keeping the restored copy')
    return 'commit'
  }
}

function rejectAfter (ms: number, why: string): Promise<never> {
  return new Promise((_resolve, reject) => setTimeout(() => reject(new MscError('RUNTIME_ERROR', why)), ms).unref())
}
