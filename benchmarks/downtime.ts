/**
 * Migration downtime as a client outside both nodes sees it, against runc by hand in the
 * same run. Three testbed hosts (network namespaces on a private bridge) with one msc
 * node each, formed by join tokens (no cluster key); an observer on h3 (the beacon
 * binary in `listen` mode, test/helpers/observer.ts) records every datagram a beacon
 * container sends, with the kernel's receive time. Per memory size (--memory, MiB):
 *
 *   msc            a beacon (src/bundles/beacon.c: N MiB of seeded memory, a datagram
 *                  `SEQ CHECKSUM PASS INCARNATION` every 5 ms) run by n1; per strategy
 *                  `msc peer migrate --to n2 --strategy S --json`, then back to n1.
 *                  `stop-copy` streams the pages to the target while CRIU dumps;
 *                  `stop-copy/after-dump` (--no-stream-pages) dumps them on the source
 *                  and sends them after the dump, the way it was done before;
 *                  `post-copy/libp2p-pages` fetches post-copy's pages over /msc/pages
 *                  instead of the page link (also --no-stream-pages).
 *   runc by hand   a second beacon (same bundle, its own observer port) run by runc
 *                  directly in h1: `runc checkpoint` to an image dir, `cp -a` of it (the
 *                  hosts share one filesystem: the copy stands for the transfer), `runc
 *                  restore --detach` from the copy in the other host; then back.
 *
 * The downtime of a hop is the longest gap between two datagrams the observer saw in the
 * hop's window, from just before the request until the checks below are done. msc's own
 * `downtimeMs` (freeze until the target reported it running) is recorded beside it.
 * Per round the units (runc by hand, then each strategy, two hops each) run in a
 * rotated order, so a machine that drifts during the run affects all of them.
 *
 * After every hop, or the benchmark stops: no sequence number twice (two copies), none
 * going back nor a new incarnation (a restart), the memory checksum of a verification
 * pass that began after the hop is the one the beacon started with, the datagrams now
 * come from the target's address only; for msc, exactly one node runs it (msc ps and
 * runc list on every node).
 *
 * Ratios: observer gap(strategy) / observer gap(runc by hand) per memory size, and msc
 * downtimeMs / observer gap (does msc's own figure match what a client sees?).
 * Everything is removed at the end, also after a failure or Ctrl-C: the runc-by-hand
 * container and its cgroups, the observers, then Cluster.destroy().
 *
 *   node benchmarks/downtime.ts [--memory 64,256] [--dirty 0] [--runs 2] [--strategies stop-copy,post-copy,stop-copy/after-dump,post-copy/libp2p-pages]
 *
 * --dirty takes pages (4 KiB) the beacon rewrites per datagram, with the same content (the
 * checksum stays): 0 leaves memory alone; 64 is 256 KiB per 5 ms, 50 MiB/s. Each memory
 * size runs with each dirty rate.
 *
 * Needs root, runc, CRIU >= 4.2 (npm run setup), gcc with static glibc, iproute2, nsenter,
 * and fs.pipe-max-size >= 16 MiB for post-copy. Only testbed addresses are used.
 */
import fs from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import type { ChildProcess } from 'node:child_process'
import { execa } from 'execa'
import { startCluster, waitFor, type Cluster, type ClusterNode } from '../test/helpers/cluster.ts'
import { removeCgroups, sleep } from '../test/helpers/node-harness.ts'
import { Observer, type ObserverReport } from '../test/helpers/observer.ts'
import type { TestHost } from '../test/testbed/testbed.ts'
import { writeBeaconBundle } from '../src/bundles/beacon.ts'
import type { ContainerInfo, MigrationResultInfo } from '../src/api/types.ts'
import { log, machineInfo, median, parseFlags, ratio, round, table, writeResults, runBenchmark, cleanupOnSignals, criuLogTail, dirBytes, unmountUnder } from './lib.ts'
import { plotAfterRun } from './plot.ts'

