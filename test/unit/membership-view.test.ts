/**
 * The membership view: member states (alive -> suspect -> dead / left, rejoin, forget),
 * replay and staleness checks, and container ownership by epoch, all driven by a fake
 * clock. Every test asserts exact states, counters and event sequences.
 */
import { before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signHandover } from '../../src/cluster/handover.ts'
import type { Handover } from '../../src/cluster/handover.ts'
import { HEARTBEAT_VERSION, MAX_EPOCH, MAX_EPOCH_JUMP } from '../../src/overlay/membership/heartbeat.ts'
import type { ContainerClaim, DropReason, Heartbeat } from '../../src/overlay/membership/heartbeat.ts'
import { MembershipView } from '../../src/overlay/membership/membership-view.ts'
import type { MembershipTimers, MembershipViewInit } from '../../src/overlay/membership/membership-view.ts'

const TIMERS: MembershipTimers = { suspectAfterMs: 3000, deadAfterMs: 5000, forgetAfterMs: 60000, maxAgeMs: 30000 }
const T0 = 1_000_000

let t = T0
let SELF = ''
let A = ''
let B = ''
let C = ''
/** Each peer's libp2p key, to sign handovers with. */
const keys = new Map<string, PrivateKey>()

before(async () => {
  const pairs = await Promise.all([0, 1, 2, 3].map(async () => await generateKeyPair('Ed25519')))
  const ids = pairs.map((k) => peerIdFromPrivateKey(k).toString())
  ;[SELF, A, B, C] = ids as [string, string, string, string]
  assert.equal(new Set(ids).size, 4)
  for (const [i, id] of ids.entries()) keys.set(id, pairs[i]!)
})

/** A handover of `container` at `epoch` from `from` to `to`, signed with `signer`'s key (the owner's by default). */
async function handover (container: string, epoch: number, from: string, to: string, signer = from): Promise<Handover> {
  if (signer === from) return await signHandover(keys.get(from)!, { container, epoch, from, to, at: t })
  // Signed by another key: signHandover refuses that, so sign as the signer and swap `from` back in.
  const h = await signHandover(keys.get(signer)!, { container, epoch, from: signer, to, at: t })
  return { ...h, from }
}

type Recorded =
  | { type: 'member:state'; peerId: string; from: string | null; to: string }
  | { type: 'owner:change'; container: string; from: string | null; to: string | null; epoch: number }
  | { type: 'drop'; peerId: string; reason: DropReason; detail: string }

/** A view on the fake clock, reset to T0, with every event recorded in order. */
function setup (init: Partial<MembershipViewInit> = {}): { view: MembershipView; events: Recorded[]; take: () => Recorded[] } {
  t = T0
  const view = new MembershipView({ selfId: SELF, timers: TIMERS, now: () => t, ...init })
  const events: Recorded[] = []
  view.addEventListener('member:state', (e) => {
    events.push({ type: 'member:state', ...e.detail })
  })
  view.addEventListener('owner:change', (e) => {
    events.push({ type: 'owner:change', ...e.detail })
  })
  view.addEventListener('drop', (e) => {
    events.push({ type: 'drop', ...e.detail })
  })
  /** Returns the events since the last call and forgets them. */
  const take = (): Recorded[] => events.splice(0, events.length)
  return { view, events, take }
}

/** Drop events without their free-text detail, which is asserted separately where it matters. */
function drops (events: Recorded[]): Array<{ peerId: string; reason: DropReason }> {
  return events.flatMap((e) => e.type === 'drop' ? [{ peerId: e.peerId, reason: e.reason }] : [])
}

const ZERO_DROPS: Record<DropReason, number> = {
  oversized: 0,
  malformed: 0,
  version: 0,
  'forged-sender': 0,
  'not-member': 0,
  stale: 0,
  replayed: 0,
  'epoch-regression': 0,
  'owner-conflict': 0,
  'unproven-handover': 0,
  'epoch-jump': 0,
  'claim-limit': 0,
  'claims-digest': 0,
  'claims-page': 0
}

function dropped (view: MembershipView): Record<DropReason, number> {
  return view.stats().dropped
}

function hb (peerId: string, seq: number, over: Partial<Heartbeat> = {}): Heartbeat {
  return {
    v: HEARTBEAT_VERSION,
    type: 'heartbeat',
    peerId,
    incarnation: 100,
    seq,
    sentAt: t,
    name: peerId === A ? 'node-a' : peerId === B ? 'node-b' : peerId === C ? 'node-c' : 'node-self',
    version: '0.1.0',
    role: 'node',
    addrs: ['/ip4/10.0.0.1/tcp/4001'],
    containers: [],
    resources: { memFreeBytes: 1, memTotalBytes: 2, diskFreeBytes: 3 },
    ...over
  }
}

function claim (name: string, epoch: number, state: ContainerClaim['state'] = 'running', h?: Handover): ContainerClaim {
  return h == null ? { name, epoch, state } : { name, epoch, state, handover: h }
}

function owner (view: MembershipView, container: string): { owner: string | null; epoch: number } | undefined {
  const o = view.ownerOf(container)
  return o == null ? undefined : { owner: o.owner, epoch: o.epoch }
}

