/**
 * Lease grants and proofs: a grant is signed by its grantor's libp2p Ed25519 key and
 * checked against the key inside the `grantor` peer id, synchronously and without
 * throwing; a proof holds only with a quorum of distinct member grantors, each for
 * exactly this container, epoch and holder.
 */
import { before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { MAX_EPOCH } from '../../src/cluster/handover.ts'
import {
  grantSigningBytes,
  LeaseGrantSchema,
  quorum,
  signGrant,
  verifyGrant,
  verifyLeaseProof
} from '../../src/failover/grant.ts'
import type { LeaseGrant, LeaseProof } from '../../src/failover/grant.ts'

const keys: PrivateKey[] = []
const ids: string[] = []
let H = ''

before(async () => {
  for (let i = 0; i < 6; i++) {
    const k = await generateKeyPair('Ed25519')
    keys.push(k)
    ids.push(peerIdFromPrivateKey(k).toString())
  }
  H = ids[5] as string
})

async function grantBy (i: number, over: Partial<{ container: string; epoch: number; holder: string }> = {}): Promise<LeaseGrant> {
  return await signGrant(keys[i] as PrivateKey, { container: 'web', epoch: 3, holder: H, grantor: ids[i] as string, ...over })
}

describe('quorum', () => {
  test('a strict majority', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(quorum), [1, 2, 2, 3, 3, 4, 4])
  })
})

describe('grants', () => {
  test('a grant signed by its grantor verifies, synchronously; fixed signed bytes', async () => {
    const g = await grantBy(0)
    assert.deepEqual(Object.keys(g), ['container', 'epoch', 'holder', 'grantor', 'sig'])
    assert.match(g.sig, /^[A-Za-z0-9_-]{86}$/)
    assert.equal(LeaseGrantSchema.safeParse(g).success, true)
    assert.equal(verifyGrant(g), true)
    const reordered = JSON.parse(JSON.stringify({ sig: g.sig, grantor: g.grantor, holder: g.holder, epoch: g.epoch, container: g.container })) as LeaseGrant
    assert.equal(verifyGrant(reordered), true)
    const text = new TextDecoder().decode(grantSigningBytes({ grantor: 'G', holder: 'h', epoch: 2, container: 'x' }))
    assert.equal(text, 'msc-lease-grant-v1\n{"container":"x","epoch":2,"holder":"h","grantor":"G"}')
  })

  test('any altered field, another signer, or garbage fails without throwing', async () => {
    const g = await grantBy(0)
    const altered: Array<[string, unknown]> = [
      ['container', { ...g, container: 'web2' }],
      ['epoch', { ...g, epoch: 4 }],
      ['holder', { ...g, holder: ids[1] }],
      ['grantor', { ...g, grantor: ids[1] }],
      ['sig', { ...g, sig: (g.sig[0] === 'A' ? 'B' : 'A') + g.sig.slice(1) }],
      ['extra field', { ...g, at: 1 }],
      ['null', null],
      ['string', 'grant'],
      ['bad peer id', { ...g, grantor: 'not-a-peer-id-000000000000' }]
    ]
    for (const [what, x] of altered) assert.equal(verifyGrant(x as LeaseGrant), false, what)
    assert.equal(verifyGrant(g), true) // cached verdicts never cross contents
  })

  test("signGrant refuses another peer's key and an invalid body", async () => {
    await assert.rejects(signGrant(keys[1] as PrivateKey, { container: 'web', epoch: 1, holder: H, grantor: ids[0] as string }), /another peer's key/)
    await assert.rejects(grantBy(0, { epoch: 0 }))
    await assert.rejects(grantBy(0, { epoch: MAX_EPOCH + 1 }))
    await assert.rejects(grantBy(0, { container: '../x' }))
  })
})

describe('verifyLeaseProof', () => {
  const want = (members: string[], over: Partial<{ container: string; epoch: number; holder: string }> = {}): { container: string; epoch: number; holder: string; members: ReadonlySet<string> } => ({ container: 'web', epoch: 3, holder: H,
    members: new Set(members), ...over })

  test('a quorum of distinct member grantors holds; one less does not', async () => {
    const members = ids.slice(0, 5) // quorum 3
    const grants = [await grantBy(0), await grantBy(1), await grantBy(2)]
    assert.equal(verifyLeaseProof({ epoch: 3, grants }, want(members)), true)
    assert.equal(verifyLeaseProof({ epoch: 3, grants: grants.slice(0, 2) }, want(members)), false)
    // Extra grants that do not count are ignored.
    assert.equal(verifyLeaseProof({ epoch: 3, grants: [await grantBy(4, { epoch: 2 }), ...grants] }, want(members)), true)
  })

  test('duplicate grantors count once', async () => {
    const g0 = await grantBy(0)
    const g1 = await grantBy(1)
    const proof: LeaseProof = { epoch: 3, grants: [g0, g0, g0, g1] }
    assert.equal(verifyLeaseProof(proof, want(ids.slice(0, 5))), false)
    assert.equal(verifyLeaseProof(proof, want(ids.slice(0, 3))), true) // quorum 2 of 3
  })

  test('grants of non-members do not count', async () => {
    const grants = [await grantBy(0), await grantBy(3), await grantBy(4)]
    assert.equal(verifyLeaseProof({ epoch: 3, grants }, want(ids.slice(0, 3))), false)
    assert.equal(verifyLeaseProof({ epoch: 3, grants }, want([ids[0] as string, ids[3] as string, ids[4] as string])), true)
  })

  test('grants for another container, epoch or holder do not count; nor does the wrong proof epoch', async () => {
    const members = ids.slice(0, 3)
    const ok = await grantBy(0)
    for (const bad of [await grantBy(1, { container: 'db' }), await grantBy(1, { epoch: 4 }), await grantBy(1, { holder: ids[4] as string })]) {
      assert.equal(verifyLeaseProof({ epoch: 3, grants: [ok, bad] }, want(members)), false)
    }
    const g1 = await grantBy(1)
    assert.equal(verifyLeaseProof({ epoch: 3, grants: [ok, g1] }, want(members)), true)
    assert.equal(verifyLeaseProof({ epoch: 4, grants: [ok, g1] }, want(members)), false)
    assert.equal(verifyLeaseProof({ epoch: 3, grants: [ok, g1] }, want(members, { epoch: 4 })), false)
    assert.equal(verifyLeaseProof({ epoch: 3, grants: [ok, g1] }, want(members, { holder: ids[4] as string })), false)
  })

  test('a bad signature does not count; garbage is false, never thrown', async () => {
    const members = ids.slice(0, 3)
    const g0 = await grantBy(0)
    const g1 = await grantBy(1)
    const forged = { ...g1, sig: g0.sig }
    assert.equal(verifyLeaseProof({ epoch: 3, grants: [g0, forged] }, want(members)), false)
    assert.equal(verifyLeaseProof(null as unknown as LeaseProof, want(members)), false)
    assert.equal(verifyLeaseProof({ epoch: 3, grants: Array(65).fill(g0) }, want(members)), false) // over 64 grants
  })
})

describe('how many votes hold a lease', () => {
  test('the members who did not vote can never make a quorum; one or two members never need the guard', async () => {
    const { holdThreshold, quorum, takeoverPossible } = await import('../../src/failover/grant.ts')
    for (let n = 1; n <= 9; n++) assert.ok(n - holdThreshold(n) < quorum(n), `n=${n}`)
    assert.deepEqual([1, 2, 3, 4, 5].map(holdThreshold), [1, 1, 2, 2, 3])
    assert.deepEqual([1, 2, 3, 4].map(takeoverPossible), [false, false, true, true])
  })
})
