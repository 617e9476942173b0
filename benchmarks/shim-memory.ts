/**
 * Resident memory that msc keeps per idle container to carry its output: the log shim
 * (src/runtime/shim/log-shim.c, one static process that starts runc and then reads the
 * container's pipe) against the Node.js shim it replaced (a /bin/sh waiting on
 * `{ runc ...; } | node log-shim.ts`, both kept per container), in the same run.
 *
 * Each side starts N idle containers (busybox: print one line, then sleep) with real
 * runc, one after the other, checks that each one's line reached its log through its
 * shim, lets them settle, then sums over every process msc keeps per container (found,
 * as msc's tests find them, by MSC_SHIM_LOG in their environment; the container itself
 * and runc, gone once the container started, are not counted):
 *   RSS  VmRSS, resident pages including every shared one (libraries, Node's binary);
 *   PSS  Pss from /proc/PID/smaps_rollup: shared pages divided among their sharers,
 *        what N containers really add up to.
 * Results are per container; the ratios are new / old. The sides run one after the
 * other, each with only its own containers up, and everything is removed after each.
 *
 * Writes benchmarks/results/shim-memory-<timestamp>.json.
 *
 * Usage: node benchmarks/shim-memory.ts [--containers 20] [--settle-ms 3000]
 * Needs root and runc (`npm run setup`). Run it under the heavy-work lock.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { execa } from 'execa'
import { installBusybox, resetBundle } from '../src/bundles/counter.ts'
import { defaultSpec } from '../src/bundles/oci-spec.ts'
import { removeEmptyCgroupParent } from '../src/runtime/cgroups.ts'
import { logShimBinary } from '../src/runtime/shim/binary.ts'
import { launchWithLogShim, type LaunchOptions } from '../src/runtime/stdio-launcher.ts'
import { log, machineInfo, parseFlags, round, runBenchmark, table, writeResults } from './lib.ts'
import { writeChart } from './plot.ts'

const USAGE = `usage: node benchmarks/shim-memory.ts [--containers 20] [--settle-ms 3000]
  --containers N   idle containers per side
  --settle-ms MS   wait after the last start before measuring (Node's shims finish starting up)
`

const LOG_MAX = 8 * 1024 * 1024

/**
 * The Node.js log shim as msc ran it before the C shim (its source, trimmed of
 * comments; written to a file for the run): appends stdin to MSC_SHIM_LOG, rotating
 * past MSC_SHIM_MAX, ignoring SIGHUP and SIGPIPE.
 */
const OLD_SHIM_SOURCE = `import fs from 'node:fs'
const logPath = process.env.MSC_SHIM_LOG
const maxBytes = Number(process.env.MSC_SHIM_MAX ?? 8 * 1024 * 1024)
if (logPath == null || logPath === '') { process.stderr.write('log-shim: MSC_SHIM_LOG is not set\\n'); process.exit(2) }
process.on('SIGHUP', () => {})
process.on('SIGPIPE', () => {})
const APPEND = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW
const openLog = () => fs.openSync(logPath, APPEND, 0o600)
let fd = openLog()
let size = fs.fstatSync(fd).size
function rotate () { fs.closeSync(fd); try { fs.renameSync(logPath, logPath + '.1') } catch {} fd = openLog(); size = 0 }
process.stdin.on('data', (chunk) => {
  try { if (size + chunk.length > maxBytes && size > 0) rotate(); fs.writeSync(fd, chunk); size += chunk.length } catch {}
})
process.stdin.on('end', () => { try { fs.closeSync(fd) } catch {} process.exit(0) })
process.stdin.on('error', () => process.exit(0))
`

