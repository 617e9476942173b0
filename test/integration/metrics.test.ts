/**
 * The metrics endpoint as an operator scrapes it: two msc nodes, one per
 * network-namespace host of a Testbed, each started with `--metrics-listen
 * HOST_IP:4711` (its testbed address), scraped over HTTP from the root namespace
 * (which reaches every host through the testbed's bridge), as Prometheus would:
 *   - it answers in Prometheus text format, with libp2p's own metrics and msc's;
 *   - it listens on that address only (not on the host's loopback nor on 0.0.0.0);
 *   - the containers gauge shows the running counter, the peers gauge the other node;
 *   - after `msc peer migrate counter --to n2 --strategy stop-copy`, the source's
 *     migrations counter for stop-copy/succeeded went up by one, its downtime histogram
 *     has that sample, and the target's containers gauge shows the counter running.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), iproute2 (ss), nsenter (test/testbed).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { Testbed } from '../testbed/testbed.ts'
import { makeBundle, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import type { MigrationResultInfo } from '../../src/api/types.ts'

const METRICS_PORT = 4711
const NODE_ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3']

let c: Cluster
const n = (name: string): ClusterNode => c.node(name)
const urlOf = (x: ClusterNode): string => `http://${x.host.ip}:${METRICS_PORT}/metrics`

async function scrape (x: ClusterNode): Promise<{ status: number; contentType: string; text: string }> {
  const r = await fetch(urlOf(x), { signal: AbortSignal.timeout(10_000) })
  return { status: r.status, contentType: r.headers.get('content-type') ?? '', text: await r.text() }
}

/**
 * The value of one sample in Prometheus text format: `name{labels} value`, with exactly
 * these labels (in any order); undefined when there is no such sample.
 */
function sample (text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',')
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m == null || m[1] !== name) continue
    const have = (m[2] ?? '').split(/,(?=[a-zA-Z_]+=")/).filter(Boolean).sort().join(',')
    if (have === want) return Number(m[3])
  }
  return undefined
}

/** Polls the node's endpoint until `cond` holds for what it serves; returns that text. */
async function scrapeUntil (x: ClusterNode, what: string, cond: (text: string) => boolean): Promise<string> {
  let text = ''
  await waitFor(async () => {
    text = (await scrape(x).catch(() => null))?.text ?? ''
    return cond(text)
  }, 15_000, () => `${x.name}'s metrics to show ${what}; last scrape:\n${text.split('\n').filter((l) => l.startsWith('msc_')).join('\n')}`)
  return text
}

before(async () => {
  await Testbed.destroyStale()
})

