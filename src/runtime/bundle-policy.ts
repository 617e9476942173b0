import path from 'node:path'
import { REQUEST_SOCKET_IN_CONTAINER, type OciConfig } from './bundle.ts'

/**
 * What a node accepts in a config.json it did not write itself (a migration's, later a
 * failover's). runc runs it as root: hooks run on the host, a bind mount of `/` or a
 * capability such as CAP_SYS_ADMIN hands the host to whoever sent the bundle. A bundle
 * the operator runs locally (`msc run`) is trusted and never checked.
 */
export interface BundlePolicy {
  /** --allow-privileged-bundles: accept whatever a received config asks for. */
  allowPrivileged: boolean
  /**
   * Host paths (each with everything below it) a bind mount may take its source from.
   * Default none: only the request socket, whose source the node rewrites to its own.
   */
  bindSources?: readonly string[]
}

export type PolicyVerdict = { ok: true } | { ok: false; violations: string[] }

const HOOKS = ['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop']

/** Docker's default capability set: nothing that administers the host. */
export const DEFAULT_CAPABILITIES: ReadonlySet<string> = new Set([
  'CHOWN',
  'DAC_OVERRIDE',
  'FSETID',
  'FOWNER',
  'MKNOD',
  'NET_RAW',
  'SETGID',
  'SETUID',
  'SETFCAP',
  'SETPCAP',
  'NET_BIND_SERVICE',
  'SYS_CHROOT',
  'KILL',
  'AUDIT_WRITE'
].map((c) => `CAP_${c}`))

const CAP_SETS = ['bounding', 'effective', 'inheritable', 'permitted', 'ambient']

/** The example bundles (src/bundles) make these; network stays the host's, like theirs. */
const REQUIRED_NAMESPACES = ['pid', 'ipc', 'uts', 'mount']

/** Kernel filesystems the container gets its own instance of: nothing of the host's files. */
const SAFE_MOUNT_TYPES = new Set(['proc', 'tmpfs', 'sysfs', 'devpts', 'mqueue', 'cgroup', 'cgroup2'])

/**
 * What `runc spec` masks (an empty file or a read-only tmpfs over it): kernel memory,
 * keyrings, timers, firmware. A config that drops one shows it to root in the container.
 */
export const REQUIRED_MASKED_PATHS: readonly string[] = [
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware'
]

/**
 * What must at least be read-only (masked is fine too: `runc spec` masks /proc/asound,
 * Docker makes it read-only). Root in the container writing /proc/sys (say
 * kernel/core_pattern, which the host kernel runs as root) or /proc/sysrq-trigger
 * takes or stops the host: proc has no namespace for them.
 */
export const REQUIRED_READONLY_PATHS: readonly string[] = [
  '/proc/asound',
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger'
]

/**
 * Where proc and sysfs may be mounted: masking and read-only paths name these places,
 * so another instance mounted elsewhere (/proc2/sys) would be neither.
 */
const KERNEL_FS_HOME: Readonly<Record<string, string>> = { proc: '/proc', sysfs: '/sys' }

/**
 * Device rules runc grants every container anyway (libcontainer's defaults, tun/tap left
 * out): an allow rule within one of them widens nothing, so configs written by other
 * tools that spell them out still pass. Major/minor -1 is the wildcard.
 */
const RUNC_DEFAULT_DEVICES: ReadonlyArray<{ type: 'c' | 'b'; major: number; minor: number; access: string }> = [
  { type: 'c', major: -1, minor: -1, access: 'm' },
  { type: 'b', major: -1, minor: -1, access: 'm' },
  { type: 'c', major: 1, minor: 3, access: 'rwm' },
  { type: 'c', major: 1, minor: 5, access: 'rwm' },
  { type: 'c', major: 1, minor: 7, access: 'rwm' },
  { type: 'c', major: 1, minor: 8, access: 'rwm' },
  { type: 'c', major: 1, minor: 9, access: 'rwm' },
  { type: 'c', major: 5, minor: 0, access: 'rwm' },
  { type: 'c', major: 5, minor: 1, access: 'rwm' },
  { type: 'c', major: 5, minor: 2, access: 'rwm' },
  { type: 'c', major: 136, minor: -1, access: 'rwm' }
]