describe('member states', () => {
  test('a first heartbeat makes a member alive', () => {
    const { view, take } = setup()
    assert.equal(view.ingest(hb(A, 1, { name: 'node-a', addrs: ['/ip4/10.0.0.7/tcp/4001'], role: 'standby' })), true)
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: null, to: 'alive' }])
    const m = view.get(A)
    assert.ok(m != null)
    assert.equal(m.state, 'alive')
    assert.equal(m.name, 'node-a')
    assert.deepEqual(m.addrs, ['/ip4/10.0.0.7/tcp/4001'])
    assert.equal(m.role, 'standby')
    assert.equal(m.lastHeard, T0)
    assert.equal(m.stateSince, T0)
    assert.equal(m.incarnation, 100)
    assert.equal(m.seq, 1)
    assert.equal(m.rttMs, null)
    assert.deepEqual(view.alive().map((x) => x.peerId), [A])
    assert.deepEqual(view.stats(), { accepted: 1, dropped: ZERO_DROPS })
  })

  test('further heartbeats keep it alive without state events', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    take()
    t += 2000
    assert.equal(view.ingest(hb(A, 2, { name: 'renamed' })), true)
    assert.deepEqual(take(), [])
    assert.equal(view.get(A)?.lastHeard, T0 + 2000)
    assert.equal(view.get(A)?.stateSince, T0)
    assert.equal(view.get(A)?.name, 'renamed')
    assert.equal(view.stats().accepted, 2)
  })

  test('silence past suspectAfter makes it suspect on tick(), and tick() asks to confirm it', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    view.ingest(hb(B, 1))
    take()
    t = T0 + 3000 // exactly suspectAfter: not yet
    assert.deepEqual(view.tick(), { confirm: [] })
    assert.equal(view.get(A)?.state, 'alive')
    assert.deepEqual(take(), [])
    view.ingest(hb(B, 2)) // B keeps talking
    t = T0 + 3001
    assert.deepEqual(view.tick(), { confirm: [A] })
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'alive', to: 'suspect' }])
    assert.equal(view.get(A)?.state, 'suspect')
    assert.equal(view.get(A)?.stateSince, T0 + 3001)
    assert.equal(view.get(B)?.state, 'alive')
    assert.deepEqual(view.alive().map((m) => m.peerId), [B])
    // Still suspect on the next tick: asked again, no new event.
    t += 500
    assert.deepEqual(view.tick(), { confirm: [A] })
    assert.deepEqual(take(), [])
  })

  test('confirmAlive brings a suspect back', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    t += 3500
    view.tick()
    take()
    view.confirmAlive(A, 12)
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'suspect', to: 'alive' }])
    const m = view.get(A)
    assert.equal(m?.state, 'alive')
    assert.equal(m?.rttMs, 12)
    assert.equal(m?.lastHeard, T0 + 3500)
    // The confirmation restarted the silence clock.
    t += 3000
    assert.deepEqual(view.tick(), { confirm: [] })
    assert.equal(view.get(A)?.state, 'alive')
  })

  test('a heartbeat also brings a suspect back', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    t += 4000
    view.tick()
    take()
    assert.equal(view.ingest(hb(A, 2)), true)
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'suspect', to: 'alive' }])
    assert.equal(view.get(A)?.state, 'alive')
  })

  test('a suspect silent past deadAfter whose ping failed is dead', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    t = T0 + 3001
    assert.deepEqual(view.tick().confirm, [A])
    view.confirmFailed(A)
    t = T0 + 4999 // failed, but not yet silent for deadAfter
    assert.deepEqual(view.tick(), { confirm: [A] })
    assert.equal(view.get(A)?.state, 'suspect')
    t = T0 + 5000
    assert.deepEqual(view.tick(), { confirm: [] })
    assert.equal(view.get(A)?.state, 'dead')
    assert.equal(view.get(A)?.stateSince, T0 + 5000)
    assert.deepEqual(take(), [
      { type: 'member:state', peerId: A, from: null, to: 'alive' },
      { type: 'member:state', peerId: A, from: 'alive', to: 'suspect' },
      { type: 'member:state', peerId: A, from: 'suspect', to: 'dead' }
    ])
    assert.deepEqual(view.alive(), [])
    // A dead member is no longer asked about.
    t += 1000
    assert.deepEqual(view.tick(), { confirm: [] })
    assert.deepEqual(take(), [])
  })

  test('a suspect whose ping has not failed stays suspect, however long the silence', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    take()
    for (const dt of [3001, 5000, 10_000, 59_000]) {
      t = T0 + dt
      assert.deepEqual(view.tick(), { confirm: [A] }, `at +${dt}`)
      assert.equal(view.get(A)?.state, 'suspect', `at +${dt}`)
    }
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'alive', to: 'suspect' }])
  })

  test('a failed ping is forgotten once the member is heard from again', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    t = T0 + 3001
    view.tick()
    view.confirmFailed(A)
    t = T0 + 4000
    view.ingest(hb(A, 2)) // back to alive, the failure is stale now
    t = T0 + 4000 + 3001
    assert.deepEqual(view.tick(), { confirm: [A] })
    t = T0 + 4000 + 5000
    assert.deepEqual(view.tick(), { confirm: [A] })
    assert.equal(view.get(A)?.state, 'suspect')
    assert.deepEqual(take().map((e) => e.type === 'member:state' ? e.to : e.type), ['alive', 'suspect', 'alive', 'suspect'])
  })

  test('markDisconnected makes an alive member suspect at once', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    take()
    t += 10
    view.markDisconnected(A)
    assert.equal(view.get(A)?.state, 'suspect')
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'alive', to: 'suspect' }])
    assert.deepEqual(view.tick(), { confirm: [A] })
    // Twice, or for an unknown peer: nothing.
    view.markDisconnected(A)
    view.markDisconnected(B)
    assert.deepEqual(take(), [])
    assert.equal(view.get(B), undefined)
    // Disconnected and ping failed, but dead only once silent for deadAfter.
    view.confirmFailed(A)
    t = T0 + 4999
    assert.equal(view.tick().confirm.length, 1)
    t = T0 + 5000
    view.tick()
    assert.equal(view.get(A)?.state, 'dead')
  })

  test('a leave message makes a member left', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    take()
    t += 100
    assert.equal(view.ingest(hb(A, 2, { type: 'leave' })), true)
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'alive', to: 'left' }])
    assert.equal(view.get(A)?.state, 'left')
    assert.deepEqual(view.alive(), [])
    // A left member is neither suspected nor asked about, and a ping does not revive it.
    t += 10_000
    assert.deepEqual(view.tick(), { confirm: [] })
    view.confirmAlive(A, 5)
    view.markDisconnected(A)
    assert.equal(view.get(A)?.state, 'left')
    assert.deepEqual(take(), [])
  })

  test('a leave from a suspect, and from an unknown peer', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    view.markDisconnected(A)
    view.ingest(hb(A, 2, { type: 'leave' }))
    view.ingest(hb(B, 1, { type: 'leave' }))
    assert.deepEqual(take().filter((e) => e.type === 'member:state'), [
      { type: 'member:state', peerId: A, from: null, to: 'alive' },
      { type: 'member:state', peerId: A, from: 'alive', to: 'suspect' },
      { type: 'member:state', peerId: A, from: 'suspect', to: 'left' },
      { type: 'member:state', peerId: B, from: null, to: 'left' }
    ])
  })

  test('a dead member rejoins with a higher seq', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 5))
    t = T0 + 3001
    view.tick()
    view.confirmFailed(A)
    t = T0 + 6000
    view.tick()
    assert.equal(view.get(A)?.state, 'dead')
    take()
    assert.equal(view.ingest(hb(A, 6)), true)
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'dead', to: 'alive' }])
    assert.equal(view.get(A)?.state, 'alive')
    assert.equal(view.get(A)?.stateSince, T0 + 6000)
    // The old failed ping does not count against the rejoined member.
    t = T0 + 6000 + 3001
    assert.deepEqual(view.tick(), { confirm: [A] })
    t = T0 + 6000 + 5000
    assert.deepEqual(view.tick(), { confirm: [A] })
    assert.equal(view.get(A)?.state, 'suspect')
  })

  test('a dead member rejoins with a new incarnation, seq starting over', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 40, { incarnation: 100 }))
    t = T0 + 3001
    view.tick()
    view.confirmFailed(A)
    t = T0 + 5000
    view.tick()
    take()
    assert.equal(view.ingest(hb(A, 0, { incarnation: 200 })), true)
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'dead', to: 'alive' }])
    assert.equal(view.get(A)?.incarnation, 200)
    assert.equal(view.get(A)?.seq, 0)
  })

  test('a left member rejoins with a new incarnation', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 3))
    view.ingest(hb(A, 4, { type: 'leave' }))
    take()
    t += 1000
    assert.equal(view.ingest(hb(A, 0, { incarnation: 101 })), true)
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'left', to: 'alive' }])
  })

  test('replayed heartbeats are dropped, counted and reported', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 10, { incarnation: 100 }))
    take()
    assert.equal(view.ingest(hb(A, 10, { incarnation: 100 })), false) // same seq
    assert.equal(view.ingest(hb(A, 9, { incarnation: 100 })), false) // lower seq
    assert.equal(view.ingest(hb(A, 99, { incarnation: 99 })), false) // older incarnation, whatever the seq
    assert.deepEqual(drops(take()), [
      { peerId: A, reason: 'replayed' },
      { peerId: A, reason: 'replayed' },
      { peerId: A, reason: 'replayed' }
    ])
    assert.deepEqual(view.stats(), { accepted: 1, dropped: { ...ZERO_DROPS, replayed: 3 } })
    assert.equal(view.get(A)?.seq, 10)
    assert.equal(view.get(A)?.incarnation, 100)
    // A replayed leave does not make it leave.
    assert.equal(view.ingest(hb(A, 10, { type: 'leave' })), false)
    assert.equal(view.get(A)?.state, 'alive')
    assert.equal(dropped(view).replayed, 4)
  })

  test('a replayed heartbeat does not revive a dead member', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 3))
    t = T0 + 3001
    view.tick()
    view.confirmFailed(A)
    t = T0 + 5000
    view.tick()
    take()
    assert.equal(view.ingest(hb(A, 3, { sentAt: T0 })), false)
    assert.equal(view.get(A)?.state, 'dead')
    assert.deepEqual(drops(take()), [{ peerId: A, reason: 'replayed' }])
  })

  test('a replayed heartbeat does not refresh liveness', () => {
    const { view } = setup()
    view.ingest(hb(A, 3))
    t = T0 + 2000
    view.ingest(hb(A, 3))
    t = T0 + 3001
    assert.deepEqual(view.tick(), { confirm: [A] })
  })

  test('stale heartbeats (too old or too far in the future) are dropped, counted and reported', () => {
    const { view, take } = setup()
    assert.equal(view.ingest(hb(A, 1, { sentAt: T0 - 30_001 })), false)
    assert.equal(view.ingest(hb(A, 1, { sentAt: T0 + 30_001 })), false)
    assert.equal(view.get(A), undefined)
    const evs = take()
    assert.deepEqual(drops(evs), [{ peerId: A, reason: 'stale' }, { peerId: A, reason: 'stale' }])
    assert.equal(evs.some((e) => e.type === 'member:state'), false)
    assert.deepEqual(view.stats(), { accepted: 0, dropped: { ...ZERO_DROPS, stale: 2 } })
    // maxAge exactly, either way, is still fresh.
    assert.equal(view.ingest(hb(A, 1, { sentAt: T0 - 30_000 })), true)
    assert.equal(view.ingest(hb(A, 2, { sentAt: T0 + 30_000 })), true)
    assert.deepEqual(view.stats(), { accepted: 2, dropped: { ...ZERO_DROPS, stale: 2 } })
    // A stale message from a known member, even with a newer seq, changes nothing.
    view.ingest(hb(A, 3, { type: 'leave', sentAt: T0 - 60_000 }))
    assert.equal(view.get(A)?.state, 'alive')
    assert.equal(view.get(A)?.seq, 2)
    assert.equal(dropped(view).stale, 3)
  })

  test('countDrop counts codec drops and reports them', () => {
    const { view, take } = setup()
    view.countDrop(A, 'malformed', 'seq: expected number')
    view.countDrop(B, 'forged-sender', 'claims someone')
    view.countDrop(B, 'forged-sender', 'claims someone')
    assert.deepEqual(take(), [
      { type: 'drop', peerId: A, reason: 'malformed', detail: 'seq: expected number' },
      { type: 'drop', peerId: B, reason: 'forged-sender', detail: 'claims someone' },
      { type: 'drop', peerId: B, reason: 'forged-sender', detail: 'claims someone' }
    ])
    assert.deepEqual(view.stats(), { accepted: 0, dropped: { ...ZERO_DROPS, malformed: 1, 'forged-sender': 2 } })
    // stats() is a copy.
    view.stats().dropped.malformed = 99
    assert.equal(dropped(view).malformed, 1)
  })

  test('dead and left members are forgotten after forgetAfter', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1))
    view.ingest(hb(B, 1))
    view.ingest(hb(C, 1))
    t = T0 + 3001
    view.tick()
    view.confirmFailed(A)
    t = T0 + 5000
    view.ingest(hb(C, 2))
    view.tick() // A dead at T0+5000
    view.ingest(hb(B, 2, { type: 'leave' })) // B left at T0+5000
    assert.equal(view.get(A)?.state, 'dead')
    assert.equal(view.get(B)?.state, 'left')
    take()
    t = T0 + 5000 + 60_000 // exactly forgetAfter: kept
    view.ingest(hb(C, 3))
    view.tick()
    assert.deepEqual(view.members().map((m) => m.peerId).sort(), [A, B, C].sort())
    t += 1
    view.tick()
    assert.equal(view.get(A), undefined)
    assert.equal(view.get(B), undefined)
    assert.deepEqual(view.members().map((m) => m.peerId), [C])
    assert.deepEqual(take(), []) // forgetting is silent
    // Once forgotten, a new heartbeat is a first one again.
    view.ingest(hb(A, 0, { incarnation: 300 }))
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: null, to: 'alive' }])
  })

  test('heartbeats from selfId are ignored', () => {
    const { view, take } = setup()
    assert.equal(view.ingest(hb(SELF, 1, { containers: [claim('web', 1)] })), false)
    assert.equal(view.ingest(hb(SELF, 2, { type: 'leave' })), false)
    assert.equal(view.ingest(hb(SELF, 3, { sentAt: 0 })), false) // not even counted as stale
    assert.equal(view.get(SELF), undefined)
    assert.deepEqual(view.members(), [])
    assert.equal(view.ownerOf('web'), undefined)
    assert.deepEqual(take(), [])
    assert.deepEqual(view.stats(), { accepted: 0, dropped: ZERO_DROPS })
  })

  test('members() is sorted by name, then peer id', () => {
    const { view } = setup()
    view.ingest(hb(A, 1, { name: 'zeta' }))
    view.ingest(hb(B, 1, { name: 'alpha' }))
    view.ingest(hb(C, 1, { name: 'mid' }))
    assert.deepEqual(view.members().map((m) => m.name), ['alpha', 'mid', 'zeta'])
  })
})

