/**
 * Failover needs a majority of the persisted member list: a cluster of two never
 * fails over (its survivor cannot make a majority alone), a witness as the third
 * member lets it; and a container whose owner died together with its only standby is
 * reported lost by the survivors and never half-run, while one with two standbys comes
 * back from the one left.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), iproute2, nsenter, ebtables.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { makeBundle, startCluster, sleep, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { rankStandbys } from '../../src/replication/standby-choice.ts'
import type { ContainerInfo, NodeEvent, NodeStatus } from '../../src/api/types.ts'

const LEASE_S = 5
const ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3', '--lease-timeout', String(LEASE_S), '--dump-interval', '1']

let c: Cluster | undefined
after(async () => {
  await c?.destroy()
})

async function runningOn (cl: Cluster, name: string, nodes: ClusterNode[] = cl.nodes): Promise<string[]> {
  const out: string[] = []
  for (const x of nodes) {
    if ((await cl.runcList(x)).some((e) => e.id === name && (e.status === 'running' || e.status === 'paused'))) out.push(x.name)
  }
  return out
}

async function replicated (cl: Cluster, owner: ClusterNode, name: string): Promise<ContainerInfo> {
  let info: ContainerInfo | undefined
  await waitFor(async () => {
    info = await cl.inspectApi(owner, name).catch(() => undefined)
    return (info?.replication?.ackedGeneration ?? 0) >= 1
  }, 90_000, () => `${name} replicated: ${JSON.stringify(info?.replication)}\n${cl.logTail(owner, 20)}`)
  return info!
}

async function events (cl: Cluster, node: ClusterNode): Promise<NodeEvent[]> {
  const r = await cl.msc(node, 'events', '--json', '--no-follow')
  assert.equal(r.exitCode, 0, r.stderr)
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as NodeEvent)
}

describe('two members and a witness', () => {
  test('two members without a witness: the survivor never restores, and says why', async () => {
    c = await startCluster({ hosts: 3, args: ARGS, start: false })
    const [n1, n2, n3] = [c.node('n1'), c.node('n2'), c.node('n3')]
    await c.start(n1)
    await c.start(n2)
    await c.waitAllAlive(30_000, [n1, n2])
    const bundle = await makeBundle('counter', path.join(c.root, 'counter'), '--interval-ms', '100')
    assert.equal((await c.msc(n1, 'run', 'pair', bundle, '--replicas', '1')).exitCode, 0)
    const info = await replicated(c, n1, 'pair')
    assert.equal(info.replication!.standbys[0]!.name, 'n2')
    const st = await c.json<NodeStatus>(n2, 'status')
    assert.match(st.failover.failover, /not possible: 2 members/)
    await c.tb.kill(n1.host)
    await sleep(5 * LEASE_S * 1000)
    assert.deepEqual(await runningOn(c, 'pair', [n2]), [], 'n2 never restores pair: 1 vote of 2')
    assert.ok((await events(c, n2)).some((e) => e.type === 'lease-refused' && e.container === 'pair'), 'n2 asked and was refused')

    // The same with a witness as the third member, there before the owner dies.
    await c.start(n1)
    await c.start(n3, [...ARGS, '--witness'])
    await c.waitAllAlive(30_000)
    const refused = await c.msc(n3, 'run', 'nope', bundle)
    assert.notEqual(refused.exitCode, 0)
    assert.match(refused.stderr, /witness/)
    assert.equal((await c.msc(n1, 'run', 'trio', bundle, '--replicas', '1')).exitCode, 0)
    const trio = await replicated(c, n1, 'trio')
    assert.equal(trio.replication!.standbys[0]!.name, 'n2', 'a witness keeps no replica')
    await c.tb.kill(n1.host)
    await waitFor(async () => (await runningOn(c!, 'trio', [n2])).length > 0, 60_000, () => `trio restored on n2 with the witness's vote\n${c!.logTail(n2, 15)}`)
    assert.deepEqual(await runningOn(c, 'trio'), ['n2'])
    assert.deepEqual((await c.runcList(n3)).map((e) => e.id), [], 'the witness runs nothing')
    await c.destroy()
    c = undefined
  })
})

describe('double failures', () => {
  test('owner and only standby die together: reported lost, never half-run; with two standbys the one left restores it', async () => {
    c = await startCluster({ hosts: 5, args: ARGS })
    const cl = c
    await cl.waitAllAlive(60_000)
    const bundle = await makeBundle('counter', path.join(cl.root, 'counter'), '--interval-ms', '100')
    const owner = cl.node('n1')
    assert.equal((await cl.msc(owner, 'run', 'one', bundle, '--replicas', '1')).exitCode, 0)
    const one = await replicated(cl, owner, 'one')
    const standby = cl.node(one.replication!.standbys[0]!.name)
    // A name whose first standby is the same node, so that the double failure hits it too.
    const others = cl.nodes.filter((x) => x !== owner).map((x) => x.peerId)
    const twoName = Array.from({ length: 200 }, (_, i) => `two-${i}`).find((nm) => rankStandbys(nm, others)[0] === standby.peerId)!
    assert.equal((await cl.msc(owner, 'run', twoName, bundle, '--replicas', '2')).exitCode, 0)
    await waitFor(async () => {
      const i = await cl.inspectApi(owner, twoName).catch(() => undefined)
      return (i?.replication?.standbys ?? []).filter((s) => s.generation != null).length >= 2
    }, 90_000, async () => `${twoName} acknowledged by both standbys; inspect: ${JSON.stringify((await cl.inspectApi(owner, twoName).catch(() => undefined))?.replication)}\n${cl.logTail(owner, 15)}`)
    await Promise.all([cl.tb.kill(owner.host), cl.tb.kill(standby.host)])
    const alive = cl.nodes.filter((x) => x !== owner && x !== standby)
    await waitFor(async () => (await runningOn(cl, twoName, alive)).length > 0, 60_000, () => `${twoName} restored by its other standby\n${alive.map((x) => cl.logTail(x, 8)).join('\n')}`)
    await waitFor(async () => {
      for (const x of alive) {
        const st = await cl.statusApi(x).catch(() => null)
        if (st?.failover.lost.some((l) => l.container === 'one') !== true) return false
      }
      return true
    }, 60_000, 'every survivor reports one lost')
    assert.deepEqual(await runningOn(cl, 'one'), [], 'one runs nowhere, not half-restored')
    assert.deepEqual(await runningOn(cl, twoName), [(await runningOn(cl, twoName, alive))[0]], 'exactly one copy of the other')
  })
})