/** Checks a received config against the policy; every violation is listed, with where and why. */
export function checkBundlePolicy (config: OciConfig, policy: BundlePolicy): PolicyVerdict {
  if (policy.allowPrivileged) return { ok: true }
  const v: string[] = []
  checkHooks(config.hooks, v)
  checkMounts(config.mounts, policy.bindSources ?? [], v)
  checkCapabilities(config.process?.capabilities, v)
  checkLinux(config.linux, v)
  return v.length === 0 ? { ok: true } : { ok: false, violations: v }
}

function checkHooks (hooks: unknown, v: string[]): void {
  if (hooks == null) return
  if (!isObject(hooks)) {
    v.push('hooks: hooks are not allowed in a received bundle')
    return
  }
  for (const [kind, list] of Object.entries(hooks)) {
    // An empty list runs nothing; anything else (an unknown kind too) is refused.
    if (Array.isArray(list) && list.length === 0) continue
    const known = HOOKS.includes(kind) ? '' : ' (unknown hook kind)'
    v.push(`hooks.${kind}: hooks are not allowed in a received bundle${known}`)
  }
}

function checkMounts (mounts: unknown, bindSources: readonly string[], v: string[]): void {
  if (mounts == null) return
  if (!Array.isArray(mounts)) {
    v.push('mounts: not a list')
    return
  }
  mounts.forEach((m: unknown, i) => {
    if (!isObject(m) || typeof m.destination !== 'string') {
      v.push(`mounts[${i}]: not a mount with a destination`)
      return
    }
    const where = `mounts[${i}] (${m.destination})`
    const options = Array.isArray(m.options) ? m.options : []
    const type = typeof m.type === 'string' ? m.type : ''
    if (type === 'bind' || options.includes('bind') || options.includes('rbind')) {
      // Exact match, as runtimeConfig's rewrite of the source is.
      if (m.destination === REQUEST_SOCKET_IN_CONTAINER) return
      const source = typeof m.source === 'string' ? m.source : ''
      if (!bindAllowed(source, bindSources)) v.push(`${where}: bind mount of host path ${JSON.stringify(source)} is not allowed in a received bundle`)
      return
    }
    if (!SAFE_MOUNT_TYPES.has(type)) {
      v.push(`${where}: mount type ${JSON.stringify(type)} is not allowed in a received bundle (only ${[...SAFE_MOUNT_TYPES].join(', ')})`)
      return
    }
    const home = KERNEL_FS_HOME[type]
    if (home != null && absolute(m.destination) !== home) {
      v.push(`${where}: a ${type} mount is allowed only at ${home} in a received bundle (elsewhere linux.maskedPaths and linux.readonlyPaths do not cover it)`)
    }
    // The host's sysfs, writable: kernel and device tunables of the host.
    if (type === 'sysfs' && !readOnly(options)) v.push(`${where}: a sysfs mount must be read-only (option "ro") in a received bundle`)
  })
}

/** runc applies ro/rw in order, the last one wins; rro (recursive) is read-only too. */
function readOnly (options: unknown[]): boolean {
  const last = options.filter((o) => o === 'ro' || o === 'rw' || o === 'rro' || o === 'rrw').at(-1)
  return last === 'ro' || last === 'rro'
}

/** A mount destination as runc reads it: relative ones are taken from the root. */
function absolute (p: string): string {
  return path.posix.join('/', p).replace(/(.)\/+$/, '$1')
}

/** Relative sources resolve against runc's working directory: never allowed. */
function bindAllowed (source: string, allowed: readonly string[]): boolean {
  if (!source.startsWith('/')) return false
  const s = path.posix.normalize(source)
  return allowed.some((a) => {
    const root = path.posix.normalize(a).replace(/\/+$/, '')
    return s === root || s.startsWith(root + '/')
  })
}

function checkCapabilities (caps: unknown, v: string[]): void {
  if (caps == null) return
  if (!isObject(caps)) {
    v.push('process.capabilities: not an object')
    return
  }
  for (const [set, list] of Object.entries(caps)) {
    if (!CAP_SETS.includes(set)) {
      v.push(`process.capabilities.${set}: unknown capability set`)
      continue
    }
    if (list == null) continue
    if (!Array.isArray(list)) {
      v.push(`process.capabilities.${set}: not a list`)
      continue
    }
    const extra = list.filter((c) => typeof c !== 'string' || !DEFAULT_CAPABILITIES.has(c.toUpperCase()))
    if (extra.length > 0) v.push(`process.capabilities.${set}: ${extra.map(String).join(', ')} beyond Docker's default set are not allowed in a received bundle`)
  }
}

