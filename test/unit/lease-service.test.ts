/**
 * Three LeaseServices wired in memory: the protocol runs over @libp2p/utils stream
 * pairs through FramedStream, a fake monotonic clock drives the leases, and tick() is
 * called by hand (no timers). Acquiring reaches a quorum, still with one member down,
 * not with two; a second holder at epoch + 1 is refused while the first renews, and
 * granted once the first stopped renewing for a whole lease, after the first fenced
 * itself; release lets the next holder in at once.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { PrivateKey, Stream } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { streamPair } from '@libp2p/utils'
import { LeaseRefusedError } from '../../src/failover/errors.ts'
import { verifyLeaseProof } from '../../src/failover/grant.ts'
import type { GrantorRecords, GrantorStore } from '../../src/failover/lease-grantor.ts'
import { LeaseService, type LeaseGuardPort } from '../../src/failover/lease-service.ts'
import {
  GrantsResponseSchema,
  LeaseRequestSchema,
  MAX_DETAIL_CHARS,
  MAX_LEASE_FRAME,
  MAX_LEASE_ITEMS,
  sanitizeDetail
} from '../../src/failover/lease-messages.ts'
import { MAX_EPOCH } from '../../src/cluster/handover.ts'
import { silentLogger } from '../../src/util/logger.ts'

const LEASE = 1000
let t = 10_000
const down = new Set<string>()
const handlers = new Map<string, (stream: Stream, peer: string) => Promise<void>>()

interface TestNode {
  id: string
  svc: LeaseService
  expired: Array<[string, number]>
  arms: Array<[string, number]>
}
const nodes: TestNode[] = []
let ids: string[] = []

function memStore (): GrantorStore {
  let disk: GrantorRecords = {}
  return { load: async () => structuredClone(disk), save: async (r) => {
    disk = structuredClone(r)
  } }
}

function fakeGuard (arms: Array<[string, number]>): LeaseGuardPort {
  return {
    start: async () => {},
    stop: async () => {},
    arm: async (name, deadline) => {
      arms.push([name, deadline])
    },
    disarm: async () => {},
    clearFenced: async () => {}
  }
}

/** Per dialling peer, how long (real ms) its requests take to reach the grantor. */
const slow = new Map<string, number>()

async function makeNode (key: PrivateKey, opts: { members?: () => string[]; requestTimeoutMs?: number; leaseMs?: number; checks?: Array<[string, number]> } = {}): Promise<TestNode> {
  const id = peerIdFromPrivateKey(key).toString()
  const expired: Array<[string, number]> = []
  const arms: Array<[string, number]> = []
  const svc = new LeaseService({
    selfId: id,
    privateKey: key,
    leaseMs: opts.leaseMs ?? LEASE,
    dataDir: '/nonexistent',
    store: memStore(),
    members: opts.members ?? (() => ids),
    isMember: (p) => (opts.members?.() ?? ids).includes(p),
    requestTimeoutMs: opts.requestTimeoutMs,
    handle: async (_protocol, handler) => {
      handlers.set(id, handler)
    },
    dial: async (peer) => {
      if (down.has(peer) || down.has(id)) throw new Error(`${peer} is unreachable`)
      const handler = handlers.get(peer)
      if (handler == null) throw new Error('no handler')
      const lag = slow.get(id) ?? 0
      if (lag > 0) await new Promise((resolve) => setTimeout(resolve, lag))
      const [a, b] = await streamPair()
      void handler(b, id)
      return a
    },
    ...(opts.checks != null
      ? {
        checkConnection: async (peer: string, timeoutMs: number) => {
          opts.checks?.push([peer, timeoutMs])
        }
      }
      : {}),
    mayTakeOver: () => true,
    onExpired: async (container, epoch) => {
      expired.push([container, epoch])
    },
    guard: fakeGuard(arms),
    logger: silentLogger(),
    now: () => t,
    timers: false
  })
  return { id, svc, expired, arms }
}

let A: TestNode
let B: TestNode
let C: TestNode

before(async () => {
  for (let i = 0; i < 3; i++) nodes.push(await makeNode(await generateKeyPair('Ed25519')))
  ids = nodes.map((n) => n.id)
  ;[A, B, C] = nodes as [TestNode, TestNode, TestNode]
  for (const n of nodes) await n.svc.start()
})

after(async () => {
  for (const n of nodes) await n.svc.stop()
})

/** Refused as soon as a quorum is impossible: with 3 members, after 2 refusals (the third may not be in yet). */
function refusal (reason: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof LeaseRefusedError, String(err))
    assert.ok(err.refusals.length >= 2, JSON.stringify(err.refusals))
    for (const r of err.refusals) assert.equal(r.reason, reason, r.detail)
    assert.equal(err.needed, 2)
    return true
  }
}

