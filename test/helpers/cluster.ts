/**
 * A cluster of real msc nodes in a Testbed (test/testbed/testbed.ts): one node per
 * network-namespace host, each with its own data dir under one temp dir, talked to
 * from the root namespace through the real `msc` CLI (the API is a unix socket in the
 * data dir, reachable from any namespace).
 *
 *   const c = await startCluster({ hosts: 3, args: ['--mdns-interval', '1'] })
 *   try {
 *     await c.waitAllAlive(5_000)
 *     await c.tb.kill('h3')                      // crash the node's host
 *     await c.restart(c.node('n3'))              // same data dir, same peer id
 *   } finally {
 *     await c.destroy()                          // nodes by pid, leftovers, dirs, testbed
 *   }
 *
 * Nodes listen on the default /ip4/0.0.0.0/tcp/4710 (each host is its own namespace)
 * and only ever address testbed hosts. mDNS is on unless the caller passes --no-mdns;
 * its multicast stays on the testbed's bridge.
 */
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { once } from 'node:events'
import os from 'node:os'
import path from 'node:path'
import { execa } from 'execa'
import { Testbed, type TestHost } from '../testbed/testbed.ts'
import assert from 'node:assert/strict'
import { counterValues, MSC, removeCgroups, sleep, tempDir, waitFor, type CliResult } from './node-harness.ts'
import { ControlClient } from '../../src/api/client.ts'
import type { ContainerInfo, MigrationResultInfo, NodeStatus, PeerInfo } from '../../src/api/types.ts'

export { sleep, tempDir, waitFor }

/** The port nodes listen on inside a host (the default of --listen). */
export const NODE_PORT = 4710

export interface ClusterNode {
  /** `n1`, `n2`, ... (also the node's --name). */
  name: string
  host: TestHost
  dataDir: string
  /** stdout and stderr of every run of this node (appended). */
  logFile: string
  /** The arguments after `node start --data-dir DIR --name NAME`. */
  args: string[]
  /** Environment of this node only, over the cluster's (e.g. a fault-injection knob). */
  env: NodeJS.ProcessEnv
  /** The running node (nsenter exec'd into bin/msc, which exec's node: one pid), or null. */
  proc: ChildProcess | null
  /** Known once the node has started (kept across restarts: same data dir, same key). */
  peerId: string
  /** `/ip4/HOST_IP/tcp/4710/p2p/PEER_ID`: what `--bootstrap` and `msc join` take. */
  addr: string
}

export interface StartClusterOptions {
  /** Number of hosts (and nodes). */
  hosts: number
  /** Arguments given to every node (e.g. ['--mdns-interval', '1', '--ping-timeout', '3']). */
  args?: string[]
  /** Extra environment of every node. */
  env?: NodeJS.ProcessEnv
  /** Extra environment of single nodes, by node name: { n3: { ... } }. */
  nodeEnv?: Record<string, NodeJS.ProcessEnv>
  /** Start the nodes at once (default true); otherwise call start() per node. */
  start?: boolean
  /**
   * How the nodes form their cluster: 'key' (default) gives every node `--psk` with one
   * key file made for this cluster (c.keyFile); 'none' leaves it to the test (each node
   * then makes its own cluster unless given `--join TOKEN`).
   */
  formation?: 'key' | 'none'
}

/** Overlay and target settings the environment must not sneak into a test's nodes. */
const SCRUBBED_ENV = [
  'MSC_DATA_DIR',
  'DUMP_PATH',
  'MSC_API_SOCKET',
  'RPC_ADDR',
  'MSC_NODE_NAME',
  'NODE_NAME',
  'MSC_LISTEN',
  'MSC_ANNOUNCE',
  'MSC_BOOTSTRAP',
  'BOOTSTRAP_PEERS',
  'MSC_MDNS',
  'MSC_MDNS_INTERVAL',
  'MSC_PSK_FILE',
  'PING_INTERVAL',
  'MSC_PING_INTERVAL',
  'PING_TIMEOUT',
  'MSC_PING_TIMEOUT',
  'MSC_SUSPECT_TIMEOUT',
  'MSC_CGROUP_PARENT',
  'ENABLE_CONTINUOUS_DUMPING',
  'ENABLE_CONTINOUS_DUMPING',
  'DUMP_INTERVAL',
  'MSC_DUMP_INTERVAL',
  'LEASE_TIMEOUT',
  'MSC_LEASE_TIMEOUT',
  'MSC_WITNESS',
  'MSC_METRICS_LISTEN'
]

