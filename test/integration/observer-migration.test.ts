/**
 * A migration as a client outside both nodes sees it. Three nodes formed with a cluster
 * key (`--psk`: every connection goes through the private-network cipher); a beacon
 * container on n1 holds 256 MiB of seeded memory and sends a datagram to an observer on
 * n3's host every 5 ms (src/bundles/beacon.c, test/helpers/observer.ts). It moves
 * n1 -> n2 with stop-copy, then n2 -> n1 with post-copy. After each hop:
 *   - both nodes still run and answer (a 256 MiB transfer through pnet used to kill the
 *     source with a RangeError from the cipher's WebAssembly memory);
 *   - the observer saw no sequence number twice (never two copies) and none go back
 *     (no restart), and the datagrams now come from the target's address only;
 *   - the memory checksum, re-verified by a full pass over the memory after the hop,
 *     is the one the beacon started with;
 *   - exactly one node runs it (msc ps and runc's own list).
 * The longest gap the observer saw per strategy is printed (t.diagnostic), not asserted.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), gcc with static glibc, iproute2, nsenter,
 * fs.pipe-max-size >= 16 MiB for post-copy.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { Testbed } from '../testbed/testbed.ts'
import { startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { Observer, type ObserverReport } from '../helpers/observer.ts'
import { writeBeaconBundle } from '../../src/bundles/beacon.ts'
import type { ContainerInfo, MigrationResultInfo } from '../../src/api/types.ts'

// A 256 MiB post-copy moves its pages for a minute or more here while the beacon and
// the page tunnel load both cores; peers are not declared dead (which cuts their
// connections, the page stream with them) for a few seconds of slow heartbeats.
const NODE_ARGS = ['--mdns-interval', '1', '--ping-interval', '1', '--ping-timeout', '10']
const NAME = 'beacon'
const MEMORY_MIB = 256
const INTERVAL_MS = 5
const OBSERVER_PORT = 9000
/**
 * What kills a node when pnet's cipher is handed too much at once, and the line Node
 * prints after any uncaught exception.
 */
const CRASH_SIGNS = /RangeError|WebAssembly\.Memory|Maximum memory size exceeded|^Node\.js v\d+/

let c: Cluster
let obs: Observer
const n = (name: string): ClusterNode => c.node(name)

/** `msc peer migrate NAME --to TO --strategy S --json` against `from`, asserted to have worked (Cluster.migrate). */
async function migrate (from: ClusterNode, to: ClusterNode, strategy: string): Promise<MigrationResultInfo> {
  return await c.migrate(from, to, NAME, strategy, { logLines: 20 })
}

/** The node's process runs, its API answers, and its log shows no crash. */
async function assertSurvived (node: ClusterNode): Promise<void> {
  const p = node.proc
  assert.ok(p != null && p.exitCode == null && p.signalCode == null, `${node.name} still runs (exit ${p?.exitCode ?? p?.signalCode}):\n${c.logTail(node, 40)}`)
  const s = await c.statusApi(node)
  assert.equal(s.peerId, node.peerId, `${node.name} answers on its API`)
  const log = await fs.readFile(node.logFile, 'utf8')
  const bad = log.split('\n').filter((l) => CRASH_SIGNS.test(l))
  assert.deepEqual(bad, [], `${node.name}'s log shows no crash`)
}

/** Exactly one copy: `owner` runs it (msc ps and runc), no other node has it in either. */
async function assertOnlyOn (owner: ClusterNode, context = ''): Promise<void> {
  for (const x of c.nodes) {
    const ps = (await c.json<ContainerInfo[]>(x, 'ps')).filter((e) => e.name === NAME)
    const rl = (await c.runcList(x)).filter((e) => e.id === NAME)
    if (x === owner) {
      const where = `${context}${x.name}: msc ps on every node: ${JSON.stringify(await everywhere())}\n${x.name} log:\n${c.logTail(x, 15)}`
      assert.deepEqual(ps.map((e) => e.state), ['running'], `${x.name}: msc ps lists ${NAME} running once: ${where}`)
      assert.deepEqual(rl.map((e) => e.status), ['running'], `${x.name}: runc runs ${NAME}: ${JSON.stringify(rl)}`)
    } else {
      assert.deepEqual(ps, [], `${x.name}: msc ps does not list ${NAME}`)
      assert.deepEqual(rl, [], `${x.name}: runc has no ${NAME}`)
    }
  }
}