describe('LeaseService', () => {
  test('acquire reaches a quorum; the proof verifies; the guard is armed at the deadline', async () => {
    const proof = await A.svc.acquire('c1', 1)
    assert.equal(proof.epoch, 1)
    assert.equal(proof.grants.length, 2)
    assert.equal(verifyLeaseProof(proof, { container: 'c1', epoch: 1, holder: A.id, members: new Set(ids) }), true)
    assert.equal(A.svc.holds('c1'), true)
    assert.deepEqual(A.arms, [['c1', t + LEASE - 300]])
    // The third vote arrives anyway; every grantor recorded A.
    await new Promise((resolve) => setTimeout(resolve, 50))
    for (const n of nodes) assert.deepEqual(n.svc.status().granted, [{ container: 'c1', epoch: 1, holder: A.id, msLeft: LEASE }])
    const st = A.svc.status()
    assert.deepEqual({ ...st, granted: [] }, { leaseMs: LEASE, quorum: 2, members: 3, held: [{ container: 'c1', epoch: 1, msLeft: 700 }], granted: [] })
  })

  test('one member down: still a quorum', async () => {
    down.add(C.id)
    try {
      const proof = await B.svc.acquire('c2', 1)
      assert.deepEqual(proof.grants.map((g) => g.grantor).sort(), [A.id, B.id].sort())
    } finally {
      down.delete(C.id)
    }
  })

  test("two members down: LeaseRefusedError with each member's reason", async () => {
    down.add(B.id)
    down.add(C.id)
    try {
      await assert.rejects(A.svc.acquire('c3', 1), refusal('unreachable'))
      assert.equal(A.svc.holds('c3'), false)
      // A's own vote stays (it could be A's lease of a container running here): it runs out in a lease.
      await new Promise((resolve) => setTimeout(resolve, 20))
      assert.deepEqual(A.svc.status().granted.filter((g) => g.container === 'c3').map((g) => g.msLeft), [LEASE])
    } finally {
      down.delete(B.id)
      down.delete(C.id)
    }
  })

  test('a second holder at epoch + 1 is refused while the first renews, granted after it stopped renewing for a whole lease', async () => {
    const t0 = t
    t = t0 + 300
    await A.svc.tick() // renews c1 (and nothing else is due)
    assert.deepEqual(A.arms.at(-1), ['c1', t0 + 300 + 700])
    await assert.rejects(B.svc.acquire('c1', 2), refusal('lease-live'))

    // A is cut off: its renewals reach only its own grantor.
    down.add(A.id)
    try {
      t = t0 + 600
      await A.svc.tick()
      assert.equal(A.svc.holds('c1'), true)
      assert.deepEqual(A.expired, [])
      t = t0 + 999
      await A.svc.tick()
      assert.deepEqual(A.expired, [])
      t = t0 + 1000 // A's deadline: 300 + 1000 - 300
      await A.svc.tick()
      assert.deepEqual(A.expired, [['c1', 1]])
      assert.equal(A.svc.holds('c1'), false)

      // B and C received A's last renewal at t0 + 300: their leases run until t0 + 1300.
      t = t0 + 1299
      await assert.rejects(B.svc.acquire('c1', 2), (err) => {
        assert.ok(err instanceof LeaseRefusedError)
        assert.equal(err.granted, 0)
        assert.ok(err.refusals.filter((r) => r.reason === 'lease-live').length >= 1, JSON.stringify(err.refusals))
        return true
      })
      t = t0 + 1300
      const proof = await B.svc.acquire('c1', 2)
      assert.equal(verifyLeaseProof(proof, { container: 'c1', epoch: 2, holder: B.id, members: new Set(ids) }), true)
      assert.deepEqual(proof.grants.map((g) => g.grantor).sort(), [B.id, C.id].sort())
    } finally {
      down.delete(A.id)
    }
    // A, back, cannot renew the old epoch (it does not try: it dropped it), nor take it again.
    await assert.rejects(A.svc.acquire('c1', 1), (err) => err instanceof LeaseRefusedError && err.refusals.some((r) => r.reason === 'stale-epoch'))
  })

  test('a lease never renewed is fenced at its deadline', async () => {
    // B took c2 at the start and never ticked since: long past its deadline.
    assert.equal(B.svc.holds('c2'), true)
    await B.svc.tick()
    assert.deepEqual(B.expired, [['c2', 1]])
    assert.equal(B.svc.holds('c2'), false)
    assert.equal(B.svc.holds('c1'), true)
  })

  test('release lets the next holder in at once', async () => {
    await B.svc.acquire('c4', 1)
    await assert.rejects(C.svc.acquire('c4', 2), refusal('lease-live'))
    await B.svc.release('c4')
    assert.equal(B.svc.holds('c4'), false)
    const proof = await C.svc.acquire('c4', 2)
    assert.equal(proof.grants.length, 2)
    assert.equal(C.svc.holds('c4'), true)
  })

  test('the largest messages fit a frame', () => {
    const name = 'n'.repeat(63)
    const peer = '1'.repeat(128)
    const sig = 'A'.repeat(86)
    const epoch = MAX_EPOCH
    const handover = { container: name, epoch, from: peer, to: peer, at: Number.MAX_SAFE_INTEGER, sig }
    const req = { type: 'lease', v: 1, items: Array(MAX_LEASE_ITEMS).fill({ container: name, epoch, handover }) }
    assert.equal(LeaseRequestSchema.safeParse(req).success, true)
    assert.ok(JSON.stringify(req).length < MAX_LEASE_FRAME, `${JSON.stringify(req).length}`)
    const granted = { container: name, epoch, granted: true, grant: { container: name, epoch, holder: peer, grantor: peer, sig }, expiresInMs: 2 ** 31 }
    const refused = { container: name, epoch, granted: false, reason: 'a'.repeat(32), detail: '"'.repeat(MAX_DETAIL_CHARS), currentEpoch: epoch, currentHolder: peer }
    for (const item of [granted, refused]) {
      const res = { type: 'grants', items: Array(MAX_LEASE_ITEMS).fill(item) }
      assert.equal(GrantsResponseSchema.safeParse(res).success, true)
      const bytes = new TextEncoder().encode(JSON.stringify(res)).length
      assert.ok(bytes < MAX_LEASE_FRAME, `${bytes}`)
    }
    assert.equal(sanitizeDetail('é\u0000"x'.repeat(100)).length, MAX_DETAIL_CHARS)
    assert.equal(sanitizeDetail('é\u0000"x'), '??"x')
  })
})

