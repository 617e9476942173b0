import { z } from 'zod'
import { HandoverSchema } from '../cluster/handover.ts'
import { containerName, epochNumber, LeaseGrantSchema, peerIdText } from './grant.ts'

/**
 * The lease protocol's messages (protocols/lease.md): one request and one response per
 * stream, each one JSON frame (src/protocols/framing.ts) of at most MAX_LEASE_FRAME
 * bytes, every object strict (an unknown field makes the message malformed).
 *
 *   requester: lease   {type, v, items: [{container, epoch, handover?}]}
 *   grantor:   grants  {type, items: [granted | refused]}   (same order, same length)
 *   requester: release {type, v, items: [{container, epoch}]}
 *   grantor:   released {type}
 *
 * The requester (holder) is the stream's authenticated remote peer, never a field.
 */
export const LEASE_PROTOCOL = '/msc/lease/1.0.0'
export const LEASE_VERSION = 1
export const MAX_LEASE_FRAME = 256 * 1024
/**
 * Items per message. The worst case (names of 63 characters, peer ids of 128, epochs
 * of 13 digits, details of 200 printable ASCII characters that JSON escapes to 2
 * bytes each) is under 1 KiB an item: 256 of them fit a frame. A holder of more
 * containers sends several requests.
 */
export const MAX_LEASE_ITEMS = 256
export const MAX_DETAIL_CHARS = 200

export const LeaseItemSchema = z.object({
  container: containerName,
  epoch: epochNumber,
  /** The current holder's handover to the requester at `epoch` (a migration). */
  handover: HandoverSchema.optional(),
  /** A failover: only grantors that know the current lease (and saw it run out) may grant it. */
  takeover: z.boolean().optional()
}).strict()

export const LeaseRequestSchema = z.object({
  type: z.literal('lease'),
  v: z.literal(LEASE_VERSION),
  items: z.array(LeaseItemSchema).min(1).max(MAX_LEASE_ITEMS)
}).strict()

export const ReleaseRequestSchema = z.object({
  type: z.literal('release'),
  v: z.literal(LEASE_VERSION),
  items: z.array(z.object({
    container: containerName,
    epoch: epochNumber,
    /** expire (default): free it now; park: keep it, not renewed, never taken over; remove: forget it. */
    mode: z.enum(['expire', 'park', 'remove']).optional()
  }).strict()).min(1).max(MAX_LEASE_ITEMS)
}).strict()

export const RequestSchema = z.discriminatedUnion('type', [LeaseRequestSchema, ReleaseRequestSchema])

export const GrantedItemSchema = z.object({
  container: containerName,
  epoch: epochNumber,
  granted: z.literal(true),
  grant: LeaseGrantSchema,
  /** How long the lease runs on the grantor's clock from its decision. */
  expiresInMs: z.number().int().min(0).max(2 ** 31)
}).strict()

export const RefusedItemSchema = z.object({
  container: containerName,
  epoch: epochNumber,
  granted: z.literal(false),
  /** A stable word: the grantor's reasons (lease-grantor.ts), and others in later versions. */
  reason: z.string().regex(/^[a-z][a-z-]{0,31}$/),
  /** For people: printable ASCII (sanitizeDetail), at most MAX_DETAIL_CHARS. */
  detail: z.string().max(MAX_DETAIL_CHARS).regex(/^[\x20-\x7e]*$/),
  /** The grantor's record when it has one: the epoch and holder it knows. */
  currentEpoch: epochNumber.optional(),
  currentHolder: peerIdText.optional()
}).strict()

export const GrantsResponseSchema = z.object({
  type: z.literal('grants'),
  items: z.array(z.union([GrantedItemSchema, RefusedItemSchema])).max(MAX_LEASE_ITEMS)
}).strict()

export const ReleasedResponseSchema = z.object({
  type: z.literal('released'),
  /** Per request item, in order: whether the grantor held that lease for the requester (and so released it). */
  done: z.array(z.boolean()).max(MAX_LEASE_ITEMS).optional()
}).strict()

/** A detail fit for the wire: printable ASCII (others become `?`), at most MAX_DETAIL_CHARS. */
export function sanitizeDetail (s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, MAX_DETAIL_CHARS)
}

export type LeaseItem = z.infer<typeof LeaseItemSchema>
export type LeaseRequest = z.infer<typeof LeaseRequestSchema>
export type ReleaseRequest = z.infer<typeof ReleaseRequestSchema>
export type LeaseProtocolRequest = z.infer<typeof RequestSchema>
export type GrantedItem = z.infer<typeof GrantedItemSchema>
export type RefusedItem = z.infer<typeof RefusedItemSchema>
export type GrantsResponse = z.infer<typeof GrantsResponseSchema>
export type ReleasedResponse = z.infer<typeof ReleasedResponseSchema>
