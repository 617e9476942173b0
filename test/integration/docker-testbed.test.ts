// The docker testbed (docker/testbed.sh, docker/compose.yaml) end to end, as a user runs
// it: on a machine where Docker may never have been installed, the script installs
// Debian's docker.io, starts dockerd, builds the node image with no registry, starts
// three node containers, runs the counter on node1 and migrates it to node2. Checked
// here as a user would: afterwards the counter runs on node2 and nowhere else, and its
// count went on (no restart at 1, no number twice, still counting). `--down` removes
// everything, also when the test fails, and stops dockerd again if it was not running.
// Needs root. The first run takes a few minutes (apt, debootstrap, the image build).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'

const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)))
const TESTBED = path.join(ROOT, 'docker', 'testbed.sh')
const NODES = ['node1', 'node2', 'node3']
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function testbed (args: string[], timeoutMs: number): Promise<{ exitCode: number | undefined; all: string }> {
  const r = await execa('bash', [TESTBED, ...args], { all: true, reject: false, timeout: timeoutMs, stdin: 'ignore' })
  return { exitCode: r.exitCode, all: String(r.all ?? '') }
}

/** Runs a command in a node's container; throws with its output when it fails. */
async function inNode (node: string, cmd: string[]): Promise<string> {
  const r = await testbed(['exec', node, ...cmd], 60_000)
  if (r.exitCode !== 0) throw new Error(`${cmd.join(' ')} on ${node} exited ${String(r.exitCode)}: ${r.all}`)
  return r.all
}

/** What runc itself says runs in a node's container: container id -> status. */
async function runcList (node: string): Promise<Map<string, string>> {
  const out = await inNode(node, ['runc', '--root', '/var/lib/msc/runc', 'list', '--format', 'json'])
  const list = JSON.parse(out.trim() === '' ? 'null' : out) as Array<{ id: string; status: string }> | null
  return new Map((list ?? []).map((c) => [c.id, c.status]))
}

/** The counter's output on a node (`msc logs counter`), as numbers. */
async function counts (node: string): Promise<number[]> {
  const out = await inNode(node, ['msc', 'logs', 'counter'])
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '').map(Number)
}

async function engineAnswers (): Promise<boolean> {
  const r = await execa('docker', ['version', '--format', '{{.Server.Version}}'], { reject: false, timeout: 20_000 })
  return r.exitCode === 0
}

test('docker testbed: the counter migrates from node1 to node2 and counts on', { timeout: 20 * 60_000 }, async () => {
  const engineBefore = await engineAnswers().catch(() => false)
  try {
    const run = await testbed([], 15 * 60_000)
    assert.equal(run.exitCode, 0, `docker/testbed.sh failed:\n${run.all}`)
    // What the script showed on node1 before the migration, e.g. "counter on node1: 1 2 3 4".
    const shown = /counter on node1: ([\d ]+)/.exec(run.all)
    assert.ok(shown, `no counter output from node1 in:\n${run.all}`)
    const beforeMigration = Math.max(...shown[1]!.trim().split(/\s+/).map(Number))
    assert.ok(beforeMigration >= 1, shown[0])

    // Exactly one copy, on node2: the source lets go of its frozen copy once the target
    // runs it, so wait (bounded) for that, then ask runc in every node container.
    // The counter is replicated (the nodes' default, one standby), so each checkpoint
    // pauses it for a moment: paused counts as running here; that it goes on counting
    // is checked below.
    const live = (s: string | undefined): string | undefined => s === 'paused' ? 'running' : s
    let where = new Map<string, string | undefined>()
    for (let i = 0; i < 60; i++) {
      where = new Map()
      for (const n of NODES) where.set(n, live((await runcList(n)).get('counter')))
      if (where.get('node2') === 'running' && where.get('node1') === undefined && where.get('node3') === undefined) break
      await sleep(500)
    }
    assert.deepEqual(Object.fromEntries(where), { node1: undefined, node2: 'running', node3: undefined })
    assert.match(await inNode('node2', ['msc', 'ps']), /counter\s+(running|paused)\s/)

    // One count from 1 on, carried along: no restart at 1, no number twice or missing,
    // past what node1 printed, and still going up on node2.
    const first = await counts('node2')
    assert.deepEqual(first, first.map((_, i) => i + 1), `not one unbroken count: ${first.join(' ')}`)
    assert.ok(first.length > beforeMigration, `node2 shows ${first.length} numbers, node1 had shown ${beforeMigration}`)
    let later = first
    for (let i = 0; i < 60 && later.length <= first.length; i++) {
      await sleep(500)
      later = await counts('node2')
    }
    assert.ok(later.length > first.length, `the counter stopped at ${first.at(-1) ?? 'nothing'} on node2`)
    assert.deepEqual(later, later.map((_, i) => i + 1), `not one unbroken count: ${later.join(' ')}`)
  } finally {
    const down = await testbed(['--down'], 5 * 60_000)
    assert.equal(down.exitCode, 0, `docker/testbed.sh --down failed:\n${down.all}`)
  }
  // --down leaves Docker as it found it: dockerd stopped again if it was not running.
  assert.equal(await engineAnswers().catch(() => false), engineBefore)
  if (engineBefore) {
    const left = await execa('docker', ['ps', '-aq', '--filter', 'label=com.docker.compose.project=msctestbed'], { reject: false })
    assert.equal(String(left.stdout).trim(), '', 'testbed containers left behind')
  }
})
