/**
 * Containers outlive their node: SIGTERM the daemon, the container keeps running and
 * logging; a new daemon on the same data dir adopts it. With --stop-containers-on-exit
 * the node instead leaves nothing behind: no container, no runc state, no log shim,
 * no container cgroup. Needs root and runc.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import { MSC, cgroupsExist, counterValues, destroyAllNodes, startNode, tempDir, waitFor, type TestNode } from '../helpers/node-harness.ts'
import type { ContainerInfo, NodeStatus } from '../../src/api/types.ts'

let bundles = ''
let counter = ''

before(async () => {
  bundles = await tempDir('daemon-restart-bundles')
  counter = path.join(bundles, 'counter')
  const r = await execa(MSC, ['bundle', 'counter', counter, '--interval-ms', '100'], { reject: false })
  assert.equal(r.exitCode, 0, String(r.stderr))
})

after(async () => {
  await destroyAllNodes()
  if (bundles !== '') await fs.rm(bundles, { recursive: true, force: true })
})

/**
 * The process exists and is not a zombie. An exited container's init is reparented
 * to pid 1, which on these machines may not reap it at once; kill(pid, 0) (the
 * harness's isAlive) still succeeds on a zombie.
 */
function isRunning (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

function assertConsecutive (values: number[], what: string): void {
  assert.ok(values.length > 0, `${what}: no output`)
  const firstGap = values.findIndex((v, i) => v !== i + 1)
  assert.equal(firstGap, -1, `${what}: one sequence 1..N, broken at index ${firstGap}: ...${values.slice(Math.max(0, firstGap - 3), firstGap + 3).join(',')}...`)
}

/** Processes whose environment names a log file under `dir` (log shims). */
async function shimsUnder (dir: string): Promise<number[]> {
  const out: number[] = []
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    const environ = await fs.readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '')
    if (environ.split('\0').some((e) => e.startsWith(`MSC_SHIM_LOG=${dir}/`))) out.push(Number(pid))
  }
  return out
}

describe('the daemon restarts under a running container', () => {
  let node: TestNode
  let logFile = ''
  let pid = 0
  let countAtStop = 0
  let cgroupParent = ''

  before(async () => {
    node = await startNode()
    logFile = path.join(node.dataDir, 'containers', 'counter', 'container.log')
  })

  const logged = (): number[] => {
    try {
      return counterValues(readFileSync(logFile, 'utf8'))
    } catch {
      return []
    }
  }

  test('a running counter', async () => {
    const c = await node.json<ContainerInfo>('run', 'counter', counter)
    assert.equal(c.state, 'running')
    pid = c.pid!
    cgroupParent = (await node.json<NodeStatus>('status')).cgroupParent
    await waitFor(() => logged().length >= 5, 10_000, 'the counter to print 5 numbers')
  })

  test('SIGTERM stops the daemon cleanly; the container keeps running and logging', async () => {
    assert.equal(await node.stopDaemon(), 0, `node exit code; log:\n${node.nodeLog().slice(-2000)}`)
    assert.ok(isRunning(pid), 'the container outlived its node')
    assert.ok((await cgroupsExist(`${cgroupParent}/counter`)).length > 0, "the node left its running container's cgroups alone")
    countAtStop = logged().length
    await waitFor(() => logged().length >= countAtStop + 5, 10_000, 'the log to keep growing with no node')
    assert.ok(isRunning(pid))
    const ps = await node.msc('ps')
    assert.equal(ps.exitCode, 3, 'no node to talk to')
    assert.match(ps.stderr, /^msc: no msc node is listening/)
  })

  test('a restarted daemon adopts the container: same pid, running', async () => {
    await node.restartDaemon()
    const list = await node.json<ContainerInfo[]>('ps')
    assert.equal(list.length, 1)
    assert.equal(list[0]!.name, 'counter')
    assert.equal(list[0]!.state, 'running')
    assert.equal(list[0]!.pid, pid)
    assert.equal(list[0]!.bundle, counter)
  })

  test('msc logs shows one sequence 1..N across the restart', async () => {
    const before = logged().length
    await waitFor(() => logged().length >= before + 3, 10_000, 'more output after the restart')
    const values = counterValues((await node.msc('logs', 'counter')).stdout)
    assertConsecutive(values, 'msc logs')
    assert.ok(values.length >= countAtStop + 8, `counted on across the restart (${values.length} values, ${countAtStop} at stop)`)
  })

  test('the adopted container can be stopped by the new daemon', async () => {
    const r = await node.msc('stop', 'counter')
    assert.equal(r.exitCode, 0, r.stderr)
    await waitFor(() => !isRunning(pid), 5_000, 'the container process to end')
    const list = await node.json<ContainerInfo[]>('ps')
    assert.equal(list[0]!.state, 'stopped')
    assert.equal(list[0]!.pid, null)
  })
})

describe('--stop-containers-on-exit', () => {
  let node: TestNode
  let status: NodeStatus
  let pid = 0

  before(async () => {
    node = await startNode({ args: ['--stop-containers-on-exit'] })
    status = await node.json<NodeStatus>('status')
  })

  test('SIGTERM stops the node and its containers, leaving nothing running', async () => {
    const c = await node.json<ContainerInfo>('run', 'c1', counter)
    pid = c.pid!
    assert.ok(isRunning(pid))
    assert.equal((await cgroupsExist(`${status.cgroupParent}/c1`)).length > 0, true, 'the container has cgroups while it runs')
    assert.ok((await shimsUnder(node.dataDir)).length > 0, 'a log shim runs while the container does')

    assert.equal(await node.stopDaemon(), 0, `node exit code; log:\n${node.nodeLog().slice(-2000)}`)
    assert.ok(!isRunning(pid), 'the container process is gone when the node has exited')

    const list = await execa('runc', ['--root', path.join(node.dataDir, 'runc'), 'list', '-q'], { reject: false })
    assert.equal(list.exitCode, 0, String(list.stderr))
    assert.equal(String(list.stdout).trim(), '', 'runc knows no container of this node')

    // The shim ends once the container's pipe closes: give it a moment, no more.
    await waitFor(async () => (await shimsUnder(node.dataDir)).length === 0, 5_000, 'log shims of this node to exit')
  })

  test("no container cgroup is left under the node's cgroup parent", async () => {
    for (const dir of await cgroupsExist(status.cgroupParent)) {
      const children = (await fs.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name)
      assert.deepEqual(children, [], `${dir} holds no container cgroups`)
    }
  })

  test('the node removes its own, now empty, cgroup parent', async () => {
    assert.deepEqual(await cgroupsExist(status.cgroupParent), [])
  })

  test('a restarted node shows the container stopped', async () => {
    await node.restartDaemon()
    const list = await node.json<ContainerInfo[]>('ps')
    assert.equal(list.length, 1)
    assert.equal(list[0]!.name, 'c1')
    assert.equal(list[0]!.state, 'stopped')
    assert.equal(list[0]!.pid, null)
  })
})