const USAGE = `usage: node benchmarks/downtime.ts [--memory 64,256] [--dirty 0,64] [--runs N] [--strategies stop-copy,post-copy,stop-copy/after-dump,post-copy/libp2p-pages]
  (as root; see the comment at the top of this file)
`
const STRATEGIES = ['stop-copy', 'post-copy', 'stop-copy/after-dump', 'post-copy/libp2p-pages'] as const
const MAX_MEMORY_MIB = 1024
/** 1,024 pages per 5 ms datagram: 800 MiB/s, beyond what a core rewrites here. */
const MAX_DIRTY_PAGES = 1024
const BASELINE = 'runc by hand'
/**
 * Fast membership; peers are not declared dead for a few seconds of slow heartbeats (a
 * post-copy of hundreds of MiB loads both cores, and a peer declared dead loses its
 * connections, the page stream with them).
 */
const NODE_ARGS = ['--mdns-interval', '1', '--ping-interval', '1', '--ping-timeout', '10']
const INTERVAL_MS = 5
const MSC_PORT = 9000
const RAW_PORT = 9001
/** The issue's targets for observer gap / runc by hand. */
const TARGETS = { stopCopy: 1.1, defaultAt256: 0.35 }

/** One hop as the observer and (for msc) the source node saw it. */
interface HopSample {
  method: string
  memoryMiB: number
  /** Pages the beacon rewrites per datagram (its dirty rate). */
  dirtyPagesPerTick: number
  round: number
  hop: string
  /** Longest time without a datagram in the hop's window: the downtime a client sees. */
  observerGapMs: number
  /** When that gap began, ms after the hop was requested. */
  gapStartMs: number
  /** Datagrams that never arrived in the window. */
  lost: number
  /** msc: freeze until running on the target, as the source node reports it. */
  mscDowntimeMs: number | null
  /** msc: the whole migration; by hand: checkpoint + copy + restore. */
  totalMs: number
  bytes: number
  phases: Record<string, number>
}

type Check = (ok: boolean, what: string) => void

/** Stops the benchmark with `what` when a check fails. */
const check: Check = (ok, what) => {
  if (!ok) throw new Error(`check failed: ${what}`)
}

function r1 (x: number): number {
  return round(x, 1)
}

// ---------------------------------------------------------------------------------
// what the observer saw

/**
 * Waits until the beacon, sending from `ip`, reported a verification pass that began
 * after `sinceMs` (a pass under way at `sinceMs` may have read memory from before).
 */
async function freshChecksum (obs: Observer, ip: string, sinceMs: number, memoryMiB: number): Promise<string> {
  const passAt = obs.arrivals.filter((a) => a.atMs <= sinceMs).at(-1)?.pass ?? -1
  // A pass hashes 1 MiB per datagram: memoryMiB datagrams, plus slow ticks while pages arrive.
  const timeout = 30_000 + memoryMiB * INTERVAL_MS * 6
  await waitFor(() => {
    const a = obs.last()
    return a != null && a.atMs > sinceMs && a.from === ip && a.pass >= passAt + 2
  }, timeout, () => `a full memory pass by the beacon from ${ip} after ${new Date(sinceMs).toISOString()} (last: ${JSON.stringify(obs.last())})`)
  return obs.last()!.checksum
}

/** Never two copies, never a restart, the memory the beacon started with, sent from `ip` after `sinceMs`. */
function checkClean (obs: Observer, r: ObserverReport, ip: string, sinceMs: number, checksum: string, what: string): void {
  const brief = JSON.stringify({ arrivals: r.arrivals, repeated: r.repeated.slice(0, 10), restarts: r.restarts.slice(0, 3), checksumChanges: r.checksumChanges.slice(0, 3), senders: r.senders })
  check(r.arrivals > 0, `${what}: the observer heard the beacon`)
  check(r.repeated.length === 0, `${what}: a sequence number arrived twice (two copies ran): ${brief}`)
  check(r.restarts.length === 0, `${what}: the sequence went back or a new incarnation appeared (a restart): ${brief}`)
  check(r.checksumChanges.length === 0 && r.checksums.every((c) => c === checksum), `${what}: the memory checksum changed (expected ${checksum}): ${brief}`)
  const after = obs.arrivals.filter((a) => a.atMs > sinceMs)
  const from = [...new Set(after.map((a) => a.from))]
  check(after.length > 0 && from.length === 1 && from[0] === ip, `${what}: after the hop only ${ip} sends, seen ${JSON.stringify(from)}`)
}

