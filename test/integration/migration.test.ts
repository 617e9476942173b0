/**
 * Live migration as a user sees it: three msc nodes, one per network-namespace host of
 * a Testbed, and `msc migrate NAME --to PEER --strategy S --json` run against the node
 * that has the container (the source). After every hop:
 *   - exactly one node runs it (`msc ps` and runc's own list on every node's data dir);
 *   - `msc peer ls --json` on every other node shows the new owner, the ownership epoch
 *     raised by one per hop;
 *   - its output went with it (`msc logs` on the target: one sequence 1..N, no value
 *     twice, no restart at 1), and the source's `msc logs` says where it went;
 *   - no migration staging is left in either node's DIR/tmp.
 * Also redis with 100,000 keys and a subscribed client connected (every key there,
 * answering on the target host's address only, the client's connection ended and a
 * reconnected client served), a file the container wrote in its rootfs, the pre-copy refusal on a kernel
 * without soft-dirty, and clear errors for bad requests. Measured downtime and total
 * time are printed as a table at the end.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), redis-server/redis-cli, iproute2,
 * nsenter, iptables/ebtables (test/testbed/README.md), fs.pipe-max-size >= 16 MiB for
 * post-copy (/work/shared/notes/host.md).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { execa } from 'execa'
import { Testbed } from '../testbed/testbed.ts'
import { counterValues, ROOT } from '../helpers/node-harness.ts'
import { assertOneSequence, logValues, makeBundle, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import type { ContainerInfo, MigrationResultInfo, NodeStatus } from '../../src/api/types.ts'
import { REDIS_CLI } from '../../src/bundles/redis.ts'

const FAST_PINGS = ['--ping-interval', '0.5', '--ping-timeout', '3']
const NODE_ARGS = ['--mdns-interval', '1', ...FAST_PINGS]
const REDIS_PORT = 6379
const REDIS_KEYS = 100_000
const PHASE_NAMES = ['prepare', 'bundle', 'pre-copy', 'freeze-dump', 'transfer', 'restore', 'lazy-pages', 'commit', 'rollback']

interface Measured {
  what: string
  strategy: string
  hop: string
  downtimeMs: number | null
  totalMs: number
  bytes: number
  goodputMBps: number | null
}
const measured: Measured[] = []

let c: Cluster
const n = (name: string): ClusterNode => c.node(name)
let bundles = ''

// ---------------------------------------------------------------------------------
// helpers

/** `msc migrate NAME --to TO --strategy S --json` against `from`: exactly one JSON document on stdout. */
async function migrate (from: ClusterNode, name: string, to: string, strategy: string, timeoutMs = 180_000): Promise<{ exitCode: number; stderr: string; result: MigrationResultInfo }> {
  const r = await c.mscTimed(from, timeoutMs, 'migrate', name, '--to', to, '--strategy', strategy, '--json')
  let result: MigrationResultInfo
  try {
    result = JSON.parse(r.stdout) as MigrationResultInfo
  } catch {
    throw new Error(`msc migrate --json did not print exactly one JSON document (exit ${r.exitCode}):\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
  }
  return { exitCode: r.exitCode, stderr: r.stderr, result }
}

function assertSucceeded (m: { exitCode: number; stderr: string; result: MigrationResultInfo }, name: string, from: ClusterNode, to: ClusterNode, strategy: string): MigrationResultInfo {
  const r = m.result
  const what = `${name} ${from.name} -> ${to.name} (${strategy}): ${JSON.stringify(r)}\nstderr: ${m.stderr}\nsource log:\n${c.logTail(from, 15)}\ntarget log:\n${c.logTail(to, 15)}`
  assert.equal(m.exitCode, 0, what)
  assert.equal(r.ok, true, what)
  assert.equal(r.error, undefined, what)
  assert.equal(r.container, name, what)
  assert.equal(r.from, from.peerId, what)
  assert.equal(r.fromName, from.name, what)
  assert.equal(r.to, to.peerId, what)
  assert.equal(r.toName, to.name, what)
  assert.equal(r.strategy, strategy, what)
  assert.equal(r.runningOn, to.peerId, what)
  assert.ok(typeof r.downtimeMs === 'number' && r.downtimeMs > 0, `${what}: downtimeMs > 0`)
  assert.ok(r.totalMs >= r.downtimeMs, `${what}: totalMs >= downtimeMs`)
  assert.ok(r.bytes > 0, `${what}: bytes > 0`)
  for (const p of Object.keys(r.phases)) assert.ok(PHASE_NAMES.includes(p), `${what}: known phase ${p}`)
  for (const p of ['prepare', 'freeze-dump', 'transfer', 'restore', 'commit']) assert.ok(p in r.phases, `${what}: phase ${p} timed`)
  if (strategy === 'post-copy') assert.ok('lazy-pages' in r.phases, `${what}: phase lazy-pages timed`)
  // The nodes have sealed data channels: stop-copy's pages stream to the target's page
  // server while CRIU dumps, post-copy's page server is reached over a page link.
  if (strategy === 'stop-copy' || strategy === 'post-copy') assert.equal(r.streamedPages, true, `${what}: the pages crossed over a sealed page connection`)
  assert.ok(!('rollback' in r.phases), `${what}: no rollback`)
  return r
}

function record (what: string, r: MigrationResultInfo): void {
  measured.push({ what, strategy: r.strategy, hop: `${r.fromName}->${r.toName}`, downtimeMs: r.downtimeMs, totalMs: r.totalMs, bytes: r.bytes, goodputMBps: r.goodputMBps })
}

/**
 * Exactly one copy: `owner` lists `name` running in `msc ps` and runc has it running
 * under its root; every other node has it in neither. owner null: nowhere.
 */
async function assertOnlyOn (name: string, owner: ClusterNode | null): Promise<void> {
  const views = await Promise.all(c.nodes.map(async (x) => ({
    x,
    ps: (await c.json<ContainerInfo[]>(x, 'ps')).filter((e) => e.name === name),
    rl: (await c.runcList(x)).filter((e) => e.id === name)
  })))
  for (const { x, ps, rl } of views) {
    if (x === owner) {
      assert.equal(ps.length, 1, `${x.name}: msc ps lists ${name} once: ${JSON.stringify(ps)}`)
      assert.equal(ps[0]!.state, 'running', `${x.name}: ${name} running: ${JSON.stringify(ps[0])}`)
      assert.equal(rl.length, 1, `${x.name}: runc has ${name}: ${JSON.stringify(rl)}`)
      assert.equal(rl[0]!.status, 'running', `${x.name}: runc says ${name} runs: ${JSON.stringify(rl[0])}`)
    } else {
      assert.deepEqual(ps, [], `${x.name}: msc ps does not list ${name}`)
      assert.deepEqual(rl, [], `${x.name}: runc has no ${name}`)
    }
  }
}

/** Where runc runs `name`, by node (for tests that pick up a container where an earlier one left it). */
async function runningOn (name: string): Promise<ClusterNode[]> {
  const out: ClusterNode[] = []
  for (const x of c.nodes) if ((await c.runcList(x)).some((e) => e.id === name && e.status === 'running')) out.push(x)
  return out
}

/**
 * Every node other than `owner` lists `owner` claiming `name` at `epoch` in
 * `msc peer ls --json`, and no other peer claiming it. Polled on the API (gossip takes
 * a heartbeat or two), then confirmed once through the CLI.
 */
async function assertOwnerEverywhere (name: string, owner: ClusterNode, epoch: number): Promise<void> {
  const others = c.nodes.filter((x) => x !== owner)
  const check = async (list: Awaited<ReturnType<Cluster['peers']>>, observer: ClusterNode): Promise<string | null> => {
    const o = list.find((p) => p.peerId === owner.peerId)
    const claim = o?.containers.find((x) => x.name === name)
    if (claim == null) return `${observer.name} does not see ${owner.name} claim ${name}: ${JSON.stringify(o?.containers)}`
    if (claim.epoch !== epoch) return `${observer.name} sees ${owner.name} claim ${name} at epoch ${claim.epoch}, expected ${epoch}`
    if (claim.state !== 'running') return `${observer.name} sees ${name} ${claim.state} on ${owner.name}`
    const elsewhere = list.filter((p) => p.peerId !== owner.peerId && p.containers.some((x) => x.name === name))
    if (elsewhere.length > 0) return `${observer.name} also sees ${elsewhere.map((p) => p.name).join(', ')} claim ${name}`
    return null
  }
  let last: string | null = null
  try {
    await waitFor(async () => {
      for (const x of others) {
        last = await check(await c.peersApi(x), x)
        if (last != null) return false
      }
      return true
    }, 10_000, `every node to see ${owner.name} own ${name} at epoch ${epoch}`)
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${last}`)
  }
  const confirmed = await Promise.all(others.map(async (x) => await check(await c.peers(x), x)))
  assert.deepEqual(confirmed.filter((e) => e != null), [], 'msc peer ls --json agrees')
}

