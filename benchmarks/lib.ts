/**
 * Shared bits of the benchmarks: medians, the machine description that goes with every
 * result, writing benchmarks/results/<name>-<timestamp>.json, and plain-text tables.
 * Benchmarks report ratios against a baseline measured in the same run: absolute
 * numbers on a shared 2-core machine move from run to run, ratios move less.
 */
import { readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
export const ROOT = path.resolve(BENCH_DIR, '..')
export const RESULTS_DIR = path.join(BENCH_DIR, 'results')
export const MiB = 1024 * 1024

export function median (xs: number[]): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export function round (x: number, digits = 1): number {
  if (!Number.isFinite(x)) return x
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** a/b rounded to 2 decimals; NaN when b is 0 or missing. */
export function ratio (a: number | null | undefined, b: number | null | undefined): number {
  if (a == null || b == null || b === 0 || !Number.isFinite(a) || !Number.isFinite(b)) return Number.NaN
  return round(a / b, 2)
}

export interface MachineInfo {
  date: string
  hostname: string
  kernel: string
  cpus: number
  cpuModel: string
  memTotalGiB: number
  node: string
  /** 1/5/15-minute load averages when the benchmark started and when it ended. */
  loadStart: number[]
  loadEnd?: number[]
}

export function machineInfo (): MachineInfo {
  return {
    date: new Date().toISOString(),
    hostname: os.hostname(),
    kernel: `${os.type()} ${os.release()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memTotalGiB: round(os.totalmem() / 1024 ** 3, 1),
    node: process.version,
    loadStart: os.loadavg().map((x) => round(x, 2))
  }
}

/** Writes benchmarks/results/<name>-<timestamp>.json; returns its path. */
export async function writeResults (name: string, data: unknown): Promise<string> {
  await fs.mkdir(RESULTS_DIR, { recursive: true })
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  const file = path.join(RESULTS_DIR, `${name}-${stamp}.json`)
  await fs.writeFile(file, JSON.stringify(data, null, 2) + '\n')
  return file
}

/** A fixed-width text table (console.table quotes strings and shows an index column). */
export function table (rows: Array<Record<string, string | number | null | undefined>>): string {
  if (rows.length === 0) return '(no rows)\n'
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))]
  const cell = (v: unknown): string => v == null || (typeof v === 'number' && Number.isNaN(v)) ? '-' : String(v)
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  // Columns holding numbers are right-aligned.
  const numeric = cols.map((c) => rows.some((r) => typeof r[c] === 'number'))
  const line = (vals: string[]): string => vals.map((v, i) => (numeric[i] === true ? v.padStart(width[i]!) : v.padEnd(width[i]!))).join('  ').trimEnd()
  return [line(cols), width.map((w) => '-'.repeat(w)).join('  '), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n') + '\n'
}

/** Parses `--flag value` / `--flag=value` / `--no-flag` for the given defaults (numbers, strings, booleans). */
export function parseFlags<T extends Record<string, string | number | boolean>> (argv: string[], defaults: T, usage: string): T {
  const out: Record<string, string | number | boolean> = { ...defaults }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--help' || a === '-h') {
      process.stdout.write(usage)
      process.exit(0)
    }
    const m = /^--(no-)?([a-z][a-z0-9-]*)(?:=(.*))?$/.exec(a)
    if (m == null) throw new Error(`unexpected argument ${a}\n${usage}`)
    const key = m[2]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
    if (!(key in defaults)) throw new Error(`unknown flag --${m[2]}\n${usage}`)
    const d = defaults[key]
    if (typeof d === 'boolean') {
      out[key] = m[1] == null
      continue
    }
    if (m[1] != null) throw new Error(`--no-${m[2]} is not a switch\n${usage}`)
    const v = m[3] ?? argv[++i]
    if (v == null) throw new Error(`--${m[2]} needs a value\n${usage}`)
    if (typeof d === 'number') {
      const n = Number(v)
      if (!Number.isFinite(n)) throw new Error(`--${m[2]} takes a number, got ${v}`)
      out[key] = n
    } else {
      out[key] = v
    }
  }
  return out as T
}

export function log (msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

/**
 * Redis PING over one short connection: true on +PONG. A probe never holds a
 * connection open, so it cannot be what a dump or a migration sees connected.
 */
export async function redisPing (ip: string, port: number, timeoutMs = 300): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const s = net.connect({ host: ip, port })
    let buf = ''
    const done = (ok: boolean): void => {
      clearTimeout(t)
      s.destroy()
      resolve(ok)
    }
    const t = setTimeout(() => done(false), timeoutMs)
    s.on('connect', () => s.write('PING\r\n'))
    s.on('data', (d) => {
      buf += d.toString()
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'))
    })
    s.on('error', () => done(false))
    s.on('close', () => done(false))
  })
}

/** Milliseconds until redisPing succeeds, polled every `pollMs`. */
export async function untilPong (ip: string, port: number, timeoutMs = 30_000, pollMs = 10): Promise<number> {
  const t0 = performance.now()
  while (!await redisPing(ip, port)) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`redis at ${ip}:${port} did not answer PING within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }
  return performance.now() - t0
}

/**
 * A benchmark's entry point: runs `main` (which stops and removes whatever it started,
 * also on failure), reports a failure with its stack and exit code 1, then exits
 * without waiting for stray handles.
 */
export async function runBenchmark (name: string, main: () => Promise<void>): Promise<never> {
  try {
    await main()
  } catch (err) {
    process.stderr.write(`${name} benchmark failed: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
  process.exit()
}

/** CRIU's error lines and the last lines of its log (for a failed sample's message). */
export function criuLogTail (file: string, lines = 10): string {
  if (file === '') return ''
  try {
    const all = readFileSync(file, 'utf8').trimEnd().split('\n')
    const errors = all.filter((l) => /Error|Warn/.test(l) && !/RLIMIT_NOFILE/.test(l)).slice(-10)
    return [`${file}:`, ...errors, '...', ...all.slice(-lines)].join('\n')
  } catch {
    return ''
  }
}

/** Lazily unmounts everything mounted at or under `dir`, deepest first. */
export async function unmountUnder (dir: string): Promise<void> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8')
  const points = info.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => p != null && (p === dir || p.startsWith(dir + '/')))
  for (const p of points.sort((a, b) => b.length - a.length)) await execa('umount', ['-l', p], { reject: false })
}

/** Bytes of the regular files under `dir`. */
export async function dirBytes (dir: string): Promise<number> {
  let n = 0
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += (await fs.stat(path.join(e.parentPath, e.name))).size
  }
  return n
}

/**
 * Runs `cleanup` on SIGINT/SIGTERM, then exits 130; returns the function that removes
 * the handlers. `on`, not `once`: execa's signal-exit re-raises the signal (killing us
 * mid-cleanup) when it is the only listener left.
 */
export function cleanupOnSignals (cleanup: () => Promise<void>): () => void {
  const onSignal = (sig: string): void => {
    log(`${sig}`)
    cleanup().finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return () => {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
