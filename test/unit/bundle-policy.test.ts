/**
 * The policy a node applies to a config.json it receives (src/runtime/bundle-policy.ts):
 * the example bundles and `runc spec` pass; each way of taking the host is refused
 * with its reason; --allow-privileged-bundles accepts anything.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { execa } from 'execa'
import { checkBundlePolicy, type BundlePolicy } from '../../src/runtime/bundle-policy.ts'
import type { OciConfig } from '../../src/runtime/bundle.ts'
import { defaultSpec } from '../../src/bundles/oci-spec.ts'
import { BUNDLE_KINDS, writeExampleBundle } from '../../src/bundles/index.ts'

const strict: BundlePolicy = { allowPrivileged: false }

/** What src/bundles/counter.ts and redis.ts write (both are defaultSpec with their args). */
function counter (): OciConfig {
  return structuredClone(defaultSpec({ args: ['/bin/sh', '/count.sh'], hostname: 'counter' })) as unknown as OciConfig
}
function redis (): OciConfig {
  return structuredClone(defaultSpec({ args: ['/usr/bin/redis-server', '--port', '6379'], hostname: 'redis' })) as unknown as OciConfig
}

function violations (c: OciConfig, p: BundlePolicy = strict): string[] {
  const r = checkBundlePolicy(c, p)
  return r.ok ? [] : r.violations
}

function refused (c: OciConfig, re: RegExp): void {
  const v = violations(c)
  assert.ok(v.length > 0, `expected a refusal matching ${re}, got ok`)
  assert.ok(v.some((s) => re.test(s)), `expected a violation matching ${re}, got ${JSON.stringify(v)}`)
}

test('the example bundles pass, with or without the request socket mount', () => {
  assert.deepEqual(checkBundlePolicy(counter(), strict), { ok: true })
  assert.deepEqual(checkBundlePolicy(redis(), strict), { ok: true })
  // docs/container-requests.md: the bind msc rewrites to its own socket.
  const withSocket = counter()
  withSocket.mounts!.push({ destination: '/run/msc.sock', type: 'bind', source: '/run/msc.sock', options: ['bind'] })
  assert.deepEqual(checkBundlePolicy(withSocket, strict), { ok: true })
})

test('the config.json that `msc bundle counter|redis` writes passes', async (t) => {
  for (const kind of BUNDLE_KINDS) {
    await t.test(kind, async (t) => {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), `msc-policy-${kind}-`))
      try {
        try {
          await writeExampleBundle(kind, dir, { force: true })
        } catch (err) {
          t.skip(`cannot build it here: ${(err as Error).message}`)
          return
        }
        const c = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as OciConfig
        assert.deepEqual(checkBundlePolicy(c, strict), { ok: true })
      } finally {
        await fs.rm(dir, { recursive: true, force: true })
      }
    })
  }
})

test('a config made by `runc spec` passes', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-policy-'))
  try {
    const r = await execa('runc', ['spec', '--bundle', dir], { reject: false })
    if (r.exitCode !== 0) {
      t.skip('runc is not installed')
      return
    }
    const c = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as OciConfig
    assert.deepEqual(checkBundlePolicy(c, strict), { ok: true })
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
})

test('hooks of every kind are refused, each named', () => {
  for (const kind of ['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop']) {
    const c = counter()
    c.hooks = { [kind]: [{ path: '/bin/sh', args: ['sh', '-c', 'touch /tmp/x'] }] }
    refused(c, new RegExp(`^hooks\\.${kind}: hooks are not allowed in a received bundle$`))
  }
  const empty = counter()
  empty.hooks = { prestart: [] }
  assert.deepEqual(checkBundlePolicy(empty, strict), { ok: true }, 'an empty hook list runs nothing')
  const odd = counter()
  odd.hooks = 'prestart'
  refused(odd, /^hooks: hooks are not allowed/)
})

