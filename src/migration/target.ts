import fs from 'node:fs/promises'
import path from 'node:path'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { MscError, toMscError } from '../util/errors.ts'
import { FramedStream } from '../protocols/framing.ts'
import type { TreeDestination, TreeHeader } from '../protocols/image/index.ts'
import type { ClusterPort, ContainerHost } from './host.ts'
import { checkBundlePolicy, type BundlePolicy } from '../runtime/bundle-policy.ts'
import { chooseStrategy, DecisionSchema, MAX_CONTROL_FRAME, OfferSchema, PreRoundSchema, RestoreSchema, type Offer } from './messages.ts'
import { z } from 'zod'
import { MAX_EPOCH, verifyHandover } from '../cluster/handover.ts'
import { commitWithRetry, settle } from './settle.ts'
import { testPause } from './test-knobs.ts'

export interface TargetDeps {
  host: ContainerHost
  cluster: ClusterPort
  /** Opens the post-copy page tunnel to the source; resolves to the local port CRIU dials. */
  /** `onBroken` is awaited when the link fails, before CRIU hears of it. */
  openPages: (sourcePeer: string, transferId: string, signal: AbortSignal, onBroken: () => Promise<void>) => Promise<{ port: number; close: () => void }>
  /**
   * A sealed data channel for this migration's trees (what /msc/image would carry),
   * listening until closed; null where this node offers none.
   */
  openDataChannel?: (migrationId: string) => Promise<{ port: number; secret: Uint8Array; close: () => void } | null>
  /**
   * Stop-copy: a page server that takes the pages as the source's CRIU dumps them, over
   * one sealed connection keyed with `secret`, into `dir` of the staging. `placeInto`
   * moves what it wrote into the received images once `done`.
   */
  openPageReceiver?: (migrationId: string, secret: Uint8Array, dir: string) => Promise<PageReceiverPort>
  /**
   * Post-copy: a sealed page connection the source dials once its page server listens;
   * `tunnel` then gives the lazy-pages daemon a local port carried over it.
   */
  openPageLink?: (migrationId: string, secret: Uint8Array) => Promise<PageLinkPort>
  logger: Logger
  /** What a received config.json may ask of this host (hooks, mounts, capabilities, ...). */
  bundlePolicy: BundlePolicy
  /** Bytes of disk kept free whatever a migration asks for. */
  diskReserveBytes: number
  /** How long to wait for the source's restore request once accepted. */
  transferTimeoutMs: number
  decisionTimeoutMs: number
  /** How long to watch membership to settle an unacknowledged outcome. */
  settleTimeoutMs: number
}

export interface PageReceiverPort {
  port: number
  /** Every page written (the page server exited 0). */
  done: Promise<unknown>
  placeInto: (imageDir: string) => Promise<number>
  close: () => void
}

export interface PageLinkPort {
  port: number
  tunnel: (signal: AbortSignal, onBroken: () => Promise<void>) => Promise<{ port: number; close: () => void }>
  close: () => void
}

interface Expected {
  migrationId: string
  destDir: string
  mode: 'replace' | 'overlay'
  symlinks: 'contained' | 'rootfs' | 'none'
  maxTotalBytes: number
  done: PromiseWithResolvers<void>
  beforeVerdict?: () => Promise<void>
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
  /** Disk promised to the incoming migrations under way (their estimates). */
  private reservedBytes = 0
  private readonly stopping = new AbortController()

  constructor (deps: TargetDeps) {
    this.d = deps
  }

