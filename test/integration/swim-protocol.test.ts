/**
 * `/msc/swim/1` refusals, between real libp2p hosts on loopback (no namespaces, no
 * root): a node running the membership service answers members' probes and refuses
 * everything else, counting each refusal by reason (protocols/membership.md,
 * "Failure detection").
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { FramedStream, FRAME_JSON } from '../../src/protocols/framing.ts'
import { HEARTBEAT_VERSION } from '../../src/overlay/membership/heartbeat.ts'
import { MembershipService } from '../../src/overlay/membership/membership-service.ts'
import { MembershipView } from '../../src/overlay/membership/membership-view.ts'
import { PeerConnector } from '../../src/overlay/connector.ts'
import { exchange, MAX_PROBE_BYTES, membersDigest, readRequest, reply, SWIM_PROTOCOL, SWIM_VERSION, type SwimReply, type SwimRequest } from '../../src/overlay/membership/swim-protocol.ts'
import type { MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { loopbackHost } from '../helpers/loopback-host.ts'

let a: MscLibp2p
let b: MscLibp2p
let outsider: MscLibp2p
let service: MembershipService
let members: Set<string>
let view: MembershipView

before(async () => {
  a = await loopbackHost()
  b = await loopbackHost()
  outsider = await loopbackHost()
  members = new Set([a.peerId.toString(), b.peerId.toString()])
  const isMember = (p: string): boolean => members.has(p)
  view = new MembershipView({ selfId: a.peerId.toString(), timers: { suspectAfterMs: 1500, deadAfterMs: 3000, forgetAfterMs: 600_000, maxAgeMs: 30_000 }, externalVerdicts: true, isMember })
  const log = silentLogger()
  const connector = new PeerConnector(a, log)
  connector.start()
  service = new MembershipService({
    libp2p: a,
    view,
    connector,
    intervalMs: 60_000, // no probe rounds of its own during the test
    suspicionMinMs: 1500,
    suspicionMaxMs: 3000,
    logger: log,
    isMember,
    local: {
      name: 'a',
      version: '0.1.0',
      role: 'node',
      containers: async () => [],
      resources: async () => ({ memFreeBytes: 0, memTotalBytes: 0, diskFreeBytes: 0 })
    }
  })
  await service.start()
  // A knows B as a member, from B's heartbeat.
  const bid = b.peerId.toString()
  const hb = { v: HEARTBEAT_VERSION as typeof HEARTBEAT_VERSION, type: 'heartbeat' as const, peerId: bid, incarnation: 1, seq: 1, sentAt: Date.now(), name: 'b', version: '0.1.0', role: 'node' as const, addrs: [], containers: [],
    resources: { memFreeBytes: 0, memTotalBytes: 0, diskFreeBytes: 0 } }
  assert.ok(view.ingest(hb))
  service.detector.heard(bid, 1)
})

after(async () => {
  await service?.stop()
  await Promise.all([a, b, outsider].map(async (h) => await h?.stop()))
})

async function ask (from: MscLibp2p, payload: Uint8Array | object): Promise<SwimReply> {
  const stream = await from.dialProtocol(a.getMultiaddrs()[0]!, SWIM_PROTOCOL, { signal: AbortSignal.timeout(5000) })
  if (!(payload instanceof Uint8Array)) return await exchange(stream, payload as Parameters<typeof exchange>[1], AbortSignal.timeout(5000))
  const f = new FramedStream(stream, { idleTimeoutMs: 5000 })
  await f.writeFrame(FRAME_JSON, payload)
  const r = await f.readFrame(AbortSignal.timeout(5000))
  if (r == null) throw new Error('no reply')
  return JSON.parse(new TextDecoder().decode(r.payload)) as SwimReply
}

/** Runs `fn`, which must fail (the stream is reset), and checks the refusal was counted under `reason`. */
async function refused (reason: 'not-member' | 'malformed' | 'target-not-member', fn: () => Promise<unknown>): Promise<void> {
  const before = service.swimRefused()[reason]
  await assert.rejects(fn)
  // The count is taken as the server resets the stream; allow it a moment.
  for (let i = 0; i < 50 && service.swimRefused()[reason] === before; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal(service.swimRefused()[reason], before + 1, `one more ${reason} refusal: ${JSON.stringify(service.swimRefused())}`)
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

describe('/msc/swim/1', () => {
  test("a member's ping is acked", async () => {
    const r = await ask(b, { v: SWIM_VERSION, type: 'ping', changes: [] })
    assert.equal(r.type, 'ack')
  })

  test('a ping-req for the answering node itself is acked', async () => {
    const r = await ask(b, { v: SWIM_VERSION, type: 'ping-req', target: a.peerId.toString(), timeoutMs: 1000, changes: [] })
    assert.equal(r.type, 'ack')
  })

  test('a sync whose member digest differs is answered with every member the node knows, itself first', async () => {
    const r = await ask(b, { v: SWIM_VERSION, type: 'sync', digest: membersDigest([]) })
    assert.equal(r.type, 'sync')
    assert.deepEqual(r.type === 'sync' ? r.members?.map((m) => m.peer) : [], [a.peerId.toString(), b.peerId.toString()])
    assert.equal(r.type === 'sync' ? r.digest : '', membersDigest(service.detector.snapshot()))
  })

  test("a sync whose member digest is the same as the node's is answered with its heartbeat and digest, and no list", async () => {
    const digest = membersDigest(service.detector.snapshot())
    const r = await ask(b, { v: SWIM_VERSION, type: 'sync', digest })
    assert.equal(r.type, 'sync')
    if (r.type !== 'sync') return
    assert.equal(r.members, undefined)
    assert.equal(r.digest, digest)
    assert.equal(JSON.parse(r.heartbeat ?? '{}').peerId, a.peerId.toString())
  })

  test('a peer that is not a member of the cluster is refused', async () => {
    await refused('not-member', async () => await ask(outsider, { v: SWIM_VERSION, type: 'ping', changes: [] }))
  })

  test('a ping-req for a non-member, or for an unknown member, or for the asker, is refused', async () => {
    await refused('target-not-member', async () => await ask(b, { v: SWIM_VERSION, type: 'ping-req', target: outsider.peerId.toString(), timeoutMs: 1000, changes: [] }))
    const unknown = await loopbackHost()
    try {
      members.add(unknown.peerId.toString())
      await refused('target-not-member', async () => await ask(b, { v: SWIM_VERSION, type: 'ping-req', target: unknown.peerId.toString(), timeoutMs: 1000, changes: [] }))
    } finally {
      members.delete(unknown.peerId.toString())
      await unknown.stop()
    }
    await refused('target-not-member', async () => await ask(b, { v: SWIM_VERSION, type: 'ping-req', target: b.peerId.toString(), timeoutMs: 1000, changes: [] }))
  })

  test('malformed requests are refused: not JSON, unknown field, wrong version, too many changes, a bad peer id, an oversized ping, a sync without a proper digest', async () => {
    const change = { peer: b.peerId.toString(), incarnation: 1, refuted: 0, state: 'suspect', by: b.peerId.toString() }
    const cases: Array<[string, Uint8Array]> = [
      ['not JSON', enc('{"v":1,"type":')],
      ['unknown field', enc(JSON.stringify({ v: SWIM_VERSION, type: 'ping', changes: [], extra: 1 }))],
      ['old version', enc(JSON.stringify({ v: 1, type: 'ping', changes: [] }))],
      ['sync without a digest', enc(JSON.stringify({ v: SWIM_VERSION, type: 'sync', members: [] }))],
      ['sync with a digest that is not 64 hex digits', enc(JSON.stringify({ v: SWIM_VERSION, type: 'sync', digest: 'AB'.repeat(32) }))],
      ['unknown type', enc(JSON.stringify({ v: SWIM_VERSION, type: 'pong', changes: [] }))],
      ['9 changes', enc(JSON.stringify({ v: SWIM_VERSION, type: 'ping', changes: Array.from({ length: 9 }, () => change) }))],
      ['bad peer id', enc(JSON.stringify({ v: SWIM_VERSION, type: 'ping', changes: [{ ...change, peer: 'not a peer id!' }] }))],
      ['bad state', enc(JSON.stringify({ v: SWIM_VERSION, type: 'ping', changes: [{ ...change, state: 'left' }] }))],
      ['oversized ping', enc(`{"v":${SWIM_VERSION},"type":"ping","changes":[]${' '.repeat(MAX_PROBE_BYTES)}}`)]
    ]
    for (const [what, bytes] of cases) {
      await refused('malformed', async () => await ask(b, bytes)).catch((err: Error) => {
        throw new Error(`${what}: ${err.message}`)
      })
    }
  })

  test('a sync whose heartbeat speaks for another peer is dropped as forged-sender, and names nobody a member', async () => {
    const before = view.stats().dropped['forged-sender']
    const other = outsider.peerId.toString()
    const hb = { v: HEARTBEAT_VERSION, type: 'heartbeat', peerId: other, incarnation: 1, seq: 1, sentAt: Date.now(), name: 'x', version: '0.1.0', role: 'node', addrs: [], containers: [],
      resources: { memFreeBytes: 0, memTotalBytes: 0, diskFreeBytes: 0 } }
    const member = { peer: other, incarnation: 1, refuted: 0, state: 'alive' as const, by: other, addrs: [] }
    const r = await ask(b, { v: SWIM_VERSION, type: 'sync', heartbeat: JSON.stringify(hb), digest: membersDigest([member]), members: [member] })
    assert.equal(r.type, 'sync')
    assert.equal(view.stats().dropped['forged-sender'], before + 1)
    assert.equal(view.get(other), undefined)
    assert.equal(service.detector.state(other), undefined)
  })

  test('a node sends its member list only when the answer says the lists differ', async () => {
    const requests: SwimRequest[] = []
    let same = true
    await b.handle(SWIM_PROTOCOL, (stream) => {
      void (async () => {
        const signal = AbortSignal.timeout(5000)
        const { request, framed } = await readRequest(stream, signal)
        requests.push(request)
        if (request.type !== 'sync') return await reply(framed, { v: SWIM_VERSION, type: 'ack', changes: [] }, signal)
        // A peer that knows no member but itself, or one whose list is the node's.
        const own = { peer: b.peerId.toString(), incarnation: 1, refuted: 0, state: 'alive' as const, by: b.peerId.toString(), addrs: [] }
        await reply(framed, same ? { v: SWIM_VERSION, type: 'sync', digest: membersDigest(service.detector.snapshot()) } : { v: SWIM_VERSION, type: 'sync', digest: membersDigest([own]), members: [own] }, signal)
      })().catch(() => stream.abort(new Error('test peer')))
    })
    const syncs = (): Array<Extract<SwimRequest, { type: 'sync' }>> => requests.filter((r) => r.type === 'sync')
    const counted = service.syncCounts()
    try {
      service.admitted([b.peerId.toString()])
      for (let i = 0; i < 100 && syncs().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
      assert.ok(syncs().length > 0, 'the node synced')
      assert.ok(syncs().every((r) => r.members === undefined && r.digest === membersDigest(service.detector.snapshot())), 'a sync answered with the same digest carried no list')
      assert.ok(service.syncCounts().same > counted.same)
      requests.length = 0
      same = false
      service.admitted([b.peerId.toString()])
      for (let i = 0; i < 100 && !syncs().some((r) => r.members != null); i++) await new Promise((resolve) => setTimeout(resolve, 20))
      const full = syncs().findIndex((r) => r.members != null)
      assert.ok(full > 0, `a second request carried the list after a first without it: ${JSON.stringify(syncs().map((r) => r.members?.length ?? null))}`)
      assert.equal(syncs()[full - 1]?.members, undefined)
      assert.deepEqual(syncs()[full]?.members?.map((m) => m.peer).sort(), [a.peerId.toString(), b.peerId.toString()].sort())
      assert.ok(service.syncCounts().differed > counted.differed)
    } finally {
      await b.unhandle(SWIM_PROTOCOL)
    }
  })

  test("after all the refusals, members' probes are still answered", async () => {
    const r = await ask(b, { v: SWIM_VERSION, type: 'ping', changes: [] })
    assert.equal(r.type, 'ack')
  })
})
