/**
 * Starts real msc nodes for tests (each its own data dir, runc root and cgroup parent),
 * runs the real `msc` CLI against them, and cleans up everything they made, even
 * when a test failed: containers (by runc), the node (by pid), log shims, cgroups,
 * mounts and the data dir.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'

export const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)))
export const MSC = path.join(ROOT, 'bin', 'msc')

export interface CliResult {
  exitCode: number
  stdout: string
  stderr: string
}

export interface TestNode {
  dataDir: string
  socket: string
  proc: ChildProcess
  env: NodeJS.ProcessEnv
  /** Runs `msc ARGS` against this node. */
  msc: (...args: string[]) => Promise<CliResult>
  /** Runs `msc ARGS --json` and parses stdout; throws with stderr on failure. */
  json: <T = any>(...args: string[]) => Promise<T>
  /** SIGTERM the node (not its containers) and wait for it to exit. */
  stopDaemon: () => Promise<number | null>
  /** Start the node again on the same data dir. */
  restartDaemon: () => Promise<void>
  nodeLog: () => string
}

const live = new Set<TestNode>()
const temps = new Set<string>()

/** A temporary directory removed by destroyAllNodes(). */
export async function tempDir (prefix: string): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), `msc-test-${prefix}-`))
  temps.add(d)
  return d
}

export async function startNode (opts: { env?: NodeJS.ProcessEnv; args?: string[]; dataDir?: string } = {}): Promise<TestNode> {
  const dataDir = opts.dataDir ?? await fs.mkdtemp(path.join(os.tmpdir(), 'msc-test-node-'))
  const socket = path.join(dataDir, 'msc.sock')
  // Outside a testbed a node stays on loopback with mDNS off: no multicast may leave
  // the testbed bridge, and two nodes must not fight over the default port.
  const env: NodeJS.ProcessEnv = { ...process.env, MSC_LOG_FORMAT: 'json', LOG_LEVEL: 'debug', MSC_STOP_TIMEOUT: '3000', MSC_MDNS: 'false', MSC_LISTEN: '/ip4/127.0.0.1/tcp/0', MSC_DEFAULT_REPLICAS: '0', ...opts.env }
  const logFile = `${dataDir}.node.log`
  let proc!: ChildProcess
  const launch = async (): Promise<void> => {
    const out = await fs.open(logFile, 'a')
    proc = spawn(MSC, ['node', 'start', '--data-dir', dataDir, ...(opts.args ?? [])], { env, stdio: ['ignore', out.fd, out.fd] })
    await out.close()
    await waitFor(async () => {
      if (proc.exitCode != null) throw new Error(`msc node exited with ${proc.exitCode}:\n${readFileSync(logFile, 'utf8')}`)
      return existsSync(socket) && (await execa(MSC, ['status', '--data-dir', dataDir], { reject: false, env })).exitCode === 0
    }, 20_000, 'node to listen')
  }
  try {
    await launch()
  } catch (err) {
    // A node that died while starting still made a data dir (and maybe cgroups).
    try {
      proc?.kill('SIGKILL')
    } catch {}
    await unmountUnder(dataDir)
    await execa('rm', ['-rf', '--one-file-system', dataDir, logFile], { reject: false })
    throw err
  }
  const node: TestNode = {
    dataDir,
    socket,
    get proc () {
      return proc
    },
    env,
    msc: async (...args) => {
      const r = await execa(MSC, [...args], { reject: false, env: { ...env, MSC_DATA_DIR: dataDir }, timeout: 180_000 })
      return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) }
    },
    json: async (...args) => {
      const r = await node.msc(...args, '--json')
      if (r.exitCode !== 0) throw new Error(`msc ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`)
      return JSON.parse(r.stdout)
    },
    stopDaemon: async () => {
      if (proc.exitCode != null) return proc.exitCode
      const exited = new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)))
      proc.kill('SIGTERM')
      return await exited
    },
    restartDaemon: launch,
    nodeLog: () => {
      try {
        return readFileSync(logFile, 'utf8')
      } catch {
        return ''
      }
    }
  }
  live.add(node)
  return node
}

