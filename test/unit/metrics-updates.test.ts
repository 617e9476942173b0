/**
 * The pure side of msc's metrics: what the node's events and the end of a migration do
 * to the counters, how a container's record and runc status make its state, the
 * snapshot the gauges show, the --metrics-listen address, and what a registry fed
 * with them prints in Prometheus text format.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Registry } from 'prom-client'
import { containerState, countByState, migrationOutcome, updatesOfEvent, updatesOfMigration, CONTAINER_STATES } from '../../src/metrics/updates.ts'
import { MscMetrics } from '../../src/metrics/msc-metrics.ts'
import { readSnapshot, type NodeReader } from '../../src/metrics/snapshot.ts'
import { formatListenAddress, parseListenAddress } from '../../src/metrics/listen-address.ts'
import { EventLog } from '../../src/node/events.ts'

test('a migration counts by strategy and outcome; its downtime is one sample in seconds', () => {
  const ok = updatesOfMigration({ ok: true, strategy: 'stop-copy', from: 'A', runningOn: 'B', downtimeMs: 640, bytes: 5_000_000 })
  assert.deepEqual(ok, [
    { kind: 'inc', counter: 'migrations', labels: { strategy: 'stop-copy', outcome: 'succeeded' }, by: 1 },
    { kind: 'inc', counter: 'migration_bytes', labels: { strategy: 'stop-copy' }, by: 5_000_000 },
    { kind: 'observe', histogram: 'migration_downtime_seconds', labels: { strategy: 'stop-copy' }, value: 0.64 }
  ])
  // Refused before anything moved: no downtime sample, no bytes.
  assert.deepEqual(updatesOfMigration({ ok: false, strategy: 'auto', from: 'A', downtimeMs: null, bytes: 0 }), [
    { kind: 'inc', counter: 'migrations', labels: { strategy: 'auto', outcome: 'failed' }, by: 1 }
  ])
  // A strategy the code does not know never becomes a label value of its own.
  assert.equal(updatesOfMigration({ ok: false, strategy: 'x"}\n', from: 'A', downtimeMs: null, bytes: 0 })[0]!.labels.strategy, 'other')
})

test('a failed migration is rolled_back when it runs on the source again, failed otherwise', () => {
  assert.equal(migrationOutcome({ ok: true, from: 'A', runningOn: 'B' }), 'succeeded')
  assert.equal(migrationOutcome({ ok: false, from: 'A', runningOn: 'A' }), 'rolled_back')
  assert.equal(migrationOutcome({ ok: false, from: 'A', runningOn: 'B' }), 'failed')
  assert.equal(migrationOutcome({ ok: false, from: 'A' }), 'failed')
})

test('replication, lease and failover events map to their counters; others to nothing', () => {
  assert.deepEqual(updatesOfEvent({ kind: 'replication', type: 'generation', container: 'c', wireBytes: 4096, imageBytes: 9, freezeMs: 30, full: true }), [
    { kind: 'inc', counter: 'replication_transfers', labels: { outcome: 'acked' }, by: 1 },
    { kind: 'inc', counter: 'replication_bytes', labels: {}, by: 4096 }
  ])
  assert.deepEqual(updatesOfEvent({ kind: 'replication', type: 'generation-failed', reason: 'x' }), [
    { kind: 'inc', counter: 'replication_transfers', labels: { outcome: 'failed' }, by: 1 }
  ])
  assert.deepEqual(updatesOfEvent({ kind: 'replication', type: 'dump-failed' }), [{ kind: 'inc', counter: 'replication_dump_failures', labels: {}, by: 1 }])
  assert.deepEqual(updatesOfEvent({ kind: 'lease', type: 'lease-acquired', container: 'c', epoch: 2 }), [
    { kind: 'inc', counter: 'lease_events', labels: { type: 'lease-acquired' }, by: 1 }
  ])
  assert.deepEqual(updatesOfEvent({ kind: 'failover', type: 'failover', container: 'c', ms: 1500 }), [
    { kind: 'inc', counter: 'failovers', labels: { outcome: 'succeeded' }, by: 1 },
    { kind: 'observe', histogram: 'failover_restore_seconds', labels: {}, value: 1.5 }
  ])
  assert.deepEqual(updatesOfEvent({ kind: 'failover', type: 'failover-failed' }), [{ kind: 'inc', counter: 'failovers', labels: { outcome: 'failed' }, by: 1 }])
  assert.deepEqual(updatesOfEvent({ kind: 'failover', type: 'lost' }), [{ kind: 'inc', counter: 'containers_lost', labels: {}, by: 1 }])
  for (const e of [{ kind: 'replication', type: 'standby-chosen' }, { kind: 'lease', type: 'made-up' }, { kind: 'failover', type: 'owner-lost' }, { kind: 'other', type: 'generation' }]) {
    assert.deepEqual(updatesOfEvent(e), [], JSON.stringify(e))
  }
  // A malformed number is not a sample.
  assert.deepEqual(updatesOfEvent({ kind: 'failover', type: 'failover', ms: -1 }).length, 1)
})

test("a container's state comes from its record and runc's status, as msc ps shows it", () => {
  const rec = { checkpointed: false }
  assert.equal(containerState(rec, 'running'), 'running')
  assert.equal(containerState(rec, 'paused'), 'paused')
  assert.equal(containerState(rec, 'pausing'), 'paused')
  assert.equal(containerState(rec, 'created'), 'created')
  assert.equal(containerState(rec, undefined), 'stopped')
  assert.equal(containerState(rec, 'stopped'), 'stopped')
  assert.equal(containerState({ checkpointed: true }, undefined), 'checkpointed')
  assert.equal(containerState({ checkpointed: false, fenced: { owner: 'B' } }, 'running'), 'fenced')
  assert.equal(containerState({ checkpointed: false, pendingMigration: true }, 'running'), 'pending')
  assert.equal(containerState({ checkpointed: false, failoverPending: true }, undefined), 'pending')
  assert.deepEqual(countByState(['a', 'b'] as const, ['a', 'a', 'zzz']), { a: 2, b: 0 })
})

function fakeNode (over: Partial<NodeReader> = {}): NodeReader & { runcLists: number } {
  const records: Record<string, { checkpointed: boolean; fenced?: unknown }> = {
    web: { checkpointed: false },
    db: { checkpointed: false },
    old: { checkpointed: true },
    gone: { checkpointed: false, fenced: {} }
  }
  const node = {
    runcLists: 0,
    runcStates: async () => {
      node.runcLists++
      return [{ id: 'web', status: 'running' }, { id: 'db', status: 'running' }, { id: 'stray', status: 'running' }]
    },
    containerNames: async () => Object.keys(records),
    containerRecord: async (n: string) => records[n] ?? null,
    peers: () => [{ state: 'alive' }, { state: 'alive' }, { state: 'dead' }],
    replication: (n: string) => n === 'web' ? { rpoMs: 2500, bytesPerRound: 12_345 } : n === 'db' ? { rpoMs: null, bytesPerRound: null } : undefined,
    leases: () => ({ held: 1, granted: 2 }),
    ...over
  }
  return node
}

test('a snapshot reads runc once for all containers and counts every state, 0 included', async () => {
  const node = fakeNode()
  const s = await readSnapshot(node)
  assert.equal(node.runcLists, 1)
  assert.deepEqual(s.containers, { running: 2, paused: 0, created: 0, stopped: 0, checkpointed: 1, fenced: 1, pending: 0 })
  assert.deepEqual(Object.keys(s.containers), [...CONTAINER_STATES])
  assert.deepEqual(s.peers, { alive: 2, suspect: 0, dead: 1, left: 0 })
  assert.deepEqual(s.replication, [{ container: 'web', rpoMs: 2500, bytesPerRound: 12_345 }, { container: 'db', rpoMs: null, bytesPerRound: null }])
  assert.deepEqual(s.leases, { held: 1, granted: 2 })
})

test('the registry prints the counters, the histogram and the gauges in Prometheus text format', async () => {
  const registry = new Registry()
  const m = new MscMetrics(registry)
  m.apply(updatesOfMigration({ ok: true, strategy: 'post-copy', from: 'A', runningOn: 'B', downtimeMs: 900, bytes: 10 }))
  m.apply(updatesOfMigration({ ok: true, strategy: 'post-copy', from: 'A', runningOn: 'B', downtimeMs: 300, bytes: 10 }))
  m.setSnapshot(await readSnapshot(fakeNode()))
  const text = await registry.metrics()
  assert.match(text, /^# TYPE msc_migrations_total counter$/m)
  assert.match(text, /^msc_migrations_total\{strategy="post-copy",outcome="succeeded"\} 2$/m)
  assert.match(text, /^# TYPE msc_migration_downtime_seconds histogram$/m)
  assert.match(text, /^msc_migration_downtime_seconds_count\{strategy="post-copy"\} 2$/m)
  assert.match(text, /^msc_migration_downtime_seconds_sum\{strategy="post-copy"\} 1\.2$/m)
  assert.match(text, /^msc_migration_downtime_seconds_bucket\{le="0\.5",strategy="post-copy"\} 1$/m)
  assert.match(text, /^msc_containers\{state="running"\} 2$/m)
  assert.match(text, /^msc_containers\{state="paused"\} 0$/m)
  assert.match(text, /^msc_peers\{state="alive"\} 2$/m)
  assert.match(text, /^msc_replication_age_seconds\{container="web"\} 2\.5$/m)
  assert.match(text, /^msc_replication_round_bytes\{container="web"\} 12345$/m)
  assert.doesNotMatch(text, /container="db"/, 'no generation acknowledged yet: no age')
  assert.match(text, /^msc_leases\{role="held"\} 1$/m)

  // A container no longer replicated from here drops out of the per-container gauges.
  m.setSnapshot(await readSnapshot(fakeNode({ replication: () => undefined })))
  assert.doesNotMatch(await registry.metrics(), /msc_replication_age_seconds\{/)
})

test('events already in the log and new ones both reach the counters (what MetricsService.start does)', async () => {
  const registry = new Registry()
  const m = new MscMetrics(registry)
  const log = new EventLog()
  log.emit('failover', { type: 'failover', container: 'c', ms: 800 })
  for (const e of log.history()) m.apply(updatesOfEvent(e))
  const off = log.subscribe((e) => {
    m.apply(updatesOfEvent(e))
  })
  log.emit('failover', { type: 'failover-failed', container: 'd', reason: 'x' })
  off()
  const text = await registry.metrics()
  assert.match(text, /^msc_failovers_total\{outcome="succeeded"\} 1$/m)
  assert.match(text, /^msc_failovers_total\{outcome="failed"\} 1$/m)
  assert.match(text, /^msc_failover_restore_seconds_count 1$/m)
})

test('--metrics-listen takes HOST:PORT with an IPv4 address, a host name or a bracketed IPv6 address', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:4711'), { host: '127.0.0.1', port: 4711 })
  assert.deepEqual(parseListenAddress('localhost:9100'), { host: 'localhost', port: 9100 })
  assert.deepEqual(parseListenAddress('[::1]:4711'), { host: '::1', port: 4711 })
  assert.deepEqual(parseListenAddress('0.0.0.0:0'), { host: '0.0.0.0', port: 0 })
  for (const bad of ['', '4711', ':4711', '127.0.0.1', '127.0.0.1:65536', '::1:4711', '[127.0.0.1]:80', 'http://x:1', 'a b:1', '127.0.0.1:80/metrics']) {
    assert.equal(parseListenAddress(bad), null, bad)
  }
  assert.equal(formatListenAddress({ host: '::1', port: 4711 }), '[::1]:4711')
  assert.equal(formatListenAddress({ host: '10.0.0.2', port: 4711 }), '10.0.0.2:4711')
})
