/**
 * `msc doctor`: host checks for running, checkpointing and migrating containers.
 * Every check is independent and never throws: whatever goes wrong becomes a row
 * with status 'fail' (or 'warn') and a `fix`. See docs/doctor.md.
 */
import { execa } from 'execa'
import { access, constants, readFile } from 'node:fs/promises'
import { release } from 'node:os'
import path from 'node:path'
import { builtLogShim } from '../runtime/shim/binary.ts'

export type DoctorStatus = 'ok' | 'warn' | 'fail'
export type Strategy = 'pre-copy' | 'post-copy' | 'stop-copy'

export type DoctorCheck = { id: string; title: string; status: DoctorStatus; value: string; fix?: string }

export type DoctorFeatures = { preCopy: boolean; postCopy: boolean; tcpRepair: boolean }

export type DoctorReport = {
  ok: boolean
  checks: DoctorCheck[]
  features: DoctorFeatures
  /** Usable migration strategies, most preferred first. */
  strategies: Strategy[]
}

export type DoctorOptions = { runcPath: string; criuPath: string; signal?: AbortSignal }

/** 3.17 dies on the vDSO layout of recent kernels; 4.1 cannot dump TCP sockets on >= 6.16. */
export const MIN_CRIU_VERSION: readonly [number, number] = [4, 2]
/** Without CAP_SYS_RESOURCE, CRIU's lazy-pages page server cannot grow pipes past this. */
export const PIPE_MAX_SIZE_NEEDED = 16 * 1024 * 1024

const TIMEOUT_MS = 30_000
const CAP_SYS_RESOURCE = 24n
const SETUP_FIX = 'run `npm run setup`'
const CRIU_FIX = `${SETUP_FIX} (installs CRIU >= 4.2 at /opt/msc/bin/criu), or set MSC_CRIU=/path or --criu`

type RunResult = { exitCode: number | undefined; stdout: string; stderr: string; message: string }

async function run (file: string, args: string[], signal?: AbortSignal): Promise<RunResult> {
  const r = await execa(file, args, {
    reject: false,
    timeout: TIMEOUT_MS,
    stdin: 'ignore',
    ...(signal ? { cancelSignal: signal } : {})
  })
  // exitCode is undefined when the binary could not be started (ENOENT, EACCES) or was killed.
  return {
    exitCode: r.exitCode,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    message: r.failed ? (r.shortMessage ?? '') : ''
  }
}

/** Like `command -v`: a name without a slash is looked up on PATH. */
export async function resolveExecutable (file: string): Promise<string | undefined> {
  const candidates = file.includes('/')
    ? [path.resolve(file)]
    : (process.env.PATH ?? '').split(':').filter(Boolean).map(d => path.join(d, file))
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK)
      return c
    } catch {}
  }
  return undefined
}

export function parseCriuVersion (stdout: string): [number, number, number] | undefined {
  const m = /Version:\s*(\d+)\.(\d+)(?:\.(\d+))?/.exec(stdout)
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined
}

function versionAtLeast (v: readonly number[], min: readonly number[]): boolean {
  for (let i = 0; i < min.length; i++) {
    const a = v[i] ?? 0
    const b = min[i] ?? 0
    if (a !== b) return a > b
  }
  return true
}

/** CRIU logs harmless warnings (breakpoints, RLIMIT_NOFILE) to stderr, so prefer real errors. */
function firstErrorLine (r: RunResult): string {
  const lines = `${r.stderr}\n${r.stdout}`.split('\n').map(l => l.trim()).filter(Boolean)
  return lines.find(l => /^Error\b/.test(l)) ??
    lines.find(l => !/^Warn\b/.test(l)) ??
    (r.message || `exit code ${r.exitCode}`)
}

/** Row ids in display order, with their titles. */
export const CHECK_TITLES = {
  root: 'running as root',
  runc: 'runc binary',
  'log-shim': 'container log shim',
  criu: 'CRIU binary and version',
  'criu-check': 'criu check',
  'mem-dirty-track': 'memory dirty tracking (pre-copy)',
  uffd: 'userfaultfd (post-copy / lazy pages)',
  'tcp-repair': 'TCP connection repair',
  'pipe-max-size': 'fs.pipe-max-size (lazy pages)',
  cgroups: 'cgroup version',
  kernel: 'kernel release'
} as const
type CheckId = keyof typeof CHECK_TITLES

function check (id: CheckId, status: DoctorStatus, value: string, fix?: string): DoctorCheck {
  const title = CHECK_TITLES[id]
  return fix !== undefined && status !== 'ok' ? { id, title, status, value, fix } : { id, title, status, value }
}

