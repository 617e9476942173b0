import fs from 'node:fs/promises'
import { z } from 'zod'
import { MscError } from '../util/errors.ts'
import { writeFileAtomic } from '../util/atomic-file.ts'
import { RecordSchema, verifyRecordProof, type ClusterRecord } from './records.ts'
import { MemberList, MAX_RECORDS } from './member-list.ts'

/**
 * DIR/cluster.json: which cluster this node belongs to and every record of its member
 * list. Written whole, atomically and fsynced, after each change; on load every
 * record's proof is checked again (a file edited by hand cannot add a member).
 */
export type ClusterMode = 'key' | 'token'

const FileSchema = z.object({
  v: z.literal(1),
  cluster: z.string().regex(/^[0-9a-f]{32}$/),
  /** key: formed by a shared key file; token: made by a first node, joined by tokens. */
  mode: z.enum(['key', 'token']),
  records: z.array(RecordSchema).max(MAX_RECORDS)
}).strict()

export interface ClusterFile {
  cluster: string
  mode: ClusterMode
  records: ClusterRecord[]
}

export async function readClusterFile (file: string): Promise<ClusterFile | null> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new MscError('INVALID_STATE', `cannot read the cluster file ${file}: ${(err as Error).message}`)
  }
  let parsed
  try {
    parsed = FileSchema.safeParse(JSON.parse(text))
  } catch (err) {
    throw new MscError('INVALID_STATE', `the cluster file ${file} is not JSON (${(err as Error).message}); restore it from a backup or move it away to leave the cluster`)
  }
  if (!parsed.success) throw new MscError('INVALID_STATE', `the cluster file ${file} is malformed; restore it from a backup or move it away to leave the cluster`)
  return parsed.data
}

export async function writeClusterFile (file: string, list: MemberList, mode: ClusterMode): Promise<void> {
  await writeFileAtomic(file, JSON.stringify({ v: 1, cluster: list.clusterId, mode, records: list.all() }, null, 1) + '\n', { mode: 0o600 })
}

/** Loads the records whose proofs hold into a member list; says how many did not. */
export async function memberListFrom (f: ClusterFile, admitKey?: Buffer): Promise<{ list: MemberList; rejected: number }> {
  const list = new MemberList(f.cluster)
  let rejected = 0
  for (const r of f.records) {
    if (await verifyRecordProof(r, admitKey)) list.add(r)
    else rejected++
  }
  return { list, rejected }
}
