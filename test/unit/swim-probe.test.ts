/**
 * The SWIM detector (src/overlay/membership/swim-probe.ts) against an in-memory network
 * of detectors with a fake clock: probes, indirect probes, suspicion and its Lifeguard
 * timeout, refutation, local health, and what a member may not say about another.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { EXPECTED_CONFIRMATIONS, MAX_PIGGYBACK, SwimDetector, type SwimChange, type SwimState } from '../../src/overlay/membership/swim-probe.ts'

const INTERVAL = 1000
const TIMEOUT = 500
const MIN = 2500
const MAX = 5000

/** Detectors wired to each other through function calls; links and nodes can be cut. */
class Net {
  clock = 1_000_000
  readonly nodes = new Map<string, SwimDetector>()
  readonly down = new Set<string>()
  /** 'A>B': A's messages do not reach B (and B's answers do not reach A). */
  readonly cut = new Set<string>()
  readonly states: Array<{ at: string; peer: string; state: SwimState }> = []
  readonly verdicts: Array<{ at: string; change: SwimChange }> = []
  readonly acks: string[] = []
  readonly misses: string[] = []

  private reaches (a: string, b: string): boolean {
    return !this.down.has(a) && !this.down.has(b) && !this.cut.has(`${a}>${b}`) && !this.cut.has(`${b}>${a}`)
  }

  add (id: string, incarnation = 1): SwimDetector {
    const d = new SwimDetector({
      selfId: id,
      incarnation,
      probeIntervalMs: INTERVAL,
      probeTimeoutMs: TIMEOUT,
      suspicionMinMs: MIN,
      suspicionMaxMs: MAX,
      now: () => this.clock,
      random: () => 0.5,
      onState: (peer, state) => this.states.push({ at: id, peer, state }),
      onVerdict: (change) => this.verdicts.push({ at: id, change }),
      onAck: (peer) => this.acks.push(`${id}>${peer}`),
      onDirectMiss: (peer) => this.misses.push(`${id}>${peer}`),
      transport: {
        ping: async (target, changes) => {
          if (!this.reaches(id, target)) return null
          const t = this.nodes.get(target)!
          t.receive(changes, id)
          return { ack: true, changes: t.piggyback(id) }
        },
        pingReq: async (via, target, changes) => {
          if (!this.reaches(id, via)) return null
          const v = this.nodes.get(via)!
          v.receive(changes, id)
          let ack = false
          if (this.reaches(via, target)) {
            const t = this.nodes.get(target)!
            t.receive(v.piggyback(target), via)
            v.receive(t.piggyback(via), target)
            ack = true
          }
          return { ack, changes: v.piggyback(id) }
        }
      }
    })
    this.nodes.set(id, d)
    return d
  }

  /** n nodes that all know each other (as their heartbeats would tell them). */
  static full (ids: string[]): Net {
    const net = new Net()
    for (const id of ids) net.add(id)
    for (const a of ids) for (const b of ids) if (a !== b) net.nodes.get(a)!.heard(b, 1)
    net.states.length = 0
    return net
  }

  get (id: string): SwimDetector {
    return this.nodes.get(id)!
  }
}

const change = (peer: string, state: SwimChange['state'], by: string, refuted = 0, incarnation = 1): SwimChange => ({ peer, incarnation, refuted, state, by })

