import { createHash } from 'node:crypto'
import { z } from 'zod'
import type { Stream } from '@libp2p/interface'
import { FramedStream, FRAME_JSON } from '../../protocols/framing.ts'
import { MAX_PIGGYBACK, type SwimChange } from './swim-probe.ts'

/**
 * `/msc/swim/1`: SWIM's probe messages between members (protocols/membership.md,
 * "Failure detection"). One exchange per stream: the asker writes one request frame,
 * the answerer one reply frame, and both close. Frames use msc's framing
 * (src/protocols/framing.ts, JSON frames), are bounded in bytes, and are validated
 * (strict schemas) before anything in them is used.
 *
 *   ping      -> ack                       (the answerer is up)
 *   ping-req  -> ack | nack                (the answerer probed `target` for the asker)
 *   sync      -> sync                      (push-pull: both send their heartbeat, and the digest of the
 *                                           members they know; the members themselves only when the
 *                                           digests differ)
 */

export const SWIM_PROTOCOL = '/msc/swim/1'
/** 2: a sync carries the digest of its member list, and the list only when asked for it (1 listed every member in every sync). */
export const SWIM_VERSION = 2
/** A ping, ping-req, ack or nack frame. */
export const MAX_PROBE_BYTES = 8 * 1024
/** Members listed in one sync. */
export const MAX_SYNC_MEMBERS = 1024
/** Addresses given per member in a sync (the first of its heartbeat's). */
export const MAX_SYNC_ADDRS = 2
/** The sender's own heartbeat in a sync, as its JSON text (a heartbeat is at most 64 KiB). */
export const MAX_SYNC_HEARTBEAT_CHARS = 64 * 1024
/** A sync frame: its heartbeat and 1024 members with their addresses. */
export const MAX_SYNC_BYTES = 1024 * 1024
/** Inbound /msc/swim/1 streams per connection: a peer has one probe, a few ping-reqs and a sync in flight. */
export const MAX_SWIM_STREAMS = 8

const peerIdText = z.string().min(20).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/)
const order = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)

export const SwimChangeSchema = z.object({
  peer: peerIdText,
  incarnation: order,
  refuted: order,
  state: z.enum(['alive', 'suspect', 'dead']),
  by: peerIdText
}).strict()

const changes = z.array(SwimChangeSchema).max(MAX_PIGGYBACK)

/** A member in a sync: its change, and where to dial it (a member the receiver may not know yet). */
export const SyncMemberSchema = SwimChangeSchema.extend({
  addrs: z.array(z.string().min(1).max(256)).max(MAX_SYNC_ADDRS)
}).strict()

const sync = z.object({
  v: z.literal(SWIM_VERSION),
  type: z.literal('sync'),
  /** The sender's own heartbeat, validated as one received on the topic (it is the stream's remote peer's). */
  heartbeat: z.string().min(1).max(MAX_SYNC_HEARTBEAT_CHARS).optional(),
  /** membersDigest of the sender's member list: a receiver whose own list has the same digest has nothing to learn from it. */
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  /** The list itself: in a request when the sender was told the digests differ, in a reply when they do. */
  members: z.array(SyncMemberSchema).max(MAX_SYNC_MEMBERS).optional()
}).strict()

export const SwimRequestSchema = z.discriminatedUnion('type', [
  z.object({ v: z.literal(SWIM_VERSION), type: z.literal('ping'), changes }).strict(),
  z.object({ v: z.literal(SWIM_VERSION), type: z.literal('ping-req'), target: peerIdText, timeoutMs: z.number().int().min(1).max(60_000), changes }).strict(),
  sync
])

export const SwimReplySchema = z.discriminatedUnion('type', [
  z.object({ v: z.literal(SWIM_VERSION), type: z.literal('ack'), changes }).strict(),
  z.object({ v: z.literal(SWIM_VERSION), type: z.literal('nack'), changes }).strict(),
  sync
])

