/**
 * Overlay security against real nodes on loopback:
 *  - private clusters (pnet): only nodes holding the same pre-shared key connect and
 *    see each other; a node with another key or none never gets in;
 *  - hostile heartbeats: a raw libp2p peer connected to a node publishes malformed,
 *    oversized, wrong-version, forged, epoch-regressing and replayed membership
 *    messages; each is dropped and counted, none makes a member, the node keeps running.
 * Needs root and runc (the node starts its container runtime).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { destroyAllNodes, MSC, sleep, startNode, tempDir, waitFor, type TestNode } from '../helpers/node-harness.ts'
import { createLibp2pHost, type MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { MEMBERSHIP_TOPIC } from '../../src/overlay/membership/membership-service.ts'
import { HeartbeatSchema, type ContainerClaim, type Heartbeat } from '../../src/overlay/membership/heartbeat.ts'
import type { NodeStatus, PeerInfo } from '../../src/api/types.ts'

const FAST = ['--ping-interval', '0.3']

/** Raw libp2p hosts made by this file: stopped in after(), even when a test failed. */
const raws = new Set<MscLibp2p>()

async function rawHost (psk?: Uint8Array): Promise<MscLibp2p> {
  const h = await createLibp2pHost({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], bootstrap: [], mdns: false, mdnsIntervalMs: 1000,
    ...(psk != null ? { psk } : {}),
    // Big enough to send (and receive) the 10 MB message.
    maxPubsubMessageBytes: 32 * 1024 * 1024
  })
  raws.add(h)
  await h.start()
  return h
}

async function stopRaw (h: MscLibp2p): Promise<void> {
  raws.delete(h)
  await h.stop().catch(() => {})
}

async function peers (n: TestNode): Promise<PeerInfo[]> { return await n.json<PeerInfo[]>('peer', 'ls') }

async function status (n: TestNode): Promise<NodeStatus> {
  // json() runs `msc status --json` and throws unless it exits 0.
  return await n.json<NodeStatus>('status')
}

function loopbackAddr (s: NodeStatus): string {
  const a = s.addrs.find((x) => x.startsWith('/ip4/127.0.0.1/tcp/') && x.includes('/p2p/'))
  assert.ok(a != null, `a loopback /p2p/ address in ${JSON.stringify(s.addrs)}`)
  return a
}

after(async () => {
  for (const h of [...raws]) await stopRaw(h)
  await destroyAllNodes()
})