/** Turns an unexpected exception into a failing row so that one bad check cannot sink the report. */
async function guarded (id: CheckId, fn: () => Promise<DoctorCheck>): Promise<DoctorCheck> {
  try {
    return await fn()
  } catch (err) {
    return check(id, 'fail', `check crashed: ${(err as Error)?.message ?? String(err)}`, 'report this as a bug in msc')
  }
}

function checkRoot (): DoctorCheck {
  const uid = process.getuid?.()
  return uid === 0
    ? check('root', 'ok', 'uid 0')
    : check('root', 'fail', `uid ${uid ?? 'unknown'}`, 'run as root (runc, CRIU and network namespaces need it)')
}

async function checkRunc (runcPath: string, signal?: AbortSignal): Promise<DoctorCheck> {
  const fix = `${SETUP_FIX} (installs Debian's runc), or set MSC_RUNC=/path or --runc`
  const resolved = await resolveExecutable(runcPath)
  if (!resolved) return check('runc', 'fail', `not found or not executable: ${runcPath}`, fix)
  const r = await run(resolved, ['--version'], signal)
  if (r.exitCode !== 0) return check('runc', 'fail', `${resolved}: ${firstErrorLine(r)}`, fix)
  const version = /runc version\s+(\S+)/.exec(r.stdout)?.[1] ?? r.stdout.split('\n')[0] ?? '?'
  return check('runc', 'ok', `${version} at ${resolved}`)
}

/** The compiled shim every container's output goes through (src/runtime/shim/log-shim.c). */
async function checkLogShim (signal?: AbortSignal): Promise<DoctorCheck> {
  const binary = await builtLogShim()
  if (binary == null) {
    // A node builds it before its first container when gcc is there; setup builds it beforehand.
    return await resolveExecutable('gcc') != null
      ? check('log-shim', 'warn', 'not built yet (a node compiles it before its first container starts)', SETUP_FIX)
      : check('log-shim', 'fail', 'not built, and no gcc here to build it: no container can start', `${SETUP_FIX} (builds it; needs gcc and libc6-dev)`)
  }
  // Without arguments it prints its usage and exits 2: proof that the binary runs here.
  const r = await run(binary, [], signal)
  if (r.exitCode !== 2 || !r.stderr.includes('usage:')) {
    return check('log-shim', 'fail', `${binary} does not run: ${r.message || r.stderr.trim() || `exit code ${r.exitCode}`}`, SETUP_FIX)
  }
  return check('log-shim', 'ok', binary)
}

type CriuInfo = { path: string | undefined; version: [number, number, number] | undefined }

async function criuInfo (criuPath: string, signal?: AbortSignal): Promise<{ info: CriuInfo; row: DoctorCheck }> {
  const resolved = await resolveExecutable(criuPath)
  if (!resolved) return { info: { path: undefined, version: undefined }, row: check('criu', 'fail', `not found or not executable: ${criuPath}`, CRIU_FIX) }
  const r = await run(resolved, ['--version'], signal)
  const version = r.exitCode === 0 ? parseCriuVersion(r.stdout) : undefined
  const info = { path: resolved, version }
  if (!version) return { info, row: check('criu', 'fail', `${resolved}: ${r.exitCode === 0 ? 'unknown version' : firstErrorLine(r)}`, CRIU_FIX) }
  const v = version.join('.')
  if (!versionAtLeast(version, MIN_CRIU_VERSION)) {
    return {
      info,
      row: check('criu', 'fail', `${v} at ${resolved} (need >= ${MIN_CRIU_VERSION.join('.')}: 3.17 cannot start on recent kernels, 4.1 cannot dump TCP sockets on Linux >= 6.16)`, CRIU_FIX)
    }
  }
  return { info, row: check('criu', 'ok', `${v} at ${resolved}`) }
}

/** `criu check --feature NAME`: exit 0 means supported (stdout "NAME is supported"). */
async function criuFeature (criu: string, feature: string, signal?: AbortSignal): Promise<RunResult> {
  return await run(criu, ['check', '--feature', feature], signal)
}

const NO_CRIU = 'unknown: CRIU did not run'
const FIX_CRIU_FIRST = 'fix the `criu` check first'

async function checkCriuCheck (info: CriuInfo, signal?: AbortSignal): Promise<DoctorCheck> {
  if (!info.path) return check('criu-check', 'fail', NO_CRIU, FIX_CRIU_FIRST)
  const r = await run(info.path, ['check'], signal)
  // Judge by exit code and stdout: stderr always carries harmless warnings here.
  if (r.exitCode === 0 && /^Looks good/m.test(r.stdout)) return check('criu-check', 'ok', 'Looks good')
  const fix = process.getuid?.() !== 0 ? 'run as root' : `run \`${info.path} check\` for details; ${CRIU_FIX}`
  return check('criu-check', 'fail', firstErrorLine(r), fix)
}

