import fs from 'node:fs/promises'
import path from 'node:path'
import { z } from 'zod'
import { writeFileAtomic } from '../util/atomic-file.ts'

/**
 * The source's migration journal: DIR/tmp/mig-out-ID/journal.json, beside the final
 * dump, written (atomically, fsynced) at each phase change of an outgoing migration,
 * so that a source node restarted mid-migration knows how far it got
 * (protocols/migrate.md, "Crashes and restarts"):
 *
 *   dumped              the final dump is on disk; the target has not said "restored".
 *                       The dump is the container: it becomes a checkpoint here. A
 *                       dump that streamed its pages to the target (`streamedPages`)
 *                       left the container frozen here instead: it stays frozen, and
 *                       `msc restore` thaws it.
 *   restored-on-target  the target said "restored": the point of no return was
 *                       passed, the source never runs the container again; a restart
 *                       finishes the release (the target settles it as its own).
 *   committed           the target acknowledged the commit: the same, known for sure.
 *
 * No journal (a node stopped before or during the dump) counts as `dumped`.
 */
export const OUTGOING_PHASES = ['dumped', 'restored-on-target', 'committed'] as const
export type OutgoingPhase = typeof OUTGOING_PHASES[number]

export const OutgoingJournalSchema = z.object({
  v: z.literal(1),
  migrationId: z.string().min(1).max(64),
  container: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/),
  /** The epoch the source held; the target owns it at epoch + 1 once committed. */
  epoch: z.number().int().min(0),
  target: z.string().min(1).max(128),
  targetName: z.string().max(256),
  phase: z.enum(OUTGOING_PHASES),
  /** The final dump sent its pages to the target; the container was left frozen here. */
  streamedPages: z.boolean().optional(),
  /** When this phase was written (ISO 8601). */
  at: z.string()
}).strict()

export type OutgoingJournal = z.infer<typeof OutgoingJournalSchema>

export const JOURNAL_FILE = 'journal.json'

export async function writeOutgoingJournal (staging: string, j: Omit<OutgoingJournal, 'v' | 'at'>): Promise<void> {
  const entry: OutgoingJournal = { v: 1, ...j, at: new Date().toISOString() }
  await writeFileAtomic(path.join(staging, JOURNAL_FILE), JSON.stringify(entry) + '\n', { mode: 0o600 })
}

/** The journal in `staging`, or null when there is none or it does not parse (treated as `dumped`). */
export async function readOutgoingJournal (staging: string): Promise<OutgoingJournal | null> {
  try {
    const r = OutgoingJournalSchema.safeParse(JSON.parse(await fs.readFile(path.join(staging, JOURNAL_FILE), 'utf8')))
    return r.success ? r.data : null
  } catch {
    return null
  }
}

/** Past the point of no return: the source must never run the container again. */
export function sourceReleased (j: OutgoingJournal | null): boolean {
  return j != null && (j.phase === 'restored-on-target' || j.phase === 'committed')
}
