import crypto from 'node:crypto'
import { z } from 'zod'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'

/**
 * The signed records a cluster's member list is made of (protocols/cluster.md).
 *
 * - The cluster id names the cluster. A cluster made by a first node is
 *   sha256(creator peer id, nonce): nobody else can make a genesis record with that id,
 *   since it must be signed by the creator's key. A cluster formed by a key file is
 *   sha256 of the key: every holder of the key computes the same id.
 * - `admit`: a peer is a member. Signed by the admitting member's libp2p key (joins by
 *   token, and the genesis record, which the creator signs for itself), or, in a
 *   key-file cluster, proven by an HMAC keyed by the cluster key (the node admits
 *   itself: holding the key is what membership means there).
 * - `remove`: a member is out for good, signed by the member who removed it. A removal
 *   always wins over admissions of the same peer id.
 *
 * Records are verified once, when they arrive; a record that does not verify is never
 * stored or forwarded.
 */

export const PEER_ID_RE = /^[1-9A-HJ-NP-Za-km-z]{20,128}$/
export const NODE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

const peerIdText = z.string().regex(PEER_ID_RE)
const clusterIdText = z.string().regex(/^[0-9a-f]{32}$/)
const ms = z.number().int().min(0).max(2 ** 50)

export const AdmitRecordSchema = z.object({
  kind: z.literal('admit'),
  cluster: clusterIdText,
  peerId: peerIdText,
  name: z.string().regex(NODE_NAME_RE),
  addrs: z.array(z.string().min(1).max(256)).max(16),
  admittedAt: ms,
  /** The admitting member's peer id, or 'key' for a key-file self-admission. */
  admittedBy: z.union([peerIdText, z.literal('key')]),
  /** Only on the genesis record: the cluster id is sha256(creator, nonce). */
  nonce: z.string().regex(/^[0-9a-f]{32}$/).optional(),
  /** base64url: an Ed25519 signature by admittedBy, or an HMAC-SHA256 for 'key'. */
  proof: z.string().min(1).max(200)
}).strict()

export const RemoveRecordSchema = z.object({
  kind: z.literal('remove'),
  cluster: clusterIdText,
  peerId: peerIdText,
  removedAt: ms,
  removedBy: peerIdText,
  proof: z.string().min(1).max(200)
}).strict()

export const RecordSchema = z.discriminatedUnion('kind', [AdmitRecordSchema, RemoveRecordSchema])

export type AdmitRecord = z.infer<typeof AdmitRecordSchema>
export type RemoveRecord = z.infer<typeof RemoveRecordSchema>
export type ClusterRecord = z.infer<typeof RecordSchema>

export type Unsigned<T> = Omit<T, 'proof'>

/** What is signed: a fixed prefix and the record's fields in a fixed order. */
export function signedBytes (r: Unsigned<AdmitRecord> | Unsigned<RemoveRecord>): Uint8Array {
  const fields = r.kind === 'admit'
    ? [r.kind, r.cluster, r.peerId, r.name, JSON.stringify(r.addrs), r.admittedAt, r.admittedBy, r.nonce ?? '']
    : [r.kind, r.cluster, r.peerId, r.removedAt, r.removedBy]
  return new TextEncoder().encode('msc-cluster-record-v1\n' + fields.join('\n'))
}

export function genesisClusterId (creator: string, nonce: string): string {
  return sha256hex(`msc-cluster-genesis-v1\n${creator}\n${nonce}`).slice(0, 32)
}

export function keyClusterId (clusterKey: Uint8Array): string {
  return sha256hex(Buffer.concat([Buffer.from('msc-cluster-key-v1\n'), clusterKey])).slice(0, 32)
}

/** The HMAC key of key-file admissions: derived, so the raw key is never used twice. */
export function admissionKey (clusterKey: Uint8Array): Buffer {
  return crypto.createHash('sha256').update('msc-cluster-admit-v1\n').update(clusterKey).digest()
}

export async function signRecord<T extends Unsigned<AdmitRecord> | Unsigned<RemoveRecord>> (key: PrivateKey, r: T): Promise<T & { proof: string }> {
  const sig = await key.sign(signedBytes(r))
  return { ...r, proof: Buffer.from(sig).toString('base64url') }
}

export function hmacAdmission (admitKey: Buffer, r: Unsigned<AdmitRecord>): AdmitRecord {
  return { ...r, proof: crypto.createHmac('sha256', admitKey).update(signedBytes(r)).digest('base64url') }
}

/**
 * Checks a record's proof (not whether its signer is a member: that is the member
 * list's rule). `admitKey` is the cluster key's admission key, when this node has one.
 */
export async function verifyRecordProof (r: ClusterRecord, admitKey?: Buffer): Promise<boolean> {
  try {
    const { proof, ...body } = r
    if (r.kind === 'admit' && r.admittedBy === 'key') {
      if (admitKey == null) return false
      const want = crypto.createHmac('sha256', admitKey).update(signedBytes(body as Unsigned<AdmitRecord>)).digest()
      const got = Buffer.from(proof, 'base64url')
      return got.length === want.length && crypto.timingSafeEqual(got, want)
    }
    const signer = r.kind === 'admit' ? r.admittedBy : r.removedBy
    if (r.kind === 'admit' && r.nonce != null && (r.admittedBy !== r.peerId || genesisClusterId(r.peerId, r.nonce) !== r.cluster)) return false
    const pub = peerIdFromString(signer).publicKey
    if (pub == null) return false
    return await pub.verify(signedBytes(body as Unsigned<AdmitRecord> | Unsigned<RemoveRecord>), Buffer.from(proof, 'base64url'))
  } catch {
    return false
  }
}

/** Identifies a record (for de-duplication and digests). */
export function recordKey (r: ClusterRecord): string {
  return r.kind === 'admit' ? `admit/${r.peerId}/${r.admittedBy}/${r.admittedAt}` : `remove/${r.peerId}/${r.removedBy}/${r.removedAt}`
}

function sha256hex (s: string | Buffer): string {
  return crypto.createHash('sha256').update(s).digest('hex')
}