/**
 * Feature rows are only trusted after `criu check` passed: a CRIU that cannot start
 * (3.17 here) also fails every `--feature` probe, which would read as "unsupported".
 */
function unknownFeature (id: CheckId, info: CriuInfo, criuCheck: DoctorCheck): DoctorCheck | undefined {
  if (!info.path) return check(id, 'warn', NO_CRIU, FIX_CRIU_FIRST)
  if (criuCheck.status !== 'ok') return check(id, 'warn', 'unknown: `criu check` failed', 'fix the `criu-check` check first')
  return undefined
}

async function checkMemDirtyTrack (info: CriuInfo, criuCheck: DoctorCheck, signal?: AbortSignal): Promise<DoctorCheck> {
  const unknown = unknownFeature('mem-dirty-track', info, criuCheck)
  if (unknown) return unknown
  const r = await criuFeature(info.path!, 'mem_dirty_track', signal)
  return r.exitCode === 0
    ? check('mem-dirty-track', 'ok', 'yes')
    : check('mem-dirty-track', 'warn', 'no (pre-copy unavailable; post-copy and stop-copy work)', 'a kernel with CONFIG_MEM_SOFT_DIRTY')
}

async function checkUffd (info: CriuInfo, criuCheck: DoctorCheck, signal?: AbortSignal): Promise<DoctorCheck> {
  const unknown = unknownFeature('uffd', info, criuCheck)
  if (unknown) return unknown
  // Non-cooperative mode is what lazy restore needs (fork/mremap events in the restored tree).
  const r = await criuFeature(info.path!, 'uffd-noncoop', signal)
  return r.exitCode === 0
    ? check('uffd', 'ok', 'yes (non-cooperative)')
    : check('uffd', 'warn', 'no (post-copy unavailable; stop-copy works)', 'a kernel with CONFIG_USERFAULTFD (non-cooperative events need Linux >= 4.11)')
}

/*
 * TCP repair. CRIU has no `--feature` for TCP_REPAIR itself: its plain `criu check`
 * already turns TCP_REPAIR on for a socket and reads TCP_TIMESTAMP (a Category 1
 * check, so "Looks good" proves it), and `--feature tcp_half_closed` adds repair of
 * half-closed connections. We use exactly these two, plus one case CRIU's checks do
 * not cover: CRIU < 4.2 starts on Linux >= 6.16 yet cannot dump any TCP socket
 * (the kernel refuses SO_PASSCRED/SO_PASSSEC on inet sockets there).
 */
async function checkTcpRepair (info: CriuInfo, criuCheck: DoctorCheck, signal?: AbortSignal): Promise<DoctorCheck> {
  const id = 'tcp-repair'
  if (!info.path) return check(id, 'warn', NO_CRIU, FIX_CRIU_FIRST)
  const kernel = /^(\d+)\.(\d+)/.exec(release())
  const newKernel = kernel ? versionAtLeast([Number(kernel[1]), Number(kernel[2])], [6, 16]) : false
  if (info.version && !versionAtLeast(info.version, MIN_CRIU_VERSION) && newKernel) {
    return check(id, 'fail', `no: CRIU ${info.version.join('.')} cannot dump TCP sockets on Linux ${release()}`, CRIU_FIX)
  }
  const unknown = unknownFeature(id, info, criuCheck)
  if (unknown) return unknown
  const r = await criuFeature(info.path, 'tcp_half_closed', signal)
  return r.exitCode === 0
    ? check(id, 'ok', 'yes (TCP_REPAIR, half-closed sockets)')
    : check(id, 'warn', 'partly: established connections only, half-closed ones cannot be dumped', 'a newer kernel')
}

async function hasCapSysResource (): Promise<boolean> {
  const status = await readFile('/proc/self/status', 'utf8')
  const hex = /^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1]
  return hex !== undefined && ((BigInt(`0x${hex}`) >> CAP_SYS_RESOURCE) & 1n) === 1n
}

