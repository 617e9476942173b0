/**
 * The lease grantor's rules, with a fake monotonic clock and an in-memory store: first
 * grant, renewal (even after expiry), stale epochs, another holder at the same epoch,
 * handovers, failovers (only once expired here and not vetoed by the membership view),
 * a restart that waits a whole lease, persistence before the answer, serialized racing
 * requests, release; and the file store (atomic JSON, corrupt file refused).
 */
import { before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { MAX_EPOCH, signHandover } from '../../src/cluster/handover.ts'
import { fileGrantorStore, LeaseGrantor, MAX_EPOCH_STEP } from '../../src/failover/lease-grantor.ts'
import type { GrantorRecords, GrantorStore, LeaseDecision, LeaseGrantorInit } from '../../src/failover/lease-grantor.ts'

const LEASE = 1000
let kA: PrivateKey
let kB: PrivateKey
let A = ''
let B = ''
let C = ''

before(async () => {
  kA = await generateKeyPair('Ed25519')
  kB = await generateKeyPair('Ed25519')
  A = peerIdFromPrivateKey(kA).toString()
  B = peerIdFromPrivateKey(kB).toString()
  C = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
})

interface MemStore extends GrantorStore {
  disk: GrantorRecords
  saves: number
  delayMs: number
  fail: boolean
}

function memStore (initial: GrantorRecords = {}): MemStore {
  const s: MemStore = {
    disk: structuredClone(initial),
    saves: 0,
    delayMs: 0,
    fail: false,
    async load () {
      return structuredClone(s.disk)
    },
    async save (records) {
      if (s.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, s.delayMs))
      if (s.fail) throw new Error('disk full')
      s.saves++
      s.disk = structuredClone(records)
    }
  }
  return s
}

let t = 0
async function grantor (over: Partial<LeaseGrantorInit> = {}, store = memStore()): Promise<{ g: LeaseGrantor; store: MemStore }> {
  t = 10_000
  const g = new LeaseGrantor({ leaseMs: LEASE, now: () => t, store, ...over })
  await g.start()
  return { g, store }
}

function refused (d: LeaseDecision, reason: string): void {
  assert.equal(d.granted, false, JSON.stringify(d))
  if (!d.granted) assert.equal(d.reason, reason, d.detail)
}