  /** Where an incoming /msc/image tree goes, or null for a transfer nobody announced. */
  imageDestination (header: TreeHeader): TreeDestination | null {
    const e = this.expected.get(header.transferId)
    if (e == null) return null
    return {
      destDir: e.destDir,
      mode: e.mode,
      symlinks: e.symlinks,
      limits: { maxTotalBytes: e.maxTotalBytes, maxFileBytes: e.maxTotalBytes, maxFiles: 500_000 },
      ...(e.beforeVerdict != null ? { beforeVerdict: e.beforeVerdict } : {}),
      onDone: (err?: Error) => {
        if (err == null) e.done.resolve()
        else e.done.reject(err)
      }
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
    if (offer.target !== this.d.cluster.selfId) return await refuse('MISDIRECTED', `the offer is for peer ${offer.target}, this is ${this.d.cluster.selfId}`)
    if (offer.epoch + 1 > MAX_EPOCH) return await refuse('EPOCH', `epoch ${offer.epoch} is at the limit`)
    if (this.busy.has(offer.container)) return await refuse('BUSY', `a migration of ${offer.container} is already in progress here`)
    if (this.busy.size >= MAX_INCOMING) return await refuse('BUSY', `${this.d.cluster.selfName} already takes ${this.busy.size} migrations (at most ${MAX_INCOMING} at once)`)
    if (!await this.d.host.nameFree(offer.container)) return await refuse('NAME_TAKEN', `a container named ${offer.container} already exists on ${this.d.cluster.selfName}`)
    const owner = this.d.cluster.ownerOf(offer.container)
    if (owner?.owner != null && owner.owner !== remotePeer && owner.owner !== this.d.cluster.selfId) {
      return await refuse('NAME_TAKEN', `the cluster says ${offer.container} belongs to ${this.d.cluster.peerName(owner.owner)}`)
    }
    // runc runs this config as root here: a member must not get the host through it.
    const policy = checkBundlePolicy(offer.config, this.d.bundlePolicy)
    if (!policy.ok) {
      // Bounded: the reasons quote the offer, and must fit one control frame back.
      const why = policy.violations.slice(0, 16).join('; ').slice(0, 8192) + (policy.violations.length > 16 ? `; and ${policy.violations.length - 16} more` : '')
      return await refuse('POLICY', `${this.d.cluster.selfName} refuses this bundle (it runs with --allow-privileged-bundles only): ${why}`)
    }
    const features = await this.d.host.features()
    const choice = chooseStrategy(offer.strategy, offer.features, features, this.d.cluster.selfName)
    if ('refuse' in choice) return await refuse('STRATEGY', choice.refuse)
    // One budget for every incoming migration: what others were promised is not free.
    const free = await this.d.host.freeBytes() - this.reservedBytes
    if (free - this.d.diskReserveBytes < offer.estimatedBytes) {
      return await refuse('NO_SPACE', `${this.d.cluster.selfName} has ${Math.floor(free / 1e6)} MB free, needs about ${Math.ceil((offer.estimatedBytes + this.d.diskReserveBytes) / 1e6)} MB`)
    }

    if (offer.network != null) {
      // Built now, quiet, so that the restore finds it; live only once restored.
      try {
        await this.d.host.prepareNetwork(offer.container, offer.network)
      } catch (err) {
        return await refuse('NETWORK', `${this.d.cluster.selfName} cannot give ${offer.container} its address ${offer.network.address}/${offer.network.prefix}: ${(err as Error).message}`)
      }
    }
    let keepNetwork = false

    this.busy.add(offer.container)
    this.reservedBytes += offer.estimatedBytes
    const staging = await this.d.host.staging(offer.migrationId)
    const bundleDir = path.join(staging, 'bundle')
    const ids: string[] = []
    let adopted = false
    let pages: { port: number; close: () => void } | undefined
    let channel: { port: number; secret: Uint8Array; close: () => void } | null = null
    let pageReceiver: PageReceiverPort | null = null
    let pageLink: PageLinkPort | null = null
    // Lives as long as this migration: the page tunnel must outlast the restore.
    const lifetime = new AbortController()
    try {
      const cached = await this.d.host.cachedBundle(offer.bundle.digest)
      await fs.mkdir(bundleDir, { recursive: true })
      if (cached != null) await fs.cp(path.join(cached, 'rootfs'), path.join(bundleDir, 'rootfs'), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true })
      const budget = free - this.d.diskReserveBytes
      const expect = (id: string, destDir: string, mode: 'replace' | 'overlay', symlinks: Expected['symlinks']): Expected => {
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
      // The received bundle is cached (a copy, and a digest over every file) before the
      // bundle tree's verdict, so the source waits for it while its container still
      // runs: done after the other trees it took 100-300 ms of the downtime, and done
      // meanwhile it slowed the dump and the transfer down as much (2 cores).
      if (bundleT != null) {
        bundleT.beforeVerdict = async () => {
          await this.d.host.cacheBundle(offer.bundle.digest, bundleDir, offer.config).catch((err: Error) => log.warn({ err: err.message }, 'the received bundle could not be cached'))
        }
      }
      expect(t.delta, path.join(bundleDir, 'rootfs'), 'overlay', 'rootfs')
      // CRIU images and logs are plain files (the `parent` links are made here, below);
      // a symlink in them could only point the restore or the log shim at a host file.
      const imagesT = expect(t.images, path.join(staging, 'images'), 'replace', 'none')
      const logT = expect(t.log, path.join(staging, 'log'), 'replace', 'none')
      const config = { ...offer.config, root: { ...(offer.config.root as object ?? {}), path: 'rootfs' } }
      await fs.writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(config, null, 2), { mode: 0o600 })
      // The trees may come over a sealed data channel (native TCP + AES-GCM) instead of
      // /msc/image, when the source can use one; either way into the same destinations.
      if (offer.features.sealedData === true) {
        channel = await this.d.openDataChannel?.(offer.migrationId).catch((err: Error) => {
          log.warn({ err: err.message }, 'no sealed data channel: the trees come over libp2p')
          return null
        }) ?? null
      }
      // Stop-copy: the pages can come while the source dumps, to a page server here.
      if (channel != null && choice.strategy === 'stop-copy' && offer.features.streamedPages === true && this.d.openPageReceiver != null) {
        pageReceiver = await this.d.openPageReceiver(offer.migrationId, channel.secret, path.join(staging, 'pages')).catch((err: Error) => {
          log.warn({ err: err.message }, 'no page receiver: the pages come in the images tree')
          return null
        })
      }
      // Post-copy: the page server's connection can come over a sealed one, not libp2p.
      if (channel != null && choice.strategy === 'post-copy' && offer.features.streamedPages === true && this.d.openPageLink != null) {
        pageLink = await this.d.openPageLink(offer.migrationId, channel.secret).catch((err: Error) => {
          log.warn({ err: err.message }, 'no page link: the pages come over /msc/pages')
          return null
        })
      }
      const pagesPort = pageReceiver?.port ?? pageLink?.port
      const data = channel != null
        ? { port: channel.port, secret: Buffer.from(channel.secret).toString('base64'), ...(pagesPort != null ? { pagesPort } : {}) }
        : undefined
      await control.writeJson({ type: 'accept', strategy: choice.strategy, needBundle: cached == null, features, ...(data != null ? { data } : {}) })
      log.info({ strategy: choice.strategy, cachedBundle: cached != null }, 'migration accepted')

      // Pre-copy rounds (if any) come first, each announced before its tree is sent.
      const pre: Array<Promise<void>> = []
      let req: z.infer<typeof RestoreSchema>
      while (true) {
        const msg = await control.readJson(z.union([PreRoundSchema, RestoreSchema]), AbortSignal.timeout(this.d.transferTimeoutMs))
        if (msg.type === 'restore') {
          // The name must be provably ours if the decision never comes (settle()).
          const h = msg.handover
          if (h.from !== remotePeer || h.to !== this.d.cluster.selfId || h.container !== offer.container || h.epoch !== offer.epoch + 1 || !verifyHandover(h)) {
            throw new MscError('INVALID_ARGUMENT', 'the restore request carries no valid handover of the container to this node')
          }
          req = msg
          break
        }
        if (msg.round !== pre.length + 1) throw new MscError('INVALID_ARGUMENT', `pre-copy round ${msg.round} out of order`)
        const e = expect(msg.transferId, path.join(staging, `pre-${msg.round}`), 'replace', 'none')
        pre.push(e.done.promise)
        await control.writeJson({ type: 'pre-ready', round: msg.round })
      }
      const requestAt = Date.now()
      if ((req.preRounds ?? 0) !== pre.length) throw new MscError('INVALID_ARGUMENT', `restore names ${req.preRounds ?? 0} pre-copy rounds, ${pre.length} were announced`)
      const pending = [imagesT.done.promise, logT.done.promise, ...pre]
      if (bundleT != null) pending.push(bundleT.done.promise)
      if (req.streamedPages === true && !req.lazy) {
        if (pageReceiver == null) throw new MscError('INVALID_ARGUMENT', 'the restore request says the pages were streamed, but no page server was offered for them')
        pending.push(pageReceiver.done.then(() => {}))
      } else {
        pageReceiver?.close()
      }
      if (req.streamedPages === true && req.lazy && pageLink == null) throw new MscError('INVALID_ARGUMENT', 'the restore request says the pages come over a page link, but none was offered')
      if (req.streamedPages !== true) pageLink?.close()
      await Promise.race([Promise.all(pending), rejectAfter(30_000, 'the announced transfers did not complete')])
      channel?.close()
      if (req.streamedPages === true && !req.lazy) {
        const bytes = await pageReceiver!.placeInto(path.join(staging, 'images'))
        log.debug({ bytes }, 'streamed pages placed into the images')
      }
      // CRIU finds earlier rounds through `parent` links, which the trees leave out.
      for (let r = 2; r <= pre.length; r++) await fs.symlink(`../pre-${r - 1}`, path.join(staging, `pre-${r}`, 'parent'))
      if (pre.length > 0) await fs.symlink(`../pre-${pre.length}`, path.join(staging, 'images', 'parent'))
      let restored: { type: 'restored'; pid: number; restoreMs: number }
      try {
        const onBroken = async (): Promise<void> => await this.d.host.freeze(offer.container)
        if (req.lazy && req.streamedPages === true) pages = await pageLink!.tunnel(lifetime.signal, onBroken)
        else if (req.lazy) pages = await this.d.openPages(remotePeer, t.pages, lifetime.signal, onBroken)
        const started = Date.now()
        const r = await this.d.host.adopt({
          name: offer.container,
          bundleDir,
          imageDir: path.join(staging, 'images'),
          workDir: path.join(staging, 'work'),
          logDir: path.join(staging, 'log'),
          lazyPagesPort: pages?.port,
          handover: req.handover,
          sourceResumes: offer.resumes ?? 0,
          replicas: offer.replicas,
          ...(offer.network != null ? { network: offer.network } : {}),
          signal: AbortSignal.timeout(300_000)
        })
        adopted = true
        restored = { type: 'restored', pid: r.pid, restoreMs: Date.now() - started }
        log.debug({ restoreMs: restored.restoreMs, sinceRequestMs: Date.now() - requestAt }, 'restored')
      } catch (err) {
        const e = toMscError(err)
        await control.writeJson({ type: 'failed', reason: e.message, details: e.details.slice(0, 32) }).catch(() => {})
        throw e
      }
      await testPause('target-adopted', log, this.stopping.signal)
      // A node stopping before "restored" went out: the source cannot have passed its
      // point of no return, so it resumes its own copy; this one goes (outer catch).
      if (this.stopping.signal.aborted) throw new MscError('RUNTIME_ERROR', `${this.d.cluster.selfName} is stopping before it reported the container restored`)

      // From here the container runs here and only the decision (or, without it, the
      // settle rule) removes it: a "restored" that failed to go out may still have
      // reached the source, which then released it.
      let decision: 'commit' | 'abort' | 'unknown' = 'unknown'
      let pagesFailed: string | null = null
      try {
        await control.writeJson(restored)
        await testPause('target-restored', log, this.stopping.signal)
        // Post-copy: the source decides once every page was fetched, which takes as long
        // as the memory takes to move (minutes for gigabytes), so the decision is waited
        // for from the end of the page transfer, not from the restore. Until then the
        // source's copy is frozen but whole: if the transfer fails, CRIU lets it run on
        // there, and ours, missing pages, must go.
        if (req.lazy) pagesFailed = await Promise.race([this.d.host.lazyPagesEnded(offer.container), untilAborted(this.stopping.signal)])
        if (pagesFailed != null) {
          decision = 'abort'
        } else {
          const dec = await control.readJson(DecisionSchema, AbortSignal.any([AbortSignal.timeout(this.d.decisionTimeoutMs), this.stopping.signal]))
          decision = dec.type
        }
      } catch (err) {
        if (!this.stopping.signal.aborted) {
          log.warn({ err: (err as Error).message }, 'no decision from the source; settling it from membership')
          decision = await settle({
            cluster: this.d.cluster,
            source: remotePeer,
            container: offer.container,
            epoch: offer.epoch,
            resumes: offer.resumes ?? 0,
            timeoutMs: this.d.settleTimeoutMs,
            logger: log,
            signal: this.stopping.signal
          })
        }
      }
      if (decision === 'unknown') {
        // This node stops: the container stays, pending; the restart settles it (settle.ts).
        adopted = false
        keepNetwork = true
        log.warn('node stopping before the migration was decided: the restored copy stays pending; the next start settles it')
      } else if (decision === 'commit') {
        // Never discarded from here: the source has released it (or will).
        adopted = false
        keepNetwork = true
        const ok = await commitWithRetry({
          commit: async () => {
            await this.d.host.commit(offer.container, offer.epoch + 1, req.handover)
          },
          still: async () => (await this.d.host.pendingIncoming()).some((x) => x.name === offer.container),
          logger: log,
          signal: this.stopping.signal
        })
        if (ok) {
          await control.writeJson({ type: 'committed', epoch: offer.epoch + 1 }).catch(() => {})
          log.info({ epoch: offer.epoch + 1 }, 'migration committed: container owned here')
        }
      } else {
        await this.d.host.discard(offer.container)
        adopted = false
        // The source keeps its copy frozen until it hears this (or gives up waiting).
        if (pagesFailed != null) await control.writeJson({ type: 'discarded' }).catch(() => {})
        if (pagesFailed != null) log.error({ err: pagesFailed }, 'the lazy page transfer failed: restored copy removed (the source keeps its own)')
        else log.warn('migration aborted by the source: restored copy removed')
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'incoming migration failed')
      if (adopted) await this.d.host.discard(offer.container).catch(() => {})
      control.abort(err as Error)
    } finally {
      lifetime.abort()
      pages?.close()
      pageReceiver?.close()
      pageLink?.close()
      channel?.close()
      for (const id of ids) this.expected.delete(id)
      this.busy.delete(offer.container)
      this.reservedBytes -= offer.estimatedBytes
      if (offer.network != null && !keepNetwork) await this.d.host.removeNetwork(offer.container).catch((err: Error) => log.warn({ err: err.message }, 'could not remove the prepared network'))
      await this.d.host.removeStaging(staging).catch(() => {})
      await control.closeWrite().catch(() => {})
    }
  }

  /**
   * The node stops: migrations in flight stop waiting, and a restored container whose
   * migration is not decided yet is left running, pending, for the next start to
   * settle (settle.ts), instead of being discarded or committed on the way down.
   */
  shutdown (): void {
    this.stopping.abort()
  }
}

/** Incoming migrations one node takes at once; more are refused (BUSY), not queued. */
export const MAX_INCOMING = 4

/** Resolves (with null) when `signal` aborts. */
function untilAborted (signal: AbortSignal): Promise<null> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(null)
    else signal.addEventListener('abort', () => resolve(null), { once: true })
  })
}

function rejectAfter (ms: number, why: string): Promise<never> {
  return new Promise((_resolve, reject) => setTimeout(() => reject(new MscError('RUNTIME_ERROR', why)), ms).unref())
}
