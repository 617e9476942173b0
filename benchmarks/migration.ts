/**
 * Live migration of a redis container between two msc nodes of a Testbed (two network
 * namespace hosts on one bridge, test/testbed/testbed.ts + test/helpers/cluster.ts),
 * against a local checkpoint/restore of the same container on the same machine, all
 * in one run, interleaved round by round:
 *
 *   raw-runc     plain `runc checkpoint` + `runc restore` of a second redis (same bundle
 *                kind, port 6380, same key count) run by runc directly inside host h1,
 *                with the same CRIU the nodes use: the floor any migration builds on.
 *   msc-local    node n1 checkpoints its redis (--stop) and restores it from that
 *                checkpoint, timed around the API calls (the node's unix socket, what
 *                the CLI calls; no Node start-up in the time).
 *   msc-local-cli  the same through `msc checkpoint redis --stop` + `msc restore redis`
 *                (wall time, including two CLI start-ups).
 *   stop-copy, post-copy   `msc peer migrate redis --to n2 --strategy S --json` on n1,
 *                then back n2 -> n1; downtimeMs, totalMs, bytes and phases come from
 *                the result the source node reports. The trees go over the target's
 *                sealed data channel; `stop-copy/libp2p` and `post-copy/libp2p` send them
 *                over /msc/image instead (--no-data-channel), for the comparison.
 *
 * After every checkpoint/restore and every hop: redis answers PING on the host where it
 * should run, DBSIZE is exactly --keys, and GET of the first, the last and 50 random keys
 * returns their values (key i holds i); after a hop the old host's address no longer
 * answers. A sample that fails these checks stops the benchmark.
 *
 * Ratios: downtime(strategy) / (checkpoint + restore) of raw-runc and of msc-local.
 * Everything is removed at the end, also after a failure or Ctrl-C: the raw container,
 * its cgroups, then Cluster.destroy() (nodes, containers, testbed, temp dirs).
 *
 *   node benchmarks/migration.ts [--keys 100000] [--runs 3] [--strategies stop-copy,post-copy,stop-copy/libp2p,post-copy/libp2p]
 *        [--no-raw] [--no-cli]
 *
 * Needs root, runc, CRIU >= 4.2 (npm run setup), redis-server + redis-cli, iproute2,
 * nsenter, iptables/ebtables, and fs.pipe-max-size >= 16 MiB for post-copy
 * (/work/shared/notes/host.md). Only testbed addresses (10.213.X.0/24) are used.
 */
import fs from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import type { ChildProcess } from 'node:child_process'
import { execa } from 'execa'
import { startCluster, waitFor, type Cluster, type ClusterNode } from '../test/helpers/cluster.ts'
import { MSC, removeCgroups, sleep } from '../test/helpers/node-harness.ts'
import { ControlClient } from '../src/api/client.ts'
import type { CheckpointInfo, MigrationResultInfo } from '../src/api/types.ts'
import { ROOT, log, machineInfo, median, parseFlags, ratio, round, table, writeResults, redisPing, untilPong, runBenchmark, cleanupOnSignals, criuLogTail, dirBytes, unmountUnder } from './lib.ts'
import { plotAfterRun } from './plot.ts'
import { REDIS_CLI } from '../src/bundles/redis.ts'

const USAGE = `usage: node benchmarks/migration.ts [--keys N] [--runs N] [--strategies stop-copy,post-copy,stop-copy/libp2p,post-copy/libp2p] [--no-raw] [--no-cli]
  (as root; see the comment at the top of this file)
`
const REDIS_PORT = 6379
const RAW_PORT = 6380
const RAW_ID = 'redis-raw'
/**
 * What a hop runs: a strategy, over the sealed data channel (the default), or with
 * `/libp2p` over /msc/image (`msc peer migrate --no-data-channel`).
 */
const STRATEGIES = ['stop-copy', 'post-copy', 'stop-copy/libp2p', 'post-copy/libp2p'] as const
/** Fast membership so the two nodes find each other quickly; pings stay at their defaults. */
const NODE_ARGS = ['--mdns-interval', '1']

interface LocalSample {
  method: 'raw-runc' | 'msc-local' | 'msc-local-cli'
  round: number
  checkpointMs: number
  restoreMs: number
  /** checkpoint + restore: from the freeze request until the restored container runs. */
  totalMs: number
  /** From the checkpoint request until redis answered PING again. */
  toPongMs: number
  imageBytes: number
  /** msc-local: the checkpoint's own durationMs as the node measured it. */
  nodeCheckpointMs?: number
}