describe('ownership', () => {
  test('a first claim sets the owner at its epoch', () => {
    const { view, take } = setup()
    assert.equal(view.ingest(hb(A, 1, { containers: [claim('web', 3), claim('db', 1, 'paused')] })), true)
    assert.deepEqual(take(), [
      { type: 'member:state', peerId: A, from: null, to: 'alive' },
      { type: 'owner:change', container: 'web', from: null, to: A, epoch: 3 },
      { type: 'owner:change', container: 'db', from: null, to: A, epoch: 1 }
    ])
    assert.deepEqual(view.ownership(), [
      { container: 'db', owner: A, epoch: 1, since: T0 },
      { container: 'web', owner: A, epoch: 3, since: T0 }
    ])
    assert.deepEqual(view.get(A)?.containers, [claim('web', 3), claim('db', 1, 'paused')])
    assert.equal(view.nextEpoch('web'), 4)
    assert.equal(view.nextEpoch('unknown'), 1)
  })

  test('the same owner at the same epoch refreshes without an event', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    take()
    t += 1000
    view.ingest(hb(A, 2, { containers: [claim('web', 3, 'paused')] }))
    assert.deepEqual(take(), [])
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
    assert.deepEqual(view.get(A)?.containers, [claim('web', 3, 'paused')])
    assert.deepEqual(dropped(view), ZERO_DROPS)
  })

  test("a higher epoch from another peer, with the owner's handover, takes the container over", async () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    take()
    view.ingest(hb(B, 1, { containers: [claim('web', 4, 'running', await handover('web', 4, A, B))] }))
    assert.deepEqual(take(), [
      { type: 'member:state', peerId: B, from: null, to: 'alive' },
      { type: 'owner:change', container: 'web', from: A, to: B, epoch: 4 }
    ])
    assert.deepEqual(owner(view, 'web'), { owner: B, epoch: 4 })
    assert.equal(view.nextEpoch('web'), 5)
    // The old owner, still claiming its old epoch, regresses.
    view.ingest(hb(A, 2, { containers: [claim('web', 3)] }))
    assert.deepEqual(drops(take()), [{ peerId: A, reason: 'epoch-regression' }])
    assert.deepEqual(owner(view, 'web'), { owner: B, epoch: 4 })
    assert.deepEqual(view.get(A)?.containers, [])
  })

  test('the same epoch from another peer is an owner conflict', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    view.ingest(hb(B, 1))
    take()
    assert.equal(view.ingest(hb(B, 2, { containers: [claim('web', 3), claim('db', 1)] })), true)
    const evs = take()
    assert.deepEqual(evs.map((e) => e.type === 'drop' ? `drop ${e.peerId === B ? 'B' : '?'} ${e.reason}` : e.type === 'owner:change' ? `owner ${e.container} ${e.to === B ? 'B' : '?'}@${e.epoch}` : e.type), ['drop B owner-conflict',
      'owner db B@1'])
    const d = evs[0]
    assert.ok(d?.type === 'drop')
    assert.match(d.detail, /web at epoch 3 is owned by/)
    assert.ok(d.detail.includes(A))
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
    assert.deepEqual(view.get(B)?.containers, [claim('db', 1)])
    assert.deepEqual(view.stats(), { accepted: 3, dropped: { ...ZERO_DROPS, 'owner-conflict': 1 } })
    // It is counted each time it is repeated.
    view.ingest(hb(B, 3, { containers: [claim('web', 3), claim('db', 1)] }))
    assert.equal(dropped(view)['owner-conflict'], 2)
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
  })

  test('a lower epoch is an epoch regression, and the rest of the heartbeat is still accepted', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 5)] }))
    view.ingest(hb(B, 1))
    t = T0 + 3001
    view.tick()
    assert.equal(view.get(B)?.state, 'suspect')
    take()
    assert.equal(view.ingest(hb(B, 2, { containers: [claim('web', 4), claim('db', 2)] })), true)
    const evs = take()
    assert.deepEqual(evs.map((e) => e.type), ['member:state', 'drop', 'owner:change'])
    assert.deepEqual(evs[0], { type: 'member:state', peerId: B, from: 'suspect', to: 'alive' })
    assert.ok(evs[1]?.type === 'drop')
    assert.equal(evs[1].reason, 'epoch-regression')
    assert.equal(evs[1].peerId, B)
    assert.match(evs[1].detail, /web at epoch 4 < 5/)
    assert.deepEqual(evs[2], { type: 'owner:change', container: 'db', from: null, to: B, epoch: 2 })
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 5 })
    // Liveness and everything else from that heartbeat was taken.
    const m = view.get(B)
    assert.equal(m?.state, 'alive')
    assert.equal(m?.seq, 2)
    assert.equal(m?.lastHeard, T0 + 3001)
    assert.deepEqual(m?.containers, [claim('db', 2)])
    assert.deepEqual(view.stats(), { accepted: 3, dropped: { ...ZERO_DROPS, 'epoch-regression': 1 } })
  })

  test('a container no longer claimed by its owner becomes a tombstone that keeps its epoch', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3), claim('db', 1)] }))
    take()
    t += 1000
    view.ingest(hb(A, 2, { containers: [claim('db', 1)] }))
    assert.deepEqual(take(), [{ type: 'owner:change', container: 'web', from: A, to: null, epoch: 3 }])
    assert.deepEqual(view.ownerOf('web'), { container: 'web', owner: null, epoch: 3, since: T0 + 1000, releasedBy: A })
    assert.equal(view.nextEpoch('web'), 4)
    assert.deepEqual(owner(view, 'db'), { owner: A, epoch: 1 })
    // Another peer takes it at nextEpoch.
    view.ingest(hb(B, 1, { containers: [claim('web', view.nextEpoch('web'))] }))
    assert.deepEqual(take().filter((e) => e.type === 'owner:change'), [{ type: 'owner:change', container: 'web', from: null, to: B, epoch: 4 }])
    assert.deepEqual(owner(view, 'web'), { owner: B, epoch: 4 })
  })

  test('a tombstone re-claimed by its former owner at the same epoch', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    view.ingest(hb(A, 2, { containers: [] }))
    take()
    view.ingest(hb(A, 3, { containers: [claim('web', 3)] }))
    assert.deepEqual(take(), [{ type: 'owner:change', container: 'web', from: null, to: A, epoch: 3 }])
    assert.deepEqual(dropped(view), ZERO_DROPS)
  })

  test('a tombstone cannot be claimed at a lower epoch', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    view.ingest(hb(A, 2, { containers: [] }))
    take()
    view.ingest(hb(B, 1, { containers: [claim('web', 2)] }))
    assert.deepEqual(drops(take()), [{ peerId: B, reason: 'epoch-regression' }])
    assert.deepEqual(owner(view, 'web'), { owner: null, epoch: 3 })
  })

  test('a leave keeps what the leaving node still runs and releases the rest', () => {
    // Containers outlive a node's daemon: its goodbye lists what keeps running there.
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3), claim('db', 7)] }))
    view.ingest(hb(B, 1, { containers: [claim('cache', 1)] }))
    take()
    view.ingest(hb(A, 2, { type: 'leave', containers: [claim('web', 3)] }))
    assert.deepEqual(take(), [
      { type: 'member:state', peerId: A, from: 'alive', to: 'left' },
      { type: 'owner:change', container: 'db', from: A, to: null, epoch: 7 }
    ])
    assert.deepEqual(view.ownership().map((o) => [o.container, o.owner, o.epoch]), [
      ['cache', B, 1],
      ['db', null, 7],
      ['web', A, 3]
    ])
    assert.deepEqual(view.get(A)?.containers.map((c) => c.name), ['web'])
  })

  test('a dead member keeps its containers until someone claims a higher epoch', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    view.ingest(hb(B, 1))
    t = T0 + 3001
    view.ingest(hb(B, 2))
    view.tick()
    view.confirmFailed(A)
    t = T0 + 5000
    view.tick()
    assert.equal(view.get(A)?.state, 'dead')
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
    take()
    // Dead is not gone: without a handover (A cannot sign one) or a grant, B may not take it.
    view.ingest(hb(B, 3, { containers: [claim('web', view.nextEpoch('web'))] }))
    assert.deepEqual(drops(take()), [{ peerId: B, reason: 'unproven-handover' }])
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
  })

  test("a dead member's container is taken with a grant (verifyGrant)", () => {
    const asked: Array<[string, number, string, string | null, number]> = []
    const { view, take } = setup({
      verifyGrant: (c, claimant, current) => {
        asked.push([c.name, c.epoch, claimant, current.owner, current.epoch])
        return claimant === B
      }
    })
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    take()
    view.ingest(hb(C, 1, { containers: [claim('web', 4)] }))
    assert.deepEqual(drops(take()), [{ peerId: C, reason: 'unproven-handover' }])
    view.ingest(hb(B, 1, { containers: [claim('web', 4)] }))
    assert.deepEqual(take().filter((e) => e.type === 'owner:change'), [{ type: 'owner:change', container: 'web', from: A, to: B, epoch: 4 }])
    assert.deepEqual(asked, [['web', 4, C, A, 3], ['web', 4, B, A, 3]])
  })

  test('heartbeats that were dropped do not touch ownership', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 5, { containers: [claim('web', 3)] }))
    take()
    view.ingest(hb(A, 5, { containers: [] })) // replayed: would have released web
    view.ingest(hb(A, 6, { containers: [], sentAt: T0 - 40_000 })) // stale
    assert.deepEqual(drops(take()), [{ peerId: A, reason: 'replayed' }, { peerId: A, reason: 'stale' }])
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
  })

  describe('setLocalClaims (self, same rules)', () => {
    test('claims, refreshes and releases our own containers', () => {
      const { view, take } = setup()
      view.setLocalClaims([claim('web', 1), claim('db', 2)])
      assert.deepEqual(take(), [
        { type: 'owner:change', container: 'web', from: null, to: SELF, epoch: 1 },
        { type: 'owner:change', container: 'db', from: null, to: SELF, epoch: 2 }
      ])
      view.setLocalClaims([claim('web', 1, 'paused'), claim('db', 2)])
      assert.deepEqual(take(), [])
      t += 10
      view.setLocalClaims([claim('db', 2)])
      assert.deepEqual(take(), [{ type: 'owner:change', container: 'web', from: SELF, to: null, epoch: 1 }])
      assert.deepEqual(view.ownerOf('web'), { container: 'web', owner: null, epoch: 1, since: T0 + 10, releasedBy: SELF })
      assert.equal(view.nextEpoch('web'), 2)
      // Our members list never contains ourselves.
      assert.equal(view.get(SELF), undefined)
    })

    test("a higher epoch with the peer's handover takes over its container, and the peer then regresses", async () => {
      const { view, take } = setup()
      view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
      take()
      // Without the handover our own claim is not recorded either (and not counted).
      view.setLocalClaims([claim('web', 4)])
      assert.deepEqual(take(), [])
      assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
      view.setLocalClaims([claim('web', view.nextEpoch('web'), 'running', await handover('web', 4, A, SELF))])
      assert.deepEqual(take(), [{ type: 'owner:change', container: 'web', from: A, to: SELF, epoch: 4 }])
      view.ingest(hb(A, 2, { containers: [claim('web', 3)] }))
      assert.deepEqual(drops(take()), [{ peerId: A, reason: 'epoch-regression' }])
      assert.deepEqual(owner(view, 'web'), { owner: SELF, epoch: 4 })
      // And a peer at our epoch conflicts.
      view.ingest(hb(B, 1, { containers: [claim('web', 4)] }))
      assert.deepEqual(drops(take()), [{ peerId: B, reason: 'owner-conflict' }])
      assert.deepEqual(owner(view, 'web'), { owner: SELF, epoch: 4 })
    })

    test("a lower epoch does not take a peer's container", () => {
      const { view, take } = setup()
      view.ingest(hb(A, 1, { containers: [claim('web', 5)] }))
      take()
      view.setLocalClaims([claim('web', 4)])
      assert.deepEqual(take().filter((e) => e.type === 'owner:change'), [])
      assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 5 })
    })

    test('the same epoch as a peer that owns the container does not take it (owner conflict)', () => {
      const { view, take } = setup()
      view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
      take()
      view.setLocalClaims([claim('web', 3)])
      assert.deepEqual(take().filter((e) => e.type === 'owner:change'), [])
      assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
    })

    test('a tombstone is taken at the next epoch', () => {
      const { view, take } = setup()
      view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
      view.ingest(hb(A, 2, { containers: [] }))
      take()
      view.setLocalClaims([claim('web', view.nextEpoch('web'))])
      assert.deepEqual(take(), [{ type: 'owner:change', container: 'web', from: null, to: SELF, epoch: 4 }])
    })
  })

  describe('reserveLocal (a container being started here)', () => {
    test("a member's claim heard before the new container's record is refused, not taken", () => {
      const { view, take } = setup()
      assert.equal(view.reserveLocal('ctr', view.nextEpoch('ctr')), true)
      assert.deepEqual(take(), [{ type: 'owner:change', container: 'ctr', from: null, to: SELF, epoch: 1 }])
      // Our heartbeat is built before the record is written: the name stays ours.
      view.setLocalClaims([])
      assert.deepEqual(take(), [])
      view.ingest(hb(A, 1, { containers: [claim('ctr', 2)] }))
      assert.deepEqual(drops(take()), [{ peerId: A, reason: 'unproven-handover' }])
      assert.deepEqual(owner(view, 'ctr'), { owner: SELF, epoch: 1 })
    })

    test('once over, the record decides: kept when written, released when the start failed', () => {
      const { view, take } = setup()
      view.reserveLocal('ok', 1)
      view.reserveLocal('failed', 1)
      take()
      view.unreserveLocal('ok')
      view.unreserveLocal('failed')
      view.setLocalClaims([claim('ok', 1)])
      assert.deepEqual(take(), [{ type: 'owner:change', container: 'failed', from: SELF, to: null, epoch: 1 }])
      assert.deepEqual(owner(view, 'ok'), { owner: SELF, epoch: 1 })
    })

    test('a name another peer owns is not reserved (msc run refuses it)', () => {
      const { view, take } = setup()
      view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
      take()
      assert.equal(view.reserveLocal('web', view.nextEpoch('web')), false)
      assert.deepEqual(take(), [])
      assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
    })
  })
})