async function everywhere (): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {}
  for (const x of c.nodes) out[x.name] = (await c.json<ContainerInfo[]>(x, 'ps')).map((e) => `${e.name}:${e.state}`)
  return out
}

/**
 * Waits until the beacon, sending from `host`, reported a verification pass that began
 * after `sinceMs`: its checksum covers memory as it is now, every page read back.
 * A pass that was under way at `sinceMs` may have read part of the memory before.
 */
async function freshChecksum (host: ClusterNode, sinceMs: number): Promise<string> {
  const passAt = (): number => obs.arrivals.filter((a) => a.atMs <= sinceMs).at(-1)?.pass ?? -1
  const start = passAt()
  await waitFor(() => {
    const a = obs.last()
    return a != null && a.atMs > sinceMs && a.from === host.host.ip && a.pass >= start + 2
  }, 30_000, `a full memory pass by the beacon on ${host.name} after ${new Date(sinceMs).toISOString()} (last: ${JSON.stringify(obs.last())})`)
  return obs.last()!.checksum
}

/** What a client saw: never two copies, never a restart, never a changed memory checksum. */
function assertClean (r: ObserverReport, what: string): void {
  const brief = JSON.stringify({ ...r, longestGap: undefined, restarts: r.restarts.slice(0, 5), checksumChanges: r.checksumChanges.slice(0, 5), repeated: r.repeated.slice(0, 20) })
  assert.ok(r.arrivals > 0, `${what}: the observer heard the beacon`)
  assert.deepEqual(r.repeated, [], `${what}: no sequence number twice (two copies running): ${brief}`)
  assert.deepEqual(r.restarts, [], `${what}: no sequence going back (a restart): ${brief}`)
  assert.deepEqual(r.checksumChanges, [], `${what}: the memory checksum never changed: ${brief}`)
  assert.equal(r.incarnations.length, 1, `${what}: one incarnation of the beacon: ${brief}`)
}

before(async () => {
  await Testbed.destroyStale()
})