interface HopSample {
  strategy: string
  round: number
  hop: string
  downtimeMs: number
  totalMs: number
  bytes: number
  goodputMBps: number | null
  phases: Record<string, number>
  /** Wall time of the `msc peer migrate` command (includes the CLI's start-up). */
  cliMs: number
  /** After the command returned, until redis answered PING on the target's address. */
  pongAfterMs: number
}

// ---------------------------------------------------------------------------------
// redis over the testbed's addresses

/** DBSIZE is `keys`; GET of key 1, key `keys` and 50 random keys gives the key back. */
async function verifyRedis (ip: string, port: number, keys: number, what: string): Promise<void> {
  const size = await execa(REDIS_CLI, ['-h', ip, '-p', String(port), 'DBSIZE'], { reject: false, timeout: 20_000 })
  if (String(size.stdout).trim() !== String(keys)) {
    throw new Error(`${what}: DBSIZE at ${ip}:${port} is ${JSON.stringify(String(size.stdout).trim())} (${String(size.stderr).trim()}), expected ${keys}: a broken migration`)
  }
  const sample = [1, keys, ...Array.from({ length: 50 }, () => 1 + Math.floor(Math.random() * keys))]
  const r = await execa(REDIS_CLI, ['-h', ip, '-p', String(port)], { input: sample.map((k) => `GET ${k}`).join('\n') + '\n', reject: false, timeout: 20_000 })
  const got = String(r.stdout).split('\n')
  const bad = sample.findIndex((k, i) => got[i] !== String(k))
  if (r.exitCode !== 0 || bad >= 0) throw new Error(`${what}: GET ${sample[bad]} at ${ip}:${port} gave ${JSON.stringify(got[bad])}, expected ${sample[bad]}`)
}

async function populate (ip: string, port: number, keys: number): Promise<void> {
  const r = await execa(path.join(ROOT, 'demos', 'populate-redis.sh'), ['-h', ip, '-p', String(port), String(keys)], { reject: false, timeout: 300_000 })
  if (String(r.stdout).trim() !== String(keys)) throw new Error(`populating ${ip}:${port} with ${keys} keys: DBSIZE ${String(r.stdout).trim()}: ${String(r.stderr).slice(-500)}`)
}

// ---------------------------------------------------------------------------------
// raw runc inside host h1

class RawRunc {
  readonly c: Cluster
  readonly host: ClusterNode['host']
  readonly runc: string
  readonly criu: string
  readonly root: string
  readonly bundle: string
  readonly cgroupParent: string
  readonly pidFile: string
  /** The shells holding the container's output pipes (they end with the container). */
  private readonly shells: ChildProcess[] = []
  private started = false

  constructor (c: Cluster, runc: string, criu: string) {
    this.c = c
    this.host = c.node('n1').host
    this.runc = runc
    this.criu = criu
    this.root = path.join(c.root, 'raw', 'runc')
    this.bundle = path.join(c.root, 'raw', 'bundle')
    this.cgroupParent = `msc-bench-${randomBytes(3).toString('hex')}`
    this.pidFile = path.join(c.root, 'raw', 'pid')
  }

  private g (): string[] {
    return ['--root', this.root, '--criu', this.criu]
  }

