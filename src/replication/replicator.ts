/**
 * The owner side of continuous replication: every replicated container this node
 * runs (and holds the lease of) is checkpointed every interval with the container left
 * running, and each checkpoint (a generation) goes to its standbys.
 *
 * One round per container at a time: the next starts only once every standby answered
 * the last one (a round is never stacked on an unacknowledged one), and not before
 * max(DUMP_INTERVAL, 20 x the last freeze) after the previous started, so freezes take
 * at most 5% of the container's time. Per round:
 *   1. standbys chosen (rendezvous order among live candidates); new ones get the whole
 *      rootfs while the container runs, from a manifest taken before the copy;
 *   2. freeze: pause, note what the rootfs changed since each standby's base and copy
 *      it aside, dump with --leave-running, resume (the freeze time is measured);
 *   3. to each standby in parallel: its rootfs changes, the images with only the pages
 *      whose content differs from what it acknowledged, then wait for its ack.
 * A standby that fails or refuses is sent a full generation next time.
 */
import { errText } from '../util/errors.ts'
import crypto from 'node:crypto'
import path from 'node:path'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import type { ReplicationInfo } from '../api/types.ts'
import { FramedStream } from '../protocols/framing.ts'
import { IMAGE_PROTOCOL, sendTree, treeManifest, type TreeManifest } from '../protocols/image/index.ts'
import { MAX_REPLICATE_FRAME, REPLICATE_PROTOCOL, ReplySchema, REPLICATE_VERSION, type Begin } from './messages.ts'
import { prepareImages, sendImages } from './sender.ts'
import { copyEntries, rootfsChanges } from './rootfs-delta.ts'
import { chooseStandbys, standbysToDrop } from './standby-choice.ts'
import { testPause } from '../migration/test-knobs.ts'
import type { LanNetwork } from '../network/lan-address.ts'

export interface ReplicatedContainer {
  name: string
  epoch: number
  replicas: number
  rootfs: string
  config: Record<string, unknown>
  /** Its own address on the LAN, which a failover restores it at (absent: the host's network). */
  network?: LanNetwork
}

/** What the replicator needs from its node. */
export interface OwnerPort {
  selfId: string
  /** The containers to replicate now: running here, replicas > 0, lease held. */
  replicated: () => Promise<ReplicatedContainer[]>
  /** Live members that keep replicas (not this node, not witnesses). */
  candidates: () => string[]
  peerName: (peer: string) => string
  dial: (peer: string, protocol: string, signal: AbortSignal) => Promise<Stream>
  /**
   * Freezes the container (holding it against every other operation), runs `capture`,
   * dumps it into imageDir leaving it running, and resumes it. Returns the freeze in ms.
   */
  freezeDump: (name: string, imageDir: string, capture: () => Promise<void>, signal: AbortSignal) => Promise<number>
  /**
   * A container that left the replicated list: do its standbys drop their replicas?
   * Yes when it is gone or stopped for good here; no when it was killed for want of a
   * lease (a standby must be able to bring it back) or is merely between leases.
   */
  shouldDrop: (name: string) => Promise<boolean>
  staging: (id: string) => Promise<string>
  removeStaging: (dir: string) => Promise<void>
}

export interface ReplicatorInit {
  dumpIntervalMs: number
  logger: Logger
  /** How long a standby may take a generation without progress. */
  stallTimeoutMs?: number
  onEvent?: (e: ReplicationEvent) => void
}

export type ReplicationEvent =
  | { type: 'generation'; container: string; generation: number; standby: string; standbyName: string; wireBytes: number; imageBytes: number; freezeMs: number; full: boolean }
  | { type: 'generation-failed'; container: string; generation: number; standby: string; standbyName: string; reason: string }
  | { type: 'standby-chosen'; container: string; standby: string; standbyName: string }
  | { type: 'standby-dropped'; container: string; standby: string; standbyName: string }
  | { type: 'dump-failed'; container: string; reason: string }

