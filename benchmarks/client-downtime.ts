/**
 * A migration as a TCP client of the service sees it: the same redis, with the same
 * keys, moved with its own LAN address (`--network lan --ip`: connections restored
 * established) and in the host's network (connections restored closed: the client
 * reconnects to the new node), in one run. Three testbed hosts with one msc node each
 * (the testbed's bridge is the LAN, `--lan-interface eth0`); the clients run on h3
 * (test/helpers/lan-client.ts), each with ONE connection sending PING every 5 ms:
 *
 *   lan    `msc run kvlan BUNDLE --network lan --ip SUBNET.200/24`; the client holds its
 *          one connection: a failed request or a closed connection stops the benchmark.
 *   host   `msc run kvhost BUNDLE` on another port; the client, when its connection is
 *          reset, connects to n1 and n2 in turn until one answers (the gap includes
 *          finding it).
 *
 * Per round (--runs), per strategy (stop-copy, post-copy) and mode, in an order rotated
 * per round: `msc peer migrate NAME --to n2`, then back to n1. A hop's client downtime
 * is the longest time between two answers the client saw from just before the request
 * until it answers again steadily; beside it msc's own `downtimeMs`. After every hop:
 * DBSIZE is what it was (every key is there) and exactly one node runs it.
 *
 * Ratios: client gap(lan) / client gap(host) per strategy, and client gap / msc
 * downtimeMs per mode. Output: a table, benchmarks/results/client-downtime-STAMP.{json,csv},
 * and docs/benchmarks/client-downtime.svg.
 *
 *   node benchmarks/client-downtime.ts [--runs 2] [--keys 100000]
 *
 * Needs root, runc, CRIU 4.2, redis (npm run setup), iproute2, iptables, arping, and
 * fs.pipe-max-size >= 16 MiB for post-copy. Only testbed addresses are used.
 */
import path from 'node:path'
import os from 'node:os'
import fs from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { makeBundle, startCluster, waitFor, type Cluster, type ClusterNode } from '../test/helpers/cluster.ts'
import { ClientProcess } from '../test/helpers/client-process.ts'
import { REDIS_CLI } from '../src/bundles/redis.ts'
import type { MigrationResultInfo } from '../src/api/types.ts'
import { cleanupOnSignals, log, machineInfo, median, parseFlags, ratio, round, runBenchmark, table, writeResults } from './lib.ts'
import { plotAfterRun } from './plot.ts'

const USAGE = 'usage: node benchmarks/client-downtime.ts [--runs N] [--keys N]   (as root)'
const NODE_ARGS = ['--mdns-interval', '1', '--ping-interval', '1', '--ping-timeout', '10', '--lan-interface', 'eth0']
const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'helpers', 'lan-client.ts')
const STRATEGIES = ['stop-copy', 'post-copy'] as const
const MODES = ['lan', 'host'] as const
type Mode = typeof MODES[number]

interface Service {
  mode: Mode
  name: string
  /** Its own address (lan), or null: it answers at its owner's. */
  lanAddr: string | null
  owner: ClusterNode
  port: number
  client: ClientProcess
  keys: number
}

interface Hop {
  mode: Mode
  strategy: string
  round: number
  hop: string
  clientGapMs: number
  mscDowntimeMs: number | null
  totalMs: number
  reconnects: number
}

async function redisCli (c: Cluster, host: string, port: number, ...args: string[]): Promise<string> {
  const r = await c.tb.exec('h3', REDIS_CLI, ['-h', host, '-p', String(port), ...args])
  if (r.exitCode !== 0) throw new Error(`redis-cli ${args.join(' ')} at ${host}:${port}: ${r.stderr}`)
  return r.stdout.trim()
}

