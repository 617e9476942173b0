/**
 * The pages tunnel (/msc/pages/1.0.0) between two real libp2p hosts on 127.0.0.1, and
 * post-copy end to end without msc nodes: runc checkpoint --lazy-pages on "A", the
 * image dir copied, criu lazy-pages + runc restore --lazy-pages on "B" under another
 * runc root, every page fetched through the tunnel.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import net from 'node:net'
import fs from 'node:fs/promises'
import path from 'node:path'
import v8 from 'node:v8'
import vm from 'node:vm'
import { execa } from 'execa'
import type { Stream } from '@libp2p/interface'
import type { MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { loopbackHost } from '../helpers/loopback-host.ts'
import { PAGES_PROTOCOL, openPagesTunnel, handlePagesStream, type PageServerAddress, type PagesStreamResult } from '../../src/protocols/pages/tunnel.ts'
import { checkpointLazy, startLazyPagesDaemon } from '../../src/runtime/lazy-pages.ts'
import { Runc } from '../../src/runtime/runc.ts'
import { unmountAllUnder } from '../../src/runtime/mounts.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { ROOT, MSC, tempDir, destroyAllNodes, removeCgroups, waitFor, counterValues, freePort, sleep } from '../helpers/node-harness.ts'
import { REDIS_CLI } from '../../src/bundles/redis.ts'

const CRIU = '/opt/msc/bin/criu'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

/** A/B hosts; A serves the transfers in `servers` (transferId -> local page server). */
async function pair (servers: Map<string, PageServerAddress>, results: PagesStreamResult[]): Promise<{ a: MscLibp2p; b: MscLibp2p }> {
  const a = await loopbackHost()
  const b = await loopbackHost()
  await a.handle(PAGES_PROTOCOL, async (stream) => {
    try {
      results.push(await handlePagesStream(stream, (id) => servers.get(id) ?? null))
    } catch {}
  })
  return { a, b }
}

function listen (server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)))
}

function connectTo (port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s))
    s.once('error', reject)
  })
}

function closed (s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) resolve()
    else s.once('close', () => resolve())
  })
}

