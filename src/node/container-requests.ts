/**
 * Container-initiated requests: a process inside a container sends the datagram
 * `CHECKPOINT` or `MIGRATE [PEER]` to /run/msc.sock, which its bundle bind-mounts from
 * the node's DATA_DIR/ipc.sock (docs/container-requests.md).
 *
 * Node.js has no unix datagram sockets, so a small python3 relay
 * (src/runtime/ipc/dgram-relay.py) owns the socket and writes one JSON line per
 * datagram. The sender is identified by its pid (SCM_CREDENTIALS) through its cgroup,
 * `/<cgroupParent>/<name>`: only this node's containers live there. Requests of one
 * container run one at a time, a few more wait, the rest are dropped.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Logger } from '../util/logger.ts'

const RELAY = fileURLToPath(new URL('../runtime/ipc/dgram-relay.py', import.meta.url))

export type ContainerRequest = { kind: 'checkpoint' } | { kind: 'migrate'; peer?: string }

export interface ContainerRequestServerInit {
  /** Where the socket is bound: DATA_DIR/ipc.sock. */
  socketPath: string
  /** The node's cgroup parent: its containers' cgroups are /<cgroupParent>/<name>. */
  cgroupParent: string
  logger: Logger
  onCheckpoint: (name: string) => Promise<unknown>
  onMigrate: (name: string, peer?: string) => Promise<unknown>
  /** Interpreter for the relay; default `python3` on PATH. */
  python?: string
}

/** Longest datagram taken (bytes, a trailing newline included). */
export const MAX_REQUEST_BYTES = 256
/** Requests that may wait per container behind the one running. */
export const MAX_QUEUED_PER_CONTAINER = 4

const PEER_RE = /^[A-Za-z0-9._-]{1,128}$/
/** Same rule as container names (validateName in container-manager.ts). */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
const START_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 3_000
/** How long stop() waits for requests already running. */
const DRAIN_TIMEOUT_MS = 5_000
const RESTART_DELAY_MS = 1_000
/** At most this many "ignored" lines per window; the rest are counted and summarised. */
const IGNORED_LOG_LIMIT = 20
const IGNORED_LOG_WINDOW_MS = 10_000

/**
 * `CHECKPOINT` or `MIGRATE` or `MIGRATE PEER`, exactly (upper case, one space, one
 * optional trailing "\n"); printable ASCII only, at most 256 bytes. Anything else: null.
 */
export function parseRequest (text: string): ContainerRequest | null {
  if (Buffer.byteLength(text, 'utf8') > MAX_REQUEST_BYTES) return null
  const body = text.endsWith('\n') ? text.slice(0, -1) : text
  if (!/^[\x20-\x7e]+$/.test(body)) return null
  const words = body.split(' ')
  if (words[0] === 'CHECKPOINT' && words.length === 1) return { kind: 'checkpoint' }
  if (words[0] === 'MIGRATE') {
    if (words.length === 1) return { kind: 'migrate' }
    if (words.length === 2 && PEER_RE.test(words[1]!)) return { kind: 'migrate', peer: words[1]! }
  }
  return null
}

/**
 * The container whose cgroup appears in the text of a /proc/PID/cgroup file: some line's
 * path holds `/<cgroupParent>/<name>` (below any prefix, above any sub-cgroup the
 * container made). Null when no line does, or when lines name different containers.
 */
export function containerOfCgroupText (text: string, cgroupParent: string): string | null {
  const parent = cgroupParent.split('/').filter((s) => s !== '')
  if (parent.length === 0) return null
  let found: string | null = null
  for (const line of text.split('\n')) {
    // hierarchy-ID:controller-list:cgroup-path (the path may itself hold ':')
    const m = /^[^:]*:[^:]*:(.*)$/.exec(line)
    if (m == null) continue
    const segs = m[1]!.split('/').filter((s) => s !== '')
    for (let i = 0; i + parent.length < segs.length; i++) {
      if (!parent.every((p, j) => segs[i + j] === p)) continue
      const name = segs[i + parent.length]!
      if (!NAME_RE.test(name)) continue
      if (found != null && found !== name) return null
      found = name
      break
    }
  }
  return found
}

/** The container of this node that process `pid` belongs to (host pid), or null. */
export async function containerOfPid (pid: number, cgroupParent: string): Promise<string | null> {
  if (!Number.isSafeInteger(pid) || pid <= 0) return null
  let text: string
  try {
    text = await fs.readFile(`/proc/${pid}/cgroup`, 'utf8')
  } catch {
    return null
  }
  return containerOfCgroupText(text, cgroupParent)
}

interface RelayLine {
  ready?: unknown
  pid?: unknown
  uid?: unknown
  data?: unknown
  truncated?: unknown
  cgroup?: unknown
}

interface Pending {
  req: ContainerRequest
  receivedAt: number
}

interface Lane {
  running: boolean
  queue: Pending[]
}

/**
 * Runs the relay and turns its datagrams into onCheckpoint/onMigrate calls. Callback
 * errors are logged, never thrown; nothing a container sends can throw here.
 */