async function startService (c: Cluster, mode: Mode, keys: number): Promise<Service> {
  const n1 = c.node('n1')
  const subnet = n1.host.ip.split('.').slice(0, 3).join('.')
  const name = mode === 'lan' ? 'kvlan' : 'kvhost'
  const port = mode === 'lan' ? 6379 : 6390
  const lanAddr = `${subnet}.200`
  const bundle = await makeBundle('redis', path.join(c.root, name), '--port', String(port))
  const net = mode === 'lan' ? ['--network', 'lan', '--ip', `${lanAddr}/24`] : []
  const r = await c.msc(n1, 'run', name, bundle, ...net, '--replicas', '0')
  if (r.exitCode !== 0) throw new Error(`msc run ${name}: ${r.stderr}\n${c.logTail(n1)}`)
  const where = mode === 'lan' ? lanAddr : n1.host.ip
  await waitFor(async () => (await redisCli(c, where, port, 'PING').catch(() => '')) === 'PONG', 20_000, `${name} to answer`)
  // One script, not DEBUG POPULATE (redis 7 refuses DEBUG unless enabled).
  await redisCli(c, where, port, 'EVAL', "for i=1,tonumber(ARGV[1]) do redis.call('SET','key:'..i,i) end", '0', String(keys))
  const size = Number(await redisCli(c, where, port, 'DBSIZE'))
  if (size !== keys) throw new Error(`${name}: DBSIZE ${size} after the fill, ${keys} asked for`)
  const hosts = mode === 'lan' ? lanAddr : [n1.host.ip, c.node('n2').host.ip].join(',')
  const proc = await c.tb.spawn('h3', process.execPath, [CLIENT, hosts, String(port), ...(mode === 'host' ? ['reconnect'] : [])], { stdio: ['pipe', 'pipe', 'inherit'] })
  const client = new ClientProcess(proc)
  await client.waitLine((l) => l === 'ready', 10_000, 'ready')
  return { mode, name, lanAddr: mode === 'lan' ? lanAddr : null, owner: n1, port, client, keys }
}

async function hop (c: Cluster, s: Service, from: ClusterNode, to: ClusterNode, strategy: string, round: number): Promise<Hop> {
  const what = `${s.mode} ${strategy} ${from.name} -> ${to.name}, round ${round}`
  await s.client.resetGap()
  const before = await s.client.report()
  const r = await c.mscTimed(from, 240_000, 'peer', 'migrate', s.name, '--to', to.name, '--strategy', strategy, '--json')
  let res: MigrationResultInfo
  try {
    res = JSON.parse(r.stdout) as MigrationResultInfo
  } catch {
    throw new Error(`${what}: no JSON result (exit ${r.exitCode}): ${r.stderr}`)
  }
  if (r.exitCode !== 0 || !res.ok || res.runningOn !== to.peerId) throw new Error(`${what}: failed: ${r.stdout}\n${c.logTail(from, 20)}`)
  s.owner = to
  // Answered steadily again: 200 PINGs after the migration returned (PINGs held while
  // the address was quiet come through on the client's next TCP retransmission).
  const after = (await s.client.report()).pings
  await waitFor(async () => (await s.client.report()).pings > after + 200, 30_000, `${what}: the client answered again`)
  const rep = await s.client.report()
  if (s.mode === 'lan' && (rep.errors.length > 0 || rep.closed)) throw new Error(`${what}: the lan client's connection broke: ${JSON.stringify(rep)}`)
  const size = Number(await redisCli(c, s.lanAddr ?? s.owner.host.ip, s.port, 'DBSIZE'))
  if (size !== s.keys) throw new Error(`${what}: DBSIZE ${size} after the hop, ${s.keys} before`)
  for (const n of c.nodes) {
    const ps = await c.msc(n, 'ps', '--json')
    const runs = (JSON.parse(ps.stdout) as Array<{ name: string; state: string }>).some((x) => x.name === s.name && x.state === 'running')
    if (runs !== (n === to)) throw new Error(`${what}: ${s.name} ${runs ? 'runs' : 'does not run'} on ${n.name}`)
  }
  return {
    mode: s.mode,
    strategy,
    round,
    hop: `${from.name}->${to.name}`,
    clientGapMs: rep.maxGapMs,
    mscDowntimeMs: res.downtimeMs,
    totalMs: res.totalMs,
    reconnects: rep.reconnects - before.reconnects
  }
}

