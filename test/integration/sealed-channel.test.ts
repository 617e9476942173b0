/**
 * The sealed data channel over real TCP on 127.0.0.1: a tree crosses it with the image
 * protocol unchanged, and every connection that does not hold the secret (a wrong key,
 * garbage, silence, a flood) is closed before a handler sees it; a record altered on
 * the way or a connection cut short is an error, never data.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { dialSealed, listenSealed, type SealedListener } from '../../src/protocols/sealed/channel.ts'
import { SALT_BYTES, SealedStream } from '../../src/protocols/sealed/sealed-stream.ts'
import { receiveTree, sendTree, treeManifest } from '../../src/protocols/image/index.ts'

const MiB = 1024 * 1024
const LIMITS = { maxTotalBytes: 256 * MiB, maxFileBytes: 256 * MiB, maxFiles: 1000 }

let sandbox: string
before(async () => {
  sandbox = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-sealed-test-'))
})
after(async () => {
  await fs.rm(sandbox, { recursive: true, force: true })
})

interface Harness {
  listener: SealedListener
  streams: SealedStream[]
  refused: string[]
  next: () => Promise<SealedStream>
}

async function harness (secret: Uint8Array, opts: { helloTimeoutMs?: number; maxPending?: number } = {}): Promise<Harness> {
  const streams: SealedStream[] = []
  const refused: string[] = []
  const waiting: Array<(s: SealedStream) => void> = []
  const listener = await listenSealed({
    host: '127.0.0.1',
    secret,
    ...opts,
    onStream: (s) => {
      streams.push(s)
      waiting.shift()?.(s)
    },
    onRefused: (reason) => refused.push(reason)
  })
  return { listener, streams, refused, next: async () => await new Promise((resolve) => waiting.push(resolve)) }
}

async function until (cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Relative path -> SHA-256 of every file (or the kind of any other entry). */
async function digests (dir: string): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = []
  for (const [rel, e] of await treeManifest(dir)) {
    out.push([rel, e.kind === 'file' ? crypto.createHash('sha256').update(await fs.readFile(path.join(dir, rel))).digest('hex') : e.kind])
  }
  return out.sort((x, y) => x[0].localeCompare(y[0]))
}

async function rawConnect (port: number): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port })
  await once(s, 'connect')
  s.on('error', () => {})
  return s
}

