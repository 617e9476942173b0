/**
 * What membership costs each node as the cluster grows, and what a node's claim count
 * costs its gossip: the baseline of issue #12. N idle msc nodes, each in its own
 * network namespace of a Testbed (test/testbed, test/helpers/cluster.ts), with a
 * cluster key (--psk), mDNS and the default intervals (1 s heartbeat, 5 s ping
 * timeout), for each N of --counts:
 *
 *   start ms     each node is started alone, one after the other: from spawning it until
 *                its API answered (the harness's first status request); median and max
 *                (the target: 2 s on an idle host)
 *   alive ms     from the moment the last node answered on its API until every node
 *                lists every other as alive (the latest `stateSince` of those entries,
 *                each node's own clock, which is this machine's)
 *   cpu %        per node, over an idle window of --window seconds after that: the node
 *                process's utime + stime (/proc/PID/stat) over the window, and
 *                separately the CPU of the children it reaped in the window (its
 *                `runc list` and the like: cutime + cstime)
 *   in B/s       per node, bytes its namespace received in the window (tx_bytes of the
 *                host-side veth of its namespace; everything: gossip, pings, mDNS)
 *   flaps        suspect and dead transitions logged by all nodes in the window
 *                ("peer suspect" / "peer dead" lines of their JSON logs)
 *   pause deaths after the window, one node is stopped (SIGSTOP) for --pause seconds:
 *                the "peer dead" lines about it logged by the others in the 15 s after
 *                (the target is 0: a stall shorter than the suspicion timeout is refuted)
 *   detect ms    then the last node's processes are killed (Testbed.kill): from the kill
 *                until each other node lists it dead (its `stateSince`); median and max
 *                over the observers (the target: --ping-timeout + 2 probe intervals)
 * Ratios are against N = 2 in the same run (N = 2 is always measured first).
 *
 * The records part: two nodes; n1 first with --small records (stopped containers:
 * records written to its data dir while it is down, in the node's own format), then
 * restarted with --large; each time, once n2 lists all of n1's claims, n1's bytes out
 * per second over --records-window seconds (rx_bytes of its veth: its heartbeats,
 * claim pages, pings and mDNS), its CPU (as above: reading its records at every
 * heartbeat is part of it) and n2's view of n1's claim count. Ratios large/small.
 *
 *   node benchmarks/membership-scale.ts [--counts 2,8,16,32] [--window 60] [--pause 2] [--parts scale,records]
 *        [--small 10] [--large 1000] [--records-window 30] [--protocols]
 *
 * --protocols: the nodes also serve their metrics (--metrics-listen on their namespace's
 * address), and the window's bytes received are given by protocol too, by libp2p's
 * counters: what each protocol's streams carried, and 'global', everything on the
 * connections (noise, yamux, multistream). Where the veth's bytes do not say which part
 * of the traffic grows with N, this does.
 *
 * Writes benchmarks/results/membership-scale-<timestamp>.json and .csv (one row per
 * N and per records case), and, with benchmarks/plot.ts, docs/benchmarks/
 * membership-scale-{cpu,traffic,alive}.svg: each cost against N, medians over the
 * nodes with min/max whiskers, and the 1.5x-of-N=2 target line.
 * Needs root, iproute2, nsenter, iptables/ebtables and runc. Only testbed addresses.
 * Asserts nothing about time; a cluster that never converges is reported as such.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import os from 'node:os'
import { startCluster, waitFor, type Cluster, type ClusterNode } from '../test/helpers/cluster.ts'
import { sleep } from '../test/helpers/node-harness.ts'
import { log, machineInfo, median, parseFlags, ratio, round, runBenchmark, table, writeResults, type MachineInfo } from './lib.ts'

const USAGE = `usage: node benchmarks/membership-scale.ts [--counts 2,8,16,32] [--window 60] [--pause 2] [--parts scale,records]
       [--small 10] [--large 1000] [--records-window 30] [--protocols]   (as root; see the comment at the top)
`
/**
 * How often the nodes' APIs are polled while waiting for a verdict or for all to be
 * alive. The times measured are the nodes' own (`stateSince`), so the poll only has to
 * see them: every 100 ms (the harness's default) was 320 API requests a second at 32
 * nodes, load on the 2 cores the nodes share, while they joined or judged a kill.
 */
