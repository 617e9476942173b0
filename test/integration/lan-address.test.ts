/**
 * `--network lan --ip`: a container address that moves with the container. Three
 * nodes on the testbed's bridge (the LAN); a redis runs on n1 at an address of its own
 * (a macvlan on the host's eth0). A client process on h3 holds ONE connection and sends
 * PING every 5 ms (test/helpers/lan-client.ts) while a second one is subscribed.
 *   - stop-copy n1 -> n2, then post-copy n2 -> n1: the connection survives, no request
 *     fails, the subscriber gets a message published after each hop, and the address's
 *     namespace exists on the owner only. The longest gap is reported (t.diagnostic).
 *   - a migration that fails after the dump (n1 restarted with
 *     MSC_TEST_CORRUPT_TRANSFER=images: its images arrive damaged) leaves the address
 *     on n1, answering on the same connection.
 *   - refused, with nothing left behind (no namespace, no link): an address a member's
 *     container holds, an --ip outside the subnet, a LAN interface that does not exist
 *     (n3 restarted with --lan-interface nosuch0), and a migration to that node (NETWORK).
 *   - for comparison, the same client's view of a redis in the host's network moved the
 *     same way: its connection is reset and it reconnects to the new node's address
 *     (the longest gap, reconnection included, is reported).
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), redis, iproute2, iptables, arping,
 * nsenter, fs.pipe-max-size >= 16 MiB for post-copy.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ClientProcess as Client, type ClientReport } from '../helpers/client-process.ts'
import { makeBundle, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { REDIS_CLI } from '../../src/bundles/redis.ts'
import type { ContainerInfo, MigrationResultInfo } from '../../src/api/types.ts'

const NODE_ARGS = ['--mdns-interval', '1', '--ping-interval', '1', '--ping-timeout', '10', '--lan-interface', 'eth0']
const NAME = 'kv'
const PORT = 6379
const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'lan-client.ts')

let c: Cluster
let addr: string
let subnet: string
const n = (name: string): ClusterNode => c.node(name)

let client: Client | undefined

async function nodeId (node: ClusterNode): Promise<string> {
  return (await fs.readFile(path.join(node.dataDir, 'node-id'), 'utf8')).trim()
}

/** The names of the lan namespaces in /run/netns (shared by every testbed host). */
async function lanNamespaces (): Promise<string[]> {
  const ids = await Promise.all(c.nodes.map(async (x) => await nodeId(x)))
  return (await fs.readdir('/run/netns').catch(() => [] as string[])).filter((e) => ids.some((id) => e.startsWith(`msc-${id}-`))).sort()
}

/** msc's links still in a host's namespace (a link is there only while it is made). */
async function strayLinks (node: ClusterNode): Promise<string[]> {
  const r = await c.tb.exec(node.host, 'ip', ['-o', 'link', 'show'])
  return r.stdout.split('\n').filter((l) => /mscl[0-9a-f]/.test(l))
}

async function publish (text: string): Promise<string> {
  const r = await c.tb.exec('h3', REDIS_CLI, ['-h', addr, '-p', String(PORT), 'PUBLISH', 'ch', text])
  return r.stdout.trim()
}

/** A migration of NAME (or `name`), asserted to have worked (Cluster.migrate). */
async function migrate (from: ClusterNode, to: ClusterNode, strategy: string, name = NAME): Promise<MigrationResultInfo> {
  return await c.migrate(from, to, name, strategy)
}

/**
 * The client's connection is whole and every PING so far was answered. PINGs sent
 * while the address was quiet come through on the client's next TCP retransmission,
 * which backs off (0.2, 0.4, 0.8 s, ...): they may resume a while after the migration.
 */
async function assertConnectionKept (context: string): Promise<ClientReport> {
  const before = (await client!.report()).pings
  const deadline = Date.now() + 15_000
  let r = await client!.report()
  while (r.pings <= before + 10 && !r.closed && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200))
    r = await client!.report()
  }
  assert.deepEqual(r.errors, [], `${context}: no request failed`)
  assert.equal(r.closed, false, `${context}: the connection is still open`)
  assert.ok(r.pings > before + 10, `${context}: PINGs still answered on the same connection (${before} -> ${r.pings})`)
  return r
}

