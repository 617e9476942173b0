/**
 * The lease guard (scripts/lease-guard.sh driven by LeaseGuard) with a fake runc that
 * appends its arguments to a file: an armed deadline is enforced within the guard's
 * look interval (0.5 s, 100 ms near a deadline; runc kill --all NAME KILL, then the
 * .fenced mark), a disarmed or far-off entry is never
 * killed, a second start reuses the running guard, and stop ends the process. The
 * guard process is killed by pid in `after` whatever happens.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { execa } from 'execa'
import { LeaseGuard } from '../../src/failover/lease-guard.ts'
import { silentLogger } from '../../src/util/logger.ts'

let tmp = ''
let runcLog = ''
let fakeRunc = ''
const pids = new Set<number>()

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-guard-'))
  runcLog = path.join(tmp, 'runc.log')
  fakeRunc = path.join(tmp, 'runc')
  await fs.writeFile(fakeRunc, `#!/bin/sh\necho "$*" >> '${runcLog}'\nexit 1\n`, { mode: 0o755 })
})

after(async () => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {}
  }
  await fs.rm(tmp, { recursive: true, force: true })
})

function guard (dir: string): LeaseGuard {
  return new LeaseGuard({ dir, runcPath: fakeRunc, runcRoot: '/run/fake-root', logger: silentLogger() })
}

async function runcCalls (): Promise<string[]> {
  try {
    return (await fs.readFile(runcLog, 'utf8')).split('\n').filter((l) => l !== '')
  } catch {
    return []
  }
}

async function waitFor (cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await cond()) return true
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return await cond()
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('LeaseGuard', () => {
  test('kills an armed container once its deadline passed, never a disarmed or far-off one; stop ends it', async () => {
    const dir = path.join(tmp, 'guard')
    const g = guard(dir)
    await g.start()
    const pid = g.pid as number
    assert.ok(pid > 1)
    pids.add(pid)
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')
    assert.match(cmdline, /lease-guard\.sh/)

    const now = performance.now()
    await g.arm('web', now + 300, now)
    await g.arm('db', now + 200, now)
    await g.arm('far.away', now + 3_600_000, now)
    await g.disarm('db')
    assert.deepEqual((await g.armed()).sort(), ['far.away', 'web'])
    const content = Number(await fs.readFile(path.join(dir, 'web'), 'utf8'))
    const uptimeCs = Number((await fs.readFile('/proc/uptime', 'utf8')).split(' ')[0]) * 100
    // About 30 cs ahead of the uptime at arm(), which was read just before this one.
    assert.ok(content <= uptimeCs + 31 && content > uptimeCs - 100, `${content} vs ${uptimeCs}`)

    assert.equal(await waitFor(async () => (await g.fenced()).includes('web'), 1500), true)
    const fencedAt = performance.now() - now
    assert.ok(fencedAt >= 280, `fenced after ${fencedAt} ms`)
    assert.deepEqual(await runcCalls(), ['--root /run/fake-root kill --all web KILL'])
    assert.deepEqual(await g.armed(), ['far.away'])

    // A while later: still only web was killed.
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.deepEqual(await runcCalls(), ['--root /run/fake-root kill --all web KILL'])
    assert.deepEqual(await g.fenced(), ['web'])
    await g.clearFenced('web')
    assert.deepEqual(await g.fenced(), [])

    // A second guard object (a restarted daemon) reuses the running process.
    const again = guard(dir)
    await again.start()
    assert.equal(again.pid, pid)

    await again.stop({ keepArmed: true })
    assert.equal(alive(pid), true)
    assert.deepEqual(await g.armed(), ['far.away'])
    await again.stop({ keepArmed: false })
    assert.equal(await waitFor(async () => !alive(pid), 1000), true)
    assert.deepEqual(await g.armed(), [])
    await assert.rejects(fs.stat(path.join(dir, '.stop')))
    await assert.rejects(fs.stat(path.join(dir, '.guard.pid')))
  })

  test('a deadline already past is enforced within one look of the guard (0.5 s); a container named "stop" does not stop the guard; names are checked', async () => {
    await fs.rm(runcLog, { force: true })
    const dir = path.join(tmp, 'guard2')
    const g = guard(dir)
    await g.start()
    const pid = g.pid as number
    pids.add(pid)
    const now = performance.now()
    await g.arm('stop', now - 1000, now)
    assert.equal(await waitFor(async () => (await g.fenced()).includes('stop'), 2500), true)
    assert.deepEqual(await runcCalls(), ['--root /run/fake-root kill --all stop KILL'])
    assert.equal(alive(pid), true)
    await assert.rejects(g.arm('../x', now, now), /invalid container name/)
    await assert.rejects(g.arm('.hidden', now, now), /invalid container name/)
    // The guard exits when its directory is gone.
    await fs.rm(dir, { recursive: true, force: true })
    assert.equal(await waitFor(async () => !alive(pid), 2500), true)
  })
  test('with a netns prefix, a killed lan container loses its LAN link (eth0 of its namespace); another namespace keeps its own', { skip: process.getuid?.() !== 0 ? 'needs root (ip netns)' : false }, async (t) => {
    await fs.rm(runcLog, { force: true })
    const prefix = `msc-guardtest${process.pid}-`
    const ns = `${prefix}lan1`
    const other = `${prefix}keep`
    t.after(async () => {
      await execa('ip', ['netns', 'delete', ns], { reject: false })
      await execa('ip', ['netns', 'delete', other], { reject: false })
    })
    for (const n of [ns, other]) {
      await execa('ip', ['netns', 'add', n])
      // A link named as lan-netns names the container's: eth0 (a veth pair: this kernel has no dummy links).
      await execa('ip', ['-n', n, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0'])
    }
    const hasEth0 = async (n: string): Promise<boolean> => (await execa('ip', ['-n', n, 'link', 'show', 'eth0'], { reject: false })).exitCode === 0
    const dir = path.join(tmp, 'guard3')
    const g = new LeaseGuard({ dir, runcPath: fakeRunc, runcRoot: '/run/fake-root', netnsPrefix: prefix, logger: silentLogger() })
    await g.start()
    const pid = g.pid as number
    pids.add(pid)
    const now = performance.now()
    await g.arm('lan1', now - 1000, now)
    await g.arm('keep', now + 3_600_000, now)
    assert.equal(await waitFor(async () => (await g.fenced()).includes('lan1'), 2500), true)
    assert.deepEqual(await runcCalls(), ['--root /run/fake-root kill --all lan1 KILL'])
    assert.equal(await hasEth0(ns), false, "the fenced container's link is gone")
    assert.equal(await hasEth0(other), true, 'an armed container keeps its link')
    await g.stop({ keepArmed: false })
    assert.equal(await waitFor(async () => !alive(pid), 2000), true)
  })
})
