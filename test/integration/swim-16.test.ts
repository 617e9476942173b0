/**
 * Sixteen msc nodes, one per network-namespace host of a Testbed, found through one
 * bootstrap node (no mDNS), with the default probe interval (1 s) and ping timeout
 * (5 s): SWIM membership at a size where the old full heartbeats flapped (issue 12).
 * All see each other alive; a node stopped with SIGSTOP for 2 s (less than the
 * suspicion timeout) is never declared dead by anyone; a killed node is seen dead by
 * all. Timings are reported, not asserted (benchmarks/membership-scale.ts measures them).
 * Needs root, iproute2, nsenter, iptables/ebtables and runc (test/testbed/README.md);
 * MSC_SWIM_16=0 skips it.
 */
import { after, before, describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { Testbed } from '../testbed/testbed.ts'
import { sleep, startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.ts'

const NODES = 16
const ARGS = ['--no-mdns']

/** Transitions `node` logged about `subject` to `state` ("peer dead" lines of its JSON log) since `from`. */
async function logged (node: ClusterNode, subject: ClusterNode, state: string, from: number): Promise<number> {
  const text = await readFile(node.logFile, 'utf8').catch(() => '')
  let n = 0
  for (const line of text.split('\n')) {
    if (!line.includes(`"peer ${state}"`) || !line.includes(subject.peerId)) continue
    try {
      const o = JSON.parse(line) as { msg?: string; time?: number; peer?: string }
      if (o.msg === `peer ${state}` && o.peer === subject.peerId && (o.time ?? 0) >= from) n++
    } catch {}
  }
  return n
}

function report (t: TestContext, what: string, ms: Record<string, number>): void {
  t.diagnostic(`${what}: ${Object.entries(ms).map(([k, v]) => `${k}=${v}`).join(', ')}`)
}

before(async () => {
  await Testbed.destroyStale()
})

// About 1.5 minutes. Until the join storm was fixed (every member published its
// heartbeat to every member on each join), the 13th node did not open its API socket
// within the harness's 30 s on this 2-core machine; MSC_SWIM_16=0 skips the suite.
const RUN = process.env.MSC_SWIM_16 !== '0'

describe(`${NODES} nodes, SWIM membership`, { skip: RUN ? false : 'MSC_SWIM_16=0' }, () => {
  let c: Cluster

  before(async () => {
    c = await startCluster({ hosts: NODES, args: ARGS, start: false })
    const [first, ...rest] = c.nodes as [ClusterNode, ...ClusterNode[]]
    await c.start(first)
    // One at a time: several Node starts at once on a 2-core machine, beside the running
    // nodes, took more than the harness's 30 s to open the API socket.
    for (const x of rest) await c.start(x, [...ARGS, '--bootstrap', first.addr])
  })
  after(async () => {
    await c?.destroy()
  })

  test('all see each other alive', { timeout: 120_000 }, async (t) => {
    const lastStart = Math.max(...(await Promise.all(c.nodes.map(async (x) => await c.statusApi(x)))).map((s) => Date.parse(s.startedAt)))
    const views = await c.waitAllAlive(90_000)
    let converged = -Infinity
    for (const [observer, list] of views) {
      assert.equal(list.length, NODES - 1, `${observer} lists the ${NODES - 1} others: ${list.map((p) => `${p.name}:${p.state}`).join(' ')}`)
      for (const p of list) converged = Math.max(converged, Date.parse(p.stateSince) - lastStart)
    }
    report(t, 'all alive', { lastAliveAfterLastStartMs: converged })
  })

  test('a node stopped (SIGSTOP) for 2 s is never declared dead', { timeout: 90_000 }, async (t) => {
    await c.waitAllAlive(60_000)
    const victim = c.node('n5')
    const others = c.nodes.filter((x) => x !== victim)
    const pid = victim.proc?.pid
    assert.ok(pid != null, 'n5 runs')
    const from = Date.now()
    process.kill(pid, 'SIGSTOP')
    try {
      await sleep(2000)
    } finally {
      process.kill(pid, 'SIGCONT')
    }
    // Past the longest suspicion timeout (5 s x log10(16)) from the pause, then some.
    await sleep(10_000)
    let suspected = 0
    for (const o of others) {
      assert.equal(await logged(o, victim, 'dead', from), 0, `${o.name} declared the paused n5 dead:\n${c.logTail(o)}`)
      suspected += await logged(o, victim, 'suspect', from)
    }
    report(t, 'pause of 2 s', { suspicionsOfN5: suspected })
    await c.waitAllAlive(30_000)
  })

  test('a killed node is seen dead by all', { timeout: 90_000 }, async (t) => {
    await c.waitAllAlive(60_000)
    const victim = c.node(`n${NODES}`)
    const others = c.nodes.filter((x) => x !== victim)
    const killedAt = Date.now()
    await c.tb.kill(victim.host)
    const seen = await Promise.all(others.map(async (o) => await c.waitState(o, victim, 'dead', 60_000)))
    const ms = seen.map((p) => Date.parse(p.stateSince) - killedAt).sort((a, b) => a - b)
    report(t, 'killed node dead', { firstMs: ms[0]!, medianMs: ms[Math.floor(ms.length / 2)]!, lastMs: ms.at(-1)! })
    // The others still see each other.
    await c.waitAllAlive(30_000, others)
  })
})
