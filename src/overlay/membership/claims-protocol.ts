import { z } from 'zod'
import type { Stream } from '@libp2p/interface'
import { FramedStream, ProtocolError, FRAME_JSON, parseJsonFrame } from '../../protocols/framing.ts'
import { ContainerClaimSchema, type ContainerClaim } from './heartbeat.ts'
import { MAX_CLAIM_SET } from './claim-set.ts'

/**
 * `/msc/claims/1`: a node's whole claim set, asked of the node itself by a peer whose
 * copy does not match the node's heartbeat (protocols/membership.md, "Claims at any
 * count"). The asker sends one request frame; the node answers with the set in name
 * order, in pages, from one snapshot, and closes. Every page is bounded (frame bytes,
 * claims) and checked like a heartbeat's claims; the set is attributed to the peer the
 * stream is authenticated with, never to anyone a page names.
 */

export const CLAIMS_PROTOCOL = '/msc/claims/1'
export const CLAIMS_VERSION = 1
/** Claims in one page. */
export const MAX_PAGE_CLAIMS = 512
/** One page frame, in bytes: 512 claims with lease proofs of a few grants fit. */
export const MAX_PAGE_BYTES = 512 * 1024
/** The request frame. */
export const MAX_REQUEST_BYTES = 1024
/** A whole fetch, from dial to the last page. */
export const FETCH_TIMEOUT_MS = 20_000

const peerIdText = z.string().min(20).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/)

export const ClaimsRequestSchema = z.object({
  v: z.literal(CLAIMS_VERSION),
  type: z.literal('get')
}).strict()

export const ClaimsPageSchema = z.object({
  v: z.literal(CLAIMS_VERSION),
  type: z.literal('page'),
  peerId: peerIdText,
  incarnation: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  rev: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  count: z.number().int().min(0).max(MAX_CLAIM_SET),
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  /** 0, 1, 2, ... */
  index: z.number().int().min(0).max(MAX_CLAIM_SET),
  claims: z.array(ContainerClaimSchema).max(MAX_PAGE_CLAIMS),
  last: z.boolean()
}).strict()

export type ClaimsPage = z.infer<typeof ClaimsPageSchema>

export interface FetchedClaimSet {
  incarnation: number
  rev: number
  digest: string
  claims: ContainerClaim[]
}

/** What the answering node's pages did wrong: counted as a `claims-page` drop. */
export class ClaimsPageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ClaimsPageError'
  }
}

/** The node's own set, as ClaimLedger.snapshot() gives it. */
export interface ClaimSnapshot {
  peerId: string
  incarnation: number
  rev: number
  digest: string
  claims: ContainerClaim[]
  texts: string[]
}

/**
 * Pages of a snapshot, as frames ready to send. A page ends before MAX_PAGE_CLAIMS
 * claims or MAX_PAGE_BYTES bytes; a claim too large for any page (none is, within the
 * claim schema's bounds) is an error, so no page that a receiver refuses is sent.
 */
export function encodePages (s: ClaimSnapshot): Uint8Array[] {
  const enc = new TextEncoder()
  const head = (index: number, last: boolean): string =>
    `{"v":${CLAIMS_VERSION},"type":"page","peerId":${JSON.stringify(s.peerId)},"incarnation":${s.incarnation},"rev":${s.rev},"count":${s.claims.length},"digest":"${s.digest}","index":${index},"last":${String(last)},"claims":[`
  const budget = MAX_PAGE_BYTES - head(MAX_CLAIM_SET, false).length - 2
  const pages: string[][] = []
  let page: string[] = []
  let bytes = 0
  for (const text of s.texts) {
    const n = Buffer.byteLength(text) + 1
    if (n > budget) throw new ProtocolError('CLAIM_TOO_LARGE', `a claim of ${n} bytes does not fit in a page of ${MAX_PAGE_BYTES}`, 'INTERNAL')
    if (page.length >= MAX_PAGE_CLAIMS || bytes + n > budget) {
      pages.push(page)
      page = []
      bytes = 0
    }
    page.push(text)
    bytes += n
  }
  pages.push(page)
  return pages.map((p, i) => enc.encode(`${head(i, i === pages.length - 1)}${p.join(',')}]}`))
}