/** One standby of one container, as the owner knows it. */
interface Link {
  peer: string
  ackedGeneration: number | null
  ackedAt: number | null
  /** When the acknowledged generation was frozen: its age is the RPO. */
  ackedDumpedAt: number | null
  /** Page hashes of the acknowledged generation. */
  acked: Map<string, string> | null
  /** The rootfs as of the acknowledged generation. */
  manifest: TreeManifest | null
}

interface ContainerState {
  name: string
  epoch: number
  generation: number
  links: Map<string, Link>
  nextAt: number
  running: boolean
  lastFreezeMs: number | null
  lastWireBytes: number | null
  lastImageBytes: number | null
  intervalMs: number
  lastError: string | null
  /** Standbys that refused for a reason that lasts (LASTING_REFUSALS), until when they are passed over. */
  avoid: Map<string, number>
}

/**
 * Refusals that asking the same member again soon will not change: it is a witness, has
 * a container of that name (say, its own copy fenced after a failover), holds or sees a
 * newer epoch, refuses the bundle, or lacks disk. Another member takes its place for
 * AVOID_REFUSER_MS when there is one; otherwise it is asked again as usual.
 */
const LASTING_REFUSALS: ReadonlySet<string> = new Set(['witness', 'not-owner', 'runs-here', 'stale-epoch', 'policy', 'no-space'])
export const AVOID_REFUSER_MS = 60_000

/** A standby's `nack`: it refused the generation, for `reason`. */
export class StandbyRefusedError extends Error {
  readonly reason: string
  constructor (reason: string, detail: string) {
    super(`${reason}: ${detail}`)
    this.name = 'StandbyRefusedError'
    this.reason = reason
  }
}

/** What `msc ps` / `inspect` show of a container's replication (the lease is the node's to add). */
export type ReplicationStatus = Omit<ReplicationInfo, 'leaseHeld'>

export class Replicator {
  private readonly port: OwnerPort
  private readonly init: ReplicatorInit
  private readonly log: Logger
  private readonly states = new Map<string, ContainerState>()
  private readonly replicasOf = new Map<string, number>()
  private timer?: NodeJS.Timeout
  private readonly stopping = new AbortController()
  private readonly rounds = new Set<Promise<void>>()
  private ticking = false

  constructor (port: OwnerPort, init: ReplicatorInit) {
    this.port = port
    this.init = init
    this.log = init.logger
  }

  start (): void {
    this.timer = setInterval(() => {
      void this.tick()
    }, 250)
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    this.stopping.abort()
    await Promise.allSettled([...this.rounds])
  }

  /** Replication state of a container this node owns, or null when it is not replicated. */
  status (name: string): ReplicationStatus | null {
    const s = this.states.get(name)
    const replicas = this.replicasOf.get(name)
    if (s == null || replicas == null) return null
    const acked = [...s.links.values()].filter((l) => l.ackedGeneration != null)
    const best = acked.sort((a, b) => (b.ackedGeneration ?? 0) - (a.ackedGeneration ?? 0))[0]
    return {
      replicas,
      standbys: [...s.links.values()].map((l) => ({ peerId: l.peer, name: this.port.peerName(l.peer), generation: l.ackedGeneration, ackedAt: l.ackedAt == null ? null : new Date(l.ackedAt).toISOString() })),
      generation: s.generation,
      ackedGeneration: best?.ackedGeneration ?? null,
      rpoMs: best?.ackedDumpedAt != null ? Date.now() - best.ackedDumpedAt : null,
      freezeMs: s.lastFreezeMs,
      bytesPerRound: s.lastWireBytes,
      imageBytes: s.lastImageBytes,
      intervalMs: s.intervalMs,
      lastError: s.lastError
    }
  }