const POLL_MS = 1_000
const CLK_TCK = 100
/**
 * How long one node may take to open its API. All N nodes share this 2-core machine:
 * the 20th and later starts took 10 to 30 s here (the harness's default limit is 30 s).
 */
const START_LIMIT_MS = 120_000
/** How long a cluster may take to see itself alive before it is reported as not converging. */
const CONVERGE_LIMIT_MS = 150_000

interface ScaleRow {
  nodes: number
  aliveMs: number | null
  /** Each node's start, one at a time: from spawning it until its API answered (median, max). */
  startMedianMs: number
  startMaxMs: number
  cpuNodePct: number
  cpuChildrenPct: number
  inBytesPerS: number
  flaps: number
  pauseDeaths: number
  detectMedianMs: number | null
  detectMaxMs: number | null
  perNode: Array<{ name: string; cpuNodePct: number; cpuChildrenPct: number; inBytesPerS: number }>
  /** With --protocols: bytes per second a node received, by libp2p's count, per protocol ('global': the connections); median over the nodes. */
  byProtocol?: Record<string, number>
}

interface RecordsRow {
  records: number
  outBytesPerS: number
  claimsSeen: number
  windowS: number
  cpuNodePct: number
  cpuChildrenPct: number
}

/** utime + stime and cutime + cstime of a process, in seconds. */
async function cpuOf (pid: number): Promise<{ self: number; children: number }> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Fields after the name start at state (field 3): utime is field 14, cstime 17.
  const n = (i: number): number => Number(f[i - 3])
  return { self: (n(14) + n(15)) / CLK_TCK, children: (n(16) + n(17)) / CLK_TCK }
}

async function vethBytes (node: ClusterNode): Promise<{ intoNs: number; outOfNs: number }> {
  const dir = `/sys/class/net/${node.host.vethHost}/statistics`
  // The host-side end: what it transmits goes into the namespace.
  const read = async (f: string): Promise<number> => Number((await fs.readFile(path.join(dir, f), 'utf8')).trim())
  return { intoNs: await read('tx_bytes'), outOfNs: await read('rx_bytes') }
}

/** Where a node serves its metrics with --protocols: its namespace's address (the benchmark reaches it over the veth). */
const METRICS_PORT = 9464

/**
 * libp2p's received-bytes counters of a node (`libp2p_data_transfer_bytes_total`, by
 * protocol, and 'global' for its connections: noise, yamux and multistream included).
 */
