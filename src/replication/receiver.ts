/**
 * The standby side of /msc/replicate: takes one generation per stream from a
 * container's owner, checks everything before it touches the disk, stages it, and
 * acknowledges it only once it is verified, fsynced and renamed into place
 * (replica-store.ts). Any problem: the staging goes, the answer is a nack with a named
 * reason, and the standby's previous generation stays the restorable one.
 */
import fs from 'node:fs/promises'
import crypto from 'node:crypto'
import path from 'node:path'
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { FramedStream, FRAME_JSON, parseJsonFrame, ProtocolError } from '../protocols/framing.ts'
import type { TreeDestination, TreeHeader } from '../protocols/image/index.ts'
import { checkBundlePolicy, type BundlePolicy } from '../runtime/bundle-policy.ts'
import { isPagemapFile, isPagesFile, pageLayoutFromPagemaps } from './criu-images.ts'
import { PagesFileWriter, PreviousPages } from './page-delta.ts'
import {
  BodySchema,
  FILE_CHUNK_BYTES,
  FRAME_FILE_DATA,
  FRAME_PAGES_CHUNK,
  MAX_IMAGE_FILES,
  MAX_REPLICATE_FRAME,
  OpeningSchema,
  type Begin,
  type NackReason
} from './messages.ts'
import type { ReplicaMeta, ReplicaStore } from './replica-store.ts'
import { checkReceivedNetwork, type LanNetwork } from '../network/lan-address.ts'

const zstdDecompress = promisify(zlib.zstdDecompress)

/** What the standby needs from its node. */
export interface StandbyPort {
  selfId: string
  /** A witness votes and keeps nothing. */
  witness: boolean
  /** This node holds a container of that name (it runs here: no replica of it). */
  hasContainer: (name: string) => Promise<boolean>
  /** The owner and epoch the membership view holds for the name. */
  ownerOf: (name: string) => { owner: string | null; epoch: number } | undefined
  freeBytes: () => Promise<number>
  bundlePolicy: BundlePolicy
  /** Kept free on the disk whatever a generation says it needs. */
  diskReserveBytes: number
  /** A new replica (or a new generation) landed: for events and status. */
  onGeneration?: (meta: ReplicaMeta) => void
  /**
   * Why this node could not restore container NAME at the (checked) address NET: no
   * LAN interface, another subnet, the address held by another container here. Null: it can.
   */
  networkProblem?: (net: LanNetwork, name: string) => Promise<string | null>
}

class Nack extends Error {
  readonly reason: NackReason
  constructor (reason: NackReason, message: string) {
    super(message)
    this.reason = reason
  }
}

interface ExpectedTree {
  dest: TreeDestination
  done: PromiseWithResolvers<void>
  finished: boolean
}

export class ReplicationReceiver {
  private readonly store: ReplicaStore
  private readonly port: StandbyPort
  private readonly log: Logger
  private readonly busy = new Set<string>()
  private readonly expected = new Map<string, ExpectedTree>()

  constructor (store: ReplicaStore, port: StandbyPort, logger: Logger) {
    this.store = store
    this.port = port
    this.log = logger
  }

  /** /msc/image destinations of the rootfs transfers a begin announced. */
  imageDestination (header: TreeHeader): TreeDestination | null {
    const e = this.expected.get(header.transferId)
    if (e == null || e.finished) return null
    e.finished = true
    return {
      ...e.dest,
      onDone: (err?: Error) => {
        if (err == null) e.done.resolve()
        else e.done.reject(err)
      }
    }
  }

