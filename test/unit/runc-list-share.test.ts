/**
 * ContainerManager.runcStates: the periodic readers (heartbeat claims, lease and
 * replication checks) share one `runc list` for up to RUNC_LIST_TTL_MS, and any
 * lifecycle operation drops it, so the node's own changes are seen at once. A fake
 * runc counts the lists (pure logic: the real runc is exercised by the integration tests).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import os from 'node:os'
import path from 'node:path'
import fs from 'node:fs/promises'
import { ContainerManager, RUNC_LIST_TTL_MS } from '../../src/node/container-manager.ts'
import { DataDir } from '../../src/node/data-dir.ts'
import type { Runc, RuncState } from '../../src/runtime/runc.ts'
import { silentLogger } from '../../src/util/logger.ts'

function fakeRunc (): { runc: Runc; lists: () => number; set: (s: RuncState[]) => void } {
  let lists = 0
  let states: RuncState[] = []
  const runc = { list: async () => {
    lists++
    return states.map((s) => ({ ...s }))
  } } as unknown as Runc
  return { runc, lists: () => lists, set: (s) => {
    states = s
  } }
}

/** A manager over a fresh data dir holding a record of container `a`. */
async function managerWithRecord (dir: string, runc: Runc): Promise<ContainerManager> {
  const dd = new DataDir(dir)
  await dd.init()
  const m = new ContainerManager({
    dataDir: dd,
    runc,
    cgroupParent: 'msc-test',
    logMaxBytes: 1 << 20,
    stopTimeoutMs: 1000,
    tcpEstablished: false,
    logger: silentLogger()
  })
  const now = new Date().toISOString()
  await fs.mkdir(dd.containerDir('a'), { recursive: true })
  await m.writeRecord({ name: 'a', bundle: '/b/a', createdAt: now, startedAt: now, checkpointed: false })
  return m
}

test('a node without container records does not ask runc', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-runc-list-'))
  t.after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })
  const f = fakeRunc()
  f.set([{ id: 'stray', status: 'running' } as RuncState])
  const dd = new DataDir(dir)
  await dd.init()
  const m = new ContainerManager({ dataDir: dd, runc: f.runc, cgroupParent: 'msc-test', logMaxBytes: 1 << 20, stopTimeoutMs: 1000, tcpEstablished: false, logger: silentLogger() })
  assert.deepEqual(await m.runcStates(), [])
  assert.equal(f.lists(), 0, 'no runc list spawned')
  await fs.mkdir(dd.containerDir('a'), { recursive: true })
  const now = new Date().toISOString()
  await m.writeRecord({ name: 'a', bundle: '/b/a', createdAt: now, startedAt: now, checkpointed: false })
  assert.deepEqual((await m.runcStates()).map((s) => s.id), ['stray'], 'with a record, runc is listed')
  assert.equal(f.lists(), 1)
})

test('readers within the TTL share one runc list; a lifecycle operation or the TTL makes the next one fresh', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-runc-list-'))
  t.after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })
  const f = fakeRunc()
  const m = await managerWithRecord(dir, f.runc)
  f.set([{ id: 'a', status: 'running' } as RuncState])
  const [x, y] = await Promise.all([m.runcStates(), m.runcStates()])
  assert.equal(f.lists(), 1, 'two readers at once: one list')
  assert.deepEqual([x.map((s) => s.id), y.map((s) => s.id)], [['a'], ['a']])
  await m.runcStates()
  assert.equal(f.lists(), 1, 'a reader within the TTL: still one')

  f.set([])
  await m.exclusive('a', async () => {}) // what stop, run, migrate... end with
  assert.deepEqual(await m.runcStates(), [], 'after a lifecycle operation the change is seen at once')
  assert.equal(f.lists(), 2)

  await new Promise((resolve) => setTimeout(resolve, RUNC_LIST_TTL_MS + 50))
  await m.runcStates()
  assert.equal(f.lists(), 3, 'after the TTL: a new list')
})

test('a failed runc list is not kept: the next reader tries again', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-runc-list-'))
  t.after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })
  let calls = 0
  const runc = { list: async () => {
    calls++
    if (calls === 1) throw new Error('runc: boom')
    return []
  } } as unknown as Runc
  const m = await managerWithRecord(dir, runc)
  await assert.rejects(m.runcStates(), /boom/)
  assert.deepEqual(await m.runcStates(), [])
  assert.equal(calls, 2)
})

test('msc ps lists every container with one runc list, not one runc state each', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-runc-list-'))
  t.after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })
  let lists = 0
  let states = 0
  const runc = {
    list: async () => {
      lists++
      return [{ id: 'c0', pid: 100, status: 'running' }, { id: 'c1', pid: 0, status: 'stopped' }] as RuncState[]
    },
    state: async () => {
      states++
      return null
    }
  } as unknown as Runc
  const dd = new DataDir(dir)
  await dd.init()
  const m = new ContainerManager({
    dataDir: dd,
    runc,
    cgroupParent: 'msc-test',
    logMaxBytes: 1 << 20,
    stopTimeoutMs: 1000,
    tcpEstablished: false,
    logger: silentLogger()
  })
  const now = new Date().toISOString()
  for (let i = 0; i < 50; i++) await fs.mkdir(dd.containerDir(`c${i}`), { recursive: true })
  for (let i = 0; i < 50; i++) await m.writeRecord({ name: `c${i}`, bundle: `/b/c${i}`, createdAt: now, startedAt: now, checkpointed: false })
  const infos = await m.list()
  assert.equal(infos.length, 50, 'every container is listed')
  assert.deepEqual([lists, states], [1, 0], 'one runc list, no runc state')
  const byName = new Map(infos.map((x) => [x.name, x]))
  assert.equal(byName.get('c0')?.state, 'running')
  assert.equal(byName.get('c0')?.pid, 100)
  assert.notEqual(byName.get('c2')?.state, 'running', 'a container runc does not know is not running')
})