describe('LeaseGrantor', () => {
  test('first request is granted and persisted; the same holder renews without a save', async () => {
    const { g, store } = await grantor()
    assert.deepEqual(await g.decide(A, { container: 'web', epoch: 1 }), { granted: true, expiresInMs: LEASE })
    assert.deepEqual(store.disk, { web: { epoch: 1, holder: A } })
    assert.equal(store.saves, 1)
    t += 600
    assert.deepEqual(await g.decide(A, { container: 'web', epoch: 1 }), { granted: true, expiresInMs: LEASE })
    assert.equal(store.saves, 1)
    assert.deepEqual(g.records(), [{ container: 'web', epoch: 1, holder: A, msLeft: LEASE }])
  })

  test('a renewal is granted even after expiry (nobody took it)', async () => {
    const { g } = await grantor()
    await g.decide(A, { container: 'web', epoch: 1 })
    t += 5 * LEASE
    assert.equal(g.records()[0]?.msLeft, 0)
    assert.equal((await g.decide(A, { container: 'web', epoch: 1 })).granted, true)
    assert.equal(g.records()[0]?.msLeft, LEASE)
  })

  test('bad requests: epoch 0, non-integer, MAX_EPOCH, a jump over 2^20, a bad name', async () => {
    const { g } = await grantor()
    refused(await g.decide(A, { container: 'web', epoch: 0 }), 'bad-request')
    refused(await g.decide(A, { container: 'web', epoch: 1.5 }), 'bad-request')
    refused(await g.decide(A, { container: 'web', epoch: MAX_EPOCH }), 'bad-request')
    refused(await g.decide(A, { container: '../x', epoch: 1 }), 'bad-request')
    assert.equal((await g.decide(A, { container: 'web', epoch: MAX_EPOCH - 1 - MAX_EPOCH_STEP - 1 })).granted, true)
    t += LEASE
    refused(await g.decide(B, { container: 'web', epoch: MAX_EPOCH - 1 }), 'bad-request')
    assert.equal((await g.decide(B, { container: 'web', epoch: MAX_EPOCH - 1 - 1 })).granted, true) // exactly 2^20 more
  })

  test('a lower epoch is stale (told the current epoch and holder); another holder at the same epoch is refused', async () => {
    const { g } = await grantor()
    await g.decide(A, { container: 'web', epoch: 5 })
    const d = await g.decide(B, { container: 'web', epoch: 4 })
    refused(d, 'stale-epoch')
    assert.equal(!d.granted && d.epoch, 5)
    assert.equal(!d.granted && d.holder, A)
    refused(await g.decide(A, { container: 'web', epoch: 4 }), 'stale-epoch')
    refused(await g.decide(B, { container: 'web', epoch: 5 }), 'held')
    t += 10 * LEASE // even long expired: the epoch stays A's
    refused(await g.decide(B, { container: 'web', epoch: 5 }), 'held')
  })

  test('failover: refused while the lease runs here, granted once it expired, persisted', async () => {
    const { g, store } = await grantor({ mayTakeOver: () => true })
    await g.decide(A, { container: 'web', epoch: 1 })
    t += LEASE - 1
    const d = await g.decide(B, { container: 'web', epoch: 2 })
    refused(d, 'lease-live')
    assert.match(!d.granted ? d.detail : '', /runs 1 ms more/)
    t += 1
    assert.equal((await g.decide(B, { container: 'web', epoch: 2 })).granted, true)
    assert.deepEqual(store.disk, { web: { epoch: 2, holder: B } })
    // The old holder renewing its epoch is now stale; B's lease runs a whole lease.
    refused(await g.decide(A, { container: 'web', epoch: 1 }), 'stale-epoch')
    refused(await g.decide(C, { container: 'web', epoch: 3 }), 'lease-live')
  })

  test('failover: the membership view vetoes it while the owner is seen running the container', async () => {
    let alive = true
    const calls: string[] = []
    const { g } = await grantor({ mayTakeOver: (c, h) => {
      calls.push(`${c} ${h}`)
      return !alive
    } })
    await g.decide(A, { container: 'web', epoch: 1 })
    t += LEASE
    refused(await g.decide(B, { container: 'web', epoch: 2 }), 'owner-alive')
    assert.deepEqual(calls, [`web ${A}`])
    alive = false
    assert.equal((await g.decide(B, { container: 'web', epoch: 2 })).granted, true)
  })

  test('failover from a removed holder: still waits out the lease, but the membership view no longer vetoes', async () => {
    const members = new Set([A, B, C])
    const { g } = await grantor({ mayTakeOver: () => false, isMember: (p) => members.has(p) })
    await g.decide(A, { container: 'web', epoch: 1 })
    members.delete(A)
    refused(await g.decide(B, { container: 'web', epoch: 2 }), 'lease-live')
    t += LEASE
    assert.equal((await g.decide(B, { container: 'web', epoch: 2 })).granted, true)
  })

  test('the holder may raise its own epoch while its lease runs', async () => {
    const { g, store } = await grantor({ mayTakeOver: () => false })
    await g.decide(A, { container: 'web', epoch: 1 })
    assert.equal((await g.decide(A, { container: 'web', epoch: 2 })).granted, true)
    assert.deepEqual(store.disk, { web: { epoch: 2, holder: A } })
  })

  test('handover: granted at once when it verifies and moves this lease from the holder to the requester', async () => {
    const { g, store } = await grantor({ mayTakeOver: () => false })
    await g.decide(A, { container: 'web', epoch: 3 })
    const h = await signHandover(kA, { container: 'web', epoch: 4, from: A, to: B, at: 1 })
    refused(await g.decide(C, { container: 'web', epoch: 4, handover: h }), 'bad-handover') // not to C
    refused(await g.decide(B, { container: 'web', epoch: 5, handover: h }), 'bad-handover') // another epoch
    await g.decide(A, { container: 'db', epoch: 3 })
    refused(await g.decide(B, { container: 'db', epoch: 4, handover: h }), 'bad-handover') // another container
    refused(await g.decide(B, { container: 'web', epoch: 4, handover: { ...h, at: 2 } }), 'bad-handover') // does not verify
    const byB = await signHandover(kB, { container: 'web', epoch: 4, from: B, to: B, at: 1 })
    refused(await g.decide(B, { container: 'web', epoch: 4, handover: byB }), 'bad-handover') // not from the holder
    assert.equal((await g.decide(B, { container: 'web', epoch: 4, handover: h })).granted, true)
    assert.deepEqual(store.disk.web, { epoch: 4, holder: B })
    // A replay later changes nothing: the epoch is taken.
    refused(await g.decide(C, { container: 'web', epoch: 4, handover: h }), 'held')
  })

  test('a restart waits a whole lease before letting anyone else take a lease, while the holder keeps renewing', async () => {
    const store = memStore({ web: { epoch: 2, holder: A }, db: { epoch: 7, holder: B } })
    const { g } = await grantor({ mayTakeOver: () => true }, store)
    assert.deepEqual(g.records().map((r) => r.msLeft), [LEASE, LEASE])
    refused(await g.decide(C, { container: 'web', epoch: 3 }), 'lease-live')
    refused(await g.decide(C, { container: 'db', epoch: 8 }), 'lease-live')
    t += LEASE / 2
    assert.equal((await g.decide(B, { container: 'db', epoch: 7 })).granted, true)
    t += LEASE / 2
    assert.equal((await g.decide(C, { container: 'web', epoch: 3 })).granted, true)
    refused(await g.decide(C, { container: 'db', epoch: 8 }), 'lease-live')
  })

  test('the record is persisted before the answer: a slow save delays it; a failed save grants nothing', async () => {
    const { g, store } = await grantor()
    store.delayMs = 150
    let answered = false
    const p = g.decide(A, { container: 'web', epoch: 1 }).then((d) => {
      answered = true
      return d
    })
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal(answered, false)
    assert.deepEqual(store.disk, {})
    assert.equal((await p).granted, true)
    assert.deepEqual(store.disk, { web: { epoch: 1, holder: A } })
    store.delayMs = 0
    store.fail = true
    refused(await g.decide(A, { container: 'db', epoch: 1 }), 'store-failed')
    assert.deepEqual(g.records().map((r) => r.container), ['web'])
    store.fail = false
    // Nothing was recorded: B may have it.
    assert.equal((await g.decide(B, { container: 'db', epoch: 1 })).granted, true)
  })

  test('racing requests for the same epoch: exactly one wins', async () => {
    const { g, store } = await grantor({ mayTakeOver: () => true })
    await g.decide(A, { container: 'web', epoch: 1 })
    t += LEASE
    store.delayMs = 30
    const ds = await Promise.all([B, C, B, C].map(async (p) => await g.decide(p, { container: 'web', epoch: 2 })))
    const winners = ds.filter((d) => d.granted)
    // The first B wins; the second B's request is then a renewal of its own lease.
    assert.deepEqual(ds.map((d) => d.granted), [true, false, true, false])
    assert.equal(winners.length, 2)
    assert.deepEqual(store.disk.web, { epoch: 2, holder: B })
    assert.equal(store.saves, 2)
    for (const d of ds) if (!d.granted) assert.equal(d.reason, 'held')
    // Fresh container, two holders at once.
    const first = await Promise.all([g.decide(B, { container: 'x', epoch: 1 }), g.decide(C, { container: 'x', epoch: 1 })])
    assert.deepEqual(first.map((d) => d.granted).sort(), [false, true])
  })

  test("release: expires the holder's lease at once, keeps the epoch; anyone else's release does nothing", async () => {
    const { g } = await grantor({ mayTakeOver: () => true })
    await g.decide(A, { container: 'web', epoch: 3 })
    assert.equal(await g.release(B, 'web', 3), false)
    assert.equal(await g.release(A, 'web', 2), false)
    refused(await g.decide(B, { container: 'web', epoch: 4 }), 'lease-live')
    assert.equal(await g.release(A, 'web', 3), true)
    assert.equal(g.records()[0]?.msLeft, 0)
    refused(await g.decide(B, { container: 'web', epoch: 3 }), 'held')
    assert.equal((await g.decide(B, { container: 'web', epoch: 4 })).granted, true)
  })
})

