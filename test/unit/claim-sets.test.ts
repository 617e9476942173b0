/**
 * Claims at any count: the sender's ledger (revision, digest, recent changes), the
 * view's copy of each peer's set (rebuilt from heartbeats, or fetched), the summary's
 * codec checks, and /msc/claims/1 pages over an in-memory stream pair, with the hostile
 * cases: a wrong digest, a set that is not the announced one, claims for another peer,
 * an oversized page, too many pages.
 */
import { before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { streamPair } from '@libp2p/utils'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { decodeHeartbeat, encodeHeartbeat, HEARTBEAT_VERSION, MAX_HEARTBEAT_BYTES } from '../../src/overlay/membership/heartbeat.ts'
import type { ContainerClaim, Heartbeat } from '../../src/overlay/membership/heartbeat.ts'
import { MembershipView } from '../../src/overlay/membership/membership-view.ts'
import {
  canonicalJson,
  claimDigest,
  ClaimLedger,
  EMPTY_DIGEST,
  INLINE_MAX_CLAIMS,
  MAX_CLAIM_SET,
  rebuild,
  type ClaimSummary
} from '../../src/overlay/membership/claim-set.ts'
import {
  ClaimsPageError,
  CLAIMS_VERSION,
  encodePages,
  fetchClaims,
  MAX_PAGE_BYTES,
  MAX_PAGE_CLAIMS,
  PageChecker,
  serveClaims,
  type ClaimsPage,
  type ClaimSnapshot
} from '../../src/overlay/membership/claims-protocol.ts'
import { FramedStream, FRAME_JSON } from '../../src/protocols/framing.ts'

const T0 = 1_000_000
let t = T0
let SELF = ''
let A = ''
let B = ''

before(async () => {
  const ids = await Promise.all([0, 1, 2].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
  ;[SELF, A, B] = ids as [string, string, string]
})

function claims (n: number, prefix = 'c', epoch = 1): ContainerClaim[] {
  return Array.from({ length: n }, (_, i) => ({ name: `${prefix}${String(i).padStart(5, '0')}`, epoch, state: 'stopped' as const }))
}

function hb (peerId: string, seq: number, over: Partial<Heartbeat> = {}): Heartbeat {
  return {
    v: HEARTBEAT_VERSION,
    type: 'heartbeat',
    peerId,
    incarnation: 100,
    seq,
    sentAt: t,
    name: 'n',
    version: '0.1.0',
    role: 'node',
    addrs: [],
    containers: [],
    resources: { memFreeBytes: 1, memTotalBytes: 2, diskFreeBytes: 3 },
    ...over
  }
}

/** The heartbeat `ledger` gives for `peerId` at `seq`. */
function fromLedger (ledger: ClaimLedger, peerId: string, seq: number): Heartbeat {
  const { containers, claims } = ledger.summary()
  return hb(peerId, seq, { containers, claims })
}

function newView (): { view: MembershipView; drops: Array<{ reason: string; detail: string }> } {
  t = T0
  const view = new MembershipView({ selfId: SELF, timers: { suspectAfterMs: 3000, deadAfterMs: 5000, forgetAfterMs: 60000, maxAgeMs: 30000 }, now: () => t })
  const drops: Array<{ reason: string; detail: string }> = []
  view.addEventListener('drop', (e) => {
    drops.push({ reason: e.detail.reason, detail: e.detail.detail })
  })
  return { view, drops }
}

function owned (view: MembershipView, peer: string): number {
  return view.ownership().filter((o) => o.owner === peer).length
}

function setOf (ledger: ClaimLedger, incarnation = 100): { incarnation: number; rev: number; digest: string; claims: ContainerClaim[] } {
  const s = ledger.snapshot()
  return { incarnation, rev: s.rev, digest: s.digest, claims: s.claims }
}

describe('digest and ledger', () => {
  test('the digest does not depend on key order or list order, and changes with any field', () => {
    const a = { name: 'web', epoch: 2, state: 'running' as const }
    const b = { state: 'running' as const, epoch: 2, name: 'web' }
    assert.equal(canonicalJson(a), canonicalJson(b))
    const more = claims(3)
    assert.equal(claimDigest([a, ...more]), claimDigest([...more].reverse().concat(b)))
    assert.notEqual(claimDigest([a]), claimDigest([{ ...a, epoch: 3 }]))
    assert.notEqual(claimDigest([a]), claimDigest([{ ...a, state: 'stopped' }]))
    assert.equal(claimDigest([]), EMPTY_DIGEST)
  })

  test('a small set goes whole in every heartbeat, without a summary (as before claim sets)', () => {
    const l = new ClaimLedger()
    assert.deepEqual(l.update(claims(10)), { changed: true, omitted: 0 })
    assert.deepEqual(l.update(claims(10)), { changed: false, omitted: 0 }, 'the same set again is no new revision')
    assert.equal(l.rev, 1)
    assert.equal(l.digest, claimDigest(claims(10)))
    assert.deepEqual(l.summary(), { containers: claims(10) })
    l.update(claims(INLINE_MAX_CLAIMS + 1))
    assert.equal(l.summary().claims?.count, INLINE_MAX_CLAIMS + 1, 'past the bound, the summary')
    // A receiver takes a heartbeat without a summary as the whole set.
    const { view } = newView()
    view.ingest(hb(A, 1, { containers: claims(10) }))
    assert.equal(owned(view, A), 10)
    view.ingest(hb(A, 2, { containers: claims(4) }))
    assert.equal(owned(view, A), 4)
  })

  test('a large set sends only its recent changes; a heartbeat stays small whatever the count', () => {
    const l = new ClaimLedger()
    l.update(claims(10_000))
    let s = l.summary() as { containers: ContainerClaim[]; claims: ClaimSummary }
    assert.deepEqual(s.containers, [], '10,000 changes at once do not fit: none are listed')
    assert.deepEqual({ rev: s.claims.rev, base: s.claims.base, count: s.claims.count }, { rev: 1, base: 1, count: 10_000 })
    const next = claims(10_000)
    next[5] = { ...next[5]!, state: 'running' }
    next.pop()
    l.update(next)
    s = l.summary() as typeof s
    assert.deepEqual({ rev: s.claims.rev, base: s.claims.base, count: s.claims.count }, { rev: 2, base: 1, count: 9_999 })
    assert.deepEqual(s.containers, [next[5]])
    assert.deepEqual(s.claims.removed, ['c09999'])
    const bytes = encodeHeartbeat(fromLedger(l, A, 1)).length
    assert.ok(bytes < 1024, `${bytes} bytes`)
    // Changes of several revisions go together, so a receiver that missed one catches up.
    for (let i = 0; i < 3; i++) {
      next[i] = { ...next[i]!, epoch: 2 }
      l.update(next)
    }
    s = l.summary() as typeof s
    assert.equal(s.claims.base, 1)
    assert.equal(s.containers.length, 4)
  })

  test('changes past the inline bound are not listed (base = rev): receivers fetch', () => {
    const l = new ClaimLedger()
    l.update(claims(1000))
    l.update(claims(1000, 'c', 2))
    const s = l.summary()
    assert.equal(s.claims?.base, s.claims?.rev)
    assert.equal(s.containers.length, 0)
    assert.ok(INLINE_MAX_CLAIMS < 1000)
  })

  test('the producer bound: more than the limit is capped and reported as omitted', () => {
    const l = new ClaimLedger(100)
    assert.deepEqual(l.update(claims(130)), { changed: true, omitted: 30 })
    assert.equal(l.size, 100)
    assert.equal(l.snapshot().claims.at(-1)?.name, 'c00099', 'the first names in order are kept')
    assert.equal(MAX_CLAIM_SET, 16384)
  })

  test('rebuild: changes over a copy give the set only with the announced count and digest', () => {
    const base = new Map(claims(5).map((c) => [c.name, c]))
    const changed = { name: 'c00001', epoch: 2, state: 'running' as const }
    const target = [...claims(5).filter((c) => c.name !== 'c00001' && c.name !== 'c00004'), changed]
    const s: ClaimSummary = { rev: 2, base: 1, count: 4, digest: claimDigest(target), removed: ['c00004'] }
    assert.equal(rebuild(base, [changed], s)?.size, 4)
    assert.equal(base.size, 5, 'the copy itself is not modified')
    assert.equal(rebuild(base, [changed], { ...s, count: 5 }), null)
    assert.equal(rebuild(base, [changed], { ...s, digest: EMPTY_DIGEST }), null)
  })
})

describe('the summary in the codec (malformed)', () => {
  const enc = (h: Heartbeat): Uint8Array => new TextEncoder().encode(JSON.stringify(h))
  const s = (o: Partial<ClaimSummary>): ClaimSummary => ({ rev: 3, base: 2, count: 10, digest: EMPTY_DIGEST, removed: [], ...o })
  test('base above rev, more listed than the set has, an incomplete set from revision 0, a name listed and removed', () => {
    const cases: Array<[string, Heartbeat]> = [
      ['base > rev', hb(A, 1, { claims: s({ base: 4 }) })],
      ['listed > count', hb(A, 1, { containers: claims(3), claims: s({ count: 2 }) })],
      ['base 0, not all listed', hb(A, 1, { containers: claims(3), claims: s({ base: 0, count: 4 }) })],
      ['base 0 with removals', hb(A, 1, { containers: claims(3), claims: s({ base: 0, count: 3, removed: ['x'] }) })],
      ['listed and removed', hb(A, 1, { containers: claims(1), claims: s({ removed: ['c00000'] }) })],
      ['removed twice', hb(A, 1, { claims: s({ removed: ['x', 'x'] }) })],
      ['count over MAX_CLAIM_SET', hb(A, 1, { claims: s({ count: MAX_CLAIM_SET + 1 }) })],
      ['bad digest text', hb(A, 1, { claims: s({ digest: 'abc' }) })],
      ['unknown field', hb(A, 1, { claims: { ...s({}), extra: 1 } as unknown as ClaimSummary })]
    ]
    for (const [what, h] of cases) {
      const r = decodeHeartbeat(enc(h), A)
      assert.equal(r.ok, false, what)
      assert.equal(r.ok ? '' : r.reason, 'malformed', what)
    }
    assert.equal(decodeHeartbeat(enc(hb(A, 1, { containers: claims(3), claims: s({ base: 0, count: 3 }) })), A).ok, true)
  })
})

describe("a view keeps each peer's set", () => {
  test('1,000 claims: fetched once, then kept current by heartbeats that carry only changes', () => {
    const { view, drops } = newView()
    const l = new ClaimLedger()
    l.update(claims(1000))
    assert.equal(view.ingest(fromLedger(l, A, 1)), true)
    assert.equal(view.get(A)?.state, 'alive')
    assert.deepEqual(view.claimsWanted(A), { incarnation: 100, rev: 1, digest: l.digest, count: 1000 })
    assert.equal(owned(view, A), 0)
    assert.equal(view.applyClaimSet(A, setOf(l)), true)
    assert.equal(owned(view, A), 1000)
    assert.equal(view.claimsWanted(A), undefined)
    const next = claims(1000)
    next[7] = { ...next[7]!, epoch: 2 }
    l.update(next)
    const work = view.work
    view.ingest(fromLedger(l, A, 2))
    assert.equal(view.ownerOf('c00007')?.epoch, 2, 'the change reached the view')
    assert.equal(view.claimsWanted(A), undefined, 'no fetch needed')
    // An unchanged set that is all held costs nothing per heartbeat.
    const before = view.work
    view.ingest(fromLedger(l, A, 3))
    assert.equal(view.work, before)
    assert.ok(before - work >= 1000, 'a changed set is judged again')
    assert.equal(view.get(A)?.containers.length, 1000)
    assert.deepEqual(drops, [])
  })

  test('a copy too old for the changes in a heartbeat is kept applied, and the set is wanted', () => {
    const { view } = newView()
    const l = new ClaimLedger()
    l.update(claims(200))
    view.ingest(fromLedger(l, A, 1))
    view.applyClaimSet(A, setOf(l))
    // 40 revisions later: more than the sender remembers.
    for (let i = 0; i < 40; i++) l.update(claims(200 - i - 1))
    view.ingest(fromLedger(l, A, 2))
    assert.equal(view.claimsWanted(A)?.rev, 41)
    assert.equal(owned(view, A), 200, 'nothing released on a guess')
    assert.equal(view.applyClaimSet(A, setOf(l)), true)
    assert.equal(owned(view, A), 160)
  })

  test('changes that do not give the announced digest: claims-digest, old claims kept, the set wanted', () => {
    const { view, drops } = newView()
    const l = new ClaimLedger()
    l.update(claims(100))
    view.ingest(fromLedger(l, A, 1))
    view.applyClaimSet(A, setOf(l))
    const next = claims(100)
    next[0] = { ...next[0]!, epoch: 3 }
    l.update(next)
    const honest = fromLedger(l, A, 2)
    view.ingest({ ...honest, containers: [{ ...next[0]!, epoch: 4 }] })
    assert.deepEqual(drops.map((d) => d.reason), ['claims-digest'])
    assert.equal(view.ownerOf('c00000')?.epoch, 1)
    assert.equal(view.claimsWanted(A)?.rev, 2)
    assert.equal(view.stats().dropped['claims-digest'], 1)
    // Same revision, another digest than the copy's: also claims-digest.
    view.applyClaimSet(A, setOf(l))
    view.ingest({ ...fromLedger(l, A, 3), claims: { ...l.summary().claims!, digest: EMPTY_DIGEST } })
    assert.equal(view.stats().dropped['claims-digest'], 2)
  })

  test('a fetched set is refused when its claims do not give its digest, or it is not the set its heartbeat announced', () => {
    const { view, drops } = newView()
    const l = new ClaimLedger()
    l.update(claims(100))
    view.ingest(fromLedger(l, A, 1))
    const set = setOf(l)
    assert.equal(view.applyClaimSet(A, { ...set, claims: set.claims.slice(1) }), false)
    const other = claims(100, 'd')
    assert.equal(view.applyClaimSet(A, { ...set, claims: other, digest: claimDigest(other) }), false, 'another set at the announced revision')
    assert.deepEqual(drops.map((d) => d.reason), ['claims-digest', 'claims-digest'])
    assert.equal(owned(view, A), 0)
    assert.equal(view.applyClaimSet(A, { ...set, incarnation: 99 }), false, 'another incarnation')
    assert.equal(view.applyClaimSet(B, set), false, 'a peer the view does not know')
    assert.equal(view.applyClaimSet(A, set), true)
    assert.equal(view.applyClaimSet(A, set), false, 'not newer than the copy')
  })

  test('a restarted peer (new incarnation) keeps its old claims applied until its new set is fetched', () => {
    const { view } = newView()
    const l = new ClaimLedger()
    l.update(claims(100))
    view.ingest(fromLedger(l, A, 1))
    view.applyClaimSet(A, setOf(l))
    const l2 = new ClaimLedger()
    l2.update(claims(90))
    view.ingest({ ...fromLedger(l2, A, 1), incarnation: 200 })
    assert.equal(view.claimsWanted(A)?.incarnation, 200)
    assert.equal(owned(view, A), 100)
    assert.equal(view.applyClaimSet(A, setOf(l)), false, "the old incarnation's set is not taken for the new one")
    assert.equal(view.applyClaimSet(A, setOf(l2, 200)), true)
    assert.equal(owned(view, A), 90)
  })

  test('a leave whose set cannot be rebuilt releases nothing and asks for nothing', () => {
    const { view } = newView()
    const l = new ClaimLedger()
    l.update(claims(200))
    view.ingest(fromLedger(l, A, 1))
    view.applyClaimSet(A, setOf(l))
    for (let i = 0; i < 40; i++) l.update(claims(199 - i))
    view.ingest({ ...fromLedger(l, A, 2), type: 'leave' })
    assert.equal(view.get(A)?.state, 'left')
    assert.equal(view.claimsWanted(A), undefined)
    assert.equal(owned(view, A), 200)
  })

  test('a fetched set obeys the ownership rules like heartbeat claims: no name of another owner without proof', () => {
    const { view, drops } = newView()
    view.ingest(hb(B, 1, { containers: [{ name: 'c00003', epoch: 1, state: 'running' }] }))
    const l = new ClaimLedger()
    l.update(claims(100, 'c', 2))
    view.ingest(fromLedger(l, A, 1))
    assert.equal(view.applyClaimSet(A, setOf(l)), true)
    assert.equal(view.ownerOf('c00003')?.owner, B)
    assert.equal(owned(view, A), 99)
    assert.deepEqual(drops.map((d) => d.reason), ['unproven-handover'])
  })
})

describe('/msc/claims/1 pages', () => {
  function snapshotOf (l: ClaimLedger, peerId: string): ClaimSnapshot {
    return { peerId, incarnation: 100, ...l.snapshot() }
  }

  test('10,000 claims round trip in bounded pages, name-ordered, with the digest', async () => {
    const l = new ClaimLedger()
    l.update(claims(10_000).map((c, i) => i % 3 === 0 ? { ...c, state: 'running' as const } : c))
    const pages = encodePages(snapshotOf(l, A))
    assert.ok(pages.length >= 10_000 / MAX_PAGE_CLAIMS)
    for (const p of pages) assert.ok(p.byteLength <= MAX_PAGE_BYTES)
    const [client, server] = await streamPair()
    const signal = AbortSignal.timeout(10_000)
    const [, set] = await Promise.all([serveClaims(server, () => encodePages(snapshotOf(l, A)), signal), fetchClaims(client, A, signal)])
    assert.equal(set.claims.length, 10_000)
    assert.equal(set.rev, 1)
    assert.equal(claimDigest(set.claims), l.digest)
    assert.equal(set.digest, l.digest)
  })

  test('the empty set is one page', async () => {
    const l = new ClaimLedger()
    const [client, server] = await streamPair()
    const signal = AbortSignal.timeout(10_000)
    const [, set] = await Promise.all([serveClaims(server, () => encodePages(snapshotOf(l, A)), signal), fetchClaims(client, A, signal)])
    assert.deepEqual(set, { incarnation: 100, rev: 0, digest: EMPTY_DIGEST, claims: [] })
  })

  /** A hostile answerer: whatever frames `pages` gives, after reading the request. */
  async function fetchFrom (frames: Uint8Array[], asked = A): Promise<unknown> {
    const [client, server] = await streamPair()
    const signal = AbortSignal.timeout(10_000)
    const serve = (async () => {
      const f = new FramedStream(server, { maxFrameBytes: 1024 * 1024 * 8 })
      await f.readFrame(signal)
      for (const fr of frames) await f.writeFrame(FRAME_JSON, fr, signal)
      await f.closeWrite(signal).catch(() => {})
    })().catch(() => {})
    try {
      return await fetchClaims(client, asked, signal)
    } catch (err) {
      return err
    } finally {
      await serve
    }
  }

  const page = (o: Partial<ClaimsPage>): ClaimsPage => ({
    v: CLAIMS_VERSION,
    type: 'page',
    peerId: A,
    incarnation: 100,
    rev: 1,
    count: 2,
    digest: claimDigest(claims(2)),
    index: 0,
    claims: claims(2),
    last: true,
    ...o
  })
  const bytes = (p: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(p))

  test('claims for another peer are refused', async () => {
    const r = await fetchFrom([bytes(page({ peerId: B }))])
    assert.ok(r instanceof ClaimsPageError, String(r))
    assert.match(r.message, /claims for/)
  })

  test('an oversized page is refused from its header', async () => {
    const big = new Uint8Array(MAX_PAGE_BYTES + 1).fill(0x20)
    const r = await fetchFrom([big])
    assert.ok(r instanceof ClaimsPageError, String(r))
    assert.match(r.message, /exceeds/)
  })

  test('more claims per page than allowed, or a claim outside the schema, is refused', async () => {
    const many = claims(MAX_PAGE_CLAIMS + 1)
    let r = await fetchFrom([bytes(page({ claims: many, count: many.length }))])
    assert.ok(r instanceof ClaimsPageError, String(r))
    r = await fetchFrom([bytes(page({ claims: [{ name: '../x', epoch: 1, state: 'running' }], count: 1 }))])
    assert.ok(r instanceof ClaimsPageError, String(r))
  })

  test('a page flood: empty pages, pages past the count, pages after the last, pages out of order', () => {
    const two = claims(2)
    const check = (pages: ClaimsPage[]): unknown => {
      const c = new PageChecker(A)
      try {
        for (const p of pages) c.add(p)
        return 'accepted'
      } catch (err) {
        return err
      }
    }
    const cases: Array<[string, ClaimsPage[], RegExp]> = [
      ['empty page that is not last', [page({ claims: [], last: false }), page({ index: 1 })], /empty page/],
      ['more than count', [page({ claims: [two[0]!], last: false }), page({ index: 1, claims: two })], /more than/],
      ['after the last', [page({}), page({ index: 1, claims: [] })], /after the last/],
      ['index skipped', [page({ claims: [two[0]!], last: false }), page({ index: 2, claims: [two[1]!] })], /index 2/],
      ['not in name order', [page({ claims: [two[1]!, two[0]!] })], /not in name order/],
      ['a name twice across pages', [page({ claims: [two[0]!], last: false }), page({ index: 1, claims: [two[0]!] })], /not in name order/],
      ['the set changes between pages', [page({ claims: [two[0]!], last: false }), page({ index: 1, claims: [two[1]!], rev: 2 })], /same set/],
      ['fewer than count at the end', [page({ claims: [two[0]!] })], /1 claims, the set has 2/]
    ]
    for (const [what, pages, re] of cases) {
      const r = check(pages)
      assert.ok(r instanceof ClaimsPageError, `${what}: ${String(r)}`)
      assert.match(r.message, re, what)
    }
    assert.equal(check([page({ claims: [two[0]!], last: false }), page({ index: 1, claims: [two[1]!] })]), 'accepted')
  })

  test('an answer that ends early is refused', async () => {
    const r = await fetchFrom([bytes(page({ claims: [claims(2)[0]!], last: false }))])
    assert.ok(r instanceof ClaimsPageError, String(r))
    assert.match(r.message, /ended before/)
  })

  test('a heartbeat with any set stays far below the heartbeat bound', () => {
    const l = new ClaimLedger()
    l.update(claims(MAX_CLAIM_SET))
    assert.ok(encodeHeartbeat(fromLedger(l, A, 1)).length < MAX_HEARTBEAT_BYTES / 16)
  })
})