describe('members only (isMember)', () => {
  test('a heartbeat from a peer that is not a member is dropped before anything else', () => {
    const members = new Set<string>()
    const { view, take } = setup({ isMember: (p) => members.has(p) })
    // Even a stale one is counted as not-member: membership is checked first.
    assert.equal(view.ingest(hb(A, 1, { sentAt: T0 - 60_000, containers: [claim('web', 1)] })), false)
    assert.equal(view.ingest(hb(A, 2, { type: 'leave' })), false)
    assert.equal(view.get(A), undefined)
    assert.equal(view.ownerOf('web'), undefined)
    assert.deepEqual(drops(take()), [{ peerId: A, reason: 'not-member' }, { peerId: A, reason: 'not-member' }])
    assert.deepEqual(view.stats(), { accepted: 0, dropped: { ...ZERO_DROPS, 'not-member': 2 } })
    members.add(A)
    assert.equal(view.ingest(hb(A, 3, { containers: [claim('web', 1)] })), true)
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 1 })
  })

  test('forget() removes a member and releases its names', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3), claim('db', 1)] }))
    take()
    view.forget(A)
    assert.equal(view.get(A), undefined)
    assert.deepEqual(take(), [
      { type: 'owner:change', container: 'web', from: A, to: null, epoch: 3 },
      { type: 'owner:change', container: 'db', from: A, to: null, epoch: 1 }
    ])
    // Released: another member takes it at a higher epoch without a handover.
    view.ingest(hb(B, 1, { containers: [claim('web', 4)] }))
    assert.deepEqual(owner(view, 'web'), { owner: B, epoch: 4 })
  })
})