export class Cluster {
  readonly tb: Testbed
  /** Temp dir holding every node's data dir and log. */
  readonly root: string
  readonly nodes: ClusterNode[]
  readonly env: NodeJS.ProcessEnv
  /** The cluster key file every node gets (formation 'key'), or '' */
  readonly keyFile: string
  #destroyed = false

  constructor (tb: Testbed, root: string, nodes: ClusterNode[], env: NodeJS.ProcessEnv, keyFile = '') {
    this.tb = tb
    this.root = root
    this.nodes = nodes
    this.env = env
    this.keyFile = keyFile
  }

  /** By name (`n2`), host name (`h2`) or index (2). */
  node (ref: string | number): ClusterNode {
    const n = this.nodes.find((n) => n.name === String(ref) || n.host.name === String(ref) || String(n.host.index) === String(ref))
    if (n == null) throw new Error(`no node ${ref} (nodes: ${this.nodes.map((n) => n.name).join(', ')})`)
    return n
  }

  /**
   * Starts (or restarts, on the same data dir) the node inside its host and waits
   * until its API answers a status request. `args` replaces the node's arguments;
   * `timeoutMs` (default 30 s) bounds the wait for the API socket (a benchmark's 32nd
   * node on a 2-core machine shares it with 31 running nodes).
   */
  async start (node: ClusterNode, args?: string[], opts: { timeoutMs?: number } = {}): Promise<void> {
    if (args != null) node.args = args
    if (isRunning(node.proc)) throw new Error(`${node.name} is already running (pid ${node.proc!.pid})`)
    const out = await fs.open(node.logFile, 'a')
    const key = this.keyFile !== '' ? ['--psk', this.keyFile] : []
    try {
      node.proc = await this.tb.spawn(node.host, MSC, ['node', 'start', '--data-dir', node.dataDir, '--name', node.name, ...key, ...node.args], {
        env: { ...this.env, ...node.env },
        stdio: ['ignore', out.fd, out.fd]
      })
    } finally {
      await out.close()
    }
    const proc = node.proc
    const socket = path.join(node.dataDir, 'msc.sock')
    const alive = (): boolean => {
      if (!isRunning(proc)) throw new Error(`${node.name} exited (${proc.exitCode ?? proc.signalCode}):\n${this.logTail(node)}`)
      return true
    }
    // The socket appears once the node is up; only then is the CLI worth running (each
    // run costs a Node start, which slows the booting nodes on a small machine).
    await waitFor(() => alive() && existsSync(socket), opts.timeoutMs ?? 30_000, `${node.name} to create its API socket`)
    await waitFor(async () => {
      alive()
      const s = await this.statusApi(node).catch(() => null)
      if (s == null) return false
      if (node.peerId !== '' && node.peerId !== s.peerId) throw new Error(`${node.name} came back as ${s.peerId}, was ${node.peerId}`)
      node.peerId = s.peerId
      node.addr = `/ip4/${node.host.ip}/tcp/${NODE_PORT}/p2p/${s.peerId}`
      return true
    }, 20_000, `${node.name} to answer on its API`)
  }

  /** Starts every node that is not running, all at once. */
  async startAll (): Promise<void> {
    await Promise.all(this.nodes.filter((n) => !isRunning(n.proc)).map(async (n) => {
      await this.start(n)
    }))
  }