describe('pages tunnel over libp2p', () => {
  const servers = new Map<string, PageServerAddress>()
  const results: PagesStreamResult[] = []
  let a: MscLibp2p, b: MscLibp2p
  let echo: net.Server
  let echoConnections = 0
  before(async () => {
    ;({ a, b } = await pair(servers, results))
    // The "page server": echoes, honours backpressure (pipe), ends when the client ends.
    echo = net.createServer({ allowHalfOpen: true }, (s) => {
      echoConnections++
      s.on('error', () => {})
      s.pipe(s)
    })
    servers.set('t-echo', { host: '127.0.0.1', port: await listen(echo) })
  })
  after(async () => {
    await b?.stop()
    await a?.stop()
    echo?.close()
  })

  test('bytes round-trip, and the client half-closing ends the other side', async () => {
    const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), 't-echo')
    try {
      const s = await connectTo(tunnel.port)
      const got: Buffer[] = []
      s.on('data', (d: Buffer) => got.push(d))
      const ended = new Promise<void>((resolve) => s.once('end', () => resolve()))
      s.write('hello pages')
      await waitFor(() => Buffer.concat(got).toString() === 'hello pages', 5_000, 'echo')
      s.end()
      await ended // client end -> stream close -> echo ends -> stream end -> our socket end
      await closed(s)
      assert.deepEqual(tunnel.stats(), { bytesIn: 11, bytesOut: 11, connections: 1 })
      await waitFor(() => results.length === 1, 5_000, 'source result')
      assert.equal(results[0]!.refused, null)
      assert.equal(results[0]!.bytesIn, 11)
    } finally {
      await tunnel.close()
    }
  })

  test('200 MiB through the tunnel with a stalled reader: backpressure, bounded memory', async () => {
    const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), 't-echo')
    try {
      const total = 200 * 1024 * 1024
      const block = randomBytes(1024 * 1024)
      // Forced collections make the peak mean "held", not "garbage not collected yet":
      // at ~100 MB/s each way the crypto and framing layers churn far more than they hold.
      gc()
      const base = process.memoryUsage()
      let peak = 0
      let ticks = 0
      const sampler = setInterval(() => {
        if (++ticks % 2 === 0) gc()
        peak = Math.max(peak, process.memoryUsage().rss - base.rss)
      }, 50)
      const s = await connectTo(tunnel.port)
      const sent = createHash('sha256')
      const recv = createHash('sha256')
      let written = 0
      let received = 0
      let atStall = { written: 0, held: 0 }
      const started = Date.now()
      const readDone = new Promise<void>((resolve, reject) => {
        s.on('end', () => resolve())
        s.on('error', reject)
      })
      s.pause()
      // The reader starts late: until then the echo, the source socket, the stream and
      // the target socket must all push back instead of buffering 200 MiB.
      setTimeout(() => {
        gc()
        atStall = { written, held: process.memoryUsage().arrayBuffers - base.arrayBuffers }
        s.on('data', (d: Buffer) => {
          received += d.byteLength
          recv.update(d)
        })
        s.resume()
      }, 2000)
      for (let off = 0; off < total; off += block.byteLength) {
        sent.update(block)
        written += block.byteLength
        if (!s.write(block)) await new Promise((resolve) => s.once('drain', resolve))
      }
      s.end()
      await readDone
      clearInterval(sampler)
      const secs = (Date.now() - started) / 1000
      const mib = (n: number): string => (n / 2 ** 20).toFixed(0)
      console.log(`# 200 MiB echoed in ${secs.toFixed(1)} s (${(2 * total / 2 ** 20 / secs).toFixed(0)} MiB/s both ways); ` +
        `stalled reader: ${mib(atStall.written)} MiB accepted, ${mib(atStall.held)} MiB buffers held; peak RSS growth ${mib(peak)} MiB`)
      assert.equal(received, total)
      assert.equal(recv.digest('hex'), sent.digest('hex'))
      // Two paused yamux windows (16 MiB each) plus socket buffers; never the transfer.
      assert.ok(atStall.written < 100 * 2 ** 20, `the writer was not held back: ${mib(atStall.written)} MiB accepted`)
      assert.ok(atStall.held < 128 * 2 ** 20, `${mib(atStall.held)} MiB of buffers held while stalled`)
      assert.ok(peak < 200 * 2 ** 20, `RSS grew by ${mib(peak)} MiB`)
      const st = tunnel.stats()
      assert.equal(st.bytesIn, total)
      assert.equal(st.bytesOut, total)
    } finally {
      await tunnel.close()
    }
  })

  test('an unknown transferId is refused before the page server is touched', async () => {
    const before = echoConnections
    // Eager (the default): the tunnel itself is refused, before any restore could start.
    await assert.rejects(openPagesTunnel(b, a.getMultiaddrs(), 't-nope'), /refused by the source: unknown transfer t-nope/)
    // Lazy: each connection is refused and hung up on.
    const errors: Error[] = []
    const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), 't-nope', { eager: false, onError: (e) => errors.push(e) })
    try {
      const s = await connectTo(tunnel.port)
      s.on('error', () => {})
      s.write('GET page 1')
      await closed(s)
      await waitFor(() => errors.length === 1, 5_000, 'tunnel error')
      assert.match(errors[0]!.message, /refused by the source: unknown transfer t-nope/)
      assert.match(tunnel.lastError()!.message, /unknown transfer/)
      assert.equal(echoConnections, before)
      assert.equal(tunnel.stats().bytesIn, 0)
    } finally {
      await tunnel.close()
    }
  })

  test('malformed and oversize headers are refused', async () => {
    const reply = async (bytes: Uint8Array): Promise<string> => {
      const stream = await b.dialProtocol(a.getMultiaddrs(), PAGES_PROTOCOL)
      stream.send(bytes)
      return (await readAll(stream)).toString()
    }
    const frame = (s: string): Uint8Array => Buffer.concat([Buffer.from([s.length]), Buffer.from(s)])
    assert.match(await reply(frame('{"v":2,"transferId":"t-echo"}')), /"ok":false.*bad header/)
    assert.match(await reply(frame('not json')), /"ok":false.*not JSON/)
    assert.match(await reply(Buffer.from([0xff, 0xff, 0x7f, 1, 2, 3])), /"ok":false.*larger than 4096/)
  })

  test("a stream that fails mid-transfer: beforeReset runs while CRIU's socket is still open, and only then is it reset", async () => {
    // A source whose page stream fails after 16 bytes, as a cut link would.
    const cut = await loopbackHost()
    await cut.handle(PAGES_PROTOCOL, async (stream) => {
      await handlePagesStream(stream, (id) => servers.get(id) ?? null, { cutAfterBytes: 16 }).catch(() => {})
    })
    const order: string[] = []
    let s: net.Socket | undefined
    const tunnel = await openPagesTunnel(b, cut.getMultiaddrs(), 't-echo', {
      beforeReset: async (err) => {
        order.push(`hook (${s?.destroyed === false ? 'socket open' : 'socket gone'}): ${err.message}`)
        await sleep(300) // a freeze takes a while; the socket waits for it
        order.push('hook done')
      }
    })
    try {
      s = await connectTo(tunnel.port)
      s.on('error', () => {})
      s.on('close', () => order.push('socket closed'))
      s.write(Buffer.alloc(64 * 1024, 1))
      await closed(s)
      assert.equal(order.length, 3, order.join('; '))
      assert.match(order[0]!, /^hook \(socket open\): .*(reset|abort|cut)/i)
      assert.deepEqual(order.slice(1), ['hook done', 'socket closed'])
    } finally {
      await tunnel.close()
      await cut.stop()
    }
    // Closing the tunnel ourselves is not a failure: no hook.
    let called = 0
    const quiet = await openPagesTunnel(b, a.getMultiaddrs(), 't-echo', { beforeReset: async () => {
      called++
    } })
    const q = await connectTo(quiet.port)
    q.on('error', () => {})
    await quiet.close()
    await closed(q)
    assert.equal(called, 0)
  })

  test('the page server closing ends the client; closing the tunnel ends both', async () => {
    const far: net.Socket[] = []
    const rude = net.createServer((s) => {
      far.push(s)
      s.on('error', () => {})
      s.once('data', () => s.destroy())
    })
    servers.set('t-rude', { host: '127.0.0.1', port: await listen(rude) })
    const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), 't-rude')
    try {
      const s1 = await connectTo(tunnel.port)
      s1.on('error', () => {})
      const ended = new Promise((resolve) => s1.once('end', resolve))
      s1.write('x')
      // The page server hung up: its FIN travels as the stream's end to our socket.
      await ended
      s1.end()
      await closed(s1)
      const s2 = await connectTo(tunnel.port)
      s2.on('error', () => {})
      await waitFor(() => far.length === 2, 5_000, 'second connection to reach the page server')
      await tunnel.close()
      await closed(s2)
      await closed(far[1]!) // the stream was aborted: the source end hung up too
      await assert.rejects(connectTo(tunnel.port))
    } finally {
      await tunnel.close()
      rude.close()
    }
  })
})