describe('only an owner hands over', () => {
  test('a claim one epoch above a live owner, without a handover, is refused and changes nothing', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    take()
    assert.equal(view.ingest(hb(B, 1, { containers: [claim('web', 4), claim('db', 1)] })), true)
    const evs = take()
    assert.deepEqual(evs.filter((e) => e.type === 'owner:change'), [{ type: 'owner:change', container: 'db', from: null, to: B, epoch: 1 }])
    const d = evs.find((e) => e.type === 'drop')
    assert.ok(d?.type === 'drop')
    assert.equal(d.reason, 'unproven-handover')
    assert.match(d.detail, /web at epoch 4 is owned by .* at 3: no handover/)
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
    assert.deepEqual(view.get(B)?.containers.map((c) => c.name), ['db'])
    assert.equal(view.nextEpoch('web'), 4)
    assert.equal(dropped(view)['unproven-handover'], 1)
  })

  test("a handover that is not the owner's, not for this claim, or badly signed is refused", async () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    take()
    const bad: Array<[string, Handover, RegExp]> = [
      ['signed by C from C', await handover('web', 4, C, B), /from .*, not from the owner/],
      ['for another claimant', await handover('web', 4, A, C), /handover is for web@4 to /],
      ['for another epoch', await handover('web', 5, A, B), /handover is for web@5/],
      ['for another container', await handover('db', 4, A, B), /handover is for db@4/],
      ["from A, signed with B's key", await handover('web', 4, A, B, B), /signature does not verify/],
      ['from A, its signature altered', { ...await handover('web', 4, A, B), at: t + 1 }, /signature does not verify/]
    ]
    let seq = 1
    for (const [what, h, detail] of bad) {
      view.ingest(hb(B, seq++, { containers: [claim('web', 4, 'running', h)] }))
      const evs = take()
      assert.deepEqual(drops(evs), [{ peerId: B, reason: 'unproven-handover' }], what)
      const d = evs.find((e) => e.type === 'drop')
      assert.ok(d?.type === 'drop')
      assert.match(d.detail, detail, what)
      assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 }, what)
    }
    assert.equal(dropped(view)['unproven-handover'], bad.length)
  })

  test('a handover may skip epochs the owner signed for', async () => {
    const { view } = setup()
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    view.ingest(hb(B, 1, { containers: [claim('web', 9, 'running', await handover('web', 9, A, B))] }))
    assert.deepEqual(owner(view, 'web'), { owner: B, epoch: 9 })
  })

  test('our own container: only a handover signed by us moves it, so a hostile member never causes a fence', async () => {
    const { view, take } = setup()
    // The node's listener fences when a container moves from us to someone else.
    const fenced: string[] = []
    view.addEventListener('owner:change', (e) => {
      if (e.detail.from === SELF && e.detail.to != null && e.detail.to !== SELF) fenced.push(e.detail.container)
    })
    view.setLocalClaims([claim('web', 1)])
    take()
    let seq = 1
    const attempts: Array<[string, ContainerClaim]> = [
      ['no handover', claim('web', 2)],
      ['a handover from A to A', claim('web', 2, 'running', await handover('web', 2, A, A))],
      ['a handover "from us" signed by A', claim('web', 2, 'running', await handover('web', 2, SELF, A, A))],
      ['a handover from us to B', claim('web', 2, 'running', await handover('web', 2, SELF, B))],
      ['an epoch jump', claim('web', 1 + MAX_EPOCH_JUMP + 1)],
      ['the same epoch', claim('web', 1)]
    ]
    for (const [what, c] of attempts) {
      view.ingest(hb(A, seq++, { containers: [c] }))
      assert.equal(take().filter((e) => e.type === 'owner:change').length, 0, what)
      assert.deepEqual(owner(view, 'web'), { owner: SELF, epoch: 1 }, what)
    }
    assert.deepEqual(fenced, [])
    assert.deepEqual(view.stats().dropped, { ...ZERO_DROPS, 'unproven-handover': 4, 'epoch-jump': 1, 'owner-conflict': 1 })
    // Our own handover: the container moves (the migration committed), and the node fences.
    view.ingest(hb(A, seq++, { containers: [claim('web', 2, 'running', await handover('web', 2, SELF, A))] }))
    assert.deepEqual(take().filter((e) => e.type === 'owner:change'), [{ type: 'owner:change', container: 'web', from: SELF, to: A, epoch: 2 }])
    assert.deepEqual(fenced, ['web'])
  })

  test('a grant is asked only when there is no handover; a throwing hook is a refusal', async () => {
    let asked = 0
    const { view, take } = setup({ verifyGrant: () => {
      asked++
      throw new Error('boom')
    } })
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    view.ingest(hb(B, 1, { containers: [claim('web', 4)] }))
    view.ingest(hb(B, 2, { containers: [claim('web', 4, 'running', await handover('web', 4, C, B))] }))
    assert.equal(asked, 1)
    assert.deepEqual(drops(take()), [{ peerId: B, reason: 'unproven-handover' }, { peerId: B, reason: 'unproven-handover' }])
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 3 })
  })

  test('no proof is needed for an unknown name, a tombstone, or the owner raising its own epoch', () => {
    const { view, take } = setup()
    // Unknown: nobody in this view runs it (a view that starts later learns names this way).
    view.ingest(hb(A, 1, { containers: [claim('web', 7), claim('db', 1)] }))
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 7 })
    // The owner raises its own epoch.
    view.ingest(hb(A, 2, { containers: [claim('web', 8), claim('db', 1)] }))
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 8 })
    // Released, then taken by another at a higher epoch.
    view.ingest(hb(A, 3, { containers: [claim('db', 1)] }))
    view.ingest(hb(B, 1, { containers: [claim('web', 9)] }))
    assert.deepEqual(owner(view, 'web'), { owner: B, epoch: 9 })
    assert.deepEqual(drops(take()), [])
  })
})

