/**
 * Bad input against a real node: each mistake gets the documented exit code and one
 * clear `msc: ...` line, and none of them disturbs the node or the container that is
 * already running. Needs root, runc, CRIU (npm run setup).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { counterValues, destroyAllNodes, startNode, tempDir, waitFor, type CliResult, type TestNode } from '../helpers/node-harness.ts'
import type { ContainerInfo } from '../../src/api/types.ts'

let node: TestNode
let bundles = ''
let counter = ''
let keeperPid = 0

/** Exists and is not a zombie (pid 1 here may be slow to reap an exited container init). */
function isRunning (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** Exit code, and exactly one stderr line `msc: ...` matching `pattern`. */
function assertRefused (r: CliResult, exitCode: number, pattern: RegExp): void {
  assert.equal(r.exitCode, exitCode, `exit code (stderr: ${r.stderr})`)
  const lines = r.stderr.split('\n').filter((l) => l !== '')
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`)
  assert.ok(lines[0]!.startsWith('msc: '), lines[0])
  assert.match(lines[0]!, pattern)
}

/** The node still answers, and the container that ran before still runs, unchanged. */
async function assertUndisturbed (n: TestNode, name: string, pid: number): Promise<ContainerInfo[]> {
  const ps = await n.msc('ps', '--json')
  assert.equal(ps.exitCode, 0, `msc ps after the error: ${ps.stderr}`)
  const list = JSON.parse(ps.stdout) as ContainerInfo[]
  const c = list.find((x) => x.name === name)
  assert.ok(c != null, `${name} still listed`)
  assert.equal(c.state, 'running')
  assert.equal(c.pid, pid)
  assert.ok(isRunning(pid), `pid ${pid} alive`)
  return list
}

before(async () => {
  bundles = await tempDir('bad-input-bundles')
  counter = path.join(bundles, 'counter')
  node = await startNode()
  const b = await node.msc('bundle', 'counter', counter, '--interval-ms', '200')
  assert.equal(b.exitCode, 0, b.stderr)

  // config.json that is not JSON
  await fs.mkdir(path.join(bundles, 'badjson', 'rootfs'), { recursive: true })
  await fs.writeFile(path.join(bundles, 'badjson', 'config.json'), '{ "ociVersion": "1.0.2", ')
  // valid JSON, a real rootfs, but no process.args
  const spec = JSON.parse(await fs.readFile(path.join(counter, 'config.json'), 'utf8')) as { process: Record<string, unknown>; root: { path: string } }
  delete spec.process.args
  spec.root.path = path.join(counter, 'rootfs')
  await fs.mkdir(path.join(bundles, 'noargs'))
  await fs.writeFile(path.join(bundles, 'noargs', 'config.json'), JSON.stringify(spec))

  const keeper = await node.json<ContainerInfo>('run', 'keeper', counter)
  assert.equal(keeper.state, 'running')
  keeperPid = keeper.pid!
  const other = await node.json<ContainerInfo>('run', 'other', counter)
  assert.equal(other.state, 'running')
  const stopped = await node.msc('stop', 'other')
  assert.equal(stopped.exitCode, 0, stopped.stderr)
})

after(async () => {
  await destroyAllNodes()
  if (bundles !== '') await fs.rm(bundles, { recursive: true, force: true })
})

describe('one node, bad input', () => {
  test('run from a missing bundle dir: exit 2, leaves nothing behind', async () => {
    const missing = path.join(bundles, 'does-not-exist')
    assertRefused(await node.msc('run', 'x1', missing), 2, new RegExp(`${missing}.*does not exist`))
    const list = await assertUndisturbed(node, 'keeper', keeperPid)
    assert.ok(!list.some((c) => c.name === 'x1'), 'no record of the failed run')
    assert.ok(!existsSync(path.join(node.dataDir, 'containers', 'x1')), 'no container dir of the failed run')
  })

  test('run from a bundle whose config.json is not JSON: exit 2', async () => {
    assertRefused(await node.msc('run', 'x2', path.join(bundles, 'badjson')), 2, /config\.json is not valid JSON/)
    const list = await assertUndisturbed(node, 'keeper', keeperPid)
    assert.ok(!list.some((c) => c.name === 'x2'))
  })

  test('run from a bundle without process.args: exit 2', async () => {
    assertRefused(await node.msc('run', 'x3', path.join(bundles, 'noargs')), 2, /process\.args/)
    const list = await assertUndisturbed(node, 'keeper', keeperPid)
    assert.ok(!list.some((c) => c.name === 'x3'))
  })

  for (const cmd of ['stop', 'checkpoint', 'restore', 'logs', 'rm', 'checkpoints']) {
    test(`${cmd} of an unknown container: exit 1`, async () => {
      assertRefused(await node.msc(cmd, 'ghost'), 1, /no container named ghost/)
      await assertUndisturbed(node, 'keeper', keeperPid)
    })
  }

  test('run with a name already taken: exit 1, the first container untouched', async () => {
    assertRefused(await node.msc('run', 'keeper', counter), 1, /keeper already exists/)
    const list = await assertUndisturbed(node, 'keeper', keeperPid)
    assert.equal(list.filter((c) => c.name === 'keeper').length, 1)
  })

  test('run with a name of a stopped container: exit 1', async () => {
    assertRefused(await node.msc('run', 'other', counter), 1, /other already exists/)
    await assertUndisturbed(node, 'keeper', keeperPid)
  })

  test('checkpoint of a stopped container: exit 1', async () => {
    assertRefused(await node.msc('checkpoint', 'other'), 1, /other is stopped.*only a running container/)
    const list = await assertUndisturbed(node, 'keeper', keeperPid)
    const other = list.find((c) => c.name === 'other')
    assert.equal(other?.state, 'stopped')
    assert.equal(other?.checkpoints, 0)
  })

  test('restore of a stopped container that has no checkpoint: exit 1', async () => {
    assertRefused(await node.msc('restore', 'other'), 1, /no checkpoint/)
    await assertUndisturbed(node, 'keeper', keeperPid)
  })

  test('restore of a running container: exit 1, it keeps running', async () => {
    assertRefused(await node.msc('restore', 'keeper'), 1, /keeper is running/)
    const list = await assertUndisturbed(node, 'keeper', keeperPid)
    assert.equal(list.find((c) => c.name === 'keeper')?.checkpoints, 0)
  })

  test('restore --from an unknown checkpoint: exit 1', async () => {
    assertRefused(await node.msc('restore', 'other', '--from', 'ck-nope'), 1, /no checkpoint ck-nope/)
    await assertUndisturbed(node, 'keeper', keeperPid)
  })

  for (const bad of ['has space', 'semi;colon', '.hidden', 'x'.repeat(64)]) {
    test(`run with the invalid name ${JSON.stringify(bad.length > 20 ? `${bad.length} chars` : bad)}: exit 2`, async () => {
      assertRefused(await node.msc('run', bad, counter), 2, /invalid container name/)
      const list = await assertUndisturbed(node, 'keeper', keeperPid)
      assert.deepEqual(list.map((c) => c.name).sort(), ['keeper', 'other'])
    })
  }

  for (const [cmd, name] of [['stop', '../keeper'], ['logs', '../keeper'], ['checkpoint', '../keeper'], ['stop', '..'], ['logs', '.'], ['rm', '.'], ['restore', '..']]) {
    test(`${cmd} with a name that is a path (${JSON.stringify(name)}): exit 2`, async () => {
      assertRefused(await node.msc(cmd!, name!), 2, /invalid container name/)
      await assertUndisturbed(node, 'keeper', keeperPid)
    })
  }

  test('after all that, the container kept counting', async () => {
    const before = counterValues((await node.msc('logs', 'keeper')).stdout).length
    await waitFor(async () => counterValues((await node.msc('logs', 'keeper')).stdout).length > before, 10_000, 'keeper to print more')
    const values = counterValues((await node.msc('logs', 'keeper')).stdout)
    assert.deepEqual(values, values.map((_, i) => i + 1), 'one run of 1..N')
    assert.equal(node.proc.exitCode, null, 'the node is still up')
  })
})

describe('a node whose CRIU is missing', () => {
  let n2: TestNode

  before(async () => {
    n2 = await startNode({ env: { MSC_CRIU: '/nonexistent/criu' } })
  })

  test('runs containers, refuses checkpoints with exit 1 naming CRIU and npm run setup', async () => {
    const status = await n2.json<{ criu: string }>('status')
    assert.equal(status.criu, '/nonexistent/criu')
    const c = await n2.json<ContainerInfo>('run', 'c1', counter)
    assert.equal(c.state, 'running')
    assert.ok(c.pid != null && isRunning(c.pid))

    const r = await n2.msc('checkpoint', 'c1')
    assertRefused(r, 1, /CRIU/)
    assert.match(r.stderr, /npm run setup/)
    assert.match(r.stderr, /\/nonexistent\/criu/)

    const stop = await n2.msc('checkpoint', 'c1', '--stop')
    assertRefused(stop, 1, /CRIU.*npm run setup/)

    const list = await assertUndisturbed(n2, 'c1', c.pid)
    assert.equal(list.find((x) => x.name === 'c1')?.checkpoints, 0)
    assert.deepEqual(await fs.readdir(path.join(n2.dataDir, 'containers', 'c1', 'checkpoints')).catch(() => []), [], 'no partial checkpoint left')
  })
})
