import { z } from 'zod'
import { HandoverSchema, MAX_RESUMES } from '../cluster/handover.ts'
import { LanNetworkSchema } from '../network/lan-address.ts'

/**
 * `/msc/migrate/1.0.0`: the control conversation of one migration, as length-prefixed
 * JSON frames (protocols/migrate.md). The source drives; the target answers.
 *
 *   source                         target
 *   offer  ───────────────────────▶         (checks name, space, CRIU features, bundle)
 *          ◀─────────────────────── accept | refuse
 *   (bundle, rootfs, images, log over /msc/image; pages over /msc/pages for post-copy)
 *   restore ──────────────────────▶         (runc restore, lazily for post-copy)
 *          ◀─────────────────────── restored | failed
 *   commit | abort ───────────────▶         (commit: owner epoch + 1, published)
 *          ◀─────────────────────── committed
 */

export const MIGRATE_PROTOCOL = '/msc/migrate/1.0.0'
export const MIGRATE_VERSION = 1
export const MAX_CONTROL_FRAME = 256 * 1024

export const STRATEGIES = ['stop-copy', 'post-copy', 'pre-copy'] as const
export type Strategy = typeof STRATEGIES[number]

const id = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/)
const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/)

/**
 * `sealedData`: the node can send and receive the trees over a sealed data channel
 * (src/protocols/sealed). `streamedPages`: a stop-copy dump can send its memory pages
 * to the target's CRIU page server while it dumps, over a second sealed connection.
 */
export const FeaturesSchema = z.object({ preCopy: z.boolean(), postCopy: z.boolean(), sealedData: z.boolean().optional(), streamedPages: z.boolean().optional() }).strict()
export type Features = z.infer<typeof FeaturesSchema>

export const OfferSchema = z.object({
  type: z.literal('offer'),
  v: z.literal(MIGRATE_VERSION),
  migrationId: id,
  container: name,
  /** What the user asked for; 'auto' lets the target pick the best both support. */
  strategy: z.enum([...STRATEGIES, 'auto']),
  /** The container's OCI config (root.path is rewritten by the target). */
  config: z.record(z.string(), z.unknown()),
  /** The owner epoch the source holds; the target will own it at epoch + 1. */
  epoch: z.number().int().min(1),
  /**
   * How often the source had run the container again at that epoch (absent: never). A
   * target that loses the decision counts a `running` claim as the source's resume only
   * when the claim's count is above this (settle.ts).
   */
  resumes: z.number().int().min(1).max(MAX_RESUMES).optional(),
  /** Standbys the container keeps (failover); its replication follows it to the target. */
  replicas: z.number().int().min(0).max(8).optional(),
  bundle: z.object({ digest: z.string().regex(/^[0-9a-f]{64}$/), files: z.number().int().min(0), bytes: z.number().int().min(0) }).strict(),
  /** What the target must be able to hold: rootfs + images (estimated) + log. */
  estimatedBytes: z.number().int().min(0),
  features: FeaturesSchema,
  source: z.object({ peerId: z.string().min(1).max(128), name: z.string().min(1).max(64) }).strict(),
  /** The peer id the source chose: a target that is not it refuses (no offer goes astray). */
  target: z.string().min(1).max(128),
  transfers: z.object({ bundle: id, delta: id, images: id, log: id, pages: id }).strict(),
  /** The container's own LAN address, which the target must give it (or refuse: NETWORK). */
  network: LanNetworkSchema.optional()
}).strict()
export type Offer = z.infer<typeof OfferSchema>

/**
 * The target's sealed data channel for this migration: its port (on the address the
 * source reaches the target at) and the channel's secret, known only to the two ends:
 * it travels inside this member-only, encrypted control stream.
 */
export const DataChannelSchema = z.object({
  port: z.number().int().min(1).max(65535),
  secret: z.string().regex(/^[A-Za-z0-9+/]{43}=$/),
  /** Stop-copy: where one sealed connection reaches the target's page server (same secret). */
  pagesPort: z.number().int().min(1).max(65535).optional()
}).strict()
export type DataChannel = z.infer<typeof DataChannelSchema>

