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
  assert.deepEqual(standbysToDrop(before, ['p2'], ['p1', 'p2', 'p3']), [])
  const after = new Map<string, number | null>([['p1', 7], ['p2', 8]])
  assert.deepEqual(standbysToDrop(after, ['p2'], ['p1', 'p2', 'p3']), ['p1'])
})

test('a replaced standby that is no longer live is dropped at once', () => {
  const current = new Map<string, number | null>([['p1', 7], ['p2', null]])
  assert.deepEqual(standbysToDrop(current, ['p2'], ['p2', 'p3']), ['p1'])
})

test('with replication off (nothing chosen) every standby drops', () => {
  const current = new Map<string, number | null>([['p1', 7]])
  assert.deepEqual(standbysToDrop(current, [], ['p1']), ['p1'])
})