/** The hop's figures from the observer: longest gap, where it began, datagrams lost. */
function gapOf (r: ObserverReport, t0: number): { observerGapMs: number; gapStartMs: number; lost: number } {
  return {
    observerGapMs: r1(r.longestGapMs),
    gapStartMs: r.longestGap == null ? 0 : r1(r.longestGap.before.atMs - t0),
    lost: r.missing
  }
}

// ---------------------------------------------------------------------------------
// msc: a beacon on the nodes, migrated there and back

class MscBeacon {
  readonly c: Cluster
  readonly obs: Observer
  readonly name: string
  readonly memoryMiB: number
  readonly dirtyPagesPerTick: number
  checksum = ''

  constructor (c: Cluster, obs: Observer, w: Workload) {
    this.c = c
    this.obs = obs
    this.memoryMiB = w.memoryMiB
    this.dirtyPagesPerTick = w.dirtyPagesPerTick
    this.name = `beacon-${w.memoryMiB}-d${w.dirtyPagesPerTick}`
  }

  async start (on: ClusterNode): Promise<void> {
    const bundle = path.join(this.c.root, 'bundles', this.name)
    await writeBeaconBundle(bundle, { memoryMiB: this.memoryMiB, target: this.obs.target, intervalMs: INTERVAL_MS, dirtyPagesPerTick: this.dirtyPagesPerTick })
    const t0 = Date.now()
    const run = await this.c.msc(on, 'run', this.name, bundle)
    if (run.exitCode !== 0) throw new Error(`msc run ${this.name} on ${on.name}: ${run.stderr}`)
    this.checksum = await freshChecksum(this.obs, on.host.ip, t0, this.memoryMiB)
    checkClean(this.obs, this.obs.report(), on.host.ip, t0, this.checksum, `msc ${this.name} on ${on.name}`)
    await this.checkOnlyOn(on, 'after msc run')
  }

  async hop (from: ClusterNode, to: ClusterNode, strategy: string, round: number): Promise<HopSample> {
    const what = `msc ${strategy} ${this.name} ${from.name} -> ${to.name}, round ${round}`
    const t0 = Date.now()
    const res = await this.migrate(from, to, strategy, what)
    const t1 = Date.now()
    await this.checkOnlyOn(to, `${what}: `)
    const checksum = await freshChecksum(this.obs, to.host.ip, t1, this.memoryMiB)
    check(checksum === this.checksum, `${what}: memory checksum ${checksum} after the hop, ${this.checksum} before`)
    const seen = this.obs.report({ fromMs: t0, toMs: Date.now() })
    checkClean(this.obs, seen, to.host.ip, t1, this.checksum, what)
    await this.c.waitAllAlive(15_000)
    return {
      method: strategy,
      memoryMiB: this.memoryMiB,
      dirtyPagesPerTick: this.dirtyPagesPerTick,
      round,
      hop: `${from.name}->${to.name}`,
      ...gapOf(seen, t0),
      mscDowntimeMs: res.downtimeMs,
      totalMs: res.totalMs,
      bytes: res.bytes,
      phases: res.phases
    }
  }

  /** `msc peer migrate NAME --to TO --strategy S --json` against `from`; its result, checked. */
  private async migrate (from: ClusterNode, to: ClusterNode, variant: string, what: string): Promise<MigrationResultInfo> {
    // `stop-copy/after-dump` and `post-copy/libp2p-pages`: the pages go the way they did
    // before page connections (--no-stream-pages).
    const [strategy, how] = variant.split('/') as [string, string | undefined]
    const r = await this.c.mscTimed(from, 300_000, 'peer', 'migrate', this.name, '--to', to.name, '--strategy', strategy, ...(how != null ? ['--no-stream-pages'] : []), '--json')
    const detail = (): string => `exit ${r.exitCode}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\n${from.name} log:\n${this.c.logTail(from, 15)}\n${to.name} log:\n${this.c.logTail(to, 15)}`
    let res: MigrationResultInfo
    try {
      res = JSON.parse(r.stdout) as MigrationResultInfo
    } catch {
      throw new Error(`${what}: no JSON result: ${detail()}`)
    }
    check(r.exitCode === 0 && res.ok, `${what} failed: ${detail()}`)
    check(res.strategy === strategy, `${what}: the nodes ran ${res.strategy} instead`)
    check(res.streamedPages === (how == null), `${what}: the pages ${res.streamedPages === true ? 'crossed over a page connection' : 'went the old way'}`)
    check(res.runningOn === to.peerId, `${what}: the result says it runs on ${res.runningOn}, not ${to.peerId}`)
    return res
  }

