/**
 * Failover of a `--network lan` container at the same address. Three nodes on the
 * testbed's bridge (the LAN), every node's default of one replica (MSC_DEFAULT_REPLICAS=1,
 * so `msc run --network lan` without --replicas is replicated too); a redis runs on n1
 * at an address of its own. A client process on the host that is neither the owner
 * nor the standby holds ONE connection (test/helpers/lan-client.ts).
 *   - n1 is power-cut (every process of its host killed, its lan link taken down as a
 *     dead host's NIC would be): its standby restores redis at the SAME address, the
 *     client host reaches it there with the data of the last generation, the client's
 *     old connection is reset (a checkpoint older than the client's view is never
 *     repaired into it), and exactly one copy runs on the whole testbed.
 *   - n1 comes back: its copy is fenced, its namespace and link are removed (never made
 *     live again), the address still answers from the new owner, one copy runs.
 *   - the address stays owned: `msc run` of another container at that address is
 *     refused on every node, the old owner's included.
 * Everything (namespaces, links, containers, cgroups) is removed by Cluster.destroy,
 * also when a test fails.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), redis, iproute2, iptables, arping, nsenter.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { ClientProcess as Client } from '../helpers/client-process.ts'
import { makeBundle, sleep, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { REDIS_CLI } from '../../src/bundles/redis.ts'
import type { ContainerInfo } from '../../src/api/types.ts'

const ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3', '--lease-timeout', '5', '--dump-interval', '1', '--lan-interface', 'eth0']
const NAME = 'kv'
const PORT = 6379
const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'lan-client.ts')

let c: Cluster
let addr = ''
let owner: ClusterNode
let standby: ClusterNode
/** The third host: neither the owner nor the standby; the clients run there. */
let third: ClusterNode
let client: Client | undefined
const n = (name: string): ClusterNode => c.node(name)

async function nodeId (node: ClusterNode): Promise<string> {
  return (await fs.readFile(path.join(node.dataDir, 'node-id'), 'utf8')).trim()
}

/** The lan namespaces of the testbed's nodes in /run/netns, as `node:container`. */
async function lanNamespaces (): Promise<string[]> {
  const ids = new Map(await Promise.all(c.nodes.map(async (x) => [await nodeId(x), x.name] as const)))
  const out: string[] = []
  for (const e of await fs.readdir('/run/netns').catch(() => [] as string[])) {
    const m = /^msc-([0-9a-f]{8})-(.+)$/.exec(e)
    if (m != null && ids.has(m[1]!)) out.push(`${ids.get(m[1]!)!}:${m[2]!}`)
  }
  return out.sort()
}

/** msc's links still in a host's namespace (a link is there only while it is made). */
async function strayLinks (node: ClusterNode): Promise<string[]> {
  const r = await c.tb.exec(node.host, 'ip', ['-o', 'link', 'show'])
  return r.stdout.split('\n').filter((l) => /mscl[0-9a-f]/.test(l))
}

/** redis-cli on the third host, against the container's own address. */
async function redis (...args: string[]): Promise<string> {
  const r = await c.tb.exec(third.host, REDIS_CLI, ['-h', addr, '-p', String(PORT), ...args], { timeout: 5_000 })
  return r.stdout.trim()
}

/** Nodes whose runc runs (or has paused) the container. */
async function runningOn (): Promise<string[]> {
  const out: string[] = []
  for (const x of c.nodes) {
    if ((await c.runcList(x)).some((e) => e.id === NAME && (e.status === 'running' || e.status === 'paused'))) out.push(x.name)
  }
  return out
}

/** For `ms`, exactly one copy runs in the whole testbed, on `where`. */
async function exactlyOne (where: ClusterNode, ms: number): Promise<void> {
  const end = Date.now() + ms
  do {
    assert.deepEqual(await runningOn(), [where.name], 'exactly one copy runs, on the new owner')
    await sleep(250)
  } while (Date.now() < end)
}

