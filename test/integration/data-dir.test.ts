/**
 * What a node does with its data dir: refuses a dir it must not take (`/`, system
 * dirs, someone else's non-empty dir) before touching anything; keeps a fenced
 * container's data but never runs or claims it again; turns the final dump of an
 * outgoing migration that the node's end interrupted into a checkpoint that
 * `msc restore` uses.
 */
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import { MSC, startNode, destroyAllNodes, tempDir, waitFor, counterValues, sleep, type TestNode } from '../helpers/node-harness.ts'
import { DataDir, DATA_DIR_FORMAT, classifyDataDir, systemDirReason } from '../../src/node/data-dir.ts'
import { ContainerManager, cgroupImageNames, interruptedDumpProblem, type ContainerRecord } from '../../src/node/container-manager.ts'
import type { Runc, RuncState } from '../../src/runtime/runc.ts'
import { silentLogger } from '../../src/util/logger.ts'

after(destroyAllNodes)

const ENV = { ...process.env, MSC_LISTEN: '/ip4/127.0.0.1/tcp/0', MSC_MDNS: 'false' }

/** `msc node start --data-dir DIR`, expected to refuse and exit by itself. */
async function startRefused (dir: string): Promise<{ exitCode: number; stderr: string }> {
  const r = await execa(MSC, ['node', 'start', '--data-dir', dir], { reject: false, timeout: 20_000, env: ENV })
  assert.equal(r.timedOut, false, `the node must refuse ${dir} and exit, not run`)
  return { exitCode: r.exitCode ?? -1, stderr: String(r.stderr) }
}

async function snapshot (dir: string): Promise<{ mode: number; entries: string[] }> {
  return { mode: (await fs.stat(dir)).mode, entries: (await fs.readdir(dir)).sort() }
}

describe('pure checks', () => {
  test('system dirs are refused themselves, their subdirs are not', () => {
    for (const d of ['/', '/etc', '/var', '/tmp', '/home', '/usr']) assert.match(systemDirReason(d) ?? '', /system directory/, d)
    for (const d of ['/var/lib/msc', '/tmp/xyz', '/srv/msc', '/etcetera']) assert.equal(systemDirReason(d), null, d)
  })

  test('classifyDataDir: new, legacy, marked, foreign, newer format, garbage marker', () => {
    assert.equal(classifyDataDir('/d', null, null), 'new')
    assert.equal(classifyDataDir('/d', [], null), 'new')
    assert.equal(classifyDataDir('/d', ['lost+found'], null), 'new')
    for (const legacy of ['node-id', 'peer.key', 'containers']) assert.equal(classifyDataDir('/d', [legacy, 'msc.sock'], null), 'legacy')
    assert.equal(classifyDataDir('/d', ['msc-data-dir'], JSON.stringify({ format: DATA_DIR_FORMAT })), 'msc')
    assert.throws(() => classifyDataDir('/d', ['a', 'b', 'c', 'd'], null), /not empty \(a, b, c, \.\.\.\) and is not an msc data dir/)
    assert.throws(() => classifyDataDir('/d', ['msc-data-dir'], '{"format":99}'), /format 99, made by a newer msc/)
    assert.throws(() => classifyDataDir('/d', ['msc-data-dir'], 'garbage'), /marker is unreadable/)
  })

  test('interruptedDumpProblem: only a complete, non-lazy dump is usable', () => {
    const ok = '(00.38) Pagemap generated: 3 pages (0 lazy) 0 holes\n(00.39) Writing image inventory (version 1)\n(00.40) Dumping finished successfully\n'
    assert.equal(interruptedDumpProblem(['inventory.img', 'dump.log'], ok), null)
    assert.match(interruptedDumpProblem(['dump.log'], ok) ?? '', /no inventory\.img/)
    assert.match(interruptedDumpProblem(['inventory.img'], null) ?? '', /no dump\.log/)
    assert.match(interruptedDumpProblem(['inventory.img', 'dump.log'], '(00.2) Error (criu/cr-dump.c:1975): Dumping FAILED.\n') ?? '', /did not log/)
    assert.match(interruptedDumpProblem(['inventory.img', 'dump.log'], ok.replace('(0 lazy)', '(12 lazy)')) ?? '', /post-copy/)
    assert.match(interruptedDumpProblem(['inventory.img', 'dump.log'], 'Starting lazy pages server\n' + ok) ?? '', /post-copy/)
  })

  test('cgroupImageNames matches the whole length-prefixed path only', () => {
    const field = (s: string): Buffer => Buffer.concat([Buffer.from([0x0a, 0x03]), Buffer.from('cpu'), Buffer.from([0x12, s.length]), Buffer.from(s)])
    const img = Buffer.concat([Buffer.from('CVT038YY'), field('/msc-1/web2')])
    assert.equal(cgroupImageNames(img, '/msc-1/web2'), true)
    assert.equal(cgroupImageNames(img, '/msc-1/web'), false)
    const long = '/' + 'p'.repeat(150) + '/x' // a two-byte varint length
    const img2 = Buffer.concat([Buffer.from([0x12, (long.length & 0x7f) | 0x80, long.length >> 7]), Buffer.from(long)])
    assert.equal(cgroupImageNames(img2, long), true)
  })
})