describe('--network lan: an address that moves with its container', { timeout: 900_000 }, () => {
  before(async () => {
    c = await startCluster({ hosts: 3, args: NODE_ARGS })
    await c.waitAllAlive(30_000)
    subnet = n('n1').host.ip.split('.').slice(0, 3).join('.')
    addr = `${subnet}.200`
    const bundle = await makeBundle('redis', path.join(c.root, 'redis'), '--port', String(PORT))
    const r = await c.msc(n('n1'), 'run', NAME, bundle, '--network', 'lan', '--ip', `${addr}/24`, '--replicas', '0')
    assert.equal(r.exitCode, 0, `run: ${r.stderr}\n${c.logTail(n('n1'))}`)
    const info = await c.json<ContainerInfo>(n('n1'), 'inspect', NAME)
    assert.deepEqual(info.network, { mode: 'lan', address: addr, prefix: 24, driver: 'macvlan' })
    await waitFor(async () => (await c.tb.exec('h3', REDIS_CLI, ['-h', addr, '-p', String(PORT), 'PING'])).stdout.trim() === 'PONG', 20_000, 'redis to answer at its own address from h3')
    const proc = await c.tb.spawn('h3', process.execPath, [CLIENT, addr, String(PORT)], { stdio: ['pipe', 'pipe', 'inherit'] })
    client = new Client(proc)
    await client.waitLine((l) => l === 'ready', 10_000, 'ready')
  })

  after(async () => {
    client?.proc.kill('SIGKILL')
    await c?.destroy()
  })

  test("the address is the container's: its own namespace on n1, not the node's", async () => {
    assert.deepEqual(await lanNamespaces(), [`msc-${await nodeId(n('n1'))}-${NAME}`])
    const set = await c.tb.exec('h3', REDIS_CLI, ['-h', addr, '-p', String(PORT), 'SET', 'k', 'v1'])
    assert.equal(set.stdout.trim(), 'OK')
    await assertConnectionKept('before any migration')
  })

  for (const [from, to, strategy] of [['n1', 'n2', 'stop-copy'], ['n2', 'n1', 'post-copy']] as const) {
    test(`${strategy} ${from} -> ${to}: one connection survives, no request fails, the subscriber hears what comes after`, async (t) => {
      await client!.resetGap()
      const res = await migrate(n(from), n(to), strategy)
      const r = await assertConnectionKept(`after ${strategy}`)
      t.diagnostic(`${strategy} ${from} -> ${to}: client-observed longest gap ${r.maxGapMs} ms (migration downtime ${res.downtimeMs} ms, ${r.pings} PINGs so far)`)
      const msg = `after-${strategy}`
      assert.equal(await publish(msg), '1', 'one subscriber (the one connected before the migrations) receives it')
      await client!.waitLine((l) => l === `message ${msg}`, 5_000, `message ${msg}`)
      assert.deepEqual(await lanNamespaces(), [`msc-${await nodeId(n(to))}-${NAME}`], 'the namespace is on the new owner only')
      assert.deepEqual(await strayLinks(n(from)), [])
      const get = await c.tb.exec('h3', REDIS_CLI, ['-h', addr, '-p', String(PORT), 'GET', 'k'])
      assert.equal(get.stdout.trim(), 'v1')
    })
  }

  test('a migration that fails after the dump leaves the address on the source, answering on the same connection', async () => {
    const n1 = n('n1')
    await c.stop(n1)
    n1.env = { ...n1.env, MSC_TEST_CORRUPT_TRANSFER: 'images' }
    await c.start(n1)
    try {
      await failedMigration(n1)
    } finally {
      await c.stop(n1)
      delete n1.env.MSC_TEST_CORRUPT_TRANSFER
      await c.start(n1)
      await c.waitAllAlive(30_000)
    }
  })

  async function failedMigration (n1: ClusterNode): Promise<void> {
    await c.waitAllAlive(30_000)
    const r = await c.mscTimed(n1, 240_000, 'peer', 'migrate', NAME, '--to', 'n2', '--strategy', 'stop-copy', '--json')
    assert.notEqual(r.exitCode, 0, `the migration fails: ${r.stdout}`)
    const res = JSON.parse(r.stdout) as MigrationResultInfo
    assert.equal(res.ok, false)
    assert.equal(res.runningOn, n1.peerId, `it runs on n1 again: ${r.stdout}\n${c.logTail(n1, 30)}`)
    await assertConnectionKept('after the failed migration')
    assert.deepEqual(await lanNamespaces(), [`msc-${await nodeId(n1)}-${NAME}`], 'n2 removed what it prepared')
    assert.deepEqual(await strayLinks(n('n2')), [])
    assert.equal(await publish('after-rollback'), '1')
    await client!.waitLine((l) => l === 'message after-rollback', 5_000, 'message after-rollback')
  }

  test('for comparison: a redis in the host network, whose client reconnects to the new node', async (t) => {
    const name = 'hostkv'
    const port = 6390
    const bundle = await makeBundle('redis', path.join(c.root, 'redis-host'), '--port', String(port))
    const r = await c.msc(n('n1'), 'run', name, bundle, '--replicas', '0')
    assert.equal(r.exitCode, 0, `run: ${r.stderr}`)
    const hosts = [n('n1').host.ip, n('n2').host.ip].join(',')
    await waitFor(async () => (await c.tb.exec('h3', REDIS_CLI, ['-h', n('n1').host.ip, '-p', String(port), 'PING'])).stdout.trim() === 'PONG', 20_000, 'host-network redis to answer')
    const proc = await c.tb.spawn('h3', process.execPath, [CLIENT, hosts, String(port), 'reconnect'], { stdio: ['pipe', 'pipe', 'inherit'] })
    const hc = new Client(proc)
    try {
      await hc.waitLine((l) => l === 'ready', 10_000, 'ready')
      for (const [from, to, strategy] of [['n1', 'n2', 'stop-copy'], ['n2', 'n1', 'post-copy']] as const) {
        await hc.resetGap()
        const before = (await hc.report()).reconnects
        const res = await migrate(n(from), n(to), strategy, name)
        await waitFor(async () => (await hc.report()).reconnects > before, 30_000, 'the client to reconnect')
        await new Promise((resolve) => setTimeout(resolve, 300))
        const rep = await hc.report()
        t.diagnostic(`host network, ${strategy} ${from} -> ${to}: client-observed longest gap ${rep.maxGapMs} ms, reconnection included (migration downtime ${res.downtimeMs} ms)`)
      }
    } finally {
      proc.kill('SIGKILL')
      await c.msc(n('n1'), 'rm', '--force', name)
    }
  })

  test('refused, nothing left behind: a taken address, an address outside the subnet, a missing interface', async () => {
    const n2 = n('n2')
    const before = await lanNamespaces()
    const bundle = path.join(c.root, 'redis')
    const taken = await c.msc(n2, 'run', 'kv2', bundle, '--network', 'lan', '--ip', `${addr}/24`)
    assert.notEqual(taken.exitCode, 0)
    assert.match(taken.stderr, new RegExp(`address ${addr.replace(/\./g, '\\.')} is taken in the cluster by container ${NAME}`))
    const outside = await c.msc(n2, 'run', 'kv2', bundle, '--network', 'lan', '--ip', '192.168.77.5/24')
    assert.notEqual(outside.exitCode, 0)
    assert.match(outside.stderr, /192\.168\.77\.5\/24 is not in the subnet of eth0/)
    const bad = await c.msc(n2, 'run', 'kv2', bundle, '--network', 'lan', '--ip', `${subnet}.999/24`)
    assert.notEqual(bad.exitCode, 0)
    assert.match(bad.stderr, /--ip/)
    assert.deepEqual(await lanNamespaces(), before)
    assert.deepEqual(await strayLinks(n2), [])
    assert.equal((await c.json<ContainerInfo[]>(n2, 'ps')).length, 0)

    const n3 = n('n3')
    await c.stop(n3)
    await c.start(n3, NODE_ARGS.map((a) => a === 'eth0' ? 'nosuch0' : a))
    await c.waitAllAlive(30_000)
    const missing = await c.msc(n3, 'run', 'kv3', bundle, '--network', 'lan', '--ip', `${subnet}.201/24`)
    assert.notEqual(missing.exitCode, 0)
    assert.match(missing.stderr, /LAN interface nosuch0 does not exist/)
    const mig = await c.mscTimed(n('n1'), 120_000, 'peer', 'migrate', NAME, '--to', 'n3', '--json')
    assert.notEqual(mig.exitCode, 0)
    const res = JSON.parse(mig.stdout) as MigrationResultInfo
    assert.equal(res.ok, false)
    assert.match(res.error?.message ?? '', /cannot give kv its address .*nosuch0 does not exist/)
    assert.deepEqual(await lanNamespaces(), before)
    assert.deepEqual(await strayLinks(n3), [])
    await assertConnectionKept('after the refusals')
  })
})