  /** Exactly one copy: `owner` runs it (msc ps and runc list), no other node has it in either. */
  private async checkOnlyOn (owner: ClusterNode, what: string): Promise<void> {
    for (const x of this.c.nodes) {
      const ps = (await this.c.json<ContainerInfo[]>(x, 'ps')).filter((e) => e.name === this.name).map((e) => e.state)
      const rl = (await this.c.runcList(x)).filter((e) => e.id === this.name).map((e) => e.status)
      const want = x === owner ? ['running'] : []
      check(JSON.stringify(ps) === JSON.stringify(want), `${what}${x.name}: msc ps lists ${this.name} as ${JSON.stringify(ps)}, expected ${JSON.stringify(want)}`)
      check(JSON.stringify(rl) === JSON.stringify(want), `${what}${x.name}: runc lists ${this.name} as ${JSON.stringify(rl)}, expected ${JSON.stringify(want)}`)
    }
  }

  async remove (on: ClusterNode): Promise<void> {
    const r = await this.c.msc(on, 'rm', this.name, '--force')
    if (r.exitCode !== 0) throw new Error(`msc rm ${this.name} on ${on.name}: ${r.stderr}`)
  }
}

// ---------------------------------------------------------------------------------
// runc by hand: the same beacon, checkpointed in one host and restored in another

class HandBeacon {
  readonly c: Cluster
  readonly obs: Observer
  readonly runc: string
  readonly criu: string
  readonly memoryMiB: number
  readonly dirtyPagesPerTick: number
  readonly id: string
  readonly dir: string
  readonly root: string
  readonly bundle: string
  readonly cgroupParent: string
  checksum = ''
  /** The shells holding the container's output pipes (they end with the container). */
  private readonly shells: ChildProcess[] = []
  private started = false

  constructor (c: Cluster, obs: Observer, runc: string, criu: string, w: Workload) {
    this.c = c
    this.obs = obs
    this.runc = runc
    this.criu = criu
    this.memoryMiB = w.memoryMiB
    this.dirtyPagesPerTick = w.dirtyPagesPerTick
    this.id = `beacon-hand-${w.memoryMiB}-d${w.dirtyPagesPerTick}`
    this.dir = path.join(c.root, 'hand', this.id)
    this.root = path.join(this.dir, 'runc')
    this.bundle = path.join(this.dir, 'bundle')
    this.cgroupParent = `msc-bench-dt-${randomBytes(3).toString('hex')}`
  }

  private g (): string[] {
    return ['--root', this.root, '--criu', this.criu]
  }