/** The epoch at which the others see `owner` claim `name` (all must agree). */
async function claimedEpoch (name: string, owner: ClusterNode): Promise<number> {
  let epoch = -1
  await waitFor(async () => {
    const seen = new Set<number>()
    for (const x of c.nodes.filter((y) => y !== owner)) {
      const e = (await c.peersApi(x)).find((p) => p.peerId === owner.peerId)?.containers.find((k) => k.name === name)?.epoch
      if (e == null) return false
      seen.add(e)
    }
    if (seen.size !== 1) return false
    epoch = [...seen][0]!
    return true
  }, 10_000, `the others to see ${owner.name} claim ${name}`)
  return epoch
}

/** No migration staging (mig-*) nor partial transfer left in DIR/tmp of these nodes, once things settle. */
async function assertNoStaging (nodes: ClusterNode[]): Promise<void> {
  let left: string[] = []
  try {
    await waitFor(async () => {
      left = []
      for (const x of nodes) for (const e of await c.tmpEntries(x)) left.push(`${x.name}: tmp/${e}`)
      return left.length === 0
    }, 10_000, 'DIR/tmp to be empty')
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${left.join(', ')}`)
  }
}

/** The source's `msc logs NAME` fails and says where the container went. */
async function assertMovedNotice (source: ClusterNode, name: string, to: ClusterNode): Promise<void> {
  const r = await c.msc(source, 'logs', name)
  assert.notEqual(r.exitCode, 0, `${source.name}: msc logs ${name} after it left: ${r.stdout}`)
  assert.match(r.stderr, new RegExp(`${name} moved to ${to.name} \\(${to.peerId}\\)`), `${source.name}: msc logs says where ${name} went`)
}

/**
 * One hop of a counter: migrates, then checks the result, where it runs, who owns it
 * at which epoch, its output on the target (continued, one sequence), the source's
 * notice, and the staging dirs.
 */
async function counterHop (name: string, from: ClusterNode, to: ClusterNode, strategy: string, epoch: number): Promise<void> {
  await waitFor(() => logValues(from, name).length >= 3, 10_000, `${name} on ${from.name} to print`)
  const lastBefore = logValues(from, name).at(-1) ?? 0
  const m = await migrate(from, name, to.name, strategy)
  const r = assertSucceeded(m, name, from, to, strategy)
  record(name, r)
  await assertOnlyOn(name, to)
  await assertOwnerEverywhere(name, to, epoch)
  // It goes on counting on the target: from where it was, not from 1.
  const before = logValues(to, name).at(-1) ?? 0
  await waitFor(() => (logValues(to, name).at(-1) ?? 0) >= before + 3, 10_000, `${name} to go on counting on ${to.name}`)
  const logs = await c.msc(to, 'logs', name)
  assert.equal(logs.exitCode, 0, logs.stderr)
  const values = counterValues(logs.stdout)
  assertOneSequence(values, `msc logs ${name} on ${to.name} after ${from.name} -> ${to.name}`)
  assert.ok(values.at(-1)! > lastBefore, `${name} went on past ${lastBefore} (the source's last value when the migration started): ${values.at(-1)}`)
  await assertMovedNotice(from, name, to)
  await assertNoStaging([from, to])
}

async function redisCli (host: ClusterNode, ...args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await execa(REDIS_CLI, ['-h', host.host.ip, '-p', String(REDIS_PORT), ...args], { reject: false, timeout: 10_000 })
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout).trim(), stderr: String(r.stderr).trim() }
}

