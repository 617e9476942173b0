import { test } from 'node:test'
import assert from 'node:assert/strict'
import { cgroupLayout, deriveStrategies, parseCriuVersion, type DoctorCheck, type DoctorReport, type DoctorStatus } from '../../src/doctor/checks.ts'
import { renderDoctorTable } from '../../src/doctor/render.ts'

function row (id: string, status: DoctorStatus, value = 'v', fix?: string): DoctorCheck {
  return fix ? { id, title: id, status, value, fix } : { id, title: id, status, value }
}

function report (checks: DoctorCheck[]): DoctorReport {
  return { ok: checks.every(c => c.status !== 'fail'), checks, ...deriveStrategies(checks) }
}

// Like this host: no soft-dirty tracking, userfaultfd present.
const thisHost = [
  row('root', 'ok', 'uid 0'),
  row('criu-check', 'ok', 'Looks good'),
  row('mem-dirty-track', 'warn', 'no (pre-copy unavailable; post-copy and stop-copy work)', 'a kernel with CONFIG_MEM_SOFT_DIRTY'),
  row('uffd', 'ok', 'yes'),
  row('tcp-repair', 'ok', 'yes'),
  row('pipe-max-size', 'warn', '1048576\n(too small)', 'sysctl -w fs.pipe-max-size=16777216')
]

test('strategies follow the checks, in preference order', () => {
  assert.deepEqual(deriveStrategies(thisHost).strategies, ['post-copy', 'stop-copy'])
  assert.deepEqual(deriveStrategies(thisHost).features, { preCopy: false, postCopy: true, tcpRepair: true })

  const all = thisHost.map(c => ({ ...c, status: 'ok' as const }))
  assert.deepEqual(deriveStrategies(all).strategies, ['pre-copy', 'post-copy', 'stop-copy'])

  // Nothing works without a passing `criu check`, whatever the feature rows say.
  const broken = all.map(c => c.id === 'criu-check' ? { ...c, status: 'fail' as const } : c)
  assert.deepEqual(deriveStrategies(broken), { features: { preCopy: false, postCopy: false, tcpRepair: false }, strategies: [] })
})

test('table: aligned columns, fix lines only under rows that are not ok, strategy summary last', () => {
  const out = renderDoctorTable(report(thisHost), false)
  const lines = out.split('\n')
  assert.equal(lines[0], 'CHECK            STATUS  VALUE')
  assert.equal(lines[1], 'root             ok      uid 0')
  assert.equal(lines[3], 'mem-dirty-track  warn    no (pre-copy unavailable; post-copy and stop-copy work)')
  assert.equal(lines[4], '  -> fix: a kernel with CONFIG_MEM_SOFT_DIRTY')
  // Multi-line values are folded so the table keeps one row per check.
  assert.ok(lines.includes('pipe-max-size    warn    1048576 (too small)'))
  assert.equal(lines.filter(l => l.startsWith('  -> fix:')).length, 2)
  assert.equal(lines.at(-1), 'usable strategies: post-copy, stop-copy')
  assert.doesNotMatch(out, /\x1b\[/)
})

test('colour codes only when asked, without breaking alignment', () => {
  const r = report(thisHost)
  const coloured = renderDoctorTable(r, true)
  assert.match(coloured, /\x1b\[33mwarn/)
  assert.equal(coloured.replace(/\x1b\[[0-9;]*m/g, ''), renderDoctorTable(r, false))
})

test('a failing host says so: fix shown, no strategies', () => {
  const r = report([row('criu', 'fail', 'not found: /nonexistent/criu', 'set MSC_CRIU=/path or --criu'), row('criu-check', 'fail', 'unknown')])
  assert.equal(r.ok, false)
  const lines = renderDoctorTable(r, false).split('\n')
  assert.equal(lines[1], 'criu        fail    not found: /nonexistent/criu')
  assert.equal(lines[2], '  -> fix: set MSC_CRIU=/path or --criu')
  assert.equal(lines.at(-1), 'usable strategies: none')
})

test('cgroup layout from /proc/mounts', () => {
  const v1 = 'cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n'
  const v2 = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n'
  assert.deepEqual(cgroupLayout(v1), { kind: 'v1', v2At: [] })
  assert.deepEqual(cgroupLayout(v2), { kind: 'v2', v2At: ['/sys/fs/cgroup'] })
  assert.deepEqual(cgroupLayout(v1 + 'cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n'), { kind: 'hybrid', v2At: ['/sys/fs/cgroup/unified'] })
  assert.deepEqual(cgroupLayout('proc /proc proc rw 0 0\n'), { kind: 'none', v2At: [] })
})

test('CRIU version parsing', () => {
  assert.deepEqual(parseCriuVersion('Version: 4.2.1\nGitID: v4.2.1\n'), [4, 2, 1])
  assert.deepEqual(parseCriuVersion('Version: 3.17\n'), [3, 17, 0])
  assert.equal(parseCriuVersion('garbage'), undefined)
})