export class ContainerRequestServer {
  private readonly init: ContainerRequestServerInit
  private readonly log: Logger
  private child: ChildProcess | null = null
  private relayPid = 0
  private socketIno: number | null = null
  private stopping = false
  private restartTimer: NodeJS.Timeout | null = null
  /** Datagrams are attributed in arrival order (the /proc fallback is async). */
  private chain: Promise<void> = Promise.resolve()
  private readonly lanes = new Map<string, Lane>()
  private readonly running = new Set<Promise<void>>()
  private accepted = 0
  private ignored = 0
  private ignoredLogged = 0
  private ignoredSuppressed = 0
  private ignoredWindowStart = 0

  constructor (init: ContainerRequestServerInit) {
    this.init = init
    this.log = init.logger
  }

  stats (): { accepted: number; ignored: number } {
    return { accepted: this.accepted, ignored: this.ignored }
  }

  /** Pid of the relay process once its socket is bound; 0 when none runs. */
  get pid (): number {
    return this.relayPid
  }

  /** Starts the relay; resolves once the socket is bound (mode 0666). */
  async start (): Promise<void> {
    if (this.child != null) return
    this.stopping = false
    await this.spawnRelay()
  }

  /**
   * Stops the relay (SIGTERM, then SIGKILL), removes the socket, drops queued requests
   * and waits a little for requests already running.
   */
  async stop (): Promise<void> {
    this.stopping = true
    if (this.restartTimer != null) {
      clearTimeout(this.restartTimer)
      this.restartTimer = null
    }
    const child = this.child
    if (child != null) await this.killRelay(child)
    await this.removeSocket()
    for (const [name, lane] of this.lanes) {
      if (lane.queue.length > 0) this.log.warn({ container: name, dropped: lane.queue.length }, 'container requests dropped: stopping')
      lane.queue = []
    }
    await this.chain
    if (this.running.size > 0) {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, DRAIN_TIMEOUT_MS)
      })
      await Promise.race([Promise.allSettled([...this.running]), timeout])
      clearTimeout(timer)
      if (this.running.size > 0) this.log.warn({ running: this.running.size }, 'container requests still running at stop')
    }
  }

  private async spawnRelay (): Promise<void> {
    const python = this.init.python ?? 'python3'
    const child = spawn(python, [RELAY, this.init.socketPath], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.child = child
    const rl = createInterface({ input: child.stdout! })
    const stderr: string[] = []
    createInterface({ input: child.stderr! }).on('line', (line) => {
      if (stderr.length < 20) stderr.push(line)
      this.log.warn({ relay: line }, 'ipc relay stderr')
    })
    child.stdin!.on('error', () => {}) // EPIPE when the relay has died: seen on 'exit'

    let isReady = false
    let onReady: () => void = () => {}
    const ready = new Promise<void>((resolve) => {
      onReady = () => {
        isReady = true
        resolve()
      }
    })
    rl.on('line', (line) => {
      let msg: RelayLine
      try {
        msg = JSON.parse(line) as RelayLine
      } catch {
        this.log.warn({ line: line.slice(0, 200) }, 'ipc relay: not JSON')
        return
      }
      if (msg == null || typeof msg !== 'object') return
      if (msg.ready === true) {
        onReady()
        return
      }
      this.chain = this.chain.then(async () => await this.onDatagram(msg)).catch((err: unknown) => {
        this.log.error({ err }, 'container request handling failed')
      })
    })

    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }))
      child.once('exit', (code, signal) => resolve({ code, signal }))
    })
    void exited.then((r) => this.onRelayExit(child, isReady, r))

    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), START_TIMEOUT_MS)
    })
    const first = await Promise.race([ready.then(() => 'ready' as const), exited.then(() => 'exited' as const), timeout])
    clearTimeout(timer)
    if (first !== 'ready') {
      if (first === 'timeout') await this.killRelay(child)
      const r = await exited
      const why = r.error != null ? r.error.message : first === 'timeout' ? 'no answer in time' : `exit code ${String(r.code)}${r.signal != null ? ` (${r.signal})` : ''}`
      throw new Error(`ipc relay for ${this.init.socketPath} did not start: ${why}${stderr.length > 0 ? `: ${stderr.join(' | ')}` : ''}`)
    }
    const st = await fs.stat(this.init.socketPath).catch(() => null)
    if (st == null || !st.isSocket()) {
      await this.killRelay(child)
      throw new Error(`ipc relay said ready, but ${this.init.socketPath} is no socket`)
    }
    this.socketIno = st.ino
    this.relayPid = child.pid ?? 0
    this.log.info({ socket: this.init.socketPath, relayPid: this.relayPid }, 'container request socket ready')
  }

  private onRelayExit (child: ChildProcess, wasReady: boolean, r: { code: number | null; signal: NodeJS.Signals | null; error?: Error }): void {
    if (this.child !== child) return
    this.child = null
    this.relayPid = 0
    // Not ready yet: spawnRelay() reports the failure itself.
    if (this.stopping || !wasReady) return
    this.log.error({ code: r.code, signal: r.signal, err: r.error }, 'ipc relay exited; restarting it')
    this.scheduleRestart(RESTART_DELAY_MS)
  }

  private scheduleRestart (delayMs: number): void {
    if (this.stopping || this.restartTimer != null) return
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null
      if (this.stopping || this.child != null) return
      this.spawnRelay().catch((err: unknown) => {
        this.log.error({ err }, 'ipc relay restart failed')
        this.scheduleRestart(Math.min(delayMs * 2, 30_000))
      })
    }, delayMs)
    this.restartTimer.unref()
  }

  private async killRelay (child: ChildProcess): Promise<void> {
    const pid = child.pid
    if (pid == null || child.exitCode !== null || child.signalCode !== null) return
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.stdin?.end()
    try {
      process.kill(pid, 'SIGTERM')
    } catch {}
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), STOP_TIMEOUT_MS)
    })
    if (await Promise.race([gone, late]) === 'late') {
      this.log.warn({ pid }, 'ipc relay ignored SIGTERM; killing it')
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
      await gone
    }
    clearTimeout(timer)
  }

  /** Removes the socket file if it is still the one our relay bound. */
  private async removeSocket (): Promise<void> {
    if (this.socketIno == null) return
    try {
      const st = await fs.stat(this.init.socketPath)
      if (st.isSocket() && st.ino === this.socketIno) await fs.rm(this.init.socketPath, { force: true })
    } catch {}
    this.socketIno = null
  }

  private async onDatagram (msg: RelayLine): Promise<void> {
    const pid = typeof msg.pid === 'number' ? msg.pid : null
    if (msg.truncated === true) {
      this.ignore('longer than 4096 bytes', { pid })
      return
    }
    if (typeof msg.data !== 'string') {
      this.ignore('relay line without data', { pid })
      return
    }
    const bytes = Buffer.from(msg.data, 'base64')
    const req = bytes.some((b) => b > 0x7e) ? null : parseRequest(bytes.toString('latin1'))
    if (req == null) {
      this.ignore('not a request', { pid, bytes: bytes.length, head: JSON.stringify(bytes.subarray(0, 32).toString('latin1')) })
      return
    }
    if (pid == null) {
      this.ignore('sender unknown (no credentials)', { kind: req.kind })
      return
    }
    // The relay read /proc/PID/cgroup on receipt; a sender that exited since is gone.
    const name = typeof msg.cgroup === 'string'
      ? containerOfCgroupText(msg.cgroup, this.init.cgroupParent)
      : await containerOfPid(pid, this.init.cgroupParent)
    if (name == null) {
      this.ignore('sender is no container of this node', { pid, kind: req.kind })
      return
    }
    if (this.stopping) {
      this.ignore('stopping', { pid, container: name, kind: req.kind })
      return
    }
    this.enqueue(name, req)
  }

  private enqueue (name: string, req: ContainerRequest): void {
    let lane = this.lanes.get(name)
    if (lane == null) {
      lane = { running: false, queue: [] }
      this.lanes.set(name, lane)
    }
    if (lane.running && lane.queue.length >= MAX_QUEUED_PER_CONTAINER) {
      this.ignore('queue full', { container: name, kind: req.kind, queued: lane.queue.length })
      return
    }
    this.accepted++
    lane.queue.push({ req, receivedAt: Date.now() })
    if (!lane.running) {
      const p = this.drain(name, lane)
      this.running.add(p)
      void p.finally(() => this.running.delete(p))
    }
  }

  private async drain (name: string, lane: Lane): Promise<void> {
    lane.running = true
    try {
      for (let next = lane.queue.shift(); next != null; next = lane.queue.shift()) {
        await this.runOne(name, next)
      }
    } finally {
      lane.running = false
      if (this.lanes.get(name) === lane && lane.queue.length === 0) this.lanes.delete(name)
    }
  }

  private async runOne (name: string, p: Pending): Promise<void> {
    const { req } = p
    const peer = req.kind === 'migrate' ? req.peer : undefined
    const started = Date.now()
    const fields = { container: name, kind: req.kind, ...(peer != null ? { peer } : {}), waitMs: started - p.receivedAt }
    this.log.info(fields, 'container request')
    try {
      if (req.kind === 'checkpoint') await this.init.onCheckpoint(name)
      else await this.init.onMigrate(name, peer)
      this.log.info({ ...fields, outcome: 'ok', ms: Date.now() - started }, 'container request done')
    } catch (err) {
      this.log.warn({ ...fields, outcome: 'error', ms: Date.now() - started, err }, 'container request failed')
    }
  }

  private ignore (reason: string, fields: Record<string, unknown>): void {
    this.ignored++
    const now = Date.now()
    if (now - this.ignoredWindowStart >= IGNORED_LOG_WINDOW_MS) {
      if (this.ignoredSuppressed > 0) this.log.warn({ suppressed: this.ignoredSuppressed }, 'container datagrams ignored (not logged one by one)')
      this.ignoredWindowStart = now
      this.ignoredLogged = 0
      this.ignoredSuppressed = 0
    }
    if (this.ignoredLogged < IGNORED_LOG_LIMIT) {
      this.ignoredLogged++
      this.log.warn({ ...fields, reason }, 'container datagram ignored')
    } else {
      this.ignoredSuppressed++
    }
  }
}
