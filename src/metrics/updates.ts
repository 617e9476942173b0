/**
 * What each thing the node reports does to msc's metrics, as data: an event of the
 * node's event log, or the end of an outgoing migration, becomes a list of updates
 * (a counter raised, a histogram sample). Pure, so the mapping is tested without a
 * registry; MscMetrics applies the updates to prom-client.
 */
import { runStateOf } from '../runtime/run-state.ts'

/** The counters msc keeps (names without the `msc_` prefix and `_total` suffix). */
export type CounterName = 'migrations' | 'migration_bytes' | 'replication_transfers' | 'replication_bytes' | 'replication_dump_failures' | 'lease_events' | 'failovers' | 'containers_lost'

/** The histograms msc keeps (seconds). */
export type HistogramName = 'migration_downtime_seconds' | 'failover_restore_seconds'

export type MetricUpdate =
  | { kind: 'inc'; counter: CounterName; labels: Record<string, string>; by: number }
  | { kind: 'observe'; histogram: HistogramName; labels: Record<string, string>; value: number }

/** An event of the node's event log (src/node/events.ts), as far as metrics read it. */
export interface EventLike {
  kind: string
  type: string
  [k: string]: unknown
}

/** The end of an outgoing migration (MigrationResult), as far as metrics read it. */
export interface MigrationEnd {
  ok: boolean
  strategy: string
  from: string
  downtimeMs: number | null
  bytes: number
  runningOn?: string
}

/**
 * The types of lease events counted by `type`; any other would be a new label value
 * made up by the code, not by a user, but the set stays closed on purpose.
 */
const LEASE_TYPES = new Set(['lease-acquired', 'lease-released', 'self-fenced', 'lease-requested', 'lease-refused'])

const STRATEGIES = new Set(['auto', 'stop-copy', 'post-copy', 'pre-copy'])

function inc (counter: CounterName, labels: Record<string, string> = {}, by = 1): MetricUpdate {
  return { kind: 'inc', counter, labels, by }
}

function num (v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null
}

/**
 * succeeded: the target runs it; rolled_back: it failed and runs on the source again;
 * failed: anything else (it never started, or it runs nowhere that this node knows).
 */
export function migrationOutcome (r: Pick<MigrationEnd, 'ok' | 'from' | 'runningOn'>): 'succeeded' | 'rolled_back' | 'failed' {
  if (r.ok) return 'succeeded'
  return r.runningOn != null && r.runningOn === r.from ? 'rolled_back' : 'failed'
}

export function updatesOfMigration (r: MigrationEnd): MetricUpdate[] {
  // The strategy the target accepted ('auto' only when it never got that far).
  const strategy = STRATEGIES.has(r.strategy) ? r.strategy : 'other'
  const out: MetricUpdate[] = [inc('migrations', { strategy, outcome: migrationOutcome(r) })]
  const bytes = num(r.bytes)
  if (bytes != null && bytes > 0) out.push(inc('migration_bytes', { strategy }, bytes))
  const downtime = num(r.downtimeMs)
  if (downtime != null) out.push({ kind: 'observe', histogram: 'migration_downtime_seconds', labels: { strategy }, value: downtime / 1000 })
  return out
}

export function updatesOfEvent (e: EventLike): MetricUpdate[] {
  switch (e.kind) {
    case 'replication':
      switch (e.type) {
        case 'generation': {
          const out = [inc('replication_transfers', { outcome: 'acked' })]
          const bytes = num(e.wireBytes)
          if (bytes != null && bytes > 0) out.push(inc('replication_bytes', {}, bytes))
          return out
        }
        case 'generation-failed':
          return [inc('replication_transfers', { outcome: 'failed' })]
        case 'dump-failed':
          return [inc('replication_dump_failures')]
        default:
          return []
      }
    case 'lease':
      return LEASE_TYPES.has(e.type) ? [inc('lease_events', { type: e.type })] : []
    case 'failover':
      switch (e.type) {
        case 'failover': {
          const out = [inc('failovers', { outcome: 'succeeded' })]
          const ms = num(e.ms)
          if (ms != null) out.push({ kind: 'observe', histogram: 'failover_restore_seconds', labels: {}, value: ms / 1000 })
          return out
        }
        case 'failover-failed':
          return [inc('failovers', { outcome: 'failed' })]
        case 'lost':
          return [inc('containers_lost')]
        default:
          return []
      }
    default:
      return []
  }
}

/** Every state `msc_containers` reports, 0 included, so that a dashboard sees each. */
export const CONTAINER_STATES = ['running', 'paused', 'created', 'stopped', 'checkpointed', 'fenced', 'pending'] as const
export type ContainerStateLabel = typeof CONTAINER_STATES[number]

/** Every state `msc_peers` reports. */
export const PEER_STATES = ['alive', 'suspect', 'dead', 'left'] as const

/**
 * A container's state as `msc ps` shows it, from msc's record and runc's status (from
 * one shared `runc list`); `pending` is a container restored here by a migration or a
 * failover that is not this node's yet.
 */
export function containerState (record: { fenced?: unknown; pendingMigration?: boolean; failoverPending?: boolean; checkpointed: boolean }, runcStatus: string | undefined): ContainerStateLabel {
  if (record.fenced != null) return 'fenced'
  if (record.pendingMigration === true || record.failoverPending === true) return 'pending'
  return runStateOf(runcStatus, record.checkpointed)
}

/** How many of `items` are in each of `states` (0 for the others; unknown ones ignored). */
export function countByState<S extends string> (states: readonly S[], items: readonly string[]): Record<S, number> {
  const out = Object.fromEntries(states.map((s) => [s, 0])) as Record<S, number>
  for (const s of items) if (s in out) out[s as S]++
  return out
}
