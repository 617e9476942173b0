/**
 * An observer outside the nodes: a UDP listener on a testbed host of its own that
 * records every datagram a beacon container (src/bundles/beacon.c) sends, with the
 * kernel's receive time, and says what a client of that container would have seen:
 *
 *   const obs = await Observer.start(c.tb, c.node('n3').host, { port: 9000 })
 *   try {
 *     ... run a beacon with target `${obs.target}`, migrate it ...
 *     const r = obs.report({ fromMs: t0, toMs: t1 })   // longestGapMs, repeated, restarts, ...
 *   } finally {
 *     await obs.stop()                                 // its own listener, by pid
 *   }
 *
 * The listener is the beacon binary itself in `listen` mode, started in the host's
 * network namespace through Testbed.spawn (nsenter --net, exec'd: the child's pid is
 * the listener's). It timestamps each datagram with SO_TIMESTAMPNS, so the gaps do
 * not include the scheduling delays of a busy 2-core machine on the listener or here.
 * Times are CLOCK_REALTIME in ms, comparable with Date.now() in the test.
 */
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import readline from 'node:readline'
import { beaconBinary } from '../../src/bundles/beacon.ts'
import type { Testbed, TestHost } from '../testbed/testbed.ts'

/** One datagram as it arrived: `SEQ CHECKSUM PASS INCARNATION`, from where and when. */
export interface Arrival {
  /** Kernel receive time, ms since the epoch (fractional). */
  atMs: number
  /** The IPv4 address it came from: the host the beacon ran on. */
  from: string
  seq: number
  /** Hash of the beacon's memory as of its last complete verification pass (hex). */
  checksum: string
  /** Complete verification passes so far (0: the hash taken right after the fill). */
  pass: number
  /** Fixed at the beacon's start: a restore keeps it, a fresh start changes it. */
  incarnation: string
}

export interface Gap {
  ms: number
  /** The arrivals on either side of the gap. */
  before: Arrival
  after: Arrival
}

export interface ObserverReport {
  arrivals: number
  firstSeq: number | null
  lastSeq: number | null
  /** The longest time without a datagram: the downtime a client sees (plus one interval). */
  longestGap: Gap | null
  longestGapMs: number
  /** Sequence numbers that arrived more than once: two copies ran, or one restarted. */
  repeated: number[]
  /** A sequence number lower than the one before it, or a new incarnation: the process started over. */
  restarts: Array<{ atMs: number; fromSeq: number; toSeq: number; newIncarnation: boolean }>
  /** The memory checksum changed: state was lost or corrupted. */
  checksumChanges: Array<{ atMs: number; seq: number; from: string; to: string }>
  checksums: string[]
  incarnations: string[]
  /** Sender addresses, in order of first arrival. */
  senders: string[]
  /** Sequence numbers between the first and the last that never arrived (datagrams lost). */
  missing: number
}

export interface ObserverOptions {
  /** UDP port on the host (default 9000). */
  port?: number
}

const LINE = /^(\d+) (\S+) (\d+) ([0-9a-f]{16}) (\d+) ([0-9a-f]{16})$/

export class Observer {
  readonly host: TestHost
  readonly port: number
  /** Every datagram, in arrival order. */
  readonly arrivals: Arrival[] = []
  /** Lines the listener printed that are not beacon datagrams. */
  readonly malformed: string[] = []
  readonly #proc: ChildProcess
  #stderr = ''

  private constructor (host: TestHost, port: number, proc: ChildProcess) {
    this.host = host
    this.port = port
    this.#proc = proc
  }

  /** `IP:PORT` for the beacon's target. */
  get target (): string {
    return `${this.host.ip}:${this.port}`
  }

