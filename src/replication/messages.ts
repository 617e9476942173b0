/**
 * `/msc/replicate/1.0.0` wire format (protocols/replicate.md). One stream per
 * generation, owner to standby, framed by protocols/framing.ts: type 1 frames carry
 * JSON messages, type 2 a zstd-compressed piece of an image file, type 3 a chunk of a
 * pages file (replication/page-delta.ts). The rootfs travels beside it over
 * /msc/image, as transfers whose ids `begin` names.
 *
 *   owner                                          standby
 *   begin {generation, base, epoch, config, ...} ─▶ checks, stages .incoming-K
 *          ◀──────────────────────────────────── ready | nack
 *   (rootfs trees over /msc/image, ids from begin)
 *   file {name, size, sha256}, data, data, ... ─▶
 *   pages {name, pages, sha256}, chunk, ... ────▶  (pagemaps come before their pages)
 *   end {files} ────────────────────────────────▶  verifies, fsyncs, renames gen-K
 *          ◀──────────────────────────────────── ack {generation} | nack {reason}
 *
 * `drop {container, epoch}` (alone on a stream) tells a standby to delete its replica:
 * the container was removed, stopped, or moved elsewhere.
 */
import { z } from 'zod'
import { MAX_EPOCH } from '../cluster/handover.ts'
import { containerName, peerIdText } from '../failover/grant.ts'
import { LanNetworkSchema } from '../network/lan-address.ts'

export const REPLICATE_PROTOCOL = '/msc/replicate/1.0.0'
export const REPLICATE_VERSION = 1
export const FRAME_FILE_DATA = 2
export const FRAME_PAGES_CHUNK = 3
/** Raw bytes of an image file per data frame (compressed on the wire). */
export const FILE_CHUNK_BYTES = 1024 * 1024
/** Largest frame either side accepts: a pages chunk of 256 incompressible pages, or the begin message. */
export const MAX_REPLICATE_FRAME = 2 * 1024 * 1024
/** Image files one generation may hold (CRIU writes a few per process). */
export const MAX_IMAGE_FILES = 20_000

const transferId = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/)
/** CRIU's image directory is flat: a name, never a path. */
export const imageName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/)
const generation = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER)
const sha256 = z.string().regex(/^[0-9a-f]{64}$/)
const bytes = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)

export const BeginSchema = z.object({
  type: z.literal('begin'),
  v: z.literal(REPLICATE_VERSION),
  container: containerName,
  /** The owner's ownership epoch of the container. */
  epoch: z.number().int().min(1).max(MAX_EPOCH - 1),
  generation,
  /** The standby's generation this one is a delta against (its rootfs and pages), or null: a full one. */
  base: generation.nullable(),
  /** The bundle's config.json (checked against the bundle policy like a migration's). */
  config: z.record(z.string(), z.unknown()),
  /** How many standbys the owner keeps, and who they are now (for the failover order). */
  replicas: z.number().int().min(0).max(8),
  standbys: z.array(peerIdText).max(8),
  /** When the owner froze the container for this generation (its wall clock, ms). */
  dumpedAt: bytes,
  transfers: z.object({
    /** The whole rootfs (replace), only when base is null. */
    full: transferId.optional(),
    /** Rootfs changes since base, captured while the container was frozen (overlay). */
    delta: transferId.optional()
  }).strict(),
  /** Total bytes the generation will take on the standby (images + rootfs), for its disk check. */
  estimatedBytes: bytes,
  /**
   * Its own address on the LAN (`--network lan`), which a failover restores it at;
   * absent: the host's network. Checked again field by field on receipt (checkReceivedNetwork).
   */
  network: LanNetworkSchema.optional()
}).strict()
export type Begin = z.infer<typeof BeginSchema>

export const FileSchema = z.object({ type: z.literal('file'), name: imageName, size: bytes, sha256 }).strict()
export const PagesSchema = z.object({ type: z.literal('pages'), name: imageName, pages: z.number().int().min(0).max(2 ** 28), sha256 }).strict()
export const EndSchema = z.object({
  type: z.literal('end'),
  files: z.number().int().min(0).max(MAX_IMAGE_FILES),
  /** Which of begin's rootfs transfers were sent (an empty delta is not). */
  sent: z.object({ full: z.boolean(), delta: z.boolean() }).strict(),
  /** When the container was frozen for this generation (the owner's clock, ms): what its RPO counts from. */
  dumpedAt: bytes.optional()
}).strict()
export const BodySchema = z.discriminatedUnion('type', [FileSchema, PagesSchema, EndSchema])

export const DropSchema = z.object({ type: z.literal('drop'), v: z.literal(REPLICATE_VERSION), container: containerName, epoch: z.number().int().min(1).max(MAX_EPOCH) }).strict()
export const OpeningSchema = z.discriminatedUnion('type', [BeginSchema, DropSchema])

export const NACK_REASONS = ['not-owner', 'stale-epoch', 'policy', 'missing-base', 'no-space', 'busy', 'malformed', 'verify-failed', 'io-error', 'runs-here', 'witness', 'network'] as const
export type NackReason = typeof NACK_REASONS[number]

export const ReplySchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready') }).strict(),
  z.object({ type: z.literal('ack'), generation }).strict(),
  z.object({ type: z.literal('dropped') }).strict(),
  z.object({ type: z.literal('nack'), reason: z.enum(NACK_REASONS), detail: z.string().max(1024) }).strict()
])
export type Reply = z.infer<typeof ReplySchema>