describe('fileGrantorStore', () => {
  test('missing file is empty; save and load round-trip, mode 0600, no temp left', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-lease-'))
    try {
      const file = path.join(dir, 'sub', 'leases.json')
      const s = fileGrantorStore(file)
      assert.deepEqual(await s.load(), {})
      await s.save({ web: { epoch: 2, holder: A }, constructor: { epoch: 1, holder: B } })
      assert.deepEqual(await s.load(), { web: { epoch: 2, holder: A }, constructor: { epoch: 1, holder: B } })
      assert.equal((await fs.stat(file)).mode & 0o777, 0o600)
      assert.deepEqual(await fs.readdir(path.dirname(file)), ['leases.json'])
      // A grantor started on it knows the records.
      const g = new LeaseGrantor({ leaseMs: LEASE, now: () => 0, store: s })
      await g.start()
      assert.equal((await g.decide(C, { container: 'web', epoch: 2 })).granted, false)
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })

  test('a corrupt file is an error, not an empty grantor', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-lease-'))
    try {
      const file = path.join(dir, 'leases.json')
      const s = fileGrantorStore(file)
      for (const text of ['{"v":1,"records":{"web":{"epoch":1', '{"v":2,"records":{}}', `{"v":1,"records":{"web":{"epoch":0,"holder":"${A}"}}}`, '']) {
        await fs.writeFile(file, text)
        await assert.rejects(s.load(), /corrupt/)
      }
      const g = new LeaseGrantor({ leaseMs: LEASE, now: () => 0, store: s })
      await assert.rejects(g.start(), /corrupt/)
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

describe('parking, removal and takeovers a grantor cannot judge', () => {
  test('a parked lease is never taken over, however long ago it ran out, until its holder renews it', async () => {
    const { g, store } = await grantor()
    assert.equal((await g.decide(A, { container: 'web', epoch: 1 })).granted, true)
    assert.equal(await g.release(A, 'web', 1, 'park'), true)
    assert.equal(store.disk.web?.parked, true, 'persisted: a restarted grantor still refuses')
    t += 100 * LEASE
    const d = await g.decide(B, { container: 'web', epoch: 2, takeover: true })
    assert.equal(d.granted, false)
    assert.equal(!d.granted && d.reason, 'parked')
    // The holder is back: renewing unparks it, and it runs out as usual from then on.
    assert.equal((await g.decide(A, { container: 'web', epoch: 1 })).granted, true)
    assert.equal(store.disk.web?.parked, undefined)
    t += 2 * LEASE
    assert.equal((await g.decide(B, { container: 'web', epoch: 2, takeover: true })).granted, true)
  })

  test('its holder expiring a parked lease (the container died while the holder was down) frees it for a takeover at once; nobody else can', async () => {
    const { g, store } = await grantor()
    await g.decide(A, { container: 'web', epoch: 1 })
    await g.release(A, 'web', 1, 'park')
    t += 2 * LEASE
    assert.equal(await g.release(B, 'web', 1, 'expire'), false, 'only the holder')
    assert.equal(store.disk.web?.parked, true)
    assert.equal(await g.release(A, 'web', 1, 'expire'), true)
    assert.equal(store.disk.web?.parked, undefined, 'persisted unparked: a restarted grantor judges it like any lease')
    assert.equal((await g.decide(B, { container: 'web', epoch: 2, takeover: true })).granted, true)
  })

  test('a parked lease of a member removed from the cluster can be taken over once it ran out', async () => {
    let members = new Set<string>()
    const { g } = await grantor({ isMember: (p) => members.has(p) })
    members = new Set([A, B])
    await g.decide(A, { container: 'db', epoch: 3 })
    await g.release(A, 'db', 3, 'park')
    t += 2 * LEASE
    assert.equal((await g.decide(B, { container: 'db', epoch: 4, takeover: true })).granted, false)
    members.delete(A)
    assert.equal((await g.decide(B, { container: 'db', epoch: 4, takeover: true })).granted, true)
  })

  test('remove forgets the record: a new container of that name starts afresh', async () => {
    const { g, store } = await grantor()
    await g.decide(A, { container: 'job', epoch: 5 })
    assert.equal(await g.release(A, 'job', 5, 'remove'), true)
    assert.equal(store.disk.job, undefined)
    assert.equal((await g.decide(B, { container: 'job', epoch: 6 })).granted, true)
  })

  test('a takeover of a lease this grantor never granted is refused (unknown-lease); a new container is not', async () => {
    const { g } = await grantor()
    const d = await g.decide(B, { container: 'never', epoch: 2, takeover: true })
    assert.equal(!d.granted && d.reason, 'unknown-lease')
    assert.equal((await g.decide(B, { container: 'never', epoch: 2 })).granted, true)
  })
})

describe('a name another peer owns', () => {
  test('no new lease nor raised epoch for a name the view gives to another peer (not-owner); renewals, handovers and the owner itself pass', async () => {
    const owners = new Map<string, string>()
    const { g } = await grantor({ mayHold: (c, h) => owners.get(c) == null || owners.get(c) === h })
    owners.set('web', A)
    const d = await g.decide(B, { container: 'web', epoch: 9 })
    assert.equal(!d.granted && d.reason, 'not-owner', 'a member squatting a name at a high epoch is refused')
    assert.equal((await g.decide(A, { container: 'web', epoch: 1 })).granted, true, 'the owner gets it')
    assert.equal((await g.decide(A, { container: 'web', epoch: 1 })).granted, true, 'and renews it')
    const h = await signHandover(kA, { container: 'web', epoch: 2, from: A, to: B, at: Date.now() })
    assert.equal((await g.decide(B, { container: 'web', epoch: 2, handover: h })).granted, true, 'a handover from the holder passes')
    owners.set('web', B)
    owners.set('db', B)
    const raised = await g.decide(A, { container: 'db', epoch: 3 })
    assert.equal(!raised.granted && raised.reason, 'not-owner')
  })
})