/** The launcher msc used with the Node.js shim: a detached shell pipeline, status on fd 3. */
async function launchWithNodeShim (shimFile: string, opts: LaunchOptions): Promise<number> {
  const script = '{ "$@" 3>&-; echo "$?" >&3; } 2>&1 </dev/null | exec "$MSC_NODE" "$MSC_SHIM_FILE" 3>&-'
  const child = spawn('/bin/sh', ['-c', script, 'msc-shim', ...opts.argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, MSC_NODE: process.execPath, MSC_SHIM_FILE: shimFile, MSC_SHIM_LOG: opts.logFile, MSC_SHIM_MAX: String(opts.logMaxBytes) }
  })
  child.unref()
  const status = child.stdio[3] as NodeJS.ReadableStream & { destroy: () => void }
  return await new Promise<number>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => {
      status.destroy()
      reject(new Error(`runc did not return within ${opts.timeoutMs} ms`))
    }, opts.timeoutMs)
    status.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) {
        clearTimeout(timer)
        status.destroy()
        resolve(Number.parseInt(out.trim(), 10))
      }
    })
    status.on('end', () => {
      clearTimeout(timer)
      reject(new Error('runc ended without an exit status'))
    })
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

interface Side {
  name: 'old' | 'new'
  launch: (opts: LaunchOptions) => Promise<number>
}

interface Usage {
  processes: number
  rssKiB: number
  pssKiB: number
  kinds: Record<string, number>
}

/** Processes whose environment has MSC_SHIM_LOG under `dir`: what msc keeps per container. */
async function shimProcesses (dir: string): Promise<number[]> {
  const out: number[] = []
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    const env = await fs.readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '')
    if (env.split('\0').some((e) => e.startsWith(`MSC_SHIM_LOG=${dir}/`))) out.push(Number(pid))
  }
  return out
}

function kib (text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)
  if (m == null) throw new Error(`no ${field} in smaps_rollup`)
  return Number(m[1])
}

async function usageOf (pids: number[]): Promise<Usage> {
  const u: Usage = { processes: 0, rssKiB: 0, pssKiB: 0, kinds: {} }
  for (const pid of pids) {
    const rollup = await fs.readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '')
    if (rollup === '') continue // gone meanwhile
    const comm = (await fs.readFile(`/proc/${pid}/comm`, 'utf8')).trim()
    u.processes++
    u.rssKiB += kib(rollup, 'Rss')
    u.pssKiB += kib(rollup, 'Pss')
    u.kinds[comm] = (u.kinds[comm] ?? 0) + 1
  }
  return u
}

