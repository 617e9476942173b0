import { z } from 'zod'
import { HandoverSchema, MAX_EPOCH, MAX_RESUMES } from '../../cluster/handover.ts'
import { LeaseProofSchema } from '../../failover/grant.ts'
import { MAX_CLAIM_SET, MAX_REMOVED_NAMES } from './claim-set.ts'
import { SwimChangeSchema } from './swim-protocol.ts'

export { MAX_EPOCH }

/**
 * The membership message published on the cluster topic, and its validation.
 * Wire format: UTF-8 JSON, at most MAX_HEARTBEAT_BYTES, versioned by `v`
 * (protocols/membership.md). Everything a peer sends is checked here before the
 * membership view looks at it; anything else is dropped with a named reason.
 */

export const HEARTBEAT_VERSION = 4
export const MAX_HEARTBEAT_BYTES = 64 * 1024
/**
 * Claims listed in one heartbeat (the whole set when it is small, otherwise what changed
 * lately: claim-set.ts). A sender lists at most INLINE_MAX_CLAIMS (64); a receiver
 * accepts up to this many. The set itself may hold up to MAX_CLAIM_SET claims: the
 * rest is fetched over /msc/claims/1.
 */
export const MAX_CONTAINERS = 512
export { MAX_CLAIM_SET }
/** The view refuses a claim more than this above the epoch it holds for the name (0 for an unknown name). */
export const MAX_EPOCH_JUMP = 2 ** 20

const peerIdText = z.string().min(20).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/)
const containerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/)
/** A dotted IPv4 address: four decimal bytes, no leading zeros, nothing around them. */
const ipv4 = z.string().max(15).regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/)

export const ContainerClaimSchema = z.object({
  name: containerName,
  /** Ownership epoch: raised by one at each handover; the highest wins. At most MAX_EPOCH. */
  epoch: z.number().int().min(1).max(MAX_EPOCH),
  state: z.enum(['running', 'paused', 'created', 'stopped', 'checkpointed']),
  /**
   * The previous owner's signed handover to the sender at this epoch (a container that
   * came by migration): the proof a view needs to move the name from a live owner.
   */
  handover: HandoverSchema.optional(),
  /**
   * A majority's grants of the lease at this epoch to the sender (a failover): the
   * proof a view needs to move the name from an owner that died. Checked against the
   * persisted member list (protocols/lease.md).
   */
  grant: LeaseProofSchema.optional(),
  /** The container's own LAN address (`--network lan`): one container in the cluster holds it. */
  address: ipv4.optional(),
  /**
   * How often the sender ran the container again at this epoch from a dump or a
   * checkpoint (absent: never). A migration target that lost the decision takes a
   * `running` claim for a resume only when this is above the count in the offer.
   */
  resumes: z.number().int().min(1).max(MAX_RESUMES).optional()
}).strict()

/** The sender's claim set in brief (claim-set.ts, ClaimSummary). */
export const ClaimSummarySchema = z.object({
  rev: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  base: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  count: z.number().int().min(0).max(MAX_CLAIM_SET),
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  removed: z.array(containerName).max(MAX_REMOVED_NAMES)
}).strict()

export const HeartbeatSchema = z.object({
  v: z.literal(HEARTBEAT_VERSION),
  type: z.enum(['heartbeat', 'leave']),
  peerId: peerIdText,
  /** Start time of the sending node's process (ms): a restart is a new incarnation. */
  incarnation: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** Increases by one per message within an incarnation: replays are dropped. */
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  sentAt: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  name: z.string().min(1).max(64),
  version: z.string().min(1).max(32),
  role: z.enum(['node', 'standby', 'observer']),
  addrs: z.array(z.string().min(1).max(256)).max(32),
  /** With `claims`: the claims changed between claims.base and claims.rev (all of them when base is 0). Without: the whole set. */
  containers: z.array(ContainerClaimSchema).max(MAX_CONTAINERS),
  claims: ClaimSummarySchema.optional(),
  resources: z.object({
    memFreeBytes: z.number().int().min(0),
    memTotalBytes: z.number().int().min(0),
    diskFreeBytes: z.number().int().min(0)
  }).strict()
}).strict()

export type Heartbeat = z.infer<typeof HeartbeatSchema>

/** SWIM verdicts published on the topic: a few state changes, not the sender's whole state. */
export const MAX_TOPIC_CHANGES = 16