  /**
   * A detaching runc command (run -d / restore -d) inside `host`. The container's stdout
   * and stderr must be real pipes (CRIU cannot dump Node's socketpairs), so a shell
   * pipes them into `cat >/dev/null` and reports runc's exit status on fd 3, which
   * neither runc nor the container keeps.
   */
  private async detached (host: TestHost, args: string[], logFile: string): Promise<void> {
    const runcLog = path.join(this.dir, 'runc-log.json')
    await fs.rm(runcLog, { force: true })
    const script = '{ "$@" 3>&-; echo "$?" >&3; } 2>&1 </dev/null | cat >/dev/null 3>&-'
    const child = await this.c.tb.spawn(host, '/bin/sh', ['-c', script, 'hand-runc', this.runc, '--log', runcLog, '--log-format', 'json', ...this.g(), ...args], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] })
    this.shells.push(child)
    const code = await exitStatusOn(child.stdio[3] as NodeJS.ReadableStream & { destroy: () => void }, `runc ${args[0]}`)
    if (code !== 0) {
      const msgs = (await fs.readFile(runcLog, 'utf8').catch(() => '')).split('\n').filter((l) => l.includes('"error"')).join('\n')
      throw new Error(`runc ${args[0]} ${this.id} failed (${code}): ${msgs}\n${criuLogTail(logFile)}`)
    }
  }

  async start (host: TestHost): Promise<void> {
    await writeBeaconBundle(this.bundle, { memoryMiB: this.memoryMiB, target: this.obs.target, intervalMs: INTERVAL_MS, dirtyPagesPerTick: this.dirtyPagesPerTick })
    const cfgFile = path.join(this.bundle, 'config.json')
    const cfg = JSON.parse(await fs.readFile(cfgFile, 'utf8')) as { linux?: Record<string, unknown>; process?: Record<string, unknown> }
    cfg.linux = { ...cfg.linux, cgroupsPath: `/${this.cgroupParent}/${this.id}` }
    cfg.process = { ...cfg.process, terminal: false }
    await fs.writeFile(cfgFile, JSON.stringify(cfg, null, 2))
    await fs.mkdir(this.root, { recursive: true })
    this.started = true
    const t0 = Date.now()
    await this.detached(host, ['run', '--detach', '--bundle', this.bundle, this.id], '')
    this.checksum = await freshChecksum(this.obs, host.ip, t0, this.memoryMiB)
    checkClean(this.obs, this.obs.report(), host.ip, t0, this.checksum, `${this.id} on ${host.name}`)
  }

  /** checkpoint in `from`, `cp -a` of the images, restore from the copy in `to`. */
  async hop (from: TestHost, to: TestHost, round: number): Promise<HopSample> {
    const what = `${BASELINE} ${this.id} ${from.name} -> ${to.name}, round ${round}`
    const img = path.join(this.dir, `images-${round}-${from.name}`)
    const copy = `${img}-copy`
    const work = path.join(this.dir, `work-${round}-${to.name}`)
    await fs.mkdir(img, { recursive: true })
    await fs.mkdir(work, { recursive: true })
    const t0 = Date.now()
    const ck = await this.c.tb.exec(from, this.runc, [...this.g(), 'checkpoint', '--image-path', img, '--work-path', img, this.id], { timeout: 300_000 })
    const t1 = Date.now()
    if (ck.exitCode !== 0) throw new Error(`${what}: runc checkpoint failed (${ck.exitCode}): ${ck.stderr.trim()}\n${criuLogTail(path.join(img, 'dump.log'))}`)
    const cp = await execa('cp', ['-a', img, copy], { reject: false })
    if (cp.exitCode !== 0) throw new Error(`${what}: cp -a ${img} ${copy}: ${String(cp.stderr)}`)
    const t2 = Date.now()
    await this.detached(to, ['restore', '--detach', '--image-path', copy, '--work-path', work, '--bundle', this.bundle, this.id], path.join(work, 'restore.log'))
    const t3 = Date.now()
    const bytes = await dirBytes(img)
    const checksum = await freshChecksum(this.obs, to.ip, t3, this.memoryMiB)
    check(checksum === this.checksum, `${what}: memory checksum ${checksum} after the hop, ${this.checksum} before`)
    const seen = this.obs.report({ fromMs: t0, toMs: Date.now() })
    checkClean(this.obs, seen, to.ip, t3, this.checksum, what)
    await execa('rm', ['-rf', '--one-file-system', img, copy, work], { reject: false })
    return {
      method: BASELINE,
      memoryMiB: this.memoryMiB,
      dirtyPagesPerTick: this.dirtyPagesPerTick,
      round,
      hop: `${from.name}->${to.name}`,
      ...gapOf(seen, t0),
      mscDowntimeMs: null,
      totalMs: t3 - t0,
      bytes,
      phases: { checkpoint: t1 - t0, copy: t2 - t1, restore: t3 - t2 }
    }
  }

  async destroy (): Promise<void> {
    if (!this.started) return
    this.started = false
    await execa(this.runc, ['--root', this.root, 'kill', '--all', this.id, 'KILL'], { reject: false })
    await sleep(200)
    await unmountUnder(path.join(this.root, this.id))
    await unmountUnder(this.dir)
    await execa(this.runc, ['--root', this.root, 'delete', '--force', this.id], { reject: false })
    for (const sh of this.shells) if (sh.exitCode == null && sh.signalCode == null) sh.kill('SIGKILL')
    await removeCgroups(this.cgroupParent)
    await execa('rm', ['-rf', '--one-file-system', this.dir], { reject: false })
  }
}