test('bind mounts of host paths are refused; the request socket and the allow-list pass', () => {
  const root = counter()
  root.mounts!.push({ destination: '/host', type: 'bind', source: '/', options: ['rbind', 'rw'] })
  refused(root, /^mounts\[6\] \(\/host\): bind mount of host path "\/" is not allowed/)
  // Spelled as options only, with a type runc ignores for binds.
  const opt = counter()
  opt.mounts!.push({ destination: '/etc/x', type: 'none', source: '/etc', options: ['bind'] })
  refused(opt, /bind mount of host path "\/etc"/)
  const rel = counter()
  rel.mounts!.push({ destination: '/x', type: 'bind', source: '../../..', options: ['bind'] })
  refused(rel, /bind mount of host path "\.\.\/\.\.\/\.\."/)
  // Only the exact destination is rewritten to the node's socket.
  const near = counter()
  near.mounts!.push({ destination: '/run//msc.sock', type: 'bind', source: '/', options: ['bind'] })
  refused(near, /bind mount of host path "\/"/)

  const shared = counter()
  shared.mounts!.push({ destination: '/data', type: 'bind', source: '/srv/shared/app', options: ['bind'] })
  const allow: BundlePolicy = { allowPrivileged: false, bindSources: ['/srv/shared/'] }
  assert.deepEqual(checkBundlePolicy(shared, allow), { ok: true })
  const escaping = counter()
  escaping.mounts!.push({ destination: '/data', type: 'bind', source: '/srv/shared/../../etc', options: ['bind'] })
  assert.equal(checkBundlePolicy(escaping, allow).ok, false, '.. is resolved before the allow-list is checked')
  const sibling = counter()
  sibling.mounts!.push({ destination: '/data', type: 'bind', source: '/srv/shared-other', options: ['bind'] })
  assert.equal(checkBundlePolicy(sibling, allow).ok, false, 'a sibling with the same prefix is not below the allowed path')
})

