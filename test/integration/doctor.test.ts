// Runs `msc doctor`'s checks against the real host (needs root and `npm run setup`).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execa } from 'execa'
import { parseCriuVersion, runDoctor, type DoctorReport } from '../../src/doctor/checks.ts'

const CRIU = '/opt/msc/bin/criu'

function row (report: DoctorReport, id: string) {
  const c = report.checks.find(c => c.id === id)
  assert.ok(c, `no check ${id}`)
  return c
}

test('doctor on this host', async () => {
  const report = await runDoctor({ runcPath: 'runc', criuPath: CRIU })
  assert.equal(row(report, 'root').status, 'ok')
  assert.equal(row(report, 'runc').status, 'ok')

  const criu = row(report, 'criu')
  assert.equal(criu.status, 'ok', criu.value)
  const version = parseCriuVersion(`Version: ${criu.value}`)
  assert.ok(version && (version[0] > 4 || (version[0] === 4 && version[1] >= 2)), criu.value)

  assert.equal(row(report, 'criu-check').status, 'ok')
  assert.equal(row(report, 'uffd').status, 'ok')

  // This kernel lacks soft-dirty tracking; ask CRIU directly so the test holds on any kernel.
  const direct = await execa(CRIU, ['check', '--feature', 'mem_dirty_track'], { reject: false, timeout: 30_000 })
  const dirty = row(report, 'mem-dirty-track')
  assert.equal(dirty.status, direct.exitCode === 0 ? 'ok' : 'warn')
  assert.equal(report.features.preCopy, direct.exitCode === 0)
  if (dirty.status === 'warn') assert.ok(dirty.fix)

  assert.ok(report.strategies.includes('stop-copy'))
  assert.ok(report.strategies.includes('post-copy'))
  assert.equal(report.ok, report.checks.every(c => c.status !== 'fail'))
  assert.deepEqual(report.checks.map(c => c.id), ['root', 'runc', 'log-shim', 'criu', 'criu-check', 'mem-dirty-track', 'uffd', 'tcp-repair', 'pipe-max-size', 'cgroups', 'kernel'])
  // The report is what `msc doctor --json` prints: it must survive a JSON round trip.
  assert.deepEqual(JSON.parse(JSON.stringify(report)), report)
})

test('doctor with a missing CRIU fails with a fix and never throws', async () => {
  const report = await runDoctor({ runcPath: 'runc', criuPath: '/nonexistent/criu' })
  const criu = row(report, 'criu')
  assert.equal(criu.status, 'fail')
  assert.match(criu.fix ?? '', /setup|MSC_CRIU|--criu/)
  assert.equal(report.ok, false)
  assert.deepEqual(report.strategies, [])
  for (const c of report.checks) if (c.status !== 'ok') assert.ok(c.fix, `${c.id} has no fix`)
})

test('doctor with a missing runc fails that check only', async () => {
  const report = await runDoctor({ runcPath: 'msc-no-such-runc', criuPath: CRIU })
  assert.equal(row(report, 'runc').status, 'fail')
  assert.ok(row(report, 'runc').fix)
  assert.equal(row(report, 'criu').status, 'ok')
  assert.equal(report.ok, false)
})

test('an aborted doctor rejects with the abort reason', async () => {
  const controller = new AbortController()
  controller.abort(new Error('stop'))
  await assert.rejects(runDoctor({ runcPath: 'runc', criuPath: CRIU, signal: controller.signal }), /stop/)
})
