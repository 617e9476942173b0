/**
 * The node's event log: what replication, leases and failover did, as it happened, for
 * `msc events` (the control API streams it as NDJSON). Bounded: the last MAX_EVENTS
 * are kept for a client that connects later; a slow client is never waited for.
 */
import type { NodeEvent } from '../api/types.ts'

export type { NodeEvent }

const MAX_EVENTS = 1000

export class EventLog {
  private readonly recent: NodeEvent[] = []
  private readonly listeners = new Set<(e: NodeEvent) => void>()
  private seq = 0

  emit (kind: NodeEvent['kind'], e: { type: string; container?: string; [k: string]: unknown }): void {
    const ev: NodeEvent = { ...e, seq: ++this.seq, time: new Date().toISOString(), kind, type: e.type }
    this.recent.push(ev)
    if (this.recent.length > MAX_EVENTS) this.recent.shift()
    for (const fn of this.listeners) {
      try {
        fn(ev)
      } catch {}
    }
  }

  /** Events kept so far, oldest first. */
  history (): NodeEvent[] {
    return [...this.recent]
  }

  subscribe (fn: (e: NodeEvent) => void): () => void {
    this.listeners.add(fn)
    return () => {
      this.listeners.delete(fn)
    }
  }
}
