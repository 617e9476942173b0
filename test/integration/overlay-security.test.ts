/**
 * Overlay security against real nodes on loopback:
 *  - private clusters (pnet): only nodes holding the same pre-shared key connect and
 *    see each other; a node with another key or none never gets in;
 *  - hostile heartbeats: raw libp2p peers connected to a node publish malformed,
 *    oversized (10 MB), wrong-version, forged, epoch-regressing and replayed membership
 *    messages; each is dropped and counted under its reason, none makes a member,
 *    and the node keeps running and answering.
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
import { destroyAllNodes, MSC, sleep, startNode, tempDir, waitFor, type TestNode } from '../helpers/node-harness.ts'
import { ControlClient } from '../../src/api/client.ts'
import { createLibp2pHost, type MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { readPskFile } from '../../src/overlay/psk.ts'
import { MEMBERSHIP_TOPIC } from '../../src/overlay/membership/membership-service.ts'
import { HeartbeatSchema, type ContainerClaim, type Heartbeat } from '../../src/overlay/membership/heartbeat.ts'
import type { NodeStatus, PeerInfo } from '../../src/api/types.ts'

const FAST = ['--ping-interval', '0.3']
const GOSSIPSUB_PROTOCOL = '/meshsub/1.2.0'

// ---------------------------------------------------------------- raw libp2p hosts

/** Raw libp2p hosts made by this file: stopped in after(), even when a test failed. */
const raws = new Set<MscLibp2p>()

interface Raw { host: MscLibp2p, key: PrivateKey }

async function rawHost (psk?: Uint8Array): Promise<Raw> {
  const key = await generateKeyPair('Ed25519')
  const host = await createLibp2pHost({
    privateKey: key,
    listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], bootstrap: [], mdns: false, mdnsIntervalMs: 1000,
    ...(psk != null ? { psk } : {}),
    maxPubsubMessageBytes: 32 * 1024 * 1024
  })
  raws.add(host)
  await host.start()
  return { host, key }
}

async function stopRaw (h: MscLibp2p): Promise<void> {
  raws.delete(h)
  try { await h.stop() } catch {}
}

function varint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
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

function client (n: TestNode): ControlClient { return new ControlClient(n.socket) }
async function peers (n: TestNode): Promise<PeerInfo[]> { return await client(n).peers() }

function loopbackAddr (s: NodeStatus): string {
  const a = s.addrs.find((x) => x.startsWith('/ip4/127.0.0.1/tcp/') && x.includes('/p2p/'))
  assert.ok(a != null, `a loopback /p2p/ address in ${JSON.stringify(s.addrs)}`)
  return a
}

/** Shared by both suites: made in the top-level before(), all at once. */
let keysDir = ''
let keyA = ''
let keyB = ''
let keygenA: Result
let keygenB: Result
/** Private cluster, key A. */
let n1: TestNode
let s1: NodeStatus
let n1Addr = ''
/** The target of the hostile peers (open cluster). */
let target: TestNode
let st: NodeStatus
let targetAddr = ''

before(async () => {
  keysDir = await tempDir('psk')
  keyA = path.join(keysDir, 'a.psk')
  keyB = path.join(keysDir, 'b.psk')
  ;[keygenA, keygenB] = await Promise.all([
    execa(MSC, ['keygen', 'psk', keyA], { reject: false }),
    execa(MSC, ['keygen', 'psk', keyB], { reject: false })
  ])
  ;[n1, target] = await Promise.all([
    startNode({ args: ['--name', 'n1', '--psk', keyA, ...FAST] }),
    startNode({ args: ['--name', 'target', ...FAST] })
  ])
  ;[s1, st] = await Promise.all([client(n1).status(), client(target).status()])
  n1Addr = loopbackAddr(s1)
  targetAddr = loopbackAddr(st)
})

after(async () => {
  for (const h of [...raws]) await stopRaw(h)
  await destroyAllNodes()
})

// ---------------------------------------------------------------- private cluster