  /**
   * A detaching runc command (run -d / restore -d) inside h1. The container's stdout and
   * stderr must be real pipes (Node's 'pipe' stdio is a socketpair, which CRIU cannot
   * dump: "unix: Unix socket ... not found"), so as msc's launcher does, a shell pipes
   * them into `cat >/dev/null` and reports runc's exit status on fd 3, which neither
   * runc nor the container keeps. Resolves when runc returned; errors from runc's log.
   */
  private async detached (args: string[]): Promise<void> {
    const runcLog = path.join(this.c.root, 'raw', 'runc-log.json')
    await fs.rm(runcLog, { force: true })
    const script = '{ "$@" 3>&-; echo "$?" >&3; } 2>&1 </dev/null | cat >/dev/null 3>&-'
    const child: ChildProcess = await this.c.tb.spawn(this.host, '/bin/sh', ['-c', script, 'raw-runc', this.runc, '--log', runcLog, '--log-format', 'json', ...this.g(), ...args], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] })
    this.shells.push(child)
    const status = child.stdio[3] as NodeJS.ReadableStream & { destroy: () => void }
    let out = ''
    const code = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`runc ${args[0]} did not return within 120 s`)), 120_000)
      status.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('\n')) {
          clearTimeout(timer)
          resolve(Number.parseInt(out.trim(), 10))
        }
      })
      status.on('end', () => {
        clearTimeout(timer)
        reject(new Error(`runc ${args[0]} ended without an exit status`))
      })
    })
    status.destroy()
    if (code !== 0) {
      const msgs = (await fs.readFile(runcLog, 'utf8').catch(() => '')).split('\n').filter((l) => l.includes('"error"')).join('\n')
      throw new Error(`runc ${args[0]} ${RAW_ID} failed (${code}): ${msgs}`)
    }
  }

  async start (keys: number): Promise<void> {
    const b = await execa(MSC, ['bundle', 'redis', this.bundle, '--port', String(RAW_PORT), '--bind', '0.0.0.0'], { reject: false })
    if (b.exitCode !== 0) throw new Error(`msc bundle redis: ${String(b.stderr)}`)
    const cfgFile = path.join(this.bundle, 'config.json')
    const cfg = JSON.parse(await fs.readFile(cfgFile, 'utf8')) as { linux?: Record<string, unknown>; process?: Record<string, unknown> }
    cfg.linux = { ...cfg.linux, cgroupsPath: `/${this.cgroupParent}/${RAW_ID}` }
    cfg.process = { ...cfg.process, terminal: false }
    await fs.writeFile(cfgFile, JSON.stringify(cfg, null, 2))
    await fs.mkdir(this.root, { recursive: true })
    this.started = true
    await this.detached(['run', '--detach', '--bundle', this.bundle, '--pid-file', this.pidFile, RAW_ID])
    await untilPong(this.host.ip, RAW_PORT)
    await populate(this.host.ip, RAW_PORT, keys)
    await verifyRedis(this.host.ip, RAW_PORT, keys, 'raw redis after populating')
  }

  async cycle (round: number, keys: number): Promise<LocalSample> {
    const img = path.join(this.c.root, 'raw', `images-${round}`)
    const work = path.join(this.c.root, 'raw', `restore-work-${round}`)
    await fs.mkdir(img, { recursive: true })
    await fs.mkdir(work, { recursive: true })
    const t0 = performance.now()
    const ck = await this.c.tb.exec(this.host, this.runc, [...this.g(), 'checkpoint', '--image-path', img, '--work-path', img, RAW_ID], { timeout: 120_000 })
    const t1 = performance.now()
    if (ck.exitCode !== 0) throw new Error(`runc checkpoint failed (${ck.exitCode}): ${ck.stderr.trim()}\n${criuLogTail(path.join(img, 'dump.log'))}`)
    // Without --leave-running runc removes the container itself; make sure (untimed).
    await execa(this.runc, ['--root', this.root, 'delete', '--force', RAW_ID], { reject: false })
    const imageBytes = await dirBytes(img)
    const t2 = performance.now()
    try {
      await this.detached(['restore', '--detach', '--image-path', img, '--work-path', work, '--bundle', this.bundle, '--pid-file', this.pidFile, RAW_ID])
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${criuLogTail(path.join(work, 'restore.log'))}`)
    }
    const t3 = performance.now()
    const pong = await untilPong(this.host.ip, RAW_PORT)
    await verifyRedis(this.host.ip, RAW_PORT, keys, `raw runc restore, round ${round}`)
    await fs.rm(img, { recursive: true, force: true })
    await execa('rm', ['-rf', '--one-file-system', work], { reject: false })
    return {
      method: 'raw-runc',
      round,
      checkpointMs: r1(t1 - t0),
      restoreMs: r1(t3 - t2),
      totalMs: r1(t1 - t0 + t3 - t2),
      toPongMs: r1(t1 - t0 + t3 - t2 + pong),
      imageBytes
    }
  }

  async destroy (): Promise<void> {
    if (!this.started) return
    await execa(this.runc, ['--root', this.root, 'kill', '--all', RAW_ID, 'KILL'], { reject: false })
    await sleep(200)
    await unmountUnder(path.join(this.root, RAW_ID))
    await execa(this.runc, ['--root', this.root, 'delete', '--force', RAW_ID], { reject: false })
    for (const sh of this.shells) if (sh.exitCode == null && sh.signalCode == null) sh.kill('SIGKILL')
    await removeCgroups(this.cgroupParent)
  }
}

function r1 (x: number): number {
  return round(x, 1)
}

// ---------------------------------------------------------------------------------
// msc: local checkpoint/restore and migrations

async function mscLocalApi (node: ClusterNode, round: number, keys: number): Promise<LocalSample> {
  const api = new ControlClient(path.join(node.dataDir, 'msc.sock'))
  const t0 = performance.now()
  const ck: CheckpointInfo = await api.checkpoint('redis', true)
  const t1 = performance.now()
  await api.restore('redis')
  const t2 = performance.now()
  const pong = await untilPong(node.host.ip, REDIS_PORT)
  await verifyRedis(node.host.ip, REDIS_PORT, keys, `msc local checkpoint/restore (API), round ${round}`)
  return {
    method: 'msc-local',
    round,
    checkpointMs: r1(t1 - t0),
    restoreMs: r1(t2 - t1),
    totalMs: r1(t2 - t0),
    toPongMs: r1(t2 - t0 + pong),
    imageBytes: ck.sizeBytes,
    nodeCheckpointMs: ck.durationMs
  }
}

async function mscLocalCli (c: Cluster, node: ClusterNode, round: number, keys: number): Promise<LocalSample> {
  const t0 = performance.now()
  const ck = await c.mscTimed(node, 120_000, 'checkpoint', 'redis', '--stop', '--json')
  const t1 = performance.now()
  if (ck.exitCode !== 0) throw new Error(`msc checkpoint redis --stop failed (${ck.exitCode}): ${ck.stderr}\n${c.logTail(node)}`)
  const rs = await c.mscTimed(node, 120_000, 'restore', 'redis', '--json')
  const t2 = performance.now()
  if (rs.exitCode !== 0) throw new Error(`msc restore redis failed (${rs.exitCode}): ${rs.stderr}\n${c.logTail(node)}`)
  const pong = await untilPong(node.host.ip, REDIS_PORT)
  await verifyRedis(node.host.ip, REDIS_PORT, keys, `msc local checkpoint/restore (CLI), round ${round}`)
  const info = JSON.parse(ck.stdout) as CheckpointInfo
  return {
    method: 'msc-local-cli',
    round,
    checkpointMs: r1(t1 - t0),
    restoreMs: r1(t2 - t1),
    totalMs: r1(t2 - t0),
    toPongMs: r1(t2 - t0 + pong),
    imageBytes: info.sizeBytes,
    nodeCheckpointMs: info.durationMs
  }
}

async function hop (c: Cluster, from: ClusterNode, to: ClusterNode, variant: string, round: number, keys: number): Promise<HopSample> {
  const [strategy, via] = variant.split('/') as [string, string | undefined]
  const t0 = performance.now()
  const r = await c.mscTimed(from, 300_000, 'peer', 'migrate', 'redis', '--to', to.name, '--strategy', strategy, ...(via === 'libp2p' ? ['--no-data-channel'] : []), '--json')
  const cliMs = performance.now() - t0
  let res: MigrationResultInfo
  try {
    res = JSON.parse(r.stdout) as MigrationResultInfo
  } catch {
    throw new Error(`msc peer migrate printed no JSON result (exit ${r.exitCode}): ${r.stdout}\n${r.stderr}`)
  }
  const what = `${variant} ${from.name} -> ${to.name}, round ${round}`
  if (r.exitCode !== 0 || !res.ok || res.downtimeMs == null) {
    throw new Error(`${what} failed (exit ${r.exitCode}): ${JSON.stringify(res)}\n${r.stderr}\nsource log:\n${c.logTail(from, 15)}\ntarget log:\n${c.logTail(to, 15)}`)
  }
  if (res.strategy !== strategy) throw new Error(`${what}: the nodes ran ${res.strategy} instead`)
  if (res.dataChannel !== (via !== 'libp2p')) throw new Error(`${what}: the trees went ${res.dataChannel === true ? 'over the sealed data channel' : 'over libp2p'}`)
  const t1 = performance.now()
  await untilPong(to.host.ip, REDIS_PORT)
  const pongAfterMs = performance.now() - t1
  await verifyRedis(to.host.ip, REDIS_PORT, keys, what)
  if (await redisPing(from.host.ip, REDIS_PORT)) throw new Error(`${what}: redis still answers on ${from.name}'s address: two copies`)
  // The next hop starts from the target: wait until its node lists redis running.
  await waitFor(async () => (await new ControlClient(path.join(to.dataDir, 'msc.sock')).inspect('redis').catch(() => null))?.state === 'running', 15_000, `${to.name} to list redis running`)
  return {
    strategy: variant,
    round,
    hop: `${from.name}->${to.name}`,
    downtimeMs: res.downtimeMs,
    totalMs: res.totalMs,
    bytes: res.bytes,
    goodputMBps: res.goodputMBps,
    phases: res.phases,
    cliMs: r1(cliMs),
    pongAfterMs: r1(pongAfterMs)
  }
}

// ---------------------------------------------------------------------------------

async function main (): Promise<void> {
  const o = parseFlags(process.argv.slice(2), { keys: 100_000, runs: 3, strategies: STRATEGIES.join(','), raw: true, cli: true }, USAGE)
  const strategies = o.strategies.split(',').map((s) => s.trim()).filter(Boolean)
  for (const s of strategies) if (!(STRATEGIES as readonly string[]).includes(s)) throw new Error(`unknown strategy ${s} (${STRATEGIES.join(', ')})`)
  if (!Number.isInteger(o.keys) || o.keys < 1) throw new Error('--keys must be a positive integer')
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark builds a testbed (network namespaces) and runs runc/CRIU')
  if (strategies.some((s) => s.startsWith('post-copy'))) {
    const pipeMax = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim())
    if (pipeMax < 16 * 1024 * 1024) throw new Error(`post-copy needs fs.pipe-max-size >= 16777216 (it is ${pipeMax}; see /work/shared/notes/host.md), or pass --strategies stop-copy`)
  }
  const machine = machineInfo()

  let c: Cluster | undefined
  let raw: RawRunc | undefined
  let cleaning: Promise<void> | undefined
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      log('cleaning up')
      await raw?.destroy().catch((err) => log(`raw runc cleanup: ${(err as Error).message}`))
      await c?.destroy().catch((err) => log(`cluster cleanup: ${(err as Error).message}`))
    })()
    await cleaning
  }
  const offSignals = cleanupOnSignals(cleanup)

  const locals: LocalSample[] = []
  const hops: HopSample[] = []
  try {
    log('starting a testbed with two nodes')
    c = await startCluster({ hosts: 2, args: NODE_ARGS })
    const n1 = c.node('n1')
    const n2 = c.node('n2')
    await c.waitAllAlive(30_000)
    const status = await c.statusApi(n1)
    log(`n1 ${n1.host.ip}, n2 ${n2.host.ip}; runc ${status.runc}, criu ${status.criu}`)

    if (o.raw) {
      raw = new RawRunc(c, status.runc, status.criu)
      log(`raw runc redis in h1 on port ${RAW_PORT} with ${o.keys} keys`)
      await raw.start(o.keys)
    }

    const bundle = path.join(c.root, 'bundles', 'redis')
    const b = await execa(MSC, ['bundle', 'redis', bundle, '--port', String(REDIS_PORT), '--bind', '0.0.0.0'], { reject: false })
    if (b.exitCode !== 0) throw new Error(`msc bundle redis: ${String(b.stderr)}`)
    const run = await c.msc(n1, 'run', 'redis', bundle)
    if (run.exitCode !== 0) throw new Error(`msc run redis on n1: ${run.stderr}`)
    await untilPong(n1.host.ip, REDIS_PORT)
    log(`msc redis on n1 with ${o.keys} keys`)
    await populate(n1.host.ip, REDIS_PORT, o.keys)
    await verifyRedis(n1.host.ip, REDIS_PORT, o.keys, 'msc redis after populating')

    for (let r = 1; r <= o.runs; r++) {
      // Short pauses between samples: redis closes the verifying clients' sockets
      // (a dump with an established TCP connection would fail), the machine settles.
      if (raw != null) {
        const s = await raw.cycle(r, o.keys)
        locals.push(s)
        log(`round ${r}: raw runc checkpoint ${s.checkpointMs} ms + restore ${s.restoreMs} ms = ${s.totalMs} ms`)
        await sleep(300)
      }
      {
        const s = await mscLocalApi(n1, r, o.keys)
        locals.push(s)
        log(`round ${r}: msc local (API) checkpoint ${s.checkpointMs} ms + restore ${s.restoreMs} ms = ${s.totalMs} ms`)
        await sleep(300)
      }
      if (o.cli) {
        const s = await mscLocalCli(c, n1, r, o.keys)
        locals.push(s)
        log(`round ${r}: msc local (CLI) checkpoint ${s.checkpointMs} ms + restore ${s.restoreMs} ms = ${s.totalMs} ms`)
        await sleep(300)
      }
      for (const strategy of strategies) {
        for (const [from, to] of [[n1, n2], [n2, n1]] as const) {
          const s = await hop(c, from, to, strategy, r, o.keys)
          hops.push(s)
          log(`round ${r}: ${strategy} ${s.hop}: downtime ${s.downtimeMs} ms, total ${s.totalMs} ms, ${r1(s.bytes / 1e6)} MB`)
          await sleep(300)
        }
      }
    }
    machine.loadEnd = os.loadavg().map((x) => round(x, 2))

    // ---- summary ----
    const localSummary = (['raw-runc', 'msc-local', 'msc-local-cli'] as const).map((m) => {
      const ss = locals.filter((s) => s.method === m)
      if (ss.length === 0) return null
      return {
        method: m,
        samples: ss.length,
        checkpointMs: r1(median(ss.map((s) => s.checkpointMs))),
        restoreMs: r1(median(ss.map((s) => s.restoreMs))),
        totalMs: r1(median(ss.map((s) => s.totalMs))),
        toPongMs: r1(median(ss.map((s) => s.toPongMs))),
        imageMB: r1(median(ss.map((s) => s.imageBytes)) / 1e6)
      }
    }).filter((x) => x != null)
    const base = (m: string): number | undefined => localSummary.find((x) => x.method === m)?.totalMs
    const hopSummary = strategies.map((st) => {
      const ss = hops.filter((h) => h.strategy === st)
      const phaseNames = [...new Set(ss.flatMap((h) => Object.keys(h.phases)))]
      return {
        strategy: st,
        samples: ss.length,
        downtimeMs: r1(median(ss.map((h) => h.downtimeMs))),
        downtimeMinMs: Math.min(...ss.map((h) => h.downtimeMs)),
        downtimeMaxMs: Math.max(...ss.map((h) => h.downtimeMs)),
        totalMs: r1(median(ss.map((h) => h.totalMs))),
        MB: r1(median(ss.map((h) => h.bytes)) / 1e6),
        cliMs: r1(median(ss.map((h) => h.cliMs))),
        pongAfterMs: r1(median(ss.map((h) => h.pongAfterMs))),
        phasesMs: Object.fromEntries(phaseNames.map((p) => [p, r1(median(ss.map((h) => h.phases[p] ?? 0)))]))
      }
    })
    const ratios = hopSummary.map((h) => ({
      strategy: h.strategy,
      'downtime / raw runc ck+rs': ratio(h.downtimeMs, base('raw-runc')),
      'downtime / msc local ck+rs': ratio(h.downtimeMs, base('msc-local')),
      'total / raw runc ck+rs': ratio(h.totalMs, base('raw-runc')),
      'total / msc local ck+rs': ratio(h.totalMs, base('msc-local'))
    }))

    const file = await writeResults('migration', {
      benchmark: 'migration',
      machine,
      options: o,
      status: { runc: status.runc, criu: status.criu, version: status.version },
      ratios,
      local: localSummary,
      migrations: hopSummary,
      samples: { local: locals, hops }
    })
    process.stdout.write(`\nredis with ${o.keys} keys, medians of ${o.runs} rounds (migrations: ${o.runs} x 2 hops per strategy); ` +
      `${machine.cpus} cpus, load ${machine.loadStart.join('/')} -> ${machine.loadEnd.join('/')}\n`)
    process.stdout.write('\nratios (< 1: the migration is down for less than a local checkpoint + restore):\n')
    process.stdout.write(table(ratios))
    process.stdout.write('\nlocal checkpoint + restore on one node (baselines):\n')
    process.stdout.write(table(localSummary.map((s) => ({
      method: s.method,
      'checkpoint ms': s.checkpointMs,
      'restore ms': s.restoreMs,
      'ck+rs ms': s.totalMs,
      'to PONG ms': s.toPongMs,
      'image MB': s.imageMB
    }))))
    process.stdout.write('\nmigrations n1 <-> n2 (as reported by the source node):\n')
    process.stdout.write(table(hopSummary.map((h) => ({
      strategy: h.strategy,
      hops: h.samples,
      'downtime ms': h.downtimeMs,
      'min-max': `${h.downtimeMinMs}-${h.downtimeMaxMs}`,
      'total ms': h.totalMs,
      MB: h.MB,
      'CLI wall ms': h.cliMs,
      phases: Object.entries(h.phasesMs).map(([k, v]) => `${k} ${v}`).join(', ')
    }))))
    process.stdout.write(`\nresults: ${file}\n`)
    await plotAfterRun(file)
  } finally {
    await cleanup()
    offSignals()
  }
}

await runBenchmark('migration', main)