describe('probing', () => {
  test('an answered probe keeps the member alive, reports the ack and leaves health at 0', async () => {
    const net = Net.full(['A', 'B', 'C'])
    await net.get('A').probe('B')
    assert.equal(net.get('A').state('B'), 'alive')
    assert.deepEqual(net.acks, ['A>B'])
    assert.equal(net.get('A').health, 0)
    assert.deepEqual(net.verdicts, [])
    assert.deepEqual(net.misses, [], 'an answered probe has its connection checked by nothing else')
  })

  test('no direct ack, but a helper reaches it: alive, no suspicion', async () => {
    const net = Net.full(['A', 'B', 'C'])
    net.cut.add('A>B')
    await net.get('A').probe('B')
    assert.equal(net.get('A').state('B'), 'alive')
    assert.equal(net.get('A').stats.indirectAcks, 1)
    assert.deepEqual(net.verdicts, [])
    assert.deepEqual(net.misses, ['A>B'], 'the direct path failed: its connection is checked (and replaced if stalled)')
  })

  test("no ack directly nor through any helper: suspect, and the suspicion is this node's verdict", async () => {
    const net = Net.full(['A', 'B', 'C', 'D'])
    net.down.add('B')
    await net.get('A').probe('B')
    assert.equal(net.get('A').state('B'), 'suspect')
    assert.deepEqual(net.verdicts, [{ at: 'A', change: change('B', 'suspect', 'A') }])
    // The helpers answered with nacks: A's own messages get through, health +1 only.
    assert.equal(net.get('A').health, 1)
  })

  test('round robin: every member is probed once in N rounds', async () => {
    const ids = ['A', 'B', 'C', 'D', 'E', 'F']
    const net = Net.full(ids)
    const a = net.get('A')
    const seen = new Set<string>()
    for (let i = 0; i < ids.length - 1; i++) seen.add(a.nextTarget()!)
    assert.deepEqual([...seen].sort(), ['B', 'C', 'D', 'E', 'F'])
  })

  test('dead and left members are not probed', async () => {
    const net = Net.full(['A', 'B', 'C'])
    net.get('A').heard('C', 1, true)
    assert.equal(net.get('A').state('C'), 'left')
    for (let i = 0; i < 4; i++) assert.equal(net.get('A').nextTarget(), 'B')
  })
})