describe('a 256 MiB container migrated with --psk, seen by an observer on a third host', () => {
  let initialChecksum = ''
  const gaps: Array<{ strategy: string; hop: string; observerGapMs: number; downtimeMs: number | null; totalMs: number; MB: number }> = []

  before(async () => {
    c = await startCluster({ hosts: 3, args: NODE_ARGS })
    await c.waitAllAlive(20_000)
    obs = await Observer.start(c.tb, n('n3').host, { port: OBSERVER_PORT })
  })

  after(async () => {
    await obs?.stop()
    await c?.destroy()
  })

  test('the nodes run with a cluster key (pnet on every connection)', async () => {
    assert.notEqual(c.keyFile, '', 'startCluster made a key file')
    for (const x of c.nodes) {
      const argv = (await fs.readFile(`/proc/${x.proc!.pid}/cmdline`, 'utf8')).split('\0')
      const i = argv.indexOf('--psk')
      assert.ok(i >= 0 && argv[i + 1] === c.keyFile, `${x.name} runs with --psk ${c.keyFile}: ${argv.join(' ')}`)
      assert.equal((await c.statusApi(x)).cluster.mode, 'key', `${x.name}: its cluster is formed by the key`)
    }
  })

  test(`the beacon starts on n1 with ${MEMORY_MIB} MiB and the observer on n3 hears it`, { timeout: 60_000 }, async () => {
    const bundle = path.join(c.root, 'bundles', NAME)
    await writeBeaconBundle(bundle, { memoryMiB: MEMORY_MIB, target: obs.target, intervalMs: INTERVAL_MS })
    const run = await c.msc(n('n1'), 'run', NAME, bundle)
    assert.equal(run.exitCode, 0, run.stderr)
    initialChecksum = await freshChecksum(n('n1'), Date.now())
    const r = obs.report()
    assertClean(r, 'on n1')
    assert.deepEqual(r.senders, [n('n1').host.ip], 'datagrams come from n1')
    await assertOnlyOn(n('n1'))
  })

  const hops: Array<[string, string, string]> = [['n1', 'n2', 'stop-copy'], ['n2', 'n1', 'post-copy']]
  for (const [from, to, strategy] of hops) {
    test(`${strategy} ${from} -> ${to}: both nodes survive, one copy, same memory, no repeat nor restart`, { timeout: 300_000 }, async (t) => {
      assert.notEqual(initialChecksum, '', 'the beacon started (previous test)')
      const src = n(from)
      const dst = n(to)
      const t0 = Date.now()
      const result = await migrate(src, dst, strategy)
      const t1 = Date.now()
      if (strategy === 'stop-copy') {
        assert.ok(result.bytes >= MEMORY_MIB * 1024 * 1024, `the images (${result.bytes} bytes) carried the ${MEMORY_MIB} MiB through pnet`)
      } else if (result.streamedPages === true) {
        // Every lazy page crossed the page link before the source released the container.
        assert.ok(result.bytes >= MEMORY_MIB * 1024 * 1024, `the page link (${result.bytes} bytes in all) carried the ${MEMORY_MIB} MiB through pnet`)
      }
      await assertSurvived(src)
      await assertSurvived(dst)
      await assertOnlyOn(dst, `after the migration (${JSON.stringify(result)}): `)

      const checksum = await freshChecksum(dst, t1)
      assert.equal(checksum, initialChecksum, `memory checksum after ${strategy} (a full pass on ${to}) is the one the beacon started with`)

      const during = obs.report({ fromMs: t0, toMs: Date.now() })
      assertClean(during, `${strategy} ${from} -> ${to}`)
      const afterHop = obs.arrivals.filter((a) => a.atMs > t1)
      assert.ok(afterHop.length > 0 && afterHop.every((a) => a.from === dst.host.ip), `after the hop only ${dst.name} (${dst.host.ip}) sends: ${JSON.stringify([...new Set(afterHop.map((a) => a.from))])}`)
      await assertOnlyOn(dst)
      await c.waitAllAlive(15_000)

      gaps.push({ strategy, hop: `${from}->${to}`, observerGapMs: Math.round(during.longestGapMs), downtimeMs: result.downtimeMs, totalMs: result.totalMs, MB: Math.round(result.bytes / 1e5) / 10 })
      t.diagnostic(`${strategy} ${from}->${to}: longest gap seen by the observer ${during.longestGapMs.toFixed(1)} ms ` +
        `(msc downtimeMs ${result.downtimeMs ?? '-'}, totalMs ${result.totalMs}, ${(result.bytes / 1e6).toFixed(1)} MB, ` +
        `datagrams lost ${during.missing}, phases ${JSON.stringify(result.phases)})`)
    })
  }

  test('the whole run: one sequence, one memory, no copy left behind', { timeout: 30_000 }, async (t) => {
    assert.equal(gaps.length, hops.length, 'every hop ran (previous tests)')
    const r = obs.report()
    assertClean(r, 'whole run')
    assert.equal(r.checksums[0], initialChecksum)
    const turns = obs.arrivals.map((a) => a.from).filter((ip, i, all) => i === 0 || all[i - 1] !== ip)
    assert.deepEqual(turns, ['n1', 'n2', 'n1'].map((x) => n(x).host.ip), 'n1, then n2, then n1 sent, each in turn, never two at once')
    // Still one stream: a second of arrivals, no sequence number twice.
    const t0 = Date.now()
    await waitFor(() => (obs.last()?.atMs ?? 0) > t0 + 1000, 10_000, 'another second of datagrams')
    assertClean(obs.report({ fromMs: t0 }), 'after both hops')
    await assertOnlyOn(n('n1'))
    for (const x of c.nodes) await assertSurvived(x)
    t.diagnostic(`observer: ${r.arrivals} datagrams, seq ${r.firstSeq}..${r.lastSeq}, ${r.missing} lost; per hop: ${JSON.stringify(gaps)}`)
  })
})
