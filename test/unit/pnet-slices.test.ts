/**
 * The pnet cipher fed in slices (src/overlay/pnet.ts): the same bytes as one call, and
 * a chunk far larger than the cipher's WebAssembly memory no longer throws.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { createRequire } from 'node:module'
import { slicedUpdate } from '../../src/overlay/pnet.ts'

// The cipher @libp2p/pnet uses, loaded from its own dependency.
const require = createRequire(import.meta.resolve('@libp2p/pnet'))
const xsalsa20 = require('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => { update: (b: Uint8Array) => Uint8Array }

// First: it needs the module's memory as it starts (the other cases grow it).
test('a big sliced update, then many interleaved updates of other connections: memory never runs out', () => {
  const mk = (): { update: (b: Uint8Array) => Uint8Array } => xsalsa20(crypto.randomBytes(24), crypto.randomBytes(32))
  // Other connections' ciphers exist before the burst: their views of the shared
  // memory go stale if the burst grows it.
  const a = mk()
  const b = mk()
  const big = mk()
  slicedUpdate((x) => big.update(x), new Uint8Array(10 * 1024 * 1024))
  const small = new Uint8Array(1500)
  for (let i = 0; i < 3000; i++) {
    slicedUpdate((x) => a.update(x), small)
    slicedUpdate((x) => b.update(x), small)
  }
})

test('slices give exactly the bytes of one call (the keystream carries across calls)', () => {
  const key = crypto.randomBytes(32)
  const nonce = crypto.randomBytes(24)
  const data = crypto.randomBytes(3 * 1024 * 1024 + 77)
  const whole = xsalsa20(nonce, key).update(data)
  const a = xsalsa20(nonce, key)
  const sliced = slicedUpdate((b) => a.update(b), data, 100_003)
  assert.deepEqual(Buffer.from(sliced), Buffer.from(whole))
  const b = xsalsa20(nonce, key)
  assert.deepEqual(Buffer.from(slicedUpdate((x) => b.update(x), sliced, 65_536)), data, 'decrypts back')
})

test('a 256 MiB chunk: one call runs out of WebAssembly memory, slices do not', () => {
  const key = crypto.randomBytes(32)
  const nonce = crypto.randomBytes(24)
  const big = new Uint8Array(256 * 1024 * 1024)
  assert.throws(() => xsalsa20(nonce, key).update(big), RangeError, 'the bug this works around (if it stops throwing, the wrapper may go)')
  const x = xsalsa20(nonce, key)
  const out = slicedUpdate((b) => x.update(b), big)
  assert.equal(out.length, big.length)
  assert.notDeepEqual(out.subarray(0, 64), big.subarray(0, 64), 'encrypted')
})