async function readAll (stream: Stream): Promise<Buffer> {
  const parts: Buffer[] = []
  await new Promise<void>((resolve) => {
    stream.addEventListener('message', (evt) => {
      const d = evt.data
      for (const b of d instanceof Uint8Array ? [d] : d) parts.push(Buffer.from(b))
    })
    stream.addEventListener('end', () => resolve())
    stream.addEventListener('close', () => resolve())
  })
  return Buffer.concat(parts)
}

/**
 * Post-copy between two runc roots on one machine, through the tunnel: "A" (source)
 * and "B" (target) are libp2p hosts in this process; the containers' cgroups and runc
 * roots are separate; redis gets a network namespace per side (a listening port cannot
 * be bound twice while the frozen source still holds it).
 */
describe('post-copy end to end through the pages tunnel (no msc nodes)', () => {
  const servers = new Map<string, PageServerAddress>()
  const results: PagesStreamResult[] = []
  let a: MscLibp2p, b: MscLibp2p
  let base: string
  let tag: string
  let r1: Runc, r2: Runc
  const cleanups: Array<() => void> = []
  const netns: string[] = []

  before(async () => {
    ;({ a, b } = await pair(servers, results))
    base = await tempDir('lazy')
    tag = `msc-lazytest-${path.basename(base).split('-').at(-1)}`
    const logger = silentLogger()
    r1 = new Runc({ runcPath: 'runc', criuPath: CRIU, root: path.join(base, 'r1'), logger })
    r2 = new Runc({ runcPath: 'runc', criuPath: CRIU, root: path.join(base, 'r2'), logger })
  })

  after(async () => {
    // Containers first (a lazy-pages daemon must not die under a restored container
    // that still needs pages), then the helper processes, mounts, cgroups, dirs.
    for (const r of [r2, r1]) {
      if (r == null) continue
      const list = await execa('runc', ['--root', r.config.root, 'list', '-q'], { reject: false })
      for (const id of String(list.stdout).split('\n').filter(Boolean)) {
        await execa('runc', ['--root', r.config.root, 'kill', '--all', id, 'KILL'], { reject: false })
      }
    }
    for (const c of cleanups) c()
    await sleep(300)
    for (const r of [r2, r1]) {
      if (r == null) continue
      const list = await execa('runc', ['--root', r.config.root, 'list', '-q'], { reject: false })
      for (const id of String(list.stdout).split('\n').filter(Boolean)) await r.delete(id, { force: true }).catch(() => {})
    }
    if (base != null) {
      await killShimsUnder(base)
      await unmountAllUnder(base)
    }
    if (tag != null) await removeCgroups(tag)
    for (const n of netns) await execa('ip', ['netns', 'delete', n], { reject: false })
    await b?.stop()
    await a?.stop()
    await destroyAllNodes() // removes the temp dirs (never across a mount)
  })

  async function bundle (kind: 'counter' | 'redis', name: string, extra: string[], side: 'src' | 'dst', ns?: string): Promise<string> {
    const dir = path.join(base, name)
    const r = await execa(MSC, ['bundle', kind, dir, ...extra], { reject: false })
    assert.equal(r.exitCode, 0, r.stderr)
    const cfgFile = path.join(dir, 'config.json')
    const cfg = JSON.parse(await fs.readFile(cfgFile, 'utf8'))
    cfg.linux.cgroupsPath = `/${tag}/${side}-${name}`
    if (ns != null) cfg.linux.namespaces.push({ type: 'network', path: `/run/netns/${ns}` })
    await fs.writeFile(cfgFile, JSON.stringify(cfg, null, 2))
    return dir
  }

  /** The target's copy of a bundle: the same rootfs content, its own cgroup (and netns). */
  async function copyBundle (src: string, name: string, ns?: string): Promise<string> {
    const dir = path.join(base, name)
    await execa('cp', ['-a', src, dir])
    const cfgFile = path.join(dir, 'config.json')
    const cfg = JSON.parse(await fs.readFile(cfgFile, 'utf8'))
    cfg.linux.cgroupsPath = `/${tag}/dst-${name}`
    cfg.linux.namespaces = cfg.linux.namespaces.filter((n: { type: string }) => n.type !== 'network')
    if (ns != null) cfg.linux.namespaces.push({ type: 'network', path: `/run/netns/${ns}` })
    await fs.writeFile(cfgFile, JSON.stringify(cfg, null, 2))
    return dir
  }

  interface Timings {
    imagesReadyMs: number
    imageBytes: number
    copyMs: number
    daemonReadyMs: number
    restoreMs: number
    releasedMs: number
    pageBytes: number
  }

  /**
   * The post-copy sequence. `restored` is called right after `runc restore` returned
   * (to time first output), while pages may still be in flight.
   */
  async function migrateLazily (id: string, bundle2: string, restored: () => Promise<void>): Promise<Timings> {
    const transferId = `${id}-${Date.now()}`
    const port1 = await freePort()
    servers.set(transferId, { host: '127.0.0.1', port: port1 })
    const img = path.join(base, `${id}-img`)
    const img2 = path.join(base, `${id}-img2`)
    const w2 = path.join(base, `${id}-w2`)
    const t0 = Date.now()
    const ck = checkpointLazy(r1, id, { imageDir: img, workDir: path.join(base, `${id}-w1`), pageServer: `127.0.0.1:${port1}` })
    cleanups.push(ck.cancel)
    await ck.imagesReady
    const t1 = Date.now()
    // The image transfer, simulated: everything but the memory pages.
    await execa('cp', ['-a', img, img2])
    const imageBytes = Number((await execa('du', ['-sb', img2])).stdout.split('\t')[0])
    const t2 = Date.now()
    const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), transferId)
    cleanups.push(() => {
      void tunnel.close()
    })
    const daemon = startLazyPagesDaemon(CRIU, { imageDir: img2, workDir: w2, address: '127.0.0.1', port: tunnel.port })
    cleanups.push(daemon.kill)
    await daemon.ready
    const t3 = Date.now()
    const st = await r2.restore(id, bundle2, {
      imageDir: img2,
      workDir: w2,
      lazyPages: true,
      logFile: path.join(base, `${id}-log2`),
      logMaxBytes: 1 << 20,
      pidFile: path.join(base, `${id}-pid2`)
    })
    const t4 = Date.now()
    assert.equal((await r2.state(id))?.status, 'running')
    assert.ok(st.pid > 0)
    await restored()
    await ck.done // every page was fetched: the source is released
    const t5 = Date.now()
    await daemon.exited
    assert.equal(await r1.state(id), null, 'the source container is gone after the lazy checkpoint')
    await tunnel.close()
    return {
      imagesReadyMs: t1 - t0,
      imageBytes,
      copyMs: t2 - t1,
      daemonReadyMs: t3 - t2,
      restoreMs: t4 - t3,
      releasedMs: t5 - t0,
      pageBytes: tunnel.stats().bytesIn
    }
  }

  test('counter: lazily restored under another runc root, it counts on from where it froze', async () => {
    const id = 'lz-counter'
    const b1 = await bundle('counter', 'counter1', ['--interval-ms', '200'], 'src')
    const b2 = await copyBundle(b1, 'counter2')
    const log1 = path.join(base, `${id}-log1`)
    const log2 = path.join(base, `${id}-log2`)
    await r1.run(id, b1, { logFile: log1, logMaxBytes: 1 << 20, pidFile: path.join(base, `${id}-pid1`) })
    const values = async (f: string): Promise<number[]> => counterValues(await fs.readFile(f, 'utf8').catch(() => ''))
    await waitFor(async () => (await values(log1)).length >= 5, 10_000, 'the counter to reach 5')
    let firstOutputMs = 0
    const t = await migrateLazily(id, b2, async () => {
      const t0 = Date.now()
      await waitFor(async () => (await values(log2)).length >= 1, 10_000, 'restored counter output')
      firstOutputMs = Date.now() - t0
    })
    await waitFor(async () => (await values(log2)).length >= 5, 10_000, 'the restored counter to go on')
    const before = await values(log1)
    const afterward = await values(log2)
    console.log(`# counter post-copy: freeze->images ready ${t.imagesReadyMs} ms (${t.imageBytes} B, copy ${t.copyMs} ms), ` +
      `daemon ready ${t.daemonReadyMs} ms, restore ${t.restoreMs} ms, first output +${firstOutputMs} ms, ` +
      `source released ${t.releasedMs} ms after the freeze, ${t.pageBytes} B of pages through the tunnel`)
    assert.equal(before[0], 1)
    const all = [...before, ...afterward]
    for (let i = 1; i < all.length; i++) assert.ok(all[i]! > all[i - 1]!, `not increasing at ${i}: ${all.join(' ')}`)
    assert.notEqual(afterward[0], 1, 'restarted at 1')
    assert.ok(afterward[0]! <= before.at(-1)! + 2, `resumed at ${afterward[0]} after ${before.at(-1)}`)
    assert.ok(t.pageBytes > 0, 'no page went through the tunnel')
  })

  test('redis: 10,000 keys all there after a lazy restore into another network namespace', async () => {
    const id = 'lz-redis'
    const nsA = `${tag.slice(-6)}-a`
    const nsB = `${tag.slice(-6)}-b`
    for (const n of [nsA, nsB]) {
      assert.equal((await execa('ip', ['netns', 'add', n], { reject: false })).exitCode, 0)
      netns.push(n)
      await execa('nsenter', [`--net=/run/netns/${n}`, 'ip', 'link', 'set', 'lo', 'up'])
    }
    const port = 6379
    const cli = (ns: string, ...args: string[]) => execa('nsenter', [`--net=/run/netns/${ns}`, REDIS_CLI, '-h', '127.0.0.1', '-p', String(port), ...args], { reject: false, timeout: 10_000 })
    const b1 = await bundle('redis', 'redis1', ['--port', String(port), '--bind', '127.0.0.1'], 'src', nsA)
    const b2 = await copyBundle(b1, 'redis2', nsB)
    await r1.run(id, b1, { logFile: path.join(base, `${id}-log1`), logMaxBytes: 1 << 20, pidFile: path.join(base, `${id}-pid1`) })
    await waitFor(async () => String((await cli(nsA, 'PING')).stdout) === 'PONG', 15_000, 'redis to answer')
    const pop = await execa('nsenter', [`--net=/run/netns/${nsA}`, 'bash', path.join(ROOT, 'demos/populate-redis.sh'), '-h', '127.0.0.1', '-p', String(port), '10000'], { reject: false })
    assert.equal(pop.exitCode, 0, pop.stderr)
    assert.equal(String((await cli(nsA, 'DBSIZE')).stdout), '10000')
    let firstPongMs = 0
    const t = await migrateLazily(id, b2, async () => {
      const t0 = Date.now()
      await waitFor(async () => String((await cli(nsB, 'PING')).stdout) === 'PONG', 15_000, 'restored redis to answer')
      firstPongMs = Date.now() - t0
    })
    console.log(`# redis (10,000 keys) post-copy: freeze->images ready ${t.imagesReadyMs} ms (${t.imageBytes} B, copy ${t.copyMs} ms), ` +
      `daemon ready ${t.daemonReadyMs} ms, restore ${t.restoreMs} ms, first PONG +${firstPongMs} ms, ` +
      `source released ${t.releasedMs} ms after the freeze, ${t.pageBytes} B of pages through the tunnel`)
    assert.equal(String((await cli(nsB, 'DBSIZE')).stdout), '10000')
    for (const k of ['1', '2', '5000', '9999', '10000']) assert.equal(String((await cli(nsB, 'GET', k)).stdout), k)
    assert.equal(String((await cli(nsB, 'SET', 'after', 'lazy')).stdout), 'OK')
    assert.notEqual(String((await cli(nsA, 'PING')).stdout), 'PONG', 'the source redis still answers')
  })
})

/** Log shims whose log file lies under `dir` (their container is gone or going). */
async function killShimsUnder (dir: string): Promise<void> {
  for (const pid of await fs.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue
    const environ = await fs.readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '')
    if (environ.includes(`MSC_SHIM_LOG=${dir}/`)) {
      try {
        process.kill(Number(pid), 'SIGKILL')
      } catch {}
    }
  }
}
