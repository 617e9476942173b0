/**
 * A cluster only its members can enter, with real nodes in testbed hosts:
 *  - n1 makes a new cluster; n2 joins with a one-time token from n1 and then restarts
 *    without it; both keep the same signed member list (msc cluster ls);
 *  - n3, started without a token, is a cluster of its own: it is never listed by n1 or
 *    n2, `msc join` between them fails, even with mDNS finding each other;
 *  - a token is used once; an expired one and a taken name are refused at start, with
 *    a clear message;
 *  - a raw libp2p peer that is not a member: its dial is refused; let in while a token
 *    is out, every msc protocol resets its streams (a member's probes get answers:
 *    the control), its heartbeats are dropped as not-member, and it is cut off;
 *  - a node that joined by token migrates a container like any other;
 *  - `msc peer rm`: the removed member disappears from every view, its connections are
 *    refused from then on, and it cannot start again with its old identity.
 * Needs root, runc, CRIU (npm run setup), iproute2, nsenter.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { execa } from 'execa'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { MSC } from '../helpers/node-harness.ts'
import { startCluster, sleep, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { joinWithToken, probeProtocol, rawPeer, stopAllRaw, type RawPeer } from '../helpers/raw-peer.ts'
import { MIGRATE_PROTOCOL } from '../../src/migration/messages.ts'
import { IMAGE_PROTOCOL } from '../../src/protocols/image/index.ts'
import { PAGES_PROTOCOL } from '../../src/protocols/pages/tunnel.ts'
import { MEMBERSHIP_TOPIC } from '../../src/overlay/membership/membership-service.ts'
import type { ClusterInfo, NodeStatus } from '../../src/api/types.ts'
import { HEARTBEAT_VERSION } from '../../src/overlay/membership/heartbeat.ts'
import { signHandover } from '../../src/cluster/handover.ts'

const ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3']

let c: Cluster
const n = (name: string): ClusterNode => c.node(name)

async function token (node: ClusterNode, ...extra: string[]): Promise<string> {
  const r = await c.msc(node, 'cluster', 'token', ...extra)
  assert.equal(r.exitCode, 0, r.stderr)
  const line = r.stdout.trim()
  assert.match(line, /^msc1\.[A-Za-z0-9_-]+$/, 'one line: the token')
  return line
}

/** Runs `msc node start` in a host until it exits (for starts that must be refused). */
async function startRefused (node: ClusterNode, dataDir: string, ...args: string[]): Promise<{ exitCode: number; stderr: string }> {
  const r = await c.tb.exec(node.host, MSC, ['node', 'start', '--data-dir', dataDir, '--log-format', 'json', ...ARGS, ...args], { timeout: 60_000, env: c.env })
  assert.equal(r.timedOut, false, `the node must exit, not run: ${r.stderr.slice(-500)}`)
  return { exitCode: r.exitCode, stderr: r.stderr }
}

/** A probe offer: a member gets an answer (a refusal naming FORGED), a non-member nothing. */
const PROBES: Array<[string, unknown]> = [
  // A well-formed offer that speaks for another peer: a member is answered FORGED.
  [MIGRATE_PROTOCOL, {
    type: 'offer',
    v: 1,
    migrationId: 'probe-probe',
    container: 'probe',
    strategy: 'stop-copy',
    config: {},
    epoch: 1,
    bundle: { digest: '0'.repeat(64), files: 0, bytes: 0 },
    estimatedBytes: 0,
    features: { preCopy: false, postCopy: false },
    source: { peerId: '12D3KooWNotTheSenderNotTheSenderNotTheSenderNotThe', name: 'x' },
    target: 'x',
    transfers: { bundle: 'probe-probe-1', delta: 'probe-probe-2', images: 'probe-probe-3', log: 'probe-probe-4', pages: 'probe-probe-5' }
  }],
  [IMAGE_PROTOCOL, { v: 1, transferId: 'probe-probe-probe' }],
  [PAGES_PROTOCOL, { v: 1, transferId: 'probe-probe-probe' }]
]

before(async () => {
  c = await startCluster({ hosts: 3, args: ARGS, formation: 'none', start: false })
  await c.start(n('n1'))
})

after(async () => {
  await stopAllRaw()
  await c?.destroy()
})