describe('--data-dir refusals', () => {
  test('/ and /etc are refused with exit code 2 and the reason; their modes and entries are unchanged', async () => {
    for (const dir of ['/', '/etc']) {
      const before = await snapshot(dir)
      const r = await startRefused(dir)
      assert.equal(r.exitCode, 2, r.stderr)
      assert.match(r.stderr, new RegExp(`refusing data dir ${dir.replace('/', '\\/')}: .*is a system directory`), r.stderr)
      assert.deepEqual(await snapshot(dir), before, `${dir} was changed`)
    }
    // The same through a symlink: where it leads counts.
    const link = path.join(await tempDir('dd-link'), 'to-etc')
    await fs.symlink('/etc', link)
    const r = await startRefused(link)
    assert.equal(r.exitCode, 2, r.stderr)
    assert.match(r.stderr, /\/etc is a system directory/)
  })

  test('a non-empty directory that is not an msc data dir is refused and left untouched', async () => {
    const dir = await tempDir('dd-foreign')
    await fs.chmod(dir, 0o755)
    await fs.writeFile(path.join(dir, 'thesis.tex'), 'precious')
    await fs.mkdir(path.join(dir, 'tmp'))
    await fs.writeFile(path.join(dir, 'tmp', 'draft'), 'also precious')
    const before = await snapshot(dir)
    const r = await startRefused(dir)
    assert.equal(r.exitCode, 2, r.stderr)
    assert.match(r.stderr, /is not empty \(.*thesis\.tex.*\) and is not an msc data dir/)
    assert.deepEqual(await snapshot(dir), before)
    assert.equal(await fs.readFile(path.join(dir, 'tmp', 'draft'), 'utf8'), 'also precious')
  })

  test('an empty dir is accepted and marked; a data dir of the previous version is accepted and marked', async () => {
    const fresh = await startNode({ env: ENV })
    const marker = JSON.parse(await fs.readFile(path.join(fresh.dataDir, 'msc-data-dir'), 'utf8'))
    assert.equal(marker.format, DATA_DIR_FORMAT)
    assert.equal((await fs.stat(fresh.dataDir)).mode & 0o777, 0o700)
    assert.equal((await fresh.json('status')).dataDir, fresh.dataDir)
    const pid = Number((await fs.readFile(path.join(fresh.dataDir, 'node.pid'), 'utf8')).trim())
    assert.equal(pid, fresh.proc.pid)
    assert.equal(await fresh.stopDaemon(), 0)
    // Restarted on its own (now marked) dir: accepted.
    await fresh.restartDaemon()
    assert.equal((await fresh.msc('status')).exitCode, 0)
    assert.equal(await fresh.stopDaemon(), 0)

    // As the previous msc left it: node-id, peer.key, containers/, no marker.
    const old = await tempDir('dd-legacy')
    await fs.rm(old, { recursive: true })
    await fs.cp(fresh.dataDir, old, { recursive: true })
    await fs.rm(path.join(old, 'msc-data-dir'))
    const legacy = await startNode({ env: ENV, dataDir: old })
    assert.equal(JSON.parse(await fs.readFile(path.join(old, 'msc-data-dir'), 'utf8')).format, DATA_DIR_FORMAT)
    assert.equal((await legacy.json('status')).nodeId, (await fs.readFile(path.join(fresh.dataDir, 'node-id'), 'utf8')).trim())
    assert.equal(await legacy.stopDaemon(), 0)
  })
})

