/**
 * Foundation acceptance: real runc, real CRIU, one node. What a user checks after a
 * restore: the counter goes on from where the checkpoint caught it (never from 1),
 * and a redis keeps every key.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { execa } from 'execa'
import { ROOT, startNode, destroyAllNodes, tempDir, waitFor, counterValues, freePort, sleep, type TestNode } from '../helpers/node-harness.ts'
import { REDIS_CLI } from '../../src/bundles/redis.ts'

async function lastValue (node: TestNode, name: string): Promise<number> {
  const v = counterValues((await node.msc('logs', name)).stdout)
  return v.at(-1) ?? 0
}

function assertConsecutive (values: number[], what: string): void {
  for (let i = 1; i < values.length; i++) {
    assert.equal(values[i], values[i - 1]! + 1, `${what}: ${values[i - 1]} is followed by ${values[i]} (at ${i}): ${values.join(' ')}`)
  }
}

describe('counter: checkpoint and restore on one node', () => {
  let node: TestNode
  let bundle: string
  before(async () => {
    node = await startNode()
    bundle = path.join(await tempDir('bundle'), 'counter')
    const r = await node.msc('bundle', 'counter', bundle, '--interval-ms', '250')
    assert.equal(r.exitCode, 0, r.stderr)
  })
  after(destroyAllNodes)

  test('checkpoint (keep running), stop, restore: the count resumes from the checkpoint', async () => {
    assert.equal((await node.msc('run', 'c1', bundle)).exitCode, 0)
    await waitFor(async () => await lastValue(node, 'c1') >= 4, 10_000, 'counter to reach 4')
    const before = await lastValue(node, 'c1')
    const cp = await node.json('checkpoint', 'c1')
    const afterCk = await lastValue(node, 'c1')
    assert.equal(cp.leftRunning, true)
    assert.ok(cp.sizeBytes > 0)
    // It kept running: the count goes on past the checkpoint.
    await waitFor(async () => await lastValue(node, 'c1') >= afterCk + 2, 10_000, 'counter to go on after checkpoint')
    assert.equal((await node.json('ps')).find((c: any) => c.name === 'c1').state, 'running')
    assert.equal((await node.msc('stop', 'c1')).exitCode, 0)
    const stoppedAt = (await node.msc('logs', 'c1')).stdout
    const restored = await node.json('restore', 'c1')
    assert.equal(restored.state, 'running')
    await waitFor(async () => counterValues((await node.msc('logs', 'c1')).stdout).length >= counterValues(stoppedAt).length + 4, 10_000, 'restored counter output')

    const all = counterValues((await node.msc('logs', 'c1')).stdout)
    const first = all.slice(0, counterValues(stoppedAt).length)
    const resumed = all.slice(first.length)
    assert.equal(first[0], 1)
    assertConsecutive(first, 'before the restore')
    assertConsecutive(resumed, 'after the restore')
    // The restored process is the checkpointed one: it continues from the value it had
    // when the dump froze it, between what was printed just before and just after.
    assert.notEqual(resumed[0], 1, 'restarted at 1 instead of resuming')
    assert.ok(resumed[0]! >= before + 1 && resumed[0]! <= afterCk + 1, `resumed at ${resumed[0]}, expected within ${before + 1}..${afterCk + 1}`)
  })

  test('checkpoint --stop then restore: one strictly increasing sequence, no restart', async () => {
    assert.equal((await node.msc('run', 'c2', bundle)).exitCode, 0)
    await waitFor(async () => await lastValue(node, 'c2') >= 3, 10_000, 'counter to reach 3')
    const cp = await node.json('checkpoint', 'c2', '--stop')
    assert.equal(cp.leftRunning, false)
    const ps = (await node.json('ps')).find((c: any) => c.name === 'c2')
    assert.equal(ps.state, 'checkpointed')
    assert.equal(ps.pid, null)
    const frozen = await lastValue(node, 'c2')
    await sleep(600) // nothing may be printed while it is checkpointed
    assert.equal(await lastValue(node, 'c2'), frozen, 'the container printed while checkpointed')
    assert.equal((await node.json('restore', 'c2')).state, 'running')
    await waitFor(async () => await lastValue(node, 'c2') >= frozen + 4, 10_000, 'restored counter to go on')
    const all = counterValues((await node.msc('logs', 'c2')).stdout)
    assert.equal(all[0], 1)
    assertConsecutive(all, 'across checkpoint --stop and restore')
    assert.equal((await node.msc('stop', 'c2')).exitCode, 0)
  })

  test('restore --from picks an older checkpoint', async () => {
    const list = await node.json('checkpoints', 'c1')
    assert.ok(list.length >= 1)
    assert.equal((await node.msc('stop', 'c1')).exitCode, 0)
    const r = await node.json('restore', 'c1', '--from', list[0].id)
    assert.equal(r.state, 'running')
    const unknown = await node.msc('restore', 'c2', '--from', 'ck-nope')
    assert.equal(unknown.exitCode, 1)
    assert.match(unknown.stderr, /no checkpoint ck-nope/)
  })
})

describe('redis: 10,000 keys survive checkpoint --stop and restore', () => {
  let node: TestNode
  let port: number
  const cli = (...args: string[]) => execa(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(port), ...args], { reject: false, timeout: 10_000 })
  before(async () => {
    node = await startNode()
    port = await freePort()
    const bundle = path.join(await tempDir('bundle'), 'redis')
    assert.equal((await node.msc('bundle', 'redis', bundle, '--port', String(port), '--bind', '127.0.0.1')).exitCode, 0)
    assert.equal((await node.msc('run', 'redis', bundle)).exitCode, 0)
    await waitFor(async () => String((await cli('PING')).stdout) === 'PONG', 15_000, 'redis to answer')
  })
  after(destroyAllNodes)

  test('all keys present after restore', async () => {
    const pop = await execa('bash', [path.join(ROOT, 'demos/populate-redis.sh'), '-h', '127.0.0.1', '-p', String(port), '10000'], { reject: false })
    assert.equal(pop.exitCode, 0, pop.stderr)
    assert.equal(String((await cli('DBSIZE')).stdout), '10000')
    const cp = await node.json('checkpoint', 'redis', '--stop')
    assert.ok(cp.sizeBytes > 100_000, `images only ${cp.sizeBytes} bytes`)
    assert.notEqual(String((await cli('PING')).stdout), 'PONG', 'redis still answers after checkpoint --stop')
    assert.equal((await node.json('restore', 'redis')).state, 'running')
    await waitFor(async () => String((await cli('PING')).stdout) === 'PONG', 15_000, 'restored redis to answer')
    assert.equal(String((await cli('DBSIZE')).stdout), '10000')
    for (const k of ['1', '2', '5000', '9999', '10000']) assert.equal(String((await cli('GET', k)).stdout), k)
    // It is a live server, not a read-only ghost: it takes writes after the restore.
    assert.equal(String((await cli('SET', 'after', 'restore')).stdout), 'OK')
    assert.equal(String((await cli('GET', 'after')).stdout), 'restore')
  })
})
