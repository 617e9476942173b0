/**
 * A testbed of several "hosts" on one machine: one Linux bridge, and per host a network
 * namespace joined to the bridge by a veth pair. Tests run msc nodes inside the hosts
 * (with nsenter, see spawn()), crash them (kill()), and partition them (cut()/heal()).
 *
 * Safety rules this file keeps (see /work/shared/notes/host.md):
 * - Only the testbed's own subnet (10.213.X.0/24, X claimed per testbed) is addressed.
 *   The namespaces get no default route and the bridge is never joined to a physical
 *   interface, and there is no NAT: nothing can leave the machine.
 * - Multicast (mDNS) stays on the bridge: each namespace routes 224.0.0.0/4 to its own
 *   eth0 (the veth), and the root namespace does no multicast routing.
 * - Everything made is first recorded in /run/msc-testbed/<name>.json, so destroy()
 *   and destroyStale() can remove it after a failed or crashed run. Teardown ignores
 *   "not found" and is safe to call twice.
 *
 * Needs root, iproute2 (ip), util-linux (nsenter), iptables (also ships ebtables-nft).
 */
import { spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import path from 'node:path'
import { randomInt } from 'node:crypto'
import { execa } from 'execa'

export const STATE_DIR = '/run/msc-testbed'
/** 10.213.X.0/24: X (1..250) is claimed per testbed so that testbeds can coexist. */
const SUBNET_PREFIX = '10.213'
const BRIDGE_HOST_OCTET = 254
const CMD_TIMEOUT_MS = 15_000

export interface TestHost {
  /** `h1`, `h2`, ... */
  name: string
  /** 1-based; also the last octet of `ip`. */
  index: number
  /** Network namespace name (`ip netns`), mounted at /run/netns/<netns>. */
  netns: string
  /** The host's address on its `eth0`, without prefix length. */
  ip: string
  /** The bridge side of the host's veth pair (in the root namespace). */
  vethHost: string
}

/** What a testbed made, as recorded in its state file. */
export interface TestbedState {
  version: 1
  name: string
  /** 4 hex digits: the first two are the subnet index X, so ids of live testbeds differ. */
  id: string
  subnetIndex: number
  subnet: string
  bridge: string
  bridgeIp: string
  hosts: TestHost[]
  /** The creating process; null for testbeds meant to outlive it (`cli.ts up`). */
  owner: { pid: number; startTime: string } | null
  createdAt: string
}

export interface ExecResult {
  exitCode: number
  stdout: string
  stderr: string
  timedOut: boolean
}

export interface ExecOptions {
  /** Milliseconds; default 30 s. The process gets SIGTERM, then SIGKILL 2 s later. */
  timeout?: number
  input?: string
  env?: NodeJS.ProcessEnv
  cwd?: string
}

export interface CreateOptions {
  hosts: number
  /** Key of the state file; default `tb-<id>`. Letters, digits, `.`, `_`, `-`. */
  name?: string
  /** Not removed by destroyStale() when its creator exits (used by `cli.ts up`). */
  persistent?: boolean
}

export class Testbed {
  readonly state: TestbedState
  readonly hosts: TestHost[]
  /** Processes started with spawn(), per host name, until they exit. */
  readonly #children = new Map<string, Set<ChildProcess>>()
  #destroyed = false

  private constructor (state: TestbedState) {
    this.state = state
    this.hosts = state.hosts
  }

  get name (): string {
    return this.state.name
  }
  get bridge (): string {
    return this.state.bridge
  }
  get subnet (): string {
    return this.state.subnet
  }
  /** The bridge's own address (root namespace), for debugging from outside the hosts. */
  get bridgeIp (): string {
    return this.state.bridgeIp
  }

  /** The host by name (`h2`), index (2 or '2') or netns name. */
  host (ref: string | number): TestHost {
    const h = this.hosts.find((h) => h.name === String(ref) || String(h.index) === String(ref) || h.netns === String(ref))
    if (h == null) throw new Error(`testbed ${this.name} has no host ${ref} (hosts: ${this.hosts.map((h) => h.name).join(', ')})`)
    return h
  }

  static async create (opts: CreateOptions): Promise<Testbed> {
    const count = opts.hosts
    if (!Number.isInteger(count) || count < 1 || count > 200) throw new Error(`hosts must be an integer in 1..200, got ${count}`)
    if (opts.name != null && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(opts.name)) throw new Error(`bad testbed name: ${opts.name}`)
    await fs.mkdir(STATE_DIR, { recursive: true, mode: 0o700 })

    // The subnet claim (an exclusively created file) makes X, and so the id and every
    // interface and namespace name, unique among live testbeds.
    const subnetIndex = await claimSubnet()
    // The first two hex digits are X: ids (and so names) of live testbeds differ.
    const id = subnetIndex.toString(16).padStart(2, '0') + randomInt(256).toString(16).padStart(2, '0')
    const name = opts.name ?? `tb-${id}`
    await fs.writeFile(claimPath(subnetIndex), name + '\n')
    const subnet = `${SUBNET_PREFIX}.${subnetIndex}`
    const state: TestbedState = {
      version: 1,
      name,
      id,
      subnetIndex,
      subnet: `${subnet}.0/24`,
      bridge: `mscb${id}`,
      bridgeIp: `${subnet}.${BRIDGE_HOST_OCTET}`,
      hosts: Array.from({ length: count }, (_, i) => ({
        name: `h${i + 1}`,
        index: i + 1,
        netns: `msc${id}h${i + 1}`,
        ip: `${subnet}.${i + 1}`,
        vethHost: `msc${id}v${i + 1}`
      })),
      owner: opts.persistent === true ? null : { pid: process.pid, startTime: await startTimeOf(process.pid) ?? '' },
      createdAt: new Date().toISOString()
    }
    // The state file is written (exclusively: names are unique) BEFORE anything is made,
    // so that whatever a crash leaves behind is on record.
    try {
      await fs.writeFile(statePath(name), JSON.stringify(state, null, 2) + '\n', { flag: 'wx', mode: 0o600 })
    } catch (err) {
      await fs.rm(claimPath(subnetIndex), { force: true })
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new Error(`testbed ${name} exists (${statePath(name)}): remove it with \`node test/testbed/cli.ts down ${name}\``)
      }
      throw err
    }

    const tb = new Testbed(state)
    try {
      await tb.#build()
    } catch (err) {
      await tb.destroy().catch(() => {})
      throw err
    }
    return tb
  }

  /** Opens a testbed made by another process (e.g. `cli.ts up`) from its state file. */
  static async open (name: string): Promise<Testbed> {
    const state = await readState(statePath(name))
    if (state == null) throw new Error(`no testbed ${name} (no ${statePath(name)})`)
    return new Testbed(state)
  }

  /** Every recorded testbed, with whether its creator still runs. */
  static async list (): Promise<Array<TestbedState & { alive: boolean }>> {
    const out: Array<TestbedState & { alive: boolean }> = []
    for (const f of await fs.readdir(STATE_DIR).catch(() => [] as string[])) {
      if (!f.endsWith('.json')) continue
      const s = await readState(path.join(STATE_DIR, f))
      if (s != null) out.push({ ...s, alive: await ownerAlive(s) })
    }
    return out
  }

  /**
   * Removes testbeds whose creating process is gone (a crashed or killed test run),
   * and leftovers of ours (by name pattern) that no state file accounts for.
   * Persistent testbeds (`cli.ts up`) are kept unless `all`; `all` removes every one.
   * Returns the names removed.
   */
  static async destroyStale (opts: { all?: boolean } = {}): Promise<string[]> {
    // Leftovers are listed BEFORE the state files are read: a testbed being created
    // concurrently writes its state file before making anything, so whatever is seen
    // here and not accounted for below is really an orphan.
    const netns = await listNetns()
    const links = await listLinks()
    const fwd = String((await execa('iptables', ['-S', 'FORWARD'], { reject: false, timeout: CMD_TIMEOUT_MS })).stdout)
    const eb = await ebtablesListing()
    const removed: string[] = []
    const known = new Set<string>() // ids of testbeds kept or just destroyed
    for (const s of await Testbed.list()) {
      known.add(s.id)
      if (!opts.all && (s.owner == null || s.alive)) continue
      await new Testbed(s).destroy()
      removed.push(s.name)
    }
    const idOf = (x: string): string | undefined => /^(?:msc([0-9a-f]{4})h\d+|mscb([0-9a-f]{4})|msc([0-9a-f]{4})v\d+)$/.exec(x)?.slice(1).find((g) => g != null)
    const orphanNs = netns.filter((n) => {
      const id = idOf(n)
      return id != null && !known.has(id)
    })
    const orphanLinks = links.filter((l) => {
      const id = idOf(l)
      return id != null && !known.has(id)
    })
    if (orphanNs.length > 0 || orphanLinks.length > 0) {
      for (const n of orphanNs) await killNetnsPids(n, 10_000).catch(() => {})
      for (const l of orphanLinks) await ip(['link', 'del', l], { ignore: NOT_FOUND })
      for (const n of orphanNs) await ip(['netns', 'del', n], { ignore: NOT_FOUND })
      removed.push(...[...orphanNs, ...orphanLinks].map((x) => `orphan:${x}`))
    }
    // Firewall rules of unrecorded testbeds: the iptables rule carries the id in its
    // comment, cut rules name a veth.
    for (const line of fwd.split('\n')) {
      const id = /^-A FORWARD .*--comment "?msc-testbed ([0-9a-f]{4})"?/.exec(line)?.[1]
      if (id == null || known.has(id)) continue
      await removeIptablesRules(['-i', `mscb${id}`, '-o', `mscb${id}`, '-m', 'comment', '--comment', `msc-testbed ${id}`, '-j', 'ACCEPT'])
      removed.push(`orphan:iptables:${id}`)
    }
    for (const m of eb.matchAll(/\bmsc([0-9a-f]{4})v(\d+)\b/g)) {
      if (known.has(m[1]!)) continue
      known.add(m[1]!) // once per testbed is enough: remove its hosts' rules
      for (let i = 1; i <= 253; i++) {
        const veth = `msc${m[1]}v${i}`
        if (new RegExp(`\\b${veth}\\b`).test(eb)) await removeEbRules({ name: `h${i}`, index: i, netns: '', ip: '', vethHost: veth }, eb)
      }
      removed.push(`orphan:ebtables:${m[1]}`)
    }
    // Subnet claims whose testbed has no state file. A claim is written a moment before
    // its state file, hence the age test: a testbed being created keeps its claim.
    for (const f of await fs.readdir(STATE_DIR).catch(() => [] as string[])) {
      if (!/^net-\d+\.claim$/.test(f)) continue
      const file = path.join(STATE_DIR, f)
      const st = await fs.stat(file).catch(() => null)
      const owner = (await fs.readFile(file, 'utf8').catch(() => '')).trim()
      if (st != null && Date.now() - st.mtimeMs > 60_000 && (owner === '' || !(await exists(statePath(owner))))) {
        await fs.rm(file, { force: true })
      }
    }
    return removed
  }

  async #build (): Promise<void> {
    const s = this.state
    // STP off (ports forward at once) and multicast snooping off: every multicast
    // group is flooded to all ports, like a dumb switch, whatever IGMP says.
    await ip(['link', 'add', 'name', s.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0', 'mcast_snooping', '0'])
    await ip(['addr', 'add', `${s.bridgeIp}/24`, 'dev', s.bridge])
    await ip(['link', 'set', s.bridge, 'up'])
    // Docker's FORWARD policy DROP would also drop bridged traffic (br_netfilter).
    await run('iptables', ['-I', 'FORWARD', ...this.#iptablesRule()])
    await Promise.all(this.hosts.map(async (h) => {
      await ip(['netns', 'add', h.netns])
      // The namespace end is created inside the namespace, already named eth0.
      await ip(['link', 'add', h.vethHost, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.netns])
      await ip(['link', 'set', h.vethHost, 'master', s.bridge, 'up'])
      // One `ip -batch` per namespace instead of one process per command.
      await ip(['-n', h.netns, '-batch', '-'], {
        input: [
          'link set lo up',
          `addr add ${h.ip}/24 dev eth0`,
          'link set eth0 up',
          // Without a route for multicast, sending to 224.0.0.251 fails with
          // ENETUNREACH and mDNS (libp2p's multicast-dns) finds nothing. It goes to
          // the veth, i.e. the bridge; there is deliberately no default route.
          'route add 224.0.0.0/4 dev eth0'
        ].join('\n') + '\n'
      })
    }))
  }

  #iptablesRule (): string[] {
    return ['-i', this.bridge, '-o', this.bridge, '-m', 'comment', '--comment', `msc-testbed ${this.state.id}`, '-j', 'ACCEPT']
  }

  #nsenterArgs (host: TestHost, cmd: string, args: readonly string[]): string[] {
    // Not `ip netns exec`: it also unshares the mount namespace and remounts /sys, so
    // the cgroup hierarchies vanish and runc fails. nsenter joins the netns only.
    return [`--net=/run/netns/${host.netns}`, '--', cmd, ...args]
  }

  /**
   * Starts `cmd args` inside the host's network namespace and returns once it runs
   * there (rejects if it cannot start). The process keeps the caller's mount, pid and
   * cgroup namespaces. stdio defaults to pipes, as with child_process.spawn: read
   * them or pass `stdio`. The testbed kills it in kill(host) and destroy().
   */
  async spawn (host: TestHost | string | number, cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): Promise<ChildProcess> {
    const h = typeof host === 'object' ? host : this.host(host)
    this.#alive()
    const child = spawnChild('nsenter', this.#nsenterArgs(h, cmd, args), opts)
    let set = this.#children.get(h.name)
    if (set == null) this.#children.set(h.name, set = new Set())
    set.add(child)
    child.once('exit', () => set.delete(child))
    child.once('error', () => set.delete(child))
    await once(child, 'spawn') // rejects with the 'error' event (e.g. ENOENT)
    // 'spawn' means nsenter runs, maybe still in the root namespace: wait until it
    // entered the host's, so that pids() and kill() right away see it.
    const ino = await netnsInode(h.netns)
    const deadline = Date.now() + 5000
    while (ino != null && child.exitCode == null && child.signalCode == null && Date.now() < deadline) {
      const link = await fs.readlink(`/proc/${child.pid}/ns/net`).catch(() => null)
      if (link == null || link === `net:[${ino}]`) break
      await sleep(2)
    }
    return child
  }

  /** Runs `cmd args` to completion inside the host's network namespace. Never rejects on exit codes. */
  async exec (host: TestHost | string | number, cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    const h = typeof host === 'object' ? host : this.host(host)
    this.#alive()
    const r = await execa('nsenter', this.#nsenterArgs(h, cmd, args), {
      reject: false,
      timeout: opts.timeout ?? 30_000,
      forceKillAfterDelay: 2000,
      input: opts.input,
      env: opts.env,
      cwd: opts.cwd
    })
    return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), timedOut: r.timedOut }
  }

  /** The pids whose network namespace is the host's (what `ip netns pids` prints). */
  async pids (host: TestHost | string | number): Promise<number[]> {
    const h = typeof host === 'object' ? host : this.host(host)
    const ino = await netnsInode(h.netns)
    return ino == null ? [] : (await scanProcs()).filter((p) => p.netIno === ino).map((p) => p.pid)
  }

  /**
   * Crashes the host's software: SIGKILL to every process in its network namespace
   * (and to their descendants, e.g. containers in namespaces of their own), then waits
   * until they are gone. Containers without a network namespace share the host's and
   * die with it, as wanted. Note the host's kernel stays up: sockets of the killed
   * processes are closed, so peers see FIN/RST. For a machine crash (peers see
   * nothing, connections time out), call cut(host) first (or crash(host)).
   */
  async kill (host: TestHost | string | number, timeoutMs = 10_000): Promise<void> {
    const h = typeof host === 'object' ? host : this.host(host)
    const children = [...(this.#children.get(h.name) ?? [])]
    for (const c of children) if (c.pid != null && c.exitCode == null && c.signalCode == null) signal(c.pid, 'SIGKILL')
    await killNetnsPids(h.netns, timeoutMs)
    // Our own children are gone too, but let their 'exit' events fire so callers can
    // rely on exitCode/signalCode right after kill().
    await Promise.all(children.map(async (c) => {
      if (c.exitCode == null && c.signalCode == null) await once(c, 'exit')
    }))
  }

  /**
   * Partitions the host: every frame to or from it is dropped on the bridge, silently,
   * except ARP. Why this and not "veth down":
   * - Silently dropped packets make TCP retransmit and finally time out, as when a
   *   machine vanishes or a network partitions; nothing answers with RST or ICMP.
   * - Setting the veth down would drop the carrier of the host's eth0 (a link event the
   *   host sees, and its neighbour entries are flushed), and the others' ARP for it
   *   would fail: their connect() then errors with EHOSTUNREACH after ~3 s instead of
   *   hanging. Letting ARP through keeps neighbours resolved, so connect() hangs until
   *   the caller's own timeout, like a dial across a broken router.
   * - ebtables (bridge family) works whether or not br_netfilter is loaded (iptables
   *   would only see bridged frames with br_netfilter), and this kernel has no tc drop
   *   action (no act_gact, cls_matchall nor netem).
   * Also blocks the root namespace (the bridge's own address) from the host.
   */
  async cut (host: TestHost | string | number): Promise<void> {
    const h = typeof host === 'object' ? host : this.host(host)
    this.#alive()
    await this.heal(h) // no duplicates when cut twice
    for (const rule of ebRules(h)) await run(await ebtablesBin(), ['-I', ...rule])
  }

  /** Undoes cut(). Safe when the host was not cut. */
  async heal (host: TestHost | string | number): Promise<void> {
    const h = typeof host === 'object' ? host : this.host(host)
    await removeEbRules(h)
  }

  /** cut() then kill(): a machine crash as its peers see it (no FIN, no RST). */
  async crash (host: TestHost | string | number): Promise<void> {
    await this.cut(host)
    await this.kill(host)
  }

  /**
   * Removes everything: processes (spawned ones and every pid in the namespaces),
   * cut rules, veths, namespaces, the bridge, the iptables rule, the subnet claim and
   * the state file. Tries every step even if one fails, then throws the first error.
   * Idempotent.
   */
  async destroy (): Promise<void> {
    if (this.#destroyed) return
    const errors: unknown[] = []
    const step = async (f: () => Promise<unknown>): Promise<void> => {
      try {
        await f()
      } catch (e) {
        errors.push(e)
      }
    }
    for (const set of this.#children.values()) {
      for (const c of set) if (c.pid != null && c.exitCode == null && c.signalCode == null) signal(c.pid, 'SIGKILL')
    }
    // All namespaces at once: a process is killed before its peers on other hosts
    // can react to its death, and the waits overlap.
    await Promise.all(this.hosts.map((h) => step(() => killNetnsPids(h.netns, 10_000))))
    await step(async () => {
      const listing = await ebtablesListing()
      for (const h of this.hosts) await removeEbRules(h, listing)
    })
    // Deleting one end of a veth pair deletes both.
    await Promise.all(this.hosts.map((h) => step(() => ip(['link', 'del', h.vethHost], { ignore: NOT_FOUND }))))
    await Promise.all(this.hosts.map((h) => step(() => ip(['netns', 'del', h.netns], { ignore: NOT_FOUND }))))
    await step(() => ip(['link', 'del', this.bridge], { ignore: NOT_FOUND }))
    await step(() => removeIptablesRules(this.#iptablesRule()))
    if (errors.length === 0) {
      // Claim first, state last: a claim without a state file is known to be stale.
      await step(async () => {
        const claim = claimPath(this.state.subnetIndex)
        const owner = (await fs.readFile(claim, 'utf8').catch(() => '')).trim()
        if (owner === this.name) await fs.rm(claim, { force: true })
      })
      await step(() => fs.rm(statePath(this.name), { force: true }))
    }
    if (errors.length > 0) throw new AggregateError(errors, `destroying testbed ${this.name}: ${errors.map(String).join('; ')}`)
    this.#destroyed = true
  }

  async [Symbol.asyncDispose] (): Promise<void> {
    await this.destroy()
  }

  #alive (): void {
    if (this.#destroyed) throw new Error(`testbed ${this.name} was destroyed`)
  }
}

// ---- helpers -------------------------------------------------------------------------

const NOT_FOUND = /Cannot find device|No such file|does not exist|Cannot open network namespace|not found/i

function statePath (name: string): string {
  return path.join(STATE_DIR, `${name}.json`)
}
function claimPath (index: number): string {
  return path.join(STATE_DIR, `net-${index}.claim`)
}

async function exists (p: string): Promise<boolean> {
  return await fs.access(p).then(() => true, () => false)
}

async function readState (file: string): Promise<TestbedState | null> {
  try {
    const s = JSON.parse(await fs.readFile(file, 'utf8')) as TestbedState
    return s.version === 1 ? s : null
  } catch {
    return null
  }
}

async function run (cmd: string, args: string[], opts: { ignore?: RegExp; input?: string } = {}): Promise<{ ok: boolean; stdout: string }> {
  const r = await execa(cmd, args, { reject: false, timeout: CMD_TIMEOUT_MS, input: opts.input })
  if (r.exitCode === 0) return { ok: true, stdout: String(r.stdout) }
  const err = String(r.stderr || r.stdout).trim()
  if (opts.ignore?.test(err)) return { ok: false, stdout: String(r.stdout) }
  throw new Error(`${cmd} ${args.join(' ')} failed (${r.timedOut ? 'timed out' : r.exitCode}): ${err}`)
}

async function ip (args: string[], opts: { ignore?: RegExp; input?: string } = {}): Promise<{ ok: boolean; stdout: string }> {
  return await run('ip', args, opts)
}

/** Picks a free X for 10.213.X.0/24 and claims it with an exclusively created file. */
async function claimSubnet (): Promise<number> {
  const used = String((await execa('ip', ['-4', '-o', 'addr'], { reject: false, timeout: CMD_TIMEOUT_MS })).stdout) +
    String((await execa('ip', ['-4', 'route', 'show', 'table', 'all'], { reject: false, timeout: CMD_TIMEOUT_MS })).stdout)
  const candidates = Array.from({ length: 250 }, (_, i) => i + 1)
    .filter((x) => !used.includes(`${SUBNET_PREFIX}.${x}.`))
  // Random order, so two testbeds created at once rarely race for the same X.
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = randomInt(i + 1)
    ;[candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!]
  }
  for (const x of candidates) {
    try {
      await fs.writeFile(claimPath(x), '\n', { flag: 'wx' })
      return x
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
  throw new Error(`no free subnet ${SUBNET_PREFIX}.X.0/24 (see ${STATE_DIR}; \`node test/testbed/cli.ts clean\`)`)
}

/** Field 22 of /proc/PID/stat: distinguishes a live creator from a reused pid. */
async function startTimeOf (pid: number): Promise<string | null> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  if (stat == null) return null
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null
}

async function ownerAlive (s: TestbedState): Promise<boolean> {
  if (s.owner == null) return true
  const st = await startTimeOf(s.owner.pid)
  return st != null && st === s.owner.startTime
}

async function listNetns (): Promise<string[]> {
  return await fs.readdir('/run/netns').catch(() => [] as string[])
}

async function listLinks (): Promise<string[]> {
  return await fs.readdir('/sys/class/net').catch(() => [] as string[])
}

async function netnsInode (netns: string): Promise<number | null> {
  // /run/netns/NAME is a bind mount of the nsfs inode; stat gives that inode.
  const st = await fs.stat(`/run/netns/${netns}`).catch(() => null)
  return st == null ? null : st.ino
}

interface Proc {
  pid: number
  ppid: number
  netIno: number | null
  state: string
}

/** One pass over /proc. Zombies have no namespaces (readlink fails): they count as gone. */
async function scanProcs (): Promise<Proc[]> {
  const out: Proc[] = []
  await Promise.all((await fs.readdir('/proc')).filter((d) => /^\d+$/.test(d)).map(async (d) => {
    const pid = Number(d)
    const link = await fs.readlink(`/proc/${d}/ns/net`).catch(() => null)
    const stat = await fs.readFile(`/proc/${d}/stat`, 'utf8').catch(() => null)
    if (stat == null) return
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const m = link == null ? null : /^net:\[(\d+)\]$/.exec(link)
    out.push({ pid, ppid: Number(fields[1]), state: fields[0] ?? '?', netIno: m == null ? null : Number(m[1]) })
  }))
  return out
}

/** The live pids in the namespace plus all their live descendants. */
async function victims (netns: string): Promise<Proc[]> {
  const ino = await netnsInode(netns)
  if (ino == null) return []
  const procs = (await scanProcs()).filter((p) => p.state !== 'Z' && p.state !== 'X')
  const chosen = new Set(procs.filter((p) => p.netIno === ino).map((p) => p.pid))
  // Descendants: e.g. a runc container with a network namespace of its own, started by
  // a node on this host. (A daemonized one reparented to pid 1 is not found this way.)
  for (let grew = true; grew;) {
    grew = false
    for (const p of procs) {
      if (!chosen.has(p.pid) && chosen.has(p.ppid)) {
        chosen.add(p.pid)
        grew = true
      }
    }
  }
  chosen.delete(process.pid)
  chosen.delete(1)
  return procs.filter((p) => chosen.has(p.pid))
}

function signal (pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch {}
}

/** SIGKILL everything in the namespace until nothing is left (a fork race needs rounds). */
async function killNetnsPids (netns: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let thawed = false
  for (let round = 0;; round++) {
    const left = await victims(netns)
    if (left.length === 0) return
    for (const p of left) signal(p.pid, 'SIGKILL')
    // A task in a frozen cgroup v1 freezer (a paused container, or one CRIU is dumping)
    // does not die of SIGKILL until thawed. cgroup v2 lets fatal signals through.
    if (!thawed && round >= 3) {
      thawed = true
      await thawFreezers(left.map((p) => p.pid))
    }
    if (Date.now() > deadline) {
      throw new Error(`processes in netns ${netns} survived SIGKILL for ${timeoutMs} ms: ${left.map((p) => `${p.pid}(${p.state})`).join(' ')}`)
    }
    await sleep(Math.min(20 * (round + 1), 200))
  }
}

async function thawFreezers (pids: number[]): Promise<void> {
  const cgroups = new Set<string>()
  for (const pid of pids) {
    const text = await fs.readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '')
    for (const line of text.split('\n')) {
      const [, controllers, cg] = line.split(':')
      if (controllers?.split(',').includes('freezer') && cg != null) cgroups.add(cg)
    }
  }
  for (const cg of cgroups) {
    await fs.writeFile(path.join('/sys/fs/cgroup/freezer', cg, 'freezer.state'), 'THAWED').catch(() => {})
  }
}

function ebRules (h: TestHost): string[][] {
  const drop = ['-p', '!', 'ARP', '-j', 'DROP']
  return [
    ['FORWARD', '-i', h.vethHost, ...drop], // from the host to the other hosts
    ['FORWARD', '-o', h.vethHost, ...drop], // from the other hosts to it
    ['INPUT', '-i', h.vethHost, ...drop], //   from the host to the root namespace
    ['OUTPUT', '-o', h.vethHost, ...drop] //   from the root namespace to it
  ]
}

let ebtablesPath: string | undefined
/** Debian's iptables package ships ebtables-nft; `ebtables` is its alternatives link. */
async function ebtablesBin (): Promise<string> {
  if (ebtablesPath != null) return ebtablesPath
  for (const c of ['ebtables', 'ebtables-nft']) {
    const r = await execa(c, ['--version'], { reject: false, timeout: CMD_TIMEOUT_MS })
    if (r.exitCode === 0) return (ebtablesPath = c)
  }
  throw new Error('ebtables not found (Debian: apt-get install iptables)')
}

async function ebtablesListing (): Promise<string> {
  return String((await execa(await ebtablesBin(), ['-L'], { reject: false, timeout: CMD_TIMEOUT_MS })).stdout)
}

/** Deletes the host's cut rules; `listing` (ebtables -L) saves a listing per host. */
async function removeEbRules (h: TestHost, listing?: string): Promise<void> {
  const eb = await ebtablesBin()
  // A listing decides whether there is anything to delete (the usual case: no);
  // each `ebtables -D` costs ~25 ms.
  listing ??= await ebtablesListing()
  if (!new RegExp(`\\b${h.vethHost}\\b`).test(listing)) return
  for (const rule of ebRules(h)) {
    // -D removes one copy; loop in case the rule was added more than once.
    for (let i = 0; i < 10; i++) {
      const r = await run(eb, ['-D', ...rule], { ignore: /Bad rule|does a matching rule exist|No chain/i })
      if (!r.ok) break
    }
  }
}

async function removeIptablesRules (rule: string[]): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const r = await run('iptables', ['-D', 'FORWARD', ...rule], { ignore: /Bad rule|does a matching rule exist|No chain|doesn't exist/i })
    if (!r.ok) return
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
