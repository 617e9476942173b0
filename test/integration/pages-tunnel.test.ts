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
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { createLibp2pHost, type MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { PAGES_PROTOCOL, openPagesTunnel, handlePagesStream, type PageServerAddress, type PagesStreamResult } from '../../src/protocols/pages/tunnel.ts'
import { checkpointLazy, startLazyPagesDaemon } from '../../src/runtime/lazy-pages.ts'
import { Runc } from '../../src/runtime/runc.ts'
import { unmountAllUnder } from '../../src/runtime/mounts.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { ROOT, MSC, tempDir, destroyAllNodes, removeCgroups, waitFor, counterValues, freePort, sleep } from '../helpers/node-harness.ts'

const CRIU = '/opt/msc/bin/criu'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

async function host (): Promise<MscLibp2p> {
  const node = await createLibp2pHost({
    privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], bootstrap: [],
    mdns: false, mdnsIntervalMs: 1000, maxPubsubMessageBytes: 1 << 20
  })
  await node.start()
  return node
}

/** A/B hosts; A serves the transfers in `servers` (transferId -> local page server). */
async function pair (servers: Map<string, PageServerAddress>, results: PagesStreamResult[]): Promise<{ a: MscLibp2p, b: MscLibp2p }> {
  const a = await host()
  const b = await host()
  await a.handle(PAGES_PROTOCOL, async (stream) => {
    try { results.push(await handlePagesStream(stream, (id) => servers.get(id) ?? null)) } catch {}
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
  return new Promise((resolve) => { if (s.destroyed) resolve(); else s.once('close', () => resolve()) })
}

describe('pages tunnel over libp2p', () => {
  const servers = new Map<string, PageServerAddress>()
  const results: PagesStreamResult[] = []
  let a: MscLibp2p, b: MscLibp2p
  let echo: net.Server
  let echoConnections = 0
  before(async () => {
    ({ a, b } = await pair(servers, results))
    // The "page server": echoes, honours backpressure (pipe), ends when the client ends.
    echo = net.createServer({ allowHalfOpen: true }, (s) => { echoConnections++; s.on('error', () => {}); s.pipe(s) })
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
    } finally { await tunnel.close() }
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
        s.on('data', (d: Buffer) => { received += d.byteLength; recv.update(d) })
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
    } finally { await tunnel.close() }
  })

  test('an unknown transferId is refused before the page server is touched', async () => {
    const before = echoConnections
    const errors: Error[] = []
    const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), 't-nope', { onError: (e) => errors.push(e) })
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
    } finally { await tunnel.close() }
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

  test('the page server closing ends the client; closing the tunnel ends both', async () => {
    const far: net.Socket[] = []
    const rude = net.createServer((s) => { far.push(s); s.on('error', () => {}); s.once('data', () => s.destroy()) })
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
