/**
 * Proof that a container ran twice, from samples taken by a test.
 *
 * Listing the nodes one after another cannot prove two copies by itself: a container
 * seen on n1 and then, 100 ms later, on n3 may have moved in between. What proves
 * it is one instant at which both processes were alive. The kernel gives each process
 * its start time (field 22 of /proc/PID/stat, in clock ticks since boot, the same
 * clock for every namespace of the machine), and a sample proves a process alive
 * somewhere in the window [before, after] (read from /proc/uptime around the read of
 * its stat). So copy Y ran at the same time as copy X when Y had started by the
 * beginning of a window in which X was seen, and Y was seen again at or after the end
 * of that window: Y was alive all along in between.
 *
 * A double shorter than the sampling period can escape; a double that lasts over two
 * samples of the later copy cannot.
 */
import fs from 'node:fs/promises'

/** One process that runs a container on one node: pid plus start time (pids are reused). */
export interface Copy {
  container: string
  node: string
  pid: number
  /** Start time, seconds since boot. */
  startedAt: number
  /** Windows (seconds since boot) in which the process was seen alive. */
  seen: Array<[number, number]>
}

/** The first instant found at which two different copies of one container were both alive, or null. */
export function overlap (x: Copy, y: Copy): { at: number } | null {
  for (const [a, b] of [[x, y], [y, x]] as const) {
    for (const [before, after] of a.seen) {
      if (b.startedAt <= before && b.seen.some(([later]) => later >= after)) return { at: before }
    }
  }
  return null
}

/** Seconds since boot, as /proc/uptime gives it (10 ms resolution). */
export async function uptime (): Promise<number> {
  return Number.parseFloat((await fs.readFile('/proc/uptime', 'utf8')).split(' ')[0]!)
}

const TICKS_PER_SECOND = 100 // USER_HZ on Linux

/**
 * The start time of PID (seconds since boot), or null if it is gone or a zombie.
 * The comm field may hold spaces and parentheses: fields are counted after the last ')'.
 */
export async function processStart (pid: number): Promise<number | null> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  if (stat == null) return null
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const state = rest[0]
  if (state === 'Z' || state === 'X') return null
  return Number(rest[19]) / TICKS_PER_SECOND // field 22 overall; rest[0] is field 3
}

/**
 * Copies seen so far, and the doubles proven among them. `observe` is called with what
 * a node's runtime lists as running (or paused: a frozen copy is a copy).
 */
export class CopyTracker {
  private readonly copies = new Map<string, Copy>()
  readonly doubles: string[] = []
  private readonly reported = new Set<string>()

  async observe (node: string, running: Array<{ id: string; pid: number }>): Promise<void> {
    for (const e of running) {
      const before = await uptime()
      const startedAt = await processStart(e.pid)
      const after = await uptime()
      if (startedAt == null) continue
      const key = `${e.id}/${node}/${e.pid}/${startedAt}`
      let c = this.copies.get(key)
      if (c == null) this.copies.set(key, c = { container: e.id, node, pid: e.pid, startedAt, seen: [] })
      c.seen.push([before, after])
      this.check(c)
    }
  }

  private check (c: Copy): void {
    for (const [key, other] of this.copies) {
      if (other === c || other.container !== c.container) continue
      const o = overlap(c, other)
      const pair = [key, `${c.container}/${c.node}/${c.pid}/${c.startedAt}`].sort().join(' & ')
      if (o == null || this.reported.has(pair)) continue
      this.reported.add(pair)
      this.doubles.push(`${c.container} ran on ${other.node} (pid ${other.pid}) and ${c.node} (pid ${c.pid}) at once, at uptime ${o.at.toFixed(2)} s`)
    }
  }

  /** Every copy seen, for a failure message. */
  describe (container: string): string {
    return [...this.copies.values()].filter((c) => c.container === container)
      .map((c) => `${c.node} pid ${c.pid} started ${c.startedAt.toFixed(2)} seen ${c.seen[0]![0].toFixed(2)}..${c.seen.at(-1)![1].toFixed(2)} (${c.seen.length}x)`).join('\n')
  }
}