async function checkPipeMaxSize (): Promise<DoctorCheck> {
  const raw = (await readFile('/proc/sys/fs/pipe-max-size', 'utf8')).trim()
  const size = Number(raw)
  if (size >= PIPE_MAX_SIZE_NEEDED) return check('pipe-max-size', 'ok', raw)
  // With CAP_SYS_RESOURCE CRIU may exceed the limit, so the sysctl does not matter.
  if (await hasCapSysResource()) return check('pipe-max-size', 'ok', `${raw} (CAP_SYS_RESOURCE lets CRIU exceed it)`)
  return check('pipe-max-size', 'warn', `${raw} (< ${PIPE_MAX_SIZE_NEEDED}: the lazy-pages page server fails without CAP_SYS_RESOURCE)`, `sysctl -w fs.pipe-max-size=${PIPE_MAX_SIZE_NEEDED}`)
}

/** Pure: classifies the cgroup layout from the text of /proc/mounts. */
export function cgroupLayout (mounts: string): { kind: 'v1' | 'v2' | 'hybrid' | 'none'; v2At: string[] } {
  let v1 = false
  const v2At: string[] = []
  for (const line of mounts.split('\n')) {
    const [, mountPoint, fsType] = line.split(' ')
    if (fsType === 'cgroup') v1 = true
    else if (fsType === 'cgroup2' && mountPoint) v2At.push(mountPoint)
  }
  if (v1) return { kind: v2At.length > 0 ? 'hybrid' : 'v1', v2At }
  return { kind: v2At.length > 0 ? 'v2' : 'none', v2At }
}

async function checkCgroups (): Promise<DoctorCheck> {
  const { kind, v2At } = cgroupLayout(await readFile('/proc/mounts', 'utf8'))
  // `ip netns exec` remounts /sys and the hierarchies vanish; nsenter keeps them.
  const fix = 'mount the cgroup hierarchies at /sys/fs/cgroup; inside a test host use `nsenter --net=/run/netns/NAME`, not `ip netns exec`'
  if (kind === 'none') return check('cgroups', 'fail', 'no cgroup mounts found', fix)
  if (kind === 'v2' && !v2At.includes('/sys/fs/cgroup')) {
    return check('cgroups', 'fail', `v2, but at ${v2At.join(', ')} (runc expects /sys/fs/cgroup)`, fix)
  }
  if (kind === 'hybrid') return check('cgroups', 'ok', `hybrid (v1 + cgroup2 at ${v2At.join(', ')})`)
  return check('cgroups', 'ok', kind)
}

/** Pure: which strategies the rows allow, most preferred first. */
export function deriveStrategies (checks: DoctorCheck[]): { features: DoctorFeatures; strategies: Strategy[] } {
  const ok = (id: string): boolean => checks.find(c => c.id === id)?.status === 'ok'
  const stopCopy = ok('criu-check')
  const features: DoctorFeatures = {
    preCopy: stopCopy && ok('mem-dirty-track'),
    // pipe-max-size is only a warning: a sysctl away, not a host limitation.
    postCopy: stopCopy && ok('uffd'),
    tcpRepair: stopCopy && checks.find(c => c.id === 'tcp-repair')?.status !== 'fail'
  }
  const strategies: Strategy[] = []
  if (features.preCopy) strategies.push('pre-copy')
  if (features.postCopy) strategies.push('post-copy')
  if (stopCopy) strategies.push('stop-copy')
  return { features, strategies }
}

/** Resolves to a report; rejects only with `signal.reason` when `signal` aborts. */
export async function runDoctor (opts: DoctorOptions): Promise<DoctorReport> {
  const { runcPath, criuPath, signal } = opts
  signal?.throwIfAborted()
  const criu = await criuInfo(criuPath, signal).catch((err: unknown) => ({
    info: { path: undefined, version: undefined } satisfies CriuInfo,
    row: check('criu', 'fail', `check crashed: ${(err as Error)?.message ?? String(err)}`, CRIU_FIX)
  }))
  const criuCheckP = guarded('criu-check', async () => await checkCriuCheck(criu.info, signal))
  const checks = await Promise.all([
    guarded('root', async () => checkRoot()),
    guarded('runc', async () => await checkRunc(runcPath, signal)),
    guarded('log-shim', async () => await checkLogShim(signal)),
    Promise.resolve(criu.row),
    criuCheckP,
    guarded('mem-dirty-track', async () => await checkMemDirtyTrack(criu.info, await criuCheckP, signal)),
    guarded('uffd', async () => await checkUffd(criu.info, await criuCheckP, signal)),
    guarded('tcp-repair', async () => await checkTcpRepair(criu.info, await criuCheckP, signal)),
    guarded('pipe-max-size', checkPipeMaxSize),
    guarded('cgroups', checkCgroups),
    guarded('kernel', async () => check('kernel', 'ok', release()))
  ])
  signal?.throwIfAborted()
  return { ok: checks.every(c => c.status !== 'fail'), checks, ...deriveStrategies(checks) }
}
