/**
 * A migration settles after a crash at any phase: afterwards EXACTLY ONE copy of the
 * container runs (runc's own list under every node's data dir, and `msc ps` of every
 * node), or, where the source died after its final dump before the target restored
 * anything, none runs and the source holds the dump as a checkpoint that `msc restore`
 * brings back. protocols/migrate.md, "Crashes and restarts", says what happens when.
 *
 * Three msc nodes, one per network-namespace host of a Testbed: n1 the source, n2 the
 * target, n3 a target whose data dir is a small tmpfs (the disk-full test). "Killed"
 * is SIGKILL of the node process only: its containers and their log shims outlive it,
 * as they outlive any node crash that is not the host's.
 *
 * Fault injection (test-only knobs, src/migration/test-knobs.ts), set per node by
 * restarting it with the knob in its environment:
 *   MSC_TEST_PAUSE_AT=POINT, MSC_TEST_PAUSE_MS=N  the migration waits N ms at POINT
 *       after logging "MSC_TEST_PAUSE_AT: pausing at POINT"; the test kills or restarts
 *       the node there. POINT: source-dumped, source-restored (the source read
 *       "restored"), target-adopted (restored, not yet reported), target-restored
 *       (reported, the decision not yet read).
 *   MSC_TEST_FAIL_COMMIT=enospc:N  the first N commits on that node fail with ENOSPC.
 *       The disk-full test fills n3's tmpfs for real; there the commit (a rename of the
 *       record prepared at adopt) needs no new space and would succeed, so the knob
 *       stands for a file system where even that fails: the commit is retried, the
 *       container is never discarded.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), iproute2, nsenter, ebtables
 * (test/testbed/README.md).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, statSync } from 'node:fs'
import fs from 'node:fs/promises'
import { once } from 'node:events'
import path from 'node:path'
import { execa } from 'execa'
import { Testbed } from '../testbed/testbed.ts'
import { MSC } from '../helpers/node-harness.ts'
import { assertOneSequence, logValues, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import type { ContainerInfo, MigrationResultInfo } from '../../src/api/types.ts'

const NODE_ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3']
/** n3's data dir: room for a counter's migration above the target's 256 MiB disk reserve. */
const TMPFS_MB = 384

let c: Cluster
const n = (name: string): ClusterNode => c.node(name)
let bundles = ''
let tmpfsDir = ''

// ---------------------------------------------------------------------------------
// helpers

const pause = (point: string, ms = 30_000): NodeJS.ProcessEnv => ({ MSC_TEST_PAUSE_AT: point, MSC_TEST_PAUSE_MS: String(ms) })

function isUp (node: ClusterNode): boolean {
  return node.proc != null && node.proc.exitCode == null && node.proc.signalCode == null
}

/** Gives the node this environment (restarting it if it runs with another one). */
async function setEnv (node: ClusterNode, env: NodeJS.ProcessEnv): Promise<void> {
  if (JSON.stringify(node.env) === JSON.stringify(env)) return
  if (isUp(node)) await c.stop(node)
  node.env = env
}

/** Every node up with the environment given (others: none) and seeing the others alive. */
async function allUp (envs: Record<string, NodeJS.ProcessEnv> = {}): Promise<void> {
  for (const x of c.nodes) await c.tb.heal(x.host)
  for (const x of c.nodes) await setEnv(x, envs[x.name] ?? {})
  await c.startAll()
  await c.waitAllAlive(20_000)
}

/** SIGKILL of the node process alone (nsenter exec'd into node: one pid); its containers live on. */
async function killNode (node: ClusterNode): Promise<void> {
  const p = node.proc!
  const exited = once(p, 'exit')
  p.kill('SIGKILL')
  await exited
}

async function makeCounter (name: string): Promise<string> {
  const dir = path.join(bundles, name)
  const r = await execa(MSC, ['bundle', 'counter', dir, '--interval-ms', '250', '--force'], { reject: false })
  assert.equal(r.exitCode, 0, `msc bundle counter: ${String(r.stderr)}`)
  return dir
}