  async handle (stream: Stream, peer: string): Promise<void> {
    const framed = new FramedStream(stream, { maxFrameBytes: MAX_REPLICATE_FRAME, idleTimeoutMs: 60_000 })
    let opening
    try {
      opening = await framed.readJson(OpeningSchema, AbortSignal.timeout(15_000))
    } catch (err) {
      this.log.warn({ from: peer, err: (err as Error).message }, 'bad replication message')
      framed.abort(new Error('bad opening'))
      return
    }
    if (opening.type === 'drop') {
      const m = await this.store.read(opening.container)
      if (m != null && m.owner === peer && m.epoch <= opening.epoch) {
        await this.store.drop(opening.container)
        this.log.info({ container: opening.container, owner: peer }, "replica dropped at the owner's request")
      }
      await framed.writeJson({ type: 'dropped' }).catch(() => {})
      await framed.closeWrite().catch(() => {})
      return
    }
    const begin = opening
    const log = this.log.child({ container: begin.container, generation: begin.generation, owner: peer })
    if (this.busy.has(begin.container)) {
      await this.nack(framed, new Nack('busy', 'a generation of this container is being received already'), log)
      return
    }
    this.busy.add(begin.container)
    let staging: string | undefined
    const transfers: string[] = []
    try {
      const network = await this.admit(begin, peer)
      staging = await this.store.stage(begin.container, begin.generation, begin.base)
      const limits = { maxTotalBytes: Math.max(begin.estimatedBytes * 2, 64 * 1024 * 1024), maxFileBytes: Math.max(begin.estimatedBytes * 2, 64 * 1024 * 1024), maxFiles: 500_000 }
      const rootfs = path.join(staging, 'rootfs')
      const trees: Record<'full' | 'delta', ExpectedTree | undefined> = { full: undefined, delta: undefined }
      for (const kind of ['full', 'delta'] as const) {
        const id = begin.transfers[kind]
        if (id == null) continue
        if (this.expected.has(id)) throw new Nack('malformed', `transfer id ${id} is in use`)
        const e: ExpectedTree = { dest: { destDir: rootfs, mode: kind === 'full' ? 'replace' : 'overlay', limits, symlinks: 'rootfs' }, done: Promise.withResolvers<void>(), finished: false }
        e.done.promise.catch(() => {})
        this.expected.set(id, e)
        transfers.push(id)
        trees[kind] = e
      }
      await framed.writeJson({ type: 'ready' })
      const files = await this.receiveImages(framed, begin, staging)
      const end = files.end
      for (const kind of ['full', 'delta'] as const) {
        const t = trees[kind]
        if (!end.sent[kind]) continue
        if (t == null) throw new Nack('malformed', `end says a ${kind} rootfs was sent, begin announced none`)
        await Promise.race([t.done.promise, new Promise((_resolve, reject) => setTimeout(() => reject(new Nack('verify-failed', `the ${kind} rootfs transfer did not complete`)), 30_000))])
      }
      if (begin.base == null && !end.sent.full) throw new Nack('malformed', 'a full generation without its rootfs')
      if ((await fs.stat(rootfs).catch(() => null))?.isDirectory() !== true) throw new Nack('verify-failed', 'the generation has no rootfs')
      const meta = await this.store.commit(begin.container, staging, {
        generation: begin.generation,
        epoch: begin.epoch,
        owner: peer,
        dumpedAt: end.dumpedAt ?? begin.dumpedAt,
        receivedAt: Date.now()
      }, { container: begin.container, owner: peer, epoch: begin.epoch, config: begin.config, replicas: begin.replicas, standbys: begin.standbys, ...(network != null ? { network } : {}) })
      staging = undefined
      await framed.writeJson({ type: 'ack', generation: begin.generation })
      await framed.closeWrite().catch(() => {})
      log.debug({ files: files.count }, 'generation stored')
      this.port.onGeneration?.(meta)
    } catch (err) {
      await this.nack(framed, err, log)
    } finally {
      for (const id of transfers) this.expected.delete(id)
      if (staging != null) await this.store.abort(staging).catch(() => {})
      this.busy.delete(begin.container)
    }
  }