  /** Starts the listener on `host` and returns once its socket is bound. */
  static async start (tb: Testbed, host: TestHost, opts: ObserverOptions = {}): Promise<Observer> {
    const port = opts.port ?? 9000
    const proc = await tb.spawn(host, await beaconBinary(), ['listen', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] })
    const obs = new Observer(host, port, proc)
    proc.stderr!.setEncoding('utf8')
    proc.stderr!.on('data', (d: string) => {
      obs.#stderr += d
    })
    const lines = readline.createInterface({ input: proc.stdout! })
    const bound = new Promise<void>((resolve, reject) => {
      proc.once('exit', (code, sig) => {
        reject(new Error(`observer on ${host.name} exited (${code ?? sig}) before listening: ${obs.#stderr}`))
      })
      lines.on('line', (line) => {
        if (line.startsWith('listening ')) {
          resolve()
          return
        }
        obs.#record(line)
      })
    })
    try {
      await Promise.race([bound, new Promise((_resolve, reject) =>
        setTimeout(() => {
          reject(new Error(`observer on ${host.name} did not bind port ${port} within 5 s`))
        }, 5000).unref()
      )])
    } catch (err) {
      await obs.stop()
      throw err
    }
    return obs
  }

  #record (line: string): void {
    const m = LINE.exec(line)
    if (m == null) {
      this.malformed.push(line)
      return
    }
    this.arrivals.push({ atMs: Number(m[1]) / 1e6, from: m[2]!, seq: Number(m[3]), checksum: m[4]!, pass: Number(m[5]), incarnation: m[6]! })
  }

  /** The last arrival, if any. */
  last (): Arrival | undefined {
    return this.arrivals.at(-1)
  }

  /** True while the listener runs. */
  get running (): boolean {
    return this.#proc.exitCode == null && this.#proc.signalCode == null
  }

  /**
   * What the arrivals say. With a window, only arrivals at or after `fromMs` and up to
   * `toMs` count, plus the last one before the window and the first one after it: a gap
   * that spans the window's edge is the gap the window saw.
   */
  report (window: { fromMs?: number; toMs?: number } = {}): ObserverReport {
    return analyse(windowed(this.arrivals, window.fromMs ?? -Infinity, window.toMs ?? Infinity))
  }

  /** Stops the listener (SIGTERM by pid, SIGKILL after 2 s) and waits for it. Safe to call twice. */
  async stop (): Promise<void> {
    const p = this.#proc
    if (!this.running) return
    const exited = once(p, 'exit')
    p.kill('SIGTERM')
    const t = setTimeout(() => {
      if (this.running) p.kill('SIGKILL')
    }, 2000)
    try {
      await exited
    } finally {
      clearTimeout(t)
    }
  }

  async [Symbol.asyncDispose] (): Promise<void> {
    await this.stop()
  }
}

function windowed (all: readonly Arrival[], fromMs: number, toMs: number): Arrival[] {
  let first = all.findIndex((a) => a.atMs >= fromMs)
  if (first < 0) first = all.length
  let end = all.findIndex((a) => a.atMs > toMs)
  if (end < 0) end = all.length
  return all.slice(Math.max(0, first - 1), Math.min(all.length, end + 1))
}

/** The report of a list of arrivals (in arrival order). Pure: unit-testable. */
export function analyse (arrivals: readonly Arrival[]): ObserverReport {
  const seen = new Map<number, number>()
  const restarts: ObserverReport['restarts'] = []
  const checksumChanges: ObserverReport['checksumChanges'] = []
  const checksums: string[] = []
  const incarnations: string[] = []
  const senders: string[] = []
  let longestGap: Gap | null = null
  for (const [i, a] of arrivals.entries()) {
    seen.set(a.seq, (seen.get(a.seq) ?? 0) + 1)
    if (!checksums.includes(a.checksum)) checksums.push(a.checksum)
    if (!incarnations.includes(a.incarnation)) incarnations.push(a.incarnation)
    if (!senders.includes(a.from)) senders.push(a.from)
    const prev = arrivals[i - 1]
    if (prev == null) continue
    const gap = a.atMs - prev.atMs
    if (longestGap == null || gap > longestGap.ms) longestGap = { ms: gap, before: prev, after: a }
    const newIncarnation = a.incarnation !== prev.incarnation
    if (a.seq < prev.seq || newIncarnation) restarts.push({ atMs: a.atMs, fromSeq: prev.seq, toSeq: a.seq, newIncarnation })
    if (a.checksum !== prev.checksum) checksumChanges.push({ atMs: a.atMs, seq: a.seq, from: prev.checksum, to: a.checksum })
  }
  const seqs = [...seen.keys()]
  const first = arrivals[0]?.seq ?? null
  const last = arrivals.at(-1)?.seq ?? null
  // Lost datagrams: only meaningful for one increasing sequence.
  const missing = first == null || last == null || last < first ? 0 : Math.max(0, last - first + 1 - seqs.filter((s) => s >= first && s <= last).length)
  return {
    arrivals: arrivals.length,
    firstSeq: first,
    lastSeq: last,
    longestGap,
    longestGapMs: longestGap?.ms ?? 0,
    repeated: seqs.filter((s) => seen.get(s)! > 1).sort((a, b) => a - b),
    restarts,
    checksumChanges,
    checksums,
    incarnations,
    senders,
    missing
  }
}
