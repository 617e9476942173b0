/**
 * The node as the gauges see it at a scrape, read through NodeReader: the small view
 * of the node the daemon hands over (structural types only: metrics/ imports nothing
 * of node/). Containers' states come from one shared `runc list` and their records,
 * never from one runc call per container.
 */
import type { NodeSnapshot } from './msc-metrics.ts'
import { CONTAINER_STATES, PEER_STATES, containerState, countByState } from './updates.ts'

export interface NodeReader {
  /** runc's list, shared with the node's other periodic readers (ContainerManager.runcStates). */
  runcStates: () => Promise<Array<{ id: string; status: string }>>
  /** Names of the containers msc has a record of. */
  containerNames: () => Promise<string[]>
  containerRecord: (name: string) => Promise<{ fenced?: unknown; pendingMigration?: boolean; failoverPending?: boolean; checkpointed: boolean } | null>
  /** The cluster's other members in the membership view, with their state. */
  peers: () => Array<{ state: string }>
  /** Replication of a container this node owns and replicates, if it does. */
  replication: (name: string) => { rpoMs: number | null; bytesPerRound: number | null } | undefined
  leases: () => { held: number; granted: number }
}

export async function readSnapshot (node: NodeReader): Promise<NodeSnapshot> {
  const runc = new Map((await node.runcStates()).map((s) => [s.id, s.status]))
  const states: string[] = []
  const replication: NodeSnapshot['replication'] = []
  for (const name of await node.containerNames()) {
    const record = await node.containerRecord(name).catch(() => null)
    if (record == null) continue // removed meanwhile
    states.push(containerState(record, runc.get(name)))
    const r = node.replication(name)
    if (r != null) replication.push({ container: name, rpoMs: r.rpoMs, bytesPerRound: r.bytesPerRound })
  }
  return {
    containers: countByState(CONTAINER_STATES, states),
    peers: countByState(PEER_STATES, node.peers().map((p) => p.state)),
    replication,
    leases: node.leases()
  }
}