  /** May this peer replicate this container here, at this generation? Returns its checked network, if it has one. */
  private async admit (begin: Begin, peer: string): Promise<LanNetwork | undefined> {
    const p = this.port
    if (p.witness) throw new Nack('witness', 'this node is a witness: it keeps no replicas')
    if (peer === p.selfId) throw new Nack('not-owner', 'a node does not replicate to itself')
    if (await p.hasContainer(begin.container)) throw new Nack('runs-here', `${begin.container} is a container of this node`)
    const own = p.ownerOf(begin.container)
    if (own != null && own.epoch > begin.epoch) throw new Nack('stale-epoch', `the cluster holds ${begin.container} at epoch ${own.epoch} > ${begin.epoch}`)
    if (own?.owner != null && own.owner !== peer) throw new Nack('not-owner', `the cluster says ${begin.container} belongs to ${own.owner}`)
    const held = await this.store.read(begin.container)
    if (held != null && held.epoch > begin.epoch) throw new Nack('stale-epoch', `this standby holds epoch ${held.epoch} of ${begin.container}`)
    if (held != null && held.epoch === begin.epoch && held.owner !== peer) throw new Nack('not-owner', `epoch ${held.epoch} of ${begin.container} came from another owner`)
    if (begin.base != null) {
      const sameLine = held != null && held.owner === peer && held.epoch === begin.epoch
      if (!sameLine || !held.generations.includes(begin.base)) throw new Nack('missing-base', `no generation ${begin.base} here to apply a delta to`)
    }
    // A delta goes on top of the newest: its number is above. A full generation may start
    // a new count (its owner's daemon restarted), but never replace one still kept.
    if (held != null && held.owner === peer && held.epoch === begin.epoch) {
      if (begin.base != null && begin.generation <= held.generations.at(-1)!) throw new Nack('malformed', `generation ${begin.generation} is not above ${held.generations.at(-1)!}`)
      if (held.generations.includes(begin.generation)) throw new Nack('malformed', `generation ${begin.generation} is kept here already`)
    }
    const policy = checkBundlePolicy(begin.config, p.bundlePolicy)
    if (!policy.ok) throw new Nack('policy', `this node refuses the bundle (it runs with --allow-privileged-bundles only): ${policy.violations.slice(0, 8).join('; ')}`.slice(0, 1000))
    const network = await this.admitNetwork(begin, held)
    const free = await p.freeBytes()
    if (free - p.diskReserveBytes < begin.estimatedBytes) throw new Nack('no-space', `${begin.estimatedBytes} bytes needed, ${Math.max(0, free - p.diskReserveBytes)} free`)
    return network
  }

  /**
   * A lan container's address, which a failover here would take over: checked field by
   * field like anything from the network, and, for a full generation or a changed
   * address, against what this node can build (its LAN interface and subnet, the
   * addresses of its own containers): a standby that could not restore it at that
   * address must not be one.
   */
  private async admitNetwork (begin: Begin, held: ReplicaMeta | null): Promise<LanNetwork | undefined> {
    if (begin.network == null) return undefined
    let net: LanNetwork
    try {
      net = checkReceivedNetwork(begin.network)
    } catch (err) {
      throw new Nack('malformed', (err as Error).message)
    }
    const known = held?.network != null && JSON.stringify(held.network) === JSON.stringify(net)
    if (begin.base == null || !known) {
      const problem = this.port.networkProblem == null ? 'this node has no LAN networking' : await this.port.networkProblem(net, begin.container)
      if (problem != null) throw new Nack('network', `cannot restore ${begin.container} at ${net.address}/${net.prefix} here: ${problem}`.slice(0, 1000))
    }
    return net
  }

  /** Image files and pages files, in order, until `end`; each verified against its hash. */
  private async receiveImages (framed: FramedStream, begin: Begin, staging: string): Promise<{ count: number; end: { sent: { full: boolean; delta: boolean }; dumpedAt?: number } }> {
    const dir = path.join(staging, 'images')
    const pagemaps = new Map<string, Uint8Array>()
    const seen = new Set<string>()
    let layout: Map<string, string[]> | undefined
    let prev: PreviousPages | null = null
    let total = 0
    const budget = Math.max(begin.estimatedBytes * 2, 64 * 1024 * 1024)
    try {
      for (;;) {
        const f = await framed.readFrame()
        if (f == null) throw new Nack('malformed', 'the stream ended before the generation did')
        if (f.type !== FRAME_JSON) throw new Nack('malformed', `unexpected frame type ${f.type}`)
        const msg = parseJsonFrame(f, BodySchema)
        if (msg.type === 'end') {
          if (msg.files !== seen.size) throw new Nack('malformed', `end says ${msg.files} files, ${seen.size} arrived`)
          // Every pages file the pagemaps name must be there: CRIU would read past an absent one.
          for (const name of (layout ?? pageLayoutFromPagemaps(pagemaps)).keys()) {
            if (!seen.has(name)) throw new Nack('verify-failed', `the pagemaps name ${name}, which did not arrive`)
          }
          return { count: seen.size, end: msg }
        }
        if (seen.has(msg.name)) throw new Nack('malformed', `${msg.name} twice`)
        if (seen.size >= MAX_IMAGE_FILES) throw new Nack('malformed', 'too many image files')
        seen.add(msg.name)
        const out = path.join(dir, msg.name)
        if (msg.type === 'file') {
          if (isPagesFile(msg.name)) throw new Nack('malformed', `${msg.name} must come as pages`)
          total += msg.size
          if (total > budget) throw new Nack('no-space', `the generation is larger than announced (${begin.estimatedBytes} bytes)`)
          const bytes = await this.receiveFile(framed, out, msg.size, msg.sha256, isPagemapFile(msg.name))
          if (bytes != null) {
            if (layout != null) throw new Nack('malformed', `pagemap ${msg.name} after a pages file`)
            pagemaps.set(msg.name, bytes)
          }
          continue
        }
        if (!isPagesFile(msg.name)) throw new Nack('malformed', `${msg.name} is not a pages file`)
        try {
          layout ??= pageLayoutFromPagemaps(pagemaps)
        } catch (err) {
          throw new Nack('malformed', `pagemaps: ${(err as Error).message}`)
        }
        const keys = layout.get(msg.name)
        if (keys == null || keys.length !== msg.pages) throw new Nack('malformed', `${msg.name}: ${msg.pages} pages announced, the pagemaps name ${keys?.length ?? 0}`)
        total += msg.pages * 4096
        if (total > budget) throw new Nack('no-space', `the generation is larger than announced (${begin.estimatedBytes} bytes)`)
        if (begin.base != null && prev == null) prev = await PreviousPages.open(path.join(this.store.genDir(begin.container, begin.base), 'images'))
        await this.receivePages(framed, out, keys, prev, msg.sha256)
      }
    } finally {
      await prev?.close().catch(() => {})
    }
  }

