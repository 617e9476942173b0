/**
 * Goodput of msc's /msc/image/1.0.0 tree transfer (over libp2p, and over the sealed data
 * channel) against two baselines, measured side by side in one run on the same trees,
 * over 127.0.0.1 only:
 *
 *   raw-tcp      node:net socket, a minimal tree format (kind, path, size, bytes), no
 *                hashing, no checks; socket.write() + 'drain' backpressure.
 *   bare-libp2p  the same minimal format over one libp2p 3 stream (tcp + noise + yamux,
 *                nothing else on the hosts), with the backpressure recipe of
 *                /work/shared/notes/libp2p.md: send(), then wait for 'drain' while
 *                writeBufferLength > 4 MiB; the reader pauses/resumes the stream.
 *   msc          sendTree/receiveTree between two hosts from createLibp2pHost (tcp +
 *                noise + yamux + identify + ping + gossipsub, no pnet): framing,
 *                per-file SHA-256 on both sides, path checks, metadata and the commit.
 *   msc-sealed   the same sendTree/receiveTree over msc's sealed data channel (one TCP
 *                connection, AES-256-GCM records; src/protocols/sealed), as a
 *                migration's trees go; its time includes the TCP connect and hello.
 *
 * The receiver of every sample is a fresh child process (this file with --role=receiver),
 * so its peak RSS (getrusage maxrss) belongs to that one transfer; the sender is this
 * process. Every baseline receiver writes real files too. A sample's time runs from
 * just before the stream is opened (the connection is already up) until the sender
 * knows the receiver has every file written and closed (msc: the verdict, which comes
 * after the commit; baselines: a one-byte ack). After the clock stops, the receiver
 * hashes what it got and the sample only counts if it equals the source tree.
 *
 * Trees: one file of --big-mib MiB; --small-files files of --small-kib KiB in 20
 * directories. --runs rounds (default 3), methods in a rotated order each round;
 * medians reported, with the ratios msc/raw-tcp and msc/bare-libp2p.
 *
 *   node benchmarks/image-transfer.ts [--runs 3] [--big-mib 256] [--small-files 2000]
 *        [--small-kib 4] [--trees big,small] [--methods raw-tcp,bare-libp2p,msc,msc-sealed] [--no-warmup]
 *
 * Results: a table on stdout and benchmarks/results/image-transfer-<timestamp>.json.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import { constants as C } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import { loopbackHost } from '../test/helpers/loopback-host.ts'
import { IMAGE_PROTOCOL, receiveTree, sendTree } from '../src/protocols/image/index.ts'
import { dialSealed, listenSealed } from '../src/protocols/sealed/channel.ts'
import { MiB, log, machineInfo, median, parseFlags, ratio, round, table, writeResults } from './lib.ts'
import { plotAfterRun } from './plot.ts'

const SELF = fileURLToPath(import.meta.url)
const METHODS = ['raw-tcp', 'bare-libp2p', 'msc', 'msc-sealed'] as const
type Method = typeof METHODS[number]
const BARE_PROTOCOL = '/msc-bench/bare-tree/1.0.0'
/** Bytes per data write, as msc's DATA_CHUNK_BYTES. */
const CHUNK = 256 * 1024
/** Sender stops while more than this is queued (as msc's framing default). */
const WRITE_HIGH_WATER = 4 * MiB
/** Receiver pauses its source above this many unread bytes (as msc's framing default). */
const READ_HIGH_WATER = 8 * MiB
const SAMPLE_TIMEOUT_MS = 300_000

const USAGE = `usage: node benchmarks/image-transfer.ts [--runs N] [--big-mib N] [--small-files N] [--small-kib N]
       [--trees big,small] [--methods raw-tcp,bare-libp2p,msc,msc-sealed] [--no-warmup]
`

// ---------------------------------------------------------------------------------
// messages between the sender (parent) and a receiver (child)

type ToChild = { type: 'start'; method: Method; dest: string; secret: string }
type FromChild =
  | { type: 'ready'; addr: string; rssKiB: number }
  | { type: 'done'; files: number; bytes: number; digest: string; maxRssKiB: number; cpuMs: number }
  | { type: 'error'; message: string }

