import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { MscError } from '../util/errors.ts'
import { parseListenAddress } from '../metrics/listen-address.ts'
import { LAN_DRIVERS, type LanDriver } from '../network/lan-address.ts'

/**
 * Every option of `msc node start`, in one table: its flag, its environment
 * variables (the original msc's names kept where they apply), its default and how it
 * is parsed. docs/configuration.md documents this table and a unit test keeps the two
 * in step. Precedence: flag, then environment, then default.
 */
export interface OptionSpec<T> {
  key: string
  flag: string
  /** value (default): `--flag V`; flag: boolean switch; negated: `--no-x` turns a default-on off; list: repeatable, env comma-separated. */
  kind?: 'value' | 'flag' | 'negated' | 'list'
  env: string[]
  description: string
  defaultText: string
  default: (partial: Record<string, unknown>) => T
  parse: (raw: string, source: string) => T
}

function oneOf<T extends string> (values: readonly T[]) {
  return (raw: string, source: string): T => {
    if ((values as readonly string[]).includes(raw)) return raw as T
    throw new MscError('INVALID_ARGUMENT', `${source}: expected one of ${values.join(', ')}, got "${raw}"`)
  }
}

function positiveInt (min: number, max: number) {
  return (raw: string, source: string): number => {
    const n = Number(raw)
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new MscError('INVALID_ARGUMENT', `${source}: expected a whole number from ${min} to ${max}, got "${raw}"`)
    }
    return n
  }
}

function absPath (raw: string, source: string): string {
  if (raw.trim() === '') throw new MscError('INVALID_ARGUMENT', `${source}: empty path`)
  return path.resolve(raw)
}

/** Seconds as the original msc took them (decimals allowed), returned in ms. */
function seconds (min: number, max: number) {
  return (raw: string, source: string): number => {
    const n = Number(raw)
    if (raw.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new MscError('INVALID_ARGUMENT', `${source}: expected seconds from ${min} to ${max}, got "${raw}"`)
    }
    return Math.round(n * 1000)
  }
}

function multiaddrList (raw: string, source: string): string[] {
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean)
  for (const a of list) {
    if (!/^\/(ip4|ip6|dns|dns4|dns6)\/[^/]+\/tcp\/\d+(\/p2p\/[1-9A-HJ-NP-Za-km-z]+)?$/.test(a)) {
      throw new MscError('INVALID_ARGUMENT', `${source}: not a TCP multiaddr: "${a}" (example: /ip4/10.0.0.2/tcp/4710)`)
    }
  }
  return list
}

function bool (raw: string, source: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true
  if (/^(0|false|no|off)$/i.test(raw)) return false
  throw new MscError('INVALID_ARGUMENT', `${source}: expected true or false, got "${raw}"`)
}