/** The exit status a detached runc's shell writes on its status pipe (one line). */
async function exitStatusOn (status: NodeJS.ReadableStream & { destroy: () => void }, what: string): Promise<number> {
  let out = ''
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what} did not return within 300 s`)), 300_000)
      status.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('\n')) {
          clearTimeout(timer)
          resolve(Number.parseInt(out.trim(), 10))
        }
      })
      status.on('end', () => {
        clearTimeout(timer)
        reject(new Error(`${what} ended without an exit status`))
      })
    })
  } finally {
    status.destroy()
  }
}

// ---------------------------------------------------------------------------------
// the cluster: three nodes formed by join tokens, no cluster key

async function startTokenCluster (): Promise<Cluster> {
  const c = await startCluster({ hosts: 3, args: NODE_ARGS, formation: 'none', start: false })
  try {
    await c.start(c.node('n1'))
    for (const name of ['n2', 'n3']) {
      const t = await c.msc(c.node('n1'), 'cluster', 'token')
      if (t.exitCode !== 0) throw new Error(`msc cluster token on n1: ${t.stderr}`)
      await c.start(c.node(name), [...NODE_ARGS, '--join', t.stdout.trim()])
    }
    await c.waitAllAlive(30_000)
  } catch (err) {
    await c.destroy().catch(() => {})
    throw err
  }
  return c
}

// ---------------------------------------------------------------------------------
// one workload (memory size and dirty rate): both beacons, the rounds, then both removed

/** What the beacon does: its memory and how fast it rewrites it. */
interface Workload {
  memoryMiB: number
  dirtyPagesPerTick: number
}

/** The beacon's dirty rate in MiB/s: pages of 4 KiB per datagram, a datagram per INTERVAL_MS. */
function dirtyMiBps (dirtyPagesPerTick: number): number {
  return r1((dirtyPagesPerTick * 4096 * (1000 / INTERVAL_MS)) / (1024 * 1024))
}

function workloadLabel (w: Workload): string {
  return w.dirtyPagesPerTick === 0 ? `${w.memoryMiB} MiB` : `${w.memoryMiB} MiB dirtied at ${dirtyMiBps(w.dirtyPagesPerTick)} MiB/s`
}

function sameWorkload (a: Workload, b: Workload): boolean {
  return a.memoryMiB === b.memoryMiB && a.dirtyPagesPerTick === b.dirtyPagesPerTick
}

interface SizeRun {
  samples: HopSample[]
}

/** The units of a round (each two hops, there and back), rotated by the round number. */
function roundOrder (strategies: string[], round: number): string[] {
  const units = [BASELINE, ...strategies]
  const k = (round - 1) % units.length
  return [...units.slice(k), ...units.slice(0, k)]
}

async function runWorkload (c: Cluster, status: { runc: string; criu: string }, w: Workload, runs: number, strategies: string[], track: (b: HandBeacon | null) => void): Promise<SizeRun> {
  const n1 = c.node('n1')
  const n2 = c.node('n2')
  const h3 = c.node('n3').host
  const samples: HopSample[] = []
  const mscObs = await Observer.start(c.tb, h3, { port: MSC_PORT })
  const handObs = await Observer.start(c.tb, h3, { port: RAW_PORT })
  const hand = new HandBeacon(c, handObs, status.runc, status.criu, w)
  track(hand)
  const beacon = new MscBeacon(c, mscObs, w)
  const label = workloadLabel(w)
  try {
    log(`${label}: a beacon on n1 (msc) and one run by runc by hand in h1`)
    await beacon.start(n1)
    await hand.start(n1.host)
    for (let r = 1; r <= runs; r++) {
      for (const unit of roundOrder(strategies, r)) {
        for (const [from, to] of [[n1, n2], [n2, n1]] as const) {
          const s = unit === BASELINE ? await hand.hop(from.host, to.host, r) : await beacon.hop(from, to, unit, r)
          samples.push(s)
          log(`${label} round ${r}: ${unit} ${s.hop}: observer gap ${s.observerGapMs} ms` +
            `${s.mscDowntimeMs == null ? '' : `, msc downtimeMs ${s.mscDowntimeMs}`}, total ${s.totalMs} ms, ${r1(s.bytes / 1e6)} MB, ${s.lost} lost`)
          await sleep(300)
        }
      }
    }
    await beacon.remove(n1)
  } finally {
    await hand.destroy()
    track(null)
    await mscObs.stop()
    await handObs.stop()
  }
  return { samples }
}

// ---------------------------------------------------------------------------------
// summary

function methodSummary (samples: HopSample[], w: Workload, method: string) {
  const ss = samples.filter((s) => sameWorkload(s, w) && s.method === method)
  const phaseNames = [...new Set(ss.flatMap((s) => Object.keys(s.phases)))]
  const gaps = ss.map((s) => s.observerGapMs)
  const msc = ss.flatMap((s) => s.mscDowntimeMs == null ? [] : [s.mscDowntimeMs])
  return {
    memoryMiB: w.memoryMiB,
    dirtyPagesPerTick: w.dirtyPagesPerTick,
    dirtyMiBps: dirtyMiBps(w.dirtyPagesPerTick),
    method,
    samples: ss.length,
    observerGapMs: r1(median(gaps)),
    observerGapMinMs: Math.min(...gaps),
    observerGapMaxMs: Math.max(...gaps),
    mscDowntimeMs: msc.length === 0 ? null : r1(median(msc)),
    /** Median over the hops of msc downtimeMs / observer gap. */
    mscOverObserver: msc.length === 0 ? null : ratio(median(ss.map((s) => s.mscDowntimeMs! / s.observerGapMs)), 1),
    totalMs: r1(median(ss.map((s) => s.totalMs))),
    MB: r1(median(ss.map((s) => s.bytes)) / 1e6),
    lost: median(ss.map((s) => s.lost)),
    phasesMs: Object.fromEntries(phaseNames.map((p) => [p, r1(median(ss.map((s) => s.phases[p] ?? 0)))]))
  }
}

type MethodSummary = ReturnType<typeof methodSummary>

/** The issue's target for a strategy at a workload, if it has one (they are set for an idle beacon). */
function targetOf (strategy: string, w: Workload): number | null {
  if (w.dirtyPagesPerTick !== 0) return null
  if (strategy === 'stop-copy') return TARGETS.stopCopy
  // 'auto' picks post-copy when both nodes support it (src/migration/messages.ts).
  if (strategy === 'post-copy' && w.memoryMiB === 256) return TARGETS.defaultAt256
  return null
}

function ratiosOf (summary: MethodSummary[], workloads: Workload[], strategies: string[]) {
  return workloads.flatMap((w) => {
    const base = summary.find((s) => sameWorkload(s, w) && s.method === BASELINE)
    return strategies.map((st) => {
      const s = summary.find((x) => sameWorkload(x, w) && x.method === st)
      const gapRatio = ratio(s?.observerGapMs, base?.observerGapMs)
      const target = targetOf(st, w)
      return {
        memoryMiB: w.memoryMiB,
        dirtyMiBps: dirtyMiBps(w.dirtyPagesPerTick),
        strategy: st,
        'observer gap / runc by hand': gapRatio,
        target: target == null ? null : `<= ${target}`,
        meets: target == null ? null : gapRatio <= target ? 'yes' : 'no',
        'msc downtimeMs / observer gap': s?.mscOverObserver ?? null
      }
    })
  })
}

function toCsv (samples: HopSample[]): string {
  const phaseNames = [...new Set(samples.flatMap((s) => Object.keys(s.phases)))]
  const cols = ['memoryMiB', 'dirtyPagesPerTick', 'method', 'round', 'hop', 'observerGapMs', 'gapStartMs', 'lost', 'mscDowntimeMs', 'totalMs', 'bytes', ...phaseNames.map((p) => `phase:${p}`)]
  const rows = samples.map((s) => {
    const rec: Record<string, unknown> = { ...s }
    return cols.map((c) => c.startsWith('phase:') ? s.phases[c.slice(6)] ?? '' : rec[c] ?? '').join(',')
  })
  return [cols.join(','), ...rows].join('\n') + '\n'
}

function printTables (ratios: ReturnType<typeof ratiosOf>, summary: MethodSummary[]): void {
  process.stdout.write('\nratios (observer gap / runc by hand: < 1, msc is down for less than runc by hand):\n')
  process.stdout.write(table(ratios))
  process.stdout.write('\ndowntime seen by the observer, per memory size (medians):\n')
  process.stdout.write(table(summary.map((s) => ({
    MiB: s.memoryMiB,
    'dirty MiB/s': s.dirtyMiBps,
    method: s.method,
    hops: s.samples,
    'observer gap ms': s.observerGapMs,
    'min-max': `${s.observerGapMinMs}-${s.observerGapMaxMs}`,
    'msc downtimeMs': s.mscDowntimeMs,
    'total ms': s.totalMs,
    MB: s.MB,
    lost: s.lost,
    phases: Object.entries(s.phasesMs).map(([k, v]) => `${k} ${v}`).join(', ')
  }))))
}

// ---------------------------------------------------------------------------------

function parseOptions () {
  const o = parseFlags(process.argv.slice(2), { memory: '64,256', dirty: '0', runs: 2, strategies: STRATEGIES.join(',') }, USAGE)
  const strategies = o.strategies.split(',').map((s) => s.trim()).filter(Boolean)
  for (const s of strategies) if (!(STRATEGIES as readonly string[]).includes(s)) throw new Error(`unknown strategy ${s} (${STRATEGIES.join(', ')})`)
  const memory = o.memory.split(',').map((s) => Number(s.trim()))
  for (const m of memory) if (!Number.isInteger(m) || m < 1 || m > MAX_MEMORY_MIB) throw new Error(`--memory takes MiB from 1 to ${MAX_MEMORY_MIB}, got ${m}`)
  const dirty = o.dirty.split(',').map((s) => Number(s.trim()))
  for (const d of dirty) if (!Number.isInteger(d) || d < 0 || d > MAX_DIRTY_PAGES) throw new Error(`--dirty takes pages per datagram from 0 to ${MAX_DIRTY_PAGES}, got ${d}`)
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error('--runs must be a positive integer')
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark builds a testbed (network namespaces) and runs runc/CRIU')
  if (strategies.includes('post-copy')) {
    const pipeMax = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim())
    if (pipeMax < 16 * 1024 * 1024) throw new Error(`post-copy needs fs.pipe-max-size >= 16777216 (it is ${pipeMax}), or pass --strategies stop-copy`)
  }
  const workloads = memory.flatMap((memoryMiB) => dirty.map((dirtyPagesPerTick) => ({ memoryMiB, dirtyPagesPerTick })))
  return { options: o, strategies, workloads }
}

async function main (): Promise<void> {
  const { options, strategies, workloads } = parseOptions()
  const machine = machineInfo()

  let c: Cluster | undefined
  let hand: HandBeacon | null = null
  let cleaning: Promise<void> | undefined
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      log('cleaning up')
      await hand?.destroy().catch((err) => log(`runc-by-hand cleanup: ${(err as Error).message}`))
      await c?.destroy().catch((err) => log(`cluster cleanup: ${(err as Error).message}`))
    })()
    await cleaning
  }
  const offSignals = cleanupOnSignals(cleanup)

  try {
    log('starting a testbed with three nodes (join tokens, no cluster key)')
    c = await startTokenCluster()
    const status = await c.statusApi(c.node('n1'))
    log(`n1 ${c.node('n1').host.ip}, n2 ${c.node('n2').host.ip}, observer on ${c.node('n3').host.ip}; runc ${status.runc}, criu ${status.criu}`)

    const samples: HopSample[] = []
    for (const w of workloads) {
      const run = await runWorkload(c, status, w, options.runs, strategies, (b) => {
        hand = b
      })
      samples.push(...run.samples)
    }
    machine.loadEnd = os.loadavg().map((x) => round(x, 2))

    const summary = workloads.flatMap((w) => [BASELINE, ...strategies].map((method) => methodSummary(samples, w, method)))
    const ratios = ratiosOf(summary, workloads, strategies)
    const file = await writeResults('downtime', {
      benchmark: 'downtime',
      machine,
      options: { ...options, intervalMs: INTERVAL_MS },
      status: { runc: status.runc, criu: status.criu, version: status.version },
      targets: TARGETS,
      ratios,
      summary,
      samples
    })
    await fs.writeFile(file.replace(/\.json$/, '.csv'), toCsv(samples))
    process.stdout.write(`\nbeacon (datagram every ${INTERVAL_MS} ms), ${workloads.map(workloadLabel).join('; ')}, medians of ${options.runs} rounds x 2 hops per method; ` +
      `${machine.cpus} cpus, load ${machine.loadStart.join('/')} -> ${machine.loadEnd.join('/')}\n`)
    printTables(ratios, summary)
    process.stdout.write(`\nresults: ${file}\n         ${file.replace(/\.json$/, '.csv')}\n`)
    await plotAfterRun(file)
  } finally {
    await cleanup()
    offSignals()
  }
}

await runBenchmark('downtime', main)