export const AnswerSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('accept'), strategy: z.enum(STRATEGIES), needBundle: z.boolean(), features: FeaturesSchema, data: DataChannelSchema.optional() }).strict(),
  z.object({ type: z.literal('refuse'), code: z.string().max(64), reason: z.string().max(1024) }).strict()
])
export type Answer = z.infer<typeof AnswerSchema>

/** Pre-copy: the next pre-dump round is coming as tree `transferId`. */
export const PreRoundSchema = z.object({ type: z.literal('pre-round'), round: z.number().int().min(1).max(16), transferId: id }).strict()
export const PreReadySchema = z.object({ type: z.literal('pre-ready'), round: z.number().int().min(1).max(16) }).strict()

/** `preRounds`: how many pre-dump rounds the final images build on (pre-copy). */
/**
 * `handover`: the source's signed certificate that the target owns the container at
 * epoch + 1 (src/cluster/handover.ts). Given here, before the source can know whether
 * the restore works, because a target that never hears the decision settles it from
 * membership and must then be able to prove the name is its own.
 */
/** `streamedPages`: the dump sent its pages to the target's page server (pagesPort), not in the images tree. */
export const RestoreSchema = z.object({ type: z.literal('restore'), lazy: z.boolean(), preRounds: z.number().int().min(0).max(16).optional(), streamedPages: z.boolean().optional(), handover: HandoverSchema }).strict()
export type RestoreRequest = z.infer<typeof RestoreSchema>

export const RestoreResultSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('restored'), pid: z.number().int(), restoreMs: z.number().min(0) }).strict(),
  z.object({ type: z.literal('failed'), reason: z.string().max(4096), details: z.array(z.string().max(1024)).max(32) }).strict()
])
export type RestoreResult = z.infer<typeof RestoreResultSchema>

export const DecisionSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('commit') }).strict(),
  z.object({ type: z.literal('abort'), reason: z.string().max(1024) }).strict()
])
export type Decision = z.infer<typeof DecisionSchema>

export const CommittedSchema = z.object({ type: z.literal('committed'), epoch: z.number().int().min(1) }).strict()

/** Target -> source, post-copy: the page transfer failed and the target's copy is gone. */
export const DiscardedSchema = z.object({ type: z.literal('discarded') }).strict()

/** Phases, in order, for timing and progress (P.Haul's names). */
export const PHASES = ['prepare', 'bundle', 'pre-copy', 'freeze-dump', 'transfer', 'restore', 'lazy-pages', 'commit', 'rollback'] as const
export type Phase = typeof PHASES[number]

/**
 * The strategy both ends can run. 'auto' prefers the least downtime: post-copy
 * (resume before memory moves), then pre-copy, then stop-copy (always works).
 * Returns an explanation when the requested one cannot run.
 */
export function chooseStrategy (requested: Strategy | 'auto', source: Features, target: Features, targetName: string): { strategy: Strategy } | { refuse: string } {
  const both = { preCopy: source.preCopy && target.preCopy, postCopy: source.postCopy && target.postCopy }
  const fallback = both.postCopy ? 'post-copy' : 'stop-copy'
  if (requested === 'auto') return { strategy: both.postCopy ? 'post-copy' : both.preCopy ? 'pre-copy' : 'stop-copy' }
  if (requested === 'pre-copy' && !both.preCopy) {
    const who = !source.preCopy && !target.preCopy ? 'both nodes' : !source.preCopy ? 'the source node' : `the target node ${targetName}`
    return { refuse: `pre-copy needs memory dirty tracking (soft-dirty), which the kernel of ${who} lacks (criu check --feature mem_dirty_track); use --strategy ${fallback}` }
  }
  if (requested === 'post-copy' && !both.postCopy) {
    const who = !source.postCopy ? 'the source node' : `the target node ${targetName}`
    return { refuse: `post-copy needs userfaultfd (criu check --feature uffd-noncoop), which ${who} lacks; use --strategy stop-copy` }
  }
  return { strategy: requested }
}