/** Every key there: DBSIZE, the first and last keys and 300 random ones (key i holds i). */
async function assertRedisKeys (host: ClusterNode, count: number): Promise<void> {
  const size = await redisCli(host, 'DBSIZE')
  assert.equal(size.stdout, String(count), `DBSIZE on ${host.name} (${host.host.ip}): ${JSON.stringify(size)}`)
  const keys = [1, count]
  for (let i = 0; i < 300; i++) keys.push(1 + Math.floor(Math.random() * count))
  const r = await execa(REDIS_CLI, ['-h', host.host.ip, '-p', String(REDIS_PORT)], { input: keys.map((k) => `GET ${k}`).join('\n') + '\n', reject: false, timeout: 20_000 })
  const got = String(r.stdout).split('\n')
  assert.equal(r.exitCode, 0, String(r.stderr))
  for (const [i, k] of keys.entries()) assert.equal(got[i], String(k), `GET ${k} on ${host.name}`)
}

async function assertRedisAnswersOnlyOn (owner: ClusterNode): Promise<void> {
  for (const x of c.nodes) {
    const p = await redisCli(x, 'PING')
    if (x === owner) assert.equal(p.stdout, 'PONG', `redis answers PING on ${x.name}'s address ${x.host.ip}: ${JSON.stringify(p)}`)
    else assert.notEqual(p.stdout, 'PONG', `redis no longer answers on ${x.name}'s address ${x.host.ip}`)
  }
}