describe('suspicion (Lifeguard)', () => {
  test('the timeout goes from max to min as independent confirmations arrive, scaled by log10(N)', () => {
    const d = Net.full(['A', 'B', 'C', 'D', 'E']).get('A')
    assert.equal(d.suspicionTimeoutMs(0, 5), MAX)
    assert.equal(d.suspicionTimeoutMs(EXPECTED_CONFIRMATIONS, 5), MIN)
    const one = d.suspicionTimeoutMs(1, 5)
    const two = d.suspicionTimeoutMs(2, 5)
    assert.ok(MAX > one && one > two && two > MIN, `${MAX} > ${one} > ${two} > ${MIN}`)
    // Two members only: nobody can confirm, the full timeout applies.
    assert.equal(d.suspicionTimeoutMs(0, 2), MAX)
    // 100 members: twice as long (log10(100) = 2).
    assert.equal(d.suspicionTimeoutMs(0, 100), 2 * MAX)
    assert.equal(d.suspicionTimeoutMs(3, 100), 2 * MIN)
  })

  test('a suspect with no confirmation dies after the full timeout, not before', async () => {
    const net = Net.full(['A', 'B', 'C', 'D', 'E'])
    net.down.add('B')
    const a = net.get('A')
    await a.probe('B')
    net.clock += MAX - 1
    a.tick()
    assert.equal(a.state('B'), 'suspect')
    net.clock += 1
    a.tick()
    assert.equal(a.state('B'), 'dead')
    assert.deepEqual(net.verdicts.at(-1), { at: 'A', change: change('B', 'dead', 'A') })
  })

  test('confirmations from other members, each in its own name, shorten it to the minimum; the dead verdict K + 1 members voiced is then piggy-backed, not published', async () => {
    const net = Net.full(['A', 'B', 'C', 'D', 'E'])
    net.down.add('B')
    const a = net.get('A')
    await a.probe('B')
    for (const by of ['C', 'D', 'E']) a.receive([change('B', 'suspect', by)], by)
    net.clock += MIN
    a.tick()
    assert.equal(a.state('B'), 'dead')
    // A's own suspicion was published; its dead verdict, with A, C, D and E heard (K = 3), is not.
    assert.deepEqual(net.verdicts, [{ at: 'A', change: change('B', 'suspect', 'A') }])
    assert.ok(a.piggyback('C').some((c) => c.peer === 'B' && c.state === 'dead'), 'the dead verdict still rides on probes')
  })

  test("suspect on another's word, then its own probe fails: this node's suspicion counts too, and is published", async () => {
    const net = Net.full(['A', 'B', 'C', 'D'])
    net.down.add('B')
    const a = net.get('A')
    a.receive([change('B', 'suspect', 'C')], 'C')
    assert.deepEqual(net.verdicts, [])
    await a.probe('B')
    assert.deepEqual(net.verdicts, [{ at: 'A', change: change('B', 'suspect', 'A') }])
    // C and A: one confirmation of the first suspicion, of K = 2 expected (N = 4).
    a.receive([change('B', 'suspect', 'D')], 'D')
    net.clock += MIN
    a.tick()
    assert.equal(a.state('B'), 'dead')
  })

  test('a dead verdict on a suspicion fewer than K + 1 members voiced is published', async () => {
    const net = Net.full(['A', 'B', 'C', 'D', 'E'])
    net.down.add('B')
    const d = net.get('D')
    await d.probe('B')
    // Two voices (D's own and C's) of the K + 1 = 4 that would make it redundant.
    d.receive([change('B', 'suspect', 'C')], 'C')
    net.clock += MAX
    d.tick()
    assert.equal(d.state('B'), 'dead')
    assert.deepEqual(net.verdicts.at(-1), { at: 'D', change: change('B', 'dead', 'D') })
  })

  test("suspect on K + 1 members' word, then its own probe fails: counted, not published", async () => {
    const net = Net.full(['A', 'B', 'C', 'D', 'E', 'F'])
    net.down.add('B')
    const a = net.get('A')
    for (const by of ['C', 'D', 'E', 'F']) a.receive([change('B', 'suspect', by)], by)
    await a.probe('B')
    assert.deepEqual(net.verdicts, [])
    assert.equal(a.state('B'), 'suspect')
  })

  test('a suspicion relayed by another member (by is not the sender) does not confirm', async () => {
    const net = Net.full(['A', 'B', 'C', 'D', 'E'])
    net.down.add('B')
    const a = net.get('A')
    await a.probe('B')
    for (const sender of ['C', 'D', 'E']) a.receive([change('B', 'suspect', 'X-' + sender)], sender)
    net.clock += MIN
    a.tick()
    assert.equal(a.state('B'), 'suspect')
  })

  test('a dead verdict heard from another member is only a suspicion here', () => {
    const net = Net.full(['A', 'B', 'C'])
    const a = net.get('A')
    a.receive([change('B', 'dead', 'C')], 'C')
    assert.equal(a.state('B'), 'suspect')
  })

  test('changes about a member at an older order, or about an unknown peer, change nothing', () => {
    const net = Net.full(['A', 'B', 'C'])
    const a = net.get('A')
    a.heard('B', 5) // B restarted: incarnation 5
    a.receive([change('B', 'suspect', 'C', 0, 1), change('Z', 'suspect', 'C')], 'C')
    assert.equal(a.state('B'), 'alive')
    assert.equal(a.state('Z'), undefined)
  })
})