describe('private cluster (pnet)', () => {
  let dir = ''
  let keyA = ''
  let keyB = ''
  let n1: TestNode
  let n2: TestNode
  let s1: NodeStatus
  let s2: NodeStatus
  let n1Addr = ''

  before(async () => { dir = await tempDir('psk') })

  test('msc keygen psk writes a 0600 key and refuses to overwrite it', async () => {
    keyA = path.join(dir, 'a.psk')
    keyB = path.join(dir, 'b.psk')
    const r = await execa(MSC, ['keygen', 'psk', keyA], { reject: false })
    assert.equal(r.exitCode, 0, r.stderr)
    const st = await fs.stat(keyA)
    assert.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`)
    const text = await fs.readFile(keyA, 'utf8')
    assert.match(text, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n?$/)
    const again = await execa(MSC, ['keygen', 'psk', keyA], { reject: false })
    assert.notEqual(again.exitCode, 0, 'a second keygen on the same file must fail')
    assert.match(again.stderr, /exists|not overwriting/i)
    assert.equal(await fs.readFile(keyA, 'utf8'), text, 'the key is unchanged')
    assert.equal((await execa(MSC, ['keygen', 'psk', keyB], { reject: false })).exitCode, 0)
    assert.notEqual(await fs.readFile(keyB, 'utf8'), text, 'two keys differ')
  })

  test('n1 and n2 with key A, n2 bootstrapping to n1, see each other alive', async () => {
    n1 = await startNode({ args: ['--name', 'n1', '--psk', keyA, ...FAST] })
    s1 = await status(n1)
    n1Addr = loopbackAddr(s1)
    n2 = await startNode({ args: ['--name', 'n2', '--psk', keyA, '--bootstrap', n1Addr, ...FAST] })
    s2 = await status(n2)
    await waitFor(async () => {
      const [p1, p2] = await Promise.all([peers(n1), peers(n2)])
      return p1.some((p) => p.peerId === s2.peerId && p.state === 'alive' && p.name === 'n2') &&
        p2.some((p) => p.peerId === s1.peerId && p.state === 'alive' && p.name === 'n1')
    }, 10_000, 'n1 and n2 to see each other alive')
  })

  test('n3 with key B (bootstrapping to n1) and n4 without a key never get in', async () => {
    const started = Date.now()
    const [n3, n4] = await Promise.all([
      startNode({ args: ['--name', 'n3', '--psk', keyB, '--bootstrap', n1Addr, ...FAST] }),
      startNode({ args: ['--name', 'n4', ...FAST] })
    ])
    const [s3, s4] = await Promise.all([status(n3), status(n4)])

    // n4 (no key): `msc join` to n1 fails, with a message naming the address.
    const j = await n4.msc('join', n1Addr)
    assert.notEqual(j.exitCode, 0, `msc join without the key must fail: ${j.stdout}`)
    assert.match(j.stderr, /cannot join/)
    // n3 (key B): the same.
    const j3 = await n3.msc('join', n1Addr)
    assert.notEqual(j3.exitCode, 0, `msc join with another key must fail: ${j3.stdout}`)

    // Give n3's bootstrap and any redial time to (not) succeed.
    await sleep(Math.max(0, 3000 - (Date.now() - started)))
    const outsiders = new Set([s3.peerId, s4.peerId])
    for (const n of [n1, n2]) {
      const list = await peers(n)
      assert.deepEqual(list.filter((p) => outsiders.has(p.peerId)), [], `no outsider in ${n.dataDir}'s view`)
      assert.deepEqual(list.map((p) => p.peerId).sort(), [n === n1 ? s2.peerId : s1.peerId], 'only the other keyed node')
    }
    assert.deepEqual(await peers(n3), [], 'n3 sees nobody')
    assert.deepEqual(await peers(n4), [], 'n4 sees nobody')
    const st3 = await status(n3)
    assert.equal(st3.peersKnown, 0)
    // Not a single heartbeat from an outsider reached n1's membership, not even a dropped one.
    const st1 = await status(n1)
    assert.equal(Object.values(st1.membership.dropped).reduce((a, b) => a + b, 0), 0, JSON.stringify(st1.membership))
  })

  test('a raw libp2p node without the key (or with key B) cannot connect to n1; with key A it can', async () => {
    const { readPskFile } = await import('../../src/overlay/psk.ts')
    const none = await rawHost()
    await assert.rejects(none.dial(multiaddr(n1Addr), { signal: AbortSignal.timeout(5000) }), 'no PSK: dial fails')
    assert.equal(none.getConnections().length, 0)
    const wrong = await rawHost(await readPskFile(keyB))
    await assert.rejects(wrong.dial(multiaddr(n1Addr), { signal: AbortSignal.timeout(5000) }), 'key B: dial fails')
    // Control: the same kind of host with the right key connects, so the failures above are the key.
    const right = await rawHost(await readPskFile(keyA))
    const conn = await right.dial(multiaddr(n1Addr), { signal: AbortSignal.timeout(5000) })
    assert.equal(conn.remotePeer.toString(), s1.peerId)
    await Promise.all([stopRaw(none), stopRaw(wrong), stopRaw(right)])
  })

  test('msc node start refuses a garbage or missing --psk file with a clear message', async () => {
    const garbage = path.join(dir, 'garbage.psk')
    await fs.writeFile(garbage, 'this is not a key\n', { mode: 0o600 })
    for (const [file, pattern] of [[garbage, /is not a libp2p PSK file/], [path.join(dir, 'missing.psk'), /cannot read PSK file/]] as const) {
      const dataDir = await tempDir('psk-bad')
      const r = await execa(MSC, ['node', 'start', '--data-dir', dataDir, '--psk', file], {
        reject: false, timeout: 20_000, env: { ...process.env, MSC_MDNS: 'false', MSC_LISTEN: '/ip4/127.0.0.1/tcp/0' }
      })
      assert.equal(r.timedOut, false, 'the node must exit, not run')
      assert.notEqual(r.exitCode, 0)
      assert.match(r.stderr, pattern, r.stderr)
      assert.match(r.stderr, /msc keygen psk|PSK/)
    }
  })
})