describe('sealed data channel', () => {
  test('a tree of many files and a 24 MiB file crosses intact, with the image protocol unchanged', async () => {
    const src = path.join(sandbox, 'src')
    await fs.mkdir(path.join(src, 'd'), { recursive: true })
    await fs.writeFile(path.join(src, 'big.img'), crypto.randomBytes(24 * MiB))
    for (let i = 0; i < 40; i++) await fs.writeFile(path.join(src, 'd', `f${i}`), crypto.randomBytes(1 + i * 97))
    const secret = crypto.randomBytes(32)
    const h = await harness(secret)
    const tmpRoot = path.join(sandbox, 'tmp')
    await fs.mkdir(tmpRoot, { recursive: true })
    const dest = path.join(sandbox, 'dest')
    try {
      const got = h.next().then(async (s) => await receiveTree(s, { tmpRoot, destDir: dest, mode: 'replace', limits: LIMITS, idleTimeoutMs: 10_000 }))
      const stream = await dialSealed('127.0.0.1', h.listener.port, secret, AbortSignal.timeout(30_000))
      const sent = await sendTree(stream, src, { transferId: 'sealed-1', label: 'images', signal: AbortSignal.timeout(60_000) })
      const r = await got
      assert.equal(r.files, sent.files)
      assert.deepEqual(await digests(dest), await digests(src), 'every file arrived, byte for byte')
      assert.deepEqual(h.refused, [])
    } finally {
      h.listener.close()
    }
  })

  test('data that arrives with the hello, before the handler listens, is handed to it whole', async () => {
    const secret = crypto.randomBytes(32)
    const h = await harness(secret)
    try {
      const payload = crypto.randomBytes(300_000)
      const receiving = h.next().then(async (s) => {
        // The handler attaches late (as receiveTree does, a few microtasks after the
        // hello): everything that came meanwhile must still reach it, then the end.
        await new Promise((resolve) => setTimeout(resolve, 100))
        const got: Buffer[] = []
        s.addEventListener('message', (e) => got.push(Buffer.from((e as unknown as { data: Uint8Array }).data)))
        if (!s.readableEnded) await once(s, 'end')
        return Buffer.concat(got)
      })
      const socket = net.connect({ host: '127.0.0.1', port: h.listener.port, allowHalfOpen: true })
      await once(socket, 'connect')
      const salt = crypto.randomBytes(SALT_BYTES)
      // Salt, hello, data and end in one write: one TCP read on the other side.
      socket.cork()
      socket.write(salt)
      const s = new SealedStream(socket, secret, salt, 'dialer')
      s.sendHello()
      s.send(payload)
      const closing = s.close()
      socket.uncork()
      await closing
      assert.ok((await receiving).equals(payload), 'every byte, in order')
      s.abort(new Error('done'))
    } finally {
      h.listener.close()
    }
  })

  test('a dialer with another secret is refused before any handler sees it', async () => {
    const h = await harness(crypto.randomBytes(32))
    try {
      const stream = await dialSealed('127.0.0.1', h.listener.port, crypto.randomBytes(32), AbortSignal.timeout(5_000))
      const closed = once(stream, 'close')
      await until(() => h.refused.length === 1)
      assert.match(h.refused[0]!, /failed authentication/)
      await closed
      assert.equal(h.streams.length, 0)
    } finally {
      h.listener.close()
    }
  })

  test('garbage, silence and a flood of connections are closed; none reaches a handler', async () => {
    const h = await harness(crypto.randomBytes(32), { helloTimeoutMs: 300, maxPending: 2 })
    try {
      const garbage = await rawConnect(h.listener.port)
      const len = Buffer.alloc(4)
      len.writeUInt32BE(64)
      garbage.write(Buffer.concat([crypto.randomBytes(SALT_BYTES), len, crypto.randomBytes(64)]))
      await once(garbage, 'close')
      // A length field over the record limit is refused without waiting for the bytes.
      const huge = await rawConnect(h.listener.port)
      huge.write(Buffer.concat([crypto.randomBytes(SALT_BYTES), Buffer.from([0xff, 0xff, 0xff, 0xff])]))
      await once(huge, 'close')
      const silent = [await rawConnect(h.listener.port), await rawConnect(h.listener.port)]
      const third = await rawConnect(h.listener.port) // over maxPending: closed at once
      await once(third, 'close')
      await Promise.all(silent.map(async (s) => await once(s, 'close'))) // after the hello timeout
      assert.equal(h.streams.length, 0)
      assert.ok(h.refused.some((r) => /failed authentication/.test(r)), h.refused.join('; '))
      assert.ok(h.refused.some((r) => /record of 4294967295 bytes/.test(r)), h.refused.join('; '))
      assert.ok(h.refused.some((r) => /more than 2 connections/.test(r)), h.refused.join('; '))
      assert.ok(h.refused.some((r) => /no authenticated hello within 300 ms/.test(r)), h.refused.join('; '))
    } finally {
      h.listener.close()
    }
  })

  test('a byte altered on the way ends the stream with an error, and no altered data is delivered', async () => {
    const secret = crypto.randomBytes(32)
    const h = await harness(secret)
    // A relay that flips one byte deep inside the data.
    let seen = 0
    const relay = net.createServer({ allowHalfOpen: true }, (inbound) => {
      const out = net.connect({ host: '127.0.0.1', port: h.listener.port, allowHalfOpen: true })
      out.on('error', () => inbound.destroy())
      inbound.on('error', () => out.destroy())
      inbound.on('data', (d: Buffer) => {
        const at = 200_000 - seen
        seen += d.byteLength
        if (at >= 0 && at < d.byteLength) d[at] = d[at]! ^ 0x01
        out.write(d)
      })
      out.on('data', (d: Buffer) => inbound.write(d))
      inbound.on('end', () => out.end())
      out.on('close', () => inbound.destroy())
    })
    relay.listen(0, '127.0.0.1')
    await once(relay, 'listening')
    try {
      const payload = crypto.randomBytes(1 * MiB)
      const got: Buffer[] = []
      const receiving = h.next().then(async (s) => {
        s.addEventListener('message', (e) => got.push(Buffer.from((e as unknown as { data: Uint8Array }).data)))
        const [evt] = await once(s, 'close') as [{ error?: Error }]
        return evt.error
      })
      const stream = await dialSealed('127.0.0.1', (relay.address() as net.AddressInfo).port, secret, AbortSignal.timeout(5_000))
      stream.send(payload)
      const err = await receiving
      assert.match(String(err?.message), /failed authentication/)
      const delivered = Buffer.concat(got)
      assert.ok(delivered.byteLength < 200_000, `only the records before the altered one: ${delivered.byteLength} bytes`)
      assert.ok(delivered.equals(payload.subarray(0, delivered.byteLength)), 'what was delivered is exactly what was sent')
    } finally {
      relay.close()
      h.listener.close()
    }
  })

  test('a connection cut without an authenticated end is an error, not an end', async () => {
    const secret = crypto.randomBytes(32)
    const h = await harness(secret)
    try {
      const receiving = h.next().then(async (s) => {
        let ended = false
        s.addEventListener('end', () => {
          ended = true
        })
        const [evt] = await once(s, 'close') as [{ error?: Error }]
        return { ended, err: evt.error }
      })
      // A dialer whose TCP end comes without the sealed END record (as a cut would).
      const socket = net.connect({ host: '127.0.0.1', port: h.listener.port, allowHalfOpen: true })
      await once(socket, 'connect')
      const salt = crypto.randomBytes(SALT_BYTES)
      socket.write(salt)
      const s = new SealedStream(socket, secret, salt, 'dialer')
      s.sendHello()
      s.send(Buffer.from('partial'))
      socket.end()
      const r = await receiving
      assert.equal(r.ended, false)
      assert.match(String(r.err?.message), /without an authenticated end/)
    } finally {
      h.listener.close()
    }
  })
})
