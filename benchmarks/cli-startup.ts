/**
 * CLI start-up: the wall time of `msc --version` and `msc ps` (and `msc status`) as a
 * shell script or a user would run them, against `node -e 0` on the same Node in the
 * same run. Target: every command below 2x `node -e 0`.
 *
 * Cases (each a fresh process, started the way a user starts it: bin/msc, a /bin/sh
 * script that execs the project's Node):
 *   node -e 0        the baseline: Node starting and exiting, nothing loaded
 *   --version        commander and msc's command table, nothing else
 *   ps (no node)     `msc ps` against an API socket that does not exist (exit 3)
 *   ps               `msc ps` against a running node (root and runc needed; a node is
 *                    started for the run on loopback, mDNS off, and stopped after)
 *   status           `msc status` against that node
 * Every round runs every case once, in a rotated order; one unrecorded warm-up run of
 * each case first (it also fills Node's compile cache, as the first run after set-up
 * does). Medians and 90th percentiles; ratios are case median / baseline median.
 *
 * Writes benchmarks/results/cli-startup-<timestamp>.json (everything) and .csv (one
 * line per sample: round,case,ms).
 *
 * Usage: node benchmarks/cli-startup.ts [--runs 20] [--no-node] [--msc PATH]
 * (--msc measures another checkout's bin/msc, e.g. an older commit unpacked elsewhere)
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { log, machineInfo, median, parseFlags, ratio, round, runBenchmark, table, writeResults, ROOT } from './lib.ts'
import { plotAfterRun } from './plot.ts'

const USAGE = `usage: node benchmarks/cli-startup.ts [--runs 20] [--no-node] [--msc PATH]
  --runs N     rounds (every case once per round)
  --no-node    skip the cases that need a running node (they need root and runc)
  --msc PATH   the msc launcher to measure (default: this checkout's bin/msc)
`

interface Case {
  name: string
  cmd: string
  args: string[]
  expectExit: number
}

/** Wall time from spawn to exit of one process, in ms; its exit code is checked. */
async function timeOne (c: Case, env: NodeJS.ProcessEnv): Promise<number> {
  const t0 = performance.now()
  const code = await new Promise<number | null>((resolve, reject) => {
    const p = spawn(c.cmd, c.args, { stdio: 'ignore', env })
    p.once('error', reject)
    p.once('exit', (exitCode) => resolve(exitCode))
  })
  const ms = performance.now() - t0
  if (code !== c.expectExit) throw new Error(`${c.name}: ${c.cmd} ${c.args.join(' ')} exited ${code}, expected ${c.expectExit}`)
  return ms
}

function percentile (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] ?? Number.NaN
}

async function main (): Promise<void> {
  const o = parseFlags(process.argv.slice(2), { runs: 20, node: true, msc: path.join(ROOT, 'bin', 'msc') }, USAGE)
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error('--runs must be a positive integer')
  const machine = machineInfo()
  const msc = path.resolve(o.msc)
  const env = { ...process.env }
  delete env.MSC_DATA_DIR
  delete env.MSC_API_SOCKET

  const cases: Case[] = [
    { name: 'node -e 0', cmd: process.execPath, args: ['-e', '0'], expectExit: 0 },
    { name: '--version', cmd: msc, args: ['--version'], expectExit: 0 },
    { name: 'ps (no node)', cmd: msc, args: ['ps', '--api-socket', path.join(os.tmpdir(), 'msc-bench-no-such-node.sock')], expectExit: 3 }
  ]

  // A node for `ps` and `status` to talk to: the test harness's, which cleans up
  // everything it started (node, data dir, cgroups) in destroyAllNodes.
  let harness: typeof import('../test/helpers/node-harness.ts') | null = null
  if (o.node) {
    if (process.getuid?.() !== 0) throw new Error('the cases with a running node need root (runc); run as root or pass --no-node')
    harness = await import('../test/helpers/node-harness.ts')
    log('starting a node (loopback, mDNS off)')
    const node = await harness.startNode()
    cases.push({ name: 'ps', cmd: msc, args: ['ps', '--data-dir', node.dataDir], expectExit: 0 })
    cases.push({ name: 'status', cmd: msc, args: ['status', '--data-dir', node.dataDir], expectExit: 0 })
  }

  const samples: Array<{ round: number; case: string; ms: number }> = []
  try {
    log(`warm-up: each case once (${msc})`)
    for (const c of cases) await timeOne(c, env)
    for (let r = 0; r < o.runs; r++) {
      for (let i = 0; i < cases.length; i++) {
        const c = cases[(i + r) % cases.length]!
        samples.push({ round: r, case: c.name, ms: round(await timeOne(c, env), 2) })
      }
    }
  } finally {
    await harness?.destroyAllNodes()
  }
  machine.loadEnd = os.loadavg().map((x) => round(x, 2))

  const of = (name: string): number[] => samples.filter((s) => s.case === name).map((s) => s.ms)
  const base = median(of('node -e 0'))
  const rows = cases.map((c) => ({
    case: c.name,
    'median ms': round(median(of(c.name)), 1),
    'p90 ms': round(percentile(of(c.name), 0.9), 1),
    'x node -e 0': ratio(median(of(c.name)), base)
  }))
  process.stdout.write(`\nCLI start-up, ${o.runs} rounds, ${msc}, Node ${process.version}, load ${machine.loadStart.join(' ')} -> ${machine.loadEnd.join(' ')}\n\n`)
  process.stdout.write(table(rows))
  const over = rows.filter((r) => r.case !== 'node -e 0' && !(r['x node -e 0'] < 2))
  process.stdout.write(over.length === 0 ? '\nevery command below 2x node -e 0 (the target)\n' : `\nabove the 2x target: ${over.map((r) => r.case).join(', ')}\n`)

  const file = await writeResults('cli-startup', { machine, options: o, msc, samples, results: rows })
  const csv = file.replace(/\.json$/, '.csv')
  await fs.writeFile(csv, 'round,case,ms\n' + samples.map((s) => `${s.round},${s.case},${s.ms}`).join('\n') + '\n')
  process.stdout.write(`\nwritten: ${file}\n         ${csv}\n`)
  await plotAfterRun(file)
}

await runBenchmark('cli-startup', main)