/** SIGKILL to every process in a named network namespace, until none is left. */
async function killNetns (ns: string): Promise<void> {
  await waitFor(async () => {
    const pids = String((await execa('ip', ['netns', 'pids', ns], { reject: false })).stdout).split('\n').filter((p) => /^\d+$/.test(p))
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL')
      } catch {}
    }
    return pids.length === 0
  }, 10_000, `every process in ${ns} killed`)
}

/** The MAC the third host's neighbour table has for the address now. */
async function neighbourMac (): Promise<string> {
  const r = await c.tb.exec(third.host, 'ip', ['-j', 'neigh', 'show', addr])
  const list = JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string }>
  return list[0]?.lladdr ?? ''
}

describe('--network lan with replicas: failover keeps the address', { timeout: 600_000 }, () => {
  before(async () => {
    c = await startCluster({ hosts: 3, args: ARGS, env: { MSC_DEFAULT_REPLICAS: '1' } })
    await c.waitAllAlive(30_000)
    owner = n('n1')
    addr = `${owner.host.ip.split('.').slice(0, 3).join('.')}.201`
  })

  after(async () => {
    client?.proc.kill('SIGKILL')
    await c?.destroy()
  })

  test('n1 is power-cut: its standby restores redis at the same address, with the last generation, old connections reset', async (t) => {
    const bundle = await makeBundle('redis', path.join(c.root, 'redis'), '--port', String(PORT))
    const r = await c.msc(owner, 'run', NAME, bundle, '--network', 'lan', '--ip', `${addr}/24`)
    assert.equal(r.exitCode, 0, `run: ${r.stderr}\n${c.logTail(owner)}`)
    const info = await c.json<ContainerInfo>(owner, 'inspect', NAME)
    assert.equal(info.replicas, 1, "the node's default replica count applies to a lan container")
    assert.deepEqual(info.network, { mode: 'lan', address: addr, prefix: 24, driver: 'macvlan' })

    // A first standby is known once a generation was acknowledged; the client goes on the other host.
    let rep: ContainerInfo['replication']
    await waitFor(async () => {
      rep = (await c.inspectApi(owner, NAME).catch(() => null))?.replication
      return (rep?.ackedGeneration ?? 0) >= 1
    }, 90_000, () => `a first generation acknowledged: ${JSON.stringify(rep)}\n${c.logTail(owner, 20)}`)
    standby = n(rep!.standbys[0]!.name)
    third = c.nodes.find((x) => x !== owner && x !== standby)!
    await waitFor(async () => await redis('PING') === 'PONG', 20_000, `redis to answer at ${addr} from ${third.name}`)
    assert.equal(await redis('SET', 'k', 'before-the-cut'), 'OK')
    const setAt = Date.now()
    const proc = await c.tb.spawn(third.host, process.execPath, [CLIENT, addr, String(PORT)], { stdio: ['pipe', 'pipe', 'inherit'] })
    client = new Client(proc)
    await client.waitLine((l) => l === 'ready', 10_000, 'ready')

    // A generation frozen after the SET, acknowledged by the standby: the state to come back.
    // (rpoMs: the age of the newest acknowledged generation's freeze; one standby.)
    await waitFor(async () => {
      const rpo = (await c.inspectApi(owner, NAME).catch(() => null))?.replication?.rpoMs
      return rpo != null && Date.now() - rpo - 200 > setAt
    }, 90_000, () => `a generation with the SET acknowledged by ${standby.name}\n${c.logTail(owner, 20)}`)
    const macBefore = await neighbourMac()

    // The power cut: every process of n1's host (daemon, guard, shims), redis (in a
    // network namespace of its own, which Testbed.kill does not look into), and its lan
    // link down (a dead host's NIC answers nothing, not even ARP). The namespace stays,
    // as a host's kernel state that the node must clean up when it comes back.
    const cutAt = Date.now()
    const ns = `msc-${await nodeId(owner)}-${NAME}`
    await c.tb.kill(owner.host)
    await killNetns(ns)
    const down = await execa('ip', ['-n', ns, 'link', 'set', 'eth0', 'down'], { reject: false })
    assert.equal(down.exitCode, 0, `taking n1's lan link down: ${String(down.stderr)}`)

    await waitFor(async () => (await runningOn()).length > 0, 90_000, () => `redis running again somewhere\n${standby.name}:\n${c.logTail(standby, 30)}`)
    assert.deepEqual(await runningOn(), [standby.name], 'restored by its standby')
    await waitFor(async () => await redis('PING') === 'PONG', 30_000, () => `redis answering at ${addr} again\n${c.logTail(standby, 20)}`)
    t.diagnostic(`the address answered again ${Date.now() - cutAt} ms after the power cut`)
    assert.equal(await redis('GET', 'k'), 'before-the-cut', 'the state of the last generation is there')
    const restored = await c.json<ContainerInfo>(standby, 'inspect', NAME)
    assert.deepEqual(restored.network, { mode: 'lan', address: addr, prefix: 24, driver: 'macvlan' }, 'the record keeps the address')
    assert.ok((restored.epoch ?? 0) > (info.epoch ?? 1), `a new epoch: ${String(restored.epoch)} > ${String(info.epoch)}`)
    assert.deepEqual(await lanNamespaces(), [`${owner.name}:${NAME}`, `${standby.name}:${NAME}`].sort(), "the standby's namespace, beside the dead host's")
    assert.deepEqual(await strayLinks(standby), [])
    assert.equal(await neighbourMac(), macBefore, 'the same MAC on the new node (macvlan: made of the address)')

    // The client's connection was to a process whose TCP state is older than the
    // client's: it is reset, not repaired.
    await waitFor(async () => (await client!.report()).closed, 60_000, async () => `the old connection reset: ${JSON.stringify(await client!.report().catch(() => null))}`)
    await exactlyOne(standby, 3_000)
  })

  test('n1 comes back: its copy is fenced, its address removed there, the address still answers on the new owner', async () => {
    await c.start(owner)
    await waitFor(async () => (await c.inspectApi(owner, NAME).catch(() => null))?.state === 'fenced', 30_000, () => `n1's copy fenced\n${c.logTail(owner, 20)}`)
    await waitFor(async () => !(await lanNamespaces()).includes(`${owner.name}:${NAME}`), 15_000, async () => `n1's namespace removed: ${(await lanNamespaces()).join(', ')}\n${c.logTail(owner, 20)}`)
    await c.waitAllAlive(30_000)
    // A few seconds later still: never made live again, one copy, the same answers.
    await exactlyOne(standby, 5_000)
    assert.deepEqual(await lanNamespaces(), [`${standby.name}:${NAME}`])
    assert.deepEqual(await strayLinks(owner), [])
    assert.equal(await redis('PING'), 'PONG')
    assert.equal(await redis('GET', 'k'), 'before-the-cut')
    const info = await c.inspectApi(owner, NAME)
    assert.equal(info.state, 'fenced')
  })

  test('the address stays owned: another container at it is refused on every node', async () => {
    const bundle = path.join(c.root, 'redis')
    for (const x of c.nodes) {
      const r = await c.msc(x, 'run', 'kv2', bundle, '--network', 'lan', '--ip', `${addr}/24`, '--replicas', '0')
      assert.notEqual(r.exitCode, 0, `refused on ${x.name}`)
      assert.match(r.stderr, new RegExp(`address ${addr.replace(/\./g, '\\.')} is taken (by container ${NAME} on this node|in the cluster by container ${NAME})`), `on ${x.name}: ${r.stderr}`)
    }
    assert.deepEqual(await lanNamespaces(), [`${standby.name}:${NAME}`])
    await exactlyOne(standby, 1_000)
  })
})
