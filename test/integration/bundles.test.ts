/**
 * The example bundles run under real runc: the counter counts, redis serves, and
 * demos/populate-redis.sh loads keys into it. Needs root, runc, busybox-static, redis.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { writeExampleBundle } from '../../src/bundles/index.ts'
import type { OciSpec } from '../../src/bundles/oci-spec.ts'
import { REDIS_CLI } from '../../src/bundles/redis.ts'

const POPULATE = fileURLToPath(new URL('../../demos/populate-redis.sh', import.meta.url))
const tag = randomBytes(4).toString('hex')
const tmp = await fs.mkdtemp('/tmp/msc-bundles-test-')
const runcRoot = path.join(tmp, 'runc-root')
// Other tests and nodes share this kernel's cgroups: keep ours under a prefix of our own.
const cgroupParent = `/msc-test-${tag}`
const containers: string[] = []
const pipes: Array<{ destroy: () => void }> = []

after(async () => {
  for (const id of containers) {
    await execa('runc', ['--root', runcRoot, 'kill', id, 'KILL'], { reject: false })
    await execa('runc', ['--root', runcRoot, 'delete', '--force', id], { reject: false })
  }
  for (const p of pipes) p.destroy()
  // runc removes each container's cgroup, not the parent we invented.
  for (const h of await fs.readdir('/sys/fs/cgroup').catch(() => [])) {
    await fs.rmdir(path.join('/sys/fs/cgroup', h, cgroupParent)).catch(() => {})
  }
  // fs.rm crosses mount points: never delete while something is still mounted in there.
  const mountinfo = await fs.readFile('/proc/self/mountinfo', 'utf8')
  if (mountinfo.includes(` ${tmp}/`)) {
    console.error(`left ${tmp} in place: something is still mounted under it`)
    return
  }
  await fs.rm(tmp, { recursive: true, force: true })
})

/** Gives the container a cgroup of its own, as an msc node would. */
async function setCgroupsPath (bundle: string, id: string): Promise<void> {
  const file = path.join(bundle, 'config.json')
  const spec = JSON.parse(await fs.readFile(file, 'utf8')) as OciSpec
  spec.linux.cgroupsPath = `${cgroupParent}/${id}`
  await fs.writeFile(file, JSON.stringify(spec, null, 2))
}

/**
 * `runc run --detach` without a terminal hands its own stdio to the container. CRIU
 * can dump pipes there (runc re-attaches new ones at restore), but neither host files
 * nor Node's stdio 'pipe', which is a unix socketpair ("External socket is used").
 * So bash gives runc real pipe(2)s whose read ends belong to two `cat`s relaying to
 * us; runc exits once the container started, the cats live as long as it does.
 */
async function runDetached (bundle: string, id: string): Promise<{ stdout: () => string }> {
  await setCgroupsPath(bundle, id)
  const runc = ['runc', '--root', runcRoot, 'run', '--detach', '--bundle', bundle, id]
  const child = spawn('bash', ['-c', 'exec "$@" > >(exec cat) 2> >(exec cat >&2)', 'bash', ...runc], { stdio: ['ignore', 'pipe', 'pipe'] })
  containers.push(id)
  pipes.push(child.stdout, child.stderr)
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d
  })
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', resolve)
  })
  // On failure no container holds the pipes: wait for the relays to flush runc's error.
  if (code !== 0) await new Promise((resolve) => child.once('close', resolve))
  assert.equal(code, 0, `runc run failed: ${err}`)
  const { pid } = JSON.parse((await execa('runc', ['--root', runcRoot, 'state', id])).stdout) as { pid: number }
  for (const fd of [1, 2]) assert.match(await fs.readlink(`/proc/${pid}/fd/${fd}`), /^pipe:/)
  return { stdout: () => out }
}

async function waitFor<T> (what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

async function freePort (): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address() as net.AddressInfo
  await new Promise((resolve) => srv.close(resolve))
  return port
}

test('a non-empty directory is refused without force, rewritten with it', async () => {
  const dir = path.join(tmp, 'refuse')
  await fs.mkdir(dir)
  await fs.writeFile(path.join(dir, 'x'), 'x')
  await assert.rejects(writeExampleBundle('counter', dir), { code: 'INVALID_ARGUMENT' })
  const a = await writeExampleBundle('counter', dir, { force: true })
  const b = await writeExampleBundle('counter', dir, { force: true })
  assert.equal(a.sizeBytes, b.sizeBytes)
  assert.deepEqual(a.args, ['/bin/sh', '/count.sh'])
  assert.equal(await fs.readFile(path.join(dir, 'x'), 'utf8'), 'x') // only its own entries replaced
})

test('counter bundle prints 1, 2, 3, ... under runc', async () => {
  const bundle = path.join(tmp, 'counter')
  const info = await writeExampleBundle('counter', bundle)
  assert.equal(info.kind, 'counter')
  const c = await runDetached(bundle, `counter-${tag}`)
  const lines = await waitFor('three numbers', 4500, async () => {
    const l = c.stdout().split('\n').filter((s) => s !== '')
    return l.length >= 3 ? l : undefined
  })
  assert.deepEqual(lines.slice(0, 3), ['1', '2', '3'])
  for (const [i, s] of lines.entries()) assert.equal(Number(s), i + 1)
})

test('redis bundle serves PING and takes keys from populate-redis.sh', async () => {
  const bundle = path.join(tmp, 'redis')
  const port = await freePort()
  const info = await writeExampleBundle('redis', bundle, { port, bind: '127.0.0.1' })
  assert.equal(info.kind, 'redis')
  await runDetached(bundle, `redis-${tag}`)
  const cli = ['-h', '127.0.0.1', '-p', String(port)]
  await waitFor('PONG', 10_000, async () => {
    const r = await execa(REDIS_CLI, [...cli, 'PING'], { reject: false })
    return r.stdout.trim() === 'PONG' ? true : undefined
  })
  const populated = await execa('bash', [POPULATE, ...cli, '1000'])
  assert.equal(populated.stdout.trim(), '1000')
  assert.equal((await execa(REDIS_CLI, [...cli, 'DBSIZE'])).stdout.trim(), '1000')
  assert.equal((await execa(REDIS_CLI, [...cli, 'GET', '500'])).stdout.trim(), '500')
})
