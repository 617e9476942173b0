import type { Logger } from '../util/logger.ts'
import { toMscError } from '../util/errors.ts'
import type { ClusterPort, ContainerHost } from './host.ts'
import { verifyHandover, type Handover } from '../cluster/handover.ts'

/**
 * How a target settles an incoming migration whose decision (commit / abort) it never
 * got: the stream broke, the decision timed out, or this node restarted in between.
 * One rule for all of these (protocols/migrate.md, "Crashes and restarts").
 *
 * The source decides when it reads "restored": from then on it never runs the
 * container again and releases it; before that (or without it) it resumes it. So the
 * answer is in what the source says of the container in its heartbeats:
 *
 *   claims it running at a later epoch, or at the offered epoch
 *        having resumed it since the offer (its `resumes` count is above the offer's) -> it resumed it: abort
 *   claims it running at the offered epoch, resumes not above      -> a claim from before the
 *        freeze (the heartbeat that shows it frozen has not arrived, or never went out
 *        because the source died first): wait. Taking it for a resume discarded the
 *        copy of a source past its point of no return: the container ran nowhere.
 *   does not claim it                                            -> it released it: commit
 *   claims it checkpointed                                       -> it holds only images
 *        (a source that died after its dump); it never restores them by itself, and
 *        fences its copy once it sees ours at epoch + 1: commit
 *   claims it stopped, created or paused                         -> the source is between
 *        its dump and its resume or release (or stopped there, and its restart will
 *        show which): wait. Paused is not resumed: stop-copy keeps the source's copy
 *        frozen from the dump until it thaws it (rollback: running) or releases it
 *        (no claim), and a source killed in between claims it paused until it is
 *        seen dead. Aborting on it discarded the only copy that was to run.
 *   a source that left (a graceful stop) is judged by its last heartbeat's claims
 *   suspect, dead, or not heard yet                              -> wait
 *
 * and after `timeoutMs` of waiting: commit (a source silent that long is not running
 * it; epoch fencing stops its copy should it come back from a partition running it).
 */
export type Verdict = 'commit' | 'abort' | 'wait'

/** What the source's heartbeats say of the container (ClusterPort.claimOf). */
export interface SourceClaim {
  epoch: number
  state: string
  resumes?: number
}

/** `resumes`: the source's count in its offer (OfferSchema): how often it had run the container again before this migration. */
export function settleVerdict (sourceState: string | undefined, claim: SourceClaim | undefined, epoch: number, resumes = 0): Verdict {
  if (sourceState !== 'alive' && sourceState !== 'left') return 'wait'
  if (claim == null) return 'commit'
  if (claim.epoch < epoch) return 'commit' // an older claim is not about this migration
  if (claim.state === 'running') return claim.epoch > epoch || (claim.resumes ?? 0) > resumes ? 'abort' : 'wait'
  if (claim.state === 'checkpointed') return 'commit'
  return 'wait'
}

export interface SettleRequest {
  cluster: Pick<ClusterPort, 'peerState' | 'claimOf'>
  /** The source's peer id. */
  source: string
  container: string
  /** The epoch the source held (the offer's); the target would own it at epoch + 1. */
  epoch: number
  /** The source's resume count in its offer (0 when absent). */
  resumes?: number
  timeoutMs: number
  logger: Logger
  pollMs?: number
  /** Aborted when the node stops: the answer is then 'unknown' (a restart settles it again). */
  signal?: AbortSignal
}

/** Waits for the rule above to decide; 'unknown' only when `signal` aborts first. */
export async function settle (r: SettleRequest): Promise<'commit' | 'abort' | 'unknown'> {
  const deadline = Date.now() + r.timeoutMs
  const pollMs = r.pollMs ?? 200
  let last = ''
  while (Date.now() < deadline) {
    if (r.signal?.aborted === true) return 'unknown'
    const state = r.cluster.peerState(r.source)
    const claim = r.cluster.claimOf(r.source, r.container)
    const v = settleVerdict(state, claim, r.epoch, r.resumes ?? 0)
    if (v !== 'wait') {
      r.logger.info({ source: r.source, sourceState: state, claim: claim ?? null, verdict: v }, v === 'commit'
        ? 'settled from membership: the source released the container; keeping the restored copy'
        : 'settled from membership: the source runs the container; removing the restored copy')
      return v
    }
    const now = `${state ?? 'unknown'}/${claim?.state ?? '-'}`
    if (now !== last) r.logger.info({ source: r.source, sourceState: state ?? null, claim: claim ?? null }, 'settling: waiting for the source to show what it did')
    last = now
    await sleep(Math.max(10, Math.min(pollMs, deadline - Date.now())), r.signal)
  }
  if (r.signal?.aborted === true) return 'unknown'
  r.logger.warn({ source: r.source, timeoutMs: r.timeoutMs }, 'the source did not show what it did for the whole settle window: keeping the restored copy')
  return 'commit'
}