function summarize (hops: Hop[]) {
  const rows = STRATEGIES.flatMap((strategy) =>
    MODES.map((mode) => {
      const hs = hops.filter((h) => h.mode === mode && h.strategy === strategy)
      const gaps = hs.map((h) => h.clientGapMs)
      const msc = hs.flatMap((h) => h.mscDowntimeMs == null ? [] : [h.mscDowntimeMs])
      return {
        strategy,
        mode,
        hops: hs.length,
        clientGapMs: round(median(gaps)),
        clientGapMinMs: Math.min(...gaps),
        clientGapMaxMs: Math.max(...gaps),
        mscDowntimeMs: msc.length === 0 ? null : round(median(msc)),
        'client gap / msc downtimeMs': msc.length === 0 ? null : ratio(median(gaps), median(msc)),
        reconnects: hs.reduce((a, h) => a + h.reconnects, 0)
      }
    })
  )
  const ratios = STRATEGIES.map((strategy) => ({
    strategy,
    'client gap lan / host': ratio(rows.find((r) => r.strategy === strategy && r.mode === 'lan')?.clientGapMs, rows.find((r) => r.strategy === strategy && r.mode === 'host')?.clientGapMs)
  }))
  return { rows, ratios }
}

async function main (): Promise<void> {
  const o = parseFlags(process.argv.slice(2), { runs: 2, keys: 100_000 }, USAGE)
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error('--runs must be a positive integer')
  if (!Number.isInteger(o.keys) || o.keys < 1 || o.keys > 10_000_000) throw new Error('--keys takes 1 to 10,000,000')
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark builds a testbed (network namespaces) and runs runc/CRIU')
  const machine = machineInfo()
  let c: Cluster | undefined
  const services: Service[] = []
  const cleanup = async (): Promise<void> => {
    for (const s of services.splice(0)) s.client.proc.kill('SIGKILL')
    await c?.destroy().catch((err) => log(`cluster cleanup: ${(err as Error).message}`))
    c = undefined
  }
  const offSignals = cleanupOnSignals(cleanup)
  try {
    log('starting a testbed with three nodes (a cluster key; the bridge is the LAN)')
    c = await startCluster({ hosts: 3, args: NODE_ARGS })
    await c.waitAllAlive(30_000)
    for (const mode of MODES) {
      services.push(await startService(c, mode, o.keys))
      log(`${mode}: redis with ${o.keys} keys on n1, a client on h3 with one connection`)
    }
    const hops: Hop[] = []
    const n1 = c.node('n1')
    const n2 = c.node('n2')
    for (let r = 1; r <= o.runs; r++) {
      const units = STRATEGIES.flatMap((st) => services.map((s) => [s, st] as const))
      const k = (r - 1) % units.length
      for (const [s, st] of [...units.slice(k), ...units.slice(0, k)]) {
        for (const [from, to] of [[n1, n2], [n2, n1]] as const) {
          const h = await hop(c, s, from, to, st, r)
          hops.push(h)
          log(`round ${r}: ${h.mode} ${h.strategy} ${h.hop}: client gap ${h.clientGapMs} ms, msc downtimeMs ${h.mscDowntimeMs}, ${h.reconnects} reconnects`)
        }
      }
    }
    machine.loadEnd = os.loadavg().map((x) => round(x, 2))
    const { rows, ratios } = summarize(hops)
    const file = await writeResults('client-downtime', { benchmark: 'client-downtime', machine, options: { ...o, intervalMs: 5 }, summary: rows, ratios, hops })
    const cols: Array<keyof Hop> = ['mode', 'strategy', 'round', 'hop', 'clientGapMs', 'mscDowntimeMs', 'totalMs', 'reconnects']
    await fs.writeFile(file.replace(/\.json$/, '.csv'), [cols.join(','), ...hops.map((h) => cols.map((k) => h[k] ?? '').join(','))].join('\n') + '\n')
    process.stdout.write(`\nredis with ${o.keys} keys, a PING every 5 ms on one connection, ${o.runs} rounds x 2 hops; load ${machine.loadStart.join('/')} -> ${machine.loadEnd.join('/')}\n`)
    process.stdout.write(table(rows))
    process.stdout.write(table(ratios))
    process.stdout.write(`\nresults: ${file}\n`)
    await plotAfterRun(file)
  } finally {
    await cleanup()
    offSignals()
  }
}

await runBenchmark('client-downtime', main)
