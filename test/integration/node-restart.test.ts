/**
 * A node that dies without warning (SIGKILL: the OOM killer, a crash, `systemctl kill`)
 * takes no container with it: the containers keep running, their log shims keep
 * writing, and a node started again on the same data dir adopts them, with their
 * output reaching `msc logs` before, during and after. (daemon-restart.test.ts covers
 * the orderly SIGTERM stop.) Needs root and runc.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { execa } from 'execa'
import { MSC, counterValues, destroyAllNodes, isAlive, startNode, tempDir, waitFor, type TestNode } from '../helpers/node-harness.ts'
import type { ContainerInfo } from '../../src/api/types.ts'

let counter = ''

before(async () => {
  counter = path.join(await tempDir('node-restart-bundles'), 'counter')
  const r = await execa(MSC, ['bundle', 'counter', counter, '--interval-ms', '100'], { reject: false })
  assert.equal(r.exitCode, 0, String(r.stderr))
})

after(async () => {
  await destroyAllNodes()
})

/** One sequence 1..N, no number lost or repeated. */
function assertConsecutive (values: number[], what: string): void {
  assert.ok(values.length > 0, `${what}: no output`)
  const gap = values.findIndex((v, i) => v !== i + 1)
  assert.equal(gap, -1, `${what}: one sequence 1..N, broken at index ${gap}: ...${values.slice(Math.max(0, gap - 3), gap + 3).join(',')}...`)
}

describe('the node is killed with SIGKILL and started again', () => {
  let node: TestNode
  const pids: Record<string, number> = {}
  let countAtKill = 0

  before(async () => {
    node = await startNode()
  })

  const logged = (name: string): number[] => {
    try {
      return counterValues(readFileSync(path.join(node.dataDir, 'containers', name, 'container.log'), 'utf8'))
    } catch {
      return []
    }
  }
  const viaLogs = async (name: string): Promise<number[]> => {
    const r = await node.msc('logs', name)
    assert.equal(r.exitCode, 0, r.stderr)
    return counterValues(r.stdout)
  }

  test('two counters run and log', async () => {
    for (const name of ['c1', 'c2']) {
      const c = await node.json<ContainerInfo>('run', name, counter)
      assert.equal(c.state, 'running')
      pids[name] = c.pid!
    }
    await waitFor(() => logged('c1').length >= 5 && logged('c2').length >= 5, 10_000, 'both counters to print 5 numbers')
    assert.ok((await viaLogs('c1')).length >= 5)
  })

  test('SIGKILL ends the node at once; the containers keep running and logging', async () => {
    const exited = new Promise<NodeJS.Signals | null>((resolve) => node.proc.once('exit', (_code, signal) => resolve(signal)))
    node.proc.kill('SIGKILL')
    assert.equal(await exited, 'SIGKILL')
    for (const name of ['c1', 'c2']) assert.ok(isAlive(pids[name]!), `${name} outlived its node`)
    countAtKill = logged('c1').length
    await waitFor(() => logged('c1').length >= countAtKill + 5 && logged('c2').length >= countAtKill + 5, 10_000,
      () => `the logs to keep growing with no node (c1 ${logged('c1').length}, c2 ${logged('c2').length}, ${countAtKill} at the kill)`)
    const ps = await node.msc('ps')
    assert.equal(ps.exitCode, 3, 'no node to talk to')
    assert.match(ps.stderr, /^msc: no msc node is listening/)
  })

  test('the node starts again on the same data dir and adopts both: same pids, running', async () => {
    await node.restartDaemon()
    const list = await node.json<ContainerInfo[]>('ps')
    assert.deepEqual(list.map((c) => [c.name, c.state, c.pid]).sort(), [['c1', 'running', pids.c1], ['c2', 'running', pids.c2]])
  })

  test('msc logs shows one sequence 1..N from before the kill to after the restart', async () => {
    for (const name of ['c1', 'c2']) {
      const seen = (await viaLogs(name)).length
      await waitFor(async () => (await viaLogs(name)).length >= seen + 3, 10_000, `${name}: more output through msc logs after the restart`)
      const values = await viaLogs(name)
      assertConsecutive(values, `msc logs ${name}`)
      assert.ok(values.length >= countAtKill + 8, `${name} counted on across the kill (${values.length} values, ${countAtKill} at the kill)`)
    }
  })

  test('the new node controls what it adopted: it stops c1, c2 runs on', async () => {
    const r = await node.msc('stop', 'c1')
    assert.equal(r.exitCode, 0, r.stderr)
    await waitFor(() => !isAlive(pids.c1!), 5_000, 'c1 to end')
    assert.ok(isAlive(pids.c2!), 'c2 untouched')
    const list = await node.json<ContainerInfo[]>('ps')
    assert.deepEqual(list.map((c) => [c.name, c.state]).sort(), [['c1', 'stopped'], ['c2', 'running']])
  })

  test('a second SIGKILL and start: still adopted, still logging', async () => {
    const exited = new Promise((resolve) => node.proc.once('exit', resolve))
    node.proc.kill('SIGKILL')
    await exited
    await node.restartDaemon()
    const c2 = (await node.json<ContainerInfo[]>('ps')).find((c) => c.name === 'c2')
    assert.equal(c2?.state, 'running')
    assert.equal(c2?.pid, pids.c2)
    const seen = (await viaLogs('c2')).length
    await waitFor(async () => (await viaLogs('c2')).length >= seen + 3, 10_000, 'c2: more output after the second restart')
    assertConsecutive(await viaLogs('c2'), 'msc logs c2')
  })
})
