import { z } from 'zod'
import { RecordSchema, NODE_NAME_RE } from './records.ts'
import { MAX_RECORDS } from './member-list.ts'

/**
 * The two cluster protocols (protocols/cluster.md), length-prefixed JSON frames:
 *
 *   /msc/cluster/join/1.0.0   joiner: join {cluster, secret, name, addrs}
 *                             member: admitted {records} | refuse {code, reason}
 *   /msc/cluster/sync/1.0.0   either: sync {cluster, records}; the other answers the same
 *                             with its whole set (or refuse), both merge.
 *
 * These two are the only protocols a connected non-member may open: join while a token
 * is outstanding, sync in a key-file cluster (a key holder presents its admission).
 */
export const JOIN_PROTOCOL = '/msc/cluster/join/1.0.0'
export const SYNC_PROTOCOL = '/msc/cluster/sync/1.0.0'
export const CLUSTER_VERSION = 1
/** A full record set (4096 records of at most ~1 KiB) fits. */
export const MAX_CLUSTER_FRAME = 4 * 1024 * 1024

const clusterId = z.string().regex(/^[0-9a-f]{32}$/)

export const JoinRequestSchema = z.object({
  type: z.literal('join'),
  v: z.literal(CLUSTER_VERSION),
  cluster: clusterId,
  secret: z.string().regex(/^[0-9a-f]{64}$/),
  name: z.string().regex(NODE_NAME_RE),
  addrs: z.array(z.string().min(1).max(256)).max(16)
}).strict()

export const RefuseSchema = z.object({ type: z.literal('refuse'), code: z.string().max(64), reason: z.string().max(1024) }).strict()

export const JoinAnswerSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('admitted'), records: z.array(RecordSchema).max(MAX_RECORDS) }).strict(),
  RefuseSchema
])

export const SyncSchema = z.object({
  type: z.literal('sync'),
  v: z.literal(CLUSTER_VERSION),
  cluster: clusterId,
  records: z.array(RecordSchema).max(MAX_RECORDS)
}).strict()

export const SyncAnswerSchema = z.discriminatedUnion('type', [SyncSchema, RefuseSchema])