test('kernel filesystems pass; a mount of a host device is refused', () => {
  const c = counter()
  c.mounts!.push({ destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro'] })
  c.mounts!.push({ destination: '/scratch', type: 'tmpfs', source: 'tmpfs' })
  assert.deepEqual(checkBundlePolicy(c, strict), { ok: true })
  const disk = counter()
  disk.mounts!.push({ destination: '/disk', type: 'ext4', source: '/dev/vda', options: [] })
  refused(disk, /^mounts\[6\] \(\/disk\): mount type "ext4" is not allowed/)
})

test("capabilities beyond Docker's default set are refused, in every set", () => {
  for (const set of ['bounding', 'effective', 'inheritable', 'permitted', 'ambient']) {
    const c = counter()
    ;(c.process as Record<string, unknown>).capabilities = { [set]: ['CAP_CHOWN', 'CAP_SYS_ADMIN'] }
    refused(c, new RegExp(`^process\\.capabilities\\.${set}: CAP_SYS_ADMIN beyond Docker's default set`))
  }
  const docker = counter()
  const all = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE']
  ;(docker.process as Record<string, unknown>).capabilities = { bounding: all, effective: all, inheritable: all, permitted: all, ambient: all }
  assert.deepEqual(checkBundlePolicy(docker, strict), { ok: true })
  const lower = counter()
  ;(lower.process as Record<string, unknown>).capabilities = { bounding: ['cap_sys_module'] }
  refused(lower, /cap_sys_module beyond/)
})

test('namespaces: pid, ipc, uts and mount are required; joining a host namespace is refused', () => {
  for (const t of ['pid', 'ipc', 'uts', 'mount']) {
    const c = counter()
    c.linux!.namespaces = c.linux!.namespaces!.filter((n) => n.type !== t)
    refused(c, new RegExp(`^linux\\.namespaces: ${t} missing`))
  }
  const none = counter()
  delete none.linux!.namespaces
  refused(none, /^linux\.namespaces: pid, ipc, uts, mount missing/)
  const join = counter()
  join.linux!.namespaces!.push({ type: 'network', path: '/proc/1/ns/net' })
  refused(join, /^linux\.namespaces\[4\] \(network\): joining an existing namespace \(path "\/proc\/1\/ns\/net"\)/)
  const own = counter()
  own.linux!.namespaces!.push({ type: 'network' }, { type: 'cgroup' })
  assert.deepEqual(checkBundlePolicy(own, strict), { ok: true }, 'more isolation is fine')
})

test('devices: none may be added, and no allow rule beyond what runc allows anyway', () => {
  const dev = counter()
  dev.linux!.devices = [{ path: '/dev/vda', type: 'b', major: 254, minor: 0 }]
  refused(dev, /^linux\.devices: devices are not allowed/)
  const all = counter()
  all.linux!.resources = { devices: [{ allow: true, access: 'rwm' }] }
  refused(all, /^linux\.resources\.devices\[0\]: allowing a \*:\* rwm is not allowed/)
  const disk = counter()
  disk.linux!.resources = { devices: [{ allow: false, access: 'rwm' }, { allow: true, type: 'b', major: 254, minor: 0, access: 'rw' }] }
  refused(disk, /^linux\.resources\.devices\[1\]: allowing b 254:0 rw/)
  // What containerd/Docker spell out: runc's own defaults.
  const usual = counter()
  usual.linux!.resources = {
    devices: [
      { allow: false, access: 'rwm' },
      { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
      { allow: true, type: 'c', major: 136, minor: 4, access: 'rw' },
      { allow: true, type: 'b', access: 'm' }
    ]
  }
  assert.deepEqual(checkBundlePolicy(usual, strict), { ok: true })
})

test('every violation is listed at once; what the policy leaves alone passes', () => {
  const c = counter()
  c.hooks = { poststop: [{ path: '/bin/true' }] }
  c.mounts!.push({ destination: '/host', type: 'bind', source: '/', options: ['rbind'] })
  ;(c.process as Record<string, unknown>).capabilities = { bounding: ['CAP_SYS_ADMIN'] }
  c.linux!.namespaces = [{ type: 'pid', path: '/proc/1/ns/pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }]
  assert.equal(violations(c).length, 4, JSON.stringify(violations(c)))

  const free = counter()
  free.root = { path: 'rootfs', readonly: true }
  ;(free.process as Record<string, unknown>).user = { uid: 1000, gid: 1000 }
  ;(free.process as Record<string, unknown>).noNewPrivileges = false
  delete free.linux!.seccomp
  assert.deepEqual(checkBundlePolicy(free, strict), { ok: true })
})

test("every path runc's default spec masks must stay masked, every read-only one read-only", () => {
  const masked = ['/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware']
  for (const p of masked) {
    const c = counter()
    c.linux!.maskedPaths = (c.linux!.maskedPaths as string[]).filter((x) => x !== p)
    refused(c, new RegExp(`^linux\\.maskedPaths: ${p.replace(/\//g, '\\/')} missing: a received bundle must mask`))
  }
  for (const p of ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']) {
    const c = counter()
    c.linux!.readonlyPaths = (c.linux!.readonlyPaths as string[]).filter((x) => x !== p)
    refused(c, new RegExp(`^linux\\.readonlyPaths: ${p.replace(/\//g, '\\/')} missing: a received bundle must keep these read-only`))
  }
  const none = counter()
  delete none.linux!.maskedPaths
  delete none.linux!.readonlyPaths
  assert.equal(violations(none).length, 2, JSON.stringify(violations(none)))
  refused(none, /^linux\.maskedPaths: \/proc\/acpi, \/proc\/kcore, .*\/sys\/firmware missing/)
  refused(none, /^linux\.readonlyPaths: \/proc\/asound, \/proc\/bus, .*\/proc\/sysrq-trigger missing/)
  const odd = counter()
  odd.linux!.maskedPaths = '/proc/kcore'
  refused(odd, /^linux\.maskedPaths: not a list$/)

  // /proc/asound: runc masks it, Docker makes it read-only; either will do.
  const docker = counter()
  docker.linux!.maskedPaths = (docker.linux!.maskedPaths as string[]).filter((x) => x !== '/proc/asound')
  ;(docker.linux!.readonlyPaths as string[]).unshift('/proc/asound')
  assert.deepEqual(checkBundlePolicy(docker, strict), { ok: true })
  const gone = counter()
  gone.linux!.maskedPaths = (gone.linux!.maskedPaths as string[]).filter((x) => x !== '/proc/asound')
  refused(gone, /^linux\.readonlyPaths: \/proc\/asound missing/)
  // Masking a read-only path, or a directory above it, is at least as strong; other spellings count.
  const more = counter()
  more.linux!.readonlyPaths = ['/proc/bus', '/proc/fs/', '/proc/irq', '/proc/sysrq-trigger']
  ;(more.linux!.maskedPaths as string[]).push('/proc/sys', '/sys/devices/virtual/powercap')
  assert.deepEqual(checkBundlePolicy(more, strict), { ok: true })
  const above = counter()
  above.linux!.maskedPaths = ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys']
  assert.deepEqual(checkBundlePolicy(above, strict), { ok: true }, '/sys masked covers /sys/firmware')
  const near = counter()
  near.linux!.maskedPaths = (near.linux!.maskedPaths as string[]).map((x) => x === '/proc/keys' ? '/proc/key' : x)
  refused(near, /^linux\.maskedPaths: \/proc\/keys missing/)
})

test('proc only at /proc, sysfs only at /sys and read-only', () => {
  const rw = counter()
  rw.mounts = rw.mounts!.map((m) => m.type === 'sysfs' ? { ...m, options: ['nosuid', 'noexec', 'nodev'] } : m)
  refused(rw, /^mounts\[5\] \(\/sys\): a sysfs mount must be read-only \(option "ro"\)/)
  const later = counter()
  later.mounts = later.mounts!.map((m) => m.type === 'sysfs' ? { ...m, options: ['ro', 'nosuid', 'rw'] } : m)
  refused(later, /a sysfs mount must be read-only/)
  const bare = counter()
  bare.mounts = bare.mounts!.map((m) => m.type === 'sysfs' ? { destination: '/sys', type: 'sysfs', source: 'sysfs' } : m)
  refused(bare, /a sysfs mount must be read-only/)
  const rro = counter()
  rro.mounts = rro.mounts!.map((m) => m.type === 'sysfs' ? { ...m, options: ['nosuid', 'rro'] } : m)
  assert.deepEqual(checkBundlePolicy(rro, strict), { ok: true })

  // Another proc or sysfs instance is not covered by the masked and read-only paths.
  const proc2 = counter()
  proc2.mounts!.push({ destination: '/proc2', type: 'proc', source: 'proc' })
  refused(proc2, /^mounts\[6\] \(\/proc2\): a proc mount is allowed only at \/proc/)
  const sys2 = counter()
  sys2.mounts!.push({ destination: '/host-sys', type: 'sysfs', source: 'sysfs', options: ['ro'] })
  refused(sys2, /^mounts\[6\] \(\/host-sys\): a sysfs mount is allowed only at \/sys/)
  const spelled = counter()
  spelled.mounts = spelled.mounts!.map((m) => m.type === 'proc' ? { ...m, destination: '/proc/' } : m)
  assert.deepEqual(checkBundlePolicy(spelled, strict), { ok: true }, '/proc/ is /proc')
})

test('seccomp notification to a host socket is refused; a profile without it passes', () => {
  const c = counter()
  c.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/run/agent.sock', syscalls: [{ names: ['mount'], action: 'SCMP_ACT_NOTIFY' }] }
  refused(c, /^linux\.seccomp\.listenerPath: seccomp notification to a host socket \("\/run\/agent\.sock"\) is not allowed/)
  const plain = counter()
  plain.linux!.seccomp = { defaultAction: 'SCMP_ACT_ERRNO', syscalls: [{ names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' }] }
  assert.deepEqual(checkBundlePolicy(plain, strict), { ok: true })
  const empty = counter()
  empty.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '' }
  assert.deepEqual(checkBundlePolicy(empty, strict), { ok: true })
})

test('--allow-privileged-bundles accepts anything', () => {
  const c = counter()
  c.hooks = { prestart: [{ path: '/bin/sh' }] }
  c.mounts!.push({ destination: '/host', type: 'bind', source: '/', options: ['rbind'] })
  ;(c.process as Record<string, unknown>).capabilities = { bounding: ['CAP_SYS_ADMIN'] }
  c.linux!.namespaces = [{ type: 'pid', path: '/proc/1/ns/pid' }]
  c.linux!.devices = [{ path: '/dev/vda' }]
  c.linux!.maskedPaths = []
  c.linux!.readonlyPaths = []
  c.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/run/agent.sock' }
  c.mounts!.push({ destination: '/proc2', type: 'proc', source: 'proc' }, { destination: '/sys2', type: 'sysfs', source: 'sysfs', options: ['rw'] })
  assert.deepEqual(checkBundlePolicy(c, { allowPrivileged: true }), { ok: true })
  assert.equal(checkBundlePolicy(c, strict).ok, false)
})
