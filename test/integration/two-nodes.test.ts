/**
 * Two nodes on one machine (different data dirs) each run a container named `counter`.
 * They must not see or touch each other's: own runc root, own cgroup parent, own logs.
 * Needs root, runc, CRIU (npm run setup).
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { cgroupsExist, counterValues, destroyAllNodes, startNode, tempDir, waitFor, type TestNode } from '../helpers/node-harness.ts'
import type { CheckpointInfo, ContainerInfo, NodeStatus } from '../../src/api/types.ts'

let a: TestNode
let b: TestNode
let bundles = ''
let bundleA = ''
let bundleB = ''

function logOf (n: TestNode): number[] {
  try {
    return counterValues(readFileSync(path.join(n.dataDir, 'containers', 'counter', 'container.log'), 'utf8'))
  } catch {
    return []
  }
}

/** Exists and is not a zombie (pid 1 here may be slow to reap an exited container init). */
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
  assert.deepEqual(values, values.map((_, i) => i + 1), `${what}: one sequence 1..N`)
}

async function only (n: TestNode): Promise<ContainerInfo> {
  const list = await n.json<ContainerInfo[]>('ps')
  assert.equal(list.length, 1, `${n.dataDir}: exactly one container, got ${JSON.stringify(list)}`)
  return list[0]!
}

/** The cgroup paths (per hierarchy) of a process, from /proc/PID/cgroup. */
function cgroupPathsOf (pid: number): string[] {
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').filter(Boolean).map((l) => l.split(':').slice(2).join(':'))
}

before(async () => {
  bundles = await tempDir('two-nodes-bundles')
  bundleA = path.join(bundles, 'a')
  bundleB = path.join(bundles, 'b')
  ;[a, b] = await Promise.all([startNode(), startNode()])
  for (const [n, dir] of [[a, bundleA], [b, bundleB]] as const) {
    const r = await n.msc('bundle', 'counter', dir, '--interval-ms', '200')
    assert.equal(r.exitCode, 0, r.stderr)
  }
})

after(async () => {
  await destroyAllNodes()
  if (bundles !== '') await fs.rm(bundles, { recursive: true, force: true })
})

let sa: NodeStatus
let sb: NodeStatus
let ca: ContainerInfo
let cb: ContainerInfo

test('the two nodes have different ids and cgroup parents', async () => {
  assert.notEqual(a.dataDir, b.dataDir)
  ;[sa, sb] = await Promise.all([a.json<NodeStatus>('status'), b.json<NodeStatus>('status')])
  assert.notEqual(sa.nodeId, sb.nodeId)
  assert.equal(sa.cgroupParent, `msc-${sa.nodeId}`)
  assert.equal(sb.cgroupParent, `msc-${sb.nodeId}`)
  assert.notEqual(sa.cgroupParent, sb.cgroupParent)
})

test('both run a container named "counter" at once, each listing its own', async () => {
  const ra = await a.json<ContainerInfo>('run', 'counter', bundleA)
  const rb = await b.json<ContainerInfo>('run', 'counter', bundleB)
  assert.equal(ra.state, 'running')
  assert.equal(rb.state, 'running', 'the same name is free on the other node') // Each node lists its own, and only its own.
  ;[ca, cb] = await Promise.all([only(a), only(b)])
  assert.equal(ca.name, 'counter')
  assert.equal(cb.name, 'counter')
  assert.equal(ca.state, 'running')
  assert.equal(cb.state, 'running')
  assert.notEqual(ca.pid, cb.pid)
  assert.equal(ca.bundle, bundleA)
  assert.equal(cb.bundle, bundleB)
  assert.ok(isRunning(ca.pid!) && isRunning(cb.pid!))
})

test("each container is in its own node's cgroup parent, under /sys/fs/cgroup/*/", async () => {
  for (const [pid, parent, other] of [[ca.pid!, sa.cgroupParent, sb.cgroupParent], [cb.pid!, sb.cgroupParent, sa.cgroupParent]] as const) {
    const paths = cgroupPathsOf(pid)
    assert.ok(paths.some((p) => p === `/${parent}/counter`), `pid ${pid} in /${parent}/counter: ${paths.join(' ')}`)
    assert.ok(!paths.some((p) => p.includes(other)), `pid ${pid} not under the other node's ${other}`)
    const dirs = await cgroupsExist(parent)
    assert.ok(dirs.length > 0, `${parent} exists under /sys/fs/cgroup/*/`)
    for (const h of ['memory', 'pids', 'freezer']) {
      assert.ok(dirs.includes(`/sys/fs/cgroup/${h}/${parent}`), `${parent} in the ${h} hierarchy: ${dirs.join(' ')}`)
      const procs = readFileSync(`/sys/fs/cgroup/${h}/${parent}/counter/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number)
      assert.ok(procs.includes(pid), `${h}/${parent}/counter holds pid ${pid}`)
    }
  }
})

test('each log counts independently, from 1', async () => {
  await waitFor(() => logOf(a).length >= 5 && logOf(b).length >= 5, 15_000, 'both counters to print 5 numbers')
  assertConsecutive(logOf(a), 'node A log')
  assertConsecutive(logOf(b), 'node B log')
  assertConsecutive(counterValues((await a.msc('logs', 'counter')).stdout), 'msc logs on A')
  assertConsecutive(counterValues((await b.msc('logs', 'counter')).stdout), 'msc logs on B')
})

test("checkpoint --stop and restore on one node leave the other's container untouched", async () => {
  // A is checkpointed and stopped: gone; B keeps its pid and keeps counting.
  const cp = await a.json<CheckpointInfo>('checkpoint', 'counter', '--stop')
  assert.equal(cp.leftRunning, false)
  await waitFor(() => !isRunning(ca.pid!), 10_000, "A's container process to end")
  const aStopped = await only(a)
  assert.equal(aStopped.state, 'checkpointed')
  assert.equal(aStopped.pid, null)
  const aCount = logOf(a).length
  const bCount = logOf(b).length
  await waitFor(() => logOf(b).length >= bCount + 3, 10_000, 'B to keep counting while A is checkpointed')
  assert.equal(logOf(a).length, aCount, 'A printed nothing while checkpointed')
  let bNow = await only(b)
  assert.equal(bNow.state, 'running')
  assert.equal(bNow.pid, cb.pid)
  assert.equal(bNow.checkpoints, 0, "B has no checkpoint of A's")

  // restore on A: it continues its own count; B still untouched.
  const restored = await a.json<ContainerInfo>('restore', 'counter')
  assert.equal(restored.state, 'running')
  assert.notEqual(restored.pid, cb.pid)
  await waitFor(() => logOf(a).length >= aCount + 3, 10_000, 'A to count again after restore')
  assertConsecutive(logOf(a), 'node A log across checkpoint and restore')
  assertConsecutive(logOf(b), 'node B log')
  bNow = await only(b)
  assert.equal(bNow.state, 'running')
  assert.equal(bNow.pid, cb.pid)
  assert.ok(isRunning(cb.pid!))
  assert.deepEqual(await fs.readdir(path.join(b.dataDir, 'containers', 'counter', 'checkpoints')).catch(() => []), [])
  const aNow = await only(a)
  assert.equal(aNow.state, 'running')
  assert.equal(aNow.checkpoints, 1)
  assert.ok(cgroupPathsOf(restored.pid!).includes(`/${sa.cgroupParent}/counter`), "restored into A's own cgroup")
})