  private async tick (): Promise<void> {
    if (this.ticking || this.stopping.signal.aborted) return
    this.ticking = true
    try {
      const list = await this.port.replicated()
      const live = new Set(list.map((c) => c.name))
      for (const [name, s] of this.states) {
        if (live.has(name) || s.running) continue
        // No longer replicated from here (removed, stopped, moved away, fenced, lease lost).
        this.states.delete(name)
        this.replicasOf.delete(name)
        if (await this.port.shouldDrop(name).catch(() => false)) {
          for (const l of s.links.values()) void this.drop(name, s.epoch, l.peer)
        }
      }
      const now = Date.now()
      for (const c of list) {
        this.replicasOf.set(c.name, c.replicas)
        let s = this.states.get(c.name)
        if (s == null || s.epoch !== c.epoch) {
          s = { name: c.name, epoch: c.epoch, generation: 0, links: new Map(), nextAt: now, running: false, lastFreezeMs: null, lastWireBytes: null, lastImageBytes: null, intervalMs: this.init.dumpIntervalMs, lastError: null,
            avoid: new Map() }
          this.states.set(c.name, s)
        }
        if (s.running || now < s.nextAt) continue
        s.running = true
        const p = this.round(c, s).catch((err) => {
          s.lastError = errText(err)
          this.log.warn({ container: c.name, err: errText(err) }, 'replication round failed')
          this.init.onEvent?.({ type: 'dump-failed', container: c.name, reason: errText(err) })
        }).finally(() => {
          s.running = false
          this.rounds.delete(p)
        })
        this.rounds.add(p)
      }
    } catch (err) {
      this.log.debug({ err: errText(err) }, 'replication tick failed')
    } finally {
      this.ticking = false
    }
  }

