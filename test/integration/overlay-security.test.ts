/**
 * Overlay security against real nodes on loopback:
 *  - private clusters (pnet): only nodes holding the same pre-shared key connect and
 *    see each other, and form one key-file cluster; a node with another key or none
 *    never gets in;
 *  - hostile heartbeats: raw libp2p peers that hold the target's key and admitted
 *    themselves to its key-file cluster publish malformed, oversized (10 MB),
 *    wrong-version, forged, epoch-regressing, replayed, name-taking (no or a forged
 *    handover) and out-of-bounds membership messages; a key holder that never presented
 *    an admission is not a member; each bad message is dropped and counted under its
 *    reason, none makes a member or moves a name, and the node keeps running and
 *    answering.
 * Needs root and runc (a node starts its container runtime).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { execa, type Result } from 'execa'
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { RPC } from '@libp2p/gossipsub/message'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { destroyAllNodes, destroyNode, MSC, sleep, startNode, tempDir, waitFor, type TestNode } from '../helpers/node-harness.ts'
import { presentKeyAdmission, rawPeer, stopAllRaw, stopRaw, type RawPeer } from '../helpers/raw-peer.ts'
import { ControlClient } from '../../src/api/client.ts'
import { readPskFile } from '../../src/overlay/psk.ts'
import { MEMBERSHIP_TOPIC } from '../../src/overlay/membership/membership-service.ts'
import { DROP_REASONS, HEARTBEAT_VERSION, HeartbeatSchema, MAX_EPOCH, MAX_EPOCH_JUMP, type ContainerClaim, type Heartbeat } from '../../src/overlay/membership/heartbeat.ts'
import { handoverSigningBytes, signHandover, type Handover } from '../../src/cluster/handover.ts'
import type { ClusterInfo, NodeStatus, PeerInfo } from '../../src/api/types.ts'

const FAST = ['--ping-interval', '0.3']
/**
 * The target: hostile peers speak only when a test makes them, so the target must not
 * suspect them between messages (a member's state would flip to suspect and back by ping).
 */
const PATIENT = ['--ping-interval', '1', '--suspect-timeout', '60', '--ping-timeout', '120']
const GOSSIPSUB_PROTOCOL = '/meshsub/1.2.0'

// ---------------------------------------------------------------- raw gossipsub frames

function varint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return Uint8Array.from(out)
}

let seqnoCounter = BigInt(Date.now()) * 1_000_000n

/**
 * One gossipsub RPC frame (length-prefixed protobuf) carrying a message on the
 * membership topic, signed by `key` exactly as gossipsub's StrictSign does. Built by
 * hand because gossipsub's own sender refuses frames over 4 MiB
 * (it-length-prefixed's default in OutboundStream.push).
 */
async function signedFrame (key: PrivateKey, data: Uint8Array): Promise<Uint8Array[]> {
  const seqno = new Uint8Array(8)
  new DataView(seqno.buffer).setBigUint64(0, ++seqnoCounter, false)
  const msg: RPC.Message = { from: peerIdFromPrivateKey(key).toMultihash().bytes, data, seqno, topic: MEMBERSHIP_TOPIC }
  const unsigned = RPC.Message.encode(msg)
  const prefix = new TextEncoder().encode('libp2p-pubsub:')
  const toSign = new Uint8Array(prefix.length + unsigned.length)
  toSign.set(prefix)
  toSign.set(unsigned, prefix.length)
  msg.signature = await key.sign(toSign)
  msg.key = publicKeyToProtobuf(key.publicKey)
  const rpc = RPC.encode({ subscriptions: [], messages: [msg] })
  return [varint(rpc.length), rpc]
}

// ---------------------------------------------------------------- helpers

function client (n: TestNode): ControlClient {
  return new ControlClient(n.socket)
}
async function peers (n: TestNode): Promise<PeerInfo[]> {
  return await client(n).peers()
}

function escapeRe (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
}

function loopbackAddr (s: NodeStatus): string {
  const a = s.addrs.find((x) => x.startsWith('/ip4/127.0.0.1/tcp/') && x.includes('/p2p/'))
  assert.ok(a != null, `a loopback /p2p/ address in ${JSON.stringify(s.addrs)}`)
  return a
}

/** Shared by both suites: made in the top-level before(), all at once. */
let keysDir = ''
let keyA = ''
let keyB = ''
let keyC = ''
let keygenA: Result
let keygenB: Result
/** Private cluster, key A. */
let n1: TestNode
let s1: NodeStatus
let n1Addr = ''
/** The target of the hostile peers: a key-file cluster of its own, key C. */
let target: TestNode
let st: NodeStatus
let targetAddr = ''
let pskC: Uint8Array

