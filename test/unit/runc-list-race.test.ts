/**
 * Runc.list against a fake runc (a shell script): runc fails a whole list when a
 * container is deleted between reading its root and reading that container's state;
 * msc asks again instead of failing `msc ps` or a heartbeat's claims. Other errors
 * are not retried.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Runc } from '../../src/runtime/runc.ts'
import { silentLogger } from '../../src/util/logger.ts'

/** A fake runc that fails its first `failures` lists with `message`, then lists one container. */
async function fakeRunc (dir: string, failures: number, message: string): Promise<{ runc: Runc; calls: () => Promise<number> }> {
  const script = path.join(dir, 'runc')
  const count = path.join(dir, 'count')
  await fs.writeFile(count, '0')
  await fs.writeFile(script, `#!/bin/sh
n=$(cat ${count}); n=$((n + 1)); echo $n > ${count}
if [ $n -le ${failures} ]; then echo 'time="x" level=error msg="${message}"' >&2; exit 1; fi
echo '[{"id":"a","pid":1,"status":"running","bundle":"/b","created":"2026-11-30T00:00:00Z"}]'
`, { mode: 0o755 })
  const runc = new Runc({ runcPath: script, criuPath: '/bin/false', root: dir, logger: silentLogger() })
  return { runc, calls: async () => Number(await fs.readFile(count, 'utf8')) }
}

test('a list that raced with a deletion is asked again', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-runc-race-'))
  t.after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })
  const f = await fakeRunc(dir, 2, `stat ${dir}/rb: no such file or directory`)
  assert.deepEqual((await f.runc.list()).map((s) => s.id), ['a'])
  assert.equal(await f.calls(), 3)
})

test('a list that keeps failing, or fails otherwise, is an error', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-runc-race-'))
  t.after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })
  const always = await fakeRunc(dir, 100, `stat ${dir}/rb: no such file or directory`)
  await assert.rejects(always.runc.list(), /runc list: .*no such file/)
  assert.equal(await always.calls(), 4, 'four tries, then the error')
  const other = await fakeRunc(dir, 1, 'permission denied')
  await assert.rejects(other.runc.list(), /permission denied/)
  assert.equal(await other.calls(), 1, 'not retried')
})
