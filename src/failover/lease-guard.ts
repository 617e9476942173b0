import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'

/**
 * The lease guard: a container must not outlive its lease even if this node's daemon
 * dies. Containers outlive the daemon by design; if the daemon is SIGKILLed, nobody
 * here would fence them when their leases run out, and the peers would fail them over:
 * two copies. So a tiny watchdog, scripts/lease-guard.sh, runs detached from the
 * daemon and kills (`runc kill --all NAME KILL`) every container whose armed deadline
 * has passed. protocols/lease.md, "The guard".
 *
 * Its directory (the lease service uses DATA_DIR/leases/guard):
 *   NAME            armed: the deadline in /proc/uptime centiseconds (CLOCK_BOOTTIME,
 *                   which the shell can read; it runs at least as fast as the daemon's
 *                   monotonic clock, so the guard never fires late because of it)
 *   .NAME.fenced    the guard killed NAME (read by the daemon at start: fenced())
 *   .guard.pid      the guard's pid
 *   .stop           asks the guard to exit
 * Control files start with a dot, which container names cannot: a container named
 * `stop` does not stop the guard. Entries are written with a rename (never seen torn),
 * without fsync: they only matter within one boot.
 */

export interface LeaseGuardInit {
  dir: string
  runcPath: string
  /** runc's --root: the one the daemon runs its containers under. */
  runcRoot: string
  /** Default: LEASE_GUARD_SCRIPT. */
  scriptPath?: string
  /**
   * `msc-NODEID-`: a container the guard kills that has a namespace of this prefix and
   * its name (`--network lan`) also loses its LAN link, so that a node whose daemon is
   * dead but whose host is up stops answering for an address a standby takes over.
   */
  netnsPrefix?: string
  logger: Logger
}

/** scripts/lease-guard.sh of this checkout. */
export const LEASE_GUARD_SCRIPT = fileURLToPath(new URL('../../scripts/lease-guard.sh', import.meta.url))

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const FENCED_RE = /^\.([A-Za-z0-9][A-Za-z0-9_.-]{0,62})\.fenced$/
const START_WAIT_MS = 2_000
const STOP_WAIT_MS = 2_000

export class LeaseGuard {
  readonly dir: string
  private readonly runcPath: string
  private readonly runcRoot: string
  private readonly scriptPath: string
  private readonly netnsPrefix: string | undefined
  private readonly log: Logger
  private guardPid: number | undefined

  constructor (init: LeaseGuardInit) {
    this.dir = path.resolve(init.dir)
    this.runcPath = init.runcPath
    this.runcRoot = init.runcRoot
    this.scriptPath = path.resolve(init.scriptPath ?? LEASE_GUARD_SCRIPT)
    this.netnsPrefix = init.netnsPrefix
    this.log = init.logger
  }

  /** The guard process's pid, once started (or found running). */
  get pid (): number | undefined {
    return this.guardPid
  }

