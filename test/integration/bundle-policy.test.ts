/**
 * A member still cannot take the host (issue 7, item 4), with real nodes:
 *  - a counter whose config.json has a prestart hook that touches a marker file on the
 *    host runs on n1 (started with --allow-privileged-bundles: the hook ran there);
 *    migrated to n2 (default policy) it is refused before anything moves, with a reason
 *    naming the hook, the hook never runs on n2 (the marker does not come back) and the
 *    container keeps counting on n1; with n2 restarted with --allow-privileged-bundles
 *    the same migration goes through, and n2's restore runs the hook (so the first
 *    half could have seen it);
 *  - /msc/image with `symlinks: 'none'` (images, logs) refuses a tree with a symlink;
 *  - the bundle cache stores a rootfs only under its own digest.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), iproute2, nsenter (test/testbed/README.md).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { execa } from 'execa'
import { counterValues, MSC } from '../helpers/node-harness.ts'
import { sleep, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import type { MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { loopbackHost } from '../helpers/loopback-host.ts'
import { IMAGE_PROTOCOL, receiveTree, sendTree } from '../../src/protocols/image/index.ts'
import type { ProtocolError } from '../../src/protocols/framing.ts'
import { NodeMigrationHost } from '../../src/node/migration-host.ts'
import { DataDir } from '../../src/node/data-dir.ts'
import { bundleDigest } from '../../src/migration/bundle-digest.ts'
import { silentLogger } from '../../src/util/logger.ts'
import type { ContainerInfo, MigrationResultInfo } from '../../src/api/types.ts'

const NODE_ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3']

describe('a received bundle with a runc hook', () => {
  let c: Cluster
  let keyFile = ''
  let bundle = ''
  const marker = path.join(os.tmpdir(), `msc-test-hook-${crypto.randomBytes(6).toString('hex')}`)
  const n = (name: string): ClusterNode => c.node(name)
  const args = (privileged: boolean): string[] => [...NODE_ARGS, '--psk', keyFile, ...(privileged ? ['--allow-privileged-bundles'] : [])]

  before(async () => {
    c = await startCluster({ hosts: 2, start: false })
    // Our own key, whatever the helper gives: both nodes must be one cluster.
    keyFile = path.join(c.root, 'policy-test.key')
    const k = await execa(MSC, ['keygen', 'psk', keyFile], { reject: false })
    assert.equal(k.exitCode, 0, `msc keygen psk: ${String(k.stderr)}`)
    await Promise.all([c.start(n('n1'), args(true)), c.start(n('n2'), args(false))])
    await c.waitAllAlive(30_000)
    bundle = path.join(c.root, 'hooked')
    const b = await execa(MSC, ['bundle', 'counter', bundle, '--interval-ms', '200'], { reject: false })
    assert.equal(b.exitCode, 0, `msc bundle counter: ${String(b.stderr)}`)
    const configPath = path.join(bundle, 'config.json')
    const config = JSON.parse(await fs.readFile(configPath, 'utf8')) as Record<string, unknown>
    // Runs as root on the host at `runc run`, and again at `runc restore`.
    config.hooks = { prestart: [{ path: '/bin/sh', args: ['sh', '-c', `touch ${marker}`] }] }
    await fs.writeFile(configPath, JSON.stringify(config, null, 2))
  })

  after(async () => {
    await c?.destroy()
    await fs.rm(marker, { force: true })
  })

  function logValues (node: ClusterNode): number[] {
    let text = ''
    for (const f of ['container.log.1', 'container.log']) {
      try {
        text += readFileSync(path.join(node.dataDir, 'containers', 'hooked', f), 'utf8')
      } catch {}
    }
    return counterValues(text)
  }

  async function migrate (from: ClusterNode, to: ClusterNode): Promise<{ exitCode: number; result: MigrationResultInfo; stderr: string }> {
    const r = await c.mscTimed(from, 180_000, 'migrate', 'hooked', '--to', to.name, '--strategy', 'stop-copy', '--json')
    try {
      return { exitCode: r.exitCode, result: JSON.parse(r.stdout) as MigrationResultInfo, stderr: r.stderr }
    } catch {
      throw new Error(`msc migrate --json printed no JSON (exit ${r.exitCode}):\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
    }
  }

  async function running (node: ClusterNode): Promise<boolean> {
    const ps = (await c.json<ContainerInfo[]>(node, 'ps')).find((x) => x.name === 'hooked')
    const rl = (await c.runcList(node)).find((x) => x.id === 'hooked')
    return ps?.state === 'running' && rl?.status === 'running'
  }

  test("the operator's own run on n1 is trusted: the hook runs there", async () => {
    const r = await c.msc(n('n1'), 'run', 'hooked', bundle)
    assert.equal(r.exitCode, 0, `msc run: ${r.stderr}\n${c.logTail(n('n1'))}`)
    assert.ok(existsSync(marker), 'runc ran the prestart hook on n1')
    await waitFor(() => logValues(n('n1')).length >= 3, 15_000, 'the counter to count on n1')
    await fs.rm(marker)
  })

  test('n2 refuses it with the reason, before anything moves; it keeps running on n1', async () => {
    const m = await migrate(n('n1'), n('n2'))
    const what = `${JSON.stringify(m.result)}\nstderr: ${m.stderr}\nn2 log:\n${c.logTail(n('n2'), 10)}`
    assert.notEqual(m.exitCode, 0, what)
    assert.equal(m.result.ok, false, what)
    assert.match(m.result.error?.message ?? '', /refused the migration/, what)
    assert.match(m.result.error?.message ?? '', /hooks\.prestart: hooks are not allowed in a received bundle/, what)
    assert.match(m.result.error?.message ?? '', /--allow-privileged-bundles/, what)
    assert.ok(!('freeze-dump' in m.result.phases), `${what}: refused before the container was frozen`)
    assert.match(readFileSync(n('n2').logFile, 'utf8'), /"code":"POLICY"/, 'n2 logs the refusal with its code')

    const before = logValues(n('n1')).length
    await sleep(1500)
    assert.ok(!existsSync(marker), 'the hook ran nowhere: not on n2, and n1 never had to restore it')
    assert.equal(await running(n('n1')), true, 'still running on n1')
    assert.ok(logValues(n('n1')).length > before, 'and still counting there')
    assert.deepEqual((await c.runcList(n('n2'))).map((x) => x.id), [], 'n2 runs nothing')
    assert.equal(existsSync(path.join(n('n2').dataDir, 'containers', 'hooked')), false, 'n2 kept nothing of it')
    assert.deepEqual((await c.tmpEntries(n('n2'))).filter((e) => e.startsWith('mig-')), [], 'no staging left on n2')
  })

  test('with --allow-privileged-bundles, n2 accepts the same migration (and its restore runs the hook)', async () => {
    await c.stop(n('n2'))
    await c.start(n('n2'), args(true))
    await c.waitAllAlive(30_000)
    const m = await migrate(n('n1'), n('n2'))
    const what = `${JSON.stringify(m.result)}\nstderr: ${m.stderr}\nn1 log:\n${c.logTail(n('n1'), 10)}\nn2 log:\n${c.logTail(n('n2'), 10)}`
    assert.equal(m.exitCode, 0, what)
    assert.equal(m.result.ok, true, what)
    assert.equal(m.result.runningOn, n('n2').peerId, what)
    assert.equal(await running(n('n2')), true, 'running on n2')
    assert.equal(await running(n('n1')), false, 'and no longer on n1')
    assert.ok(existsSync(marker), 'runc restore ran the prestart hook on n2: refusing it was what kept it off the host')
    const at = logValues(n('n2')).length
    await waitFor(() => logValues(n('n2')).length > at + 2, 15_000, 'the counter to go on counting on n2')
  })
})

describe('/msc/image trees that take no symlinks (images, logs)', () => {
  let sandbox = ''
  let sender: MscLibp2p
  let receiver: MscLibp2p
  let next: PromiseWithResolvers<ProtocolError | null> | undefined
  let destDir = ''

  before(async () => {
    sandbox = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-test-policy-image-'))
    await fs.mkdir(path.join(sandbox, 'tmp'))
    ;[sender, receiver] = await Promise.all([loopbackHost(), loopbackHost()])
    await receiver.handle(IMAGE_PROTOCOL, async (stream) => {
      const job = next
      next = undefined
      try {
        await receiveTree(stream, {
          tmpRoot: path.join(sandbox, 'tmp'),
          destDir,
          mode: 'replace',
          symlinks: 'none',
          idleTimeoutMs: 5000,
          limits: { maxTotalBytes: 1 << 20, maxFileBytes: 1 << 20, maxFiles: 100 }
        })
        job?.resolve(null)
      } catch (err) {
        job?.resolve(err as ProtocolError)
      }
    })
  })

  after(async () => {
    await Promise.resolve(sender?.stop()).catch(() => {})
    await Promise.resolve(receiver?.stop()).catch(() => {})
    if (sandbox !== '') await fs.rm(sandbox, { recursive: true, force: true })
  })

  async function send (src: string, dest: string): Promise<ProtocolError | null> {
    destDir = dest
    next = Promise.withResolvers()
    const got = next.promise
    const stream = await sender.dialProtocol(receiver.getMultiaddrs()[0]!, IMAGE_PROTOCOL, { signal: AbortSignal.timeout(30_000) })
    await sendTree(stream, src, { transferId: crypto.randomUUID(), label: 'log', signal: AbortSignal.timeout(30_000) }).catch(() => {})
    return await got
  }

  test('a log tree holding container.log -> a host file is refused, nothing committed', async () => {
    const src = path.join(sandbox, 'hostile')
    await fs.mkdir(src)
    await fs.writeFile(path.join(src, 'container.log.1'), 'old\n')
    await fs.symlink('/etc/passwd', path.join(src, 'container.log'))
    const err = await send(src, path.join(sandbox, 'got-hostile'))
    assert.ok(err != null, 'refused')
    assert.equal(err.reason, 'SYMLINK_ESCAPE')
    assert.match(err.message, /container\.log is a symlink .*regular files and directories only/)
    assert.equal(existsSync(path.join(sandbox, 'got-hostile')), false)
    assert.deepEqual(await fs.readdir(path.join(sandbox, 'tmp')), [], 'temporary directory removed')
  })

  test('a contained relative link is refused too; plain files pass', async () => {
    const src = path.join(sandbox, 'relative')
    await fs.mkdir(src)
    await fs.writeFile(path.join(src, 'a'), 'a\n')
    await fs.symlink('a', path.join(src, 'b'))
    assert.equal((await send(src, path.join(sandbox, 'got-relative')))?.reason, 'SYMLINK_ESCAPE')
    const plain = path.join(sandbox, 'plain')
    await fs.mkdir(path.join(plain, 'sub'), { recursive: true })
    await fs.writeFile(path.join(plain, 'container.log'), '1\n2\n')
    await fs.writeFile(path.join(plain, 'sub', 'x'), 'x')
    assert.equal(await send(plain, path.join(sandbox, 'got-plain')), null)
    assert.equal(await fs.readFile(path.join(sandbox, 'got-plain', 'container.log'), 'utf8'), '1\n2\n')
  })
})

describe('the bundle cache', () => {
  test('stores a received rootfs only under the digest it really has', async () => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-test-policy-cache-'))
    try {
      // Only the data dir and the logger are used by the cache.
      const host = new NodeMigrationHost({ manager: {} as never, runc: {} as never, dataDir: new DataDir(root), logger: silentLogger(), announce: () => {} })
      const bundleDir = path.join(root, 'received')
      await fs.mkdir(path.join(bundleDir, 'rootfs', 'bin'), { recursive: true })
      await fs.writeFile(path.join(bundleDir, 'rootfs', 'bin', 'app'), 'the real app')
      const config = { process: { args: ['/bin/app'] }, root: { path: 'rootfs' } }
      const real = (await bundleDigest(config, path.join(bundleDir, 'rootfs'))).digest

      // A member names another bundle's digest for its own rootfs (or config): not kept.
      const other = crypto.createHash('sha256').update('another bundle').digest('hex')
      await host.cacheBundle(other, bundleDir, config)
      assert.equal(await host.cachedBundle(other), null)
      await host.cacheBundle(real, bundleDir, { ...config, hooks: {} })
      assert.equal(await host.cachedBundle(real), null, 'the digest covers the config too')
      assert.equal(existsSync(path.join(root, 'bundles', `${real}.tmp`)), false, 'no partial copy left')

      await host.cacheBundle(real, bundleDir, config)
      const cached = await host.cachedBundle(real)
      assert.ok(cached != null, 'kept under its own digest')
      assert.equal(await fs.readFile(path.join(cached, 'rootfs', 'bin', 'app'), 'utf8'), 'the real app')
    } finally {
      await fs.rm(root, { recursive: true, force: true })
    }
  })
})