// ---------------------------------------------------------------------------------
// the minimal tree format of the baselines:
//   entry = kind u8 (1 dir, 2 file) | path length u16 | path utf-8 | (file) size u64 | bytes
//   end   = kind 0;   ack (receiver -> sender) = one byte 1

interface Walked {
  rel: string
  kind: 'dir' | 'file'
}

/** Pre-order walk, names sorted: the same order on both sides. */
async function* walk (root: string, rel = ''): AsyncGenerator<Walked> {
  const ents = await fs.readdir(rel === '' ? root : path.join(root, rel), { withFileTypes: true })
  ents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  for (const e of ents) {
    const r = rel === '' ? e.name : `${rel}/${e.name}`
    if (e.isDirectory()) {
      yield { rel: r, kind: 'dir' }
      yield* walk(root, r)
    } else if (e.isFile()) yield { rel: r, kind: 'file' }
  }
}

function entryHeader (kind: number, rel: string, size: number | null, extra = 0): { buf: Uint8Array; at: number } {
  const p = Buffer.from(rel)
  const len = 3 + p.length + (size == null ? 0 : 8)
  const buf = Buffer.allocUnsafe(len + extra)
  buf[0] = kind
  buf.writeUInt16BE(p.length, 1)
  p.copy(buf, 3)
  if (size != null) buf.writeBigUInt64BE(BigInt(size), 3 + p.length)
  return { buf, at: len }
}

/** Sends the tree in the minimal format; `write` applies the transport's backpressure. */
async function writeBaselineTree (root: string, write: (b: Uint8Array) => Promise<void>): Promise<void> {
  for await (const e of walk(root)) {
    if (e.kind === 'dir') {
      await write(entryHeader(1, e.rel, null).buf)
      continue
    }
    const fh = await fs.open(path.join(root, e.rel), C.O_RDONLY)
    try {
      const size = (await fh.stat()).size
      if (size <= 64 * 1024) {
        // Small file: header and content in one buffer, one write.
        const { buf, at } = entryHeader(2, e.rel, size, size)
        let off = 0
        while (off < size) {
          const { bytesRead } = await fh.read(buf, at + off, size - off, off)
          if (bytesRead === 0) throw new Error(`${e.rel} shrank`)
          off += bytesRead
        }
        await write(buf)
        continue
      }
      await write(entryHeader(2, e.rel, size).buf)
      for (let off = 0; off < size;) {
        // A fresh buffer per chunk: the transports queue references.
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - off))
        const { bytesRead } = await fh.read(buf, 0, buf.length, off)
        if (bytesRead === 0) throw new Error(`${e.rel} shrank`)
        await write(buf.subarray(0, bytesRead))
        off += bytesRead
      }
    } finally {
      await fh.close()
    }
  }
  await write(Uint8Array.of(0))
}

/** Unread input with pause/resume around a high-water mark; async exact/partial reads. */
class Reader {
  private chunks: Uint8Array[] = []
  private head = 0
  private buffered = 0
  private ended = false
  private error: Error | undefined
  private wake: (() => void) | undefined
  private paused = false
  private resuming = false
  private readonly pauseSource: () => void
  private readonly resumeSource: () => void

  constructor (pause: () => void, resume: () => void) {
    this.pauseSource = pause
    this.resumeSource = resume
  }

  push (c: Uint8Array): void {
    if (c.byteLength === 0) return
    this.chunks.push(c)
    this.buffered += c.byteLength
    // Not from inside resumeSource(): libp2p delivers paused data synchronously there
    // and a pause() in between would be overwritten (see src/protocols/framing.ts).
    if (!this.resuming) this.maybePause()
    this.notify()
  }

  end (err?: Error): void {
    this.ended = true
    this.error ??= err
    this.notify()
  }