async function receivedByProtocol (node: ClusterNode): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${node.host.ip}:${METRICS_PORT}/metrics`, { signal: AbortSignal.timeout(30_000) })).text()
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^libp2p_data_transfer_bytes_total\{protocol="(.+) received"\} (\S+)$/.exec(line)
    if (m != null) out.set(m[1]!, Number(m[2]))
  }
  return out
}

interface ProtocolCounts {
  at: number
  counts: Map<string, number>
}

/**
 * Every node's counters, one node at a time (32 scrapes at once on 2 cores outlasted a
 * 10 s timeout), each with the time it was read. A node that does not answer is null:
 * the by-protocol figures are an extra, and must not cost the run its main ones.
 */
async function scrapeAll (nodes: ClusterNode[]): Promise<Array<ProtocolCounts | null>> {
  const out: Array<ProtocolCounts | null> = []
  for (const n of nodes) {
    try {
      const counts = await receivedByProtocol(n)
      out.push({ at: Date.now(), counts })
    } catch (err) {
      log(`${n.name}: metrics not read: ${(err as Error).message}`)
      out.push(null)
    }
  }
  return out
}

/** Per protocol, the median over the nodes read at both ends of bytes received per second between the two reads. */
function protocolRates (before: Array<ProtocolCounts | null>, after: Array<ProtocolCounts | null>): Record<string, number> | undefined {
  const pairs = before.flatMap((b, i) => {
    const a = after[i]
    return b != null && a != null && a.at > b.at ? [{ b, a }] : []
  })
  if (pairs.length === 0) return undefined
  const names = new Set(pairs.flatMap(({ a }) => [...a.counts.keys()]))
  const out: Record<string, number> = {}
  for (const name of [...names].sort()) out[name] = round(median(pairs.map(({ b, a }) => ((a.counts.get(name) ?? 0) - (b.counts.get(name) ?? 0)) / ((a.at - b.at) / 1000))), 0)
  return out
}

/** "peer suspect" / "peer dead" lines in the node's JSON log with a time in [from, to]. */
async function flapsIn (node: ClusterNode, from: number, to: number): Promise<number> {
  const text = await fs.readFile(node.logFile, 'utf8').catch(() => '')
  let n = 0
  for (const line of text.split('\n')) {
    if (!line.includes('"peer suspect"') && !line.includes('"peer dead"')) continue
    try {
      const o = JSON.parse(line) as { time?: number; msg?: string }
      if ((o.msg === 'peer suspect' || o.msg === 'peer dead') && o.time != null && o.time >= from && o.time <= to) n++
    } catch {}
  }
  return n
}

const pidOf = (n: ClusterNode): number => {
  if (n.proc?.pid == null) throw new Error(`${n.name} is not running`)
  return n.proc.pid
}

/** "peer dead" lines about `subject` in `node`'s JSON log since `from`. */
async function deathsOf (node: ClusterNode, subject: ClusterNode, from: number): Promise<number> {
  const text = await fs.readFile(node.logFile, 'utf8').catch(() => '')
  let n = 0
  for (const line of text.split('\n')) {
    if (!line.includes('"peer dead"') || !line.includes(subject.peerId)) continue
    try {
      const o = JSON.parse(line) as { time?: number; msg?: string; peer?: string }
      if (o.msg === 'peer dead' && o.peer === subject.peerId && o.time != null && o.time >= from) n++
    } catch {}
  }
  return n
}

/** A node stopped for `pauseS`: how many "peer dead" verdicts about it the others logged. */
async function pauseDeaths (c: Cluster, victim: ClusterNode, pauseS: number): Promise<number> {
  const from = Date.now()
  const pid = pidOf(victim)
  process.kill(pid, 'SIGSTOP')
  try {
    await sleep(pauseS * 1000)
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  await sleep(15_000)
  let n = 0
  for (const o of c.nodes) if (o !== victim) n += await deathsOf(o, victim, from)
  return n
}

/** Kills the victim's processes; per other node, ms until it listed the victim dead (null: not within 60 s). */
async function detection (c: Cluster, victim: ClusterNode): Promise<Array<number | null>> {
  const killedAt = Date.now()
  await c.tb.kill(victim.host)
  return await Promise.all(c.nodes.filter((o) => o !== victim).map(async (o) => {
    try {
      const p = await c.waitState(o, victim, 'dead', 60_000, POLL_MS)
      return Date.parse(p.stateSince) - killedAt
    } catch {
      return null
    }
  }))
}

async function measureScale (count: number, windowS: number, pauseS: number, protocols: boolean): Promise<ScaleRow> {
  log(`N=${count}: starting ${count} nodes`)
  const c = await startCluster({ hosts: count, env: { LOG_LEVEL: 'info' }, start: false })
  try {
    // One at a time: many Node starts at once on a 2-core machine outlast the harness's start timeout.
    const starts: number[] = []
    for (const n of c.nodes) {
      const t = Date.now()
      await c.start(n, protocols ? ['--metrics-listen', `${n.host.ip}:${METRICS_PORT}`] : undefined, { timeoutMs: START_LIMIT_MS })
      starts.push(Date.now() - t)
    }
    const statuses = await Promise.all(c.nodes.map(async (x) => await c.statusApi(x)))
    const lastStart = Math.max(...statuses.map((s) => Date.parse(s.startedAt)))
    let aliveMs: number | null = null
    try {
      const views = await c.waitAllAlive(CONVERGE_LIMIT_MS, c.nodes, POLL_MS)
      let converged = -Infinity
      for (const list of views.values()) for (const p of list) converged = Math.max(converged, Date.parse(p.stateSince) - lastStart)
      aliveMs = Math.max(0, converged)
    } catch (err) {
      log(`N=${count}: ${(err as Error).message.slice(0, 300)}`)
    }
    log(`N=${count}: all alive after ${aliveMs ?? 'never'} ms; idle window of ${windowS} s`)
    // The metrics are read outside the CPU and veth window: serving them is not membership's cost.
    const proto0 = protocols ? await scrapeAll(c.nodes) : []
    const cpu0 = await Promise.all(c.nodes.map(async (n) => await cpuOf(pidOf(n))))
    const net0 = await Promise.all(c.nodes.map(vethBytes))
    const t0 = Date.now()
    await sleep(windowS * 1000)
    const cpu1 = await Promise.all(c.nodes.map(async (n) => await cpuOf(pidOf(n))))
    const net1 = await Promise.all(c.nodes.map(vethBytes))
    const t1 = Date.now()
    const proto1 = protocols ? await scrapeAll(c.nodes) : []
    const secs = (t1 - t0) / 1000
    const byProtocol = protocols ? protocolRates(proto0, proto1) : undefined
    const perNode = c.nodes.map((n, i) => ({
      name: n.name,
      cpuNodePct: round((cpu1[i]!.self - cpu0[i]!.self) / secs * 100, 2),
      cpuChildrenPct: round((cpu1[i]!.children - cpu0[i]!.children) / secs * 100, 2),
      inBytesPerS: round((net1[i]!.intoNs - net0[i]!.intoNs) / secs, 0)
    }))
    let flaps = 0
    for (const n of c.nodes) flaps += await flapsIn(n, t0, t1)
    log(`N=${count}: ${flaps} flaps; pausing n${Math.min(2, count)} for ${pauseS} s`)
    const paused = await pauseDeaths(c, c.node(`n${Math.min(2, count)}`), pauseS)
    await c.waitAllAlive(60_000, c.nodes, POLL_MS).catch(() => {})
    const detected = await detection(c, c.node(`n${count}`))
    const seen = detected.filter((x): x is number => x != null)
    log(`N=${count}: ${paused} dead verdicts about the paused node; killed node dead in ${seen.length}/${detected.length} views, max ${Math.max(...seen)} ms`)
    return {
      nodes: count,
      aliveMs,
      startMedianMs: round(median(starts), 0),
      startMaxMs: Math.max(...starts),
      pauseDeaths: paused,
      detectMedianMs: seen.length === detected.length && seen.length > 0 ? round(median(seen), 0) : null,
      detectMaxMs: seen.length === detected.length && seen.length > 0 ? Math.max(...seen) : null,
      cpuNodePct: round(median(perNode.map((p) => p.cpuNodePct)), 2),
      cpuChildrenPct: round(median(perNode.map((p) => p.cpuChildrenPct)), 2),
      inBytesPerS: round(median(perNode.map((p) => p.inBytesPerS)), 0),
      flaps,
      perNode,
      ...(byProtocol != null ? { byProtocol } : {})
    }
  } finally {
    await c.destroy()
  }
}

/** A stopped container's record, as the node writes it at `msc run` (src/node/container-manager.ts). */
async function writeRecord (dataDir: string, name: string): Promise<void> {
  const dir = path.join(dataDir, 'containers', name)
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  const record = { name, bundle: path.join(dir, 'bundle'), createdAt: new Date().toISOString(), startedAt: null, checkpointed: false, epoch: 1 }
  await fs.writeFile(path.join(dir, 'container.json'), JSON.stringify(record, null, 2) + '\n')
}

async function measureRecords (counts: number[], windowS: number): Promise<RecordsRow[]> {
  const c: Cluster = await startCluster({ hosts: 2, start: false, env: { LOG_LEVEL: 'info' } })
  const rows: RecordsRow[] = []
  try {
    const [n1, n2] = [c.node('n1'), c.node('n2')]
    await c.start(n1)
    await c.start(n2)
    let written = 0
    for (const records of counts) {
      await c.stop(n1)
      for (; written < records; written++) await writeRecord(n1.dataDir, `idle-${String(written).padStart(5, '0')}`)
      await c.start(n1)
      log(`records=${records}: waiting for n2 to list all of n1's claims`)
      await c.waitAllAlive(60_000)
      let seen = 0
      await waitFor(async () => {
        seen = (await c.peersApi(n2)).find((p) => p.peerId === n1.peerId && p.state === 'alive')?.containers.length ?? 0
        return seen === records
      }, 60_000, `n2 to list ${records} claims of n1 (last: ${seen})`)
      // Let the start-up exchange (fetches, mesh) settle before the window.
      await sleep(5_000)
      const b0 = await vethBytes(n1)
      const cpu0 = await cpuOf(pidOf(n1))
      const t0 = Date.now()
      await sleep(windowS * 1000)
      const b1 = await vethBytes(n1)
      const cpu1 = await cpuOf(pidOf(n1))
      const secs = (Date.now() - t0) / 1000
      seen = (await c.peersApi(n2)).find((p) => p.peerId === n1.peerId)?.containers.length ?? 0
      rows.push({
        records,
        outBytesPerS: round((b1.outOfNs - b0.outOfNs) / secs, 0),
        claimsSeen: seen,
        windowS: round(secs, 1),
        cpuNodePct: round((cpu1.self - cpu0.self) / secs * 100, 2),
        cpuChildrenPct: round((cpu1.children - cpu0.children) / secs * 100, 2)
      })
      log(`records=${records}: n1 sends ${rows.at(-1)!.outBytesPerS} B/s; n2 lists ${seen} claims`)
    }
  } finally {
    await c.destroy()
  }
  return rows
}

