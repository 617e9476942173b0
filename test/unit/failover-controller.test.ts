/**
 * The standby's failover decisions against a fake node: who acts when, the order of
 * generations tried, what a refusal or a failed restore leads to, and which replicas
 * are dropped. Pure: a fake clock and a fake port.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { FailoverController, ownerGone, replicaStale, type FailoverEvent, type FailoverPort } from '../../src/failover/failover.ts'
import type { ReplicaMeta } from '../../src/replication/replica-store.ts'
import { silentLogger } from '../../src/util/logger.ts'

const SELF = 'self-peer'
const OWNER = 'owner-peer'
const LEASE = 1000

function meta (over: Partial<ReplicaMeta> = {}): ReplicaMeta {
  return { container: 'web', owner: OWNER, epoch: 3, generations: [7, 8], config: {}, replicas: 1, standbys: [SELF], dumpedAt: 0, receivedAt: 0, ...over }
}

interface Fake {
  port: FailoverPort
  calls: string[]
  events: FailoverEvent[]
  state: { owner: 'alive' | 'suspect' | 'dead' | 'left' | undefined; claim: string | undefined; member: boolean; own: { owner: string | null; epoch: number } | undefined }
  acquire: (name: string, epoch: number) => Promise<unknown>
  restore: (gen: number) => Promise<void>
  replicas: ReplicaMeta[]
  has: boolean
}

function fake (m = meta()): Fake {
  const f: Fake = {
    calls: [],
    events: [],
    state: { owner: 'dead', claim: 'running', member: true, own: { owner: OWNER, epoch: 3 } },
    acquire: async () => ({ epoch: 4, grants: [] }),
    restore: async () => {},
    replicas: [m],
    has: false,
    port: undefined as unknown as FailoverPort
  }
  f.port = {
    selfId: SELF,
    replicas: async () => f.replicas,
    ownerOf: () => f.state.own,
    peerState: () => f.state.owner,
    claimState: () => f.state.claim,
    isMember: () => f.state.member,
    acquire: async (name, epoch) => {
      f.calls.push(`acquire ${name}@${epoch}`)
      return await f.acquire(name, epoch)
    },
    release: async (name) => {
      f.calls.push(`release ${name}`)
    },
    restore: async (mm, gen, epoch) => {
      f.calls.push(`restore ${mm.container} gen ${gen} at ${epoch}`)
      await f.restore(gen)
    },
    drop: async (name) => {
      f.calls.push(`drop ${name}`)
      f.replicas = f.replicas.filter((x) => x.container !== name)
    },
    hasContainer: async () => f.has
  }
  return f
}

/** `ticks` looks, `stepMs` apart on the fake clock; a controller passed in is left running (the caller goes on with it). */
async function run (f: Fake, clock: { t: number }, ticks: number, stepMs = 100, given?: FailoverController): Promise<FailoverController> {
  const ctl = given ?? controller(f, clock)
  for (let i = 0; i < ticks; i++) {
    await ctl.tick()
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setImmediate(resolve))
    clock.t += stepMs
  }
  if (given == null) await ctl.stop()
  return ctl
}

function controller (f: Fake, clock: { t: number }): FailoverController {
  return new FailoverController(f.port, { leaseMs: LEASE, logger: silentLogger(), now: () => clock.t, onEvent: (e) => f.events.push(e), rankDelayMs: 2000 })
}

describe('ownerGone and replicaStale (pure)', () => {
  test('only a dead owner, an alive one that no longer runs it, or a removed one', () => {
    const m = meta()
    const own = { owner: OWNER, epoch: 3 }
    assert.equal(ownerGone(m, own, 'alive', 'running'), null)
    assert.equal(ownerGone(m, own, 'suspect', 'running'), null, 'a suspect is not dead yet')
    assert.equal(ownerGone(m, own, 'left', 'running'), null, 'a node that left on purpose keeps its containers')
    assert.match(ownerGone(m, own, 'dead', 'running') ?? '', /dead/)
    assert.match(ownerGone(m, own, 'alive', 'stopped') ?? '', /no longer runs it/)
    assert.equal(ownerGone(m, { owner: OWNER, epoch: 4 }, 'dead', 'running'), null, "another epoch: not this replica's owner")
    assert.match(ownerGone(m, { owner: null, epoch: 3 }, undefined, undefined, false) ?? '', /removed/)
    assert.equal(ownerGone(m, { owner: null, epoch: 3 }, 'alive', undefined, true), null, 'released by a member (removed by its user): never')
  })

  test('a replica is stale once the cluster holds the container at a newer epoch or elsewhere', () => {
    assert.equal(replicaStale(meta(), { owner: OWNER, epoch: 3 }), null)
    assert.match(replicaStale(meta(), { owner: 'x', epoch: 4 }) ?? '', /epoch 4/)
    assert.match(replicaStale(meta(), { owner: 'x', epoch: 3 }) ?? '', /another node/)
    assert.equal(replicaStale(meta(), undefined), null)
  })
})