before(async () => {
  keysDir = await tempDir('psk')
  keyA = path.join(keysDir, 'a.psk')
  keyB = path.join(keysDir, 'b.psk')
  keyC = path.join(keysDir, 'c.psk')
  let keygenC: Result
  ;[keygenA, keygenB, keygenC] = await Promise.all([
    execa(MSC, ['keygen', 'psk', keyA], { reject: false }),
    execa(MSC, ['keygen', 'psk', keyB], { reject: false }),
    execa(MSC, ['keygen', 'psk', keyC], { reject: false })
  ])
  assert.equal(keygenC.exitCode, 0, String(keygenC.stderr))
  pskC = await readPskFile(keyC)
  ;[n1, target] = await Promise.all([
    startNode({ args: ['--name', 'n1', '--psk', keyA, ...FAST] }),
    startNode({ args: ['--name', 'target', '--psk', keyC, ...PATIENT] })
  ])
  ;[s1, st] = await Promise.all([client(n1).status(), client(target).status()])
  n1Addr = loopbackAddr(s1)
  targetAddr = loopbackAddr(st)
})

after(async () => {
  await stopAllRaw()
  await destroyAllNodes()
})

// ---------------------------------------------------------------- private cluster

// The two suites run one after the other: node starts and the 10 MB message are
// CPU-heavy, and a node that takes over 20 s to start fails the harness.
describe('overlay security', { concurrency: 1 }, () => {
  describe('private cluster (pnet)', { concurrency: 1 }, () => {
    let n2: TestNode
    let s2: NodeStatus

    test('msc keygen psk writes a 0600 key and refuses to overwrite it', async () => {
      assert.equal(keygenA.exitCode, 0, String(keygenA.stderr))
      assert.equal(keygenB.exitCode, 0, String(keygenB.stderr))
      const stat = await fs.stat(keyA)
      assert.equal(stat.mode & 0o777, 0o600, `mode ${(stat.mode & 0o777).toString(8)}`)
      const text = await fs.readFile(keyA, 'utf8')
      assert.match(text, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n?$/)
      const again = await execa(MSC, ['keygen', 'psk', keyA], { reject: false })
      assert.notEqual(again.exitCode, 0, 'a second keygen on the same file must fail')
      assert.match(again.stderr, /exists; not overwriting/)
      assert.equal(await fs.readFile(keyA, 'utf8'), text, 'the key is unchanged')
      assert.notEqual(await fs.readFile(keyB, 'utf8'), text, 'two keys differ')
    })

    test('n1 and n2 with key A, n2 bootstrapping to n1, see each other alive', async () => {
      n2 = await startNode({ args: ['--name', 'n2', '--psk', keyA, '--bootstrap', n1Addr, ...FAST] })
      s2 = await client(n2).status()
      await waitFor(async () => {
        const [p1, p2] = await Promise.all([peers(n1), peers(n2)])
        return p1.some((p) => p.peerId === s2.peerId && p.state === 'alive' && p.name === 'n2') &&
          p2.some((p) => p.peerId === s1.peerId && p.state === 'alive' && p.name === 'n1')
      }, 20_000, 'n1 and n2 to see each other alive')
      // And through the CLI.
      const cli = await n1.json<PeerInfo[]>('peer', 'ls')
      assert.deepEqual(cli.map((p) => [p.name, p.state]), [['n2', 'alive']])
    })

    test('n1 and n2 form one key-file cluster: same id, both admitted by the key', async () => {
      // json() runs `msc ... --json` and throws unless it exits 0.
      const c1 = await n1.json<NodeStatus>('status')
      const c2 = await n2.json<NodeStatus>('status')
      assert.equal(c1.cluster.mode, 'key', JSON.stringify(c1.cluster))
      assert.equal(c2.cluster.mode, 'key', JSON.stringify(c2.cluster))
      assert.match(c1.cluster.id, /^[0-9a-f]{32}$/)
      assert.equal(c2.cluster.id, c1.cluster.id, 'the same cluster id on both')
      assert.equal(c1.cluster.members, 2)
      assert.match(c1.cluster.joinHint, /--psk/)
      const l1 = await n1.json<ClusterInfo>('cluster', 'ls')
      const l2 = await n2.json<ClusterInfo>('cluster', 'ls')
      assert.equal(l1.id, c1.cluster.id)
      assert.equal(l1.mode, 'key')
      const rows = (l: ClusterInfo): unknown => l.members.map((m) => [m.name, m.peerId, m.admittedBy]).sort()
      assert.deepEqual(rows(l1), [['n1', s1.peerId, 'key'], ['n2', s2.peerId, 'key']], JSON.stringify(l1.members))
      assert.deepEqual(rows(l2), rows(l1), 'n2 holds the same member list')
      assert.deepEqual(l1.members.filter((m) => m.self).map((m) => m.name), ['n1'])
      assert.deepEqual(l1.conflicts, [])
    })

    test('n3 with key B (bootstrapping to n1) and n4 without a key never get in', async () => {
      // One at a time: node starts are CPU-heavy, and one that takes over 20 s fails.
      const n3 = await startNode({ args: ['--name', 'n3', '--psk', keyB, '--bootstrap', n1Addr, ...FAST] })
      const startedAt = Date.now()
      const n4 = await startNode({ args: ['--name', 'n4', ...FAST] })
      const [s3, s4] = await Promise.all([client(n3).status(), client(n4).status()])
      // n3 is the key-file cluster of key B (another id), n4 a single-node cluster of its own.
      assert.equal(s3.cluster.mode, 'key')
      assert.notEqual(s3.cluster.id, s1.cluster.id, 'key B makes another cluster')
      assert.equal(s4.cluster.mode, 'token')
      assert.equal(s4.cluster.members, 1)
      assert.notEqual(s4.cluster.id, s1.cluster.id)

      // `msc join` to n1 fails from both, with a message naming the address: n4's own
      // gate refuses to dial a non-member (it is not joining anything); n3's dial never
      // gets through pnet (another key): it times out, or n1 gives up on it first.
      const [j4, j3] = await Promise.all([n4.msc('join', n1Addr), n3.msc('join', n1Addr)])
      const cannotJoin = `^msc: cannot join ${escapeRe(n1Addr)}: `
      assert.notEqual(j4.exitCode, 0, `msc join without the key must fail: ${j4.stdout}`)
      assert.match(j4.stderr, new RegExp(cannotJoin + "it is not a member of this node's cluster \\(a node enters another cluster with `msc node start --join TOKEN`", 'm'), j4.stderr)
      assert.notEqual(j3.exitCode, 0, `msc join with another key must fail: ${j3.stdout}`)
      assert.match(j3.stderr, new RegExp(cannotJoin + '(The operation was aborted due to timeout|.*(reset|closed|end of (input|stream))|.*ECONNRESET)', 'mi'), j3.stderr)

      // Give n3's bootstrap and any redial time to (not) succeed.
      await sleep(Math.max(0, 3000 - (Date.now() - startedAt)))
      const outside = new Set([s3.peerId, s4.peerId])
      for (const [n, other] of [[n1, s2], [n2, s1]] as const) {
        const list = await peers(n)
        assert.deepEqual(list.filter((p) => outside.has(p.peerId)), [], 'no outsider in the view')
        assert.deepEqual(list.map((p) => p.peerId), [other.peerId], 'only the other keyed node')
        const members = (await client(n).cluster()).members.map((m) => m.peerId)
        assert.deepEqual(members.filter((p) => outside.has(p)), [], 'no outsider in the member list')
      }
      assert.deepEqual(await n3.json('peer', 'ls'), [], 'n3 sees nobody')
      assert.deepEqual(await peers(n4), [], 'n4 sees nobody')
      assert.equal((await client(n3).status()).peersKnown, 0)
      // Not one message of an outsider reached n1's membership, not even a dropped one:
      // every reason is listed, every count is 0.
      const m1 = (await client(n1).status()).membership
      assert.deepEqual(Object.keys(m1.dropped).sort(), [...DROP_REASONS].sort(), 'every reason is listed')
      assert.equal(Object.values(m1.dropped).reduce((a, b) => a + b, 0), 0, JSON.stringify(m1))
      // Done with them: n3 keeps dialling n1 in vain, which only costs CPU from here on.
      await Promise.all([destroyNode(n3), destroyNode(n4)])
    })

    test('a raw libp2p node without the key (or with key B) cannot connect to n1; with key A it can', async () => {
      const [none, wrong, right] = await Promise.all([rawPeer(), rawPeer({ psk: await readPskFile(keyB) }), rawPeer({ psk: await readPskFile(keyA) })])
      const dial = async (r: RawPeer): Promise<unknown> => await r.host.dial(multiaddr(n1Addr), { signal: AbortSignal.timeout(5000) })
      const [rNone, rWrong, rRight] = await Promise.allSettled([dial(none), dial(wrong), dial(right)])
      assert.equal(rNone.status, 'rejected', 'no PSK: the dial fails')
      assert.equal(rWrong.status, 'rejected', 'key B: the dial fails')
      assert.equal(none.host.getConnections().length, 0)
      assert.equal(wrong.host.getConnections().length, 0)
      // Control: the same kind of host with the right key connects (a key-file cluster
      // lets key holders in to present their admission), so the failures above are the key.
      assert.equal(rRight.status, 'fulfilled', `key A: the dial succeeds ${rRight.status === 'rejected' ? String(rRight.reason) : ''}`)
      assert.ok(right.host.getConnections(peerIdFromString(s1.peerId)).length > 0)
      await Promise.all([stopRaw(none.host), stopRaw(wrong.host), stopRaw(right.host)])
    })

    test('msc node start refuses a garbage or missing --psk file with a clear message', async () => {
      const garbage = path.join(keysDir, 'garbage.psk')
      await fs.writeFile(garbage, 'this is not a key\n', { mode: 0o600 })
      const cases = [[garbage, /is not a libp2p PSK file \(make one with `msc keygen psk FILE`\)/], [path.join(keysDir, 'missing.psk'), /cannot read PSK file/]] as const
      await Promise.all(cases.map(async ([file, pattern]) => {
        const dataDir = await tempDir('psk-bad')
        const r = await execa(MSC, ['node', 'start', '--data-dir', dataDir, '--psk', file], {
          // Generous: it exits in about a second, but the other nodes of this file keep a small machine busy.
          reject: false,
          timeout: 60_000,
          env: { ...process.env, MSC_MDNS: 'false', MSC_LISTEN: '/ip4/127.0.0.1/tcp/0' }
        })
        assert.equal(r.timedOut, false, 'the node must exit, not run')
        assert.notEqual(r.exitCode, 0)
        assert.match(r.stderr, pattern, r.stderr)
        assert.match(r.stderr, /^msc: /m)
      }))
    })
  })

  // ---------------------------------------------------------------- hostile heartbeats

  describe('hostile heartbeats', { concurrency: 1 }, () => {
    /** Members of the target's cluster (key C, admission presented). */
    let h1: RawPeer
    let h2: RawPeer
    const incarnation = Date.now()
    const seqs = new Map<string, number>()

    type Counters = NodeStatus['membership']

    const hostileName = (r: RawPeer): string => `hostile-${r.id.slice(-6)}`

    /** Waits until the target is a topic peer of `r` (they exchanged subscriptions). */
    async function subscribed (r: RawPeer): Promise<void> {
      r.host.services.pubsub.subscribe(MEMBERSHIP_TOPIC)
      await waitFor(() => r.host.services.pubsub.getSubscribers(MEMBERSHIP_TOPIC).some((p) => p.toString() === st.peerId), 10_000, 'the target to be a topic peer of the hostile host')
    }

    /**
     * A hostile peer that holds key C and admitted itself to the target's cluster, as
     * any key holder may: what it publishes is judged by its content.
     */
    async function member (): Promise<RawPeer> {
      const r = await rawPeer({ psk: pskC })
      await presentKeyAdmission(r, targetAddr, pskC, hostileName(r))
      return r
    }

    async function connectHostile (): Promise<RawPeer> {
      const r = await member()
      await subscribed(r)
      return r
    }

    /** A heartbeat of `h` following HeartbeatSchema, with the next seq unless overridden. */
    function heartbeat (h: RawPeer, over: Partial<Heartbeat> = {}): Heartbeat {
      const seq = (seqs.get(h.id) ?? 0) + 1
      seqs.set(h.id, seq)
      return {
        v: HEARTBEAT_VERSION,
        type: 'heartbeat',
        peerId: h.id,
        incarnation,
        seq,
        sentAt: Date.now(),
        name: hostileName(h),
        version: '0.1.0',
        role: 'node',
        addrs: h.host.getMultiaddrs().map((m) => m.toString()),
        containers: [],
        resources: { memFreeBytes: 1024, memTotalBytes: 2048, diskFreeBytes: 4096 },
        ...over
      }
    }

    function bytesOf (x: unknown): Uint8Array {
      return new TextEncoder().encode(typeof x === 'string' ? x : JSON.stringify(x))
    }

    async function publish (h: RawPeer, data: Uint8Array): Promise<void> {
      const r = await h.host.services.pubsub.publish(MEMBERSHIP_TOPIC, data)
      assert.ok(r.recipients.some((p) => p.toString() === st.peerId), `sent to the target (recipients: ${r.recipients.map(String).join(', ')})`)
    }

    /**
     * Waits until the counters moved by exactly `delta` (accepted and each drop reason),
     * nothing else moving; then `msc status --json` (exit 0) shows the same, and the
     * target still runs.
     */
    async function expectCounts (before: Counters, delta: Record<string, number>, what: string): Promise<Counters> {
      const want: Counters = { accepted: before.accepted + (delta.accepted ?? 0), dropped: { ...before.dropped } }
      for (const [k, v] of Object.entries(delta)) {
        if (k === 'accepted') continue
        assert.ok(k in want.dropped, `${k} is a reason the target counts: ${Object.keys(want.dropped).join(', ')}`)
        want.dropped[k] = want.dropped[k]! + v
      }
      let now = before
      try {
        await waitFor(async () => {
          now = (await client(target).status()).membership
          return JSON.stringify(now) === JSON.stringify(want)
        }, 8000, what)
      } catch (err) {
        assert.deepEqual(now, want, `${what}: ${(err as Error).message}`)
      }
      await sleep(100)
      // json() runs `msc status --json` and throws unless it exits 0.
      const cli = await target.json<NodeStatus>('status')
      assert.deepEqual(cli.membership, want, `${what}: msc status --json, counters settled`)
      assert.equal(target.proc.exitCode, null, 'the target still runs')
      assert.equal(target.proc.signalCode, null, 'the target was not killed')
      return want
    }

    async function assertNotMember (...ids: string[]): Promise<void> {
      const list = await peers(target)
      assert.deepEqual(list.filter((p) => ids.includes(p.peerId)), [], `no member from bad messages: ${JSON.stringify(list.map((p) => p.peerId))}`)
    }

    const claimsOf = async (h: RawPeer): Promise<PeerInfo['containers'] | undefined> => (await peers(target)).find((p) => p.peerId === h.id)?.containers

    before(async () => {
      h1 = await connectHostile()
    })

    test('the target is a key-file cluster of key C; a hostile key holder admitted itself by the key', async () => {
      const s = await target.json<NodeStatus>('status')
      assert.equal(s.cluster.mode, 'key')
      assert.notEqual(s.cluster.id, s1.cluster.id, 'key C is another cluster than key A')
      assert.deepEqual(Object.values(s.membership.dropped).filter((x) => x !== 0), [], `nothing dropped yet: ${JSON.stringify(s.membership)}`)
      const ls = await target.json<ClusterInfo>('cluster', 'ls')
      const h = ls.members.find((m) => m.peerId === h1.id)
      assert.ok(h != null, `h1 is in the member list: ${JSON.stringify(ls.members)}`)
      assert.equal(h.admittedBy, 'key')
      assert.equal(h.name, hostileName(h1))
      // A member, but nothing it said made it one of the target's peers yet.
      assert.deepEqual(await peers(target), [], 'the target knows no peer')
    })

    test('(a) malformed: not JSON, not UTF-8, JSON outside the schema, duplicate containers', async () => {
      let c = await client(target).status().then((s) => s.membership)
      const cases: Array<[string, Uint8Array]> = [
        ['not JSON', bytesOf(`{"v":${HEARTBEAT_VERSION}, this is not json`)],
        ['not UTF-8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
        ['missing fields', bytesOf({ v: HEARTBEAT_VERSION, type: 'heartbeat', peerId: h1.id })],
        ['extra field', bytesOf({ ...heartbeat(h1), extra: true })],
        ['duplicate container', bytesOf(heartbeat(h1, { containers: [{ name: 'x', epoch: 1, state: 'running' }, { name: 'x', epoch: 2, state: 'running' }] }))]
      ]
      for (const [what, data] of cases) {
        await publish(h1, data)
        c = await expectCounts(c, { malformed: 1 }, `malformed (${what})`)
      }
      await assertNotMember(h1.id)
      assert.deepEqual(await peers(target), [], 'the target knows no member')
    })

    test('(b) a 10 MB message reaches the validator, is dropped as oversized; stream and connection survive', async () => {
      const c0 = (await client(target).status()).membership
      // gossipsub's own publish cannot send it (its encoder stops at 4 MiB), so a third
      // hostile member writes signed RPC frames on its own gossipsub stream to the target.
      const h3 = await member()
      const conn = await h3.host.dial(multiaddr(targetAddr), { signal: AbortSignal.timeout(5000) })
      const stream = await conn.newStream(GOSSIPSUB_PROTOCOL, { signal: AbortSignal.timeout(5000) })
      const sendFrame = async (data: Uint8Array): Promise<void> => {
        for (const chunk of await signedFrame(h3.key, data)) stream.send(chunk)
      }
      // First a small valid-JSON but malformed message: the hand-built frames are right.
      await sendFrame(bytesOf({ v: HEARTBEAT_VERSION }))
      const c1 = await expectCounts(c0, { malformed: 1 }, 'malformed on the raw gossipsub stream')
      await sendFrame(new Uint8Array(10 * 1024 * 1024).fill(0x61))
      const c2 = await expectCounts(c1, { oversized: 1 }, 'oversized (10 MB)')
      assert.equal(stream.status, 'open', 'the raw stream is still open')
      assert.equal(conn.status, 'open', 'the connection is still open')
      // The same stream still carries messages.
      await sendFrame(bytesOf('still here?'))
      await expectCounts(c2, { malformed: 1 }, 'malformed after the 10 MB message')
      await assertNotMember(h3.id)
      assert.deepEqual(await peers(target), [], 'the target knows no member')
      await stopRaw(h3.host)
    })

    test(`(c) wrong version (v: ${HEARTBEAT_VERSION - 1}, v: ${HEARTBEAT_VERSION + 1}) is dropped as version`, async () => {
      let c = (await client(target).status()).membership
      for (const v of [HEARTBEAT_VERSION - 1, HEARTBEAT_VERSION + 1]) {
        await publish(h1, bytesOf({ ...heartbeat(h1), v }))
        c = await expectCounts(c, { version: 1 }, `version ${v}`)
      }
      await assertNotMember(h1.id)
    })

    test('(d) a heartbeat speaking for another peer is dropped as forged-sender', async () => {
      let c = (await client(target).status()).membership
      const victim = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
      const forged = heartbeat(h1, { peerId: victim, name: 'victim' })
      assert.ok(HeartbeatSchema.safeParse(forged).success, 'otherwise a valid heartbeat')
      await publish(h1, bytesOf(forged))
      c = await expectCounts(c, { 'forged-sender': 1 }, 'forged sender (another peer)')
      // Speaking for the target itself.
      await publish(h1, bytesOf(heartbeat(h1, { peerId: st.peerId, name: 'target' })))
      await expectCounts(c, { 'forged-sender': 1 }, 'forged sender (the target itself)')
      await assertNotMember(h1.id, victim)
      assert.deepEqual(await peers(target), [], 'the target knows no member')
    })

    test('(d2) a key holder that never presented its admission is not a member: its valid heartbeat is dropped as not-member', async () => {
      const before = (await client(target).status()).membership
      // Holds key C, so pnet and the gater let it connect (to present an admission); it never does.
      const outsider = await rawPeer({ psk: pskC })
      await outsider.host.dial(multiaddr(targetAddr), { signal: AbortSignal.timeout(5000) })
      await subscribed(outsider)
      const hb = heartbeat(outsider, { containers: [{ name: 'c', epoch: 1, state: 'running' }] })
      assert.deepEqual(HeartbeatSchema.parse(hb), hb, 'follows HeartbeatSchema exactly')
      await publish(outsider, bytesOf(hb))
      await expectCounts(before, { 'not-member': 1 }, 'a valid heartbeat from a connected non-member')
      await assertNotMember(outsider.id)
      assert.deepEqual(await peers(target), [], 'the target knows no member')
      const ls = await target.json<ClusterInfo>('cluster', 'ls')
      assert.ok(!ls.members.some((m) => m.peerId === outsider.id), 'not in the member list either')
      await stopRaw(outsider.host)
    })

    let claimC5: Uint8Array
    const c5: ContainerClaim = { name: 'c', epoch: 5, state: 'running' }

    test('(e) a valid claim of c@5 is accepted; lower epochs and rival claims are refused', async () => {
      let c = (await client(target).status()).membership
      const hb = heartbeat(h1, { containers: [c5] })
      assert.deepEqual(HeartbeatSchema.parse(hb), hb, 'follows HeartbeatSchema exactly')
      claimC5 = bytesOf(hb)
      await publish(h1, claimC5)
      c = await expectCounts(c, { accepted: 1 }, 'valid heartbeat with c@5')
      const cli = await target.json<PeerInfo[]>('peer', 'ls')
      assert.equal(cli.length, 1, JSON.stringify(cli))
      assert.equal(cli[0]!.peerId, h1.id)
      assert.equal(cli[0]!.state, 'alive')
      assert.equal(cli[0]!.name, hb.name)
      assert.deepEqual(cli[0]!.containers, [c5])

      // Another peer claims c at a lower epoch: its heartbeat is valid (it becomes a
      // member), its claim is dropped and counted; c stays with h1 at epoch 5.
      h2 = await connectHostile()
      await publish(h2, bytesOf(heartbeat(h2, { containers: [{ name: 'c', epoch: 3, state: 'running' }] })))
      c = await expectCounts(c, { accepted: 1, 'epoch-regression': 1 }, 'c@3 from another peer')
      assert.deepEqual(await claimsOf(h2), [], 'h2 owns nothing')
      assert.deepEqual(await claimsOf(h1), [c5], 'h1 still owns c@5')

      // Another peer claims c at the same epoch: an owner conflict, c stays with h1.
      await publish(h2, bytesOf(heartbeat(h2, { containers: [{ name: 'c', epoch: 5, state: 'running' }] })))
      c = await expectCounts(c, { accepted: 1, 'owner-conflict': 1 }, 'c@5 from another peer')
      assert.deepEqual(await claimsOf(h2), [], 'h2 still owns nothing')
      assert.deepEqual(await claimsOf(h1), [c5], 'h1 still owns c@5')

      // The owner itself goes back to epoch 3 (higher seq): the claim is dropped and counted.
      await publish(h1, bytesOf(heartbeat(h1, { containers: [{ name: 'c', epoch: 3, state: 'running' }] })))
      c = await expectCounts(c, { accepted: 1, 'epoch-regression': 1 }, 'c@3 from the owner, higher seq')
      const after = await claimsOf(h1)
      assert.ok(!(after ?? []).some((x) => x.epoch < 5), `no claim below epoch 5 is shown: ${JSON.stringify(after)}`)
      // Epoch 5 is remembered: h2 still cannot take c at 5, only above.
      await publish(h2, bytesOf(heartbeat(h2, { containers: [{ name: 'c', epoch: 4, state: 'running' }] })))
      c = await expectCounts(c, { accepted: 1, 'epoch-regression': 1 }, 'c@4 from another peer after the release')
      // Nor at 5 (only the peer that released it may take it back at the same epoch) ...
      await publish(h2, bytesOf(heartbeat(h2, { containers: [{ name: 'c', epoch: 5, state: 'running' }] })))
      c = await expectCounts(c, { accepted: 1, 'owner-conflict': 1 }, 'c@5 from another peer after the release')
      assert.deepEqual(await claimsOf(h2), [], 'h2 still owns nothing')
      // ... which h1 does: c is h1's at epoch 5 again.
      await publish(h1, bytesOf(heartbeat(h1, { containers: [c5] })))
      c = await expectCounts(c, { accepted: 1 }, 'h1 claims c@5 again')
      assert.deepEqual(await claimsOf(h1), [c5], 'h1 owns c@5 again')
    })

    test('(f) a replay of an earlier heartbeat (same incarnation and seq) is dropped as replayed', async () => {
      const before = (await client(target).status()).membership
      const strip = (l: PeerInfo[]): unknown => l.map((p) => ({ peerId: p.peerId, name: p.name, containers: p.containers }))
      const members = strip(await peers(target))
      await publish(h1, claimC5)
      const c = await expectCounts(before, { replayed: 1 }, 'replay of the c@5 heartbeat')
      assert.deepEqual(strip(await peers(target)), members, 'the replay changed nothing')
      // An older seq from h2 is a replay too.
      await publish(h2, bytesOf({ ...heartbeat(h2), seq: 1 }))
      await expectCounts(c, { replayed: 1 }, 'h2 with an old seq')
      assert.deepEqual(strip(await peers(target)), members, 'still nothing changed')
    })

    test("(g) the owner's name is taken only with a handover the owner signed", async () => {
      let c = (await client(target).status()).membership
      const c6: ContainerClaim = { name: 'c', epoch: 6, state: 'running' }
      const body = { container: 'c', epoch: 6, from: h1.id, to: h2.id, at: Date.now() }

      // h2 raises c to h1's epoch + 1 on its own: refused, c stays with h1.
      await publish(h2, bytesOf(heartbeat(h2, { containers: [c6] })))
      c = await expectCounts(c, { accepted: 1, 'unproven-handover': 1 }, 'c@6 from h2 without a handover')
      assert.deepEqual(await claimsOf(h2), [], 'h2 owns nothing')
      assert.deepEqual(await claimsOf(h1), [c5], 'h1 still owns c@5')

      // A handover h2 signed itself (from: h2): not from the owner.
      const selfSigned = await signHandover(h2.key, { ...body, from: h2.id })
      await publish(h2, bytesOf(heartbeat(h2, { containers: [{ ...c6, handover: selfSigned }] })))
      c = await expectCounts(c, { accepted: 1, 'unproven-handover': 1 }, 'c@6 with a handover from h2 itself')
      // One that names h1 as the signer but carries h2's signature: does not verify.
      const sig = Buffer.from(await h2.key.sign(handoverSigningBytes(body))).toString('base64url')
      const forged: Handover = { ...body, sig }
      await publish(h2, bytesOf(heartbeat(h2, { containers: [{ ...c6, handover: forged }] })))
      c = await expectCounts(c, { accepted: 1, 'unproven-handover': 1 }, 'c@6 with a handover "from h1" signed by h2')
      assert.deepEqual(await claimsOf(h2), [], 'h2 still owns nothing')
      assert.deepEqual(await claimsOf(h1), [c5], 'h1 still owns c@5')

      // The real thing: h1 (the owner) signs c over to h2 at epoch 6.
      const handover = await signHandover(h1.key, body)
      const hb = heartbeat(h2, { containers: [{ ...c6, handover }] })
      assert.deepEqual(HeartbeatSchema.parse(hb), hb, 'follows HeartbeatSchema exactly')
      await publish(h2, bytesOf(hb))
      c = await expectCounts(c, { accepted: 1 }, "c@6 with h1's handover")
      assert.deepEqual(await claimsOf(h2), [c6], "c is h2's at epoch 6")
      // h1 cannot keep it at 5, nor take it back at 6.
      await publish(h1, bytesOf(heartbeat(h1, { containers: [c5] })))
      c = await expectCounts(c, { accepted: 1, 'epoch-regression': 1 }, 'h1 still claims c@5')
      await publish(h1, bytesOf(heartbeat(h1, { containers: [c6] })))
      c = await expectCounts(c, { accepted: 1, 'owner-conflict': 1 }, 'h1 claims c@6')
      assert.deepEqual(await claimsOf(h1), [], 'h1 owns nothing')
      assert.deepEqual(await claimsOf(h2), [c6], "c is still h2's at epoch 6")
    })

    test('(h) epochs are bounded: more than 2^20 above the known epoch is epoch-jump, above 2^40 malformed', async () => {
      let c = (await client(target).status()).membership
      const at = (epoch: number): ContainerClaim => ({ name: 'c', epoch, state: 'running' })
      // The owner itself, 2^20 + 1 above the epoch it holds: refused (and c released).
      await publish(h2, bytesOf(heartbeat(h2, { containers: [at(6 + MAX_EPOCH_JUMP + 1)] })))
      c = await expectCounts(c, { accepted: 1, 'epoch-jump': 1 }, 'c 2^20 + 1 above epoch 6')
      assert.deepEqual(await claimsOf(h2), [], 'the jump is not shown')
      // An unknown name counts from 0.
      await publish(h1, bytesOf(heartbeat(h1, { containers: [{ name: 'd', epoch: MAX_EPOCH_JUMP + 1, state: 'running' }] })))
      c = await expectCounts(c, { accepted: 1, 'epoch-jump': 1 }, 'unknown d at 2^20 + 1')
      assert.deepEqual(await claimsOf(h1), [], 'h1 owns nothing')
      // Above the wire's bound (2^40): the whole heartbeat is malformed.
      for (const epoch of [2 ** 53, MAX_EPOCH + 1]) {
        await publish(h2, bytesOf(heartbeat(h2, { containers: [at(epoch)] })))
        c = await expectCounts(c, { malformed: 1 }, `epoch ${epoch}`)
      }
      // Control: exactly 2^20 above is accepted (h2 released c at 6, takes it back higher).
      await publish(h2, bytesOf(heartbeat(h2, { containers: [at(6 + MAX_EPOCH_JUMP)] })))
      c = await expectCounts(c, { accepted: 1 }, 'c 2^20 above epoch 6')
      assert.deepEqual(await claimsOf(h2), [at(6 + MAX_EPOCH_JUMP)], `c is h2's at ${6 + MAX_EPOCH_JUMP}`)
    })
  })
})
