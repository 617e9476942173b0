import crypto from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { z } from 'zod'
import { MAX_EPOCH } from '../cluster/handover.ts'

/**
 * The lease grant and the lease proof (protocols/lease.md).
 *
 * A grant is a grantor saying, with its libp2p Ed25519 key, that it granted `holder`
 * the lease of `container` at `epoch`. A proof is a quorum of such grants from
 * distinct members: what a node shows when it takes a container name from a dead
 * owner at a higher epoch without the owner's handover (a failover claim). Since each
 * grantor grants one holder per (container, epoch) and remembers it on disk, two
 * quorums for one epoch would need a member that granted both: there is at most one
 * holder per epoch, and a membership view can accept a failover claim that carries a
 * proof without trusting the claimant.
 *
 * Signed bytes: `msc-lease-grant-v1\n` followed by the JSON of the body with its keys
 * in this fixed order: container, epoch, holder, grantor. Ed25519 over those bytes (no
 * pre-hash), base64url without padding (86 characters), checked against the key
 * embedded in the `grantor` peer id: a grant needs nothing else to be verified, and
 * verification is synchronous (node:crypto), like handovers (src/cluster/handover.ts).
 *
 * A grant carries no time: it says who won an epoch, not for how long (the lease's
 * timing lives in the grantor's memory and the holder's keeper). Ed25519 signatures
 * are deterministic, so the same grant renewed gives the same bytes and is verified
 * once (verdict cache).
 */

const SIGNING_CONTEXT = 'msc-lease-grant-v1\n'
export const peerIdText = z.string().min(20).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/)
export const containerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/)
export const epochNumber = z.number().int().min(1).max(MAX_EPOCH)
/** Most grants a proof may carry: a quorum of a cluster of up to 127 members. */
export const MAX_PROOF_GRANTS = 64

export const LeaseGrantBodySchema = z.object({
  /** The container whose lease is granted. */
  container: containerName,
  /** The ownership epoch the lease is held at. */
  epoch: epochNumber,
  /** Peer id of the node granted the lease. */
  holder: peerIdText,
  /** Peer id of the member that granted it: the signer. */
  grantor: peerIdText
}).strict()

export const LeaseGrantSchema = LeaseGrantBodySchema.extend({
  /** Ed25519 signature, base64url without padding. */
  sig: z.string().regex(/^[A-Za-z0-9_-]{86}$/)
}).strict()

export const LeaseProofSchema = z.object({
  epoch: epochNumber,
  grants: z.array(LeaseGrantSchema).max(MAX_PROOF_GRANTS)
}).strict()

export type LeaseGrantBody = z.infer<typeof LeaseGrantBodySchema>
export type LeaseGrant = z.infer<typeof LeaseGrantSchema>
export type LeaseProof = z.infer<typeof LeaseProofSchema>

/** Votes needed out of `n` members: a strict majority, so any two quorums share a member. */
export function quorum (n: number): number {
  return Math.floor(n / 2) + 1
}

/**
 * Votes that keep a lease safe to hold: enough that the members who did NOT vote for
 * it cannot make a quorum among themselves (n - votes < quorum). A takeover needs a
 * full quorum of grantors that consider the lease expired; every vote of the holder's
 * is a grantor that does not, for a whole lease. 1 of 2 (the holder's own), 2 of 3,
 * 2 of 4, 3 of 5.
 */
export function holdThreshold (n: number): number {
  return n - quorum(n) + 1
}

/** Whether anyone could ever take a lease over from a holder without its own vote: 3 members or more. */
export function takeoverPossible (n: number): boolean {
  return n - 1 >= quorum(n)
}

/** The exact bytes that are signed: context line + JSON with keys in a fixed order. */
export function grantSigningBytes (g: LeaseGrantBody): Uint8Array {
  const body = { container: g.container, epoch: g.epoch, holder: g.holder, grantor: g.grantor }
  return new TextEncoder().encode(SIGNING_CONTEXT + JSON.stringify(body))
}

/**
 * Signs a grant with the grantor's key. Throws if the body is invalid, or if `grantor`
 * is not the peer id of `privateKey` (a grant nobody could verify).
 */
export async function signGrant (privateKey: PrivateKey, g: LeaseGrantBody): Promise<LeaseGrant> {
  const body = LeaseGrantBodySchema.parse(g)
  if (privateKey.type !== 'Ed25519') throw new Error(`lease grant keys must be Ed25519, not ${privateKey.type}`)
  const signerId = peerIdFromString(body.grantor)
  if (signerId.publicKey == null || !signerId.publicKey.equals(privateKey.publicKey)) {
    throw new Error(`a grant by ${body.grantor} cannot be signed with another peer's key`)
  }
  const sig = await privateKey.sign(grantSigningBytes(body))
  return { ...body, sig: Buffer.from(sig).toString('base64url') }
}

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 raw key bytes follow. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** Recent verdicts, keyed by everything verified: a grant renewed every few seconds is checked once. */
const verdicts = new Map<string, boolean>()
const MAX_VERDICTS = 4096

/**
 * True only if `g` is a well-formed grant whose signature verifies with the key of its
 * `grantor` peer id. Never throws: anything else is false. Synchronous.
 */
export function verifyGrant (g: LeaseGrant): boolean {
  try {
    const parsed = LeaseGrantSchema.safeParse(g)
    if (!parsed.success) return false
    const v = parsed.data
    const key = `${v.sig}\n${v.container}\n${v.epoch}\n${v.holder}\n${v.grantor}`
    const known = verdicts.get(key)
    if (known != null) return known
    const ok = verifyEd25519(v.grantor, grantSigningBytes(v), Buffer.from(v.sig, 'base64url'))
    if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value as string)
    verdicts.set(key, ok)
    return ok
  } catch {
    return false
  }
}

/**
 * True iff `proof` shows a quorum of `members` granting `holder` the lease of
 * `container` at `epoch`: proof.epoch is `epoch`, and at least quorum(members.size)
 * grants with distinct grantors, each a member, each for this container, epoch and
 * holder, each verifying. Extra grants that do not count are ignored (not an error).
 * Never throws.
 */
export function verifyLeaseProof (proof: LeaseProof, want: { container: string; epoch: number; holder: string; members: ReadonlySet<string> }): boolean {
  try {
    const parsed = LeaseProofSchema.safeParse(proof)
    if (!parsed.success || parsed.data.epoch !== want.epoch) return false
    const need = quorum(want.members.size)
    const counted = new Set<string>()
    for (const g of parsed.data.grants) {
      if (counted.has(g.grantor) || !want.members.has(g.grantor)) continue
      if (g.container !== want.container || g.epoch !== want.epoch || g.holder !== want.holder) continue
      if (!verifyGrant(g)) continue
      counted.add(g.grantor)
      if (counted.size >= need) return true
    }
    return false
  } catch {
    return false
  }
}

function verifyEd25519 (signer: string, data: Uint8Array, sig: Buffer): boolean {
  if (sig.length !== 64) return false
  const publicKey = peerIdFromString(signer).publicKey
  if (publicKey?.type !== 'Ed25519') return false
  const der = Buffer.concat([ED25519_SPKI_PREFIX, publicKey.raw])
  return crypto.verify(null, data, crypto.createPublicKey({ key: der, format: 'der', type: 'spki' }), sig)
}