/** A message pushed to a subscriber: the array ["message", "ch", PAYLOAD] in RESP. */
const PUSHED = /\$7\r\nmessage\r\n\$2\r\nch\r\n\$\d+\r\n([^\r]*)\r\n/

interface Subscriber {
  ended: Promise<string>
  messages: string[]
  close: () => void
}

/**
 * A client subscribed to channel `ch` on HOST's redis over one TCP connection, as
 * `redis-cli subscribe ch` would be: `ended` resolves with how the connection ended.
 */
async function subscribe (host: ClusterNode): Promise<Subscriber> {
  const sock = net.connect({ host: host.host.ip, port: REDIS_PORT })
  const messages: string[] = []
  let buf = ''
  const ended = new Promise<string>((resolve) => {
    sock.on('error', (err) => {
      resolve(`error ${(err as NodeJS.ErrnoException).code ?? err.message}`)
    })
    sock.on('close', () => {
      resolve('closed')
    })
  })
  sock.on('data', (d) => {
    buf += d.toString('utf8')
    for (;;) {
      const m = PUSHED.exec(buf)
      if (m === null) break
      messages.push(m[1] as string)
      buf = buf.slice(m.index + m[0].length)
    }
  })
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve)
    sock.once('error', reject)
  })
  sock.write('SUBSCRIBE ch\r\n')
  await waitFor(() => buf.includes('subscribe'), 5_000, `the subscription on ${host.name}`)
  return { ended, messages, close: () => {
    sock.destroy()
  } }
}

/** PUBLISH ch TEXT on HOST until a subscriber there got it (a subscription is not instant). */
async function assertDelivered (host: ClusterNode, sub: Subscriber, text: string): Promise<void> {
  await waitFor(async () => {
    await redisCli(host, 'PUBLISH', 'ch', text)
    return sub.messages.includes(text)
  }, 10_000, `${text} published on ${host.name} to reach its subscriber (got ${JSON.stringify(sub.messages)})`)
}

/**
 * Moves redis with a subscribed client connected, as every real service has one: the
 * migration succeeds, that client sees its connection end (the container's address was
 * its source host's), and a client that reconnects to the target's address is served.
 */