  /**
   * Graceful stop: SIGTERM to the node's pid, SIGKILL after `timeoutMs`.
   * Returns the exit code (null when it had to be killed or died of a signal).
   */
  async stop (node: ClusterNode, timeoutMs = 10_000): Promise<number | null> {
    const p = node.proc
    if (p == null || !isRunning(p)) return p?.exitCode ?? null
    const exited = once(p, 'exit')
    p.kill('SIGTERM')
    const t = setTimeout(() => {
      if (isRunning(p)) p.kill('SIGKILL')
    }, timeoutMs)
    try {
      await exited
    } finally {
      clearTimeout(t)
    }
    return p.exitCode
  }

  /** Every node stopped gracefully, in parallel. */
  async stopAll (timeoutMs = 10_000): Promise<void> {
    await Promise.all(this.nodes.map(async (n) => {
      await this.stop(n, timeoutMs)
    }))
  }

  /** Runs `msc ARGS --data-dir DIR` against the node, from the root namespace. */
  async msc (node: ClusterNode, ...args: string[]): Promise<CliResult> {
    return await this.mscTimed(node, 60_000, ...args)
  }

  /** msc() with another time limit (the CLI is killed after `timeoutMs`; exitCode -1 then). */
  async mscTimed (node: ClusterNode, timeoutMs: number, ...args: string[]): Promise<CliResult> {
    const r = await execa(MSC, [...args, '--data-dir', node.dataDir], { reject: false, env: this.env, timeout: timeoutMs })
    return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) }
  }

  /**
   * `msc peer migrate NAME --to TO --strategy S --json` against `from`, asserting that it
   * worked: exit 0, `ok`, running on `to`, with the strategy asked for (unless `auto`).
   * A failure names the command's output and the last `logLines` lines of both nodes' logs.
   */
  async migrate (from: ClusterNode, to: ClusterNode, name: string, strategy = 'auto', opts: { timeoutMs?: number; logLines?: number } = {}): Promise<MigrationResultInfo> {
    const r = await this.mscTimed(from, opts.timeoutMs ?? 240_000, 'peer', 'migrate', name, '--to', to.name, '--strategy', strategy, '--json')
    const lines = opts.logLines ?? 25
    const what = `migrate ${name} ${from.name} -> ${to.name} (${strategy}) exit ${r.exitCode}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\n` +
      `${from.name} log:\n${this.logTail(from, lines)}\n${to.name} log:\n${this.logTail(to, lines)}`
    let result: MigrationResultInfo
    try {
      result = JSON.parse(r.stdout) as MigrationResultInfo
    } catch {
      assert.fail(`no JSON result: ${what}`)
    }
    assert.equal(r.exitCode, 0, what)
    assert.equal(result.ok, true, what)
    if (strategy !== 'auto') assert.equal(result.strategy, strategy, what)
    assert.equal(result.runningOn, to.peerId, what)
    return result
  }

  /** What runc itself has under the node's root (`runc --root DIR/runc list`), whatever msc thinks. */
  async runcList (node: ClusterNode): Promise<Array<{ id: string; status: string; pid: number }>> {
    const root = path.join(node.dataDir, 'runc')
    if (!existsSync(root)) return []
    // runc fails a whole list when a container is deleted while it lists: ask again.
    let r = await execa('runc', ['--root', root, 'list', '--format', 'json'], { reject: false })
    for (let i = 0; i < 3 && r.exitCode !== 0 && /no such file or directory/i.test(String(r.stderr)); i++) {
      r = await execa('runc', ['--root', root, 'list', '--format', 'json'], { reject: false })
    }
    if (r.exitCode !== 0) throw new Error(`runc --root ${root} list failed: ${String(r.stderr)}`)
    const list = JSON.parse(String(r.stdout).trim() || 'null') as Array<{ id: string; status: string; pid: number }> | null
    return (list ?? []).map((x) => ({ id: x.id, status: x.status, pid: x.pid }))
  }

  /**
   * Processes of the node's log shims (src/runtime/shim/log-shim.c, started by
   * src/runtime/stdio-launcher.ts; found by the MSC_SHIM_LOG=DIR/containers/NAME/container.log in
   * their environment), with the container each one serves.
   */
  async shims (node: ClusterNode): Promise<Array<{ pid: number; container: string }>> {
    const out: Array<{ pid: number; container: string }> = []
    const prefix = `MSC_SHIM_LOG=${node.dataDir}/`
    for (const pid of await fs.readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue
      const env = await fs.readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '')
      const v = env.split('\0').find((e) => e.startsWith(prefix))
      if (v == null) continue
      const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
      if (stat === '' || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue
      out.push({ pid: Number(pid), container: path.basename(path.dirname(v.slice('MSC_SHIM_LOG='.length))) })
    }
    return out
  }

  /** The entries of the node's DIR/tmp (staging of migrations, partial transfers). */
  async tmpEntries (node: ClusterNode): Promise<string[]> {
    return (await fs.readdir(path.join(node.dataDir, 'tmp')).catch(() => [] as string[])).sort()
  }

  /** `msc ARGS --json`, parsed; throws with stderr on failure. */
  async json<T = unknown> (node: ClusterNode, ...args: string[]): Promise<T> {
    const r = await this.msc(node, ...args, '--json')
    if (r.exitCode !== 0) throw new Error(`msc ${args.join(' ')} on ${node.name} failed (${r.exitCode}): ${r.stderr}`)
    return JSON.parse(r.stdout) as T
  }

  /** `msc peer ls --json` on the node (the real CLI: what a user sees). */
  async peers (node: ClusterNode): Promise<PeerInfo[]> {
    return await this.json<PeerInfo[]>(node, 'peer', 'ls')
  }

  /**
   * The same list straight from the node's API socket (what `peer ls --json` prints
   * verbatim), for polling loops: a CLI run costs ~0.3-1 s of CPU, the API call ~1 ms,
   * and timing loops must not slow the nodes they time.
   */
  async peersApi (node: ClusterNode): Promise<PeerInfo[]> {
    return await new ControlClient(path.join(node.dataDir, 'msc.sock')).peers()
  }

  /** `msc status --json` on the node. */
  async status (node: ClusterNode): Promise<NodeStatus> {
    return await this.json<NodeStatus>(node, 'status')
  }

  /** The same from the API socket (what `status --json` prints), for polling. */
  async statusApi (node: ClusterNode): Promise<NodeStatus> {
    return await new ControlClient(path.join(node.dataDir, 'msc.sock')).status()
  }

  /** `msc inspect NAME --json` from the API socket, for polling (see peersApi). */
  async inspectApi (node: ClusterNode, name: string): Promise<ContainerInfo> {
    return await new ControlClient(path.join(node.dataDir, 'msc.sock')).inspect(name)
  }

  /** The entry `observer` has for `subject` (undefined: not listed); `cli` to go through `msc peer ls`. */
  async stateOf (observer: ClusterNode, subject: ClusterNode, via: 'api' | 'cli' = 'api'): Promise<PeerInfo | undefined> {
    const list = via === 'cli' ? await this.peers(observer) : await this.peersApi(observer)
    return list.find((p) => p.peerId === subject.peerId)
  }

  /**
   * Polls (the API, every `everyMs`) until `observer` lists `subject` in `state`; returns
   * that entry (its stateSince says when the transition happened in the observer, so a
   * slower poll, which loads a crowded host less, measures the same time).
   */
  async waitState (observer: ClusterNode, subject: ClusterNode, state: PeerInfo['state'], timeoutMs: number, everyMs = 100): Promise<PeerInfo> {
    let found: PeerInfo | undefined
    let last = 'not listed'
    try {
      await waitFor(async () => {
        const p = await this.stateOf(observer, subject)
        last = p == null ? 'not listed' : p.state
        if (p?.state === state) found = p
        return found != null
      }, timeoutMs, `${observer.name} to see ${subject.name} ${state}`, everyMs)
    } catch (err) {
      throw new Error(`${(err as Error).message} (last seen: ${last})`)
    }
    return found!
  }

  /**
   * Polls (the API, every `everyMs`) until each of `nodes` lists every other one of
   * them as alive. Returns the views at that moment: per observer name, its peer list.
   */
  async waitAllAlive (timeoutMs: number, nodes: ClusterNode[] = this.nodes, everyMs = 100): Promise<Map<string, PeerInfo[]>> {
    let missing: string[] = []
    const views = new Map<string, PeerInfo[]>()
    try {
      await waitFor(async () => {
        views.clear()
        for (const [n, list] of await Promise.all(nodes.map(async (n) => [n, await this.peersApi(n)] as const))) views.set(n.name, list)
        missing = []
        for (const n of nodes) {
          for (const o of nodes) {
            if (o === n) continue
            const p = views.get(n.name)!.find((x) => x.peerId === o.peerId)
            if (p?.state !== 'alive') missing.push(`${n.name} sees ${o.name} ${p?.state ?? 'not listed'}`)
          }
        }
        return missing.length === 0
      }, timeoutMs, `all of ${nodes.map((n) => n.name).join(', ')} to see each other alive`, everyMs)
    } catch (err) {
      throw new Error(`${(err as Error).message}: ${missing.join('; ')}`)
    }
    return views
  }

  /** The last lines of the node's log (for failure messages). */
  logTail (node: ClusterNode, lines = 30): string {
    try {
      return readFileSync(node.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
    } catch {
      return ''
    }
  }

  /**
   * Removes everything: nodes stopped by pid (SIGTERM, then SIGKILL after 3 s),
   * containers in their runc roots, every leftover process in the hosts, the testbed,
   * cgroups and the temp dir (kept when MSC_TEST_KEEP_LOGS=1). Safe to call twice and
   * after failures; throws the first error once every step ran.
   */
  async destroy (): Promise<void> {
    if (this.#destroyed) return
    this.#destroyed = true
    const errors: unknown[] = []
    const step = async (f: () => Promise<unknown>): Promise<void> => {
      try {
        await f()
      } catch (e) {
        errors.push(e)
      }
    }
    await step(() => this.stopAll(3_000))
    for (const n of this.nodes) {
      const runcRoot = path.join(n.dataDir, 'runc')
      if (!existsSync(runcRoot)) continue
      await step(async () => {
        const list = await execa('runc', ['--root', runcRoot, 'list', '-q'], { reject: false })
        for (const id of String(list.stdout).split('\n').filter(Boolean)) {
          await execa('runc', ['--root', runcRoot, 'kill', '--all', id, 'KILL'], { reject: false })
          await sleep(100)
          await unmountUnder(path.join(runcRoot, id))
          await execa('runc', ['--root', runcRoot, 'delete', '--force', id], { reject: false })
        }
      })
    }
    // The named network namespaces of `--network lan` containers (/run/netns/msc-NODEID-NAME).
    for (const n of this.nodes) {
      await step(async () => {
        const nodeId = await fs.readFile(path.join(n.dataDir, 'node-id'), 'utf8').then((s) => s.trim()).catch(() => '')
        if (!/^[0-9a-f]{8}$/.test(nodeId)) return
        for (const e of await fs.readdir('/run/netns').catch(() => [] as string[])) {
          if (e.startsWith(`msc-${nodeId}-`)) await execa('ip', ['netns', 'delete', e], { reject: false })
        }
      })
    }
    // destroy() SIGKILLs whatever is left in the hosts (shims, a node that would not die).
    await step(() => this.tb.destroy())
    for (const n of this.nodes) {
      await step(async () => {
        const nodeId = await fs.readFile(path.join(n.dataDir, 'node-id'), 'utf8').then((s) => s.trim()).catch(() => null)
        if (nodeId != null && nodeId !== '') await removeCgroups(`msc-${nodeId}`)
      })
    }
    await step(async () => {
      await unmountUnder(this.root)
      if (process.env.MSC_TEST_KEEP_LOGS === '1') {
        process.stderr.write(`cluster: logs kept in ${this.root}\n`)
        return
      }
      await execa('rm', ['-rf', '--one-file-system', this.root], { reject: false })
    })
    if (errors.length > 0) throw new AggregateError(errors, `destroying cluster: ${errors.map(String).join('; ')}`)
  }

  async [Symbol.asyncDispose] (): Promise<void> {
    await this.destroy()
  }
}

/**
 * Creates a testbed of `hosts` hosts and one node per host (`n1` in `h1`, ...), each
 * with a data dir under a fresh temp dir; starts them all unless `start: false`.
 * On failure everything made is removed before the error is thrown.
 */
export async function startCluster (opts: StartClusterOptions): Promise<Cluster> {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of SCRUBBED_ENV) delete env[k]
  // Replication (and the leases and lease guard that come with it) only where a test
  // asks for it: --replicas on `msc run`, or MSC_DEFAULT_REPLICAS in opts.env.
  Object.assign(env, { MSC_LOG_FORMAT: 'json', LOG_LEVEL: 'debug', MSC_STOP_TIMEOUT: '3000', MSC_DEFAULT_REPLICAS: '0' }, opts.env)
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-test-cluster-'))
  let tb: Testbed
  try {
    tb = await Testbed.create({ hosts: opts.hosts })
  } catch (err) {
    await fs.rm(root, { recursive: true, force: true })
    throw err
  }
  const nodes: ClusterNode[] = tb.hosts.map((host) => ({
    name: `n${host.index}`,
    host,
    dataDir: path.join(root, `n${host.index}`),
    logFile: path.join(root, `n${host.index}.log`),
    args: [...(opts.args ?? [])],
    env: { ...opts.nodeEnv?.[`n${host.index}`] },
    proc: null,
    peerId: '',
    addr: ''
  }))
  let keyFile = ''
  if (opts.formation !== 'none') {
    keyFile = path.join(root, 'cluster.key')
    const k = await execa(MSC, ['keygen', 'psk', keyFile], { reject: false, env })
    if (k.exitCode !== 0) {
      await tb.destroy().catch(() => {})
      await fs.rm(root, { recursive: true, force: true })
      throw new Error(`msc keygen psk failed: ${String(k.stderr)}`)
    }
  }
  const c = new Cluster(tb, root, nodes, env, keyFile)
  if (opts.start !== false) {
    try {
      await c.startAll()
    } catch (err) {
      await c.destroy().catch(() => {})
      throw err
    }
  }
  return c
}

