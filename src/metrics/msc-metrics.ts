/**
 * msc's own metrics on a prom-client registry (the one libp2p's metrics use too):
 * counters and histograms moved by updates (updates.ts), gauges set from a snapshot of
 * the node taken at each scrape. Names, types and labels are documented in
 * docs/metrics.md; a change here is a change there.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { CONTAINER_STATES, PEER_STATES, type CounterName, type HistogramName, type MetricUpdate } from './updates.ts'

/** What the gauges show, read from the node at a scrape. */
export interface NodeSnapshot {
  /** Containers of this node by state (every state of CONTAINER_STATES). */
  containers: Record<string, number>
  /** The cluster's other members by their state in this node's membership view. */
  peers: Record<string, number>
  /** Replicated containers this node owns: the age of the newest acknowledged generation (null: none yet) and the last round's bytes. */
  replication: Array<{ container: string; rpoMs: number | null; bytesPerRound: number | null }>
  /** Ownership leases this node holds, and its votes (grants) that have not run out. */
  leases: { held: number; granted: number }
}

/** Seconds: a migration's downtime is ~0.5-1.5 s here; a slow one or a big image takes tens. */
const DOWNTIME_BUCKETS = [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60]

export class MscMetrics {
  private readonly counters: Record<CounterName, Counter<string>>
  private readonly histograms: Record<HistogramName, Histogram<string>>
  private readonly containers: Gauge<string>
  private readonly peers: Gauge<string>
  private readonly replicationAge: Gauge<string>
  private readonly replicationRoundBytes: Gauge<string>
  private readonly leases: Gauge<string>

  constructor (registry: Registry) {
    const registers = [registry]
    const counter = (name: string, help: string, labelNames: string[] = []): Counter<string> => new Counter({ name, help, labelNames, registers })
    this.counters = {
      migrations: counter('msc_migrations_total', 'Outgoing migrations that ended, by strategy and outcome (succeeded, rolled_back, failed).', ['strategy', 'outcome']),
      migration_bytes: counter('msc_migration_bytes_total', 'Bytes outgoing migrations sent (rootfs, images, pages).', ['strategy']),
      replication_transfers: counter('msc_replication_transfers_total', 'Replication generations sent to a standby, by outcome (acked, failed): one per standby per round.', ['outcome']),
      replication_bytes: counter('msc_replication_bytes_total', 'Bytes replication rounds put on the wire to standbys.'),
      replication_dump_failures: counter('msc_replication_dump_failures_total', 'Replication rounds that failed before sending (the dump or its staging).'),
      lease_events: counter('msc_lease_events_total', 'Ownership lease events on this node, by type.', ['type']),
      failovers: counter('msc_failovers_total', 'Failovers this node carried out as a standby, by outcome (succeeded, failed).', ['outcome']),
      containers_lost: counter('msc_containers_lost_total', 'Containers reported lost: their node died with every standby that could bring them back.')
    }
    this.histograms = {
      migration_downtime_seconds: new Histogram({
        name: 'msc_migration_downtime_seconds',
        help: 'Downtime of outgoing migrations: from the freeze on this node to the container running on the target.',
        labelNames: ['strategy'],
        buckets: DOWNTIME_BUCKETS,
        registers
      }),
      failover_restore_seconds: new Histogram({
        name: 'msc_failover_restore_seconds',
        help: 'Time a failover on this node took from the lease granted to the container running (the restore).',
        buckets: DOWNTIME_BUCKETS,
        registers
      })
    }
    const gauge = (name: string, help: string, labelNames: string[] = []): Gauge<string> => new Gauge({ name, help, labelNames, registers })
    this.containers = gauge('msc_containers', 'Containers of this node by state.', ['state'])
    this.peers = gauge('msc_peers', "Other members of the cluster by state in this node's membership view.", ['state'])
    this.replicationAge = gauge('msc_replication_age_seconds', 'Age of the newest generation a standby acknowledged (the current RPO), per replicated container this node owns.', ['container'])
    this.replicationRoundBytes = gauge('msc_replication_round_bytes', 'Bytes the last replication round put on the wire (all standbys), per replicated container this node owns.', ['container'])
    this.leases = gauge('msc_leases', "Ownership leases: held (this node's own containers) and granted (this node's votes not yet run out).", ['role'])
    this.setSnapshot({ containers: {}, peers: {}, replication: [], leases: { held: 0, granted: 0 } })
  }

  apply (updates: MetricUpdate[]): void {
    for (const u of updates) {
      if (u.kind === 'inc') this.counters[u.counter].inc(u.labels, u.by)
      else this.histograms[u.histogram].observe(u.labels, u.value)
    }
  }

  setSnapshot (s: NodeSnapshot): void {
    for (const state of CONTAINER_STATES) this.containers.set({ state }, s.containers[state] ?? 0)
    for (const state of PEER_STATES) this.peers.set({ state }, s.peers[state] ?? 0)
    // Containers no longer replicated from here (moved, removed, stopped) disappear.
    this.replicationAge.reset()
    this.replicationRoundBytes.reset()
    for (const r of s.replication) {
      if (r.rpoMs != null) this.replicationAge.set({ container: r.container }, r.rpoMs / 1000)
      if (r.bytesPerRound != null) this.replicationRoundBytes.set({ container: r.container }, r.bytesPerRound)
    }
    this.leases.set({ role: 'held' }, s.leases.held)
    this.leases.set({ role: 'granted' }, s.leases.granted)
  }
}