async function waitFor (what: string, ok: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const t0 = Date.now()
  while (!await ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function runc (root: string, ...args: string[]): Promise<void> {
  await execa('runc', ['--root', root, ...args], { reject: false, stdin: 'ignore' })
}

/** Kills and deletes every container under `root`, then whatever shim is left. */
async function removeAll (root: string, dir: string): Promise<void> {
  const r = await execa('runc', ['--root', root, 'list', '-q'], { reject: false })
  for (const id of String(r.stdout).split('\n').filter(Boolean)) await runc(root, 'delete', '--force', id)
  // A shim ends once its container's pipe closes; one that does not is killed.
  await waitFor('the shims to exit', async () => (await shimProcesses(dir)).length === 0, 5_000).catch(() => {})
  for (const pid of await shimProcesses(dir)) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {}
  }
}

async function main (): Promise<void> {
  const o = parseFlags(process.argv.slice(2), { containers: 20, settleMs: 3000 }, USAGE)
  if (!Number.isInteger(o.containers) || o.containers < 1) throw new Error('--containers must be a positive integer')
  if (process.getuid?.() !== 0) throw new Error('needs root (runc)')
  const machine = machineInfo()
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-bench-shim-'))
  const cgroupParent = `msc-bench-shim-${process.pid}`
  const oldShim = path.join(work, 'log-shim.mjs')
  await fs.writeFile(oldShim, OLD_SHIM_SOURCE)
  log(`log shim: ${await logShimBinary()}`)

  // One rootfs for every container (idle: nothing writes to it).
  const rootfs = await resetBundle(path.join(work, 'image'))
  await installBusybox(rootfs)

  const sides: Side[] = [
    { name: 'old', launch: async (opts) => await launchWithNodeShim(oldShim, opts) },
    { name: 'new', launch: launchWithLogShim }
  ]
  const results: Record<string, Usage & { startMsPerContainer: number }> = {}
  try {
    for (const side of sides) {
      const dir = path.join(work, side.name)
      const root = path.join(dir, 'runc')
      await fs.mkdir(root, { recursive: true })
      try {
        log(`${side.name}: starting ${o.containers} containers`)
        const t0 = performance.now()
        for (let i = 0; i < o.containers; i++) {
          const id = `shim-${side.name}-${i}`
          const c = path.join(dir, id)
          await fs.mkdir(c)
          const spec = defaultSpec({ args: ['/bin/sh', '-c', 'echo ready; exec sleep 1000000'], hostname: id })
          spec.root = { path: rootfs, readonly: false }
          spec.linux.cgroupsPath = `/${cgroupParent}/${id}`
          await fs.writeFile(path.join(c, 'config.json'), JSON.stringify(spec))
          const logFile = path.join(c, 'container.log')
          const code = await side.launch({
            argv: ['runc', '--root', root, 'run', '--detach', '--bundle', c, '--pid-file', path.join(c, 'container.pid'), id],
            logFile,
            logMaxBytes: LOG_MAX,
            timeoutMs: 60_000
          })
          if (code !== 0) throw new Error(`${side.name}: runc run ${id} exited ${code}: ${await fs.readFile(logFile, 'utf8').catch(() => '')}`)
          await waitFor(`${id}'s line in its log`, async () => (await fs.readFile(logFile, 'utf8').catch(() => '')) === 'ready\n')
        }
        const startMs = performance.now() - t0
        await new Promise((resolve) => setTimeout(resolve, o.settleMs))
        const u = await usageOf(await shimProcesses(dir))
        results[side.name] = { ...u, startMsPerContainer: round(startMs / o.containers, 1) }
        log(`${side.name}: ${u.processes} processes (${Object.entries(u.kinds).map(([k, n]) => `${n} ${k}`).join(', ')}), RSS ${u.rssKiB} KiB, PSS ${u.pssKiB} KiB`)
      } finally {
        await removeAll(root, dir)
      }
    }
  } finally {
    await removeEmptyCgroupParent(cgroupParent)
    await fs.rm(work, { recursive: true, force: true })
  }
  machine.loadEnd = os.loadavg().map((x) => round(x, 2))

  const n = o.containers
  const per = (side: string, k: 'rssKiB' | 'pssKiB'): number => round(results[side]![k] / n / 1024, 2)
  const rows = sides.map((s) => ({
    shim: s.name === 'old' ? 'old: sh + node log-shim.ts' : 'new: log-shim (C)',
    'processes/container': round(results[s.name]!.processes / n, 2),
    'RSS MiB/container': per(s.name, 'rssKiB'),
    'PSS MiB/container': per(s.name, 'pssKiB'),
    'start ms/container': results[s.name]!.startMsPerContainer
  }))
  // Three decimals: the memory ratios are around a hundredth.
  const newOverOld = (k: 'rssKiB' | 'pssKiB' | 'startMsPerContainer'): number => round(results.new![k] / results.old![k], 3)
  const ratios = { rss: newOverOld('rssKiB'), pss: newOverOld('pssKiB'), startTime: newOverOld('startMsPerContainer') }
  process.stdout.write(`\nMemory msc keeps per idle container for its output, ${n} containers per side, Node ${process.version}, load ${machine.loadStart.join(' ')} -> ${machine.loadEnd.join(' ')}\n\n`)
  process.stdout.write(table(rows))
  process.stdout.write(`\nnew / old: RSS ${ratios.rss}, PSS ${ratios.pss}, start time ${ratios.startTime}\n`)
  const file = await writeResults('shim-memory', { machine, options: o, results, perContainerMiB: rows, ratios })
  process.stdout.write(`\nwritten: ${file}\n`)
  const svg = await writeChart({
    name: 'shim-memory',
    figures: { perContainerMiB: rows, ratios },
    spec: {
      kind: 'bar',
      title: 'Memory msc keeps per idle container for its output',
      machine,
      yLabel: 'MiB per container',
      groups: ['RSS', 'PSS'],
      series: rows.map((r) => ({ name: r.shim, values: [{ value: r['RSS MiB/container'] }, { value: r['PSS MiB/container'] }] })),
      notes: [`${n} idle containers per side; new / old: RSS ${ratios.rss}, PSS ${ratios.pss}; results: benchmarks/results/${path.basename(file)}`]
    }
  }, file)
  process.stdout.write(`plot:    ${path.relative(process.cwd(), svg)}\n`)
}

await runBenchmark('shim-memory', main)