/** A replica count: 0..8, or a boolean (true = 1) as ENABLE_CONTINUOUS_DUMPING was. */
function replicaCount (raw: string, source: string): number {
  if (/^(true|yes|on)$/i.test(raw.trim())) return 1
  if (/^(false|no|off)$/i.test(raw.trim())) return 0
  return positiveInt(0, 8)(raw, source)
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

/** The private CRIU that `npm run setup` installs when the system's does not work. */
export const PRIVATE_CRIU = `${process.env.MSC_TOOLS_DIR || '/opt/msc'}/bin/criu`

export const NODE_OPTIONS = {
  dataDir: {
    key: 'dataDir',
    flag: '--data-dir',
    env: ['MSC_DATA_DIR', 'DUMP_PATH'],
    description: "Directory holding this node's state: containers, checkpoints, logs, the API socket.",
    defaultText: '/var/lib/msc',
    default: () => '/var/lib/msc',
    parse: absPath
  } satisfies OptionSpec<string>,
  apiSocket: {
    key: 'apiSocket',
    flag: '--api-socket',
    env: ['MSC_API_SOCKET', 'RPC_ADDR'],
    description: 'Unix socket of the local control API (mode 0600).',
    defaultText: 'DATA_DIR/msc.sock',
    default: (p) => path.join(p.dataDir as string, 'msc.sock'),
    parse: absPath
  } satisfies OptionSpec<string>,
  logLevel: {
    key: 'logLevel',
    flag: '--log-level',
    env: ['LOG_LEVEL', 'MSC_LOG_LEVEL'],
    description: `Log level: ${LOG_LEVELS.join(', ')}.`,
    defaultText: 'info',
    default: () => 'info' as LogLevel,
    parse: oneOf(LOG_LEVELS)
  } satisfies OptionSpec<LogLevel>,
  logFormat: {
    key: 'logFormat',
    flag: '--log-format',
    env: ['MSC_LOG_FORMAT'],
    description: 'Log format: pretty (human-readable) or json (one object a line).',
    defaultText: 'pretty on a TTY, json otherwise',
    default: () => (process.stderr.isTTY === true ? 'pretty' : 'json') as 'pretty' | 'json',
    parse: oneOf(['pretty', 'json'] as const)
  } satisfies OptionSpec<'pretty' | 'json'>,
  runcPath: {
    key: 'runcPath',
    flag: '--runc',
    env: ['MSC_RUNC'],
    description: 'runc binary.',
    defaultText: 'runc (from PATH)',
    default: () => 'runc',
    parse: (raw: string) => raw
  } satisfies OptionSpec<string>,
  criuPath: {
    key: 'criuPath',
    flag: '--criu',
    env: ['MSC_CRIU'],
    description: 'CRIU binary given to runc (needs CRIU >= 4.2 on kernels >= 6.16).',
    defaultText: `${PRIVATE_CRIU} if present (installed by npm run setup), else criu from PATH`,
    default: () => (fs.existsSync(PRIVATE_CRIU) ? PRIVATE_CRIU : 'criu'),
    parse: (raw: string) => raw
  } satisfies OptionSpec<string>,
  cgroupParent: {
    key: 'cgroupParent',
    flag: '--cgroup-parent',
    env: ['MSC_CGROUP_PARENT'],
    description: "Parent cgroup of this node's containers (each node needs its own when several share a kernel).",
    defaultText: 'msc-NODEID (NODEID is made once and kept in the data dir)',
    default: () => '',
    parse: (raw: string, source: string) => {
      if (!/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(raw) || raw.split('/').some((s) => s === '.' || s === '..')) throw new MscError('INVALID_ARGUMENT', `${source}: not a cgroup path: "${raw}"`)
      return raw
    }
  } satisfies OptionSpec<string>,
  containerLogMaxBytes: {
    key: 'containerLogMaxBytes',
    flag: '--container-log-max',
    env: ['MSC_CONTAINER_LOG_MAX'],
    description: 'Bytes of container output kept per log file; the log rotates once to LOG.1, so at most twice this on disk.',
    defaultText: '8388608 (8 MiB)',
    default: () => 8 * 1024 * 1024,
    parse: positiveInt(1024, 2 ** 40)
  } satisfies OptionSpec<number>,
  stopTimeoutMs: {
    key: 'stopTimeoutMs',
    flag: '--stop-timeout',
    env: ['MSC_STOP_TIMEOUT'],
    description: 'Milliseconds between SIGTERM and SIGKILL when stopping a container.',
    defaultText: '5000',
    default: () => 5000,
    parse: positiveInt(0, 3_600_000)
  } satisfies OptionSpec<number>,
  tcpEstablished: {
    key: 'tcpEstablished',
    flag: '--tcp-established',
    kind: 'flag',
    env: ['CRIU_TCP_ESTABLISHED', 'MSC_TCP_ESTABLISHED'],
    description:
      'Restore established TCP connections established (CRIU --tcp-established on every checkpoint and restore; needs the same local address). Default: connections are dumped stateless and restored closed, and clients reconnect.',
    defaultText: 'false',
    default: () => false,
    parse: bool
  } satisfies OptionSpec<boolean>,
  lanInterface: {
    key: 'lanInterface',
    flag: '--lan-interface',
    env: ['MSC_LAN_INTERFACE'],
    description: 'The interface whose subnet is the LAN that `--network lan` containers get their own address on (a macvlan or ipvlan link on it per container).',
    defaultText: 'the interface of the default route',
    default: () => '',
    parse: (raw: string, source: string) => {
      if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(raw)) throw new MscError('INVALID_ARGUMENT', `${source}: not an interface name: "${raw}"`)
      return raw
    }
  } satisfies OptionSpec<string>,
  lanDriver: {
    key: 'lanDriver',
    flag: '--lan-driver',
    env: ['MSC_LAN_DRIVER'],
    description: "The link a `--network lan` container gets: macvlan (its own MAC; the switch must accept several MACs per port) or ipvlan (the interface's MAC, for switches that allow one per port).",
    defaultText: 'macvlan',
    default: () => 'macvlan' as LanDriver,
    parse: oneOf(LAN_DRIVERS)
  } satisfies OptionSpec<LanDriver>,
  dataChannel: {
    key: 'dataChannel',
    flag: '--no-data-channel',
    kind: 'negated',
    env: ['MSC_DATA_CHANNEL'],
    description: "Send and receive a migration's trees over /msc/image (libp2p) only, not over the sealed data channel (MSC_DATA_CHANNEL=false does the same).",
    defaultText: 'data channel on',
    default: () => true,
    parse: bool
  } satisfies OptionSpec<boolean>,
  allowPrivilegedBundles: {
    key: 'allowPrivilegedBundles',
    flag: '--allow-privileged-bundles',
    kind: 'flag',
    env: ['MSC_ALLOW_PRIVILEGED_BUNDLES'],
    description: "Run containers migrated here whatever their config.json asks for (hooks, host bind mounts, capabilities beyond Docker's default set, host namespaces, devices). Without it, such a migration is refused.",
    defaultText: 'false',
    default: () => false,
    parse: bool
  } satisfies OptionSpec<boolean>,
  name: {
    key: 'name',
    flag: '--name',
    env: ['MSC_NODE_NAME', 'NODE_NAME'],
    description: 'Human name of this node, shown to peers (`msc peer ls`) and usable as a migration target.',
    defaultText: 'the hostname',
    default: () => os.hostname().slice(0, 64) || 'msc-node',
    parse: (raw: string, source: string) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(raw)) throw new MscError('INVALID_ARGUMENT', `${source}: use 1-64 letters, digits, '_', '.', '-': "${raw}"`)
      return raw
    }
  } satisfies OptionSpec<string>,
  listen: {
    key: 'listen',
    flag: '--listen',
    kind: 'list',
    env: ['MSC_LISTEN'],
    description: 'libp2p listen address (repeatable; env comma-separated).',
    defaultText: '/ip4/0.0.0.0/tcp/4710',
    default: () => ['/ip4/0.0.0.0/tcp/4710'],
    parse: multiaddrList
  } satisfies OptionSpec<string[]>,
  announce: {
    key: 'announce',
    flag: '--announce',
    kind: 'list',
    env: ['MSC_ANNOUNCE'],
    description: 'Address to tell peers instead of the listen addresses (repeatable; behind NAT or with 0.0.0.0).',
    defaultText: 'none (the listen addresses)',
    default: () => [] as string[],
    parse: multiaddrList
  } satisfies OptionSpec<string[]>,
  bootstrap: {
    key: 'bootstrap',
    flag: '--bootstrap',
    kind: 'list',
    env: ['MSC_BOOTSTRAP', 'BOOTSTRAP_PEERS'],
    description: 'A peer to join at start, as /ip4/ADDR/tcp/PORT/p2p/PEER_ID (repeatable; env comma-separated). For clusters across subnets, where mDNS does not reach.',
    defaultText: 'none',
    default: () => [] as string[],
    parse: (raw: string, source: string) => {
      const list = multiaddrList(raw, source)
      for (const a of list) if (!a.includes('/p2p/')) throw new MscError('INVALID_ARGUMENT', `${source}: a bootstrap address must end in /p2p/PEER_ID: "${a}"`)
      return list
    }
  } satisfies OptionSpec<string[]>,
  mdns: {
    key: 'mdns',
    flag: '--no-mdns',
    kind: 'negated',
    env: ['MSC_MDNS'],
    description: 'Turn off mDNS discovery on the LAN (MSC_MDNS=false does the same).',
    defaultText: 'mDNS on',
    default: () => true,
    parse: bool
  } satisfies OptionSpec<boolean>,
  mdnsIntervalMs: {
    key: 'mdnsIntervalMs',
    flag: '--mdns-interval',
    env: ['MSC_MDNS_INTERVAL'],
    description: 'Seconds between mDNS queries while this node is connected to no other (it queries at start, then only while alone).',
    defaultText: '5',
    default: () => 5000,
    parse: seconds(0.1, 3600)
  } satisfies OptionSpec<number>,
  pskFile: {
    key: 'pskFile',
    flag: '--psk',
    env: ['MSC_PSK_FILE'],
    description: 'Cluster key file (`msc keygen psk FILE`): the nodes holding the same key form one cluster, find each other by mDNS and admit each other without tokens; nodes without it cannot connect.',
    defaultText: 'none (open cluster)',
    default: () => '',
    parse: absPath
  } satisfies OptionSpec<string>,
  joinToken: {
    key: 'joinToken',
    flag: '--join',
    env: ['MSC_JOIN_TOKEN'],
    description: 'Join a cluster with a one-time token from `msc cluster token` on a member. Needed once: the node keeps its membership and restarts without it.',
    defaultText: 'none (with no --psk either, a node makes a new single-node cluster)',
    default: () => '',
    parse: (raw: string, source: string) => {
      if (!/^msc1\.[A-Za-z0-9_-]{20,8000}$/.test(raw.trim())) throw new MscError('INVALID_ARGUMENT', `${source}: not an msc join token (msc1.…, from \`msc cluster token\`)`)
      return raw.trim()
    }
  } satisfies OptionSpec<string>,
  pingIntervalMs: {
    key: 'pingIntervalMs',
    flag: '--ping-interval',
    env: ['PING_INTERVAL', 'MSC_PING_INTERVAL'],
    description: 'Seconds between SWIM probes: each interval the node probes one member (decimals allowed).',
    defaultText: '1',
    default: () => 1000,
    parse: seconds(0.05, 3600)
  } satisfies OptionSpec<number>,
  pingTimeoutMs: {
    key: 'pingTimeoutMs',
    flag: '--ping-timeout',
    env: ['PING_TIMEOUT', 'MSC_PING_TIMEOUT'],
    description: 'Seconds a suspicion lasts, with no other member confirming it, before the suspect is declared dead (x log10(N) past 10 members).',
    defaultText: '5',
    default: () => 5000,
    parse: seconds(0.1, 86400)
  } satisfies OptionSpec<number>,
  suspectTimeoutMs: {
    key: 'suspectTimeoutMs',
    flag: '--suspect-timeout',
    env: ['MSC_SUSPECT_TIMEOUT'],
    description: 'Seconds a suspicion lasts when other members confirm it (the shortest suspicion timeout).',
    defaultText: 'the smaller of 3 x PING_INTERVAL and PING_TIMEOUT / 2',
    default: (p) => Math.min(3 * (p.pingIntervalMs as number), (p.pingTimeoutMs as number) / 2),
    parse: seconds(0.05, 86400)
  } satisfies OptionSpec<number>,
  dumpIntervalMs: {
    key: 'dumpIntervalMs',
    flag: '--dump-interval',
    env: ['DUMP_INTERVAL', 'MSC_DUMP_INTERVAL'],
    description: 'Seconds between the checkpoints of a replicated container (decimals allowed). Stretched so that its freezes take at most 5% of the time: the effective interval is max(DUMP_INTERVAL, 20 x the last freeze).',
    defaultText: '5',
    default: () => 5000,
    parse: seconds(0.2, 86400)
  } satisfies OptionSpec<number>,
  defaultReplicas: {
    key: 'defaultReplicas',
    flag: '--default-replicas',
    env: ['ENABLE_CONTINUOUS_DUMPING', 'ENABLE_CONTINOUS_DUMPING', 'MSC_DEFAULT_REPLICAS'],
    description: 'Standbys a container gets when `msc run` does not say (--replicas): a number from 0 to 8, or true (1) / false (0) as the original ENABLE_CONTINUOUS_DUMPING took it (its misspelling ENABLE_CONTINOUS_DUMPING is read too).',
    defaultText: '1',
    default: () => 1,
    parse: replicaCount
  } satisfies OptionSpec<number>,
  leaseTimeoutMs: {
    key: 'leaseTimeoutMs',
    flag: '--lease-timeout',
    env: ['LEASE_TIMEOUT', 'MSC_LEASE_TIMEOUT'],
    description: 'Seconds an ownership lease of a replicated container lasts without renewal (renewed every quarter of it). An owner that cannot renew kills its container before its lease ends; a standby fails over only after it ended.',
    defaultText: 'PING_TIMEOUT',
    default: (p) => Math.max(2000, p.pingTimeoutMs as number),
    parse: seconds(2, 3600)
  } satisfies OptionSpec<number>,
  witness: {
    key: 'witness',
    flag: '--witness',
    kind: 'flag',
    env: ['MSC_WITNESS'],
    description: 'Run as a witness: a member that votes on ownership leases and runs no container (the third member that lets a two-node cluster fail over).',
    defaultText: 'false',
    default: () => false,
    parse: bool
  } satisfies OptionSpec<boolean>,
  metricsListen: {
    key: 'metricsListen',
    flag: '--metrics-listen',
    env: ['MSC_METRICS_LISTEN'],
    description: 'Serve Prometheus metrics at http://HOST:PORT/metrics (unauthenticated: give a loopback or management address).',
    defaultText: 'none (no metrics endpoint)',
    default: () => '',
    parse: (raw: string, source: string) => {
      if (parseListenAddress(raw) == null) throw new MscError('INVALID_ARGUMENT', `${source}: expected HOST:PORT (127.0.0.1:4711, [::1]:4711), got "${raw}"`)
      return raw.trim()
    }
  } satisfies OptionSpec<string>,
  stopContainersOnExit: {
    key: 'stopContainersOnExit',
    flag: '--stop-containers-on-exit',
    kind: 'flag',
    env: ['MSC_STOP_CONTAINERS_ON_EXIT'],
    description: "Stop this node's containers when the node stops. Off by default: containers outlive a node restart and are adopted again.",
    defaultText: 'false',
    default: () => false,
    parse: bool
  } satisfies OptionSpec<boolean>
}