describe('a cluster made by tokens', { concurrency: 1 }, () => {
  test('a node with no key and no token makes a cluster of its own and says how to join it', async () => {
    const s = await c.status(n('n1'))
    assert.equal(s.cluster.mode, 'token')
    assert.equal(s.cluster.members, 1)
    assert.match(s.cluster.joinHint, /msc cluster token/)
    assert.match(c.logTail(n('n1'), 200), /created a new single-node cluster/)
  })

  test('n2 joins with a token from n1; both see each other alive and hold the same member list', async () => {
    const t = await token(n('n1'), '--ttl', '10m')
    await c.start(n('n2'), [...ARGS, '--join', t])
    await c.waitAllAlive(15_000, [n('n1'), n('n2')])
    const [l1, l2] = await Promise.all([c.json<ClusterInfo>(n('n1'), 'cluster', 'ls'), c.json<ClusterInfo>(n('n2'), 'cluster', 'ls')])
    const strip = (l: ClusterInfo): unknown => l.members.map((m) => [m.peerId, m.name, m.admittedBy, m.admittedAt])
    assert.deepEqual(strip(l1), strip(l2), 'the same list on both')
    assert.equal(l1.id, l2.id)
    assert.deepEqual(l1.members.map((m) => m.name), ['n1', 'n2'])
    assert.equal(l1.members.find((m) => m.name === 'n2')?.admittedBy, n('n1').peerId, 'admitted by n1')
  })

  test('the same token again is refused: it was used up', async () => {
    // n2's first token; n3's data dir stays fresh for the later tests.
    const t = await token(n('n1'))
    const first = await startRefused(n('n3'), path.join(c.root, 'dup-name'), '--name', 'n2', '--join', t)
    assert.notEqual(first.exitCode, 0)
    assert.match(first.stderr, /name n2 is taken/, 'a taken name is refused, clearly')
    // The refused name did not use the token up: a good name gets in with it.
    const ok = await startRefusedOrJoin(t)
    assert.equal(ok, 'joined')
    const again = await startRefused(n('n3'), path.join(c.root, 'reuse'), '--name', 'reuse2', '--join', t)
    assert.notEqual(again.exitCode, 0)
    assert.match(again.stderr, /no valid token out|used or expired/)
  })

  test('an expired token is refused', async () => {
    const t = await token(n('n1'), '--ttl', '1s')
    await sleep(1500)
    const r = await startRefused(n('n3'), path.join(c.root, 'expired'), '--name', 'late', '--join', t)
    assert.notEqual(r.exitCode, 0)
    assert.match(r.stderr, /used or expired|BAD_TOKEN|expired/)
  })

  test('n3 without a token is a cluster of its own: never listed, its joins refused', async () => {
    await c.start(n('n3'))
    const [s3] = await Promise.all([c.status(n('n3'))])
    const j = await c.msc(n('n3'), 'join', n('n1').addr)
    assert.notEqual(j.exitCode, 0, 'msc join to a node of another cluster fails')
    await sleep(3000) // mDNS finds them every second: time to (not) connect
    for (const x of [n('n1'), n('n2')]) {
      const list = await c.peersApi(x)
      assert.ok(!list.some((p) => p.peerId === s3.peerId), `${x.name} does not list n3`)
      const info = await c.json<ClusterInfo>(x, 'cluster', 'ls')
      assert.ok(!info.members.some((m) => m.peerId === s3.peerId))
    }
    assert.deepEqual(await c.peersApi(n('n3')), [], 'n3 sees nobody')
    const s1 = await c.status(n('n1'))
    assert.ok(s1.cluster.refused.connections > 0, `n1 counted refused connections: ${JSON.stringify(s1.cluster.refused)}`)
  })
})

/** Starts a throwaway node with the token in h3's namespace; 'joined' once it answers. */
async function startRefusedOrJoin (t: string): Promise<'joined' | 'refused'> {
  const dir = path.join(c.root, 'good-name')
  const proc = await c.tb.spawn(n('n3').host, MSC, ['node', 'start', '--data-dir', dir, '--name', 'good-name', '--listen', '/ip4/0.0.0.0/tcp/4711', '--no-mdns', '--join', t], { env: c.env, stdio: 'ignore' })
  try {
    await waitFor(async () => {
      if (proc.exitCode != null) throw new Error(`exited ${proc.exitCode}`)
      return (await execa(MSC, ['status', '--data-dir', dir], { reject: false })).exitCode === 0
    }, 30_000, 'the good-name node to start')
    return 'joined'
  } catch {
    return 'refused'
  } finally {
    proc.kill('SIGTERM')
    await new Promise((resolve) => {
      if (proc.exitCode != null) resolve(null)
      else proc.once('exit', resolve)
    })
  }
}

