import crypto from 'node:crypto'
import net from 'node:net'
import path from 'node:path'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { MscError, errText, toMscError } from '../util/errors.ts'
import { FramedStream, type ByteStream } from '../protocols/framing.ts'
import { dialSealed } from '../protocols/sealed/channel.ts'
import { openPageRelay, type PageRelay } from '../protocols/sealed/page-relay.ts'
import type { SealedStream } from '../protocols/sealed/sealed-stream.ts'
import { spliceSocket, type SpliceStats } from '../protocols/socket-splice.ts'
import { IMAGE_PROTOCOL, sendTree, treeManifest, changedSince } from '../protocols/image/index.ts'
import type { ClusterPort, ContainerHost, LazyDump } from './host.ts'
import { AnswerSchema, CommittedSchema, DiscardedSchema, MAX_CONTROL_FRAME, MIGRATE_PROTOCOL, MIGRATE_VERSION, PreReadySchema, RestoreResultSchema, type Offer, type Phase, type Strategy } from './messages.ts'
import { PhaseClock, type Progress } from './phase-clock.ts'
import { bundleDigest } from './bundle-digest.ts'
import { Watchdog } from './watchdog.ts'
import { writeOutgoingJournal, type OutgoingPhase } from './journal.ts'
import { testCutPagesAfter, testCutStreamedPagesAfter, testPause } from './test-knobs.ts'

export interface MigrateRequest {
  container: string
  to?: string
  strategy: Strategy | 'auto'
  /** false: never offer the sealed data channel (the trees go over /msc/image). */
  dataChannel?: boolean
  /** false: the pages go the old way (stop-copy: dumped here and sent after the dump; post-copy: over /msc/pages). */
  streamPages?: boolean
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

/** What `msc peer migrate --json` prints (docs/cli.md). */
export interface MigrationResult {
  ok: boolean
  container: string
  from: string
  fromName: string
  to: string
  toName: string
  strategy: Strategy | 'auto'
  /** From the freeze on the source to the container running on the target. */
  downtimeMs: number | null
  totalMs: number
  bytes: number
  goodputMBps: number | null
  /** The trees went over the target's sealed data channel. */
  dataChannel: boolean
  /** The pages crossed over a sealed page connection (stop-copy: to the target's page server while CRIU dumped; post-copy: the page link). */
  streamedPages: boolean
  phases: Partial<Record<Phase, number>>
  /** On failure: what happened, and where the container runs now. */
  error?: { code: string; message: string; details: string[] }
  runningOn?: string
}

export interface SourceDeps {
  host: ContainerHost
  cluster: ClusterPort
  dial: (peerId: string, protocol: string, signal: AbortSignal) => Promise<Stream>
  /** The IP address the open connection to a peer reaches it at: where its sealed data channel is dialled. */
  peerIp?: (peerId: string) => string | undefined
  /** Page servers of running post-copy migrations, by transfer id (/msc/pages looks here). */
  pageServers: Map<string, { host: string; port: number }>
  freePort: () => Promise<number>
  stagingRoot: (migrationId: string) => Promise<string>
  removeStaging: (dir: string) => Promise<void>
  logger: Logger
  /** How long a transfer may make no progress before it is given up. */
  stallTimeoutMs: number
  restoreTimeoutMs: number
  ownerWaitMs: number
}

/**
 * The source side of a migration: an explicit sequence of named phases (prepare,
 * bundle, freeze-dump, transfer, restore, lazy-pages, commit), each timed. Until the
 * target reports the container restored, any failure rolls back: the source resumes
 * its container from its own dump, so exactly one copy runs. Once the target reports
 * it restored, the source never resumes it again: it commits and releases.
 */
export class MigrationSource {
  private readonly d: SourceDeps

  constructor (deps: SourceDeps) {
    this.d = deps
  }