/**
 * Commits, and keeps trying while it fails (a full disk, say): the source decided
 * (or settled) commit, so this copy is the container and must not be discarded for a
 * failed write; until the commit lands it runs unowned (not claimed). Gives up only
 * when `still()` says the container is no longer a pending incoming one (removed by
 * an operator) or `signal` aborts (the node stops; its restart settles it again).
 * Returns true once committed.
 */
export async function commitWithRetry (r: {
  commit: () => Promise<void>
  still: () => Promise<boolean>
  logger: Logger
  retryMs?: number
  signal?: AbortSignal
}): Promise<boolean> {
  const retryMs = r.retryMs ?? 2_000
  for (let attempt = 1;; attempt++) {
    try {
      await r.commit()
      if (attempt > 1) r.logger.warn({ attempt }, 'commit succeeded after retrying')
      return true
    } catch (err) {
      const e = toMscError(err)
      const code = (err as NodeJS.ErrnoException).code ?? e.code
      r.logger.error({ err: e.message, code, attempt, retryMs }, 'commit failed: the restored container keeps running here, unowned, and the commit is retried (the source has released it: it is the only copy)')
    }
    await sleep(retryMs, r.signal)
    if (r.signal?.aborted === true) return false
    if (!await r.still().catch(() => true)) {
      r.logger.warn('the container is no longer a pending incoming migration: commit abandoned')
      return false
    }
  }
}

/** A container restored here by a migration that was not committed when this node last stopped. */
export interface PendingIncoming {
  name: string
  /** runc runs it now. */
  running: boolean
  /** The handover the source sent with its restore request, kept at adopt (null: none kept). */
  handover: Handover | null
  /** The resume count the source's offer carried, kept at adopt (0: none). */
  sourceResumes: number
}

/**
 * At node start: every pending incoming container that still runs is settled by the
 * same rule as a live migration that lost its decision; one that does not run is
 * gone already (MscNode.dropStalePendingMigrations removed it). In the background,
 * each on its own; resolves when all are settled (or `signal` aborts).
 */
export async function settleLeftIncoming (d: {
  host: Pick<ContainerHost, 'pendingIncoming' | 'commit' | 'discard' | 'exclusive'>
  cluster: Pick<ClusterPort, 'selfId' | 'peerState' | 'claimOf'>
  logger: Logger
  settleTimeoutMs: number
  retryMs?: number
  pollMs?: number
  signal?: AbortSignal
}): Promise<Array<{ name: string; outcome: 'commit' | 'abort' | 'unknown' | 'no-proof' | 'not-running' }>> {
  const left = await d.host.pendingIncoming()
  return await Promise.all(left.map(async (p) => {
    const log = d.logger.child({ container: p.name })
    if (!p.running) return { name: p.name, outcome: 'not-running' as const }
    const h = p.handover
    if (h == null || h.to !== d.cluster.selfId || h.container !== p.name || !verifyHandover(h)) {
      // Never claimable without the source's certificate: left for the operator.
      log.error(`an incoming migration of ${p.name} was restored here but not committed, and no handover of it to this node was kept: it runs unowned; \`msc rm --force ${p.name}\` once you know where it belongs`)
      return { name: p.name, outcome: 'no-proof' as const }
    }
    const started = Date.now()
    log.warn({ source: h.from, epoch: h.epoch - 1 }, 'an incoming migration restored here was not settled when this node stopped: settling it from membership')
    const verdict = await settle({ cluster: d.cluster, source: h.from, container: p.name, epoch: h.epoch - 1, resumes: p.sourceResumes, timeoutMs: d.settleTimeoutMs, logger: log, pollMs: d.pollMs, signal: d.signal })
    if (verdict === 'unknown') return { name: p.name, outcome: verdict }
    const stillPending = async (): Promise<boolean> => (await d.host.pendingIncoming()).some((x) => x.name === p.name)
    if (verdict === 'commit') {
      const ok = await commitWithRetry({
        commit: async () => {
          await d.host.exclusive(p.name, async () => {
            if (await stillPending()) await d.host.commit(p.name, h.epoch, h)
          })
        },
        still: stillPending,
        logger: log,
        retryMs: d.retryMs,
        signal: d.signal
      })
      if (ok) log.info({ epoch: h.epoch, settleMs: Date.now() - started }, 'incoming migration settled after restart: committed, the container is owned here')
      return { name: p.name, outcome: ok ? 'commit' as const : 'unknown' as const }
    }
    await d.host.exclusive(p.name, async () => {
      if (await stillPending()) await d.host.discard(p.name)
    })
    log.warn({ settleMs: Date.now() - started }, 'incoming migration settled after restart: the source runs the container; the restored copy was removed')
    return { name: p.name, outcome: 'abort' as const }
  }))
}

async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted === true) return
  await new Promise<void>((resolve) => {
    const t = setTimeout(done, ms)
    function done (): void {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}