/** Answers one request on `stream` with the pages `pages()` gives at that moment (encodePages). */
export async function serveClaims (stream: Stream, pages: () => Uint8Array[], signal: AbortSignal): Promise<void> {
  const f = new FramedStream(stream, { maxFrameBytes: MAX_REQUEST_BYTES, idleTimeoutMs: 10_000 })
  await f.readJson(ClaimsRequestSchema, signal)
  for (const page of pages()) await f.writeFrame(FRAME_JSON, page, signal)
  await f.closeWrite(signal).catch(() => {})
}

/**
 * Checks the pages of one answer as they come. Throws ClaimsPageError at the first
 * page that is not part of one well-formed set of `peer`'s.
 */
export class PageChecker {
  private readonly peer: string
  private first?: ClaimsPage
  private readonly claims: ContainerClaim[] = []
  private lastName = ''
  private done = false
  private pagesSeen = 0

  constructor (peer: string) {
    this.peer = peer
  }

  /** Returns the set after its last page, null before. */
  add (p: ClaimsPage): FetchedClaimSet | null {
    const bad = (why: string): never => {
      throw new ClaimsPageError(`page ${p.index}: ${why}`)
    }
    if (this.done) bad('a page after the last one')
    if (p.peerId !== this.peer) bad(`claims for ${p.peerId}, asked of ${this.peer}`)
    const f = this.first ??= p
    if (p.incarnation !== f.incarnation || p.rev !== f.rev || p.count !== f.count || p.digest !== f.digest) bad('not the same set as page 0')
    if (p.index !== this.pagesSeen) bad(`index ${p.index}, expected ${this.pagesSeen}`)
    if (!p.last && p.claims.length === 0) bad('an empty page that is not the last')
    if (this.claims.length + p.claims.length > p.count) bad(`more than the ${p.count} claims the set has`)
    for (const c of p.claims) {
      if (this.claims.length > 0 && !(c.name > this.lastName)) bad(`${c.name} after ${this.lastName}: not in name order, or twice`)
      this.lastName = c.name
      this.claims.push(c)
    }
    this.pagesSeen++
    if (!p.last) return null
    this.done = true
    if (this.claims.length !== p.count) bad(`${this.claims.length} claims, the set has ${p.count}`)
    return { incarnation: f.incarnation, rev: f.rev, digest: f.digest, claims: this.claims }
  }
}

/**
 * Asks for the whole set on an open stream to `peer` (the authenticated remote).
 * Transport failures throw ProtocolError; a page that breaks the rules throws
 * ClaimsPageError.
 */
export async function fetchClaims (stream: Stream, peer: string, signal: AbortSignal): Promise<FetchedClaimSet> {
  const f = new FramedStream(stream, { maxFrameBytes: MAX_PAGE_BYTES, idleTimeoutMs: 10_000 })
  try {
    await f.writeJson({ v: CLAIMS_VERSION, type: 'get' }, signal)
    const checker = new PageChecker(peer)
    for (;;) {
      let frame
      try {
        frame = await f.readFrame(signal)
      } catch (err) {
        if (err instanceof ProtocolError && err.reason === 'FRAME_TOO_LARGE') throw new ClaimsPageError(err.message)
        throw err
      }
      if (frame == null) throw new ClaimsPageError('the answer ended before its last page')
      let page: ClaimsPage
      try {
        page = parseJsonFrame(frame, ClaimsPageSchema)
      } catch (err) {
        throw new ClaimsPageError((err as Error).message.slice(0, 200))
      }
      const set = checker.add(page)
      if (set != null) {
        await f.closeWrite(signal).catch(() => {})
        return set
      }
    }
  } catch (err) {
    f.abort(err as Error)
    throw err
  }
}
