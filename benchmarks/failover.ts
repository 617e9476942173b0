/**
 * Failover and continuous replication, measured from outside the nodes of a Testbed
 * cluster (three network-namespace hosts, one msc node each: test/helpers/cluster.ts),
 * each figure against its target or a baseline taken in the same run, as a ratio:
 *
 *   rto       a counter (busybox, one number every 100 ms) run with --replicas 1; once
 *             two generations are acknowledged and a random part of an interval has
 *             passed, its host is power-cut (c.tb.kill). RTO = from the kill until the
 *             counter's output appears on its new node (its log file, polled every
 *             50 ms); RPO = (last value printed before the kill - first value printed
 *             after) x 100 ms. Targets: RTO <= lease + restore time (the `failover`
 *             event's ms) + 1 s; RPO <= effective interval (intervalMs) + one round
 *             (dump to acknowledgement of the last acknowledged generation).
 *   overhead  redis with --keys keys; redis-benchmark (SET, GET, 50 clients) against it
 *             for --bench-seconds with replication off (--replicas 0) and on
 *             (--replicas 1), alternating, 3 rounds each: requests/s on / off. Also how
 *             many generations were acknowledged during the ON runs, how many dumps
 *             and generations failed, and the error lines of CRIU's dump logs.
 *   bytes     redis with --big-keys keys; its first (full) generation, taken with no
 *             client, is the baseline. Then 1% of the keys rewritten per DUMP_INTERVAL
 *             (5 s here) in pipelined batches every 100 ms over short connections, until
 *             2 more generations are acknowledged: wire bytes of the last round against
 *             the image size and the full generation's wire bytes. If that load lets no
 *             round through within a few intervals (before CRIU skipped connections
 *             still in redis's accept queue, most dumps failed with "In-flight
 *             connection"), this is reported, and the round is measured with the same
 *             write rate applied as one burst right after each acknowledgement.
 * The overhead and bytes parts run with a 10 s lease (ping timeout), the RTO part with
 * the issue's 3 s: the lease enters no figure of theirs, and on the loaded shared
 * machine 3 s leases made owners fence their own redis mid-measurement.
 *
 * Nothing about time is asserted, but a measurement that did not work stops the
 * benchmark: a counter that did not come back, came back twice, restarted from 1 or
 * lost its sequence; redis that lost keys. Everything is removed at the end, also after
 * a failure or Ctrl-C (Cluster.destroy(): nodes, containers, testbed, temp dirs).
 *
 *   node benchmarks/failover.ts [--trials 5] [--keys 100000] [--big-keys 1000000]
 *        [--bench-seconds 20] [--parts rto,overhead,bytes]
 *
 * Needs root, runc, CRIU >= 4.2 (npm run setup), redis-server, redis-cli and
 * redis-benchmark (redis-tools), iproute2, nsenter, iptables/ebtables. Only testbed
 * addresses (10.213.X.0/24) are used.
 */
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { execa } from 'execa'
import { logValues, startCluster, waitFor, type Cluster, type ClusterNode } from '../test/helpers/cluster.ts'
import { MSC, sleep } from '../test/helpers/node-harness.ts'
import { ControlClient, ndjsonLines } from '../src/api/client.ts'
import type { ContainerInfo, NodeEvent, ReplicationInfo } from '../src/api/types.ts'
import { ROOT, log, machineInfo, median, parseFlags, ratio, round, table, writeResults, untilPong, runBenchmark, cleanupOnSignals } from './lib.ts'
import { plotAfterRun } from './plot.ts'
import { REDIS_BENCHMARK, REDIS_CLI } from '../src/bundles/redis.ts'

const USAGE = `usage: node benchmarks/failover.ts [--trials N] [--keys N] [--big-keys N] [--bench-seconds S] [--parts rto,overhead,bytes]
  (as root; see the comment at the top of this file)
`
const PARTS = ['rto', 'overhead', 'bytes'] as const
const COUNTER_MS = 100
/** Ping timeout, and so the lease, of the RTO part (the issue's configuration). */
const PING_TIMEOUT_S = 3
/**
 * Ping timeout (= lease) of the overhead and bytes parts, where the lease enters no
 * figure: with 3 s, owners on the loaded shared machine missed renewals and fenced
 * their own redis (self-fencing) in the middle of a measurement.
 */
const PING_TIMEOUT_S_LOAD = 10
/** The configuration of the issue's RTO/RPO targets: lease = ping timeout = 3 s, DUMP_INTERVAL 1 s. */
const DUMP_S_RTO = 1
/** DUMP_INTERVAL of the bytes-per-round part. */
const DUMP_S_BYTES = 5
const nodeArgs = (dumpS: number, pingTimeoutS: number): string[] => ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', String(pingTimeoutS), '--dump-interval', String(dumpS)]
const PART_ARGS: Record<typeof PARTS[number], string[]> = {
  rto: nodeArgs(DUMP_S_RTO, PING_TIMEOUT_S),
  overhead: nodeArgs(DUMP_S_RTO, PING_TIMEOUT_S_LOAD),
  bytes: nodeArgs(DUMP_S_BYTES, PING_TIMEOUT_S_LOAD)
}

/** Restarts the nodes (same data dirs) when they run with other arguments than `args`. */
async function nodesWith (c: Cluster, args: string[]): Promise<void> {
  if (c.nodes.every((x) => JSON.stringify(x.args) === JSON.stringify(args))) return
  log(`restarting the nodes with ${args.join(' ')}`)
  await c.stopAll()
  // One at a time: three Node start-ups at once can take over 30 s on a loaded 2-core machine.
  for (const x of c.nodes) await c.start(x, args)
  await c.waitAllAlive(60_000)
}
const OVERHEAD_PORT = 6393
const BYTES_PORT = 6394
const OVERHEAD_ROUNDS = 3

// ---------------------------------------------------------------------------------
// the nodes' API (a unix socket: ~1 ms a call, no CLI start-up in polling loops)

function api (node: ClusterNode): ControlClient {
  return new ControlClient(path.join(node.dataDir, 'msc.sock'))
}

async function inspect (node: ClusterNode, name: string): Promise<ContainerInfo | null> {
  return await api(node).inspect(name).catch(() => null)
}

/** What `msc events --json --no-follow` prints, parsed. */
async function events (node: ClusterNode): Promise<NodeEvent[]> {
  const res = await api(node).events(false)
  const out: NodeEvent[] = []
  for await (const line of ndjsonLines(res)) out.push(JSON.parse(line) as NodeEvent)
  return out
}