  /** One generation of one container to each of its standbys. */
  private async round (c: ReplicatedContainer, s: ContainerState): Promise<void> {
    const started = Date.now()
    s.nextAt = started + s.intervalMs
    for (const [peer, until] of s.avoid) if (until <= started) s.avoid.delete(peer)
    const candidates = this.port.candidates()
    const chosen = chooseStandbys(c.name, candidates, c.replicas, new Set(s.avoid.keys()))
    this.retire(c, s, chosen)
    for (const peer of chosen) {
      if (!s.links.has(peer)) {
        s.links.set(peer, { peer, ackedGeneration: null, ackedAt: null, ackedDumpedAt: null, acked: null, manifest: null })
        this.init.onEvent?.({ type: 'standby-chosen', container: c.name, standby: peer, standbyName: this.port.peerName(peer) })
      }
    }
    if (chosen.length === 0) {
      s.lastError = 'no live member to keep a replica (see msc peer ls)'
      return
    }
    const k = s.generation + 1
    s.generation = k
    const links = chosen.map((p) => s.links.get(p)!)
    const fullNeeded = links.some((l) => l.manifest == null)
    const m0 = fullNeeded ? await treeManifest(c.rootfs) : null
    const rootfsBytes = m0 == null ? 0 : [...m0.values()].reduce((n, e) => n + (e.kind === 'file' ? e.size : 0), 0)
    const dumpedAt = Date.now()
    const signal = this.stopping.signal

    // 1. begin, and the whole rootfs for standbys that have none of ours
    const sessions = await Promise.all(links.map(async (l) => {
      try {
        return await this.open(c, s, l, k, links.map((x) => x.peer), dumpedAt, rootfsBytes, m0, signal)
      } catch (err) {
        this.failed(c, s, k, l, err)
        return null
      }
    }))
    const ok = sessions.filter((x) => x != null)
    if (ok.length === 0) {
      s.lastError = 'no standby took the generation'
      return
    }

    // 2. freeze: rootfs changes copied aside, dump, resume
    const staging = await this.port.staging(`rep-${c.name}-${k}-${crypto.randomBytes(3).toString('hex')}`)
    try {
      const imageDir = path.join(staging, 'images')
      const deltaDir = path.join(staging, 'rootfs')
      let now: TreeManifest | undefined
      let changes: ReturnType<typeof rootfsChanges> | undefined
      const frozenAt = Date.now()
      let freezeMs: number
      try {
        freezeMs = await this.port.freezeDump(c.name, imageDir, async () => {
          now = await treeManifest(c.rootfs)
          changes = rootfsChanges(ok.map((x) => x.base), now)
          await copyEntries(c.rootfs, deltaDir, changes.union)
        }, signal)
      } catch (err) {
        // The standbys staged this generation: end their sessions now, or each would stay
        // busy with it (refusing the next rounds) until its stall timeout.
        for (const x of ok) x.framed.abort(err as Error)
        throw err
      }
      s.lastFreezeMs = freezeMs
      s.intervalMs = Math.max(this.init.dumpIntervalMs, 20 * freezeMs)
      s.nextAt = started + s.intervalMs
      const images = await prepareImages(imageDir)
      s.lastImageBytes = images.bytes

      // 3. to each standby: its rootfs changes, the images, its ack
      let wire = 0
      await Promise.all(ok.map(async (x, i) => {
        try {
          const ch = changes!.perBase[i]!
          let deltaSent = false
          if (ch.changed.length > 0 || ch.deleted.length > 0) {
            const set = new Set(ch.changed)
            const stream = await this.port.dial(x.link.peer, IMAGE_PROTOCOL, signal)
            await sendTree(stream, deltaDir, { transferId: x.begin.transfers.delta!, label: 'rootfs-delta', include: (p) => set.has(p), deletes: ch.deleted, signal })
            deltaSent = true
          }
          const hashes = new Map<string, string>()
          const sent = await sendImages(x.framed, images, x.link.acked, hashes, signal, async () => {
            if (k >= 2) await testPause('replicate-partial', this.log, signal)
          })
          await x.framed.writeJson({ type: 'end', files: images.files.length, sent: { full: x.fullSent, delta: deltaSent }, dumpedAt: frozenAt }, signal)
          const reply = await x.framed.readJson(ReplySchema, AbortSignal.any([signal, AbortSignal.timeout(this.init.stallTimeoutMs ?? 60_000)]))
          if (reply.type === 'nack') throw new StandbyRefusedError(reply.reason, reply.detail)
          if (reply.type !== 'ack' || reply.generation !== k) throw new Error(`unexpected ${reply.type}`)
          x.link.ackedGeneration = k
          x.link.ackedAt = Date.now()
          x.link.ackedDumpedAt = frozenAt
          x.link.acked = hashes
          x.link.manifest = now!
          wire += sent.wireBytes
          this.init.onEvent?.({ type: 'generation', container: c.name, generation: k, standby: x.link.peer, standbyName: this.port.peerName(x.link.peer), wireBytes: sent.wireBytes, imageBytes: images.bytes, freezeMs,
            full: x.begin.base == null })
        } catch (err) {
          x.framed.abort(err as Error)
          this.failed(c, s, k, x.link, err)
        } finally {
          await x.framed.closeWrite().catch(() => {})
        }
      }))
      s.lastWireBytes = wire
      s.lastError = null
      this.retire(c, s, chosen)
    } finally {
      await this.port.removeStaging(staging).catch(() => {})
    }
  }

  /**
   * Standbys no longer chosen drop their replicas, but only once as many standbys as
   * wanted are chosen and each holds a generation (standbysToDrop): dropped at once, a
   * switch of standbys, or a cut of this node's link that makes every member look dead,
   * would leave a window in which a failover finds no replica.
   */
  private retire (c: ReplicatedContainer, s: ContainerState, chosen: string[]): void {
    const acked = new Map([...s.links].map(([peer, l]) => [peer, l.ackedGeneration]))
    for (const peer of standbysToDrop(acked, chosen, c.replicas)) {
      s.links.delete(peer)
      this.init.onEvent?.({ type: 'standby-dropped', container: c.name, standby: peer, standbyName: this.port.peerName(peer) })
      void this.drop(c.name, c.epoch, peer)
    }
  }