export const ChangesMessageSchema = z.object({
  v: z.literal(HEARTBEAT_VERSION),
  type: z.literal('changes'),
  peerId: peerIdText,
  incarnation: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  sentAt: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  changes: z.array(SwimChangeSchema).min(1).max(MAX_TOPIC_CHANGES)
}).strict()

export type ChangesMessage = z.infer<typeof ChangesMessageSchema>
export type ContainerClaim = z.infer<typeof ContainerClaimSchema>

export const DROP_REASONS = [
  'oversized',
  'malformed',
  'version',
  'forged-sender',
  'not-member',
  'stale',
  'replayed',
  'epoch-regression',
  'owner-conflict',
  'unproven-handover',
  'epoch-jump',
  'claim-limit',
  'claims-digest',
  'claims-page'
] as const

export type DropReason = typeof DROP_REASONS[number]

export type DecodeResult = { ok: true; heartbeat: Heartbeat } | { ok: false; reason: DropReason; detail: string }

export function encodeHeartbeat (hb: Heartbeat): Uint8Array {
  const bytes = new TextEncoder().encode(JSON.stringify(hb))
  if (bytes.length > MAX_HEARTBEAT_BYTES) throw new Error(`heartbeat of ${bytes.length} bytes exceeds ${MAX_HEARTBEAT_BYTES}`)
  return bytes
}

/**
 * Decodes and validates one message. `from` is the sender gossipsub authenticated
 * (StrictSign): a heartbeat speaking for another peer is forged.
 */
export function decodeHeartbeat (data: Uint8Array, from: string): DecodeResult {
  const r = decodeMessage(data, from)
  if (r.ok && 'changes' in r) return { ok: false, reason: 'malformed', detail: 'a changes message where a heartbeat was expected' }
  return r
}

export type MessageResult = DecodeResult | { ok: true; changes: ChangesMessage }

/**
 * Decodes and validates any message of the topic: a heartbeat, a leave, or SWIM
 * changes. `from` is the sender gossipsub authenticated (StrictSign).
 */
export function decodeMessage (data: Uint8Array, from: string): MessageResult {
  if (data.length > MAX_HEARTBEAT_BYTES) return { ok: false, reason: 'oversized', detail: `${data.length} bytes` }
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data))
  } catch (err) {
    return { ok: false, reason: 'malformed', detail: `not JSON: ${(err as Error).message.slice(0, 80)}` }
  }
  if (json != null && typeof json === 'object' && 'v' in json && (json as { v: unknown }).v !== HEARTBEAT_VERSION) {
    return { ok: false, reason: 'version', detail: `version ${JSON.stringify((json as { v: unknown }).v).slice(0, 20)}` }
  }
  if (json != null && typeof json === 'object' && (json as { type?: unknown }).type === 'changes') {
    const c = ChangesMessageSchema.safeParse(json)
    if (!c.success) {
      const issue = c.error.issues[0]
      return { ok: false, reason: 'malformed', detail: `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`.slice(0, 160) }
    }
    if (c.data.peerId !== from) return { ok: false, reason: 'forged-sender', detail: `claims ${c.data.peerId}` }
    return { ok: true, changes: c.data }
  }
  const parsed = HeartbeatSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    return { ok: false, reason: 'malformed', detail: `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`.slice(0, 160) }
  }
  if (parsed.data.peerId !== from) return { ok: false, reason: 'forged-sender', detail: `claims ${parsed.data.peerId}` }
  const names = new Set<string>()
  for (const c of parsed.data.containers) {
    if (names.has(c.name)) return { ok: false, reason: 'malformed', detail: `container ${c.name} listed twice` }
    names.add(c.name)
  }
  const s = parsed.data.claims
  if (s != null) {
    if (s.base > s.rev) return { ok: false, reason: 'malformed', detail: `claims.base ${s.base} > claims.rev ${s.rev}` }
    if (parsed.data.containers.length > s.count) return { ok: false, reason: 'malformed', detail: `${parsed.data.containers.length} claims listed, the set has ${s.count}` }
    if (s.base === 0 && (parsed.data.containers.length !== s.count || s.removed.length > 0)) {
      return { ok: false, reason: 'malformed', detail: 'a set from revision 0 must list every claim and remove nothing' }
    }
    const removed = new Set<string>()
    for (const name of s.removed) {
      if (names.has(name) || removed.has(name)) return { ok: false, reason: 'malformed', detail: `container ${name} listed twice` }
      removed.add(name)
    }
  }
  return { ok: true, heartbeat: parsed.data }
}
