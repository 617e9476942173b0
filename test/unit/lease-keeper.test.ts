/**
 * The lease keeper's timing with a fake clock: the deadline is always before
 * sentAt + leaseMs (by the drift margin, at least minMarginMs), renewals fall due every
 * leaseMs/4 after the last send, a renewal only moves the deadline forward, and the
 * expired list is exactly what is past its deadline.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { LeaseKeeper } from '../../src/failover/lease-keeper.ts'

describe('LeaseKeeper', () => {
  test('the margin: max(leaseMs x driftFraction, minMarginMs); too short a lease is refused', () => {
    assert.equal(new LeaseKeeper({ leaseMs: 10_000, now: () => 0 }).marginMs, 1000)
    assert.equal(new LeaseKeeper({ leaseMs: 2000, now: () => 0 }).marginMs, 300)
    assert.equal(new LeaseKeeper({ leaseMs: 2000, now: () => 0, driftFraction: 0.2, minMarginMs: 100 }).marginMs, 400)
    assert.throws(() => new LeaseKeeper({ leaseMs: 600, now: () => 0 }), /too short/)
    assert.throws(() => new LeaseKeeper({ leaseMs: 6000, now: () => 0, driftFraction: 0.5 }))
  })

  test('the deadline is before sentAt + leaseMs, for any lease length', () => {
    for (const leaseMs of [700, 1000, 3000, 10_000, 60_000]) {
      const k = new LeaseKeeper({ leaseMs, now: () => 0 })
      for (const sentAt of [0, 12.5, 1e6]) {
        const l = k.hold('web', 1, sentAt)
        assert.ok(l.deadline < sentAt + leaseMs, `${leaseMs} ${sentAt}`)
        assert.ok(sentAt + leaseMs - l.deadline >= 300)
        assert.ok(sentAt + leaseMs - l.deadline >= leaseMs * 0.1 - 1e-9)
        assert.equal(k.deadline('web'), l.deadline)
      }
    }
  })

  test('renewals are due every leaseMs/4 after the last send', () => {
    let t = 1000
    const k = new LeaseKeeper({ leaseMs: 2000, now: () => t })
    k.hold('a', 1, 1000)
    k.hold('b', 4, 1200)
    assert.deepEqual(k.due(), [])
    t = 1499
    assert.deepEqual(k.due(), [])
    t = 1500
    assert.deepEqual(k.due(), [{ container: 'a', epoch: 1 }])
    k.sent('a', 1500)
    assert.deepEqual(k.due(1700), [{ container: 'b', epoch: 4 }])
    k.sent('b', 1700)
    assert.deepEqual(k.due(1999), [])
    assert.deepEqual(k.due(2000).map((d) => d.container), ['a'])
    // A send in the past does not move it back.
    k.sent('a', 100)
    assert.deepEqual(k.due(2000).map((d) => d.container), ['a'])
  })

  test('a renewal moves the deadline only forward, and only for the epoch held', () => {
    const k = new LeaseKeeper({ leaseMs: 2000, now: () => 0 })
    k.hold('a', 3, 1000)
    const d0 = k.deadline('a') as number
    assert.equal(d0, 1000 + 2000 - 300)
    assert.equal(k.renewed('a', 3, 1500), true)
    assert.equal(k.deadline('a'), 1500 + 1700)
    // A late answer to an older request: nothing moves back.
    assert.equal(k.renewed('a', 3, 1200), false)
    assert.equal(k.deadline('a'), 3200)
    assert.equal(k.renewed('a', 2, 1800), false)
    assert.equal(k.renewed('nope', 3, 1800), false)
    assert.equal(k.deadline('a'), 3200)
    assert.equal(k.get('a')?.sentAt, 1500)
  })

  test('expired: exactly the leases past their deadline; drop forgets', () => {
    const k = new LeaseKeeper({ leaseMs: 1000, now: () => 0 })
    k.hold('a', 1, 0) // deadline 700
    k.hold('b', 2, 100) // deadline 800
    assert.equal(k.nextDeadline(), 700)
    assert.deepEqual(k.expired(699), [])
    assert.deepEqual(k.expired(700), [{ container: 'a', epoch: 1 }])
    assert.deepEqual(k.expired(800).map((e) => e.container), ['a', 'b'])
    k.renewed('a', 1, 500) // deadline 1200
    assert.deepEqual(k.expired(800).map((e) => e.container), ['b'])
    k.drop('b')
    assert.deepEqual(k.expired(1_000_000).map((e) => e.container), ['a'])
    assert.equal(k.nextDeadline(), 1200)
    assert.deepEqual(k.held().map((l) => [l.container, l.epoch, l.deadline]), [['a', 1, 1200]])
    // Holding again (a new epoch) replaces.
    k.hold('a', 2, 2000)
    assert.deepEqual(k.held().map((l) => [l.container, l.epoch, l.deadline]), [['a', 2, 2700]])
    k.drop('a')
    assert.equal(k.nextDeadline(), undefined)
  })
})
