/**
 * Failover with real nodes, CRIU and libp2p in testbed hosts: a replicated container
 * comes back on exactly one other node when its node dies, from a checkpoint at most
 * about one interval old, and no partition leaves two copies running.
 *
 * "Exactly one copy" is read where it is true: runc's own list under every node's data
 * dir (a killed host's containers are dead processes, listed as stopped).
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), iproute2, nsenter, ebtables.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { logValues, makeBundle, startCluster, sleep, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import type { ContainerInfo } from '../../src/api/types.ts'

const DUMP_S = 1
const LEASE_S = 3
const COUNTER_MS = 100
const ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', String(LEASE_S), '--dump-interval', String(DUMP_S)]

let c: Cluster
let bundle = ''
const n = (name: string): ClusterNode => c.node(name)

/** Nodes whose runc runs (or has paused) `name`. */
async function runningOn (name: string, nodes: ClusterNode[] = c.nodes): Promise<string[]> {
  const out: string[] = []
  for (const x of nodes) {
    const list = await c.runcList(x)
    if (list.some((e) => e.id === name && (e.status === 'running' || e.status === 'paused'))) out.push(x.name)
  }
  return out
}

async function inspect (node: ClusterNode, name: string): Promise<ContainerInfo> {
  return await c.json<ContainerInfo>(node, 'inspect', name)
}

/** Waits until the owner reports `gens` generations acknowledged by a standby. */
async function replicated (owner: ClusterNode, name: string, gens = 2): Promise<ContainerInfo> {
  let info: ContainerInfo | undefined
  let error = ''
  await waitFor(async () => {
    info = await inspect(owner, name).catch((err) => { error = (err as Error).message; return undefined })
    return (info?.replication?.ackedGeneration ?? 0) >= gens
  }, 90_000, () => `${name} replicated (${gens} generations acknowledged): ${JSON.stringify(info?.replication)} ${error}\n${c.logTail(owner, 20)}`)
  return info!
}

/** For `ms`, polls that exactly one copy of `name` runs in the whole testbed. */
async function exactlyOneFor (name: string, ms: number): Promise<string> {
  const end = Date.now() + ms
  let where: string[] = []
  do {
    where = await runningOn(name)
    assert.equal(where.length, 1, `exactly one copy of ${name} must run, found: ${where.join(', ') || 'none'}`)
    await sleep(200)
  } while (Date.now() < end)
  return where[0]!
}

before(async () => {
  c = await startCluster({ hosts: 3, args: ARGS })
  bundle = await makeBundle('counter', path.join(c.root, 'counter'), '--interval-ms', String(COUNTER_MS))
  await c.waitAllAlive(30_000)
})

after(async () => { await c?.destroy() })

describe('failover of a replicated counter', () => {
  test('its node is power-cut: it runs again on exactly one other node and counts on from its last generation', async (t) => {
    const r = await c.msc(n('n1'), 'run', 'ctr', bundle, '--replicas', '1')
    assert.equal(r.exitCode, 0, r.stderr)
    const info = await replicated(n('n1'), 'ctr', 2)
    const standby = info.replication!.standbys[0]!.name
    assert.ok(['n2', 'n3'].includes(standby), `a standby among the others: ${standby}`)
    const intervalMs = (await inspect(n('n1'), 'ctr')).replication!.intervalMs
    const before = logValues(n('n1'), 'ctr')
    const killedAt = Date.now()
    await c.tb.kill(n('n1').host) // daemon, shims and container: a power cut
    const lastValue = logValues(n('n1'), 'ctr').at(-1) ?? before.at(-1)!
    let where: string[] = []
    await waitFor(async () => { where = await runningOn('ctr', [n('n2'), n('n3')]); return where.length > 0 }, 60_000,
      () => `ctr running again on n2 or n3\n${c.logTail(n('n2'), 15)}\n${c.logTail(n('n3'), 15)}`)
    const rtoMs = Date.now() - killedAt
    const on = await exactlyOneFor('ctr', 3_000)
    assert.equal(on, standby, 'restored on its standby')
    // It counts on from its last generation: no restart at 1, at most about one interval back.
    let after: number[] = []
    await waitFor(async () => { after = logValues(n(on), 'ctr'); return after.length >= 5 }, 20_000, 'output on the new node')
    const first = after[0]!
    // The RPO: one effective interval (DUMP_INTERVAL stretched to 20 x the freeze) and
    // the round that was under way.
    const maxBackMs = intervalMs + 3_000
    t.diagnostic(`RTO ${rtoMs} ms; last value before the cut ${lastValue}, first after ${first} (${(lastValue - first) * COUNTER_MS} ms of output lost; interval ${intervalMs} ms)`)
    assert.ok(first > 1 && first <= lastValue + 1, `continues, never ahead of the dead copy: first ${first}, last ${lastValue}`)
    assert.ok((lastValue - first) * COUNTER_MS <= maxBackMs, `regresses at most about one interval: ${lastValue} -> ${first}`)
    assert.deepEqual(after, after.map((_, i) => first + i), 'one sequence on the new node')
    const moved = await inspect(n(on), 'ctr')
    assert.equal(moved.epoch, 2, 'owned at the next epoch')
  })

  test('the dead node comes back: its stale copy is fenced, one copy runs', async () => {
    await c.start(n('n1'))
    await waitFor(async () => (await inspect(n('n1'), 'ctr').catch(() => null))?.state === 'fenced', 30_000, () => `n1's copy fenced\n${c.logTail(n('n1'), 20)}`)
    await exactlyOneFor('ctr', 3_000)
  })
})
