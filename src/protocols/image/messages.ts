/**
 * `/msc/image/1.0.0` wire format (protocols/image.md). Frames come from framing.ts:
 * type 1 carries one JSON message, type 2 carries file bytes.
 *
 *   sender                                  receiver
 *   header ───────────────────────────────▶  (checks id, announced totals, limits, deletes)
 *   entry (dir | file | symlink) ─────────▶  (checks path, parent, kind, limits)
 *     data, data, ... (file only) ────────▶  (never more than the announced size)
 *     trailer {sha256} (file only) ───────▶  (size and hash must match)
 *   ... more entries ...
 *   end, then half-close ─────────────────▶  (counts must match; then commit)
 *          ◀─────────────────────────────── verdict {ok: true} | {ok: false, reason}
 *
 * The receiver may send a refusing verdict at any time and stop reading.
 */
import { z } from 'zod'
import { MscError, type MscErrorCode } from '../../util/errors.ts'
import { ProtocolError } from '../framing.ts'

export const IMAGE_PROTOCOL = '/msc/image/1.0.0'
export const IMAGE_VERSION = 1
export const FRAME_MSG = 1
export const FRAME_DATA = 2
/** File bytes per data frame. */
export const DATA_CHUNK_BYTES = 256 * 1024
/** Largest frame a receiver accepts (a header with many deletes is the big one). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024
const MAX_PATH_CHARS = 4096

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const relPath = z.string().max(MAX_PATH_CHARS)

/** Metadata every entry carries; mode holds permission bits only (0..0o7777). */
const meta = {
  mode: z.number().int().min(0).max(0o7777),
  uid: z.number().int().min(0).max(0xffffffff),
  gid: z.number().int().min(0).max(0xffffffff),
  mtimeMs: z.number().finite()
}
export const MetaSchema = z.object(meta)
export type Meta = z.infer<typeof MetaSchema>

export const HeaderSchema = z.object({
  type: z.literal('header'),
  v: z.number().int(),
  transferId: z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/),
  label: z.string().max(256),
  /** Entries of every kind (dir, file, symlink) that follow. */
  files: count,
  /** Sum of the sizes of the file entries. */
  bytes: count,
  /** Paths to remove from destDir before placing the entries (overlay mode only). */
  deletes: z.array(relPath),
  /** Metadata of the tree's root directory. */
  root: MetaSchema.optional()
})
export type TreeHeader = z.infer<typeof HeaderSchema>

export const EntrySchema = z.discriminatedUnion('kind', [
  z.object({ type: z.literal('entry'), kind: z.literal('dir'), path: relPath, ...meta }),
  z.object({ type: z.literal('entry'), kind: z.literal('file'), path: relPath, ...meta, size: count }),
  z.object({ type: z.literal('entry'), kind: z.literal('symlink'), path: relPath, ...meta, target: z.string().max(MAX_PATH_CHARS) })
])
export type Entry = z.infer<typeof EntrySchema>

export const TrailerSchema = z.object({ type: z.literal('trailer'), sha256: z.string().regex(/^[0-9a-f]{64}$/) })
export const EndSchema = z.object({ type: z.literal('end') })

/** What may follow the header: told apart by `type` first, then by `kind`. */
export const BodyMessageSchema = z.union([EntrySchema, TrailerSchema, EndSchema])

export const VerdictSchema = z.discriminatedUnion('ok', [
  z.object({ type: z.literal('verdict'), ok: z.literal(true), files: count, bytes: count }),
  z.object({ type: z.literal('verdict'), ok: z.literal(false), reason: z.string().max(64), error: z.string().max(4096) })
])
export type Verdict = z.infer<typeof VerdictSchema>

/** Every reason a receiver gives for a refusal (protocols/image.md lists when). */
export const REFUSAL_REASONS = [
  'MALFORMED',
  'FRAME_TOO_LARGE',
  'UNSUPPORTED_VERSION',
  'WRONG_TRANSFER',
  'UNKNOWN_TRANSFER',
  'BAD_PATH',
  'DUPLICATE_PATH',
  'NO_PARENT',
  'PATH_THROUGH_SYMLINK',
  'SYMLINK_ESCAPE',
  'FILE_OVERSIZE',
  'FILE_TRUNCATED',
  'HASH_MISMATCH',
  'TOO_MANY_FILES',
  'TOTAL_EXCEEDED',
  'LIMIT_EXCEEDED',
  'INCOMPLETE',
  'TRUNCATED',
  'IDLE_TIMEOUT',
  'STREAM_CLOSED',
  'DEST_EXISTS',
  'DEST_MISSING',
  'NO_SPACE',
  'IO_ERROR',
  'ABORTED'
] as const
export type RefusalReason = typeof REFUSAL_REASONS[number]

/** The MscError code a reason maps to: what the peer sent is an invalid argument. */
export function codeForReason (reason: string): MscErrorCode {
  switch (reason) {
    case 'NO_SPACE':
      return 'NO_SPACE'
    case 'DEST_EXISTS':
      return 'ALREADY_EXISTS'
    case 'DEST_MISSING':
      return 'NOT_FOUND'
    case 'IDLE_TIMEOUT':
    case 'STREAM_CLOSED':
    case 'IO_ERROR':
    case 'ABORTED':
    case 'TRUNCATED':
      return 'INTERNAL'
    default:
      return 'INVALID_ARGUMENT'
  }
}

export function refusal (reason: RefusalReason, message: string, cause?: unknown): ProtocolError {
  return new ProtocolError(reason, message, codeForReason(reason), cause != null ? { cause } : undefined)
}

/** Turns anything thrown while receiving into a ProtocolError with a known reason. */
export function asRefusal (err: unknown, signal?: AbortSignal): ProtocolError {
  if (err instanceof ProtocolError && (REFUSAL_REASONS as readonly string[]).includes(err.reason)) return err
  if (err instanceof ProtocolError) return refusal('MALFORMED', err.message, err)
  if (signal?.aborted === true) return refusal('ABORTED', `transfer aborted: ${(signal.reason as Error)?.message ?? 'aborted'}`, err)
  const e = err as NodeJS.ErrnoException
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') return refusal('NO_SPACE', `no space left on device: ${e.message}`, err)
  if (typeof e?.code === 'string' && e.code.startsWith('E')) return refusal('IO_ERROR', e.message, err)
  if (err instanceof MscError) return new ProtocolError('IO_ERROR', err.message, err.code, { cause: err })
  return refusal('IO_ERROR', e?.message ?? String(err), err)
}