describe('refutation', () => {
  test('a member that hears it is suspected refutes with a higher count, which brings it back everywhere', async () => {
    const net = Net.full(['A', 'B', 'C'])
    net.down.add('B')
    await net.get('A').probe('B')
    net.down.delete('B')
    // A's next probe of B carries the suspicion first (buddy system); B's ack carries the refutation.
    await net.get('A').probe('B')
    assert.equal(net.get('B').refuted, 1)
    assert.equal(net.get('A').state('B'), 'alive')
    assert.ok(net.verdicts.some((v) => v.at === 'B' && v.change.state === 'alive' && v.change.refuted === 1), 'B published its refutation')
    // Refuting costs B local health: it was, as far as others could tell, slow.
    assert.equal(net.get('B').health, 1)
    // A suspicion at the old count is now stale.
    net.get('A').receive([change('B', 'suspect', 'C', 0)], 'C')
    assert.equal(net.get('A').state('B'), 'alive')
  })

  test('a member that already refuted answers a stale suspicion with its refutation again', async () => {
    const net = Net.full(['A', 'B', 'C'])
    const b = net.get('B')
    b.receive([change('B', 'suspect', 'C', 0)], 'C')
    assert.equal(b.refuted, 1)
    // Drain B's queue: its refutation has been sent as often as it will be.
    while (b.piggyback().length > 0) {}
    // A missed it and still holds B suspect at 0: its probe carries that, and B's ack the refutation.
    net.get('A').receive([change('B', 'suspect', 'C', 0)], 'C')
    await net.get('A').probe('B', false)
    assert.equal(b.refuted, 1, 'no new refutation for an old suspicion')
    assert.equal(net.get('A').state('B'), 'alive')
  })

  test('suspects are listed for the extra probe of each round, and that probe asks no helper', async () => {
    const net = Net.full(['A', 'B', 'C', 'D'])
    const a = net.get('A')
    a.receive([change('B', 'suspect', 'C')], 'C')
    assert.deepEqual(a.suspects(), ['B'])
    net.cut.add('A>B')
    await a.probe('B', false)
    assert.equal(a.stats.indirectAcks, 0, 'no ping-req was sent')
    assert.equal(a.state('B'), 'suspect')
  })

  test('only the member itself may bring it back: an alive change from another is ignored', () => {
    const net = Net.full(['A', 'B', 'C'])
    const a = net.get('A')
    a.receive([change('B', 'suspect', 'C')], 'C')
    a.receive([change('B', 'alive', 'B', 1)], 'C')
    assert.equal(a.state('B'), 'suspect')
    a.receive([change('B', 'alive', 'B', 1)], 'B')
    assert.equal(a.state('B'), 'alive')
  })

  test('a suspicion of a past incarnation of this node is not refuted', () => {
    const net = new Net()
    const b = net.add('B', 7)
    b.receive([change('B', 'suspect', 'C', 0, 6)], 'C')
    assert.equal(b.refuted, 0)
  })
})

describe('local health (Lifeguard)', () => {
  test('failed probes stretch the interval and the probe timeout; answered ones bring them back', async () => {
    const net = Net.full(['A', 'B', 'C'])
    const a = net.get('A')
    net.down.add('B')
    net.down.add('C')
    await a.probe('B')
    // No helper answered at all (C is down too): health +2.
    assert.equal(a.health, 2)
    assert.equal(a.intervalMs(), 3 * INTERVAL)
    assert.equal(a.probeTimeoutMs(), 3 * TIMEOUT)
    net.down.clear()
    await a.probe('C')
    await a.probe('C')
    assert.equal(a.health, 0)
    assert.equal(a.intervalMs(), INTERVAL)
  })

  test('health is bounded', async () => {
    const net = Net.full(['A', 'B'])
    net.down.add('B')
    const a = net.get('A')
    for (let i = 0; i < 20; i++) {
      a.receive([change('A', 'suspect', 'B', a.refuted)], 'B')
    }
    assert.equal(a.health, 8)
  })
})

describe('dissemination', () => {
  test('at most MAX_PIGGYBACK changes per message, a suspicion of the receiver first, each sent a bounded number of times', () => {
    const ids = ['A', ...Array.from({ length: 20 }, (_, i) => `P${i}`)]
    const net = Net.full(ids)
    const a = net.get('A')
    for (let i = 1; i < 20; i++) a.receive([change(`P${i}`, 'suspect', 'P0')], 'P0')
    const first = a.piggyback('P7')
    assert.equal(first.length, MAX_PIGGYBACK)
    assert.deepEqual(first[0], change('P7', 'suspect', 'P0'))
    let sends = 0
    while (a.piggyback().length > 0) {
      sends++
      assert.ok(sends < 1000, 'the queue drains')
    }
    // 19 suspicions (and the 20 alive entries heard at the start), each sent 4 * ceil(log10(22)) = 8 times, 8 per message.
    assert.ok(sends <= Math.ceil((19 + 20) * 8 / MAX_PIGGYBACK) + 1, `${sends} messages`)
  })

  test('snapshot lists this node first as alive, with its refutation count', () => {
    const net = Net.full(['A', 'B'])
    const a = net.get('A')
    a.receive([change('A', 'suspect', 'B')], 'B')
    assert.deepEqual(a.snapshot()[0], change('A', 'alive', 'A', 1))
  })
})