export type SyncMessage = z.infer<typeof sync>

/**
 * The digest of a member list: sha256 over each member's peer id, incarnation, refuted
 * count and state, sorted by peer id. Who reached a verdict (`by`) and the addresses
 * are left out: they differ between nodes that agree on every member's state. Two
 * nodes of a settled cluster hold the same list, so their syncs need not carry it.
 */
export function membersDigest (members: ReadonlyArray<Pick<SwimChange, 'peer' | 'incarnation' | 'refuted' | 'state'>>): string {
  const lines = members.map((m) => `${m.peer} ${m.incarnation} ${m.refuted} ${m.state}\n`).sort()
  const h = createHash('sha256')
  for (const l of lines) h.update(l)
  return h.digest('hex')
}

export type SwimRequest = z.infer<typeof SwimRequestSchema>
export type SwimReply = z.infer<typeof SwimReplySchema>

/** A request this node refuses to serve (the stream is reset and the refusal counted). */
export class SwimRefusal extends Error {
  readonly reason: 'not-member' | 'malformed' | 'target-not-member'
  constructor (reason: SwimRefusal['reason'], message: string) {
    super(message)
    this.name = 'SwimRefusal'
    this.reason = reason
  }
}

/** Reads one request; any framing or schema failure is a `malformed` refusal. */
export async function readRequest (stream: Stream, signal: AbortSignal): Promise<{ request: SwimRequest; framed: FramedStream }> {
  const framed = new FramedStream(stream, { maxFrameBytes: MAX_SYNC_BYTES, idleTimeoutMs: 5_000 })
  try {
    const f = await framed.readFrame(signal)
    if (f == null) throw new SwimRefusal('malformed', 'the stream ended before a request')
    const request = parse(f.payload, f.type, SwimRequestSchema)
    if (request.type !== 'sync' && f.payload.byteLength > MAX_PROBE_BYTES) throw new SwimRefusal('malformed', `a ${request.type} of ${f.payload.byteLength} bytes (limit ${MAX_PROBE_BYTES})`)
    return { request, framed }
  } catch (err) {
    if (err instanceof SwimRefusal) throw err
    throw new SwimRefusal('malformed', (err as Error).message.slice(0, 200))
  }
}

function parse<S extends z.ZodType> (payload: Uint8Array, type: number, schema: S): z.infer<S> {
  if (type !== FRAME_JSON) throw new SwimRefusal('malformed', `frame type ${type}, expected JSON`)
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload))
  } catch {
    throw new SwimRefusal('malformed', 'not UTF-8 JSON')
  }
  const r = schema.safeParse(value)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new SwimRefusal('malformed', `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`.slice(0, 200))
  }
  return r.data
}

/** Sends one request on an open stream and reads the reply; throws when none valid comes. */
export async function exchange (stream: Stream, request: SwimRequest, signal: AbortSignal): Promise<SwimReply> {
  const framed = new FramedStream(stream, { maxFrameBytes: request.type === 'sync' ? MAX_SYNC_BYTES : MAX_PROBE_BYTES, idleTimeoutMs: 0 })
  try {
    await framed.writeJson(request, signal)
    const f = await framed.readFrame(signal)
    if (f == null) throw new SwimRefusal('malformed', 'the stream ended before a reply')
    const reply = parse(f.payload, f.type, SwimReplySchema)
    if ((request.type === 'sync') !== (reply.type === 'sync')) throw new SwimRefusal('malformed', `a ${reply.type} answering a ${request.type}`)
    await framed.closeWrite(signal).catch(() => {})
    return reply
  } catch (err) {
    framed.abort(err as Error)
    throw err
  }
}

/** Writes the reply and closes. */
export async function reply (framed: FramedStream, r: SwimReply, signal: AbortSignal): Promise<void> {
  await framed.writeJson(r, signal)
  await framed.closeWrite(signal).catch(() => {})
}

export type { SwimChange }