  /**
   * Starts the guard, unless the one a previous daemon started is still running on
   * this directory (it kept guarding the containers meanwhile: it is kept, with its
   * entries). Resolves once the guard has written its pid.
   */
  async start (): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 })
    const old = await this.readPid()
    if (old != null && await this.isGuard(old)) {
      if (!fs.existsSync(path.join(this.dir, '.stop'))) {
        this.guardPid = old
        this.log.info({ pid: old }, 'lease guard already running')
        return
      }
      // It is exiting on a stop request: let it, then start anew.
      await this.waitExit(old, STOP_WAIT_MS)
    }
    await fsp.rm(path.join(this.dir, '.stop'), { force: true })
    await fsp.rm(path.join(this.dir, '.guard.pid'), { force: true })
    const child = spawn('sh', [this.scriptPath, this.dir, this.runcPath, this.runcRoot, ...(this.netnsPrefix != null ? [this.netnsPrefix] : [])], { detached: true, stdio: 'ignore' })
    child.on('error', (err) => this.log.error({ err: err.message }, 'lease guard could not be started'))
    child.unref()
    const pid = child.pid
    const until = Date.now() + START_WAIT_MS
    while (pid != null && Date.now() < until) {
      if (await this.readPid() === pid) {
        this.guardPid = pid
        this.log.info({ pid, dir: this.dir }, 'lease guard started')
        return
      }
      await sleep(20)
    }
    throw new MscError('INTERNAL', `the lease guard (${this.scriptPath}) did not start`)
  }

  /**
   * Arms (or re-arms) `name`: the guard kills it once `deadlineMonotonicMs` (on the
   * clock `nowMonotonicMs` was read from, just before) has passed. Rounded down to the
   * centisecond: the guard errs on the early side.
   */
  async arm (name: string, deadlineMonotonicMs: number, nowMonotonicMs: number): Promise<void> {
    checkName(name)
    const deadlineCs = Math.floor(uptimeCentiseconds() + (deadlineMonotonicMs - nowMonotonicMs) / 10)
    const tmp = path.join(this.dir, `.${name}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`)
    try {
      await fsp.writeFile(tmp, `${Math.max(0, deadlineCs)}\n`, { mode: 0o600 })
      await fsp.rename(tmp, path.join(this.dir, name))
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => {})
      throw err
    }
  }

  /** The guard no longer kills `name` (its lease was released or handed over, or the daemon fenced it). */
  async disarm (name: string): Promise<void> {
    checkName(name)
    await fsp.rm(path.join(this.dir, name), { force: true })
  }

  /** Names armed now. */
  async armed (): Promise<string[]> {
    return (await this.list()).filter((n) => NAME_RE.test(n))
  }

  /** Names the guard killed (and that were not cleared since). */
  async fenced (): Promise<string[]> {
    const out: string[] = []
    for (const n of await this.list()) {
      const m = FENCED_RE.exec(n)
      if (m != null) out.push(m[1] as string)
    }
    return out
  }

  async clearFenced (name: string): Promise<void> {
    checkName(name)
    await fsp.rm(path.join(this.dir, `.${name}.fenced`), { force: true })
  }

  /**
   * keepArmed (the daemon stops, its containers keep running): nothing changes, the
   * guard keeps killing each container at its deadline unless a restarted daemon
   * renews it first. Otherwise (no container is left running under a lease): every
   * entry is disarmed and the guard exits; resolves once it has.
   */
  async stop (opts: { keepArmed: boolean }): Promise<void> {
    if (opts.keepArmed) return
    for (const n of await this.armed()) await fsp.rm(path.join(this.dir, n), { force: true })
    const pid = this.guardPid ?? await this.readPid()
    if (pid == null || !await this.isGuard(pid)) return
    await fsp.writeFile(path.join(this.dir, '.stop'), '')
    if (!await this.waitExit(pid, STOP_WAIT_MS)) this.log.warn({ pid }, 'lease guard did not stop')
    this.guardPid = undefined
  }

  private async list (): Promise<string[]> {
    try {
      return await fsp.readdir(this.dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
  }

  private async readPid (): Promise<number | undefined> {
    try {
      const n = Number((await fsp.readFile(path.join(this.dir, '.guard.pid'), 'utf8')).trim())
      return Number.isInteger(n) && n > 1 ? n : undefined
    } catch {
      return undefined
    }
  }

  /** Whether `pid` runs lease-guard.sh on this directory (not a recycled pid, not a zombie: their cmdline is empty). */
  private async isGuard (pid: number): Promise<boolean> {
    try {
      const args = (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')
      return args.some((a) => a.endsWith('lease-guard.sh')) && args.includes(this.dir)
    } catch {
      return false
    }
  }

  private async waitExit (pid: number, ms: number): Promise<boolean> {
    const until = Date.now() + ms
    while (Date.now() < until) {
      if (!await this.isGuard(pid)) return true
      await sleep(20)
    }
    return !await this.isGuard(pid)
  }
}

/** /proc/uptime (CLOCK_BOOTTIME) in whole centiseconds, read synchronously: the caller's `now` was just taken. */
function uptimeCentiseconds (): number {
  const text = fs.readFileSync('/proc/uptime', 'utf8')
  const m = /^(\d+)\.(\d\d)/.exec(text)
  if (m == null) throw new MscError('INTERNAL', `cannot parse /proc/uptime: ${text.slice(0, 40)}`)
  return Number(m[1]) * 100 + Number(m[2])
}

function checkName (name: string): void {
  if (!NAME_RE.test(name)) throw new MscError('INVALID_ARGUMENT', `invalid container name for the lease guard: ${JSON.stringify(name)}`)
}

async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}