  async exact (n: number): Promise<Uint8Array> {
    await this.need(n)
    const first = this.chunks[0]!
    let out: Uint8Array
    if (first.byteLength - this.head >= n) {
      out = first.subarray(this.head, this.head + n)
      this.consume(n)
    } else {
      out = new Uint8Array(n)
      let filled = 0
      while (filled < n) {
        const c = this.chunks[0]!
        const k = Math.min(n - filled, c.byteLength - this.head)
        out.set(c.subarray(this.head, this.head + k), filled)
        filled += k
        this.consume(k)
      }
    }
    return out
  }

  /** Up to `max` bytes, at least one, without copying. */
  async some (max: number): Promise<Uint8Array> {
    await this.need(1)
    const first = this.chunks[0]!
    const k = Math.min(max, first.byteLength - this.head)
    const out = first.subarray(this.head, this.head + k)
    this.consume(k)
    return out
  }

  private consume (k: number): void {
    this.head += k
    this.buffered -= k
    if (this.head === this.chunks[0]!.byteLength) {
      this.chunks.shift()
      this.head = 0
    }
    this.maybeResume()
  }

  private async need (n: number): Promise<void> {
    while (this.buffered < n) {
      if (this.error != null) throw this.error
      if (this.ended) throw new Error('the stream ended early')
      this.maybeResume()
      await new Promise<void>((resolve) => {
        this.wake = resolve
      })
    }
  }

  private notify (): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  private maybePause (): void {
    if (this.paused || this.buffered <= READ_HIGH_WATER) return
    this.paused = true
    try {
      this.pauseSource()
    } catch {}
  }

  private maybeResume (): void {
    if (!this.paused || this.buffered >= READ_HIGH_WATER / 2) return
    this.paused = false
    this.resuming = true
    try {
      this.resumeSource()
    } catch {
    } finally {
      this.resuming = false
    }
    this.maybePause()
  }
}

/** Receives the minimal format into `dest` (created here); returns the file count and bytes. */
async function readBaselineTree (r: Reader, dest: string): Promise<{ files: number; bytes: number }> {
  await fs.mkdir(dest)
  let files = 0
  let bytes = 0
  for (;;) {
    const kind = (await r.exact(1))[0]
    if (kind === 0) return { files, bytes }
    const h = await r.exact(2)
    const plen = (h[0]! << 8) | h[1]!
    const rel = Buffer.from(await r.exact(plen)).toString('utf8')
    const p = path.join(dest, rel)
    files++
    if (kind === 1) {
      await fs.mkdir(p)
      continue
    }
    if (kind !== 2) throw new Error(`bad entry kind ${kind}`)
    const s = await r.exact(8)
    const size = Number(Buffer.from(s.buffer, s.byteOffset, 8).readBigUInt64BE(0))
    const fh = await fs.open(p, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o644)
    try {
      for (let left = size; left > 0;) {
        const c = await r.some(left)
        for (let off = 0; off < c.byteLength;) off += (await fh.write(c, off, c.byteLength - off)).bytesWritten
        left -= c.byteLength
      }
    } finally {
      await fh.close()
    }
    bytes += size
  }
}

// ---------------------------------------------------------------------------------
// libp2p stream helpers (the recipe of libp2p.md)

function pushStreamData (data: Uint8Array | Iterable<Uint8Array>, to: (c: Uint8Array) => void): void {
  if (data instanceof Uint8Array) to(data)
  else for (const c of data) to(c)
}

async function waitEvent (target: EventTarget, ok: string, fail: string, timeoutMs: number): Promise<void> {
  let onOk = (): void => {}
  let onFail = (): void => {}
  let timer: NodeJS.Timeout | undefined
  try {
    await new Promise<void>((resolve, reject) => {
      onOk = () => resolve()
      onFail = () => reject(new Error(`stream ${fail} while waiting for ${ok}`))
      target.addEventListener(ok, onOk)
      target.addEventListener(fail, onFail)
      timer = setTimeout(() => reject(new Error(`no ${ok} for ${timeoutMs} ms`)), timeoutMs)
    })
  } finally {
    clearTimeout(timer)
    target.removeEventListener(ok, onOk)
    target.removeEventListener(fail, onFail)
  }
}

