import crypto from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { z } from 'zod'

/**
 * The handover certificate: the previous owner of a container name says, with its
 * libp2p Ed25519 key, that `to` owns `container` from `epoch` on. A claim that takes a
 * name from another live owner is accepted only with such a certificate signed by that
 * owner (protocols/membership.md, "Ownership epochs"), so no member can take a name,
 * and have its owner fence its container, by raising the epoch on its own.
 *
 * Signed bytes: `msc-handover-v1\n` followed by the JSON of the body with its keys in
 * this fixed order: container, epoch, from, to, at. The signature is Ed25519 over those
 * bytes (libp2p's Ed25519 keys sign the message itself, no pre-hash), base64url without
 * padding (86 characters). The signer's public key is the one embedded in the `from`
 * peer id (Ed25519 peer ids, `12D3KooW...`, are the key itself): a certificate needs
 * nothing else to be checked. Verification is synchronous (node:crypto).
 *
 * A certificate does not expire (`at` is informational): it is carried with the claim
 * for as long as the new owner keeps the container at that epoch, so that views that
 * start later can check it too. Epochs only go up, so an old certificate replayed
 * later is below the epoch held and changes nothing. Whoever signs one must do so only
 * once the handover is decided (the migration's commit): a certificate that exists
 * lets `to` take the name.
 */

/**
 * The largest epoch on the wire (a claim's or a handover's): 2^40. Membership views
 * record only epochs below it, so the next epoch of any name is still valid.
 */
export const MAX_EPOCH = 2 ** 40
/** The most times a node counts running a container again at one epoch (ContainerRecord.resumes); it stops counting there. */
export const MAX_RESUMES = 2 ** 31

const SIGNING_CONTEXT = 'msc-handover-v1\n'
const peerIdText = z.string().min(20).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/)
const containerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/)

export const HandoverBodySchema = z.object({
  /** The container name handed over. */
  container: containerName,
  /** The epoch the new owner holds the name at (the previous owner's epoch + 1, or more). */
  epoch: z.number().int().min(1).max(MAX_EPOCH),
  /** Peer id of the previous owner: the signer. */
  from: peerIdText,
  /** Peer id of the new owner. */
  to: peerIdText,
  /** When it was signed, ms since the Unix epoch (signer's clock); not checked. */
  at: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
}).strict()

export const HandoverSchema = HandoverBodySchema.extend({
  /** Ed25519 signature, base64url without padding. */
  sig: z.string().regex(/^[A-Za-z0-9_-]{86}$/)
}).strict()

export type HandoverBody = z.infer<typeof HandoverBodySchema>
export type Handover = z.infer<typeof HandoverSchema>

/** The exact bytes that are signed: context line + JSON with keys in a fixed order. */
export function handoverSigningBytes (h: HandoverBody): Uint8Array {
  const body = { container: h.container, epoch: h.epoch, from: h.from, to: h.to, at: h.at }
  return new TextEncoder().encode(SIGNING_CONTEXT + JSON.stringify(body))
}

/**
 * Signs a handover with the previous owner's key. Throws if the body is invalid, or if
 * `from` is not the peer id of `privateKey` (a certificate nobody could verify).
 */
export async function signHandover (privateKey: PrivateKey, h: HandoverBody): Promise<Handover> {
  const body = HandoverBodySchema.parse(h)
  if (privateKey.type !== 'Ed25519') throw new Error(`handover keys must be Ed25519, not ${privateKey.type}`)
  const signerId = peerIdFromString(body.from)
  if (signerId.publicKey == null || !signerId.publicKey.equals(privateKey.publicKey)) {
    throw new Error(`handover from ${body.from} cannot be signed with another peer's key`)
  }
  const sig = await privateKey.sign(handoverSigningBytes(body))
  return { ...body, sig: Buffer.from(sig).toString('base64url') }
}

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 raw key bytes follow. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** Recent verdicts, keyed by everything that was verified: a claim repeated every heartbeat is checked once. */
const verdicts = new Map<string, boolean>()
const MAX_VERDICTS = 1024

/**
 * True only if `h` is a well-formed handover whose signature verifies with the key of
 * its `from` peer id. Never throws: anything else (garbage, a non-Ed25519 peer id, a
 * bad signature) is false. Synchronous.
 */
export function verifyHandover (h: Handover): boolean {
  try {
    const parsed = HandoverSchema.safeParse(h)
    if (!parsed.success) return false
    const v = parsed.data
    const bytes = handoverSigningBytes(v)
    const key = `${v.sig}\n${v.container}\n${v.epoch}\n${v.from}\n${v.to}\n${v.at}`
    const known = verdicts.get(key)
    if (known != null) return known
    const ok = verifyEd25519(v.from, bytes, Buffer.from(v.sig, 'base64url'))
    if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value as string)
    verdicts.set(key, ok)
    return ok
  } catch {
    return false
  }
}

function verifyEd25519 (from: string, data: Uint8Array, sig: Buffer): boolean {
  if (sig.length !== 64) return false
  const publicKey = peerIdFromString(from).publicKey
  if (publicKey?.type !== 'Ed25519') return false
  const der = Buffer.concat([ED25519_SPKI_PREFIX, publicKey.raw])
  return crypto.verify(null, data, crypto.createPublicKey({ key: der, format: 'der', type: 'spki' }), sig)
}