async function keepsCounting (node: ClusterNode, name: string): Promise<void> {
  const last = logValues(node, name).at(-1) ?? 0
  await waitFor(() => (logValues(node, name).at(-1) ?? 0) >= last + 3, 15_000, `${name} to go on counting on ${node.name}`)
}

/** Starts a counter on `node`; returns its pid once it prints. */
async function runCounter (node: ClusterNode, name: string): Promise<number> {
  const run = await c.msc(node, 'run', name, await makeCounter(name))
  assert.equal(run.exitCode, 0, run.stderr)
  await waitFor(() => logValues(node, name).length >= 3, 10_000, `${name} to print on ${node.name}`)
  return await assertOnlyOn(name, node)
}

/** `msc migrate` (stop-copy) from `from`; `result` is null when the command printed no JSON (its node died). */
async function migrate (from: ClusterNode, name: string, to: ClusterNode, ...extra: string[]): Promise<{ exitCode: number; stderr: string; result: MigrationResultInfo | null }> {
  const r = await c.mscTimed(from, 180_000, 'migrate', name, '--to', to.name, '--strategy', 'stop-copy', '--json', ...extra)
  let result: MigrationResultInfo | null = null
  try {
    result = JSON.parse(r.stdout) as MigrationResultInfo
  } catch {}
  return { exitCode: r.exitCode, stderr: r.stderr, result }
}

/** Resolves (with the time) when `node`'s log, from byte `from` on, has a line matching `re`. */
async function waitLog (node: ClusterNode, re: RegExp, from: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const text = readFileSync(node.logFile).subarray(from).toString('utf8')
    if (re.test(text)) return Date.now()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${re} in ${node.name}'s log:\n${c.logTail(node, 15)}`)
}

function logSize (node: ClusterNode): number {
  try {
    return statSync(node.logFile).size
  } catch {
    return 0
  }
}

function logSince (node: ClusterNode, from: number): string {
  return readFileSync(node.logFile).subarray(from).toString('utf8')
}

/** runc's own list of `name` on each node: node name -> status (absent: not there). */
async function whereRuns (name: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const x of c.nodes) {
    const e = (await c.runcList(x)).find((y) => y.id === name)
    if (e != null) out[x.name] = e.status
  }
  return out
}

/**
 * Exactly one copy: runc under each node's data dir (up or not) has `name` running on
 * `owner` only, and `msc ps` of every node that is up agrees. Returns its pid.
 */
async function assertOnlyOn (name: string, owner: ClusterNode, expectPid?: number): Promise<number> {
  let pid = 0
  for (const x of c.nodes) {
    const rl = (await c.runcList(x)).filter((e) => e.id === name)
    const ps = isUp(x) ? (await c.json<ContainerInfo[]>(x, 'ps')).filter((e) => e.name === name) : null
    if (x === owner) {
      assert.equal(rl.length, 1, `${x.name}: runc has ${name}: ${JSON.stringify(rl)}`)
      assert.equal(rl[0]!.status, 'running', `${x.name}: runc runs ${name}: ${JSON.stringify(rl[0])}`)
      pid = rl[0]!.pid
      if (ps != null) {
        assert.equal(ps.length, 1, `${x.name}: msc ps lists ${name}: ${JSON.stringify(ps)}`)
        assert.equal(ps[0]!.state, 'running', `${x.name}: msc ps: ${JSON.stringify(ps[0])}`)
        assert.equal(ps[0]!.pid, pid, `${x.name}: msc ps and runc agree on the pid`)
      }
      if (expectPid != null) assert.equal(pid, expectPid, `${x.name}: ${name} is still the same process`)
    } else {
      assert.deepEqual(rl, [], `${x.name}: runc has no ${name}`)
      if (ps != null) assert.deepEqual(ps, [], `${x.name}: msc ps does not list ${name}`)
    }
  }
  return pid
}