function isRunning (p: ChildProcess | null): boolean {
  return p != null && p.exitCode == null && p.signalCode == null
}

async function unmountUnder (dir: string): Promise<void> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8')
  const points = info.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => p != null && (p === dir || p.startsWith(dir + '/')))
  for (const p of points.sort((a, b) => b.length - a.length)) await execa('umount', ['-l', p], { reject: false })
}

/** `msc bundle KIND DIR ARGS...`, asserting it worked; returns DIR. */
export async function makeBundle (kind: 'counter' | 'redis', dir: string, ...args: string[]): Promise<string> {
  const r = await execa(MSC, ['bundle', kind, dir, ...args], { reject: false })
  assert.equal(r.exitCode, 0, `msc bundle ${kind}: ${String(r.stderr)}`)
  return dir
}

/** A counter's output on that node, read from its log files (for polling; assertions use `msc logs`). */
export function logValues (node: ClusterNode, name: string): number[] {
  const dir = path.join(node.dataDir, 'containers', name)
  let text = ''
  for (const f of ['container.log.1', 'container.log']) {
    try {
      text += readFileSync(path.join(dir, f), 'utf8')
    } catch {}
  }
  return counterValues(text)
}

/** One sequence 1..N: no value twice, no restart at 1, nothing skipped. */
export function assertOneSequence (values: number[], what: string): void {
  assert.ok(values.length > 0, `${what}: no output`)
  const bad = values.findIndex((v, i) => v !== i + 1)
  assert.equal(bad, -1, `${what}: one sequence 1..N with no value twice and no restart; first break at index ${bad}: ` +
    `...${JSON.stringify(values.slice(Math.max(0, bad - 5), bad + 5))}...`)
}
