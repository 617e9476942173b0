/**
 * The cluster's member list (src/cluster): record proofs, the rules that make members
 * out of records (signer must be a member, removal wins, names unique), and join
 * tokens (one use, expiry, damaged text).
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { admissionKey, genesisClusterId, hmacAdmission, keyClusterId, signRecord, verifyRecordProof, type AdmitRecord } from '../../src/cluster/records.ts'
import { MemberList } from '../../src/cluster/member-list.ts'
import { decodeToken, encodeToken, TokenStore } from '../../src/cluster/tokens.ts'
import { relayTargets, RELAY_FANOUT } from '../../src/cluster/cluster-service.ts'

interface Node {
  key: PrivateKey
  id: string
}
async function node (): Promise<Node> {
  const key = await generateKeyPair('Ed25519')
  return { key, id: peerIdFromPrivateKey(key).toString() }
}

const NONCE = '00112233445566778899aabbccddeeff'

async function genesis (creator: Node, at = 1000): Promise<{ id: string; rec: AdmitRecord }> {
  const id = genesisClusterId(creator.id, NONCE)
  const rec = await signRecord(creator.key, { kind: 'admit', cluster: id, peerId: creator.id, name: 'n1', addrs: [], admittedAt: at, admittedBy: creator.id, nonce: NONCE })
  return { id, rec }
}

async function admit (cluster: string, by: Node, who: Node, name: string, at: number): Promise<AdmitRecord> {
  return await signRecord(by.key, { kind: 'admit', cluster, peerId: who.id, name, addrs: [], admittedAt: at, admittedBy: by.id })
}

describe('record proofs', () => {
  test('a genesis record verifies; with another creator or nonce it does not', async () => {
    const a = await node()
    const b = await node()
    const { rec } = await genesis(a)
    assert.equal(await verifyRecordProof(rec), true)
    assert.equal(await verifyRecordProof({ ...rec, nonce: 'ffffffffffffffffffffffffffffffff' }), false)
    // b re-signs a's cluster id as its own genesis: the id does not derive from b.
    const forged = await signRecord(b.key, { kind: 'admit', cluster: rec.cluster, peerId: b.id, name: 'n1', addrs: [], admittedAt: 1, admittedBy: b.id, nonce: NONCE })
    assert.equal(await verifyRecordProof(forged), false)
  })

  test('any changed field breaks a signature; a signature by another key fails', async () => {
    const a = await node()
    const b = await node()
    const c = await node()
    const { id } = await genesis(a)
    const r = await admit(id, a, b, 'n2', 2000)
    assert.equal(await verifyRecordProof(r), true)
    assert.equal(await verifyRecordProof({ ...r, name: 'n3' }), false)
    assert.equal(await verifyRecordProof({ ...r, peerId: c.id }), false)
    assert.equal(await verifyRecordProof({ ...r, admittedBy: c.id }), false)
    assert.equal(await verifyRecordProof({ ...r, proof: 'AAAA' }), false)
  })

  test('key-file admissions: valid with the key, refused without it or with another', async () => {
    const a = await node()
    const key = Uint8Array.from(Array(32).fill(7))
    const other = Uint8Array.from(Array(32).fill(8))
    const id = keyClusterId(key)
    assert.notEqual(id, keyClusterId(other))
    const r = hmacAdmission(admissionKey(key), { kind: 'admit', cluster: id, peerId: a.id, name: 'a', addrs: [], admittedAt: 5, admittedBy: 'key' })
    assert.equal(await verifyRecordProof(r, admissionKey(key)), true)
    assert.equal(await verifyRecordProof(r), false)
    assert.equal(await verifyRecordProof(r, admissionKey(other)), false)
  })
})

describe('member list', () => {
  test('members are those admitted by members; an admission by a stranger makes nobody a member', async () => {
    const [a, b, c, x, y] = await Promise.all([node(), node(), node(), node(), node()])
    const { id, rec } = await genesis(a)
    const list = new MemberList(id)
    list.add(rec)
    list.add(await admit(id, a, b, 'n2', 2000))
    list.add(await admit(id, b, c, 'n3', 3000))
    list.add(await admit(id, x, y, 'n9', 4000)) // x is no member: y is not admitted
    assert.deepEqual(list.members().map((m) => m.name), ['n1', 'n2', 'n3'])
    assert.equal(list.isMember(y.id), false)
    assert.equal(list.isMember(x.id), false)
  })

  test('the order records arrive in does not matter', async () => {
    const [a, b, c] = await Promise.all([node(), node(), node()])
    const { id, rec } = await genesis(a)
    const recs = [rec, await admit(id, a, b, 'n2', 2000), await admit(id, b, c, 'n3', 1500)]
    const l1 = new MemberList(id)
    const l2 = new MemberList(id)
    for (const r of recs) l1.add(r)
    for (const r of [...recs].reverse()) l2.add(r)
    assert.deepEqual(l1.members(), l2.members())
    assert.equal(l1.members().length, 3)
  })

  test("a removal wins for good; a removed member's name is free again", async () => {
    const [a, b, c] = await Promise.all([node(), node(), node()])
    const { id, rec } = await genesis(a)
    const list = new MemberList(id)
    list.add(rec)
    list.add(await admit(id, a, b, 'n2', 2000))
    list.add(await signRecord(a.key, { kind: 'remove', cluster: id, peerId: b.id, removedAt: 3000, removedBy: a.id }))
    list.add(await admit(id, a, b, 'n2', 4000)) // re-admitting the same identity changes nothing
    assert.equal(list.isMember(b.id), false)
    assert.equal(list.isRemoved(b.id), true)
    list.add(await admit(id, a, c, 'n2', 5000))
    assert.equal(list.byName('n2')?.peerId, c.id)
  })

  test('a removal signed by a non-member does nothing', async () => {
    const [a, b, x] = await Promise.all([node(), node(), node()])
    const { id, rec } = await genesis(a)
    const list = new MemberList(id)
    list.add(rec)
    list.add(await admit(id, a, b, 'n2', 2000))
    list.add(await signRecord(x.key, { kind: 'remove', cluster: id, peerId: b.id, removedAt: 3000, removedBy: x.id }))
    assert.equal(list.isMember(b.id), true)
  })

  test('names are unique: the earliest admission keeps the name, the later one is a conflict', async () => {
    const key = Uint8Array.from(Array(32).fill(3))
    const ak = admissionKey(key)
    const id = keyClusterId(key)
    const [a, b] = await Promise.all([node(), node()])
    const list = new MemberList(id)
    list.add(hmacAdmission(ak, { kind: 'admit', cluster: id, peerId: b.id, name: 'same', addrs: [], admittedAt: 20, admittedBy: 'key' }))
    list.add(hmacAdmission(ak, { kind: 'admit', cluster: id, peerId: a.id, name: 'same', addrs: [], admittedAt: 10, admittedBy: 'key' }))
    assert.equal(list.isMember(a.id), true)
    assert.equal(list.isMember(b.id), false)
    assert.deepEqual(list.conflicts().map((c) => [c.peerId, c.heldBy]), [[b.id, a.id]])
  })

  test('records of another cluster are not taken', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const { id, rec } = await genesis(a)
    const other = await genesis(b)
    const list = new MemberList(id)
    assert.equal(list.add(rec), true)
    assert.equal(list.add(other.rec), false)
    assert.equal(list.members().length, 1)
  })
})

describe('join tokens', () => {
  const body = { c: '0123456789abcdef0123456789abcdef', s: 'ab'.repeat(32), a: ['/ip4/10.0.0.1/tcp/4710/p2p/12D3KooWA1b2C3d4E5f6G7h8J9k1L2m3N4p5Q6r7S8t9U1v2'] }

  test('a token round-trips; damaged text is refused with a clear message', () => {
    const t = encodeToken(body)
    assert.match(t, /^msc1\.[A-Za-z0-9_-]+$/)
    assert.deepEqual(decodeToken(t), body)
    assert.throws(() => decodeToken('hello'), /not an msc join token/)
    assert.throws(() => decodeToken(t.slice(0, -6)), /damaged/)
    assert.throws(() => decodeToken('msc1.' + Buffer.from(JSON.stringify({ ...body, s: 'short' })).toString('base64url')), /damaged/)
  })

  test('a secret is used once, and not after it expired; the store survives a reload', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-test-tokens-'))
    try {
      let now = 1_000_000
      const file = path.join(dir, 'tokens.json')
      const store = new TokenStore(file, () => now)
      const s1 = await store.issue(60_000)
      const s2 = await store.issue(60_000)
      assert.equal(store.outstanding(), true)
      const reloaded = new TokenStore(file, () => now)
      await reloaded.load()
      assert.equal(await reloaded.consume(s1), true)
      assert.equal(await reloaded.consume(s1), false, 'a second use')
      assert.equal(await reloaded.consume('cd'.repeat(32)), false, 'never issued')
      assert.equal((await fs.readFile(file, 'utf8')).includes(s2), false, 'only hashes on disk')
      now += 60_001
      assert.equal(await reloaded.consume(s2), false, 'expired')
      assert.equal(reloaded.outstanding(), false)
      assert.equal((await fs.stat(file)).mode & 0o777, 0o600)
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

describe('relaying learnt records', () => {
  const members = new Set(['a', 'b', 'c', 'd', 'e', 'f'])
  const isMember = (p: string): boolean => members.has(p)

  test('at most 3 connected members, never the sender, never a non-member', () => {
    const connected = ['a', 'b', 'c', 'd', 'e', 'f', 'stranger']
    const seen = new Set<string>()
    for (let i = 0; i < 200; i++) {
      const t = relayTargets(connected, isMember, 'a')
      assert.equal(t.length, RELAY_FANOUT)
      assert.equal(new Set(t).size, t.length, 'no member twice')
      assert.ok(!t.includes('a'), 'not back to the sender')
      assert.ok(!t.includes('stranger'), 'not to a non-member')
      for (const p of t) seen.add(p)
    }
    // Chosen at random: over many rounds every other member is picked.
    assert.deepEqual([...seen].sort(), ['b', 'c', 'd', 'e', 'f'])
  })

  test('fewer connected members than the fanout: all of them', () => {
    assert.deepEqual(relayTargets(['a', 'b'], isMember, 'a').sort(), ['b'])
    assert.deepEqual(relayTargets([], isMember, 'a'), [])
  })
})