describe('FailoverController', () => {
  test('a dead owner: the lease at epoch + 1, then the newest generation, then the replica goes', async () => {
    const f = fake()
    await run(f, { t: 0 }, 3)
    assert.deepEqual(f.calls, ['acquire web@4', 'restore web gen 8 at 4', 'drop web'])
    assert.ok(f.events.some((e) => e.type === 'failover' && e.generation === 8 && e.epoch === 4))
  })

  test('the newest generation fails to restore: the one before; both fail: the lease goes back', async () => {
    const f = fake()
    f.restore = async (gen) => {
      if (gen === 8) throw new Error('criu said no')
    }
    await run(f, { t: 0 }, 2)
    assert.deepEqual(f.calls, ['acquire web@4', 'restore web gen 8 at 4', 'restore web gen 7 at 4', 'drop web'])
    const g = fake()
    g.restore = async () => {
      throw new Error('criu said no')
    }
    await run(g, { t: 0 }, 2)
    assert.deepEqual(g.calls, ['acquire web@4', 'restore web gen 8 at 4', 'restore web gen 7 at 4', 'release web'], 'the lease goes back; the replica stays for another try')
    assert.ok(g.events.some((e) => e.type === 'failover-failed'))
  })

  test('every generation fails: tried again after 10 s and 30 s, then the replica is dropped', async () => {
    const g = fake()
    g.restore = async () => {
      throw new Error('criu said no')
    }
    const round = ['acquire web@4', 'restore web gen 8 at 4', 'restore web gen 7 at 4', 'release web']
    await run(g, { t: 0 }, 450) // 45 s
    assert.deepEqual(g.calls, [...round, ...round, ...round, 'drop web'])
    const failed = g.events.filter((e) => e.type === 'failover-failed').map((e) => (e as { reason: string }).reason)
    assert.equal(failed.length, 3)
    assert.match(failed[0]!, /round 1 of 3, next in 10 s/)
    assert.match(failed[2]!, /replica dropped after 3 rounds/)
  })

  test('a restore that fails once and then succeeds: the container runs, the replica goes', async () => {
    const g = fake()
    let tries = 0
    g.restore = async () => {
      if (tries++ < 2) throw new Error('a passing failure')
    }
    await run(g, { t: 0 }, 150) // 15 s
    assert.deepEqual(g.calls, ['acquire web@4', 'restore web gen 8 at 4', 'restore web gen 7 at 4', 'release web', 'acquire web@4', 'restore web gen 8 at 4', 'drop web'])
    assert.ok(g.events.some((e) => e.type === 'failover' && e.generation === 8))
  })

  test('while it waits to try again, the container failing over elsewhere drops the replica', async () => {
    const g = fake()
    g.restore = async () => {
      throw new Error('criu said no')
    }
    const clock = { t: 0 }
    const ctl = controller(g, clock)
    await run(g, clock, 20, 100, ctl)
    g.state.own = { owner: 'other-standby', epoch: 5 }
    await run(g, clock, 5, 100, ctl)
    await ctl.stop()
    assert.deepEqual(g.calls.slice(-1), ['drop web'])
    assert.equal(g.calls.filter((c) => c.startsWith('acquire')).length, 1)
  })

  test('refused: nothing restored, asked again at most twice a lease', async () => {
    const f = fake()
    f.acquire = async () => {
      throw new Error('lease-live')
    }
    await run(f, { t: 0 }, 20) // 2 s
    assert.ok(f.calls.every((c) => c === 'acquire web@4'), f.calls.join('; '))
    assert.ok(f.calls.length >= 3 && f.calls.length <= 5, `${f.calls.length} requests in 2 s with a 1 s lease`)
  })

  test('an owner alive and running, or gone on purpose: nothing happens', async () => {
    for (const [owner, claim] of [['alive', 'running'], ['left', 'running'], ['suspect', 'running']] as const) {
      const f = fake()
      f.state.owner = owner
      f.state.claim = claim
      await run(f, { t: 0 }, 10)
      assert.deepEqual(f.calls, [], `${owner}/${claim}`)
    }
  })

  test('a standby further down the order waits before asking', async () => {
    const f = fake(meta({ standbys: ['first', SELF] }))
    const clock = { t: 0 }
    await run(f, clock, 15) // 1.5 s < 2 s rank delay
    assert.deepEqual(f.calls, [])
    await run(f, clock, 1)
    assert.deepEqual(f.calls, [], 'a new controller starts its wait over')
    const g = fake(meta({ standbys: ['first', SELF] }))
    await run(g, { t: 0 }, 25)
    assert.equal(g.calls[0], 'acquire web@4')
  })

  test('a stale replica is dropped, one that runs here now too; a container of this node is never restored over', async () => {
    const f = fake()
    f.state.own = { owner: 'other', epoch: 4 }
    await run(f, { t: 0 }, 1)
    assert.deepEqual(f.calls, ['drop web'])
    const g = fake()
    g.state.own = { owner: SELF, epoch: 4 }
    g.has = true
    await run(g, { t: 0 }, 1)
    assert.deepEqual(g.calls, ['drop web'])
    const h = fake()
    h.has = true
    await run(h, { t: 0 }, 3)
    assert.deepEqual(h.calls, [], 'already a container of that name here: no takeover')
  })
})
