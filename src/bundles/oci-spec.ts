/**
 * The slice of the OCI runtime spec (config.json) that msc writes and reads.
 * Field names follow https://github.com/opencontainers/runtime-spec (v1.0.2, what
 * runc 1.1 speaks); anything msc does not touch is left out of the types.
 */

export type OciMount = {
  destination: string
  type: string
  source: string
  options?: string[]
}

export type OciNamespace = { type: 'pid' | 'network' | 'ipc' | 'uts' | 'mount' | 'user' | 'cgroup'; path?: string }

export type OciRlimit = { type: string; hard: number; soft: number }

export type OciCapabilities = {
  bounding: string[]
  effective: string[]
  permitted: string[]
  ambient: string[]
}

export type OciProcess = {
  terminal: boolean
  user: { uid: number; gid: number }
  args: string[]
  env: string[]
  cwd: string
  capabilities: OciCapabilities
  rlimits: OciRlimit[]
  noNewPrivileges: boolean
}

export type OciSpec = {
  ociVersion: string
  process: OciProcess
  root: { path: string; readonly: boolean }
  hostname: string
  mounts: OciMount[]
  linux: {
    /** Set per node by msc (each node its own prefix); never by the bundle writers. */
    cgroupsPath?: string
    resources?: { devices?: Array<{ allow: boolean; access: string; type?: string; major?: number; minor?: number }> }
    namespaces: OciNamespace[]
    maskedPaths: string[]
    readonlyPaths: string[]
  }
}

export type DefaultSpecOptions = {
  args: string[]
  env?: string[]
  cwd?: string
  hostname?: string
  /** Extra mounts, appended after the standard ones. */
  mounts?: OciMount[]
}

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

// runc spec's defaults: a container gets almost no privileges.
const CAPS = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE']

/**
 * The mounts of `runc spec` minus its read-only /sys/fs/cgroup: that one would give
 * CRIU a cgroup mount (one per v1 hierarchy on this host) to dump and restore for no
 * benefit to the example workloads.
 */
export function standardMounts (): OciMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] }
  ]
}

/**
 * A config.json like `runc spec` makes, adapted for checkpointing:
 * - `terminal: false`: CRIU cannot dump a container that owns a tty here; stdout and
 *   stderr must be pipes so runc can re-attach them at restore;
 * - no network namespace: the process shares the network of whoever runs runc (the
 *   host, or a test host's netns), so a restored redis listens where the node lives;
 * - a writable rootfs: redis writes to /data and the counter may use /tmp.
 */
export function defaultSpec (opts: DefaultSpecOptions): OciSpec {
  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [...opts.args],
      env: opts.env ?? [DEFAULT_PATH],
      cwd: opts.cwd ?? '/',
      capabilities: { bounding: [...CAPS], effective: [...CAPS], permitted: [...CAPS], ambient: [...CAPS] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true
    },
    root: { path: 'rootfs', readonly: false },
    hostname: opts.hostname ?? 'msc',
    mounts: [...standardMounts(), ...(opts.mounts ?? [])],
    linux: {
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      // runc spec's own lists: a node refuses a received bundle that drops any of them
      // (src/runtime/bundle-policy.ts), and so would refuse these bundles after a migration.
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi'
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']
    }
  }
}