describe('epoch bounds', () => {
  test('a jump of more than 2^20 above the held epoch is refused', () => {
    const { view, take } = setup()
    view.ingest(hb(A, 1, { containers: [claim('new', MAX_EPOCH_JUMP + 1), claim('ok', MAX_EPOCH_JUMP), claim('web', 5)] }))
    assert.deepEqual(drops(take()), [{ peerId: A, reason: 'epoch-jump' }])
    assert.equal(view.ownerOf('new'), undefined)
    assert.deepEqual(owner(view, 'ok'), { owner: A, epoch: MAX_EPOCH_JUMP })
    // The owner itself raising by more than 2^20: refused, and the name is released (not validly claimed).
    view.ingest(hb(A, 2, { containers: [claim('ok', MAX_EPOCH_JUMP), claim('web', 5 + MAX_EPOCH_JUMP + 1)] }))
    assert.deepEqual(drops(take()), [{ peerId: A, reason: 'epoch-jump' }])
    assert.deepEqual(owner(view, 'web'), { owner: null, epoch: 5 })
    view.ingest(hb(A, 3, { containers: [claim('ok', MAX_EPOCH_JUMP), claim('web', 5 + MAX_EPOCH_JUMP)] }))
    assert.deepEqual(owner(view, 'web'), { owner: A, epoch: 5 + MAX_EPOCH_JUMP })
    assert.equal(dropped(view)['epoch-jump'], 2)
  })

  test('no epoch at or above MAX_EPOCH (2^40) is recorded, so nextEpoch() stays a valid wire epoch', () => {
    assert.equal(MAX_EPOCH, 2 ** 40)
    // Reaching the top takes 2^20 raises with the default jump bound; a wider bound gets there at once.
    const { view, take } = setup({ maxEpochJump: MAX_EPOCH })
    view.ingest(hb(A, 1, { containers: [claim('top', MAX_EPOCH - 1), claim('over', MAX_EPOCH)] }))
    assert.deepEqual(drops(take()), [{ peerId: A, reason: 'epoch-jump' }])
    assert.deepEqual(owner(view, 'top'), { owner: A, epoch: MAX_EPOCH - 1 })
    assert.equal(view.ownerOf('over'), undefined)
    assert.equal(view.nextEpoch('top'), MAX_EPOCH)
    // Released and retaken at nextEpoch: refused, the name is exhausted (and no claim of ours leaves the wire range).
    view.ingest(hb(A, 2, { containers: [] }))
    view.ingest(hb(B, 1, { containers: [claim('top', view.nextEpoch('top'))] }))
    assert.deepEqual(drops(take()), [{ peerId: B, reason: 'epoch-jump' }])
    assert.deepEqual(owner(view, 'top'), { owner: null, epoch: MAX_EPOCH - 1 })
  })
})

