import { test } from 'node:test'
import assert from 'node:assert/strict'
import { overlap, processStart, uptime, type Copy } from '../helpers/copies.ts'

function copy (node: string, startedAt: number, seen: Array<[number, number]>): Copy {
  return { container: 'rb', node, pid: 100, startedAt, seen }
}

test('a copy that started before another was seen, and was seen after, ran at the same time', () => {
  const a = copy('n1', 10, [[20, 20.1], [30, 30.1]])
  const b = copy('n3', 25, [[26, 26.1], [31, 31.1]])
  assert.deepEqual(overlap(a, b), { at: 30 }, "a seen at 30, inside b's life 25..31")
  assert.deepEqual(overlap(b, a), { at: 26 }, "b seen at 26, inside a's life 10..30")
})

test('a move seen by a sequential listing is not a double', () => {
  // Seen on n1 at 20.0, moved, seen on n3 at 20.2 (started at 20.1): n1 never seen again.
  const a = copy('n1', 10, [[19.8, 19.9], [20, 20.05]])
  const b = copy('n3', 20.1, [[20.2, 20.25], [20.4, 20.45]])
  assert.equal(overlap(a, b), null)
})

test('a copy started exactly when the other was last seen is not proven to overlap unless seen after it', () => {
  const a = copy('n1', 10, [[20, 20.1]])
  assert.equal(overlap(a, copy('n3', 20, [[20.05, 20.08]])), null, 'seen again inside the window only')
  assert.deepEqual(overlap(a, copy('n3', 20, [[20.1, 20.2]])), { at: 20 })
})

test('processStart reads this process, and refuses a pid that does not exist', async () => {
  const start = await processStart(process.pid)
  assert.ok(start != null && start > 0 && start <= await uptime())
  assert.equal(await processStart(2 ** 22 + 1), null)
})