describe('non-members on the wire', { concurrency: 1 }, () => {
  let stranger: RawPeer

  test("a raw peer's dial is refused while no token is out", async () => {
    stranger = await rawPeer()
    const before = (await c.status(n('n1'))).cluster.refused.connections
    // The dialler may see its side of the upgrade finish before n1's gater, after the
    // noise handshake, aborts the connection: what counts is that none survives.
    await stranger.host.dial(multiaddr(n('n1').addr), { signal: AbortSignal.timeout(5000) }).catch(() => {})
    await waitFor(() => stranger.host.getConnections(peerIdFromString(n('n1').peerId)).length === 0, 3000, 'the connection to be refused')
    assert.notEqual(await probeProtocol(stranger, n('n1').peerId, MIGRATE_PROTOCOL, { type: 'offer' }), 'answered', 'nothing answers it')
    assert.ok((await c.status(n('n1'))).cluster.refused.connections > before)
  })

  test('let in while a token is out, its heartbeats are dropped, every msc protocol refuses it; then it is cut off', async () => {
    await token(n('n1'), '--ttl', '2m')
    // Subscribed before the connection comes up: subscriptions are exchanged with it.
    stranger.host.services.pubsub.subscribe(MEMBERSHIP_TOPIC)
    await stranger.host.dial(multiaddr(n('n1').addr), { signal: AbortSignal.timeout(5000) })
    const connectedAt = Date.now()
    const dropped = async (): Promise<number> => (await c.statusApi(n('n1'))).membership.dropped['not-member'] ?? 0
    const before = await dropped()
    // A fresh message every poll: one published before the topic mesh is up goes nowhere.
    await waitFor(async () => {
      await stranger.host.services.pubsub.publish(MEMBERSHIP_TOPIC, new TextEncoder().encode(`{"v":2,"n":${Date.now()}}`)).catch(() => {})
      return await dropped() > before
    }, 12_000, 'a heartbeat of the non-member to be dropped as not-member')
    for (const [protocol, payload] of PROBES) {
      assert.equal(await probeProtocol(stranger, n('n1').peerId, protocol, payload), 'refused', `${protocol} from a non-member`)
    }
    const s0 = await c.statusApi(n('n1'))
    assert.ok(s0.cluster.refused.streams >= PROBES.length, JSON.stringify(s0.cluster.refused))
    assert.ok(!(await c.peersApi(n('n1'))).some((p) => p.peerId === stranger.id), 'never listed')
    await waitFor(() => stranger.host.getConnections(peerIdFromString(n('n1').peerId)).length === 0, 25_000, 'the non-member to be cut off')
    const after = Date.now() - connectedAt
    assert.ok(after >= 10_000, `cut off after the grace period, not before (${after} ms)`)
  })

  test('control: the same probes from a peer admitted by token get answers', async () => {
    const member = await rawPeer()
    assert.equal(await joinWithToken(member, await token(n('n1')), 'raw-member'), 'admitted')
    for (const [protocol, payload] of PROBES) {
      assert.equal(await probeProtocol(member, n('n1').peerId, protocol, payload), 'answered', `${protocol} from a member`)
    }
    assert.ok((await c.json<ClusterInfo>(n('n1'), 'cluster', 'ls')).members.some((m) => m.peerId === member.id && m.name === 'raw-member'))
    assert.equal((await c.msc(n('n1'), 'peer', 'rm', 'raw-member')).exitCode, 0)
  })
})