/** The target for 16 and 32 nodes: per-node cost within 1.5x of N = 2. */
const TARGET_RATIO = 1.5

/** Cost against N, one chart per cost (drawn by benchmarks/plot.ts; a failure to plot does not fail the run). */
async function plot (scale: ScaleRow[], machine: MachineInfo, file: string): Promise<void> {
  const base = scale.find((r) => r.nodes === 2)
  if (base == null || scale.length < 2) return
  try {
    const { writeChart } = await import('./plot.ts')
    const notes = [`${scale.map((r) => r.nodes).join(', ')} idle nodes, each in its own network namespace of one 2-core machine; --psk, default intervals`, `results: benchmarks/results/${path.basename(file)}`]
    const point = (r: ScaleRow, pick: (p: ScaleRow['perNode'][number]) => number, value: number): { x: number; value: number; min: number; max: number } => ({ x: r.nodes, value, min: Math.min(...r.perNode.map(pick)),
      max: Math.max(...r.perNode.map(pick)) })
    const target = (v: number): Array<{ value: number; label: string }> => [{ value: round(v * TARGET_RATIO, 2), label: `${TARGET_RATIO}x N=2 (issue #12 target)` }]
    const charts = [
      {
        name: 'membership-scale-cpu',
        spec: {
          kind: 'line' as const,
          title: 'Idle membership: CPU per node against cluster size',
          machine,
          notes,
          xLabel: 'nodes',
          yLabel: 'CPU, % of one core',
          series: [
            { name: 'node process', points: scale.map((r) => point(r, (p) => p.cpuNodePct, r.cpuNodePct)) },
            { name: 'its children (runc list)', points: scale.map((r) => point(r, (p) => p.cpuChildrenPct, r.cpuChildrenPct)) }
          ],
          lines: target(base.cpuNodePct)
        },
        figures: scale.map((r) => ({ nodes: r.nodes, cpuNodePct: r.cpuNodePct, cpuChildrenPct: r.cpuChildrenPct, ratio: ratio(r.cpuNodePct, base.cpuNodePct) }))
      },
      {
        name: 'membership-scale-traffic',
        spec: {
          kind: 'line' as const,
          title: 'Idle membership: traffic into each node against cluster size',
          machine,
          notes,
          xLabel: 'nodes',
          yLabel: 'bytes in, KB/s',
          series: [{ name: "into the node's namespace", points: scale.map((r) => point(r, (p) => p.inBytesPerS / 1000, r.inBytesPerS / 1000)) }],
          lines: target(base.inBytesPerS / 1000)
        },
        figures: scale.map((r) => ({ nodes: r.nodes, inBytesPerS: r.inBytesPerS, ratio: ratio(r.inBytesPerS, base.inBytesPerS) }))
      },
      {
        name: 'membership-scale-alive',
        spec: {
          kind: 'line' as const,
          title: 'Start-up: until every node sees every other alive',
          machine,
          notes: [...notes, "from the last node's API answering; flaps are counted in the idle window after"],
          xLabel: 'nodes',
          yLabel: 'ms',
          series: [{ name: 'all alive', points: scale.filter((r) => r.aliveMs != null).map((r) => ({ x: r.nodes, value: r.aliveMs as number })) }]
        },
        figures: scale.map((r) => ({ nodes: r.nodes, aliveMs: r.aliveMs, flaps: r.flaps }))
      },
      {
        name: 'membership-scale-detection',
        spec: {
          kind: 'line' as const,
          title: 'A killed node: until every other node lists it dead',
          machine,
          notes: [...notes, "from the kill to each observer's stateSince of the dead verdict; median and last observer"],
          xLabel: 'nodes',
          yLabel: 'ms',
          series: [
            { name: 'median observer', points: scale.filter((r) => r.detectMedianMs != null).map((r) => ({ x: r.nodes, value: r.detectMedianMs as number })) },
            { name: 'last observer', points: scale.filter((r) => r.detectMaxMs != null).map((r) => ({ x: r.nodes, value: r.detectMaxMs as number })) }
          ],
          lines: [{ value: 5000 + 2 * 1000, label: 'PING_TIMEOUT + 2 probe intervals (issue #12 target)' }]
        },
        figures: scale.map((r) => ({ nodes: r.nodes, detectMedianMs: r.detectMedianMs, detectMaxMs: r.detectMaxMs, pauseDeaths: r.pauseDeaths }))
      }
    ]
    for (const chart of charts) process.stdout.write(`plot:    ${path.relative(process.cwd(), await writeChart(chart, file))}\n`)
  } catch (err) {
    process.stderr.write(`plotting failed: ${(err as Error).message}\n`)
  }
}

