/**
 * Standby choice: rendezvous order per container, the same on every node; members a
 * container's owner must avoid (they refused it for a lasting reason) are passed over
 * while enough others are there, and fill in when not.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chooseStandbys, rankStandbys, standbysToDrop } from '../../src/replication/standby-choice.ts'

const PEERS = ['p1', 'p2', 'p3', 'p4']

test('the order depends on the container, not on the order candidates are listed in', () => {
  assert.deepEqual(rankStandbys('ra', PEERS), rankStandbys('ra', [...PEERS].reverse()))
  const firsts = new Set(Array.from({ length: 40 }, (_, i) => rankStandbys(`c${i}`, PEERS)[0]))
  assert.ok(firsts.size >= 3, `first standbys spread over the members: ${[...firsts].join(', ')}`)
})

test('an avoided member is passed over for the next in order', () => {
  const order = rankStandbys('ra', PEERS)
  assert.deepEqual(chooseStandbys('ra', PEERS, 1), [order[0]])
  assert.deepEqual(chooseStandbys('ra', PEERS, 1, new Set([order[0]!])), [order[1]])
  assert.deepEqual(chooseStandbys('ra', PEERS, 2, new Set([order[0]!])), [order[1], order[2]])
})

test('avoided members fill in, in order, when too few others are left', () => {
  const order = rankStandbys('ra', ['p1', 'p2'])
  assert.deepEqual(chooseStandbys('ra', ['p1', 'p2'], 2, new Set([order[0]!])), [order[1], order[0]])
  assert.deepEqual(chooseStandbys('ra', ['p1'], 1, new Set(['p1'])), ['p1'], 'the only member is still asked')
  assert.deepEqual(chooseStandbys('ra', PEERS, 0), [])
})

test('a replaced standby keeps its replica until every new standby holds a generation', () => {
  // p2 came back and ranks first again: p1, the standby meanwhile, must not drop yet.
  const before = new Map<string, number | null>([['p1', 7], ['p2', null]])
  assert.deepEqual(standbysToDrop(before, ['p2'], 1), [])
  const after = new Map<string, number | null>([['p1', 7], ['p2', 8]])
  assert.deepEqual(standbysToDrop(after, ['p2'], 1), ['p1'])
})

test('a standby the owner cannot reach keeps its replica until its successor holds one', () => {
  // p1 looks dead from the owner; p2 is chosen instead but has nothing yet. A drop sent
  // now would reach p1 once the link is back: maybe when it is the only replica left.
  const current = new Map<string, number | null>([['p1', 7], ['p2', null]])
  assert.deepEqual(standbysToDrop(current, ['p2'], 1), [])
})

test("the owner's own link cut (every member looks dead, nobody chosen): no standby drops", () => {
  const current = new Map<string, number | null>([['p1', 7], ['p2', 7]])
  assert.deepEqual(standbysToDrop(current, [], 2), [])
  // Fewer members reachable than replicas wanted: the one left is not enough either.
  assert.deepEqual(standbysToDrop(current, ['p2'], 2), [])
})

test('with replication off (no replica wanted) every standby drops', () => {
  const current = new Map<string, number | null>([['p1', 7]])
  assert.deepEqual(standbysToDrop(current, [], 0), ['p1'])
})