/** The `generation` events of `name` on its owner: one per generation a standby acknowledged. */
async function acks (owner: ClusterNode, name: string): Promise<NodeEvent[]> {
  return (await events(owner)).filter((e) => e.container === name && e.type === 'generation')
}

/**
 * Polls the owner until a standby acknowledged `gens` generations of `name` (counted by
 * its events: generation numbers also count rounds that failed). Throws at once when
 * the container stopped running there (e.g. its lease ran out and it fenced itself).
 */
async function acked (c: Cluster, owner: ClusterNode, name: string, gens: number, timeoutMs: number): Promise<ContainerInfo> {
  let info: ContainerInfo | null = null
  await waitFor(async () => {
    info = await inspect(owner, name)
    if (info != null && ((info.state !== 'running' && info.state !== 'paused') || info.leaseLost != null)) {
      throw new Error(`${name} no longer runs on ${owner.name} (state ${info.state}${info.leaseLost != null ? ', its lease ran out: it fenced itself' : ''}) ` +
        `while waiting for ${gens} acknowledged generations\n${c.logTail(owner, 10)}`)
    }
    // ackedGeneration >= the number of acknowledged generations: only then count them.
    return (info?.replication?.ackedGeneration ?? 0) >= gens && (await acks(owner, name)).length >= gens
  }, timeoutMs, () => `${name} on ${owner.name}: ${gens} generations acknowledged (replication: ${JSON.stringify(info?.replication)})\n${c.logTail(owner, 15)}`)
  return info!
}

/**
 * Keeps CRIU's dump.log of every replication round of `name` on `node`: the node removes
 * a round's staging dir right after it, so each log is hard-linked aside as soon as it
 * appears (CRIU goes on writing the same file). stop() returns the distinct error lines.
 */
