/**
 * MetricsService on loopback with a fake node: it answers GET /metrics in Prometheus
 * text format with libp2p's default process metrics and msc's own on one registry,
 * answers nothing else, refuses an address in use with a clear error at start, and
 * --metrics-listen reaches the node configuration (flag and MSC_METRICS_LISTEN).
 */
import { defaultLogger } from '@libp2p/logger'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { MetricsService, createMetricsService } from '../../src/metrics/metrics-service.ts'
import { EventLog } from '../../src/node/events.ts'
import { resolveNodeConfig } from '../../src/node/config.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { MscError } from '../../src/util/errors.ts'
import type { NodeReader } from '../../src/metrics/snapshot.ts'

const node: NodeReader = {
  runcStates: async () => [{ id: 'web', status: 'running' }],
  containerNames: async () => ['web'],
  containerRecord: async () => ({ checkpointed: false }),
  peers: () => [{ state: 'alive' }],
  replication: () => undefined,
  leases: () => ({ held: 0, granted: 0 })
}

function service (port: number, events = new EventLog()): MetricsService {
  return new MetricsService({ listen: { host: '127.0.0.1', port }, node, events, statfsLocation: '/tmp', logger: silentLogger() })
}

test("GET /metrics answers Prometheus text with msc's and libp2p's metrics; nothing else is served", async (t) => {
  const events = new EventLog()
  events.emit('lease', { type: 'lease-acquired', container: 'web', epoch: 1 })
  const s = service(0, events)
  // What createLibp2p does with the factory: libp2p's metrics join the same registry.
  const libp2p = s.libp2pMetrics()({ logger: defaultLogger() })
  libp2p.registerMetric('libp2p_test_gauge', { help: 'a libp2p metric' }).update(7)
  await s.start()
  t.after(async () => {
    await s.stop()
  })
  const { port } = s.address()!
  const r = await fetch(`http://127.0.0.1:${port}/metrics`)
  assert.equal(r.status, 200)
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  const text = await r.text()
  assert.match(text, /^msc_containers\{state="running"\} 1$/m)
  assert.match(text, /^msc_peers\{state="alive"\} 1$/m)
  assert.match(text, /^msc_lease_events_total\{type="lease-acquired"\} 1$/m, 'an event from before start is counted')
  assert.match(text, /^libp2p_test_gauge 7$/m)
  assert.match(text, /^# TYPE process_cpu_user_seconds_total counter$/m, 'the default process metrics')
  events.emit('lease', { type: 'lease-acquired', container: 'web', epoch: 2 })
  assert.match(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), /^msc_lease_events_total\{type="lease-acquired"\} 2$/m)
  assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404)
  assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST', body: 'x' })).status, 405)
})

test('an address in use is a clear error at start, naming the flag and the address', async (t) => {
  const blocker = net.createServer()
  await new Promise<void>((resolve) => {
    blocker.listen(0, '127.0.0.1', resolve)
  })
  t.after(() => {
    blocker.close()
  })
  const port = (blocker.address() as net.AddressInfo).port
  const s = service(port)
  await assert.rejects(s.start(), (err: unknown) => {
    assert.ok(err instanceof MscError)
    assert.equal(err.code, 'INVALID_ARGUMENT')
    assert.match(err.message, new RegExp(`--metrics-listen 127\\.0\\.0\\.1:${port}: cannot listen there: the address is in use`))
    return true
  })
  await s.stop()
})

test('no service without --metrics-listen; the flag and MSC_METRICS_LISTEN reach the configuration', () => {
  assert.equal(createMetricsService({ listen: null, node, events: new EventLog(), statfsLocation: '/tmp', logger: silentLogger() }), undefined)
  assert.equal(resolveNodeConfig({}, {}).metricsListen, '')
  assert.equal(resolveNodeConfig({ metricsListen: '127.0.0.1:4711' }, {}).metricsListen, '127.0.0.1:4711')
  assert.equal(resolveNodeConfig({}, { MSC_METRICS_LISTEN: '[::1]:4711' }).metricsListen, '[::1]:4711')
  assert.throws(() => resolveNodeConfig({ metricsListen: '4711' }, {}), /--metrics-listen: expected HOST:PORT/)
})