describe('hostile heartbeats', () => {
  let n1: TestNode
  let s1: NodeStatus
  let n1Addr = ''
  let h1: MscLibp2p
  let h2: MscLibp2p
  const incarnation = Date.now()
  const seqs = new Map<string, number>()

  type Counters = { accepted: number, dropped: Record<string, number> }

  async function counters (): Promise<Counters> { return (await status(n1)).membership }

  async function connectHostile (): Promise<MscLibp2p> {
    const h = await rawHost()
    await h.dial(multiaddr(n1Addr), { signal: AbortSignal.timeout(5000) })
    h.services.pubsub.subscribe(MEMBERSHIP_TOPIC)
    await waitFor(() => h.services.pubsub.getSubscribers(MEMBERSHIP_TOPIC).some((p) => p.toString() === s1.peerId), 10_000, 'n1 to be a topic peer of the hostile host')
    return h
  }

  function heartbeat (h: MscLibp2p, over: Partial<Heartbeat> = {}): Heartbeat {
    const id = h.peerId.toString()
    const seq = (seqs.get(id) ?? 0) + 1
    seqs.set(id, seq)
    const hb: Heartbeat = {
      v: 1, type: 'heartbeat', peerId: id, incarnation, seq, sentAt: Date.now(),
      name: `hostile-${id.slice(-6)}`, version: '0.1.0', role: 'node',
      addrs: h.getMultiaddrs().map((m) => m.toString()), containers: [],
      resources: { memFreeBytes: 1024, memTotalBytes: 2048, diskFreeBytes: 4096 },
      ...over
    }
    return hb
  }

  function bytesOf (x: unknown): Uint8Array {
    return typeof x === 'string' ? new TextEncoder().encode(x) : new TextEncoder().encode(JSON.stringify(x))
  }

  async function publish (h: MscLibp2p, data: Uint8Array): Promise<void> {
    const r = await h.services.pubsub.publish(MEMBERSHIP_TOPIC, data)
    assert.ok(r.recipients.some((p) => p.toString() === s1.peerId), `sent to n1 (recipients: ${r.recipients.map(String).join(', ')})`)
  }

  /**
   * Waits until the counters moved by exactly `delta` (accepted and each drop reason)
   * and checks nothing else moved; n1 still runs and answers `msc status`.
   */
  async function expectCounts (before: Counters, delta: { accepted?: number } & Record<string, number>, what: string): Promise<Counters> {
    const want: Counters = { accepted: before.accepted + (delta.accepted ?? 0), dropped: { ...before.dropped } }
    for (const [k, v] of Object.entries(delta)) if (k !== 'accepted') want.dropped[k] = (want.dropped[k] ?? 0) + v
    let now = before
    try {
      await waitFor(async () => {
        now = await counters()
        return JSON.stringify(now) === JSON.stringify(want)
      }, 8000, what)
    } catch (err) {
      assert.deepEqual(now, want, `${what}: ${(err as Error).message}`)
    }
    // Stays that way (no late duplicate delivery).
    await sleep(200)
    assert.deepEqual(await counters(), want, `${what}: counters settled`)
    assert.equal(n1.proc.exitCode, null, 'n1 still running')
    assert.equal(n1.proc.signalCode, null, 'n1 not killed')
    const r = await n1.msc('status')
    assert.equal(r.exitCode, 0, `msc status after ${what}: ${r.stderr}`)
    return want
  }

  async function assertNotMember (...ids: string[]): Promise<void> {
    const list = await peers(n1)
    assert.deepEqual(list.filter((p) => ids.includes(p.peerId)), [], `no member from bad messages: ${JSON.stringify(list.map((p) => p.peerId))}`)
  }

  before(async () => {
    n1 = await startNode({ args: ['--name', 'target', ...FAST] })
    s1 = await status(n1)
    n1Addr = loopbackAddr(s1)
    h1 = await connectHostile()
  })

  test('(a) malformed: not JSON, not UTF-8, JSON outside the schema, duplicate containers', async () => {
    let c = await counters()
    const cases: Array<[string, Uint8Array]> = [
      ['not JSON', bytesOf('{"v":1, this is not json')],
      ['not UTF-8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
      ['missing fields', bytesOf({ v: 1, type: 'heartbeat', peerId: h1.peerId.toString() })],
      ['extra field', bytesOf({ ...heartbeat(h1), extra: true })],
      ['duplicate container', bytesOf(heartbeat(h1, { containers: [{ name: 'x', epoch: 1, state: 'running' }, { name: 'x', epoch: 2, state: 'running' }] }))]
    ]
    for (const [what, data] of cases) {
      await publish(h1, data)
      c = await expectCounts(c, { malformed: 1 }, `malformed (${what})`)
      await assertNotMember(h1.peerId.toString())
    }
  })

  test('(b) a 10 MB message reaches the validator, is dropped as oversized, and the connection survives', async () => {
    const before = await counters()
    const big = new Uint8Array(10 * 1024 * 1024).fill(0x61)
    await publish(h1, big)
    await expectCounts(before, { oversized: 1 }, 'oversized (10 MB)')
    await assertNotMember(h1.peerId.toString())
    assert.ok(h1.getConnections().some((cn) => cn.remotePeer.toString() === s1.peerId && cn.status === 'open'), 'the hostile connection is still open')
    // And the same stream still carries messages: a small malformed one is counted.
    const c2 = await counters()
    await publish(h1, bytesOf('still here?'))
    await expectCounts(c2, { malformed: 1 }, 'malformed after the 10 MB message')
  })

  test('(c) wrong version (v: 2) is dropped as version', async () => {
    const before = await counters()
    await publish(h1, bytesOf({ ...heartbeat(h1), v: 2 }))
    await expectCounts(before, { version: 1 }, 'version 2')
    await assertNotMember(h1.peerId.toString())
  })

  test('(d) a heartbeat speaking for another peer is dropped as forged-sender', async () => {
    const before = await counters()
    const victim = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const forged = heartbeat(h1, { peerId: victim, name: 'victim' })
    assert.ok(HeartbeatSchema.safeParse(forged).success, 'otherwise a valid heartbeat')
    await publish(h1, bytesOf(forged))
    await expectCounts(before, { 'forged-sender': 1 }, 'forged sender (unknown peer)')
    // Impersonating the target itself.
    const c2 = await counters()
    await publish(h1, bytesOf(heartbeat(h1, { peerId: s1.peerId, name: 'target' })))
    await expectCounts(c2, { 'forged-sender': 1 }, 'forged sender (n1 itself)')
    await assertNotMember(h1.peerId.toString(), victim)
    assert.equal((await peers(n1)).length, 0, 'n1 knows no member at all')
  })

  let claimC5: Uint8Array

  test('(e) a valid claim of c@5 is accepted; a claim of c@3 is an epoch regression', async () => {
    let c = await counters()
    const c5: ContainerClaim = { name: 'c', epoch: 5, state: 'running' }
    const hb = heartbeat(h1, { containers: [c5] })
    assert.deepEqual(HeartbeatSchema.parse(hb), hb, 'follows HeartbeatSchema exactly')
    claimC5 = bytesOf(hb)
    await publish(h1, claimC5)
    c = await expectCounts(c, { accepted: 1 }, 'valid heartbeat with c@5')
    const m = (await peers(n1)).find((p) => p.peerId === h1.peerId.toString())
    assert.ok(m != null, 'the hostile peer is a member now')
    assert.equal(m.state, 'alive')
    assert.equal(m.name, hb.name)
    assert.deepEqual(m.containers, [c5])

    // Another peer claims c at a lower epoch: dropped, counted, c stays with h1 at 5.
    h2 = await connectHostile()
    await publish(h2, bytesOf(heartbeat(h2, { containers: [{ name: 'c', epoch: 3, state: 'running' }] })))
    // The heartbeat itself is valid (h2 becomes a member); only its claim is refused.
    c = await expectCounts(c, { accepted: 1, 'epoch-regression': 1 }, 'c@3 from another peer')
    let list = await peers(n1)
    assert.deepEqual(list.find((p) => p.peerId === h2.peerId.toString())?.containers, [], 'h2 owns nothing')
    assert.deepEqual(list.find((p) => p.peerId === h1.peerId.toString())?.containers, [c5], 'h1 still owns c@5')

    // Another peer claims c at the SAME epoch: an owner conflict, c stays with h1.
    await publish(h2, bytesOf(heartbeat(h2, { containers: [{ name: 'c', epoch: 5, state: 'running' }] })))
    c = await expectCounts(c, { accepted: 1, 'owner-conflict': 1 }, 'c@5 from another peer')
    list = await peers(n1)
    assert.deepEqual(list.find((p) => p.peerId === h2.peerId.toString())?.containers, [], 'h2 still owns nothing')
    assert.deepEqual(list.find((p) => p.peerId === h1.peerId.toString())?.containers, [c5], 'h1 still owns c@5')

    // The owner itself goes back to epoch 3 with a higher seq: the regressed claim is dropped.
    await publish(h1, bytesOf(heartbeat(h1, { containers: [{ name: 'c', epoch: 3, state: 'running' }] })))
    c = await expectCounts(c, { accepted: 1, 'epoch-regression': 1 }, 'c@3 from the owner (higher seq)')
    list = await peers(n1)
    const claims = list.find((p) => p.peerId === h1.peerId.toString())?.containers
    assert.ok(!(claims ?? []).some((x) => x.epoch < 5), `no claim below epoch 5 is shown: ${JSON.stringify(claims)}`)
  })

  test('(f) a replay of an earlier heartbeat (same incarnation and seq) is dropped as replayed', async () => {
    const before = await counters()
    const members = await peers(n1)
    await publish(h1, claimC5)
    await expectCounts(before, { replayed: 1 }, 'replay of the c@5 heartbeat')
    // The replay changed nothing: same members, same claims (ignoring liveness fields).
    const strip = (l: PeerInfo[]): unknown => l.map((p) => ({ peerId: p.peerId, name: p.name, containers: p.containers }))
    assert.deepEqual(strip(await peers(n1)), strip(members))
    // An older seq is a replay too.
    const c2 = await counters()
    await publish(h2, bytesOf({ ...heartbeat(h2), seq: 1 }))
    await expectCounts(c2, { replayed: 1 }, 'h2 with an old seq')
  })
})