  async migrate (req: MigrateRequest): Promise<MigrationResult> {
    const d = this.d
    const migrationId = crypto.randomBytes(9).toString('base64url')
    const log = d.logger.child({ migration: migrationId, container: req.container })
    const clock = new PhaseClock(log, req.onProgress)
    const result: MigrationResult = {
      ok: false,
      container: req.container,
      from: d.cluster.selfId,
      fromName: d.cluster.selfName,
      to: '',
      toName: '',
      strategy: req.strategy,
      downtimeMs: null,
      totalMs: 0,
      bytes: 0,
      goodputMBps: null,
      dataChannel: false,
      streamedPages: false,
      phases: clock.phases
    }
    const outer = req.signal ?? new AbortController().signal
    return await d.host.exclusive(req.container, async () => {
      let control: FramedStream | undefined
      let staging: string | undefined
      let dumped = false
      let lazy: LazyDump | undefined
      let pageLinkStats: SpliceStats | null = null
      /** Pages sent outside the transfer phase (streamed while dumping, or lazily): not in its goodput. */
      let pageBytes = 0
      let restored = false
      let pagesFailed = false
      let freezeAt = 0
      let transferMs = 0
      const transfers = { bundle: tid(), delta: tid(), images: tid(), log: tid(), pages: tid() }
      try {
        // ---- prepare: what moves, to whom, can it take it ----
        clock.enter('prepare')
        const c = await d.host.describe(req.container)
        const to = req.to != null ? d.cluster.resolvePeer(req.to) : undefined
        const features = await d.host.features()
        const { readFile } = await import('node:fs/promises')
        const config = JSON.parse(await readFile(path.join(c.bundleDir, 'config.json'), 'utf8')) as Record<string, unknown>
        const digest = await bundleDigest(config, c.rootfs)
        const target = to ?? d.cluster.pickPeer(digest.bytes * 2)
        result.to = target
        result.toName = d.cluster.peerName(target)
        const offer: Offer = {
          type: 'offer',
          v: MIGRATE_VERSION,
          migrationId,
          container: c.name,
          strategy: req.strategy,
          config,
          epoch: c.epoch,
          ...(c.resumes > 0 ? { resumes: c.resumes } : {}),
          replicas: c.replicas,
          bundle: digest,
          estimatedBytes: digest.bytes * 2 + 64 * 1024 * 1024,
          features: { ...features, sealedData: d.peerIp != null && req.dataChannel !== false, streamedPages: d.peerIp != null && req.dataChannel !== false && req.streamPages !== false },
          source: { peerId: d.cluster.selfId, name: d.cluster.selfName },
          target,
          transfers,
          ...(c.network != null ? { network: c.network } : {})
        }
        control = new FramedStream(await d.dial(target, MIGRATE_PROTOCOL, AbortSignal.any([outer, AbortSignal.timeout(15_000)])), { maxFrameBytes: MAX_CONTROL_FRAME, idleTimeoutMs: 0 })
        await control.writeJson(offer, outer)
        const answer = await control.readJson(AnswerSchema, AbortSignal.any([outer, AbortSignal.timeout(30_000)]))
        if (answer.type === 'refuse') throw new MscError('INVALID_STATE', `${result.toName} refused the migration: ${answer.reason}`, [], { cause: answer.code })
        result.strategy = answer.strategy
        const dataHost = answer.data != null ? d.peerIp?.(target) : undefined
        const dest: TreeTarget = { peer: target, ...(answer.data != null && dataHost != null ? { data: { host: dataHost, port: answer.data.port, secret: Buffer.from(answer.data.secret, 'base64') } } : {}) }
        result.dataChannel = dest.data != null
        log.info({ to: target, toName: result.toName, strategy: answer.strategy, needBundle: answer.needBundle, sealedData: dest.data != null }, 'target accepted')

        // ---- bundle: the rootfs goes ahead while the container still runs ----
        clock.enter('bundle')
        const before = await treeManifest(c.rootfs)
        if (answer.needBundle) {
          clock.addTotal(digest.bytes)
          // The target caches the bundle before it answers: a copy and a digest of
          // every file, at 20 MB/s or better, on top of the stall budget.
          result.bytes += await this.sendTree(dest, c.rootfs, transfers.bundle, 'rootfs', clock, outer, undefined, undefined, this.d.stallTimeoutMs + Math.ceil(digest.bytes / 20e3))
        }

        staging = await d.stagingRoot(migrationId)
        const imageDir = path.join(staging, 'images')
        // DIR/tmp/mig-out-ID/journal.json: how far this migration got, for a restart (journal.ts).
        const stagingDir = staging
        const journal = async (phase: OutgoingPhase): Promise<void> => {
          await writeOutgoingJournal(stagingDir, { migrationId, container: c.name, epoch: c.epoch, target, targetName: result.toName, phase, ...(result.streamedPages ? { streamedPages: true } : {}) })
        }

        // ---- pre-copy: memory moves while the container runs, until the dirty set
        // stops shrinking; the final dump then holds only what changed since ----
        let preRounds = 0
        if (answer.strategy === 'pre-copy') {
          clock.enter('pre-copy')
          let previous = Number.POSITIVE_INFINITY
          for (let round = 1; round <= MAX_PRE_ROUNDS; round++) {
            const dir = path.join(staging, `pre-${round}`)
            await d.host.preDump(c.name, dir, round > 1 ? `../pre-${round - 1}` : undefined, outer)
            const pages = await pagesBytes(dir)
            const id = tid()
            await control.writeJson({ type: 'pre-round', round, transferId: id }, outer)
            await control.readJson(PreReadySchema, AbortSignal.any([outer, AbortSignal.timeout(30_000)]))
            // `parent` links up to the previous round; the target makes its own.
            result.bytes += await this.sendTree(dest, dir, id, `pre-${round}`, clock, outer, (p) => p !== 'parent')
            preRounds = round
            log.info({ round, pagesBytes: pages }, 'pre-copy round sent')
            if (pages < PRE_CONVERGED_BYTES || pages > previous * 0.8) break
            previous = pages
          }
        }

        // ---- freeze-dump: from here the container is down ----
        clock.enter('freeze-dump')
        freezeAt = Date.now()
        if (answer.strategy === 'post-copy') {
          const port = await d.freePort()
          d.pageServers.set(transfers.pages, { host: '127.0.0.1', port })
          lazy = await d.host.dumpLazy(c.name, imageDir, port, outer)
          dumped = true
          await lazy.imagesReady
          // The page server's one connection over the target's page link (a sealed
          // connection), not /msc/pages, when the target offered one that answers.
          if (answer.data?.pagesPort != null && dest.data != null) {
            pageLinkStats = await this.pageLink(dest.data.host, answer.data.pagesPort, dest.data.secret, port, outer, log)
            result.streamedPages = pageLinkStats != null
          }
        } else {
          // Stop-copy with the target's page server: the pages cross while CRIU dumps,
          // and the container stays frozen here (a rollback thaws it).
          const relay = preRounds === 0 && answer.data?.pagesPort != null && dest.data != null
            ? await this.pageRelay(dest.data.host, answer.data.pagesPort, dest.data.secret, outer, log)
            : null
          try {
            await d.host.dump(c.name, imageDir, outer, { parentPath: preRounds > 0 ? `../pre-${preRounds}` : undefined, ...(relay != null ? { pageServer: `127.0.0.1:${relay.port}` } : {}) })
            dumped = true
            if (relay != null) {
              const sent = await relay.done
              result.bytes += sent.bytesOut
              pageBytes += sent.bytesOut
              result.streamedPages = true
              log.debug({ bytes: sent.bytesOut, ms: Date.now() - freezeAt }, 'pages streamed to the target while dumping')
            }
          } finally {
            relay?.close()
          }
        }
        await journal('dumped') // a failure here rolls back: the container resumes from the dump
        await testPause('source-dumped', log)

        // ---- transfer: rootfs changes, images, output log ----
        clock.enter('transfer')
        // One tree after the other: sent at once they only compete for this node's one
        // event loop (measured: the rootfs walk then took up to 1 s instead of 20 ms,
        // and the downtime did not shrink).
        const t0 = Date.now()
        const after = await treeManifest(c.rootfs)
        const delta = changedSince(before, after)
        log.debug({ entries: after.size, changed: delta.changed.length, deleted: delta.deleted.length, ms: Date.now() - t0 }, 'rootfs walked')
        const changed = new Set(delta.changed)
        if (changed.size > 0 || delta.deleted.length > 0) {
          result.bytes += await this.sendTree(dest, c.rootfs, transfers.delta, 'rootfs-delta', clock, outer, (p) => changed.has(p), delta.deleted)
        }
        result.bytes += await this.sendTree(dest, imageDir, transfers.images, 'images', clock, outer, (p) => p !== 'parent')
        const logDir = path.dirname(c.logFiles.at(-1)!)
        const logNames = new Set(c.logFiles.map((f) => path.basename(f)))
        result.bytes += await this.sendTree(dest, logDir, transfers.log, 'log', clock, outer, (p) => logNames.has(p))
        transferMs = Date.now() - t0
        result.dataChannel = dest.data != null && dest.fellBack !== true

        // ---- restore on the target ----
        clock.enter('restore')
        const handover = await d.cluster.signHandover({ container: c.name, epoch: c.epoch + 1, to: target })
        await control.writeJson({ type: 'restore', lazy: lazy != null, preRounds, ...(result.streamedPages ? { streamedPages: true } : {}), handover }, outer)
        const rr = await control.readJson(RestoreResultSchema, AbortSignal.any([outer, AbortSignal.timeout(d.restoreTimeoutMs)]))
        if (rr.type === 'failed') throw new MscError('CRIU_ERROR', `restore on ${result.toName} failed: ${rr.reason}`, rr.details)
        restored = true // the point of no return: from now on the source never resumes
        result.downtimeMs = Date.now() - freezeAt
        log.info({ pid: rr.pid, downtimeMs: result.downtimeMs }, 'restored on target')
        // A restart from here finishes the release instead of offering the dump as a checkpoint.
        await journal('restored-on-target').catch((err) => log.warn({ err: (err as Error).message }, 'could not write the migration journal'))
        await testPause('source-restored', log)

        if (lazy != null) {
          clock.enter('lazy-pages')
          try {
            await lazy.done
            // The lazy pages that crossed the page link count as sent (over /msc/pages they are not counted).
            pageBytes += pageLinkStats?.bytesOut ?? 0
            result.bytes += pageLinkStats?.bytesOut ?? 0
          } catch (err) {
            // CRIU gave up before the target fetched every page (the link or the target
            // failed): our frozen copy runs on, whole, and the target, which lacks
            // pages, discards its own instead of waiting for a decision.
            pagesFailed = true
            throw err
          }
        }

        // ---- commit: ownership moves to the target at epoch + 1 ----
        clock.enter('commit')
        await control.writeJson({ type: 'commit' }, outer)
        const committed = await control.readJson(CommittedSchema, AbortSignal.timeout(15_000)).catch((err) => {
          log.warn({ err: (err as Error).message }, 'no commit acknowledgement; the target settles it from membership')
          return null
        })
        if (committed != null) await journal('committed').catch((err) => log.warn({ err: (err as Error).message }, 'could not write the migration journal'))
        await d.host.release(c.name, { peerId: target, name: result.toName })
        await d.cluster.waitForOwner(c.name, target, committed?.epoch ?? c.epoch + 1, d.ownerWaitMs)
          .catch(() => log.warn('the cluster has not yet seen the new owner epoch'))
        clock.end()
        result.ok = true
        result.runningOn = target
      } catch (err) {
        let e = toMscError(err)
        // Once the offer went out, a malformed or cut control stream is the peer's doing,
        // not a bad argument of the user's (the CLI's exit status 2, "bad usage").
        if (e.code === 'INVALID_ARGUMENT' && control != null) e = new MscError('RUNTIME_ERROR', `the control stream with ${result.toName} failed: ${e.message}`, e.details)
        clock.enter('rollback')
        log.warn({ err: e.message, restored }, 'migration failed')
        result.error = { code: e.code, message: e.message, details: e.details }
        if (!restored) {
          try {
            await control?.writeJson({ type: 'abort', reason: e.message }, AbortSignal.timeout(2_000))
          } catch {}
          control?.abort(new Error('migration aborted'))
          lazy?.cancel()
          if (dumped && staging != null) {
            // Back here, from our own dump: the target never reported it running.
            try {
              await d.host.resume(req.container, path.join(staging, 'images'), AbortSignal.timeout(120_000))
              result.runningOn = d.cluster.selfId
            } catch (re) {
              const r = toMscError(re)
              result.error.details.push(`resuming on the source failed too: ${r.message}`, ...r.details)
            }
          } else {
            result.runningOn = d.cluster.selfId
          }
        } else if (pagesFailed) {
          // Set only once the lazy dump ran: in staging, with the control stream open.
          result.runningOn = await this.resumeAfterPagesFailed(req.container, control!, result.toName, staging!, log, (m) => result.error!.details.push(m))
        } else {
          result.runningOn = result.to
        }
        clock.end()
      } finally {
        d.pageServers.delete(transfers.pages)
        try {
          await control?.closeWrite()
        } catch {}
        if (staging != null) await d.removeStaging(staging).catch(() => {})
        result.totalMs = clock.totalMs()
        const mb = (result.bytes - pageBytes) / 1e6
        result.goodputMBps = transferMs > 0 ? Math.round(mb / (transferMs / 1000) * 10) / 10 : null
      }
      return result
    })
  }