describe('overlay security', { concurrency: true }, () => {
  describe('private cluster (pnet)', { concurrency: 1 }, () => {
    let n2: TestNode
    let s2: NodeStatus
    /** n3 (key B, bootstrapping to n1) and n4 (no key), started with n2 to save time. */
    let outsiders: Promise<{ n3: TestNode, n4: TestNode, startedAt: number }>

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
      outsiders = Promise.all([
        startNode({ args: ['--name', 'n3', '--psk', keyB, '--bootstrap', n1Addr, ...FAST] }),
        startNode({ args: ['--name', 'n4', ...FAST] })
      ]).then(([n3, n4]) => ({ n3, n4, startedAt: Date.now() }))
      outsiders.catch(() => {}) // awaited (and reported) by the next test
      n2 = await startNode({ args: ['--name', 'n2', '--psk', keyA, '--bootstrap', n1Addr, ...FAST] })
      s2 = await client(n2).status()
      await waitFor(async () => {
        const [p1, p2] = await Promise.all([peers(n1), peers(n2)])
        return p1.some((p) => p.peerId === s2.peerId && p.state === 'alive' && p.name === 'n2') &&
          p2.some((p) => p.peerId === s1.peerId && p.state === 'alive' && p.name === 'n1')
      }, 10_000, 'n1 and n2 to see each other alive')
      // And through the CLI.
      const cli = await n1.json<PeerInfo[]>('peer', 'ls')
      assert.deepEqual(cli.map((p) => [p.name, p.state]), [['n2', 'alive']])
    })

    test('n3 with key B (bootstrapping to n1) and n4 without a key never get in', async () => {
      const { n3, n4, startedAt } = await outsiders
      const [s3, s4] = await Promise.all([client(n3).status(), client(n4).status()])

      // `msc join` to n1 fails from both, with a message naming the address.
      const [j4, j3] = await Promise.all([n4.msc('join', n1Addr), n3.msc('join', n1Addr)])
      assert.notEqual(j4.exitCode, 0, `msc join without the key must fail: ${j4.stdout}`)
      assert.match(j4.stderr, /cannot join \/ip4\/127\.0\.0\.1\//)
      assert.notEqual(j3.exitCode, 0, `msc join with another key must fail: ${j3.stdout}`)
      assert.match(j3.stderr, /cannot join/)

      // Give n3's bootstrap and any redial time to (not) succeed.
      await sleep(Math.max(0, 3000 - (Date.now() - startedAt)))
      const outside = new Set([s3.peerId, s4.peerId])
      for (const [n, other] of [[n1, s2], [n2, s1]] as const) {
        const list = await peers(n)
        assert.deepEqual(list.filter((p) => outside.has(p.peerId)), [], 'no outsider in the view')
        assert.deepEqual(list.map((p) => p.peerId), [other.peerId], 'only the other keyed node')
      }
      assert.deepEqual(await n3.json('peer', 'ls'), [], 'n3 sees nobody')
      assert.deepEqual(await peers(n4), [], 'n4 sees nobody')
      assert.equal((await client(n3).status()).peersKnown, 0)
      // Not one message of an outsider reached n1's membership, not even a dropped one.
      const m1 = (await client(n1).status()).membership
      assert.equal(Object.values(m1.dropped).reduce((a, b) => a + b, 0), 0, JSON.stringify(m1))
    })

    test('a raw libp2p node without the key (or with key B) cannot connect to n1; with key A it can', async () => {
      const [none, wrong, right] = await Promise.all([rawHost(), rawHost(await readPskFile(keyB)), rawHost(await readPskFile(keyA))])
      const dial = async (r: Raw): Promise<unknown> => await r.host.dial(multiaddr(n1Addr), { signal: AbortSignal.timeout(5000) })
      const [rNone, rWrong, rRight] = await Promise.allSettled([dial(none), dial(wrong), dial(right)])
      assert.equal(rNone.status, 'rejected', 'no PSK: the dial fails')
      assert.equal(rWrong.status, 'rejected', 'key B: the dial fails')
      assert.equal(none.host.getConnections().length, 0)
      assert.equal(wrong.host.getConnections().length, 0)
      // Control: the same kind of host with the right key connects, so the failures above are the key.
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
          reject: false, timeout: 20_000, env: { ...process.env, MSC_MDNS: 'false', MSC_LISTEN: '/ip4/127.0.0.1/tcp/0' }
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
    let h1: Raw
    let h2: Raw
    const incarnation = Date.now()
    const seqs = new Map<string, number>()

    type Counters = NodeStatus['membership']

    async function connectHostile (): Promise<Raw> {
      const r = await rawHost()
      await r.host.dial(multiaddr(targetAddr), { signal: AbortSignal.timeout(5000) })
      r.host.services.pubsub.subscribe(MEMBERSHIP_TOPIC)
      await waitFor(() => r.host.services.pubsub.getSubscribers(MEMBERSHIP_TOPIC).some((p) => p.toString() === st.peerId), 10_000, 'the target to be a topic peer of the hostile host')
      return r
    }

    /** A heartbeat of `h` following HeartbeatSchema, with the next seq unless overridden. */
    function heartbeat (h: Raw, over: Partial<Heartbeat> = {}): Heartbeat {
      const id = h.host.peerId.toString()
      const seq = (seqs.get(id) ?? 0) + 1
      seqs.set(id, seq)
      return {
        v: 1, type: 'heartbeat', peerId: id, incarnation, seq, sentAt: Date.now(),
        name: `hostile-${id.slice(-6)}`, version: '0.1.0', role: 'node',
        addrs: h.host.getMultiaddrs().map((m) => m.toString()), containers: [],
        resources: { memFreeBytes: 1024, memTotalBytes: 2048, diskFreeBytes: 4096 },
        ...over
      }
    }

    function bytesOf (x: unknown): Uint8Array {
      return new TextEncoder().encode(typeof x === 'string' ? x : JSON.stringify(x))
    }

    async function publish (h: Raw, data: Uint8Array): Promise<void> {
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
      for (const [k, v] of Object.entries(delta)) if (k !== 'accepted') want.dropped[k] = (want.dropped[k] ?? 0) + v
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

    before(async () => { h1 = await connectHostile() })

    test('(a) malformed: not JSON, not UTF-8, JSON outside the schema, duplicate containers', async () => {
      let c = await client(target).status().then((s) => s.membership)
      const cases: Array<[string, Uint8Array]> = [
        ['not JSON', bytesOf('{"v":1, this is not json')],
        ['not UTF-8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
        ['missing fields', bytesOf({ v: 1, type: 'heartbeat', peerId: h1.host.peerId.toString() })],
        ['extra field', bytesOf({ ...heartbeat(h1), extra: true })],
        ['duplicate container', bytesOf(heartbeat(h1, { containers: [{ name: 'x', epoch: 1, state: 'running' }, { name: 'x', epoch: 2, state: 'running' }] }))]
      ]
      for (const [what, data] of cases) {
        await publish(h1, data)
        c = await expectCounts(c, { malformed: 1 }, `malformed (${what})`)
      }
      await assertNotMember(h1.host.peerId.toString())
      assert.deepEqual(await peers(target), [], 'the target knows no member')
    })

    test('(b) a 10 MB message reaches the validator, is dropped as oversized; stream and connection survive', async () => {
      const c0 = (await client(target).status()).membership
      // gossipsub's own publish cannot send it (its encoder stops at 4 MiB), so a third
      // hostile host writes signed RPC frames on its own gossipsub stream to the target.
      const h3 = await rawHost()
      const conn = await h3.host.dial(multiaddr(targetAddr), { signal: AbortSignal.timeout(5000) })
      const stream = await conn.newStream(GOSSIPSUB_PROTOCOL, { signal: AbortSignal.timeout(5000) })
      const sendFrame = async (data: Uint8Array): Promise<void> => {
        for (const chunk of await signedFrame(h3.key, data)) stream.send(chunk)
      }
      // First a small valid-JSON but malformed message: the hand-built frames are right.
      await sendFrame(bytesOf({ v: 1 }))
      const c1 = await expectCounts(c0, { malformed: 1 }, 'malformed on the raw gossipsub stream')
      await sendFrame(new Uint8Array(10 * 1024 * 1024).fill(0x61))
      const c2 = await expectCounts(c1, { oversized: 1 }, 'oversized (10 MB)')
      assert.equal(stream.status, 'open', 'the raw stream is still open')
      assert.equal(conn.status, 'open', 'the connection is still open')
      // The same stream still carries messages.
      await sendFrame(bytesOf('still here?'))
      await expectCounts(c2, { malformed: 1 }, 'malformed after the 10 MB message')
      await assertNotMember(h3.host.peerId.toString())
      assert.deepEqual(await peers(target), [], 'the target knows no member')
      await stopRaw(h3.host)
    })

    test('(c) wrong version (v: 2) is dropped as version', async () => {
      const before = (await client(target).status()).membership
      await publish(h1, bytesOf({ ...heartbeat(h1), v: 2 }))
      await expectCounts(before, { version: 1 }, 'version 2')
      await assertNotMember(h1.host.peerId.toString())
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
      await assertNotMember(h1.host.peerId.toString(), victim)
      assert.deepEqual(await peers(target), [], 'the target knows no member')
    })

    let claimC5: Uint8Array

    test('(e) a valid claim of c@5 is accepted; lower epochs and rival claims are refused', async () => {
      let c = (await client(target).status()).membership
      const c5: ContainerClaim = { name: 'c', epoch: 5, state: 'running' }
      const hb = heartbeat(h1, { containers: [c5] })
      assert.deepEqual(HeartbeatSchema.parse(hb), hb, 'follows HeartbeatSchema exactly')
      claimC5 = bytesOf(hb)
      await publish(h1, claimC5)
      c = await expectCounts(c, { accepted: 1 }, 'valid heartbeat with c@5')
      const cli = await target.json<PeerInfo[]>('peer', 'ls')
      assert.equal(cli.length, 1, JSON.stringify(cli))
      assert.equal(cli[0]!.peerId, h1.host.peerId.toString())
      assert.equal(cli[0]!.state, 'alive')
      assert.equal(cli[0]!.name, hb.name)
      assert.deepEqual(cli[0]!.containers, [c5])

      const claimsOf = async (h: Raw): Promise<PeerInfo['containers'] | undefined> =>
        (await peers(target)).find((p) => p.peerId === h.host.peerId.toString())?.containers

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
  })
})