function keepDumpLogs (c: Cluster, node: ClusterNode, name: string): { stop: () => Promise<{ rounds: number; errors: string[] }> } {
  const staging = path.join(node.dataDir, 'tmp')
  const keep = path.join(c.root, 'dump-logs', `${node.name}-${name}`)
  const seen = new Set<string>()
  let on = true
  const loop = (async () => {
    await fs.mkdir(keep, { recursive: true })
    while (on) {
      for (const d of await fs.readdir(staging).catch(() => [] as string[])) {
        if (!d.startsWith(`rep-${name}-`) || seen.has(d)) continue
        if (await fs.link(path.join(staging, d, 'images', 'dump.log'), path.join(keep, `${d}.log`)).then(() => true, () => false)) seen.add(d)
      }
      await sleep(100)
    }
  })()
  return {
    stop: async () => {
      on = false
      await loop
      const errors = new Set<string>()
      for (const f of await fs.readdir(keep).catch(() => [] as string[])) {
        const text = await fs.readFile(path.join(keep, f), 'utf8').catch(() => '')
        for (const l of text.split('\n')) if (/Error \(/.test(l)) errors.add(l.replace(/^\(\s*[\d.]+\)\s*/, '').trim().slice(0, 200))
      }
      await fs.rm(keep, { recursive: true, force: true })
      return { rounds: seen.size, errors: [...errors].slice(0, 6) }
    }
  }
}

/** Nodes whose runc runs (or has paused) `name`: where a copy really is. */
async function runningOn (c: Cluster, name: string, nodes: ClusterNode[]): Promise<string[]> {
  const out: string[] = []
  for (const x of nodes) {
    const list = await c.runcList(x)
    if (list.some((e) => e.id === name && (e.status === 'running' || e.status === 'paused'))) out.push(x.name)
  }
  return out
}

/**
 * Starts again every node whose daemon exited on its own; returns what each one said
 * last (its log's lines that are not JSON: a crash's stack trace).
 */
async function reviveDead (c: Cluster): Promise<string[]> {
  const out: string[] = []
  for (const x of c.nodes) {
    if (x.proc == null || (x.proc.exitCode == null && x.proc.signalCode == null)) continue
    const said = c.logTail(x, 200).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{')).slice(0, 4).join(' / ')
    out.push(`${x.name}'s daemon had exited (${x.proc.exitCode ?? x.proc.signalCode}): ${said.slice(0, 500)}; restarted`)
    await c.start(x)
  }
  return out
}

async function bundle (kind: 'counter' | 'redis', dir: string, ...args: string[]): Promise<string> {
  const b = await execa(MSC, ['bundle', kind, dir, ...args], { reject: false })
  if (b.exitCode !== 0) throw new Error(`msc bundle ${kind}: ${String(b.stderr)}`)
  return dir
}

async function run (c: Cluster, node: ClusterNode, name: string, dir: string, replicas: number): Promise<void> {
  try {
    await api(node).run(name, dir, replicas)
  } catch (err) {
    throw new Error(`msc run ${name} --replicas ${replicas} on ${node.name}: ${(err as Error).message}\n${c.logTail(node, 15)}`)
  }
}

function r1 (x: number): number {
  return round(x, 1)
}
function r0 (x: number): number {
  return Math.round(x)
}
function isoMs (s: string | null | undefined): number | null {
  return s == null ? null : Date.parse(s)
}

// ---------------------------------------------------------------------------------
// redis over the testbed's addresses

async function populate (ip: string, port: number, keys: number): Promise<void> {
  const r = await execa(path.join(ROOT, 'demos', 'populate-redis.sh'), ['-h', ip, '-p', String(port), String(keys)], { reject: false, timeout: 600_000 })
  if (String(r.stdout).trim() !== String(keys)) throw new Error(`populating ${ip}:${port} with ${keys} keys: DBSIZE ${String(r.stdout).trim()}: ${String(r.stderr).slice(-500)}`)
}

/**
 * The preloaded keys are there: DBSIZE is `size` (or at least `keys` when null), and GET
 * of key 1, key `keys` and 50 random keys returns the key itself or a value `ok` accepts.
 */
async function verifyRedis (ip: string, port: number, keys: number, size: number | null, what: string, ok: (k: number, v: string) => boolean = () => false): Promise<void> {
  const r0 = await execa(REDIS_CLI, ['-h', ip, '-p', String(port), 'DBSIZE'], { reject: false, timeout: 20_000 })
  const got = Number(String(r0.stdout).trim())
  if (!Number.isInteger(got) || (size != null ? got !== size : got < keys)) {
    throw new Error(`${what}: DBSIZE at ${ip}:${port} is ${JSON.stringify(String(r0.stdout).trim())} (${String(r0.stderr).trim()}), expected ${size ?? `>= ${keys}`}: keys lost`)
  }
  const sample = [1, keys, ...Array.from({ length: 50 }, () => 1 + Math.floor(Math.random() * keys))]
  const r = await execa(REDIS_CLI, ['-h', ip, '-p', String(port)], { input: sample.map((k) => `GET ${k}`).join('\n') + '\n', reject: false, timeout: 20_000 })
  const vals = String(r.stdout).split('\n')
  const bad = sample.findIndex((k, i) => vals[i] !== String(k) && !ok(k, vals[i] ?? ''))
  if (r.exitCode !== 0 || bad >= 0) throw new Error(`${what}: GET ${sample[bad]} at ${ip}:${port} gave ${JSON.stringify(vals[bad])}: a key lost`)
}

function resp (args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
}

/** SET of each key to `value` in one pipelined batch over a fresh connection, closed after; resolves with the +OKs received. */
async function writeBatch (ip: string, port: number, keys: number[], value: string, timeoutMs: number): Promise<number> {
  return await new Promise<number>((resolve) => {
    const s = net.connect({ host: ip, port })
    let buf = ''
    let ok = 0
    const done = (): void => {
      clearTimeout(t)
      s.destroy()
      resolve(ok)
    }
    const t = setTimeout(done, timeoutMs)
    s.on('connect', () => s.write(keys.map((k) => resp(['SET', String(k), value])).join('')))
    s.on('data', (d) => {
      buf += d.toString()
      const lines = buf.split('\r\n')
      buf = lines.pop()!
      ok += lines.filter((l) => l === '+OK').length
      if (ok >= keys.length) done()
    })
    s.on('error', done)
    s.on('close', done)
  })
}

interface BenchRun {
  setRps: number
  getRps: number
  rps: number
  requests: number
  seconds: number
}

/** redis-benchmark -t set,get -n N -r KEYS --csv from the root namespace (50 clients, kept alive). */
async function redisBenchmark (ip: string, port: number, n: number, keyspace: number, timeoutMs: number): Promise<BenchRun> {
  const t0 = performance.now()
  const r = await execa(REDIS_BENCHMARK, ['-h', ip, '-p', String(port), '-t', 'set,get', '-n', String(n), '-r', String(keyspace), '--csv'], { reject: false, timeout: timeoutMs })
  const seconds = (performance.now() - t0) / 1000
  const rps = (test: string): number => {
    const line = String(r.stdout).split('\n').find((l) => l.startsWith(`"${test}"`))
    const v = Number(line?.split(',')[1]?.replace(/"/g, ''))
    if (r.exitCode !== 0 || !Number.isFinite(v) || v <= 0) throw new Error(`redis-benchmark against ${ip}:${port} (exit ${r.exitCode}): no ${test} rate in ${JSON.stringify(String(r.stdout))} ${String(r.stderr).slice(-300)}`)
    return v
  }
  const setRps = rps('SET')
  const getRps = rps('GET')
  // Both tests did n requests: overall rate = 2n / (time of SET + time of GET).
  return { setRps: r0(setRps), getRps: r0(getRps), rps: r0(2 * n / (n / setRps + n / getRps)), requests: 2 * n, seconds: r1(seconds) }
}

// ---------------------------------------------------------------------------------
// 1. RTO and RPO of a counter

interface RtoSample {
  trial: number
  owner: string
  standby: string
  restoredOn: string
  /** Generation the standby restored, and the owner's acknowledged one at the kill. */
  generation: number
  ackedAtKill: number
  intervalMs: number
  /** Owner's last freeze, and the freezes of every generation it reported (events). */
  freezeMs: number
  freezesMs: number[]
  /** Dump to acknowledgement of the generation acknowledged at the kill. */
  roundMs: number
  /** The owner's own rpoMs (age of the acknowledged generation) just before the kill. */
  nodeRpoMs: number
  /** Random wait after the second acknowledgement before the kill. */
  killDelayMs: number
  rtoMs: number
  /** The failover event's ms: restore on the standby. */
  restoreMs: number
  /** Kill -> the standby started restoring (detection, lease expiry, grants). */
  toRestoreStartMs: number
  /** The standby finished restoring -> first output seen. */
  toOutputMs: number
  lastBefore: number
  firstAfter: number
  rpoMs: number
  rtoTargetMs: number
  rpoTargetMs: number
}

interface Prepared {
  name: string
  rep: ReplicationInfo
  seenAt: number
  ownEvents: NodeEvent[]
  killDelayMs: number
}

/**
 * A fresh replicated counter on `owner`, 2 generations acknowledged, then a random wait
 * within one interval (killing right after an acknowledgement would always give the
 * smallest RPO). Throws when the counter is not running, replicated and leased then.
 */
async function prepareTrial (c: Cluster, owner: ClusterNode, counter: string, name: string): Promise<Prepared> {
  await run(c, owner, name, counter, 1)
  await acked(c, owner, name, 2, 300_000)
  const interval0 = (await inspect(owner, name))?.replication?.intervalMs ?? DUMP_S_RTO * 1000
  const killDelayMs = r0(Math.random() * interval0)
  await sleep(killDelayMs)
  const ownEvents = (await events(owner)).filter((e) => e.container === name && e.type === 'generation')
  const info = await inspect(owner, name)
  const seenAt = Date.now()
  const rep = info?.replication
  if ((info?.state !== 'running' && info?.state !== 'paused') || rep == null || rep.ackedGeneration == null || rep.rpoMs == null || !rep.leaseHeld) {
    throw new Error(`${name} on ${owner.name} is not running, replicated and leased before the kill: ${JSON.stringify(info)}`)
  }
  return { name, rep, seenAt, ownEvents, killDelayMs }
}

async function rtoTrial (c: Cluster, counter: string, trial: number, leaseMs: number, setupFailures: string[]): Promise<RtoSample> {
  const owner = c.nodes[(trial - 1) % c.nodes.length]!
  const others = c.nodes.filter((x) => x !== owner)
  // Setting up can fail on a loaded machine before anything is measured (e.g. a lease
  // not renewed in time: the guard kills the counter); that is retried and reported.
  let p: Prepared | undefined
  for (let attempt = 1; p == null; attempt++) {
    const name = attempt === 1 ? `ctr${trial}` : `ctr${trial}-${attempt}`
    try {
      p = await prepareTrial(c, owner, counter, name)
    } catch (err) {
      const msg = `trial ${trial}, attempt ${attempt}: ${(err as Error).message.split('\n')[0]!.slice(0, 400)}`
      if (attempt >= 5) throw new Error(`${msg}\n${c.logTail(owner, 20)}`)
      setupFailures.push(msg)
      log(`setting up failed, again: ${msg}`)
      for (const d of await reviveDead(c)) {
        setupFailures.push(`trial ${trial}, attempt ${attempt}: ${d}`)
        log(d)
      }
      await api(owner).remove(name, true).catch(() => {})
      await c.waitAllAlive(60_000)
    }
  }
  const { name, rep, seenAt, ownEvents, killDelayMs } = p
  const standby = rep.standbys.find((s) => s.generation === rep.ackedGeneration)
  const dumpedAt = seenAt - rep.rpoMs!
  const roundMs = (isoMs(standby?.ackedAt) ?? Number.NaN) - dumpedAt

  const killedAt = Date.now()
  await c.tb.kill(owner.host) // daemon, shims and container: a power cut
  const lastBefore = logValues(owner, name).at(-1)
  if (lastBefore == null) throw new Error(`trial ${trial}: ${name} printed nothing on ${owner.name}`)

  // From outside: the counter's log on the other nodes, every 50 ms.
  let found: ClusterNode | undefined
  let firstSeenAt = 0
  while (found == null) {
    for (const x of others) {
      if (logValues(x, name).length > 0) {
        found = x
        firstSeenAt = Date.now()
        break
      }
    }
    if (found != null) break
    if (Date.now() - killedAt > 90_000) {
      throw new Error(`trial ${trial}: ${name} printed nothing on ${others.map((x) => x.name).join(' or ')} within 90 s of the kill\n` +
        others.map((x) => `${x.name}:\n${c.logTail(x, 15)}`).join('\n'))
    }
    await sleep(50)
  }
  const restoredOn = found
  const rtoMs = firstSeenAt - killedAt

  // It worked: one copy, counting on from a generation, one sequence.
  let after: number[] = []
  await waitFor(() => {
    after = logValues(restoredOn, name)
    return after.length >= 5
  }, 20_000, `${name}: 5 values on ${restoredOn.name}`)
  const firstAfter = after[0]!
  if (firstAfter <= 1 || firstAfter > lastBefore + 1) throw new Error(`trial ${trial}: ${name} restarted at ${firstAfter} (last before the kill ${lastBefore}): not restored from a generation`)
  const broken = after.findIndex((v, i) => v !== firstAfter + i)
  if (broken >= 0) throw new Error(`trial ${trial}: ${name} on ${restoredOn.name} is not one sequence: ${JSON.stringify(after.slice(0, broken + 3))}`)
  const where = await runningOn(c, name, c.nodes)
  if (where.length !== 1 || where[0] !== restoredOn.name) throw new Error(`trial ${trial}: ${name} runs on ${where.join(', ') || 'no node'}, expected ${restoredOn.name} only`)
  if (standby != null && standby.name !== restoredOn.name) throw new Error(`trial ${trial}: restored on ${restoredOn.name}, its standby was ${standby.name}`)
  let fo: NodeEvent | undefined
  await waitFor(async () => {
    fo = (await events(restoredOn)).find((e) => e.type === 'failover' && e.container === name)
    return fo != null
  }, 10_000, `the failover event of ${name} on ${restoredOn.name}`)
  const restoreMs = Number(fo!.ms)
  const restoreEnd = Date.parse(fo!.time)

  const sample: RtoSample = {
    trial,
    owner: owner.name,
    standby: standby?.name ?? '?',
    restoredOn: restoredOn.name,
    generation: Number(fo!.generation),
    ackedAtKill: rep.ackedGeneration!,
    intervalMs: rep.intervalMs,
    freezeMs: rep.freezeMs ?? Number.NaN,
    freezesMs: ownEvents.map((e) => Number(e.freezeMs)),
    roundMs: r0(roundMs),
    nodeRpoMs: rep.rpoMs! + (killedAt - seenAt),
    killDelayMs,
    rtoMs,
    restoreMs,
    toRestoreStartMs: restoreEnd - restoreMs - killedAt,
    toOutputMs: firstSeenAt - restoreEnd,
    lastBefore,
    firstAfter,
    rpoMs: (lastBefore - firstAfter) * COUNTER_MS,
    rtoTargetMs: leaseMs + restoreMs + 1000,
    rpoTargetMs: rep.intervalMs + r0(roundMs)
  }

  // The next trial has three nodes again: the killed one restarts and fences its stale copy.
  await c.start(owner)
  await waitFor(async () => (await inspect(owner, name))?.state === 'fenced', 30_000, () => `${owner.name}'s stale ${name} fenced after its restart\n${c.logTail(owner, 15)}`)
  await api(owner).remove(name, true)
  await api(restoredOn).remove(name, true)
  await c.waitAllAlive(30_000)
  return sample
}

// ---------------------------------------------------------------------------------
// 2. overhead of replication on redis throughput

interface OverheadSample extends BenchRun {
  round: number
  mode: 'off' | 'on'
  /** ON: the owner's generation counters around the benchmark, and what its events say happened meanwhile. */
  generationBefore?: number
  ackedBefore?: number | null
  generationAfter?: number
  ackedAfter?: number | null
  ackedDuring?: number
  generationEvents?: number
  dumpFailed?: number
  generationFailed?: number
  failReasons?: string[]
  /** Replication rounds that dumped during the benchmark, and the error lines of their CRIU logs. */
  dumps?: number
  criuErrors?: string[]
  freezeMs?: number | null
  intervalMs?: number
  /** After the benchmark ended: until the next acknowledged generation (null: none within the wait). */
  resumedAfterMs?: number | null
}

async function overheadSample (c: Cluster, node: ClusterNode, dir: string, roundNo: number, mode: 'off' | 'on', keys: number, n: () => number, benchSeconds: number, calibrate: (ip: string) => Promise<void>): Promise<OverheadSample> {
  const name = `kv-${mode}-${roundNo}`
  const ip = node.host.ip
  await run(c, node, name, dir, mode === 'on' ? 1 : 0)
  try {
    await untilPong(ip, OVERHEAD_PORT, 30_000, 20)
    await populate(ip, OVERHEAD_PORT, keys)
    await calibrate(ip)
    let before: ReplicationInfo | undefined
    let seq0 = 0
    if (mode === 'on') {
      // A first generation before the run (the full rootfs and images go then, not
      // during it). On a loaded machine rounds fail and the next comes an effective
      // interval (20 x freeze) later: after 5 minutes the run goes ahead without one.
      try {
        before = (await acked(c, node, name, 1, 300_000)).replication
      } catch (err) {
        if (!(err as Error).message.startsWith('timed out')) throw err
        before = (await inspect(node, name))?.replication
        log(`overhead: ${name} had no generation acknowledged after 5 minutes; measuring anyway`)
      }
      seq0 = Math.max(0, ...(await events(node)).map((e) => e.seq))
    }
    const dumpLogs = mode === 'on' ? keepDumpLogs(c, node, name) : null
    let b: BenchRun
    let criu: { rounds: number; errors: string[] } | undefined
    try {
      b = await redisBenchmark(ip, OVERHEAD_PORT, n(), keys, Math.max(120_000, benchSeconds * 10_000))
    } finally {
      criu = await dumpLogs?.stop()
    }
    const s: OverheadSample = { round: roundNo, mode, ...b }
    if (mode === 'on') {
      const after = (await inspect(node, name))?.replication
      const evs = (await events(node)).filter((e) => e.seq > seq0 && e.container === name)
      const failed = evs.filter((e) => e.type === 'dump-failed' || e.type === 'generation-failed')
      Object.assign(s, {
        generationBefore: before?.generation,
        ackedBefore: before?.ackedGeneration,
        generationAfter: after?.generation,
        ackedAfter: after?.ackedGeneration,
        ackedDuring: evs.filter((e) => e.type === 'generation').length,
        generationEvents: evs.filter((e) => e.type === 'generation').length,
        dumps: criu?.rounds,
        criuErrors: criu?.errors,
        dumpFailed: evs.filter((e) => e.type === 'dump-failed').length,
        generationFailed: evs.filter((e) => e.type === 'generation-failed').length,
        failReasons: [...new Set(failed.map((e) => String(e.reason).slice(0, 300)))].slice(0, 3),
        freezeMs: after?.freezeMs,
        intervalMs: after?.intervalMs
      })
      // Does replication go on once the clients are gone?
      const t0 = Date.now()
      // (a failed dump leaves the standby busy with that round until its 60 s stall timeout)
      const wait = (after?.intervalMs ?? 1000) + 75_000
      s.resumedAfterMs = null
      while (Date.now() - t0 < wait) {
        if (((await inspect(node, name))?.replication?.ackedGeneration ?? 0) > (after?.ackedGeneration ?? 0)) {
          s.resumedAfterMs = Date.now() - t0
          break
        }
        await sleep(200)
      }
    }
    await verifyRedis(ip, OVERHEAD_PORT, keys, null, `${name} after redis-benchmark`)
    return s
  } finally {
    await api(node).remove(name, true).catch((err) => log(`removing ${name}: ${(err as Error).message}`))
  }
}

// ---------------------------------------------------------------------------------
// 3. bytes per round under a write load

interface GenerationRow {
  generation: number
  wireBytes: number
  imageBytes: number
  freezeMs: number
  full: boolean
  time: string
  phase: string
}

interface LoadPhase {
  /** spread: the brief's load (a batch every 100 ms); burst: the same keys per round in one go right after each acknowledgement. */
  mode: 'spread' | 'burst'
  seconds: number
  writes: number
  /** Generations acknowledged during the phase. */
  acked: number
  dumpFailed: number
  generationFailed: number
  failReasons: string[]
  dumps: number
  criuErrors: string[]
}

interface BytesResult {
  keys: number
  dumpIntervalS: number
  writesPerBatch: number
  /** Keys written per DUMP_INTERVAL by the spread load as achieved, % of the keys. */
  writePctPerInterval: number
  phases: LoadPhase[]
  /** The spread load let 2 more generations through (else the burst phase measured the round). */
  spreadWorked: boolean
  generations: GenerationRow[]
  bytesPerRound: number | null
  imageBytes: number | null
  freezeMs: number | null
  intervalMs: number
  fullWireBytes: number | null
}

/** Failure events of `name` on `node` after seq `seq0`. */
async function failures (node: ClusterNode, name: string, seq0: number): Promise<{ dumpFailed: number; generationFailed: number; failReasons: string[] }> {
  const evs = (await events(node)).filter((e) => e.seq > seq0 && e.container === name && (e.type === 'dump-failed' || e.type === 'generation-failed'))
  return {
    dumpFailed: evs.filter((e) => e.type === 'dump-failed').length,
    generationFailed: evs.filter((e) => e.type === 'generation-failed').length,
    failReasons: [...new Set(evs.map((e) => `${e.type}: ${String(e.reason).slice(0, 240)}`))].slice(0, 4)
  }
}

async function lastSeq (node: ClusterNode): Promise<number> {
  return Math.max(0, ...(await events(node)).map((e) => e.seq))
}

async function bytesPart (c: Cluster, keys: number): Promise<BytesResult> {
  const node = c.node('n1')
  const ip = node.host.ip
  const name = 'kv-big'
  const dir = await bundle('redis', path.join(c.root, 'bundles', 'redis-big'), '--port', String(BYTES_PORT))
  await run(c, node, name, dir, 1)
  await untilPong(ip, BYTES_PORT, 30_000, 20)
  log(`bytes: loading ${keys} keys`)
  await populate(ip, BYTES_PORT, keys)
  await verifyRedis(ip, BYTES_PORT, keys, keys, `${name} after populating`)
  // The baseline: the first (full) generation, taken with no client connected.
  log('bytes: waiting for the first (full) generation, no load')
  const first = await acked(c, node, name, 1, 900_000)
  const interval = first.replication?.intervalMs ?? DUMP_S_BYTES * 1000
  log(`bytes: full generation acknowledged; freeze ${first.replication?.freezeMs} ms, effective interval ${interval} ms`)

  // 1% of the keys per DUMP_INTERVAL, a batch every 100 ms, each over a fresh connection.
  const perBatch = Math.max(1, Math.round(keys * 0.01 / (DUMP_S_BYTES * 1000 / 100)))
  const phases: LoadPhase[] = []
  const phaseOf = new Map<number, string>()
  const tag = async (phase: string): Promise<void> => {
    for (const e of await acks(node, name)) if (!phaseOf.has(Number(e.generation))) phaseOf.set(Number(e.generation), phase)
  }
  await tag('no load')
  let spreadPct = 0
  {
    const seq0 = await lastSeq(node)
    const dumpLogs = keepDumpLogs(c, node, name)
    let writes = 0
    let writing = true
    const t0 = Date.now()
    const writer = (async () => {
      for (let b = 0; writing; b++) {
        const next = Date.now() + 100
        const ks = Array.from({ length: perBatch }, () => 1 + Math.floor(Math.random() * keys))
        writes += await writeBatch(ip, BYTES_PORT, ks, `w${b}`, 10_000)
        await sleep(Math.max(0, next - Date.now()))
      }
    })()
    // Two more generations, or give up after a few intervals.
    const limitMs = Math.max(180_000, 3 * interval + 60_000)
    log(`bytes: spread load, ${perBatch} SETs every 100 ms over fresh connections; waiting up to ${Math.round(limitMs / 1000)} s for 2 more generations`)
    let stalled = false
    try {
      await acked(c, node, name, 3, limitMs)
    } catch (err) {
      if (!(err as Error).message.startsWith('timed out')) throw err
      stalled = true
    } finally {
      writing = false
      await writer
    }
    const seconds = (Date.now() - t0) / 1000
    const criu = await dumpLogs.stop()
    await tag('spread')
    spreadPct = round(100 * writes / seconds * DUMP_S_BYTES / keys, 2)
    phases.push({ mode: 'spread', seconds: r1(seconds), writes, acked: [...phaseOf.values()].filter((p) => p === 'spread').length, ...await failures(node, name, seq0), dumps: criu.rounds, criuErrors: criu.errors })
    log(`bytes: spread load ${stalled ? 'STALLED replication' : 'done'}: ${phases[0]!.acked} generations acknowledged in ${r0(seconds)} s, ${phases[0]!.dumpFailed} dumps failed`)
  }
  const spreadWorked = phases[0]!.acked >= 2
  if (!spreadWorked) {
    // What the spread load writes in one effective interval (1% of the keys per
    // DUMP_INTERVAL), written in one go right after each acknowledgement, so that no
    // client connection is open when the next round freezes redis.
    const seq0 = await lastSeq(node)
    const dumpLogs = keepDumpLogs(c, node, name)
    const t0 = Date.now()
    let writes = 0
    log("bytes: burst load, one interval's writes right after each acknowledgement; waiting for 2 more generations")
    try {
      for (let got = 0; got < 2; got++) {
        const have = (await acks(node, name)).length
        const iv = (await inspect(node, name))?.replication?.intervalMs ?? interval
        const perRound = Math.max(1, Math.round(keys * 0.01 * Math.max(1, iv / (DUMP_S_BYTES * 1000))))
        for (let i = 0; i < perRound; i += 1000) {
          const ks = Array.from({ length: Math.min(1000, perRound - i) }, () => 1 + Math.floor(Math.random() * keys))
          writes += await writeBatch(ip, BYTES_PORT, ks, `b${got}`, 30_000)
        }
        await acked(c, node, name, have + 1, 900_000)
      }
    } finally {
      const criu = await dumpLogs.stop()
      await tag('burst')
      phases.push({ mode: 'burst', seconds: r1((Date.now() - t0) / 1000), writes, acked: [...phaseOf.values()].filter((p) => p === 'burst').length, ...await failures(node, name, seq0), dumps: criu.rounds, criuErrors: criu.errors })
    }
  }
  const rep = (await inspect(node, name))?.replication
  const gens: GenerationRow[] = (await acks(node, name)).map((e) => ({
    generation: Number(e.generation),
    wireBytes: Number(e.wireBytes),
    imageBytes: Number(e.imageBytes),
    freezeMs: Number(e.freezeMs),
    full: e.full === true,
    time: e.time,
    phase: phaseOf.get(Number(e.generation)) ?? '?'
  }))
  await verifyRedis(ip, BYTES_PORT, keys, keys, `${name} after the write load`, (_k, v) => /^[wb]\d+$/.test(v))
  await api(node).remove(name, true)
  return {
    keys,
    dumpIntervalS: DUMP_S_BYTES,
    writesPerBatch: perBatch,
    writePctPerInterval: spreadPct,
    phases,
    spreadWorked,
    generations: gens,
    bytesPerRound: rep?.bytesPerRound ?? null,
    imageBytes: rep?.imageBytes ?? null,
    freezeMs: rep?.freezeMs ?? null,
    intervalMs: rep?.intervalMs ?? interval,
    fullWireBytes: gens.find((g) => g.full)?.wireBytes ?? null
  }
}

// ---------------------------------------------------------------------------------

async function main (): Promise<void> {
  const t0 = Date.now()
  const o = parseFlags(process.argv.slice(2), { trials: 5, keys: 100_000, bigKeys: 1_000_000, benchSeconds: 20, parts: PARTS.join(',') }, USAGE)
  const parts = o.parts.split(',').map((s) => s.trim()).filter(Boolean)
  for (const p of parts) if (!(PARTS as readonly string[]).includes(p)) throw new Error(`unknown part ${p} (${PARTS.join(', ')})`)
  for (const k of ['trials', 'keys', 'bigKeys', 'benchSeconds'] as const) {
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new Error(`--${k.replace(/[A-Z]/g, (x) => '-' + x.toLowerCase())} must be a positive integer`)
  }
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark builds a testbed (network namespaces) and runs runc/CRIU')
  if (parts.includes('overhead') && (await execa(REDIS_BENCHMARK, ['--version'], { reject: false })).exitCode !== 0) {
    throw new Error(`redis-benchmark is missing at ${REDIS_BENCHMARK} (npm run setup unpacks it)`)
  }
  const machine = machineInfo()

  let c: Cluster | undefined
  let cleaning: Promise<void> | undefined
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      log('cleaning up')
      await c?.destroy().catch((err) => log(`cluster cleanup: ${(err as Error).message}`))
    })()
    await cleaning
  }
  const offSignals = cleanupOnSignals(cleanup)

  const out: string[] = []
  const print = (s: string): void => {
    out.push(s)
  }
  const results: Record<string, unknown> = { benchmark: 'failover', machine, options: o, nodeArgs: PART_ARGS }
  try {
    log('starting a testbed with three nodes')
    const first = PARTS.find((p) => parts.includes(p))!
    c = await startCluster({ hosts: 3, args: PART_ARGS[first], start: false })
    for (const x of c.nodes) await c.start(x)
    await c.waitAllAlive(60_000)
    const status = await c.statusApi(c.node('n1'))
    results.status = { runc: status.runc, criu: status.criu, version: status.version }
    log(`nodes ${c.nodes.map((x) => `${x.name} ${x.host.ip}`).join(', ')}; runc ${status.runc}, criu ${status.criu}`)

    // ---- 1. RTO / RPO ----
    if (parts.includes('rto')) {
      await nodesWith(c, PART_ARGS.rto)
      const leaseMs = (await c.statusApi(c.node('n1'))).failover.leaseMs
      const counter = await bundle('counter', path.join(c.root, 'bundles', 'counter'), '--interval-ms', String(COUNTER_MS))
      const samples: RtoSample[] = []
      const setupFailures: string[] = []
      for (let t = 1; t <= o.trials; t++) {
        const s = await rtoTrial(c, counter, t, leaseMs, setupFailures)
        samples.push(s)
        log(`rto trial ${t}: ${s.owner} -> ${s.restoredOn}: RTO ${s.rtoMs} ms (target ${s.rtoTargetMs}), RPO ${s.rpoMs} ms (target ${s.rpoTargetMs}), restore ${s.restoreMs} ms, interval ${s.intervalMs} ms`)
      }
      const summary = {
        trials: samples.length,
        rtoMs: median(samples.map((s) => s.rtoMs)),
        rtoMaxMs: Math.max(...samples.map((s) => s.rtoMs)),
        rtoTargetMs: median(samples.map((s) => s.rtoTargetMs)),
        rtoRatio: median(samples.map((s) => ratio(s.rtoMs, s.rtoTargetMs))),
        rtoRatioMax: Math.max(...samples.map((s) => ratio(s.rtoMs, s.rtoTargetMs))),
        rpoMs: median(samples.map((s) => s.rpoMs)),
        rpoMaxMs: Math.max(...samples.map((s) => s.rpoMs)),
        rpoTargetMs: median(samples.map((s) => s.rpoTargetMs)),
        rpoRatio: median(samples.map((s) => ratio(s.rpoMs, s.rpoTargetMs))),
        rpoRatioMax: Math.max(...samples.map((s) => ratio(s.rpoMs, s.rpoTargetMs))),
        restoreMs: median(samples.map((s) => s.restoreMs)),
        toRestoreStartMs: median(samples.map((s) => s.toRestoreStartMs)),
        toOutputMs: median(samples.map((s) => s.toOutputMs)),
        freezeMs: median(samples.flatMap((s) => s.freezesMs)),
        freezeMaxMs: Math.max(...samples.flatMap((s) => s.freezesMs)),
        intervalMs: median(samples.map((s) => s.intervalMs)),
        roundMs: median(samples.map((s) => s.roundMs))
      }
      results.rto = { leaseMs, dumpIntervalS: DUMP_S_RTO, counterMs: COUNTER_MS, summary, samples, setupFailures }
      print(`\n1. RTO / RPO: counter printing every ${COUNTER_MS} ms, --replicas 1, 3 nodes, lease ${leaseMs} ms, DUMP_INTERVAL ${DUMP_S_RTO} s; owner power-cut (testbed kill) at a random point of an interval\n`)
      print('   RTO target = lease + restore (failover event ms) + 1 s; RPO target = effective interval + one round (dump -> ack); ratio = measured / target (<= 1 meets it)\n')
      print(table(samples.map((s) => ({
        trial: s.trial,
        move: `${s.owner}->${s.restoredOn}`,
        gen: s.generation,
        'interval ms': s.intervalMs,
        'freeze ms': s.freezeMs,
        'round ms': s.roundMs,
        'RTO ms': s.rtoMs,
        'RTO target': s.rtoTargetMs,
        'RTO ratio': ratio(s.rtoMs, s.rtoTargetMs),
        'kill->restore ms': s.toRestoreStartMs,
        'restore ms': s.restoreMs,
        'restored->output ms': s.toOutputMs,
        'RPO ms': s.rpoMs,
        'RPO target': s.rpoTargetMs,
        'RPO ratio': ratio(s.rpoMs, s.rpoTargetMs),
        'node rpoMs at kill': s.nodeRpoMs
      }))))
      print(table([{
        '': 'median',
        'RTO ms': summary.rtoMs,
        'RTO ratio': summary.rtoRatio,
        'RTO ratio max': summary.rtoRatioMax,
        'RPO ms': summary.rpoMs,
        'RPO ratio': summary.rpoRatio,
        'RPO ratio max': summary.rpoRatioMax,
        'freeze ms (all gens)': summary.freezeMs,
        'freeze max': summary.freezeMaxMs,
        'interval ms': summary.intervalMs,
        'round ms': summary.roundMs
      }]))
      if (setupFailures.length > 0) print(`   ${setupFailures.length} trial set-up(s) failed before the kill and were run again:\n${setupFailures.map((f) => `     ${f}\n`).join('')}`)
    }

    // ---- 2. overhead ----
    if (parts.includes('overhead')) {
      await nodesWith(c, PART_ARGS.overhead)
      const node = c.node('n1')
      const dir = await bundle('redis', path.join(c.root, 'bundles', 'redis-overhead'), '--port', String(OVERHEAD_PORT))
      let n = 0
      const calibrate = async (ip: string): Promise<void> => {
        if (n > 0) return
        const cal = await redisBenchmark(ip, OVERHEAD_PORT, 20_000, o.keys, 120_000)
        // Both tests together last about --bench-seconds.
        n = Math.max(10_000, Math.round(o.benchSeconds / (1 / cal.setRps + 1 / cal.getRps)))
        log(`overhead: calibration SET ${cal.setRps}/s, GET ${cal.getRps}/s -> -n ${n}`)
      }
      const samples: OverheadSample[] = []
      for (let r = 1; r <= OVERHEAD_ROUNDS; r++) {
        for (const mode of (r % 2 === 1 ? ['off', 'on'] : ['on', 'off']) as Array<'off' | 'on'>) {
          const s = await overheadSample(c, node, dir, r, mode, o.keys, () => n, o.benchSeconds, calibrate)
          samples.push(s)
          log(`overhead round ${r} ${mode}: ${s.rps} req/s (SET ${s.setRps}, GET ${s.getRps}) in ${s.seconds} s` +
            (mode === 'on' ? `; acknowledged during: ${s.ackedDuring}, dump-failed ${s.dumpFailed}, generation-failed ${s.generationFailed}; resumed after ${s.resumedAfterMs ?? 'never'} ms` : ''))
          await sleep(300)
        }
      }
      const by = (m: 'off' | 'on'): OverheadSample[] => samples.filter((s) => s.mode === m)
      const med = (m: 'off' | 'on', k: 'rps' | 'setRps' | 'getRps'): number => r0(median(by(m).map((s) => s[k])))
      const on = by('on')
      const summary = {
        offRps: med('off', 'rps'),
        onRps: med('on', 'rps'),
        ratio: ratio(med('on', 'rps'), med('off', 'rps')),
        setRatio: ratio(med('on', 'setRps'), med('off', 'setRps')),
        getRatio: ratio(med('on', 'getRps'), med('off', 'getRps')),
        ackedDuringOn: on.reduce((a, s) => a + (s.ackedDuring ?? 0), 0),
        dumpFailed: on.reduce((a, s) => a + (s.dumpFailed ?? 0), 0),
        generationFailed: on.reduce((a, s) => a + (s.generationFailed ?? 0), 0),
        onSeconds: r1(on.reduce((a, s) => a + s.seconds, 0)),
        resumedAfterLoad: on.filter((s) => s.resumedAfterMs != null).length,
        failReasons: [...new Set(on.flatMap((s) => s.failReasons ?? []))].slice(0, 3)
      }
      const stalled = summary.ackedDuringOn === 0
      results.overhead = { keys: o.keys, requestsPerTest: n, clients: 50, benchSeconds: o.benchSeconds, rounds: OVERHEAD_ROUNDS, summary, replicationStalledUnderLoad: stalled, samples }
      print(
        `\n2. overhead: redis with ${o.keys} keys, redis-benchmark -t set,get -n ${n} -r ${o.keys} (50 clients kept connected) from the root namespace, ~${o.benchSeconds} s a run; replication off (--replicas 0) / on (--replicas 1), alternating, ${OVERHEAD_ROUNDS} rounds; DUMP_INTERVAL ${DUMP_S_RTO} s, lease ${PING_TIMEOUT_S_LOAD} s\n`
      )
      print(table(samples.map((s) => ({
        round: s.round,
        mode: s.mode,
        'req/s': s.rps,
        'SET/s': s.setRps,
        'GET/s': s.getRps,
        s: s.seconds,
        'gen before->after': s.mode === 'on' ? `${s.generationBefore}->${s.generationAfter}` : null,
        'acked before->after': s.mode === 'on' ? `${s.ackedBefore}->${s.ackedAfter}` : null,
        'gen events': s.generationEvents,
        'dump-failed': s.dumpFailed,
        'generation-failed': s.generationFailed,
        'interval ms': s.intervalMs,
        'freeze ms': s.freezeMs,
        'next ack after load ms': s.mode === 'on' ? (s.resumedAfterMs ?? 'none') : null
      }))))
      print(table([{
        'off req/s': summary.offRps,
        'on req/s': summary.onRps,
        'ratio on/off (target >= 0.95)': summary.ratio,
        'SET on/off': summary.setRatio,
        'GET on/off': summary.getRatio,
        'generations acked during ON runs': summary.ackedDuringOn,
        'dump-failed': summary.dumpFailed,
        'generation-failed': summary.generationFailed
      }]))
      if (stalled) {
        print(`   REPLICATION STALLED UNDER LOAD: no generation was acknowledged during ${summary.onSeconds} s of ON runs while redis-benchmark held its connections ` +
          `(${summary.dumpFailed} dumps failed; CRIU refuses established TCP without --tcp-established). The ON rate is therefore that of a replica that is not ` +
          `kept up to date; replication resumed after the load in ${summary.resumedAfterLoad} of ${on.length} runs.\n`)
      }
      if (summary.failReasons.length > 0) print(`   failure reasons (first): ${summary.failReasons.join(' | ')}\n`)
    }

    // ---- 3. bytes per round ----
    if (parts.includes('bytes')) {
      await nodesWith(c, PART_ARGS.bytes)
      const b = await bytesPart(c, o.bigKeys)
      results.bytes = b
      print(`\n3. bytes per round: redis with ${b.keys} keys, --replicas 1, DUMP_INTERVAL ${b.dumpIntervalS} s, lease ${PING_TIMEOUT_S_LOAD} s; first (full) generation taken with no load (the baseline);\n` +
        `   then 1% of the keys per DUMP_INTERVAL: ${b.writesPerBatch} SETs every 100 ms over fresh connections (${b.writePctPerInterval}% per ${b.dumpIntervalS} s achieved)` +
        (b.spreadWorked ? '\n' : `;\n   that load STALLED replication, so the round was measured with the writes of one effective interval (same rate) made in one burst right after each acknowledgement\n`))
      print(table(b.phases.map((ph) => ({
        load: ph.mode,
        s: ph.seconds,
        writes: ph.writes,
        'gens acked': ph.acked,
        'rounds dumped': ph.dumps,
        'dump-failed': ph.dumpFailed,
        'generation-failed': ph.generationFailed
      }))))
      for (const ph of b.phases) {
        if (ph.failReasons.length > 0) print(`   ${ph.mode}: ${ph.failReasons.join(' | ')}\n`)
        if (ph.criuErrors.length > 0) print(`   ${ph.mode}, CRIU: ${ph.criuErrors.join(' | ')}\n`)
      }
      print(table(b.generations.map((g) => ({
        generation: g.generation,
        load: g.phase,
        full: g.full ? 'yes' : 'no',
        'wire MB': round(g.wireBytes / 1e6, 2),
        'image MB': round(g.imageBytes / 1e6, 2),
        'wire/image': ratio(g.wireBytes, g.imageBytes),
        'freeze ms': g.freezeMs,
        time: g.time.slice(11, 23)
      }))))
      print(table([{
        'last round MB (bytesPerRound)': b.bytesPerRound == null ? null : round(b.bytesPerRound / 1e6, 2),
        'image MB (imageBytes)': b.imageBytes == null ? null : round(b.imageBytes / 1e6, 2),
        'round / image': ratio(b.bytesPerRound, b.imageBytes),
        'full gen wire MB (baseline)': b.fullWireBytes == null ? null : round(b.fullWireBytes / 1e6, 2),
        'round / full gen': ratio(b.bytesPerRound, b.fullWireBytes),
        'freeze ms': b.freezeMs,
        'interval ms': b.intervalMs
      }]))
    }

    machine.loadEnd = os.loadavg().map((x) => round(x, 2))
    results.durationS = r0((Date.now() - t0) / 1000)
    const file = await writeResults('failover', results)
    process.stdout.write(`\nfailover benchmark, ${machine.cpus} cpus, load ${machine.loadStart.join('/')} -> ${machine.loadEnd.join('/')}, ${results.durationS as number} s\n`)
    process.stdout.write(out.join(''))
    process.stdout.write(`\nresults: ${file}\n`)
    await plotAfterRun(file)
  } finally {
    await cleanup()
    offSignals()
  }
}

await runBenchmark('failover', main)