  /**
   * Post-copy, the page transfer failed after the target resumed the container: its
   * copy lacks pages and goes, ours is whole but frozen (dumpLazy froze it, and the
   * failed dump left it so). Ours runs again only once the target says its copy is gone,
   * or, when that word does not come (the link is down), after DISCARD_WAIT_MS: the
   * target removes its copy as soon as its own lazy-pages daemon ends, which the same
   * failure causes. Returns where the container runs: here, or nowhere.
   */
  private async resumeAfterPagesFailed (name: string, control: FramedStream, toName: string, staging: string, log: Logger, note: (detail: string) => void): Promise<string | undefined> {
    try {
      await control.readJson(DiscardedSchema, AbortSignal.timeout(DISCARD_WAIT_MS))
      log.info('the target removed its copy; resuming ours')
    } catch (err) {
      log.error({ err: (err as Error).message }, `no word from ${toName} that its copy is gone within ${DISCARD_WAIT_MS} ms; resuming ours (its copy cannot run without its pages)`)
      note(`${toName} did not confirm that its copy was removed`)
    }
    try {
      await this.d.host.resume(name, path.join(staging, 'images'), AbortSignal.timeout(120_000))
      return this.d.cluster.selfId
    } catch (err) {
      const e = toMscError(err)
      note(`resuming on the source failed: ${e.message}`)
      return undefined
    }
  }

