/**
 * A post-copy migration whose page transfer fails after the target resumed the
 * container: the link between the nodes is cut mid-transfer (the source's node runs
 * with MSC_TEST_CUT_PAGES_AFTER, which cuts its page stream after 4 MiB). The target's
 * copy lacks pages and cannot go on; the source still holds the whole memory, frozen.
 * What a user must see:
 *   - the migration reports failure and says the container runs on the source;
 *   - exactly one copy afterwards, on the source (msc ps and runc's own list);
 *   - never two copies at once: seen by an observer on a third host, once the target's
 *     copy has sent a datagram, the source sends none until the target's copy has
 *     sent its last;
 *   - the memory is whole: the beacon's checksum after a full pass over its 64 MiB is
 *     the one it started with, every datagram from the source carried it, and it is
 *     the same process (one incarnation);
 *   - the target's copy never runs on pages it lacks: its datagrams carry the same
 *     checksum (it is frozen before CRIU's lazy-pages daemon hears of the cut);
 *   - what the target's copy did meanwhile is lost: the source goes on from the freeze
 *     (the observer may see those sequence numbers again), as protocols/migrate.md says.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), gcc with static glibc, iproute2, nsenter,
 * fs.pipe-max-size >= 16 MiB for post-copy.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { Testbed } from '../testbed/testbed.ts'
import { startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { Observer } from '../helpers/observer.ts'
import { writeBeaconBundle } from '../../src/bundles/beacon.ts'
import type { ContainerInfo, MigrationResultInfo } from '../../src/api/types.ts'

const NAME = 'beacon'
const MEMORY_MIB = 64
const CUT_AFTER = 4 * 1024 * 1024

let c: Cluster
let obs: Observer
const n = (name: string): ClusterNode => c.node(name)

before(async () => {
  await Testbed.destroyStale()
  c = await startCluster({
    hosts: 3,
    args: ['--mdns-interval', '1', '--ping-interval', '1', '--ping-timeout', '10'],
    nodeEnv: { n1: { MSC_TEST_CUT_PAGES_AFTER: String(CUT_AFTER) } }
  })
  await c.waitAllAlive(20_000)
  obs = await Observer.start(c.tb, n('n3').host, { port: 9001 })
})

after(async () => {
  await obs?.stop()
  await c?.destroy()
})

/** Waits for a verification pass of the beacon on `host` that began after `sinceMs`. */
async function freshChecksum (host: ClusterNode, sinceMs: number): Promise<string> {
  const start = obs.arrivals.filter((a) => a.atMs <= sinceMs).at(-1)?.pass ?? -1
  await waitFor(() => {
    const a = obs.last()
    return a != null && a.atMs > sinceMs && a.from === host.host.ip && a.pass >= start + 2
  }, 60_000, `a full memory pass by the beacon on ${host.name} (last: ${JSON.stringify(obs.last())})`)
  return obs.last()!.checksum
}

test('a post-copy migration cut mid-transfer: the source goes on with the whole memory, never two copies at once', { timeout: 300_000 }, async (t) => {
  const bundle = path.join(c.root, 'bundles', NAME)
  await writeBeaconBundle(bundle, { memoryMiB: MEMORY_MIB, target: obs.target, intervalMs: 5 })
  const run = await c.msc(n('n1'), 'run', NAME, bundle)
  assert.equal(run.exitCode, 0, run.stderr)
  const initial = await freshChecksum(n('n1'), Date.now())

  const t0 = Date.now()
  const r = await c.mscTimed(n('n1'), 240_000, 'peer', 'migrate', NAME, '--to', 'n2', '--strategy', 'post-copy', '--json')
  const what = `exit ${r.exitCode}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\nn1 log:\n${c.logTail(n('n1'), 25)}\nn2 log:\n${c.logTail(n('n2'), 25)}`
  const result = JSON.parse(r.stdout) as MigrationResultInfo
  assert.notEqual(r.exitCode, 0, `the migration fails: ${what}`)
  assert.equal(result.ok, false, what)
  assert.equal(result.runningOn, n('n1').peerId, `it says the container runs on the source: ${what}`)
  assert.match(`${result.error?.message ?? ''} ${(result.error?.details ?? []).join(' ')}`, /page|lazy/i, `the error names the page transfer: ${what}`)

  // One copy, on n1, running.
  await waitFor(async () => (await c.runcList(n('n2'))).every((e) => e.id !== NAME), 30_000, 'n2 removed its copy')
  for (const x of c.nodes) {
    const ps = (await c.json<ContainerInfo[]>(x, 'ps')).filter((e) => e.name === NAME).map((e) => e.state)
    const rl = (await c.runcList(x)).filter((e) => e.id === NAME).map((e) => e.status)
    if (x.name === 'n1') {
      assert.deepEqual(ps, ['running'], `n1: msc ps: ${what}`)
      assert.deepEqual(rl, ['running'], 'n1: runc runs it')
    } else {
      assert.deepEqual(ps, [], `${x.name}: msc ps does not list it`)
      assert.deepEqual(rl, [], `${x.name}: runc has no copy`)
    }
  }

  // The whole memory, the same process.
  const t1 = Date.now()
  assert.equal(await freshChecksum(n('n1'), t1), initial, 'the memory checksum after a full pass on n1 is the one the beacon started with')
  const seen = obs.arrivals.filter((a) => a.atMs >= t0)
  const fromTarget = seen.filter((a) => a.from === n('n2').host.ip)
  const report = obs.report({ fromMs: t0, toMs: Date.now() })
  assert.equal(report.incarnations.length, 1, `one incarnation: the source's process went on, not a new start: ${JSON.stringify(report.incarnations)}`)
  // Every datagram, from either copy, carries the memory the beacon started with: the
  // target froze its copy before CRIU's lazy-pages daemon (and its userfaultfd) went,
  // so it never read a page it lacked as zeros.
  const sourceChecksums = new Set(seen.filter((a) => a.from === n('n1').host.ip).map((a) => a.checksum))
  assert.deepEqual([...sourceChecksums], [initial], 'every datagram from the source carried the memory checksum the beacon started with')
  const targetChecksums = [...new Set(fromTarget.map((a) => a.checksum))].filter((x) => x !== initial)
  assert.deepEqual(targetChecksums, [], `the target's copy never ran on missing pages: ${fromTarget.length} datagrams from it`)

  // Never two copies at once: the senders do not interleave.
  if (fromTarget.length > 0) {
    const first = fromTarget[0]!.atMs
    const last = fromTarget.at(-1)!.atMs
    const sourceMeanwhile = seen.filter((a) => a.from === n('n1').host.ip && a.atMs > first && a.atMs < last)
    assert.deepEqual(sourceMeanwhile.map((a) => a.seq), [], `n1 sent nothing while n2's copy ran (${new Date(first).toISOString()}..${new Date(last).toISOString()})`)
  }
  assert.ok(seen.filter((a) => a.atMs > t1).every((a) => a.from === n('n1').host.ip), 'after the failure only n1 sends')
  t.diagnostic(`the target's copy sent ${fromTarget.length} datagrams before it was removed; the observer saw ${report.repeated.length} sequence numbers again ` +
    `(the source went on from the freeze); longest gap ${report.longestGapMs.toFixed(0)} ms; migration ${result.totalMs} ms`)
})