export type NodeOptionKey = keyof typeof NODE_OPTIONS
export type NodeConfig = { [K in NodeOptionKey]: ReturnType<typeof NODE_OPTIONS[K]['default']> }

/**
 * Resolves the node configuration. `flags` holds raw strings from the command line,
 * keyed by option key (booleans as 'true'); undefined means not given.
 */
export function resolveNodeConfig (flags: Partial<Record<NodeOptionKey, string | boolean | undefined>>, env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const c = resolveSome(Object.keys(NODE_OPTIONS) as NodeOptionKey[], flags, env)
  if (c.suspectTimeoutMs >= c.pingTimeoutMs) {
    throw new MscError('INVALID_ARGUMENT', `--suspect-timeout (${c.suspectTimeoutMs / 1000} s) must be shorter than --ping-timeout (${c.pingTimeoutMs / 1000} s)`)
  }
  return c
}

/**
 * Resolves only some options (a client needs two, doctor two others), so that an
 * unrelated bad variable in the environment does not break the command.
 */
export function resolveSome<K extends NodeOptionKey> (keys: K[], flags: Partial<Record<NodeOptionKey, string | boolean | undefined>>, env: NodeJS.ProcessEnv = process.env): Pick<NodeConfig, K> {
  const out: Record<string, unknown> = {}
  // In table order: a default may depend on an earlier option (apiSocket on dataDir).
  for (const key of Object.keys(NODE_OPTIONS) as NodeOptionKey[]) {
    if (!(keys as NodeOptionKey[]).includes(key)) continue
    const spec = NODE_OPTIONS[key] as OptionSpec<unknown>
    const flag = flags[key]
    const envName = spec.env.find((e) => env[e] != null && env[e] !== '')
    if (flag !== undefined) out[key] = spec.parse(String(flag), spec.flag)
    else if (envName != null) out[key] = spec.parse(env[envName]!, `environment variable ${envName}`)
    else out[key] = spec.default(out)
  }
  return out as Pick<NodeConfig, K>
}

/** Where a client (the CLI) finds a node: its data dir and API socket. */
export function resolveClientTarget (flags: { dataDir?: string; apiSocket?: string }, env: NodeJS.ProcessEnv = process.env): { dataDir: string; apiSocket: string } {
  // dataDir comes before apiSocket in NODE_OPTIONS, so the socket's default follows it.
  return resolveSome(['dataDir', 'apiSocket'], { dataDir: flags.dataDir, apiSocket: flags.apiSocket }, env)
}