describe('bounded state', () => {
  test('claims past maxClaimsPerPeer are dropped as claim-limit, counted one by one, reported twice at most', () => {
    const { view, take } = setup({ maxClaimsPerPeer: 3 })
    view.ingest(hb(A, 1, { containers: ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => claim(n, 1)) }))
    const evs = take()
    assert.deepEqual(evs.filter((e) => e.type === 'owner:change').map((e) => e.type === 'owner:change' ? e.container : ''), ['a', 'b', 'c'])
    const ds = evs.filter((e) => e.type === 'drop')
    assert.deepEqual(ds.map((e) => e.type === 'drop' ? e.reason : ''), ['claim-limit', 'claim-limit'])
    assert.ok(ds[0]?.type === 'drop' && /^d: .* already holds 3 names/.test(ds[0].detail))
    assert.ok(ds[1]?.type === 'drop' && ds[1].detail === '2 more claims in this heartbeat: e, f')
    assert.equal(dropped(view)['claim-limit'], 3)
    assert.deepEqual(view.get(A)?.containers.map((c) => c.name), ['a', 'b', 'c'])
    assert.deepEqual(view.records(), { owned: 3, tombstones: 0 })
  })

  test('a tombstone is pruned by tick() once older than tombstoneTtlMs: the name is unknown again', () => {
    const { view, take } = setup({ tombstoneTtlMs: 60_000 })
    view.ingest(hb(A, 1, { containers: [claim('web', 3), claim('db', 1)] }))
    t += 1000
    view.ingest(hb(A, 2, { containers: [claim('db', 1)] })) // web released at T0 + 1000
    t += 10_000
    view.ingest(hb(A, 3, { containers: [] })) // db released at T0 + 11000
    take()
    assert.deepEqual(view.records(), { owned: 0, tombstones: 2 })
    t = T0 + 1000 + 60_000
    view.tick()
    assert.deepEqual(owner(view, 'web'), { owner: null, epoch: 3 })
    t += 1
    view.tick()
    assert.equal(view.ownerOf('web'), undefined)
    assert.equal(view.nextEpoch('web'), 1)
    assert.deepEqual(owner(view, 'db'), { owner: null, epoch: 1 })
    assert.deepEqual(view.records(), { owned: 0, tombstones: 1 })
    t = T0 + 11_000 + 60_001
    view.tick()
    assert.deepEqual(view.records(), { owned: 0, tombstones: 0 })
    // Pruning is silent.
    assert.deepEqual(take().filter((e) => e.type !== 'member:state'), [])
  })

  test('a retaken tombstone is no longer pruned', () => {
    const { view } = setup({ tombstoneTtlMs: 1000 })
    view.ingest(hb(A, 1, { containers: [claim('web', 3)] }))
    view.ingest(hb(A, 2, { containers: [] }))
    view.ingest(hb(B, 1, { containers: [claim('web', 4)] }))
    t += 5000
    view.tick()
    assert.deepEqual(owner(view, 'web'), { owner: B, epoch: 4 })
  })

  test('at most maxTombstonesPerPeer tombstones per releasing peer, oldest pruned first', () => {
    const { view } = setup({ maxTombstonesPerPeer: 2 })
    view.ingest(hb(B, 1, { containers: [claim('b1', 1)] }))
    view.ingest(hb(B, 2, { containers: [] }))
    let seq = 1
    for (const n of ['x1', 'x2', 'x3', 'x4']) {
      view.ingest(hb(A, seq++, { containers: [claim(n, 5)] }))
      t += 10
    }
    view.ingest(hb(A, seq++, { containers: [] }))
    // A released x1..x3 one after the other, then x4: only its last two remain.
    assert.equal(view.ownerOf('x1'), undefined)
    assert.equal(view.ownerOf('x2'), undefined)
    assert.deepEqual(owner(view, 'x3'), { owner: null, epoch: 5 })
    assert.deepEqual(owner(view, 'x4'), { owner: null, epoch: 5 })
    // Another peer's tombstones are not touched by A's.
    assert.deepEqual(owner(view, 'b1'), { owner: null, epoch: 1 })
    assert.deepEqual(view.records(), { owned: 0, tombstones: 3 })
  })

  test('a flood of claims from one member keeps records and work per heartbeat bounded', () => {
    // 400 heartbeats, one a second, each naming 512 new containers (the figures).
    const { view } = setup()
    const perHeartbeat = 512
    const work: number[] = []
    let maxOwned = 0
    let maxTombstones = 0
    for (let i = 1; i <= 400; i++) {
      t += 1000
      const before = view.work
      view.ingest(hb(A, i, { containers: Array.from({ length: perHeartbeat }, (_, j) => claim(`c${i}-${j}`, 1)) }))
      view.tick()
      work.push(view.work - before)
      const r = view.records()
      maxOwned = Math.max(maxOwned, r.owned)
      maxTombstones = Math.max(maxTombstones, r.tombstones)
    }
    const r = view.records()
    // 400 x 512 = 204,800 names seen; held: the last heartbeat's 512 and 1024 tombstones.
    assert.deepEqual(r, { owned: 512, tombstones: 1024 })
    assert.ok(maxOwned <= 512 && maxTombstones <= 1024, `max ${maxOwned} owned, ${maxTombstones} tombstones`)
    assert.equal(view.ownership().length, 1536)
    // Work per heartbeat: its 512 claims, the 1024 names the sender then owns (512 kept,
    // 512 released), the 512 tombstones pushed out. Constant once the bound is reached:
    // the last heartbeat costs what the fourth did, whatever was seen before.
    assert.deepEqual(work.slice(0, 4), [512 + 512, 512 + 1024, 512 + 1024, 512 + 1024 + 512])
    assert.ok(work.slice(3).every((w) => w === 512 * 4), `work per heartbeat: ${[...new Set(work)].join(', ')}`)
    assert.deepEqual(dropped(view), ZERO_DROPS)
    // And a claim from anyone else is still judged in O(1).
    const before = view.work
    view.ingest(hb(B, 1, { containers: [claim('web', 1)] }))
    assert.equal(view.work - before, 2) // its claim, and the one name it then owns
    // Ten minutes on, the tombstones are gone; what A still claims stays.
    t += 10 * 60_000 + 1
    view.tick()
    assert.deepEqual(view.records(), { owned: 513, tombstones: 0 })
  })
})