async function bareSend (stream: Stream, b: Uint8Array): Promise<void> {
  stream.send(b)
  while (stream.writeBufferLength > WRITE_HIGH_WATER) {
    if (stream.status !== 'open') throw new Error(`stream ${stream.status} while writing`)
    await waitEvent(stream as unknown as EventTarget, 'drain', 'close', 30_000)
  }
}

function streamReader (stream: Stream): Reader {
  // Paused data accumulates up to the peer's yamux window (16 MiB): the stream would
  // reset itself at its default 4 MiB limit (msc's framing raises it the same way).
  stream.maxReadBufferLength = 32 * MiB
  const r = new Reader(() => stream.pause(), () => stream.resume())
  stream.addEventListener('message', (evt) => pushStreamData(evt.data as Uint8Array | Iterable<Uint8Array>, (c) => r.push(c)))
  stream.addEventListener('end', () => r.end())
  stream.addEventListener('close', (evt) => r.end(evt.error))
  return r
}

async function bareNode (): Promise<Libp2p> {
  const node = await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()]
  })
  await node.start()
  return node
}

// ---------------------------------------------------------------------------------
// receiver (child process)

async function receiverMain (): Promise<void> {
  const send = (m: FromChild): Promise<void> =>
    new Promise((resolve) => {
      process.send!(m, () => resolve())
    })
  const [msg] = await once(process, 'message') as [ToChild]
  const tree = path.join(msg.dest, 'tree')
  let stop: () => Promise<void> = async () => {}
  try {
    const done = Promise.withResolvers<{ files: number; bytes: number }>()
    let addr: string
    if (msg.method === 'raw-tcp') {
      const server = net.createServer((sock) => {
        const r = new Reader(() => sock.pause(), () => sock.resume())
        sock.on('data', (c: Buffer) => r.push(c))
        sock.on('end', () => r.end())
        sock.on('error', (err) => r.end(err))
        readBaselineTree(r, tree).then((got) => {
          sock.end(Uint8Array.of(1))
          done.resolve(got)
        }, (err) => {
          sock.destroy()
          done.reject(err)
        })
      })
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      addr = String((server.address() as net.AddressInfo).port)
      stop = async () => {
        server.close()
      }
    } else if (msg.method === 'msc-sealed') {
      const tmpRoot = path.join(msg.dest, 'tmp')
      await fs.mkdir(tmpRoot)
      const l = await listenSealed({
        host: '127.0.0.1',
        secret: Buffer.from(msg.secret, 'base64'),
        onStream: (s) => {
          receiveTree(s, { tmpRoot, destDir: tree, mode: 'replace', idleTimeoutMs: 30_000, limits: { maxTotalBytes: 1024 ** 4, maxFileBytes: 1024 ** 4, maxFiles: 10_000_000 } })
            .then((r) => done.resolve({ files: r.files, bytes: r.bytes }), (err: Error) => done.reject(err))
        },
        onRefused: (reason) => done.reject(new Error(`sealed channel refused the sender: ${reason}`))
      })
      addr = String(l.port)
      stop = async () => {
        l.close()
      }
    } else if (msg.method === 'bare-libp2p') {
      const node = await bareNode()
      await node.handle(BARE_PROTOCOL, (stream) => {
        const r = streamReader(stream)
        readBaselineTree(r, tree).then(async (got) => {
          stream.send(Uint8Array.of(1))
          await stream.close()
          done.resolve(got)
        }, (err) => {
          stream.abort(err as Error)
          done.reject(err)
        })
      })
      addr = node.getMultiaddrs()[0]!.toString()
      stop = async () => {
        await node.stop()
      }
    } else {
      const node = await loopbackHost()
      const tmpRoot = path.join(msg.dest, 'tmp')
      await fs.mkdir(tmpRoot)
      await node.handle(IMAGE_PROTOCOL, async (stream) => {
        try {
          const r = await receiveTree(stream, {
            tmpRoot,
            destDir: tree,
            mode: 'replace',
            idleTimeoutMs: 30_000,
            limits: { maxTotalBytes: 1024 ** 4, maxFileBytes: 1024 ** 4, maxFiles: 10_000_000 }
          })
          done.resolve({ files: r.files, bytes: r.bytes })
        } catch (err) {
          done.reject(err)
        }
      })
      addr = node.getMultiaddrs()[0]!.toString()
      stop = async () => {
        await node.stop()
      }
    }
    const cpu0 = process.cpuUsage()
    await send({ type: 'ready', addr, rssKiB: Math.round(process.memoryUsage().rss / 1024) })
    const got = await done.promise
    const cpu = process.cpuUsage(cpu0)
    const maxRssKiB = process.resourceUsage().maxRSS
    // Outside the timed part: what arrived must be the source tree.
    const digest = await treeDigest(tree)
    await send({ type: 'done', files: got.files, bytes: got.bytes, digest, maxRssKiB, cpuMs: Math.round((cpu.user + cpu.system) / 1000) })
  } catch (err) {
    await send({ type: 'error', message: (err as Error).stack ?? String(err) })
    process.exitCode = 1
  } finally {
    await stop().catch(() => {})
    process.disconnect()
    process.exit()
  }
}

