/**
 * FramedStream over an in-memory stream pair (@libp2p/utils streamPair): round trips,
 * ordering of batched small frames among large ones, the clean end, the frame size
 * limit, truncation, the idle timeout, schema validation and abort signals.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { streamPair } from '@libp2p/utils'
import { z } from 'zod'
import { FramedStream, ProtocolError } from '../../src/protocols/framing.ts'

async function pair (o: ConstructorParameters<typeof FramedStream>[1] = {}): Promise<[FramedStream, FramedStream]> {
  const [a, b] = await streamPair()
  return [new FramedStream(a, o), new FramedStream(b, o)]
}

const isReason = (reason: string) => (err: unknown) => err instanceof ProtocolError && err.reason === reason

describe('FramedStream', () => {
  test('frames arrive in order, small ones batched between large ones; then null at the end', async () => {
    const [a, b] = await pair()
    const sent: Array<{ type: number; payload: Uint8Array }> = []
    for (let i = 0; i < 300; i++) {
      const size = i % 50 === 0 ? 300_000 : i % 7
      sent.push({ type: i % 256, payload: crypto.randomBytes(size) })
    }
    const writing = (async () => {
      for (const f of sent) await a.writeFrame(f.type, f.payload)
      await a.closeWrite()
    })()
    for (const want of sent) {
      const got = await b.readFrame()
      assert.ok(got != null)
      assert.equal(got.type, want.type)
      assert.deepEqual(Buffer.from(got.payload), Buffer.from(want.payload))
    }
    assert.equal(await b.readFrame(), null)
    await writing
  })

  test('frames split into pieces of any size (1 byte, mixed with large ones) reassemble', async () => {
    const [a, b] = await pair()
    const frames = [crypto.randomBytes(10_000), crypto.randomBytes(3), crypto.randomBytes(100_000), crypto.randomBytes(0)]
    const wire = Buffer.concat(frames.map((p) => {
      const h = Buffer.alloc(5)
      h.writeUInt8(2, 0)
      h.writeUInt32BE(p.byteLength, 1)
      return Buffer.concat([h, p])
    }))
    let off = 0
    for (const piece of [1, 1, 1, 1, 1, 5000, 1, 9000, 70_000, 1, 2, 3]) {
      a.stream.send(wire.subarray(off, off + piece))
      off += piece
    }
    while (off < wire.byteLength) {
      a.stream.send(wire.subarray(off, off + 7))
      off += 7
    }
    await a.closeWrite()
    for (const want of frames) assert.deepEqual(Buffer.from((await b.readFrame())?.payload ?? []), want)
    assert.equal(await b.readFrame(), null)
  })

  test('readJson validates with the schema; anything else is MALFORMED', async () => {
    const [a, b] = await pair()
    const schema = z.object({ n: z.number() })
    await a.writeJson({ n: 1 })
    await a.writeJson({ n: 'one' })
    await a.writeFrame(1, new TextEncoder().encode('not json'))
    await a.writeFrame(7, new Uint8Array(1))
    assert.deepEqual(await b.readJson(schema), { n: 1 })
    await assert.rejects(b.readJson(schema), isReason('MALFORMED'))
    await assert.rejects(b.readJson(schema), isReason('MALFORMED'))
    await assert.rejects(b.readJson(schema), isReason('MALFORMED'))
  })

  test('a frame over maxFrameBytes is refused from its header', async () => {
    const [a, b] = await pair({ maxFrameBytes: 1000 })
    await a.writeFrame(2, new Uint8Array(1001))
    await assert.rejects(b.readFrame(), isReason('FRAME_TOO_LARGE'))
  })

  test('an end inside a frame is TRUNCATED', async () => {
    const [a, b] = await pair()
    a.stream.send(Uint8Array.from([2, 0, 0, 0, 10, 1, 2, 3]))
    await a.closeWrite()
    await assert.rejects(b.readFrame(), isReason('TRUNCATED'))
  })

  test('a peer that goes quiet mid-frame is an IDLE_TIMEOUT', async () => {
    const [a, b] = await pair({ idleTimeoutMs: 200 })
    a.stream.send(Uint8Array.from([2, 0, 0, 0, 10, 1, 2, 3]))
    const t0 = Date.now()
    await assert.rejects(b.readFrame(), isReason('IDLE_TIMEOUT'))
    assert.ok(Date.now() - t0 >= 190)
  })

  test('an aborted signal ends a pending read with its reason', async () => {
    const [, b] = await pair({ idleTimeoutMs: 0 })
    const ac = new AbortController()
    const p = b.readFrame(ac.signal)
    ac.abort(new Error('stop'))
    await assert.rejects(p, /stop/)
  })

  test('a reset stream fails the reader with STREAM_CLOSED', async () => {
    const [a, b] = await pair()
    const p = b.readFrame()
    a.abort(new Error('gone'))
    await assert.rejects(p, isReason('STREAM_CLOSED'))
  })
})