describe('metrics endpoint of a two-node cluster', () => {
  before(async () => {
    c = await startCluster({ hosts: 2, start: false })
    await Promise.all(c.nodes.map(async (x) => {
      await c.start(x, [...NODE_ARGS, '--metrics-listen', `${x.host.ip}:${METRICS_PORT}`])
    }))
    await c.waitAllAlive(15_000)
  })

  after(async () => {
    await c?.destroy()
  })

  test("answers in Prometheus text format with libp2p's metrics and msc's, on the given address only", async () => {
    for (const x of c.nodes) {
      const r = await scrape(x)
      assert.equal(r.status, 200, `${x.name}: ${r.text}`)
      assert.match(r.contentType, /^text\/plain; version=0\.0\.4/, `${x.name}: Prometheus text format`)
      assert.match(r.text, /^# TYPE msc_containers gauge$/m)
      assert.match(r.text, /^# TYPE msc_migrations_total counter$/m)
      // libp2p's own (@libp2p/prometheus-metrics): its connection manager's gauges.
      assert.match(r.text, /^# TYPE libp2p_connection_manager_connections gauge$/m, `${x.name}: libp2p's metrics`)
      // A metric group's label is named after the metric itself.
      const open = ['inbound', 'outbound'].map((d) => sample(r.text, 'libp2p_connection_manager_connections', { libp2p_connection_manager_connections: d }) ?? 0)
      assert.ok(open[0]! + open[1]! >= 1, `${x.name}: its libp2p connection to the other node is counted: ${JSON.stringify(open)}`)
      assert.equal(sample(r.text, 'msc_peers', { state: 'alive' }), 1, `${x.name}: the other node is an alive peer`)
      // Only the given address: nothing on the host's loopback or its other addresses.
      const ss = await c.tb.exec(x.host, 'ss', ['-Hltn', `sport = :${METRICS_PORT}`])
      assert.equal(ss.exitCode, 0, ss.stderr)
      const listening = ss.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[3])
      assert.deepEqual(listening, [`${x.host.ip}:${METRICS_PORT}`], `${x.name}: listens on ${x.host.ip}:${METRICS_PORT} only:\n${ss.stdout}`)
    }
    assert.equal((await fetch(urlOf(n('n1')).replace(/\/metrics$/, '/'))).status, 404, 'only /metrics is served')
  })

  test('the containers gauge shows the running counter; a stop-copy migration moves the counter and adds a downtime sample', { timeout: 90_000 }, async () => {
    const bundle = await makeBundle('counter', path.join(c.root, 'bundles', 'counter'), '--interval-ms', '250')
    const run = await c.msc(n('n1'), 'run', 'counter', bundle)
    assert.equal(run.exitCode, 0, run.stderr)
    const before1 = await scrapeUntil(n('n1'), 'the counter running', (t) => sample(t, 'msc_containers', { state: 'running' }) === 1)
    const migrationsBefore = sample(before1, 'msc_migrations_total', { strategy: 'stop-copy', outcome: 'succeeded' }) ?? 0
    const samplesBefore = sample(before1, 'msc_migration_downtime_seconds_count', { strategy: 'stop-copy' }) ?? 0
    assert.equal(sample((await scrape(n('n2'))).text, 'msc_containers', { state: 'running' }), 0, 'n2 runs nothing yet')

    const m = await c.mscTimed(n('n1'), 60_000, 'peer', 'migrate', 'counter', '--to', 'n2', '--strategy', 'stop-copy', '--json')
    assert.equal(m.exitCode, 0, `msc peer migrate: ${m.stdout}\n${m.stderr}\n${c.logTail(n('n1'), 15)}`)
    const result = JSON.parse(m.stdout) as MigrationResultInfo
    assert.equal(result.ok, true, m.stdout)

    const after1 = (await scrape(n('n1'))).text
    assert.equal(sample(after1, 'msc_migrations_total', { strategy: 'stop-copy', outcome: 'succeeded' }), migrationsBefore + 1, 'the source counted the migration')
    assert.equal(sample(after1, 'msc_migration_downtime_seconds_count', { strategy: 'stop-copy' }), samplesBefore + 1, 'one more downtime sample')
    const sum = sample(after1, 'msc_migration_downtime_seconds_sum', { strategy: 'stop-copy' }) ?? 0
    assert.ok(sum > 0, `the downtime sum is positive: ${sum}`)
    assert.ok(Math.abs(sum - result.downtimeMs! / 1000) < 0.001, `the sample is the migration's downtime in seconds: ${sum} vs ${result.downtimeMs} ms`)
    assert.equal(sample(after1, 'msc_migration_downtime_seconds_bucket', { strategy: 'stop-copy', le: '+Inf' }), samplesBefore + 1)
    assert.ok((sample(after1, 'msc_migration_bytes_total', { strategy: 'stop-copy' }) ?? 0) >= result.bytes, 'its bytes counted')
    assert.equal(sample(after1, 'msc_containers', { state: 'running' }), 0, 'n1 runs nothing after the migration')
    await scrapeUntil(n('n2'), 'the counter running', (t) => sample(t, 'msc_containers', { state: 'running' }) === 1)
  })
})