// ---------------------------------------------------------------------------------
// sender (this process)

/** Sends `src` to the receiver at `addr`; returns the milliseconds from opening the stream to the receiver's answer. */
async function sendWith (method: Method, addr: string, src: string, label: string, secret: Uint8Array): Promise<number> {
  if (method === 'raw-tcp') {
    const sock = net.connect(Number(addr), '127.0.0.1')
    try {
      await once(sock, 'connect')
      sock.setNoDelay(true)
      const ack = once(sock, 'data')
      ack.catch(() => {})
      const t0 = performance.now()
      await writeBaselineTree(src, async (b) => {
        if (!sock.write(b)) await once(sock, 'drain')
      })
      const [a] = await ack as [Buffer]
      const ms = performance.now() - t0
      if (a[0] !== 1) throw new Error('bad ack')
      return ms
    } finally {
      sock.destroy()
    }
  }
  if (method === 'msc-sealed') {
    const signal = AbortSignal.timeout(SAMPLE_TIMEOUT_MS)
    const t0 = performance.now()
    const stream = await dialSealed('127.0.0.1', Number(addr), secret, signal)
    await sendTree(stream, src, { transferId: `bench-${crypto.randomBytes(4).toString('hex')}`, label, signal })
    return performance.now() - t0
  }
  const ma = multiaddr(addr)
  if (method === 'bare-libp2p') {
    const node = await bareNode()
    try {
      await node.dial(ma)
      const t0 = performance.now()
      const stream = await node.dialProtocol(ma, BARE_PROTOCOL)
      const r = streamReader(stream)
      await writeBaselineTree(src, async (b) => {
        await bareSend(stream, b)
      })
      const a = await r.exact(1)
      const ms = performance.now() - t0
      if (a[0] !== 1) throw new Error('bad ack')
      await stream.close().catch(() => {})
      return ms
    } finally {
      await node.stop()
    }
  }
  const node = await loopbackHost()
  try {
    await node.dial(ma)
    const signal = AbortSignal.timeout(SAMPLE_TIMEOUT_MS)
    const t0 = performance.now()
    const stream = await node.dialProtocol(ma, IMAGE_PROTOCOL, { signal })
    await sendTree(stream, src, { transferId: `bench-${crypto.randomBytes(4).toString('hex')}`, label, signal })
    return performance.now() - t0
  } finally {
    await node.stop()
  }
}

interface Sample {
  tree: string
  method: Method
  round: number
  ms: number
  MBps: number
  filesPerS: number
  receiverRssReadyMiB: number
  receiverRssPeakMiB: number
  senderCpuMs: number
  receiverCpuMs: number
}

interface Tree {
  name: string
  dir: string
  files: number
  bytes: number
  digest: string
  describe: string
}

const children = new Set<ChildProcess>()