async function redisHop (from: ClusterNode, to: ClusterNode, strategy: string, epoch: number): Promise<void> {
  const before = await subscribe(from)
  await assertDelivered(from, before, `before-${strategy}`)
  const m = await migrate(from, 'redis', to.name, strategy)
  const r = assertSucceeded(m, 'redis', from, to, strategy)
  record(`redis ${REDIS_KEYS / 1000}k keys`, r)
  const how = await Promise.race([before.ended, sleep(15_000).then(() => 'still open 15 s after the migration')])
  assert.match(how, /^(closed|error)/, `the client connected to ${from.name} during the migration sees its connection end`)
  const again = await subscribe(to)
  try {
    await assertDelivered(to, again, `after-${strategy}`)
  } finally {
    again.close()
    before.close()
  }
  await assertRedisAnswersOnlyOn(to)
  await assertRedisKeys(to, REDIS_KEYS)
  await assertOnlyOn('redis', to)
  await assertOwnerEverywhere('redis', to, epoch)
  await assertNoStaging([from, to])
}

// ---------------------------------------------------------------------------------

before(async () => {
  await Testbed.destroyStale()
})

describe('live migration between three nodes', () => {
  before(async () => {
    c = await startCluster({ hosts: 3, args: NODE_ARGS })
    bundles = path.join(c.root, 'bundles')
    await c.waitAllAlive(15_000)
  })

  after(async () => {
    if (measured.length > 0) {
      const rows = measured.map((m) => ({
        container: m.what,
        strategy: m.strategy,
        hop: m.hop,
        'downtime ms': m.downtimeMs ?? '-',
        'total ms': m.totalMs,
        MB: Math.round(m.bytes / 1e5) / 10,
        'MB/s': m.goodputMBps ?? '-'
      }))
      console.log('\nmeasured migrations:')
      console.table(rows)
    }
    await c?.destroy()
  })

  test('counter, stop-copy: n1 -> n2 -> n1 -> n2 -> n3, one copy and one output sequence throughout', { timeout: 150_000 }, async () => {
    const bundle = await makeBundle('counter', path.join(bundles, 'counter'), '--interval-ms', '250')
    const run = await c.msc(n('n1'), 'run', 'counter', bundle)
    assert.equal(run.exitCode, 0, run.stderr)
    const e0 = await claimedEpoch('counter', n('n1'))
    assert.equal(e0, 1, 'a new name starts at epoch 1')
    await assertOnlyOn('counter', n('n1'))
    const hops: Array<[string, string]> = [['n1', 'n2'], ['n2', 'n1'], ['n1', 'n2'], ['n2', 'n3']]
    for (const [i, [from, to]] of hops.entries()) await counterHop('counter', n(from), n(to), 'stop-copy', e0 + i + 1)
  })

  test('counter, post-copy: n1 -> n2 -> n1', { timeout: 120_000 }, async () => {
    const bundle = await makeBundle('counter', path.join(bundles, 'counter-pc'), '--interval-ms', '250')
    const run = await c.msc(n('n1'), 'run', 'counterpc', bundle)
    assert.equal(run.exitCode, 0, run.stderr)
    const e0 = await claimedEpoch('counterpc', n('n1'))
    const hops: Array<[string, string]> = [['n1', 'n2'], ['n2', 'n1']]
    for (const [i, [from, to]] of hops.entries()) await counterHop('counterpc', n(from), n(to), 'post-copy', e0 + i + 1)
  })

  test("a file the container wrote in its rootfs is in the target's rootfs", { timeout: 60_000 }, async () => {
    const bundle = await makeBundle('counter', path.join(bundles, 'writer'), '--interval-ms', '250')
    const cfgFile = path.join(bundle, 'config.json')
    const cfg = JSON.parse(await fs.readFile(cfgFile, 'utf8')) as { process: { args: string[] } }
    cfg.process.args = ['/bin/sh', '-c', 'echo hello > /data.txt; exec /bin/sh /count.sh']
    await fs.writeFile(cfgFile, JSON.stringify(cfg, null, 2))
    const run = await c.msc(n('n1'), 'run', 'writer', bundle)
    assert.equal(run.exitCode, 0, run.stderr)
    await waitFor(() => logValues(n('n1'), 'writer').length >= 2, 10_000, 'writer to start')
    assert.equal(await fs.readFile(path.join(bundle, 'rootfs', 'data.txt'), 'utf8'), 'hello\n', 'written on the source')
    const e0 = await claimedEpoch('writer', n('n1'))
    await counterHop('writer', n('n1'), n('n2'), 'stop-copy', e0 + 1)
    const there = path.join(n('n2').dataDir, 'containers', 'writer', 'src', 'rootfs', 'data.txt')
    assert.equal(await fs.readFile(there, 'utf8'), 'hello\n', `${there} on the target`)
    // And the container itself sees it there.
    const cat = await execa('runc', ['--root', path.join(n('n2').dataDir, 'runc'), 'exec', 'writer', '/bin/cat', '/data.txt'], { reject: false, timeout: 10_000 })
    assert.equal(String(cat.stdout), 'hello', `runc exec cat /data.txt on n2: ${String(cat.stderr)}`)
  })

  test(`redis with ${REDIS_KEYS} keys, stop-copy n1 -> n2: every key there, answering on n2's address only`, { timeout: 120_000 }, async () => {
    const bundle = await makeBundle('redis', path.join(bundles, 'redis'), '--port', String(REDIS_PORT), '--bind', '0.0.0.0')
    const run = await c.msc(n('n1'), 'run', 'redis', bundle)
    assert.equal(run.exitCode, 0, run.stderr)
    await waitFor(async () => (await redisCli(n('n1'), 'PING')).stdout === 'PONG', 10_000, 'redis on n1 to answer')
    const pop = await execa(path.join(ROOT, 'demos', 'populate-redis.sh'), ['-h', n('n1').host.ip, '-p', String(REDIS_PORT), String(REDIS_KEYS)], { reject: false, timeout: 60_000 })
    assert.equal(String(pop.stdout).trim(), String(REDIS_KEYS), `populate: ${String(pop.stderr)}`)
    await assertRedisKeys(n('n1'), REDIS_KEYS)
    const e0 = await claimedEpoch('redis', n('n1'))
    await redisHop(n('n1'), n('n2'), 'stop-copy', e0 + 1)
  })

  test(`redis with ${REDIS_KEYS} keys, post-copy onwards to n3: every key there, answering on n3's address only`, { timeout: 120_000 }, async () => {
    const [from] = await runningOn('redis')
    assert.ok(from != null, 'redis runs somewhere (the stop-copy test started it)')
    const to = from === n('n3') ? n('n1') : n('n3')
    const e0 = await claimedEpoch('redis', from)
    await redisHop(from, to, 'post-copy', e0 + 1)
  })

  test('--strategy pre-copy: refused where the kernel lacks dirty tracking (this one); run where it has it', { timeout: 120_000 }, async () => {
    const [src] = await runningOn('counter')
    assert.ok(src != null, 'counter runs somewhere (the stop-copy test started it)')
    const dst = src === n('n1') ? n('n2') : n('n1')
    const st = await c.status(src) as NodeStatus
    const criu = st.criu.split(' ')[0]!
    const dirty = await execa(criu, ['check', '--feature', 'mem_dirty_track'], { reject: false, timeout: 30_000 })
    const before = logValues(src, 'counter').at(-1) ?? 0
    const m = await migrate(src, 'counter', dst.name, 'pre-copy')
    const what = `${JSON.stringify(m.result)}\nstderr: ${m.stderr}`
    if (dirty.exitCode === 0) {
      // A kernel with soft-dirty bits (not this one, see host.md): the strategy runs,
      // memory moves in pre-dump rounds while it counts, and it goes on on the target.
      assert.equal(m.exitCode, 0, what)
      assert.equal(m.result.ok, true, what)
      assert.equal(m.result.strategy, 'pre-copy', what)
      assert.ok('pre-copy' in m.result.phases, what)
      await assertOnlyOn('counter', dst)
      await waitFor(async () => (counterValues((await c.msc(dst, 'logs', 'counter')).stdout).at(-1) ?? 0) >= before + 2, 10_000, 'counter to go on on the target')
      assertOneSequence(counterValues((await c.msc(dst, 'logs', 'counter')).stdout), `counter on ${dst.name}`)
      return
    }
    assert.notEqual(m.exitCode, 0, what)
    assert.equal(m.result.ok, false, what)
    assert.equal(m.result.runningOn, src.peerId, `${what}: still runs on the source`)
    if (dirty.exitCode !== 0) {
      // This kernel has no soft-dirty bits (host.md): the target refuses at the offer.
      assert.match(m.result.error!.message, /memory dirty tracking \(soft-dirty\)/, what)
      assert.match(m.result.error!.message, /mem_dirty_track/, what)
      assert.match(m.result.error!.message, /--strategy (post-copy|stop-copy)/, what)
      assert.match(m.stderr, /soft-dirty/, 'the reason is on stderr too')
    }
    assert.ok(!('freeze-dump' in m.result.phases), `${what}: never frozen`)
    await assertOnlyOn('counter', src)
    await assertNoStaging(c.nodes)
    // Never interrupted: it went on counting, in one sequence.
    await waitFor(() => (logValues(src, 'counter').at(-1) ?? 0) >= before + 2, 10_000, 'counter to go on counting on the source')
    assertOneSequence(counterValues((await c.msc(src, 'logs', 'counter')).stdout), `counter on ${src.name}`)
  })

  test('bad requests fail clearly with a non-zero exit and change nothing', { timeout: 90_000 }, async () => {
    const [src] = await runningOn('counter')
    assert.ok(src != null, 'counter runs somewhere')
    const dst = src === n('n1') ? n('n2') : n('n1')

    const unknownPeer = await migrate(src, 'counter', 'no-such-peer', 'stop-copy')
    assert.equal(unknownPeer.exitCode, 1, JSON.stringify(unknownPeer))
    assert.equal(unknownPeer.result.ok, false)
    assert.equal(unknownPeer.result.error?.code, 'NOT_FOUND')
    assert.match(unknownPeer.result.error!.message, /no member no-such-peer in this node's cluster/)
    assert.match(unknownPeer.stderr, /migration of counter failed: no member no-such-peer/)
    assert.match(unknownPeer.stderr, new RegExp(`counter still runs on ${src.name}`))

    const toSelf = await migrate(src, 'counter', src.name, 'stop-copy')
    assert.notEqual(toSelf.exitCode, 0, JSON.stringify(toSelf))
    assert.equal(toSelf.result.ok, false)
    assert.match(toSelf.result.error!.message, /already runs on this node/)

    const unknown = await migrate(src, 'no-such-container', dst.name, 'stop-copy')
    assert.equal(unknown.exitCode, 1, JSON.stringify(unknown))
    assert.equal(unknown.result.ok, false)
    assert.equal(unknown.result.error?.code, 'NOT_FOUND')
    assert.match(unknown.result.error!.message, /no container named no-such-container on this node/)

    const bundle = await makeBundle('counter', path.join(bundles, 'stopped'), '--interval-ms', '250')
    assert.equal((await c.msc(src, 'run', 'stopped', bundle)).exitCode, 0)
    const stop = await c.msc(src, 'stop', 'stopped')
    assert.equal(stop.exitCode, 0, stop.stderr)
    const stopped = await migrate(src, 'stopped', dst.name, 'stop-copy')
    assert.equal(stopped.exitCode, 1, JSON.stringify(stopped))
    assert.equal(stopped.result.ok, false)
    assert.equal(stopped.result.error?.code, 'INVALID_STATE')
    assert.match(stopped.result.error!.message, /container stopped is stopped: only a running container migrates/)
    const ps = (await c.json<ContainerInfo[]>(src, 'ps')).find((x) => x.name === 'stopped')
    assert.equal(ps?.state, 'stopped', `still there, stopped: ${JSON.stringify(ps)}`)
    assert.deepEqual((await c.json<ContainerInfo[]>(dst, 'ps')).filter((x) => x.name === 'stopped'), [])
    assert.equal((await c.msc(src, 'rm', 'stopped')).exitCode, 0)

    await assertOnlyOn('counter', src)
    await assertNoStaging(c.nodes)
  })
})
