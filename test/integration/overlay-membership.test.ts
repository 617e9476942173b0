/**
 * Cluster membership as a user sees it (`msc peer ls --json`, `msc status --json`,
 * `msc join`) with real msc nodes, one per network-namespace host of a Testbed:
 * discovery by mDNS, by --bootstrap and by `msc join`; a crashed host, a cut link and
 * a graceful leave; and the documented JSON schema of `peer ls` and `status`.
 * Needs root, iproute2, nsenter, iptables/ebtables and runc (test/testbed/README.md).
 *
 * Timings are read from the nodes' own `stateSince` (when the observer changed the
 * peer's state), not from when the test happened to poll: a CLI run costs up to a
 * second of CPU on a small machine, so polling loops read the same JSON from the API
 * socket and the CLI confirms the result.
 */
import { after, before, describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { execa } from 'execa'
import { Testbed } from '../testbed/testbed.ts'
import { MSC } from '../helpers/node-harness.ts'
import { NODE_PORT, sleep, startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import type { ContainerState, NodeStatus, PeerInfo } from '../../src/api/types.ts'

const PING_TIMEOUT_S = 3
const PING_TIMEOUT_MS = PING_TIMEOUT_S * 1000
/** Heartbeats every 0.5 s, dead after 3 s of silence (suspect after 1.5 s or at once on disconnect). */
const FAST_PINGS = ['--ping-interval', '0.5', '--ping-timeout', String(PING_TIMEOUT_S)]
const MDNS = ['--mdns-interval', '1', ...FAST_PINGS]
const NO_MDNS = ['--no-mdns', ...FAST_PINGS]

/** Every field of PeerInfo: `satisfies` makes tsc fail when the type gains or loses one. */
const PEER_INFO_FIELDS = {
  peerId: true,
  name: true,
  addrs: true,
  state: true,
  lastHeard: true,
  stateSince: true,
  connected: true,
  version: true,
  role: true,
  rttMs: true,
  containers: true,
  resources: true
} as const satisfies Record<keyof PeerInfo, true>
const PEER_STATES = ['alive', 'suspect', 'dead', 'left'] as const satisfies ReadonlyArray<PeerInfo['state']>
const CONTAINER_STATES = ['running', 'paused', 'created', 'stopped', 'checkpointed'] as const satisfies readonly ContainerState[]
const CONTAINER_FIELDS = ['epoch', 'name', 'state'] as const satisfies ReadonlyArray<keyof PeerInfo['containers'][number]>
const RESOURCE_FIELDS = ['diskFreeBytes', 'memFreeBytes', 'memTotalBytes'] as const satisfies ReadonlyArray<keyof PeerInfo['resources']>
const PEER_ID = /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/ // Ed25519 keys (overlay/identity.ts)
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

/** ms from `ref` to an ISO time a node reported. */
function since (iso: string, ref: number): number {
  return Date.parse(iso) - ref
}

function assertIsoDate (v: unknown, what: string): void {
  assert.equal(typeof v, 'string', `${what}: a string`)
  assert.match(v as string, ISO, `${what}: ISO 8601 in UTC with milliseconds`)
  assert.equal(new Date(v as string).toISOString(), v, `${what}: a real date`)
  assert.ok(Date.parse(v as string) <= Date.now() + 1000, `${what}: not in the future (${v as string})`)
}

/** One element of `msc peer ls --json`, as documented by PeerInfo (src/api/types.ts). */
function assertPeerInfo (p: PeerInfo, where: string): void {
  const what = `${where}: ${JSON.stringify(p)}`
  assert.deepEqual(Object.keys(p).sort(), Object.keys(PEER_INFO_FIELDS).sort(), `${what}: exactly PeerInfo's fields`)
  assert.match(p.peerId, PEER_ID, `${what}: peerId`)
  assert.equal(typeof p.name, 'string', `${what}: name`)
  assert.ok(p.name.length > 0, `${what}: name not empty`)
  assert.ok(Array.isArray(p.addrs) && p.addrs.length > 0, `${what}: addrs is a non-empty array`)
  for (const a of p.addrs) {
    assert.equal(typeof a, 'string', `${what}: addr`)
    assert.ok(a.startsWith('/') && a.endsWith(`/p2p/${p.peerId}`), `${what}: addr ${a} ends in /p2p/<peerId>`)
  }
  assert.ok((PEER_STATES as readonly string[]).includes(p.state), `${what}: state in ${PEER_STATES.join('|')}`)
  assertIsoDate(p.lastHeard, `${what}: lastHeard`)
  assertIsoDate(p.stateSince, `${what}: stateSince`)
  assert.equal(typeof p.connected, 'boolean', `${what}: connected`)
  assert.equal(typeof p.version, 'string', `${what}: version`)
  assert.ok(p.version.length > 0, `${what}: version not empty`)
  assert.equal(typeof p.role, 'string', `${what}: role`)
  assert.ok(p.rttMs === null || (typeof p.rttMs === 'number' && Number.isFinite(p.rttMs) && p.rttMs >= 0), `${what}: rttMs is null or a number >= 0`)
  assert.ok(Array.isArray(p.containers), `${what}: containers is an array`)
  for (const c of p.containers) {
    assert.deepEqual(Object.keys(c).sort(), [...CONTAINER_FIELDS], `${what}: container fields`)
    assert.equal(typeof c.name, 'string', `${what}: container name`)
    assert.ok(Number.isSafeInteger(c.epoch) && c.epoch >= 1, `${what}: container epoch is an integer >= 1`)
    assert.ok((CONTAINER_STATES as readonly string[]).includes(c.state), `${what}: container state`)
  }
  assert.equal(typeof p.resources, 'object', `${what}: resources`)
  assert.deepEqual(Object.keys(p.resources).sort(), [...RESOURCE_FIELDS], `${what}: resources fields`)
  for (const k of RESOURCE_FIELDS) assert.ok(Number.isSafeInteger(p.resources[k]) && p.resources[k] >= 0, `${what}: resources.${k} is an integer >= 0`)
  assert.ok(p.resources.memFreeBytes <= p.resources.memTotalBytes, `${what}: memFree <= memTotal`)
}

/** `observer`'s CLI view: every other of `expected` exactly once, in `state`. */
async function assertSees (c: Cluster, observer: ClusterNode, expected: ClusterNode[], state: PeerInfo['state'] = 'alive'): Promise<PeerInfo[]> {
  const list = await c.peers(observer)
  for (const o of expected) {
    if (o === observer) continue
    const entries = list.filter((p) => p.peerId === o.peerId)
    assert.equal(entries.length, 1, `${observer.name} lists ${o.name} once: ${JSON.stringify(list)}`)
    assert.equal(entries[0]!.state, state, `${observer.name} sees ${o.name} ${state}: ${JSON.stringify(entries[0])}`)
    assert.equal(entries[0]!.name, o.name, `${observer.name}: ${o.name}'s name`)
  }
  assert.ok(!list.some((p) => p.peerId === observer.peerId), `${observer.name} does not list itself`)
  return list
}

function report (t: TestContext, what: string, ms: Record<string, number>): void {
  t.diagnostic(`${what}: ${Object.entries(ms).map(([k, v]) => `${k}=${v} ms`).join(', ')}`)
}

before(async () => {
  await Testbed.destroyStale()
})

describe('three nodes on one LAN, found by mDNS', () => {
  let c: Cluster
  const n = (name: string): ClusterNode => c.node(name)

  before(async () => {
    c = await startCluster({ hosts: 3, args: MDNS })
  })
  after(async () => {
    await c?.destroy()
  })

  test('each lists the other two as alive within 3 s of the last node start', { timeout: 20_000 }, async (t) => {
    const statuses = await Promise.all(c.nodes.map(async (x) => await c.statusApi(x)))
    // A node's startedAt is when it answered on its API (libp2p already up); the last
    // one of the three is when the cluster could first be complete.
    const lastStart = Math.max(...statuses.map((s) => Date.parse(s.startedAt)))
    const views = await c.waitAllAlive(10_000)
    const seen = Date.now() - lastStart
    let converged = -Infinity
    for (const [observer, list] of views) {
      for (const p of list) converged = Math.max(converged, since(p.stateSince, lastStart))
      assert.equal(list.length, 2, `${observer} lists exactly the two others: ${JSON.stringify(list)}`)
    }
    report(t, 'mDNS discovery', { lastAliveAfterLastStart: converged, seenByPollAfterLastStart: seen })
    assert.ok(converged < 3000, `all alive ${converged} ms after the last start (limit 3000)`)
    await Promise.all(c.nodes.map(async (x) => await assertSees(c, x, c.nodes)))
  })

  test('peer ls --json and status --json match the documented schema', { timeout: 30_000 }, async () => {
    await c.waitAllAlive(10_000)
    // A container on n1, so that its claim shows in the others' `containers`.
    const bundle = path.join(c.root, 'bundle-counter')
    const b = await execa(MSC, ['bundle', 'counter', bundle, '--interval-ms', '500'], { reject: false })
    assert.equal(b.exitCode, 0, String(b.stderr))
    const r = await c.msc(n('n1'), 'run', 'c1', bundle)
    assert.equal(r.exitCode, 0, r.stderr)
    for (const o of [n('n2'), n('n3')]) {
      await c.waitState(o, n('n1'), 'alive', 10_000)
      await waitForClaim(c, o, n('n1'), 'c1')
    }

    const asked = Date.now()
    const lists = await Promise.all(c.nodes.map(async (x) => await c.peers(x)))
    for (const [i, observer] of c.nodes.entries()) {
      const list = lists[i]!
      assert.equal(list.length, 2, `${observer.name}: two peers`)
      for (const p of list) {
        assertPeerInfo(p, `${observer.name}'s entry for ${p.name}`)
        const subject = c.nodes.find((x) => x.peerId === p.peerId)
        assert.ok(subject != null && subject !== observer, `${observer.name} lists a cluster member: ${p.peerId}`)
        assert.equal(p.name, subject.name)
        assert.equal(p.state, 'alive')
        assert.equal(p.connected, true, `${observer.name} is connected to ${subject.name} (full mesh)`)
        assert.equal(p.role, 'node')
        // Peers are told the testbed address, not loopback (useless on another host).
        assert.deepEqual(p.addrs, [`/ip4/${subject.host.ip}/tcp/${NODE_PORT}/p2p/${subject.peerId}`], `${observer.name}: ${subject.name}'s addrs`)
        // Heartbeats come every 0.5 s: an alive peer was heard shortly before we asked.
        assert.ok(Date.parse(p.lastHeard) > asked - PING_TIMEOUT_MS, `${observer.name} heard ${subject.name} recently: ${p.lastHeard}, asked at ${new Date(asked).toISOString()}`)
        assert.ok(Date.parse(p.stateSince) <= Date.parse(p.lastHeard) + 1, `${observer.name}: stateSince <= lastHeard`)
        if (subject.name === 'n1') assert.deepEqual(p.containers, [{ name: 'c1', epoch: 1, state: 'running' }], `${observer.name}: n1's containers`)
        else assert.deepEqual(p.containers, [], `${observer.name}: ${subject.name} has no containers`)
      }
    }

    const statuses = await Promise.all(c.nodes.map(async (x) => await c.status(x)))
    for (const [i, x] of c.nodes.entries()) {
      const s = statuses[i]!
      for (const k of ['peerId', 'name', 'addrs', 'peersAlive'] as const satisfies ReadonlyArray<keyof NodeStatus>) assert.ok(k in s, `status has ${k}`)
      assert.equal(s.peerId, x.peerId)
      assert.match(s.peerId, PEER_ID)
      assert.equal(s.name, x.name)
      assert.ok(Array.isArray(s.addrs) && s.addrs.length > 0, `${x.name}: addrs`)
      for (const a of s.addrs) assert.ok(a.endsWith(`/p2p/${s.peerId}`), `${x.name}: status addr ${a} ends in /p2p/<peerId>`)
      assert.ok(s.addrs.includes(x.addr), `${x.name}: status addrs ${JSON.stringify(s.addrs)} include ${x.addr}`)
      assert.equal(s.peersAlive, 2, `${x.name}: peersAlive`)
      assert.equal(s.peersKnown, 2, `${x.name}: peersKnown`)
      assert.ok(Number.isSafeInteger(s.membership.accepted) && s.membership.accepted > 0, `${x.name}: membership.accepted`)
      // Except what cluster formation drops by design: a new key holder's first
      // heartbeats can arrive before its admission record (synced on the same new
      // connection) and are dropped as not-member until then; and a heartbeat published
      // before the direct link to a peer was up reaches it later through gossip
      // (IHAVE/IWANT), after newer ones, and is counted as replayed.
      const { replayed: _late, 'not-member': _early, ...dropped } = s.membership.dropped
      assert.deepEqual(Object.values(dropped).filter((v) => v !== 0), [], `${x.name}: nothing dropped: ${JSON.stringify(s.membership.dropped)}`)
    }
  })

  test('a killed host is suspect, then dead, within PING_TIMEOUT + 1 s; restarted, it is alive again with the same peer id', { timeout: 40_000 }, async (t) => {
    await c.waitAllAlive(10_000)
    const victim = n('n3')
    const others = [n('n1'), n('n2')]
    const peerId = victim.peerId
    const killedAt = Date.now()
    await c.tb.kill(victim.host)
    const seen = await Promise.all(others.map(async (o) => {
      const suspect = await c.waitState(o, victim, 'suspect', PING_TIMEOUT_MS + 1000)
      const dead = await c.waitState(o, victim, 'dead', PING_TIMEOUT_MS + 3000)
      return { o, suspect, dead }
    }))
    for (const { o, suspect, dead } of seen) {
      const s = since(suspect.stateSince, killedAt)
      const d = since(dead.stateSince, killedAt)
      report(t, `${o.name} about killed n3`, { suspect: s, dead: d })
      assert.ok(s <= d, `${o.name}: suspect (${s} ms) before dead (${d} ms)`)
      assert.ok(s <= PING_TIMEOUT_MS + 1000, `${o.name}: suspect ${s} ms after the kill (limit ${PING_TIMEOUT_MS + 1000})`)
      assert.ok(d <= PING_TIMEOUT_MS + 1000, `${o.name}: dead ${d} ms after the kill (limit ${PING_TIMEOUT_MS + 1000})`)
      const entry = (await assertSees(c, o, [victim], 'dead')).find((p) => p.peerId === peerId)!
      assert.equal(entry.connected, false, `${o.name}: not connected to dead n3`)
    }
    // The survivors still see each other.
    await assertSees(c, n('n1'), others)

    const restartAt = Date.now()
    await c.start(victim) // same data dir and arguments
    const s = await c.status(victim)
    assert.equal(s.peerId, peerId, 'same peer id after the restart')
    await c.waitAllAlive(10_000)
    report(t, 'n3 restarted', { upAndAllAlive: Date.now() - restartAt, apiUp: since(s.startedAt, restartAt) })
    await Promise.all(c.nodes.map(async (x) => await assertSees(c, x, c.nodes)))
  })

  test('a cut link makes the peer dead on both sides; heal brings it back alive on all', { timeout: 60_000 }, async (t) => {
    await c.waitAllAlive(10_000)
    const cut = n('n2')
    const others = [n('n1'), n('n3')]
    const cutAt = Date.now()
    await c.tb.cut(cut.host)
    try {
      // The connected side detects within the ping timeout and a few probes. The cut
      // node is slower by design (Lifeguard): none of its probes and ping-reqs is
      // answered, not even with a nack, so its local health rises and it stretches its
      // own probe interval and timeout, up to 9x, before it suspects anyone: a node
      // that cannot reach anybody blames itself first.
      const limit = (o: ClusterNode): number => o === cut ? PING_TIMEOUT_MS + 20_000 : PING_TIMEOUT_MS + 5000
      const pairs: Array<[ClusterNode, ClusterNode]> = [...others.map((o) => [o, cut] as [ClusterNode, ClusterNode]), ...others.map((o) => [cut, o] as [ClusterNode, ClusterNode])]
      const deaths = await Promise.all(pairs.map(async ([o, s]) => [o, s, await c.waitState(o, s, 'dead', limit(o))] as const))
      const ms: Record<string, number> = {}
      for (const [o, s, p] of deaths) ms[`${o.name}->${s.name}`] = since(p.stateSince, cutAt)
      report(t, 'dead after the cut', ms)
      for (const o of others) await assertSees(c, o, [cut], 'dead')
      await assertSees(c, cut, others, 'dead')
      // n1 and n3 are on the same side: still alive to each other.
      await assertSees(c, n('n1'), others)
      await assertSees(c, n('n3'), others)
    } finally {
      await c.tb.heal(cut.host)
    }

    const healAt = Date.now()
    const views = await c.waitAllAlive(15_000)
    const back: Record<string, number> = {}
    for (const [observer, list] of views) {
      for (const p of list) if (p.peerId === cut.peerId || observer === cut.name) back[`${observer}->${p.name}`] = since(p.stateSince, healAt)
    }
    report(t, 'alive after the heal', { ...back, seenByPoll: Date.now() - healAt })
    await Promise.all(c.nodes.map(async (x) => await assertSees(c, x, c.nodes)))
  })

  test('graceful leave: after SIGTERM the others show the node as left, not dead', { timeout: 30_000 }, async (t) => {
    await c.waitAllAlive(10_000)
    const leaver = n('n3')
    const others = [n('n1'), n('n2')]
    const termAt = Date.now()
    const [code, ...left] = await Promise.all([
      c.stop(leaver),
      ...others.map(async (o) => await c.waitState(o, leaver, 'left', 5_000))
    ])
    assert.equal(code, 0, `n3 exits 0 on SIGTERM:\n${c.logTail(leaver)}`)
    const ms: Record<string, number> = {}
    for (const [i, p] of left.entries()) ms[`${others[i]!.name}->n3 left`] = since((p as PeerInfo).stateSince, termAt)
    report(t, 'graceful leave', ms)
    for (const v of Object.values(ms)) assert.ok(v < 2000, `left ${v} ms after SIGTERM (limit 2000)`)
    // It stays left past the time a silent peer would have been declared dead.
    await sleep(PING_TIMEOUT_MS + 500)
    for (const o of others) await assertSees(c, o, [leaver], 'left')
    await assertSees(c, n('n1'), others)
    await assertSees(c, n('n2'), others)
  })
})

// The two suites without mDNS assert no timing: they run side by side to save time.
describe('discovery without mDNS', { concurrency: true }, () => {
  describe('--bootstrap to one node', () => {
    let c: Cluster

    before(async () => {
      c = await startCluster({ hosts: 3, args: NO_MDNS, start: false })
    })
    after(async () => {
      await c?.destroy()
    })

    test('n2 and n3 bootstrapped to n1 all see each other, n2 and n3 directly connected', { timeout: 40_000 }, async (t) => {
      const [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode]
      await c.start(n1)
      await Promise.all([n2, n3].map(async (x) => {
        await c.start(x, [...NO_MDNS, '--bootstrap', n1.addr])
      }))
      const lastStart = Math.max(...(await Promise.all(c.nodes.map(async (x) => await c.statusApi(x)))).map((s) => Date.parse(s.startedAt)))
      const views = await c.waitAllAlive(10_000)
      let converged = -Infinity
      for (const list of views.values()) for (const p of list) converged = Math.max(converged, since(p.stateSince, lastStart))
      report(t, 'bootstrap', { lastAliveAfterLastStart: converged })
      await Promise.all(c.nodes.map(async (x) => await assertSees(c, x, c.nodes)))
      // Neither was told of the other: they learnt it from heartbeats and dialled directly.
      const n2sees3 = (await c.peers(n2)).find((p) => p.peerId === n3.peerId)!
      const n3sees2 = (await c.peers(n3)).find((p) => p.peerId === n2.peerId)!
      assert.equal(n2sees3.connected, true, `n2 is connected to n3: ${JSON.stringify(n2sees3)}`)
      assert.equal(n3sees2.connected, true, `n3 is connected to n2: ${JSON.stringify(n3sees2)}`)
      assert.deepEqual(n2sees3.addrs, [n3.addr])
      assert.deepEqual(n3sees2.addrs, [n2.addr])
    })
  })

  describe('no bootstrap either: msc join', () => {
    let c: Cluster

    before(async () => {
      c = await startCluster({ hosts: 2, args: NO_MDNS })
    })
    after(async () => {
      await c?.destroy()
    })

    test('two unjoined nodes do not see each other; `msc join ADDR` on one makes both alive', { timeout: 30_000 }, async (t) => {
      const [n1, n2] = c.nodes as [ClusterNode, ClusterNode]
      // Several heartbeat intervals: nothing to see, since nothing connects them.
      const up = Math.max(...(await Promise.all(c.nodes.map(async (x) => await c.statusApi(x)))).map((s) => Date.parse(s.startedAt)))
      await sleep(Math.max(0, up + 2000 - Date.now()))
      await Promise.all(c.nodes.map(async (x) => {
        assert.deepEqual(await c.peers(x), [], `${x.name} knows no peer before the join`)
        const s = await c.status(x)
        assert.equal(s.peersAlive, 0, `${x.name}: peersAlive before the join`)
        assert.equal(s.peersKnown, 0, `${x.name}: peersKnown before the join`)
      }))

      const joinAt = Date.now()
      const r = await c.msc(n1, 'join', n2.addr)
      assert.equal(r.exitCode, 0, `msc join: ${r.stderr}`)
      assert.ok(r.stdout.includes(n2.peerId), `msc join names the peer: ${r.stdout}`)
      const [a, b] = await Promise.all([c.waitState(n1, n2, 'alive', 10_000), c.waitState(n2, n1, 'alive', 10_000)])
      report(t, 'msc join', { n1SeesN2: since(a.stateSince, joinAt), n2SeesN1: since(b.stateSince, joinAt), joinCommand: Date.now() - joinAt })
      await assertSees(c, n1, c.nodes)
      await assertSees(c, n2, c.nodes)
    })
  })
})

/** Until `observer` lists `owner` with the container `name` among its claims. */
async function waitForClaim (c: Cluster, observer: ClusterNode, owner: ClusterNode, name: string): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const p = await c.stateOf(observer, owner)
    if (p?.containers.some((x) => x.name === name) === true) return
    if (Date.now() > deadline) throw new Error(`${observer.name} never saw ${owner.name}'s container ${name}: ${JSON.stringify(p)}`)
    await sleep(100)
  }
}