async function measure (tree: Tree, method: Method, round: number, sandbox: string): Promise<Sample> {
  const dest = await fs.mkdtemp(path.join(sandbox, `recv-${method}-`))
  const child = fork(SELF, ['--role=receiver'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(child)
  const exited = once(child, 'exit')
  exited.catch(() => {})
  const inbox: FromChild[] = []
  let wake: (() => void) | undefined
  child.on('message', (m: FromChild) => {
    inbox.push(m)
    wake?.()
  })
  const next = async (what: string, timeoutMs: number): Promise<FromChild> => {
    const deadline = Date.now() + timeoutMs
    while (inbox.length === 0) {
      if (child.exitCode != null || child.signalCode != null) throw new Error(`receiver exited (${child.exitCode ?? child.signalCode}) before ${what}`)
      if (Date.now() > deadline) throw new Error(`no ${what} from the receiver within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        wake = resolve
        setTimeout(resolve, 250)
      })
    }
    const m = inbox.shift()!
    if (m.type === 'error') throw new Error(`receiver failed: ${m.message}`)
    return m
  }
  try {
    // The sealed channel's secret; in a migration it travels over the control stream.
    const secret = crypto.randomBytes(32)
    child.send({ type: 'start', method, dest, secret: secret.toString('base64') } satisfies ToChild)
    const ready = await next('ready', 60_000)
    if (ready.type !== 'ready') throw new Error(`unexpected ${ready.type}`)
    const cpu0 = process.cpuUsage()
    // A receiver that dies, or a transfer that hangs, fails the sample instead of the sender waiting forever.
    let timer: NodeJS.Timeout | undefined
    const failed = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${method}: no answer within ${SAMPLE_TIMEOUT_MS} ms`)), SAMPLE_TIMEOUT_MS)
      exited.then(([code, sig]) => {
        if (code !== 0) reject(new Error(`${method}: the receiver exited (${code ?? sig}) during the transfer: ${inbox.map((m) => m.type === 'error' ? m.message : '').join('')}`))
      }, () => {})
    })
    failed.catch(() => {})
    const ms = await Promise.race([sendWith(method, ready.addr, tree.dir, tree.name, secret), failed]).finally(() => clearTimeout(timer))
    const cpu = process.cpuUsage(cpu0)
    const done = await next('done', SAMPLE_TIMEOUT_MS)
    if (done.type !== 'done') throw new Error(`unexpected ${done.type}`)
    if (done.digest !== tree.digest || done.bytes !== tree.bytes) {
      throw new Error(`${method}: the received tree differs from the source (${done.bytes} of ${tree.bytes} bytes, digest ${done.digest} vs ${tree.digest})`)
    }
    await exited
    return {
      tree: tree.name,
      method,
      round,
      ms: round1(ms),
      MBps: round1(tree.bytes / 1e6 / (ms / 1000)),
      filesPerS: Math.round(tree.files / (ms / 1000)),
      receiverRssReadyMiB: round1(ready.rssKiB / 1024),
      receiverRssPeakMiB: round1(done.maxRssKiB / 1024),
      senderCpuMs: Math.round((cpu.user + cpu.system) / 1000),
      receiverCpuMs: done.cpuMs
    }
  } finally {
    if (child.exitCode == null && child.signalCode == null) {
      child.kill('SIGKILL')
      await exited
    }
    children.delete(child)
    await fs.rm(dest, { recursive: true, force: true })
  }
}

function round1 (x: number): number {
  return round(x, 1)
}

async function writeRandom (file: string, bytes: number): Promise<void> {
  const fh = await fs.open(file, 'w')
  try {
    for (let off = 0; off < bytes; off += 4 * MiB) await fh.write(crypto.randomBytes(Math.min(4 * MiB, bytes - off)))
  } finally {
    await fh.close()
  }
}