  /** One image file from zstd data frames; returns its bytes when `keep` (pagemaps, parsed later). */
  private async receiveFile (framed: FramedStream, out: string, size: number, sha256: string, keep: boolean): Promise<Uint8Array | null> {
    const fh = await fs.open(out, 'wx', 0o600)
    const hash = crypto.createHash('sha256')
    const kept: Buffer[] = []
    let got = 0
    try {
      while (got < size) {
        const f = await framed.readFrame()
        if (f == null) throw new Nack('malformed', `${path.basename(out)} ended after ${got} of ${size} bytes`)
        if (f.type !== FRAME_FILE_DATA) throw new Nack('malformed', `${path.basename(out)}: frame type ${f.type} inside a file`)
        const want = Math.min(FILE_CHUNK_BYTES, size - got)
        let raw: Buffer
        try {
          raw = await zstdDecompress(f.payload, { maxOutputLength: want })
        } catch (err) {
          throw new Nack('malformed', `${path.basename(out)}: bad zstd data: ${(err as Error).message}`)
        }
        if (raw.length !== want) throw new Nack('malformed', `${path.basename(out)}: a chunk of ${raw.length} bytes where ${want} were due`)
        hash.update(raw)
        if (keep) kept.push(raw)
        await fh.write(raw)
        got += raw.length
      }
      if (hash.digest('hex') !== sha256) throw new Nack('verify-failed', `${path.basename(out)}: sha256 mismatch`)
    } finally {
      await fh.close()
    }
    return keep ? Buffer.concat(kept) : null
  }

  private async receivePages (framed: FramedStream, out: string, keys: string[], prev: PreviousPages | null, sha256: string): Promise<void> {
    const w = new PagesFileWriter(out, keys, prev)
    let pages = 0
    try {
      while (pages < keys.length) {
        const f = await framed.readFrame()
        if (f == null) throw new Nack('malformed', `${path.basename(out)} ended after ${pages} of ${keys.length} pages`)
        if (f.type !== FRAME_PAGES_CHUNK) throw new Nack('malformed', `${path.basename(out)}: frame type ${f.type} inside a pages file`)
        try {
          pages += (await w.write(f.payload)).pages
        } catch (err) {
          throw new Nack(/no such page|previous generation/i.test((err as Error).message) ? 'missing-base' : 'malformed', `${path.basename(out)}: ${(err as Error).message}`)
        }
      }
      const done = await w.finish()
      if (done.sha256 !== sha256) throw new Nack('verify-failed', `${path.basename(out)}: sha256 mismatch (a page changed under the same hash, or the base differs)`)
    } catch (err) {
      await w.abort().catch(() => {})
      throw err
    }
  }

  private async nack (framed: FramedStream, err: unknown, log: Logger): Promise<void> {
    const reason: NackReason = err instanceof Nack
      ? err.reason
      : err instanceof ProtocolError
      ? 'malformed'
      : (err as NodeJS.ErrnoException)?.code === 'ENOSPC'
      ? 'no-space'
      : 'io-error'
    const detail = (err as Error)?.message?.slice(0, 1000) ?? String(err)
    log.warn({ reason, detail }, 'generation refused')
    await framed.writeJson({ type: 'nack', reason, detail }).catch(() => {})
    await framed.closeWrite().catch(() => {})
  }
}