  /** One tree over /msc/image, given up when it makes no progress for a while. */
  private async sendTree (to: TreeTarget, dir: string, transferId: string, label: string, clock: PhaseClock, outer: AbortSignal, include?: (rel: string) => boolean, deletes?: string[], stallMs = this.d.stallTimeoutMs): Promise<number> {
    const peer = to.peer
    const dog = new Watchdog(stallMs, `the ${label} transfer stalled`)
    const signal = AbortSignal.any([outer, dog.signal])
    let reported = 0
    const t0 = performance.now()
    try {
      const stream = await this.treeStream(to, label, signal)
      const r = await sendTree(stream, dir, {
        transferId,
        label,
        include,
        deletes,
        signal,
        idleTimeoutMs: Math.max(30_000, stallMs),
        onProgress: (n: number) => {
          dog.kick()
          clock.sent(n - reported)
          reported = n
        }
      })
      clock.sent(r.bytes - reported)
      this.d.logger.debug({ label, bytes: r.bytes, ms: Math.round(performance.now() - t0) }, 'tree sent')
      return r.bytes
    } catch (err) {
      if (dog.signal.aborted) throw new MscError('RUNTIME_ERROR', dog.reason)
      // A refused or broken transfer is the migration failing, not a bad argument of
      // the user's (the image protocol reports e.g. a hash mismatch as INVALID_ARGUMENT,
      // which the CLI would turn into exit status 2, "bad usage").
      const e = toMscError(err)
      throw new MscError(e.code === 'INVALID_ARGUMENT' ? 'RUNTIME_ERROR' : e.code, `the ${label} transfer to ${this.d.cluster.peerName(peer)} failed: ${e.message}`, e.details)
    } finally {
      dog.stop()
    }
  }