/** SHA-256 over every entry (kind, path, size) and every file's bytes, in walk order. */
async function treeDigest (root: string): Promise<string> {
  const h = crypto.createHash('sha256')
  const buf = Buffer.allocUnsafe(MiB)
  for await (const e of walk(root)) {
    if (e.kind === 'dir') {
      h.update(`d ${e.rel}\n`)
      continue
    }
    const fh = await fs.open(path.join(root, e.rel), 'r')
    try {
      const size = (await fh.stat()).size
      h.update(`f ${e.rel} ${size}\n`)
      for (let off = 0; off < size;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, off)
        if (bytesRead === 0) break
        h.update(buf.subarray(0, bytesRead))
        off += bytesRead
      }
    } finally {
      await fh.close()
    }
  }
  return h.digest('hex')
}

async function makeTrees (sandbox: string, o: { bigMib: number; smallFiles: number; smallKib: number }, which: string[]): Promise<Tree[]> {
  const trees: Tree[] = []
  for (const name of which) {
    const dir = path.join(sandbox, `src-${name}`)
    await fs.mkdir(dir)
    let files = 0
    let bytes = 0
    let describe: string
    if (name === 'big') {
      await writeRandom(path.join(dir, 'big.bin'), o.bigMib * MiB)
      files = 1
      bytes = o.bigMib * MiB
      describe = `1 file of ${o.bigMib} MiB`
    } else if (name === 'small') {
      const dirs = 20
      for (let d = 0; d < dirs; d++) await fs.mkdir(path.join(dir, `d${String(d).padStart(2, '0')}`))
      for (let i = 0; i < o.smallFiles; i++) {
        const d = `d${String(i % dirs).padStart(2, '0')}`
        await fs.writeFile(path.join(dir, d, `f${String(i).padStart(5, '0')}`), crypto.randomBytes(o.smallKib * 1024))
      }
      files = o.smallFiles + dirs
      bytes = o.smallFiles * o.smallKib * 1024
      describe = `${o.smallFiles} files of ${o.smallKib} KiB in ${dirs} dirs`
    } else {
      throw new Error(`unknown tree ${name} (big, small)`)
    }
    trees.push({ name, dir, files, bytes, digest: await treeDigest(dir), describe })
  }
  return trees
}