describe('a member by token migrates; a removed member stays out', { concurrency: 1 }, () => {
  test("a member that claims n1's running container at epoch + 1 without n1's handover changes nothing", async () => {
    const bundle = path.join(c.root, 'counter')
    assert.equal((await execa(MSC, ['bundle', 'counter', bundle], { reject: false })).exitCode, 0)
    assert.equal((await c.msc(n('n1'), 'run', 'ctr', bundle)).exitCode, 0)
    const thief = await rawPeer()
    assert.equal(await joinWithToken(thief, await token(n('n1')), 'thief'), 'admitted')
    await thief.host.dial(multiaddr(n('n1').addr), { signal: AbortSignal.timeout(5000) }).catch(() => {})
    thief.host.services.pubsub.subscribe(MEMBERSHIP_TOPIC)
    await waitFor(() => thief.host.services.pubsub.getSubscribers(MEMBERSHIP_TOPIC).some((p) => p.toString() === n('n1').peerId), 10_000, "n1 in the thief's topic mesh")
    const before = (await c.statusApi(n('n1'))).membership.dropped['unproven-handover'] ?? 0
    let seq = 0
    const claim = async (extra: Record<string, unknown>): Promise<void> => {
      const hb = {
        v: HEARTBEAT_VERSION,
        type: 'heartbeat',
        peerId: thief.id,
        incarnation: 1,
        seq: ++seq,
        sentAt: Date.now(),
        name: 'thief',
        version: '0.1.0',
        role: 'node',
        addrs: [],
        resources: { memFreeBytes: 1, memTotalBytes: 1, diskFreeBytes: 1 },
        containers: [{ name: 'ctr', epoch: 2, state: 'running', ...extra }]
      }
      await thief.host.services.pubsub.publish(MEMBERSHIP_TOPIC, new TextEncoder().encode(JSON.stringify(hb)))
    }
    // A handover it signed itself: it is not the owner, so it proves nothing.
    const selfSigned = await signHandover(thief.key, { container: 'ctr', epoch: 2, from: thief.id, to: thief.id, at: Date.now() })
    // Repeated until counted: a message published while the mesh forms can be lost.
    await waitFor(async () => {
      await claim({})
      await claim({ handover: selfSigned })
      return ((await c.statusApi(n('n1'))).membership.dropped['unproven-handover'] ?? 0) >= before + 2
    }, 15_000, 'both claims refused as unproven-handover')
    await sleep(1000)
    assert.deepEqual((await c.runcList(n('n1'))).filter((x) => x.id === 'ctr').map((x) => x.status), ['running'], 'still running on n1')
    const ps = await c.json<Array<{ name: string; state: string }>>(n('n1'), 'ps')
    assert.equal(ps.find((x) => x.name === 'ctr')?.state, 'running')
    const thiefSeen = (await c.peersApi(n('n1'))).find((p) => p.peerId === thief.id)
    assert.ok(!(thiefSeen?.containers ?? []).some((x) => x.name === 'ctr'), "the thief owns nothing in n1's view")
    assert.equal((await c.msc(n('n1'), 'peer', 'rm', 'thief')).exitCode, 0)
  })

  test('n2 (joined by token) restarts without the token and takes a migration from n1', async () => {
    await c.stop(n('n2'))
    await c.start(n('n2'), ARGS) // no --join: it keeps its membership
    await c.waitAllAlive(15_000, [n('n1'), n('n2')])
    await sleep(500)
    const r = await c.mscTimed(n('n1'), 180_000, 'migrate', 'ctr', '--to', 'n2', '--strategy', 'stop-copy', '--json')
    assert.equal(r.exitCode, 0, r.stderr + r.stdout)
    const onN2 = await c.runcList(n('n2'))
    assert.deepEqual(onN2.filter((x) => x.id === 'ctr').map((x) => x.status), ['running'])
    assert.deepEqual((await c.runcList(n('n1'))).filter((x) => x.id === 'ctr'), [])
    assert.equal((await c.msc(n('n2'), 'rm', '--force', 'ctr')).exitCode, 0)
  })

  test('msc peer rm n2: gone from every view, refused from then on, cannot start with its old identity', async () => {
    const r = await c.msc(n('n1'), 'peer', 'rm', 'n2')
    assert.equal(r.exitCode, 0, r.stderr)
    assert.match(r.stdout, /removed n2/)
    const info = await c.json<ClusterInfo>(n('n1'), 'cluster', 'ls')
    assert.deepEqual(info.members.map((m) => m.name).filter((x) => x !== 'good-name'), ['n1'], 'n2 is no member')
    await waitFor(async () => !(await c.peersApi(n('n1'))).some((p) => p.peerId === n('n2').peerId), 5000, "n2 to leave n1's peer list")
    const refusedBefore = (await c.status(n('n1'))).cluster.refused.connections
    const j = await c.msc(n('n2'), 'join', n('n1').addr)
    assert.notEqual(j.exitCode, 0, 'the removed member cannot connect')
    await sleep(2000)
    assert.ok(!(await c.peersApi(n('n1'))).some((p) => p.peerId === n('n2').peerId), 'still not listed')
    assert.ok((await c.status(n('n1'))).cluster.refused.connections > refusedBefore)
    // It learnt of its removal; a restart with the same data dir is refused.
    await c.stop(n('n2'))
    const again = await startRefused(n('n2'), n('n2').dataDir, '--name', 'n2')
    assert.notEqual(again.exitCode, 0)
    assert.match(again.stderr, /removed from cluster/)
    const s: NodeStatus = await c.status(n('n1'))
    assert.equal(s.cluster.members, 2, 'n1 and good-name')
  })
})