  /**
   * Post-copy: dials the target's page link and splices it into this node's page server
   * on 127.0.0.1:`port` (in the background, until CRIU's lazy dump ends). Its byte counts
   * (live), or null when the link does not answer: the target's lazy-pages daemon then
   * comes over /msc/pages.
   */
  private async pageLink (host: string, port: number, secret: Uint8Array, pageServerPort: number, signal: AbortSignal, log: Logger): Promise<SpliceStats | null> {
    let stream: SealedStream
    try {
      stream = await dialSealed(host, port, secret, AbortSignal.any([signal, AbortSignal.timeout(3_000)]))
    } catch (err) {
      signal.throwIfAborted()
      log.warn({ where: `${host}:${port}`, err: errText(err) }, 'the page link did not answer: the pages go over /msc/pages')
      return null
    }
    let socket: net.Socket
    try {
      socket = await connectLocal(pageServerPort, signal)
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
    const stats: SpliceStats = { bytesIn: 0, bytesOut: 0 }
    spliceSocket(socket, stream, stats, new AbortController().signal, { cutAfterBytes: testCutPagesAfter() }).then(
      () => log.debug({ bytes: stats.bytesOut }, 'page link done'),
      (err: Error) => log.warn({ err: err.message, bytes: stats.bytesOut }, 'page link failed')
    )
    return stats
  }

  /**
   * The relay to the target's page server, or null when its page connection does not
   * answer: the dump then writes the pages here and they go in the images tree.
   */
  private async pageRelay (host: string, port: number, secret: Uint8Array, signal: AbortSignal, log: Logger): Promise<PageRelay | null> {
    try {
      return await openPageRelay(host, port, secret, signal, { cutAfterBytes: testCutStreamedPagesAfter(), idleTimeoutMs: this.d.stallTimeoutMs })
    } catch (err) {
      signal.throwIfAborted()
      log.warn({ where: `${host}:${port}`, err: errText(err) }, 'the page connection did not answer: the pages go after the dump')
      return null
    }
  }

  /**
   * The target's sealed data channel when it offered one and it answers, else a
   * /msc/image stream: a channel that cannot be reached (a firewall between the
   * hosts) costs a connect timeout once per tree, not the migration.
   */
  private async treeStream (to: TreeTarget, label: string, signal: AbortSignal): Promise<ByteStream> {
    if (to.data == null) return await this.d.dial(to.peer, IMAGE_PROTOCOL, signal)
    const where = `${to.data.host}:${to.data.port}`
    let sealedErr: string
    try {
      return await dialSealed(to.data.host, to.data.port, to.data.secret, AbortSignal.any([signal, AbortSignal.timeout(3_000)]))
    } catch (err) {
      signal.throwIfAborted()
      sealedErr = errText(err)
      to.fellBack = true
      this.d.logger.warn({ label, where, err: sealedErr }, 'the sealed data channel did not answer: this tree goes over libp2p')
    }
    try {
      return await this.d.dial(to.peer, IMAGE_PROTOCOL, signal)
    } catch (err) {
      throw new MscError('RUNTIME_ERROR', `the target is unreachable: its sealed data channel (${where}) did not answer (${sealedErr}), nor did /msc/image (${errText(err)})`, [], { cause: err })
    }
  }
}

function tid (): string {
  return crypto.randomBytes(12).toString('base64url')
}

/** Pre-copy stops when a round's dirty memory is this small, or shrank by less than 20%. */
const PRE_CONVERGED_BYTES = 1024 * 1024
/** How long a source whose post-copy page transfer failed waits for the target's word that its copy is gone. */
const DISCARD_WAIT_MS = 30_000
const MAX_PRE_ROUNDS = 6

/** Bytes of memory pages in a dump directory (CRIU's pages-*.img). */
async function pagesBytes (dir: string): Promise<number> {
  const { readdir, stat } = await import('node:fs/promises')
  let n = 0
  for (const f of await readdir(dir)) if (/^pages-\d+\.img$/.test(f)) n += (await stat(path.join(dir, f))).size
  return n
}

/** Where a migration's trees go: the target, and its sealed data channel if it offered one. */
interface TreeTarget {
  peer: string
  data?: { host: string; port: number; secret: Uint8Array }
  /** A tree went over /msc/image because the channel did not answer. */
  fellBack?: boolean
}

/** A connection to this node's page server, paused until the splice reads it. */
function connectLocal (port: number, signal: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true })
    const onAbort = (): void => {
      socket.destroy()
      reject(signal.reason as Error)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('error', (err) => {
      signal.removeEventListener('abort', onAbort)
      reject(err)
    })
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort)
      socket.pause()
      resolve(socket)
    })
  })
}