async function main (): Promise<void> {
  const o = parseFlags(process.argv.slice(2), {
    runs: 3,
    bigMib: 256,
    smallFiles: 2000,
    smallKib: 4,
    trees: 'big,small',
    methods: METHODS.join(','),
    warmup: true
  }, USAGE)
  const methods = o.methods.split(',').map((m) => m.trim()) as Method[]
  for (const m of methods) if (!METHODS.includes(m)) throw new Error(`unknown method ${m} (${METHODS.join(', ')})`)
  const machine = machineInfo()
  const sandbox = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-bench-image-'))
  const cleanup = async (): Promise<void> => {
    for (const c of children) c.kill('SIGKILL')
    await fs.rm(sandbox, { recursive: true, force: true })
  }
  const onSignal = (sig: string): void => {
    log(`${sig}: cleaning up`)
    cleanup().finally(() => process.exit(130))
  }
  // on, not once: execa's signal-exit re-raises the signal (killing us mid-cleanup) when it is the only listener left.
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    log(`making trees in ${sandbox}`)
    const trees = await makeTrees(sandbox, o, o.trees.split(',').map((t) => t.trim()))
    if (o.warmup) {
      // JIT and page cache: one unrecorded transfer per method of the smallest tree.
      const small = [...trees].sort((a, b) => a.bytes - b.bytes)[0]!
      for (const m of methods) await measure(small, m, 0, sandbox)
    }
    const samples: Sample[] = []
    for (let r = 1; r <= o.runs; r++) {
      for (const t of trees) {
        // Rotated order per round, so no method always runs first (or last) on a drifting machine.
        const order = methods.map((_, i) => methods[(i + r - 1) % methods.length]!)
        for (const m of order) {
          const s = await measure(t, m, r, sandbox)
          samples.push(s)
          log(`round ${r}/${o.runs} ${t.name} ${m}: ${s.MBps} MB/s, ${s.ms} ms, receiver peak RSS ${s.receiverRssPeakMiB} MiB`)
        }
      }
    }
    machine.loadEnd = os.loadavg().map((x) => round(x, 2))

    const summary = trees.flatMap((t) =>
      methods.map((m) => {
        const ss = samples.filter((s) => s.tree === t.name && s.method === m)
        const med = (k: keyof Sample): number => median(ss.map((s) => s[k] as number))
        return {
          tree: t.name,
          method: m,
          runs: ss.length,
          MBps: round1(med('MBps')),
          MBpsMin: round1(Math.min(...ss.map((s) => s.MBps))),
          MBpsMax: round1(Math.max(...ss.map((s) => s.MBps))),
          ms: round1(med('ms')),
          filesPerS: Math.round(med('filesPerS')),
          receiverRssReadyMiB: round1(med('receiverRssReadyMiB')),
          receiverRssPeakMiB: round1(med('receiverRssPeakMiB')),
          senderCpuMs: Math.round(med('senderCpuMs')),
          receiverCpuMs: Math.round(med('receiverCpuMs'))
        }
      })
    )
    const get = (t: string, m: Method): typeof summary[number] | undefined => summary.find((s) => s.tree === t && s.method === m)
    const ratios = trees.map((t) => ({
      tree: t.name,
      'msc/raw-tcp': ratio(get(t.name, 'msc')?.MBps, get(t.name, 'raw-tcp')?.MBps),
      'msc/bare-libp2p': ratio(get(t.name, 'msc')?.MBps, get(t.name, 'bare-libp2p')?.MBps),
      'msc-sealed/raw-tcp': ratio(get(t.name, 'msc-sealed')?.MBps, get(t.name, 'raw-tcp')?.MBps),
      'msc-sealed/msc': ratio(get(t.name, 'msc-sealed')?.MBps, get(t.name, 'msc')?.MBps),
      'bare-libp2p/raw-tcp': ratio(get(t.name, 'bare-libp2p')?.MBps, get(t.name, 'raw-tcp')?.MBps),
      'peak RSS msc/bare-libp2p': ratio(get(t.name, 'msc')?.receiverRssPeakMiB, get(t.name, 'bare-libp2p')?.receiverRssPeakMiB),
      'peak RSS msc/raw-tcp': ratio(get(t.name, 'msc')?.receiverRssPeakMiB, get(t.name, 'raw-tcp')?.receiverRssPeakMiB)
    }))

    const file = await writeResults('image-transfer', {
      benchmark: 'image-transfer',
      machine,
      options: o,
      trees: trees.map((t) => ({ name: t.name, describe: t.describe, entries: t.files, bytes: t.bytes })),
      ratios,
      summary,
      samples
    })
    process.stdout.write(`\nimage transfer over 127.0.0.1, medians of ${o.runs} rounds (${machine.cpus} cpus, load ${machine.loadStart.join('/')} -> ${machine.loadEnd.join('/')})\n`)
    for (const t of trees) process.stdout.write(`  ${t.name}: ${t.describe} (${round1(t.bytes / 1e6)} MB)\n`)
    process.stdout.write('\nratios (goodput; > 1 means msc is faster):\n')
    process.stdout.write(table(ratios))
    process.stdout.write('\nper method:\n')
    process.stdout.write(table(summary.map((s) => ({
      tree: s.tree,
      method: s.method,
      'MB/s': s.MBps,
      'min-max': `${s.MBpsMin}-${s.MBpsMax}`,
      ms: s.ms,
      // Files per second only says something for the many-files tree.
      'files/s': (trees.find((t) => t.name === s.tree)?.files ?? 0) >= 100 ? s.filesPerS : null,
      'rx RSS ready MiB': s.receiverRssReadyMiB,
      'rx RSS peak MiB': s.receiverRssPeakMiB,
      'tx cpu ms': s.senderCpuMs,
      'rx cpu ms': s.receiverCpuMs
    }))))
    process.stdout.write(`\nresults: ${file}\n`)
    await plotAfterRun(file)
  } finally {
    await cleanup()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

if (process.argv.includes('--role=receiver')) {
  await receiverMain()
} else {
  try {
    await main()
  } catch (err) {
    process.stderr.write(`image-transfer benchmark failed: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
}