/** Polls `observer`'s view until `owner` claims `name` at `epoch`; returns when. */
async function waitOwner (observer: ClusterNode, owner: ClusterNode, name: string, epoch: number, timeoutMs: number): Promise<number> {
  await waitFor(async () => {
    const p = (await c.peersApi(observer)).find((x) => x.peerId === owner.peerId)
    return p?.containers.some((x) => x.name === name && x.epoch === epoch) === true
  }, timeoutMs, `${observer.name} to see ${owner.name} own ${name} at epoch ${epoch}`)
  return Date.now()
}

/** Nothing left behind: DIR/tmp empty on every node, every log shim serves a container runc runs there. */
async function assertNoLeaks (timeoutMs = 15_000): Promise<void> {
  let problems: string[] = []
  try {
    await waitFor(async () => {
      problems = []
      for (const x of c.nodes) {
        for (const e of await c.tmpEntries(x)) problems.push(`${x.name}: tmp/${e}`)
        const running = new Set((await c.runcList(x)).filter((e) => e.status === 'running').map((e) => e.id))
        for (const s of await c.shims(x)) if (!running.has(s.container)) problems.push(`${x.name}: shim pid ${s.pid} for ${s.container}, which does not run there`)
      }
      return problems.length === 0
    }, timeoutMs, 'no staging and no orphaned shims')
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${problems.join('; ')}`)
  }
}

async function removeEverywhere (name: string): Promise<void> {
  for (const x of c.nodes) if (isUp(x)) await c.msc(x, 'rm', '--force', name)
}

// ---------------------------------------------------------------------------------

before(async () => {
  await Testbed.destroyStale()
})

describe('migration crashes: a node restarted at any phase settles it, exactly one copy runs', () => {
  before(async () => {
    c = await startCluster({ hosts: 3, args: NODE_ARGS, start: false })
    try {
      bundles = path.join(c.root, 'bundles')
      tmpfsDir = n('n3').dataDir
      await fs.mkdir(tmpfsDir, { recursive: true, mode: 0o700 })
      await execa('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_MB}m,mode=0700`, 'msc-test-crash', tmpfsDir])
      await c.startAll()
      await c.waitAllAlive(15_000)
    } catch (err) {
      await c.destroy().catch(() => {})
      throw err
    }
  })

  after(async () => {
    try {
      await c?.destroy()
    } finally {
      if (tmpfsDir !== '') await execa('umount', ['-l', tmpfsDir], { reject: false })
    }
  })

  test('target killed between "restored" and commit: its restart commits with the kept handover; one copy, on the target', { timeout: 150_000 }, async (t) => {
    await allUp({ n2: pause('target-restored') })
    const [from, to] = [n('n1'), n('n2')]
    try {
      await runCounter(from, 'tk')
      const at = logSize(to)
      const mig = migrate(from, 'tk', to)
      await waitLog(to, /MSC_TEST_PAUSE_AT: pausing at target-restored/, at, 60_000)
      const copy = (await c.runcList(to)).find((x) => x.id === 'tk')
      assert.equal(copy?.status, 'running', 'restored on n2')
      await killNode(to)
      const killedAt = Date.now()
      const m = await mig
      t.diagnostic(`migrate: exit ${m.exitCode}, ok=${m.result?.ok} ${m.result?.totalMs} ms, phases ${JSON.stringify(m.result?.phases)}`)
      // The source read "restored": past its point of no return, it committed and released.
      assert.equal(m.exitCode, 0, `${JSON.stringify(m.result)}\n${m.stderr}`)
      assert.equal(m.result?.runningOn, to.peerId)
      // Meanwhile: n2's copy runs on, unowned (its node is down); nothing on n1.
      assert.deepEqual(await whereRuns('tk'), { n2: 'running' })

      await setEnv(to, {})
      const startAt = Date.now()
      const restartAt = logSize(to)
      await c.start(to)
      const up = Date.now()
      const settled = await waitLog(to, /incoming migration settled after restart: committed/, restartAt, 60_000)
      const seen = await waitOwner(from, to, 'tk', 2, 30_000)
      t.diagnostic(`killed ${startAt - killedAt} ms before the restart; node up in ${up - startAt} ms; settled (committed) ${settled - startAt} ms after the restart began; n1 saw n2 own it at epoch 2 after ${seen - startAt} ms`)
      await assertOnlyOn('tk', to, copy!.pid)
      await keepsCounting(to, 'tk')
      assertOneSequence(logValues(to, 'tk'), 'tk on n2')
      await assertNoLeaks()
    } finally {
      await removeEverywhere('tk')
    }
  })

  test(`target disk full at commit (data dir a ${TMPFS_MB} MB tmpfs, filled after the restore; first 2 commits fail ENOSPC): committed on retry, never discarded`, { timeout: 150_000 }, async (t) => {
    await allUp({ n3: { ...pause('target-restored', 5_000), MSC_TEST_FAIL_COMMIT: 'enospc:2' } })
    const [from, to] = [n('n1'), n('n3')]
    const fill = path.join(to.dataDir, 'fill')
    try {
      await runCounter(from, 'full')
      const at = logSize(to)
      const fromAt = logSize(from)
      const mig = migrate(from, 'full', to)
      await waitLog(to, /MSC_TEST_PAUSE_AT: pausing at target-restored/, at, 60_000)
      const copy = (await c.runcList(to)).find((x) => x.id === 'full')
      assert.equal(copy?.status, 'running', 'restored on n3')
      const dd = await execa('dd', ['if=/dev/zero', `of=${fill}`, 'bs=1M'], { reject: false })
      const df = await fs.statfs(to.dataDir)
      assert.equal(df.bavail, 0, `n3's data dir is full (${String(dd.stderr).trim().split('\n').at(-1)})`)
      const m = await mig
      t.diagnostic(`migrate: exit ${m.exitCode}, ok=${m.result?.ok}, phases ${JSON.stringify(m.result?.phases)}; the source got the commit acknowledged: ${!/no commit acknowledgement/.test(logSince(from, fromAt))}`)
      assert.equal(m.exitCode, 0, `${JSON.stringify(m.result)}\n${m.stderr}`)
      assert.equal(m.result?.runningOn, to.peerId)
      await waitLog(to, /migration committed: container owned here/, at, 30_000)
      const text = logSince(to, at)
      assert.equal((text.match(/commit failed: the restored container keeps running here/g) ?? []).length, 2, `two failed commits logged:\n${text}`)
      assert.match(text, /commit succeeded after retrying/)
      assert.doesNotMatch(text, /restored copy removed|incoming migration failed/)
      await waitOwner(from, to, 'full', 2, 15_000)
      await assertOnlyOn('full', to, copy!.pid)
      await fs.rm(fill, { force: true })
      await keepsCounting(to, 'full') // its log shim dropped output while the disk was full
      await assertOnlyOn('full', to, copy!.pid)
      await assertNoLeaks()
    } finally {
      await fs.rm(fill, { force: true })
      await removeEverywhere('full')
    }
  })

  test('target restarted (SIGTERM) after restoring, before reporting it: it removes its copy on the way down, the source resumes; one copy, on the source', { timeout: 150_000 }, async (t) => {
    await allUp({ n2: pause('target-adopted') })
    const [from, to] = [n('n1'), n('n2')]
    try {
      await runCounter(from, 'tr')
      const at = logSize(to)
      const mig = migrate(from, 'tr', to)
      await waitLog(to, /MSC_TEST_PAUSE_AT: pausing at target-adopted/, at, 60_000)
      // The dump streamed its pages to n2 and left n1's copy frozen (never running).
      assert.deepEqual(await whereRuns('tr'), { n1: 'paused', n2: 'running' }, 'restored on n2 (pending), dumped and frozen on n1')
      const stopAt = Date.now()
      assert.equal(await c.stop(to), 0, c.logTail(to))
      const stoppedMs = Date.now() - stopAt
      assert.equal((await whereRuns('tr')).n2, undefined, 'n2 removed its copy before it exited')
      const m = await mig
      t.diagnostic(`n2 stopped in ${stoppedMs} ms; migrate: exit ${m.exitCode}, ${m.result?.error?.message}; resumed on the source ${Date.now() - stopAt} ms after the stop began`)
      assert.equal(m.result?.ok, false)
      assert.equal(m.exitCode, 1, 'a failed migration, not a usage error')
      assert.equal(m.result?.runningOn, from.peerId, 'rolled back: runs on the source')
      assert.match(logSince(to, at), /is stopping before it reported the container restored/)
      await setEnv(to, {})
      await c.start(to)
      await c.waitAllAlive(20_000)
      await assertOnlyOn('tr', from)
      await keepsCounting(from, 'tr')
      assertOneSequence(logValues(from, 'tr'), 'tr on n1, resumed from its own dump')
      await assertNoLeaks()
    } finally {
      await removeEverywhere('tr')
    }
  })

  test('target killed after restoring, before reporting it: the source resumes; the restarted target removes its copy', { timeout: 150_000 }, async (t) => {
    await allUp({ n2: pause('target-adopted') })
    const [from, to] = [n('n1'), n('n2')]
    try {
      await runCounter(from, 'tka')
      const at = logSize(to)
      const mig = migrate(from, 'tka', to)
      await waitLog(to, /MSC_TEST_PAUSE_AT: pausing at target-adopted/, at, 60_000)
      await killNode(to)
      const killedAt = Date.now()
      const m = await mig
      assert.equal(m.result?.ok, false, JSON.stringify(m.result))
      assert.equal(m.exitCode, 1, 'a failed migration, not a usage error')
      assert.equal(m.result?.runningOn, from.peerId, 'rolled back: runs on the source')
      // Until n2's node is back, its unowned, unclaimed copy runs too (its node is down).
      const meanwhile = await whereRuns('tka')
      t.diagnostic(`source resumed ${Date.now() - killedAt} ms after the kill; meanwhile runc runs tka on ${JSON.stringify(meanwhile)}`)
      assert.deepEqual(meanwhile, { n1: 'running', n2: 'running' })

      await setEnv(to, {})
      const startAt = Date.now()
      const restartAt = logSize(to)
      await c.start(to)
      const settled = await waitLog(to, /incoming migration settled after restart: the source runs the container/, restartAt, 60_000)
      t.diagnostic(`restarted ${startAt - killedAt} ms after the kill; settled (removed its copy) ${settled - startAt} ms after the restart began: two copies ran for ${settled - killedAt} ms in all`)
      await assertOnlyOn('tka', from)
      await keepsCounting(from, 'tka')
      assertOneSequence(logValues(from, 'tka'), 'tka on n1, resumed from its own dump')
      await assertNoLeaks()
    } finally {
      await removeEverywhere('tka')
    }
  })

  test('source killed after its final dump: no copy runs; its restart makes the dump a checkpoint that msc restore brings back', { timeout: 150_000 }, async (t) => {
    await allUp({ n1: pause('source-dumped') })
    const [from, to] = [n('n1'), n('n2')]
    try {
      await runCounter(from, 'sd')
      const at = logSize(from)
      // The dump writes the pages here (a dump that streams them is the next test).
      const mig = migrate(from, 'sd', to, '--no-stream-pages')
      await waitLog(from, /MSC_TEST_PAUSE_AT: pausing at source-dumped/, at, 60_000)
      const journal = JSON.parse(readFileSync(path.join(from.dataDir, 'tmp', (await c.tmpEntries(from)).find((e) => e.startsWith('mig-out-'))!, 'journal.json'), 'utf8'))
      assert.equal(journal.phase, 'dumped')
      await killNode(from)
      const m = await mig
      assert.notEqual(m.exitCode, 0, 'the migrate command fails with its node')
      // The target drops its half-received migration.
      await waitFor(async () => (await c.tmpEntries(to)).length === 0, 20_000, 'n2 to drop its staging')
      assert.deepEqual(await whereRuns('sd'), {}, 'runs nowhere: the dump stopped it, nothing restored it')

      await setEnv(from, {})
      const restartAt = logSize(from)
      await c.start(from)
      assert.match(logSince(from, restartAt), /the dump is now its checkpoint migration-/)
      await c.waitAllAlive(20_000)
      assert.deepEqual(await whereRuns('sd'), {}, 'nothing restores it automatically')
      const ps = (await c.json<ContainerInfo[]>(from, 'ps')).find((x) => x.name === 'sd')
      assert.equal(ps?.state, 'checkpointed', JSON.stringify(ps))
      assert.match(ps?.lastCheckpoint ?? '', /^migration-/)
      for (const x of [to, n('n3')]) assert.deepEqual((await c.json<ContainerInfo[]>(x, 'ps')).filter((y) => y.name === 'sd'), [], `${x.name} has no sd`)
      const last = logValues(from, 'sd').at(-1)!
      const t0 = Date.now()
      const r = await c.msc(from, 'restore', 'sd')
      assert.equal(r.exitCode, 0, r.stderr)
      t.diagnostic(`after the restart sd is checkpointed (${ps?.lastCheckpoint}); msc restore took ${Date.now() - t0} ms; it went on from ${last}`)
      await assertOnlyOn('sd', from)
      await keepsCounting(from, 'sd')
      assertOneSequence(logValues(from, 'sd'), 'sd on n1, restored from the dump')
      await assertNoLeaks()
    } finally {
      await removeEverywhere('sd')
    }
  })

  test('source killed after a dump that streamed its pages: frozen there, runs nowhere; the restart keeps it frozen, msc restore thaws it', { timeout: 150_000 }, async (t) => {
    await allUp({ n1: pause('source-dumped') })
    const [from, to] = [n('n1'), n('n2')]
    try {
      const pid = await runCounter(from, 'sf')
      const at = logSize(from)
      const mig = migrate(from, 'sf', to)
      await waitLog(from, /MSC_TEST_PAUSE_AT: pausing at source-dumped/, at, 60_000)
      const journal = JSON.parse(readFileSync(path.join(from.dataDir, 'tmp', (await c.tmpEntries(from)).find((e) => e.startsWith('mig-out-'))!, 'journal.json'), 'utf8'))
      assert.equal(journal.phase, 'dumped')
      assert.equal(journal.streamedPages, true, 'the pages went to the target while CRIU dumped')
      await killNode(from)
      const m = await mig
      assert.notEqual(m.exitCode, 0, 'the migrate command fails with its node')
      await waitFor(async () => (await c.tmpEntries(to)).length === 0, 20_000, 'n2 to drop its staging')
      assert.deepEqual(await whereRuns('sf'), { n1: 'paused' }, 'frozen on the source, nowhere else')
      const frozenAt = logValues(from, 'sf').at(-1)!

      await setEnv(from, {})
      const restartAt = logSize(from)
      await c.start(from)
      assert.match(logSince(from, restartAt), /sf is kept frozen here/)
      await c.waitAllAlive(20_000)
      assert.deepEqual(await whereRuns('sf'), { n1: 'paused' }, 'nothing thaws it automatically')
      assert.equal(logValues(from, 'sf').at(-1), frozenAt, 'it printed nothing while frozen')
      const r = await c.msc(from, 'restore', 'sf')
      assert.equal(r.exitCode, 0, r.stderr)
      t.diagnostic(`frozen at ${frozenAt}; msc restore thawed it`)
      await assertOnlyOn('sf', from, pid)
      await keepsCounting(from, 'sf')
      assertOneSequence(logValues(from, 'sf'), 'sf on n1, thawed')
      await assertNoLeaks()
    } finally {
      await removeEverywhere('sf')
    }
  })

  test('the page connection cut while CRIU dumps: the dump fails, the container thaws on the source and goes on', { timeout: 150_000 }, async (t) => {
    await allUp({ n1: { MSC_TEST_CUT_STREAMED_PAGES_AFTER: '65536' } })
    const [from, to] = [n('n1'), n('n2')]
    try {
      const pid = await runCounter(from, 'pc')
      const m = await migrate(from, 'pc', to)
      t.diagnostic(`exit ${m.exitCode}: ${m.result?.error?.message}; phases ${JSON.stringify(m.result?.phases)}`)
      assert.notEqual(m.exitCode, 0, 'the migration fails')
      assert.equal(m.result?.ok, false)
      assert.equal(m.result?.runningOn, from.peerId, 'it says the container runs on the source')
      assert.ok(m.result != null && !('restore' in m.result.phases), `it never asked the target to restore: ${JSON.stringify(m.result?.phases)}`)
      await assertOnlyOn('pc', from, pid)
      await keepsCounting(from, 'pc')
      assertOneSequence(logValues(from, 'pc'), 'pc on n1, thawed after the failed dump')
      await assertNoLeaks()
    } finally {
      await removeEverywhere('pc')
    }
  })

  test('source killed after the target restored: its restart finishes the release, the target settles it as its own', { timeout: 150_000 }, async (t) => {
    await allUp({ n1: pause('source-restored') })
    const [from, to] = [n('n1'), n('n2')]
    try {
      await runCounter(from, 'sr')
      const at = logSize(from)
      const toAt = logSize(to)
      const mig = migrate(from, 'sr', to)
      await waitLog(from, /MSC_TEST_PAUSE_AT: pausing at source-restored/, at, 60_000)
      const copy = (await c.runcList(to)).find((x) => x.id === 'sr')
      assert.equal(copy?.status, 'running', 'restored on n2')
      await killNode(from)
      const killedAt = Date.now()
      await mig
      await waitLog(to, /no decision from the source; settling it from membership/, toAt, 30_000)
      await new Promise((resolve) => setTimeout(resolve, 2_000))
      assert.deepEqual(await whereRuns('sr'), { n1: 'paused', n2: 'running' }, 'n2 keeps its copy, unowned, while its source is away; n1 has its frozen one, which never runs again')
      assert.doesNotMatch(logSince(to, toAt), /settled from membership/, 'and waits for the source to show what it did')

      await setEnv(from, {})
      const startAt = Date.now()
      const restartAt = logSize(from)
      await c.start(from)
      assert.match(logSince(from, restartAt), /after n2 had restored it: past the point of no return, so it was released to n2/)
      const settled = await waitLog(to, /migration committed: container owned here/, toAt, 60_000)
      const seen = await waitOwner(from, to, 'sr', 2, 30_000)
      t.diagnostic(`source restarted ${startAt - killedAt} ms after the kill; n2 committed ${settled - startAt} ms after the restart began (${settled - killedAt} ms after the kill); n1 saw it at epoch 2 after ${seen - startAt} ms`)
      await assertOnlyOn('sr', to, copy!.pid)
      const logs = await c.msc(from, 'logs', 'sr')
      assert.match(logs.stderr, /sr moved to n2/, 'n1 knows where it went')
      await keepsCounting(to, 'sr')
      assertOneSequence(logValues(to, 'sr'), 'sr on n2')
      await assertNoLeaks()
    } finally {
      await removeEverywhere('sr')
    }
  })
})