/** Removes everything a test node made. Safe to call twice and after failures. */
export async function destroyNode (node: TestNode): Promise<void> {
  live.delete(node)
  const runcRoot = path.join(node.dataDir, 'runc')
  const list = await execa('runc', ['--root', runcRoot, 'list', '-q'], { reject: false })
  for (const id of String(list.stdout).split('\n').filter(Boolean)) {
    await execa('runc', ['--root', runcRoot, 'kill', '--all', id, 'KILL'], { reject: false })
  }
  if (node.proc.exitCode == null && node.proc.signalCode == null) {
    const exited = new Promise((resolve) => node.proc.once('exit', resolve))
    node.proc.kill('SIGKILL')
    await exited
  }
  await sleep(200)
  for (const id of String(list.stdout).split('\n').filter(Boolean)) {
    await unmountUnder(path.join(runcRoot, id))
    await execa('runc', ['--root', runcRoot, 'delete', '--force', id], { reject: false })
  }
  // Shims end by themselves when their container's pipe closes; any left (their
  // container gone) are found by the log path they write to, which names our dir.
  await killShimsUnder(node.dataDir)
  const nodeId = await fs.readFile(path.join(node.dataDir, 'node-id'), 'utf8').then((s) => s.trim()).catch(() => null)
  if (nodeId != null) await removeCgroups(`msc-${nodeId}`)
  await unmountUnder(node.dataDir)
  await execa('rm', ['-rf', '--one-file-system', node.dataDir], { reject: false })
  // Keep the node's log only when the test run asks for it (MSC_TEST_KEEP_LOGS=1).
  if (process.env.MSC_TEST_KEEP_LOGS !== '1') await fs.rm(`${node.dataDir}.node.log`, { force: true })
}

export async function destroyAllNodes (): Promise<void> {
  for (const n of [...live]) await destroyNode(n)
  for (const d of [...temps]) {
    temps.delete(d)
    await unmountUnder(d)
    await execa('rm', ['-rf', '--one-file-system', d], { reject: false })
  }
}

async function killShimsUnder (dir: string): Promise<void> {
  for (const pid of await fs.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue
    const environ = await fs.readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '')
    if (environ.includes(`MSC_SHIM_LOG=${dir}/`)) {
      try {
        process.kill(Number(pid), 'SIGKILL')
      } catch {}
    }
  }
}

/** Removes the node's cgroup directories in every hierarchy (deepest first). */
export async function removeCgroups (parent: string): Promise<void> {
  const roots = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']
  const hier = await fs.readdir('/sys/fs/cgroup').catch(() => [] as string[])
  for (const h of hier) roots.push(path.join('/sys/fs/cgroup', h))
  for (const r of roots) {
    const dir = path.join(r, parent)
    if (!existsSync(dir)) continue
    const find = await execa('find', [dir, '-depth', '-type', 'd'], { reject: false })
    for (const d of String(find.stdout).split('\n').filter(Boolean)) await fs.rmdir(d).catch(() => {})
  }
}

export async function cgroupsExist (parent: string): Promise<string[]> {
  const found: string[] = []
  for (const h of await fs.readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
    const d = path.join('/sys/fs/cgroup', h, parent)
    if (existsSync(d)) found.push(d)
  }
  return found
}

async function unmountUnder (dir: string): Promise<void> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8')
  const points = info.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => p != null && (p === dir || p.startsWith(dir + '/')))
  for (const p of points.sort((a, b) => b.length - a.length)) await execa('umount', ['-l', p], { reject: false })
}

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** `what` may be a function: the message then says what was seen when the wait gave up. */
export async function waitFor (cond: () => Promise<boolean> | boolean, timeoutMs: number, what: string | (() => string | Promise<string>), everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (true) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? await what() : what}`)
    await sleep(everyMs)
  }
}

/** The integers a counter printed, in order. */
export function counterValues (log: string): number[] {
  return log.split('\n').map((l) => l.trim()).filter((l) => /^\d+$/.test(l)).map(Number)
}

/** True while the process exists and is not a zombie waiting to be reaped. */
export function isAlive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** A TCP port nothing listens on now (for redis in tests). */
export async function freePort (): Promise<number> {
  const net = await import('node:net')
  return await new Promise((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => resolve(typeof a === 'object' && a != null ? a.port : 0))
    })
    s.on('error', reject)
  })
}
