/**
 * A container asks its node for a checkpoint through the request socket it
 * bind-mounts at /run/msc.sock (docs/container-requests.md), and still restores
 * with that mount in place.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import { startNode, destroyAllNodes, tempDir, waitFor, counterValues, type TestNode } from '../helpers/node-harness.ts'

let node: TestNode
let bundle: string
before(async () => {
  node = await startNode()
  bundle = path.join(await tempDir('bundle'), 'counter')
  assert.equal((await node.msc('bundle', 'counter', bundle, '--interval-ms', '250')).exitCode, 0)
  const cfgPath = path.join(bundle, 'config.json')
  const cfg = JSON.parse(await fs.readFile(cfgPath, 'utf8'))
  cfg.mounts.push({ destination: '/run/msc.sock', type: 'bind', source: '/run/msc.sock', options: ['bind'] })
  await fs.writeFile(cfgPath, JSON.stringify(cfg))
})
after(destroyAllNodes)

test('CHECKPOINT from inside the container writes a checkpoint; restore works with the socket mounted', async () => {
  assert.equal((await node.msc('run', 'c1', bundle)).exitCode, 0, 'run with the request socket mounted')
  const status = await node.json('status')
  // A process in the container's cgroup speaks for the container (the node knows the
  // sender by its pid's cgroup); inside the container, /run/msc.sock is this socket.
  const procs = `/sys/fs/cgroup/pids/${status.cgroupParent}/c1/cgroup.procs`
  const r = await execa('python3', ['-c', `
import os, socket, time
open(${JSON.stringify(procs)}, 'w').write(str(os.getpid()))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b'CHECKPOINT', ${JSON.stringify(path.join(node.dataDir, 'ipc.sock'))})
time.sleep(0.3)
`], { reject: false })
  assert.equal(r.exitCode, 0, String(r.stderr))
  await waitFor(async () => (await node.json('checkpoints', 'c1')).length === 1, 15_000, 'the requested checkpoint')
  assert.equal((await node.json('ps')).find((c: any) => c.name === 'c1').state, 'running')
  assert.equal((await node.msc('checkpoint', 'c1', '--stop')).exitCode, 0)
  assert.equal((await node.json('restore', 'c1')).state, 'running')
  const before = counterValues((await node.msc('logs', 'c1')).stdout).length
  await waitFor(async () => counterValues((await node.msc('logs', 'c1')).stdout).length >= before + 3, 10_000, 'counting after restore')
  const all = counterValues((await node.msc('logs', 'c1')).stdout)
  for (let i = 1; i < all.length; i++) assert.equal(all[i], all[i - 1]! + 1, `sequence broken at ${i}: ${all.join(' ')}`)
})