await runBenchmark('membership-scale', async () => {
  const o = parseFlags(process.argv.slice(2), { counts: '2,8,16,32', window: 60, pause: 2, parts: 'scale,records', small: 10, large: 1000, recordsWindow: 30, protocols: false }, USAGE)
  if (process.getuid?.() !== 0) throw new Error('run as root (network namespaces)')
  const parts = o.parts.split(',')
  const counts = [...new Set([2, ...o.counts.split(',').map(Number)])].sort((a, b) => a - b)
  const machine = machineInfo()
  const scale: ScaleRow[] = []
  if (parts.includes('scale')) {
    for (const n of counts) {
      // A size that cannot be brought up on this machine is reported, and the smaller ones are kept.
      try {
        scale.push(await measureScale(n, o.window, o.pause, o.protocols))
      } catch (err) {
        log(`N=${n}: not measured: ${(err as Error).message.slice(0, 300)}`)
      }
    }
  }
  const records = parts.includes('records') ? await measureRecords([o.small, o.large], o.recordsWindow) : []
  machine.loadEnd = os.loadavg().map((x) => round(x, 2))

  const base = scale.find((r) => r.nodes === 2)
  const scaleTable = scale.map((r) => ({
    nodes: r.nodes,
    'alive ms': r.aliveMs,
    'start ms (median)': r.startMedianMs,
    'start ms (max)': r.startMaxMs,
    'cpu node %': r.cpuNodePct,
    'cpu children %': r.cpuChildrenPct,
    'in B/s': r.inBytesPerS,
    flaps: r.flaps,
    'pause deaths': r.pauseDeaths,
    'detect ms (median)': r.detectMedianMs,
    'detect ms (max)': r.detectMaxMs,
    'x alive': ratio(r.aliveMs, base?.aliveMs),
    'x cpu': ratio(r.cpuNodePct, base?.cpuNodePct),
    'x in': ratio(r.inBytesPerS, base?.inBytesPerS)
  }))
  const small = records.find((r) => r.records === o.small)
  const recordsTable = records.map((r) => ({
    records: r.records,
    'n1 out B/s': r.outBytesPerS,
    'claims seen by n2': r.claimsSeen,
    'x out': ratio(r.outBytesPerS, small?.outBytesPerS),
    'n1 cpu %': r.cpuNodePct,
    'n1 children cpu %': r.cpuChildrenPct,
    'x cpu': ratio(r.cpuNodePct, small?.cpuNodePct)
  }))
  if (scale.length > 0) process.stdout.write(`\nidle membership, per node (medians), ratios against N = 2:\n${table(scaleTable)}`)
  const protocolNames = [...new Set(scale.flatMap((r) => Object.keys(r.byProtocol ?? {})))].sort()
  const protocolTable = protocolNames.map((name) => ({
    'received by protocol, B/s': name,
    ...Object.fromEntries(scale.flatMap((r) => [[`N=${r.nodes}`, r.byProtocol?.[name] ?? null], [`x N=${r.nodes}`, ratio(r.byProtocol?.[name] ?? null, base?.byProtocol?.[name])]]))
  }))
  if (protocolTable.length > 0) process.stdout.write(`\nper node (medians), libp2p's counts ('global': its connections, with noise, yamux and multistream):\n${table(protocolTable)}`)
  if (records.length > 0) process.stdout.write(`\none node's claims: its bytes out per second, ratio against ${o.small} records:\n${table(recordsTable)}`)
  const file = await writeResults('membership-scale', { machine, options: o, scale, records, scaleTable, recordsTable, protocolTable })
  const csv = file.replace(/\.json$/, '.csv')
  await fs.writeFile(csv, 'part,n,alive_ms,start_median_ms,start_max_ms,cpu_node_pct,cpu_children_pct,in_bytes_per_s,flaps,pause_deaths,detect_median_ms,detect_max_ms,out_bytes_per_s,claims_seen\n' +
    [...scale.map((r) => `scale,${r.nodes},${r.aliveMs ?? ''},${r.startMedianMs},${r.startMaxMs},${r.cpuNodePct},${r.cpuChildrenPct},${r.inBytesPerS},${r.flaps},${r.pauseDeaths},${r.detectMedianMs ?? ''},${r.detectMaxMs ?? ''},,`),
      ...records.map((r) => `records,${r.records},,,,${r.cpuNodePct},${r.cpuChildrenPct},,,,,,${r.outBytesPerS},${r.claimsSeen}`)].join('\n') +
    '\n')
  process.stdout.write(`\nwritten: ${file}\n         ${csv}\n`)
  await plot(scale, machine, file)
})