  /** Opens the generation with one standby: begin, ready, and the full rootfs when it has none. */
  private async open (c: ReplicatedContainer, s: ContainerState, l: Link, k: number, standbys: string[], dumpedAt: number, rootfsBytes: number, m0: TreeManifest | null,
    signal: AbortSignal): Promise<{ link: Link; framed: FramedStream; begin: Begin; base: TreeManifest; fullSent: boolean }>
  {
    const full = l.manifest == null || l.ackedGeneration == null
    const begin: Begin = {
      type: 'begin',
      v: REPLICATE_VERSION,
      container: c.name,
      epoch: c.epoch,
      generation: k,
      base: full ? null : l.ackedGeneration,
      config: c.config,
      replicas: c.replicas,
      standbys,
      dumpedAt,
      transfers: { ...(full ? { full: tid() } : {}), delta: tid() },
      estimatedBytes: (s.lastImageBytes ?? 128 * 1024 * 1024) + (full ? rootfsBytes : 0),
      ...(c.network != null ? { network: c.network } : {})
    }
    const stream = await this.port.dial(l.peer, REPLICATE_PROTOCOL, AbortSignal.any([signal, AbortSignal.timeout(10_000)]))
    const framed = new FramedStream(stream, { maxFrameBytes: MAX_REPLICATE_FRAME, idleTimeoutMs: this.init.stallTimeoutMs ?? 60_000 })
    try {
      await framed.writeJson(begin, signal)
      const r = await framed.readJson(ReplySchema, AbortSignal.any([signal, AbortSignal.timeout(30_000)]))
      if (r.type === 'nack') throw new StandbyRefusedError(r.reason, r.detail)
      if (r.type !== 'ready') throw new Error(`unexpected ${r.type}`)
      if (full) {
        const tree = await this.port.dial(l.peer, IMAGE_PROTOCOL, signal)
        await sendTree(tree, c.rootfs, { transferId: begin.transfers.full!, label: 'rootfs', signal })
      }
      return { link: l, framed, begin, base: full ? m0! : l.manifest!, fullSent: full }
    } catch (err) {
      framed.abort(err as Error)
      throw err
    }
  }

  private failed (c: ReplicatedContainer, s: ContainerState, k: number, l: Link, err: unknown): void {
    const reason = (err as Error)?.message ?? String(err)
    if (err instanceof StandbyRefusedError && LASTING_REFUSALS.has(err.reason)) s.avoid.set(l.peer, Date.now() + AVOID_REFUSER_MS)
    // Whatever it holds of ours may not match what we think: start it over.
    l.acked = null
    l.manifest = null
    l.ackedGeneration = null
    l.ackedDumpedAt = null
    this.log.warn({ container: c.name, generation: k, standby: this.port.peerName(l.peer), reason }, 'generation not taken by a standby')
    this.init.onEvent?.({ type: 'generation-failed', container: c.name, generation: k, standby: l.peer, standbyName: this.port.peerName(l.peer), reason })
  }

  /** Tells a former standby to delete its replica (best effort: a stale one is also refused at failover). */
  private async drop (name: string, epoch: number, peer: string): Promise<void> {
    try {
      const stream = await this.port.dial(peer, REPLICATE_PROTOCOL, AbortSignal.timeout(5_000))
      const framed = new FramedStream(stream, { maxFrameBytes: MAX_REPLICATE_FRAME, idleTimeoutMs: 5_000 })
      await framed.writeJson({ type: 'drop', v: REPLICATE_VERSION, container: name, epoch })
      await framed.readJson(ReplySchema, AbortSignal.timeout(5_000)).catch(() => {})
      await framed.closeWrite().catch(() => {})
    } catch (err) {
      this.log.debug({ container: name, peer, err: errText(err) }, 'could not tell a former standby to drop its replica')
    }
  }
}

function tid (): string {
  return crypto.randomBytes(12).toString('base64url')
}