describe('renewals over a slow link', () => {
  // Requests may take 100 ms as a rule; a renewal's answers are worth waiting for until
  // the deadline they would move, as long as the deadline they write is 0.7 s away for
  // the lease guard: with a 2 s lease (margin 0.3 s), 1 s after the send.
  const trio: TestNode[] = []
  let members: string[] = []
  /** The connection checks the holders asked for: [grantor, ping timeout]. */
  const checks: Array<[string, number]> = []
  before(async () => {
    for (let i = 0; i < 3; i++) trio.push(await makeNode(await generateKeyPair('Ed25519'), { members: () => members, requestTimeoutMs: 100, leaseMs: 2_000, checks }))
    members = trio.map((x) => x.id)
    for (const x of trio) await x.svc.start()
  })
  after(async () => {
    for (const x of trio) await x.svc.stop()
  })

  test('a renewal answered after the usual request time, but in time to move its deadline, still renews; never later than the guard allows', async () => {
    const [h] = trio as [TestNode]
    const t0 = t
    await h.svc.acquire('slow', 1)
    // The link recovers slowly (TCP backing off after a cut): answers take 300 ms.
    slow.set(h.id, 300)
    try {
      t = t0 + 500
      await h.svc.tick()
      assert.deepEqual(h.arms.at(-1), ['slow', t0 + 500 + 1_700], 'the late grants moved the deadline')
      assert.deepEqual(h.expired, [])
      // Answers 1.2 s late would write a deadline only 0.5 s ahead: not waited for.
      slow.set(h.id, 1_200)
      t = t0 + 1_000
      await h.svc.tick()
      assert.deepEqual(h.arms.at(-1), ['slow', t0 + 500 + 1_700], 'unchanged')
    } finally {
      slow.delete(h.id)
    }
  })

  test('a grantor silent for half the request time has its connection checked; one that answers in time does not', async () => {
    const [h, g1, g2] = trio as [TestNode, TestNode, TestNode]
    const t0 = t
    await h.svc.acquire('stall', 1)
    checks.length = 0
    t = t0 + 500
    await h.svc.tick()
    assert.equal(checks.length, 0, 'answered at once: nothing checked')
    // A stalled connection: every request sits 300 ms, six times the 50 ms check point.
    slow.set(h.id, 300)
    try {
      t = t0 + 1_000
      await h.svc.tick()
    } finally {
      slow.delete(h.id)
    }
    assert.deepEqual(checks.map(([p]) => p).sort(), [g1.id, g2.id].sort(), 'both grantors, never the holder itself')
    for (const [, timeoutMs] of checks) assert.equal(timeoutMs, 50, 'the pong may take another half request time')
  })
})
