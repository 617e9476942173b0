/**
 * The handover certificate: signed by the previous owner's libp2p Ed25519 key, checked
 * against the key inside its `from` peer id; any change to it, another signer, or
 * garbage fails, synchronously and without throwing.
 */
import { before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  handoverSigningBytes,
  HandoverSchema,
  MAX_EPOCH,
  signHandover,
  verifyHandover
} from '../../src/cluster/handover.ts'
import type { Handover, HandoverBody } from '../../src/cluster/handover.ts'

let kA: PrivateKey
let kB: PrivateKey
let A = ''
let B = ''
let C = ''

before(async () => {
  kA = await generateKeyPair('Ed25519')
  kB = await generateKeyPair('Ed25519')
  A = peerIdFromPrivateKey(kA).toString()
  B = peerIdFromPrivateKey(kB).toString()
  C = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
})

function body (over: Partial<HandoverBody> = {}): HandoverBody {
  return { container: 'web-1', epoch: 4, from: A, to: B, at: 1_795_887_414_032, ...over }
}

describe('sign and verify', () => {
  test('a handover signed by its `from` verifies, synchronously', async () => {
    const h = await signHandover(kA, body())
    assert.deepEqual(Object.keys(h), ['container', 'epoch', 'from', 'to', 'at', 'sig'])
    assert.match(h.sig, /^[A-Za-z0-9_-]{86}$/)
    assert.equal(HandoverSchema.safeParse(h).success, true)
    const r = verifyHandover(h)
    assert.equal(r, true) // a boolean, not a promise
    // It survives the wire (JSON, any key order).
    const reordered = JSON.parse(JSON.stringify({ sig: h.sig, at: h.at, to: h.to, from: h.from, epoch: h.epoch, container: h.container })) as Handover
    assert.equal(verifyHandover(reordered), true)
  })

  test('the signed bytes are a context line and the body in a fixed key order', () => {
    const text = new TextDecoder().decode(handoverSigningBytes({ at: 5, to: B, from: A, epoch: 2, container: 'x' }))
    assert.equal(text, `msc-handover-v1\n{"container":"x","epoch":2,"from":"${A}","to":"${B}","at":5}`)
  })

  test('any altered field fails', async () => {
    const h = await signHandover(kA, body())
    const altered: Array<[string, Handover]> = [
      ['container', { ...h, container: 'web-2' }],
      ['epoch', { ...h, epoch: 5 }],
      ['to', { ...h, to: C }],
      ['at', { ...h, at: h.at + 1 }],
      ['from', { ...h, from: C }],
      ['sig, one character', { ...h, sig: (h.sig[0] === 'A' ? 'B' : 'A') + h.sig.slice(1) }]
    ]
    for (const [what, x] of altered) assert.equal(verifyHandover(x), false, what)
    // Verdicts are cached, but never across different contents.
    assert.equal(verifyHandover(h), true)
  })

  test('a signature by another key fails', async () => {
    // B signs a body that says it comes from A.
    const byB = await signHandover(kB, body({ from: B }))
    assert.equal(verifyHandover({ ...byB, from: A }), false)
    assert.equal(verifyHandover(byB), true)
  })

  test("signHandover refuses a key that is not `from`'s, and an invalid body", async () => {
    await assert.rejects(signHandover(kB, body()), /cannot be signed with another peer's key/)
    await assert.rejects(signHandover(kA, body({ epoch: 0 })))
    await assert.rejects(signHandover(kA, body({ epoch: MAX_EPOCH + 1 })))
    await assert.rejects(signHandover(kA, body({ container: '../etc' })))
  })

  test('garbage fails without throwing', async () => {
    const h = await signHandover(kA, body())
    const garbage: unknown[] = [
      null,
      undefined,
      0,
      'handover',
      [],
      {},
      { ...h, sig: '' },
      { ...h, sig: h.sig.slice(0, 85) },
      { ...h, sig: `${h.sig}A` },
      { ...h, sig: '!'.repeat(86) },
      { ...h, extra: 1 },
      { ...h, epoch: '4' },
      { ...h, epoch: 4.5 },
      { ...h, from: 'not a peer id' },
      // Well-formed base58 that is not a peer id, and an RSA-style id (no embedded key).
      { ...h, from: '1'.repeat(52) },
      { ...h, from: 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N' },
      { container: h.container, epoch: h.epoch, from: h.from, to: h.to, at: h.at }
    ]
    for (const g of garbage) {
      assert.doesNotThrow(() => verifyHandover(g as Handover), JSON.stringify(g))
      assert.equal(verifyHandover(g as Handover), false, JSON.stringify(g))
    }
  })
})