describe('verdicts from a failure detector (externalVerdicts)', () => {
  test('a heartbeat makes a new member alive but does not bring back a suspect or dead one of the same incarnation', () => {
    const { view, take } = setup({ externalVerdicts: true })
    view.ingest(hb(A, 1))
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: null, to: 'alive' }])
    view.setVerdict(A, 'suspect')
    view.ingest(hb(A, 2))
    assert.equal(view.get(A)?.state, 'suspect')
    view.setVerdict(A, 'dead')
    view.ingest(hb(A, 3))
    assert.equal(view.get(A)?.state, 'dead')
    assert.deepEqual(take(), [
      { type: 'member:state', peerId: A, from: 'alive', to: 'suspect' },
      { type: 'member:state', peerId: A, from: 'suspect', to: 'dead' }
    ])
    // A restart (a new incarnation) is alive at once.
    view.ingest(hb(A, 1, { incarnation: 101 }))
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'dead', to: 'alive' }])
  })

  test('silence makes nobody suspect; heard() updates lastHeard and rtt only; a left member stays left', () => {
    const { view, take } = setup({ externalVerdicts: true })
    view.ingest(hb(A, 1))
    take()
    t += TIMERS.deadAfterMs * 10
    view.tick()
    assert.equal(view.get(A)?.state, 'alive')
    view.heard(A, 7)
    assert.equal(view.get(A)?.lastHeard, t)
    assert.equal(view.get(A)?.rttMs, 7)
    view.ingest(hb(A, 2, { type: 'leave' }))
    view.setVerdict(A, 'alive')
    view.setVerdict(A, 'dead')
    assert.equal(view.get(A)?.state, 'left')
    assert.deepEqual(take(), [{ type: 'member:state', peerId: A, from: 'alive', to: 'left' }])
  })
})
