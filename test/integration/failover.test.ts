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
import fs from 'node:fs/promises'
import path from 'node:path'
import { logValues, makeBundle, startCluster, sleep, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import type { ContainerInfo, NodeEvent } from '../../src/api/types.ts'
import { rankStandbys } from '../../src/replication/standby-choice.ts'

const DUMP_S = 1
const LEASE_S = 5
const COUNTER_MS = 100
const ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3', '--lease-timeout', String(LEASE_S), '--dump-interval', String(DUMP_S)]

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

/** What `msc inspect NAME --json` prints, from the API socket: polled, the CLI's start-up would load the nodes it watches. */
async function inspect (node: ClusterNode, name: string): Promise<ContainerInfo> {
  return await c.inspectApi(node, name)
}

/** Waits until the owner reports `gens` generations acknowledged by a standby. */
async function replicated (owner: ClusterNode, name: string, gens = 2): Promise<ContainerInfo> {
  let info: ContainerInfo | undefined
  let error = ''
  await waitFor(async () => {
    info = await inspect(owner, name).catch((err) => {
      error = (err as Error).message
      return undefined
    })
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

/** Samples, every 100 ms until stopped, when `name` last ran on `owner` and first ran anywhere else. */
function watchHandover (name: string, owner: ClusterNode): { stop: () => Promise<{ lastOwner: number; firstOther: number; others: string[] }> } {
  let lastOwner = 0
  let firstOther = 0
  const others = new Set<string>()
  let running = true
  const loop = (async () => {
    while (running) {
      const t = Date.now()
      for (const x of c.nodes) {
        const on = (await c.runcList(x)).some((e) => e.id === name && (e.status === 'running' || e.status === 'paused'))
        if (!on) continue
        if (x === owner) lastOwner = t
        else {
          others.add(x.name)
          if (firstOther === 0) firstOther = t
        }
      }
      await sleep(100)
    }
  })()
  return { stop: async () => {
    running = false
    await loop
    return { lastOwner, firstOther, others: [...others] }
  } }
}

async function events (node: ClusterNode): Promise<NodeEvent[]> {
  const r = await c.msc(node, 'events', '--json', '--no-follow')
  assert.equal(r.exitCode, 0, r.stderr)
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as NodeEvent)
}

/** Every node up, seeing the others alive, with the given environment (restarting it if needed). */
async function allUp (env: Record<string, NodeJS.ProcessEnv> = {}): Promise<void> {
  for (const x of c.nodes) {
    await c.tb.heal(x.host)
    const want = env[x.name] ?? {}
    if (JSON.stringify(x.env) !== JSON.stringify(want)) {
      if (x.proc != null && x.proc.exitCode == null && x.proc.signalCode == null) await c.stop(x)
      x.env = want
    }
    if (x.proc == null || x.proc.exitCode != null || x.proc.signalCode != null) await c.start(x)
  }
  await c.waitAllAlive(30_000)
}

before(async () => {
  c = await startCluster({ hosts: 3, args: ARGS })
  bundle = await makeBundle('counter', path.join(c.root, 'counter'), '--interval-ms', String(COUNTER_MS))
  await c.waitAllAlive(30_000)
})

after(async () => {
  await c?.destroy()
})

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
    await waitFor(async () => {
      where = await runningOn('ctr', [n('n2'), n('n3')])
      return where.length > 0
    }, 60_000, () => `ctr running again on n2 or n3\n${c.logTail(n('n2'), 15)}\n${c.logTail(n('n3'), 15)}`)
    const rtoMs = Date.now() - killedAt
    const on = await exactlyOneFor('ctr', 3_000)
    assert.equal(on, standby, 'restored on its standby')
    // It counts on from its last generation: no restart at 1, at most about one interval back.
    let after: number[] = []
    await waitFor(async () => {
      after = logValues(n(on), 'ctr')
      return after.length >= 5
    }, 20_000, 'output on the new node')
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

  test('its node is power-cut and back within a second: the dead copy is not kept, it runs again on exactly one node', async () => {
    const r = await c.msc(n('n2'), 'run', 'quick', bundle, '--replicas', '1')
    assert.equal(r.exitCode, 0, r.stderr)
    await replicated(n('n2'), 'quick', 2)
    await c.tb.kill(n('n2').host)
    await sleep(1_000)
    await c.start(n('n2'))
    let where: string[] = []
    await waitFor(async () => {
      where = await runningOn('quick')
      return where.length > 0
    }, 60_000,
      async () =>
        `quick running again somewhere: ${JSON.stringify(await Promise.all(c.nodes.map(async (x) => [x.name, await inspect(x, 'quick').then((i) => i.state, (e: Error) => e.message)])))}\n${c.nodes.map((x) => c.logTail(x, 30)).join('\n')}`)
    assert.notEqual(where[0], 'n2', 'brought back by its standby, not restarted by the node that died')
    await exactlyOneFor('quick', 3_000)
    // The dead copy never runs again: fenced once n2 hears of the new owner.
    await waitFor(async () => (await inspect(n('n2'), 'quick').catch(() => null))?.state === 'fenced', 30_000, () => `n2's copy fenced\n${c.logTail(n('n2'), 20)}`)
    assert.equal((await c.msc(n(where[0]!), 'rm', '--force', 'quick')).exitCode, 0)
  })

  // Once flaky in CI: the third member, back, can rank above n1 and take the replica (now
  // handled with `heir`); it runs in `npm test` again once this version has had calm runs.
  test("a node holding a fenced copy keeps the new owner's replicas, and takes the container over in turn", { skip: process.env.MSC_FAILOVER_SLOW === '1' ? false : 'MSC_FAILOVER_SLOW=1 runs it' }, async () => {
    const owner = n((await runningOn('ctr'))[0]!)
    const other = c.nodes.find((x) => x !== owner && x !== n('n1'))!
    // With the third member down, the node with the fenced copy is the only one left to keep a replica.
    await c.tb.kill(other.host)
    let info: ContainerInfo | undefined
    await waitFor(async () => {
      info = await inspect(owner, 'ctr').catch(() => undefined)
      return info?.replication?.standbys.some((s) => s.name === 'n1' && s.generation != null) === true
    }, 90_000, () => `n1 acknowledged a generation of ctr from ${owner.name}: ${JSON.stringify(info?.replication)}\n${c.logTail(n('n1'), 15)}`)
    await c.start(other)
    await c.waitAllAlive(60_000)
    // Back, the third member may rank above n1 for this name: then the owner moves its
    // replica there, and that member restores it. Which one is known from the peer ids.
    const heir = rankStandbys('ctr', [n('n1').peerId, other.peerId])[0] === n('n1').peerId ? n('n1') : other
    await waitFor(async () => {
      info = await inspect(owner, 'ctr').catch(() => undefined)
      return info?.replication?.standbys.some((s) => s.name === heir.name && s.generation != null) === true
    }, 90_000, () => `${heir.name} acknowledged a generation of ctr: ${JSON.stringify(info?.replication)}`)
    const last = logValues(owner, 'ctr').at(-1)!
    await c.tb.kill(owner.host)
    await waitFor(async () => (await runningOn('ctr', [n('n1'), other])).length > 0, 60_000, () => `ctr running again\n${c.logTail(n('n1'), 20)}\n${c.logTail(other, 10)}`)
    assert.equal(await exactlyOneFor('ctr', 3_000), heir.name, `restored on ${heir.name}, from the replica it kept`)
    const back = await inspect(heir, 'ctr')
    assert.equal(back.state, 'running')
    assert.equal(back.epoch, 3, "owned at the epoch above the second owner's")
    await waitFor(() => logValues(heir, 'ctr').length >= 3, 20_000, `output on ${heir.name}`)
    const first = logValues(heir, 'ctr')[0]!
    assert.ok(first > 1 && first <= last + 1, `counts on from the second owner's generation: first ${first}, last ${last}`)
    if (heir === n('n1')) {
      // The fenced copy was set aside, with its log and checkpoints, not deleted.
      const aside = await fs.readdir(path.join(n('n1').dataDir, 'containers', '.fenced'))
      assert.equal(aside.length, 1, `one fenced copy set aside: ${aside.join(', ')}`)
      assert.match(aside[0]!, /^ctr-epoch1-\d+$/)
      await fs.access(path.join(n('n1').dataDir, 'containers', '.fenced', aside[0]!, 'container.json'))
    } else {
      assert.equal((await inspect(n('n1'), 'ctr')).state, 'fenced', 'n1 keeps its fenced copy')
    }
    await c.start(owner)
    await c.waitAllAlive(60_000)
  })

  test('no generation restores at first (a passing fault): the standby gives the lease back, tries again later, and the container runs', async () => {
    await allUp()
    assert.equal((await c.msc(n('n2'), 'run', 'retry', bundle, '--replicas', '1')).exitCode, 0)
    const info = await replicated(n('n2'), 'retry', 2)
    const standby = n(info.replication!.standbys[0]!.name)
    await c.tb.kill(n('n2').host)
    // Within the lease the standby waits out, every generation it holds is made
    // unrestorable: its CRIU inventory is moved aside.
    const dir = path.join(standby.dataDir, 'replicas', 'retry')
    const gens = (await fs.readdir(dir)).filter((e) => /^gen-\d+$/.test(e))
    assert.ok(gens.length > 0, `generations on ${standby.name}: ${gens.join(', ')}`)
    for (const g of gens) await fs.rename(path.join(dir, g, 'images', 'inventory.img'), path.join(dir, g, 'images', 'inventory.img.aside'))
    await waitFor(async () => (await events(standby)).some((e) => e.type === 'failover-failed' && e.container === 'retry'), 60_000, () => `a failed restore on ${standby.name}\n${c.logTail(standby, 20)}`)
    assert.deepEqual(await runningOn('retry'), [], 'nothing runs meanwhile')
    // The fault passes; the rootfs of each generation is back in place for the next try.
    for (const g of gens) {
      await fs.access(path.join(dir, g, 'rootfs'))
      await fs.rename(path.join(dir, g, 'images', 'inventory.img.aside'), path.join(dir, g, 'images', 'inventory.img'))
    }
    await waitFor(async () => (await runningOn('retry')).length > 0, 60_000, () => `retry running again\n${c.logTail(standby, 20)}`)
    assert.equal(await exactlyOneFor('retry', 3_000), standby.name)
    await waitFor(() => logValues(standby, 'retry').length > 0, 15_000, 'output on the standby')
    assert.ok(logValues(standby, 'retry')[0]! > 1, 'it counts on from its generation, not from 1')
    assert.equal((await c.msc(standby, 'rm', '--force', 'retry')).exitCode, 0)
  })
})

describe('partitions', () => {
  test('the owner cut off from the majority stops its container before a standby restores it; the minority side never restores', async (t) => {
    await allUp()
    assert.equal((await c.msc(n('n1'), 'run', 'part', bundle, '--replicas', '1')).exitCode, 0)
    // Owned by n2, kept by both others: n1 holds a replica it must never restore from the minority side.
    assert.equal((await c.msc(n('n2'), 'run', 'kept', bundle, '--replicas', '2')).exitCode, 0)
    await replicated(n('n1'), 'part', 1)
    await replicated(n('n2'), 'kept', 1)
    const w = watchHandover('part', n('n1'))
    const cutAt = Date.now()
    await c.tb.cut(n('n1').host)
    await waitFor(async () => (await runningOn('part', [n('n2'), n('n3')])).length > 0, 60_000, () => `part restored on the majority side\n${c.logTail(n('n2'), 10)}\n${c.logTail(n('n3'), 10)}`)
    await sleep(1_000)
    const seen = await w.stop()
    t.diagnostic(`owner's copy last seen running ${seen.lastOwner - cutAt} ms after the cut, the standby's first ${seen.firstOther - cutAt} ms after`)
    assert.ok(seen.lastOwner < seen.firstOther, `the owner's copy stopped (${seen.lastOwner}) before the standby's started (${seen.firstOther})`)
    assert.equal(seen.others.length, 1, `one standby restored it: ${seen.others.join(', ')}`)
    // The minority side (n1 alone) holds a replica of kept, whose owner it cannot see: it never restores it.
    await sleep(3 * LEASE_S * 1000)
    assert.deepEqual(await runningOn('kept'), ['n2'], 'kept runs on n2 only')
    await c.tb.heal(n('n1').host)
    await waitFor(async () => (await inspect(n('n1'), 'part').catch(() => null))?.state === 'fenced', 30_000, () => `n1's part fenced after the heal\n${c.logTail(n('n1'), 20)}`)
    await exactlyOneFor('part', 3_000)
    await exactlyOneFor('kept', 1_000)
    assert.deepEqual(await runningOn('kept'), ['n2'])
  })

  test('a flapping link (cut for a quarter lease, again and again): no failover, no fencing', async () => {
    await allUp()
    assert.equal((await c.msc(n('n1'), 'run', 'flap', bundle, '--replicas', '1')).exitCode, 0)
    const before = await replicated(n('n1'), 'flap', 1)
    for (let i = 0; i < 5; i++) {
      await c.tb.cut(n('n1').host)
      await sleep(LEASE_S * 1000 / 4)
      await c.tb.heal(n('n1').host)
      await sleep(3_000)
    }
    // `paused` only for the instant of a replication freeze: then it runs again.
    let after = await inspect(n('n1'), 'flap')
    await waitFor(async () => (after = await inspect(n('n1'), 'flap')).state !== 'paused', 10_000, 'flap resumed after its replication freeze')
    // What the holder saw of its renewals and connections, should it have lost the lease.
    const leaseLog = (): string => c.logTail(n('n1'), 3000).split('\n').filter((l) => /"component":"(lease|connector)"|lease|stalled/.test(l)).slice(-40).join('\n')
    assert.equal(after.state, 'running', `still running on n1: ${JSON.stringify(after.leaseLost)}\n${leaseLog()}`)
    assert.equal(after.pid, before.pid, `the same process: never killed nor restored\n${leaseLog()}`)
    assert.equal(after.epoch, 1)
    assert.deepEqual(await runningOn('flap'), ['n1'])
  })

  test('a grantor restarted mid-lease: the lease holds, and a failover waits a whole lease after its restart', async (t) => {
    await allUp()
    assert.equal((await c.msc(n('n1'), 'run', 'gr', bundle, '--replicas', '1')).exitCode, 0)
    const info = await replicated(n('n1'), 'gr', 1)
    const standby = n(info.replication!.standbys[0]!.name)
    const grantor = c.nodes.find((x) => x !== standby && x !== n('n1'))!
    await c.stop(grantor)
    await c.start(grantor)
    // The wait starts when its grantor loads its records, before the node answers on its
    // API (its log says when): measured from the API's answer, a failover may come less
    // than a lease later and still be right.
    const started = c.logTail(grantor, 5000).split('\n').filter((l) => l.includes('"grantor started: no other holder for a lease"')).at(-1)
    assert.ok(started != null, `the restarted grantor logged its start\n${c.logTail(grantor, 20)}`)
    const restartedAt = (JSON.parse(started) as { time: number }).time
    assert.deepEqual(await runningOn('gr'), ['n1'], 'the owner keeps its lease through a grantor restart')
    await c.tb.kill(n('n1').host)
    await waitFor(async () => (await runningOn('gr', [standby])).length > 0, 60_000, () => `gr restored on ${standby.name}\n${c.logTail(standby, 15)}`)
    const restoredAt = Date.now()
    t.diagnostic(`restored ${restoredAt - restartedAt} ms after the grantor's restart`)
    // Two grants are needed (n1 is dead): the restarted grantor's, which waits a lease.
    // Both times are this machine's clock; 20 ms for the log call after the wait's start.
    assert.ok(restoredAt - restartedAt >= LEASE_S * 1000 - 20, `not before the restarted grantor waited a whole lease: ${restoredAt - restartedAt} ms`)
    await exactlyOneFor('gr', 2_000)
  })

  test("a migration moves the lease and the replication along: when the new node dies, it fails over from the new node's generations", async () => {
    await allUp()
    assert.equal((await c.msc(n('n1'), 'run', 'mig', bundle, '--replicas', '1')).exitCode, 0)
    await replicated(n('n1'), 'mig', 1)
    const m = await c.msc(n('n1'), 'peer', 'migrate', 'mig', '--to', 'n2')
    assert.equal(m.exitCode, 0, m.stderr)
    const moved = await replicated(n('n2'), 'mig', 1)
    assert.equal(moved.epoch, 2)
    assert.equal(moved.replication!.leaseHeld, true, 'n2 holds the lease it was handed')
    const standby = n(moved.replication!.standbys[0]!.name)
    await c.tb.kill(n('n2').host)
    await waitFor(async () => (await runningOn('mig', [standby])).length > 0, 60_000, () => `mig restored on ${standby.name}\n${c.logTail(standby, 15)}`)
    await exactlyOneFor('mig', 2_000)
    assert.equal((await inspect(standby, 'mig')).epoch, 3)
  })

  test('a generation cut off mid-transfer is never restored: the standby restores the one before', async () => {
    await allUp({ n1: { MSC_TEST_PAUSE_AT: 'replicate-partial', MSC_TEST_PAUSE_MS: '120000' } })
    assert.equal((await c.msc(n('n1'), 'run', 'half', bundle, '--replicas', '1')).exitCode, 0)
    const info = await replicated(n('n1'), 'half', 1)
    const standby = n(info.replication!.standbys[0]!.name)
    // Generation 2 stops half sent (pagemaps there, pages not): the standby stages it.
    const staged = path.join(standby.dataDir, 'replicas', 'half', '.incoming-2')
    await waitFor(async () => (await fs.stat(staged).catch(() => null)) != null, 60_000, `${staged} staged`)
    await c.tb.kill(n('n1').host)
    await waitFor(async () => (await runningOn('half', [standby])).length > 0, 60_000, () => `half restored on ${standby.name}\n${c.logTail(standby, 15)}`)
    // The event follows the restore (the record is written first): wait for it.
    let fo: Awaited<ReturnType<typeof events>> = []
    await waitFor(async () => {
      fo = (await events(standby)).filter((e) => e.type === 'failover' && e.container === 'half')
      return fo.length > 0
    }, 15_000, () => `a failover event for half on ${standby.name}`)
    assert.equal(fo.length, 1, JSON.stringify(fo))
    assert.equal(fo[0]!.generation, 1, 'restored from generation 1, the last complete one')
    await exactlyOneFor('half', 2_000)
    await allUp()
  })
})