function checkLinux (linux: unknown, v: string[]): void {
  if (linux != null && !isObject(linux)) {
    v.push('linux: not an object')
    return
  }
  const l: Record<string, unknown> = isObject(linux) ? linux : {}
  const ns = l.namespaces
  if (ns != null && !Array.isArray(ns)) {
    v.push('linux.namespaces: not a list')
  } else {
    const list = (ns ?? []) as unknown[]
    const types = list.map((n) => isObject(n) && typeof n.type === 'string' ? n.type : '')
    const missing = REQUIRED_NAMESPACES.filter((t) => !types.includes(t))
    if (missing.length > 0) v.push(`linux.namespaces: ${missing.join(', ')} missing: a received bundle may not share these with the host`)
    list.forEach((n, i) => {
      if (isObject(n) && n.path != null && n.path !== '') v.push(`linux.namespaces[${i}] (${types[i]}): joining an existing namespace (path ${JSON.stringify(n.path)}) is not allowed in a received bundle`)
    })
  }
  checkProtectedPaths(l, v)
  if (isObject(l.seccomp)) {
    const listener = l.seccomp.listenerPath
    if (listener != null && listener !== '') {
      v.push(`linux.seccomp.listenerPath: seccomp notification to a host socket (${JSON.stringify(listener)}) is not allowed in a received bundle`)
    }
  } else if (l.seccomp != null) {
    v.push('linux.seccomp: not an object')
  }
  if (Array.isArray(l.devices) ? l.devices.length > 0 : l.devices != null) v.push('linux.devices: devices are not allowed in a received bundle')
  const rules = isObject(l.resources) ? l.resources.devices : undefined
  if (Array.isArray(rules)) {
    rules.forEach((r: unknown, i) => {
      if (isObject(r) && r.allow === true && !withinRuncDefaults(r)) {
        v.push(`linux.resources.devices[${i}]: allowing ${describeRule(r)} is not allowed in a received bundle (only what runc allows anyway)`)
      }
    })
  } else if (rules != null) {
    v.push('linux.resources.devices: not a list')
  }
}

/** Every path runc's default spec masks stays masked, every one it makes read-only stays read-only (or masked). */
function checkProtectedPaths (l: Record<string, unknown>, v: string[]): void {
  const list = (field: 'maskedPaths' | 'readonlyPaths'): string[] => {
    const x = l[field]
    if (x == null) return []
    if (!Array.isArray(x)) {
      v.push(`linux.${field}: not a list`)
      return []
    }
    return x.filter((p): p is string => typeof p === 'string').map(absolute)
  }
  const masked = list('maskedPaths')
  const readonly = list('readonlyPaths')
  // A path is covered by itself or by a directory above it.
  const covered = (p: string, by: string[]): boolean => by.some((b) => p === b || p.startsWith(b === '/' ? '/' : b + '/'))
  const notMasked = REQUIRED_MASKED_PATHS.filter((p) => !covered(p, masked))
  if (notMasked.length > 0) v.push(`linux.maskedPaths: ${notMasked.join(', ')} missing: a received bundle must mask what runc's default spec masks`)
  const writable = REQUIRED_READONLY_PATHS.filter((p) => !covered(p, readonly) && !covered(p, masked))
  if (writable.length > 0) v.push(`linux.readonlyPaths: ${writable.join(', ')} missing: a received bundle must keep these read-only (or masked), as runc's default spec does`)
}

function withinRuncDefaults (r: Record<string, unknown>): boolean {
  const type = r.type ?? 'a'
  const major = r.major ?? -1
  const minor = r.minor ?? -1
  const access = accessOf(r)
  return RUNC_DEFAULT_DEVICES.some((d) =>
    d.type === type &&
    (d.major === -1 || d.major === major) && (d.minor === -1 || d.minor === minor) &&
    [...access].every((a) => d.access.includes(a))
  )
}

function describeRule (r: Record<string, unknown>): string {
  const n = (x: unknown): string => x == null || x === -1 ? '*' : String(x)
  return `${String(r.type ?? 'a')} ${n(r.major)}:${n(r.minor)} ${accessOf(r)}`
}

/** Absent or empty: all of it, as for the kernel's device cgroup. */
function accessOf (r: Record<string, unknown>): string {
  return typeof r.access === 'string' && r.access !== '' ? r.access : 'rwm'
}

function isObject (x: unknown): x is Record<string, unknown> {
  return x != null && typeof x === 'object' && !Array.isArray(x)
}