/** A Runc stand-in for ContainerManager: a table of states, and what was stopped. */
function fakeRunc (states: Map<string, RuncState>, stopped: string[]): Runc {
  return {
    state: async (id: string) => states.get(id) ?? null,
    list: async () => [...states.values()],
    stop: async (id: string) => {
      stopped.push(id)
      states.delete(id)
    },
    delete: async (id: string) => {
      states.delete(id)
    }
  } as unknown as Runc
}

describe('fencing keeps the data', () => {
  test('ContainerManager.fence: marks the record, kills the copy, keeps its dir; claims() leaves it out', async () => {
    const dd = new DataDir(await tempDir('dd-fence'))
    await dd.init()
    const states = new Map<string, RuncState>([['web', { id: 'web', pid: 4242, status: 'running', bundle: '/b', created: '' }]])
    const stopped: string[] = []
    const m = new ContainerManager({ dataDir: dd, runc: fakeRunc(states, stopped), cgroupParent: 'msc-test', logMaxBytes: 1e6, stopTimeoutMs: 1000, tcpEstablished: false, logger: silentLogger() })
    for (const name of ['web', 'db']) {
      await fs.mkdir(dd.containerDir(name), { recursive: true })
      await m.writeRecord({ name, bundle: '/b', createdAt: 'x', startedAt: 'x', checkpointed: false, epoch: 3 })
    }
    await fs.mkdir(dd.checkpointDir('web', 'ck-1'), { recursive: true })
    await fs.writeFile(path.join(dd.checkpointDir('web', 'ck-1'), 'meta.json'), JSON.stringify({ id: 'ck-1', container: 'web', createdAt: 'x', leftRunning: true, sizeBytes: 1, durationMs: 1 }))
    await fs.writeFile(dd.logFile('web'), '1\n2\n')

    assert.equal(await m.fence('web', { owner: 'P2', epoch: 3, at: 'now' }), false, 'not above our epoch: nothing to fence')
    assert.equal(await m.fence('web', { owner: 'P2', ownerName: 'node2', epoch: 4, at: 'now' }), true)
    assert.equal(await m.fence('web', { owner: 'P2', epoch: 5, at: 'now' }), false, 'already fenced')
    assert.deepEqual(stopped, ['web'])
    const rec = JSON.parse(await fs.readFile(dd.recordFile('web'), 'utf8')) as ContainerRecord
    assert.deepEqual(rec.fenced, { owner: 'P2', ownerName: 'node2', epoch: 4, at: 'now' })
    assert.equal(await fs.readFile(dd.logFile('web'), 'utf8'), '1\n2\n')
    const info = await m.inspect('web')
    assert.equal(info.state, 'fenced')
    assert.equal(info.checkpoints, 1)
    assert.deepEqual((await m.claims()).map((c) => c.name), ['db'])
    await assert.rejects(m.restore('web'), /was fenced: another node \(node2, peer P2\) owns it at epoch 4/)

    // A fenced copy found running (the node died between marking and killing):
    // the next heartbeat's claims() kills it.
    states.set('web', { id: 'web', pid: 4343, status: 'running', bundle: '/b', created: '' })
    assert.deepEqual((await m.claims()).map((c) => c.name), ['db'])
    await waitFor(() => stopped.length === 2, 5_000, 'the fenced copy to be killed')
    await m.remove('web')
    await assert.rejects(fs.access(dd.containerDir('web')))
  })

  let node: TestNode
  let bundle: string

  test('a node restarted with a fenced container that still runs: killed, shown fenced, restore refused, rm removes it', async () => {
    node = await startNode({ env: ENV })
    bundle = path.join(await tempDir('dd-bundle'), 'counter')
    assert.equal((await node.msc('bundle', 'counter', bundle, '--interval-ms', '200')).exitCode, 0)
    assert.equal((await node.msc('run', 'f1', bundle)).exitCode, 0, 'run')
    await waitFor(async () => counterValues((await node.msc('logs', 'f1')).stdout).length >= 2, 10_000, 'counter output')
    assert.equal(await node.stopDaemon(), 0)
    // As fence() leaves it when the node dies right after marking the record.
    const file = path.join(node.dataDir, 'containers', 'f1', 'container.json')
    const rec = JSON.parse(await fs.readFile(file, 'utf8')) as ContainerRecord
    rec.fenced = { owner: '12D3KooWOther', ownerName: 'other', epoch: 7, at: new Date().toISOString() }
    await fs.writeFile(file, JSON.stringify(rec))
    await node.restartDaemon()
    await waitFor(async () => {
      const c = (await node.json('ps')).find((x: any) => x.name === 'f1')
      return c?.state === 'fenced' && c.pid == null
    }, 15_000, 'f1 to show fenced and stopped')
    const ps = (await node.json('ps')).find((x: any) => x.name === 'f1')
    assert.equal(ps.fenced.epoch, 7)
    const runc = await execa('runc', ['--root', path.join(node.dataDir, 'runc'), 'list', '-q'], { reject: false })
    assert.ok(!String(runc.stdout).split('\n').includes('f1'), 'runc still has f1')
    const frozen = counterValues((await node.msc('logs', 'f1')).stdout).length
    await sleep(600)
    assert.equal(counterValues((await node.msc('logs', 'f1')).stdout).length, frozen, 'the fenced container still prints')
    const r = await node.msc('restore', 'f1')
    assert.notEqual(r.exitCode, 0)
    assert.match(r.stderr, /another node \(other, peer 12D3KooWOther\) owns it at epoch 7/)
    assert.match((await node.msc('ps')).stdout, /f1\s+fenced/)
    assert.equal((await node.msc('rm', 'f1')).exitCode, 0)
    assert.equal((await node.json('ps')).some((x: any) => x.name === 'f1'), false)
  })

  test('a source that died after its final dump: the dump becomes a checkpoint that msc restore uses', async () => {
    assert.equal((await node.msc('run', 'm1', bundle)).exitCode, 0, 'run')
    await waitFor(async () => counterValues((await node.msc('logs', 'm1')).stdout).length >= 3, 10_000, 'counter output')
    const cp = await node.json('checkpoint', 'm1', '--stop')
    const printed = counterValues((await node.msc('logs', 'm1')).stdout)
    assert.equal(await node.stopDaemon(), 0)
    // Make it look as a source node's end leaves it: the dump in DIR/tmp/mig-out-ID/images
    // (no meta.json), the record as when the container ran; and a second, incomplete dump.
    const dd = new DataDir(node.dataDir)
    const staging = path.join(dd.tmp, 'mig-out-AbC_123-x')
    await fs.mkdir(staging)
    await fs.rename(dd.checkpointDir('m1', cp.id), path.join(staging, 'images'))
    await fs.rm(path.join(staging, 'images', 'meta.json'))
    const rec = JSON.parse(await fs.readFile(dd.recordFile('m1'), 'utf8')) as ContainerRecord
    await fs.writeFile(dd.recordFile('m1'), JSON.stringify({ ...rec, checkpointed: false, startedAt: rec.createdAt }))
    const partial = path.join(dd.tmp, 'mig-out-partial')
    await fs.mkdir(path.join(partial, 'images'), { recursive: true })
    await fs.writeFile(path.join(partial, 'images', 'pages-1.img'), 'x')
    await fs.mkdir(path.join(dd.tmp, 'mig-incoming')) // an incoming staging dir: removed

    await node.restartDaemon()
    const cps = await node.json('checkpoints', 'm1')
    assert.deepEqual(cps.map((c: any) => c.id), ['migration-AbC_123-x'])
    assert.equal(cps[0].leftRunning, false)
    assert.deepEqual((await fs.readdir(dd.tmp)).sort(), ['mig-out-partial'], 'the used staging dir goes, the incomplete one stays')
    assert.match(node.nodeLog(), /the dump is now its checkpoint migration-AbC_123-x/)
    assert.match(node.nodeLog(), /no inventory\.img/)
    assert.equal((await node.json('ps')).find((x: any) => x.name === 'm1').state, 'checkpointed', 'never restored automatically')

    assert.equal((await node.json('restore', 'm1')).state, 'running')
    await waitFor(async () => counterValues((await node.msc('logs', 'm1')).stdout).length >= printed.length + 3, 10_000, 'restored counter output')
    const all = counterValues((await node.msc('logs', 'm1')).stdout)
    for (let i = 1; i < all.length; i++) assert.equal(all[i], all[i - 1]! + 1, `one sequence across the recovered dump: ${all.join(' ')}`)
    assert.equal((await node.msc('rm', '--force', 'm1')).exitCode, 0)
  })
})
