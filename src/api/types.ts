/**
 * The control API's request and response bodies, shared by the server (inside the node)
 * and the client (the CLI). `msc ... --json` prints these objects as they are, so they
 * are a documented, stable contract (docs/cli.md): add fields, never rename or remove.
 */

/** 'fenced': another node owns the container now; this copy was stopped for good (`msc rm` removes it). */
export type ContainerState = 'running' | 'paused' | 'created' | 'stopped' | 'checkpointed' | 'fenced'

/** Why a container was fenced: who owns it now, at which ownership epoch, since when. */
export interface FenceInfo {
  owner: string
  /** The owner's node name when it was known, else its peer id. */
  ownerName?: string
  epoch: number
  at: string
}

export interface CheckpointInfo {
  id: string
  container: string
  createdAt: string
  /** The container kept running after this checkpoint (false: it was stopped). */
  leftRunning: boolean
  sizeBytes: number
  durationMs: number
}

export interface ContainerInfo {
  name: string
  state: ContainerState
  /** Host pid of the container's init process; null when not running. */
  pid: number | null
  /** When the current incarnation started (run or restore), ISO 8601. */
  started: string | null
  createdAt: string
  /** The OCI bundle directory the container was started from. */
  bundle: string
  checkpoints: number
  lastCheckpoint: string | null
  /** Set when state is 'fenced'. */
  fenced?: FenceInfo
}

export interface PeerInfo {
  peerId: string
  name: string
  addrs: string[]
  state: 'alive' | 'suspect' | 'dead' | 'left'
  /** When a heartbeat or direct ping last proved it alive, ISO 8601. */
  lastHeard: string
  stateSince: string
  connected: boolean
  version: string
  role: string
  rttMs: number | null
  containers: Array<{ name: string, epoch: number, state: string }>
  resources: { memFreeBytes: number, memTotalBytes: number, diskFreeBytes: number }
}

export interface OwnershipInfo {
  container: string
  /** Peer id of the owner, null when released (the epoch is kept). */
  owner: string | null
  epoch: number
}

export interface NodeStatus {
  peerId: string
  name: string
  /** Addresses peers can dial, each ending in /p2p/PEER_ID. */
  addrs: string[]
  peersAlive: number
  peersKnown: number
  membership: { accepted: number, dropped: Record<string, number> }
  version: string
  pid: number
  dataDir: string
  nodeId: string
  cgroupParent: string
  runc: string
  criu: string
  containers: number
  startedAt: string
  cluster: ClusterSummary
}

/** The cluster this node belongs to (`msc status`). */
export interface ClusterSummary {
  id: string
  /** key: formed by a shared key file; token: made by a first node, joined by tokens. */
  mode: 'key' | 'token'
  members: number
  /** How another node joins, in one line. */
  joinHint: string
  /** Dials and connections refused (not members), streams refused, records whose proof failed. */
  refused: { connections: number, streams: number, records: number }
}

/** `msc cluster ls --json`: the persisted member list. */
export interface ClusterInfo extends Omit<ClusterSummary, 'members'> {
  members: Array<{ peerId: string, name: string, addrs: string[], admittedAt: string, admittedBy: string, self: boolean, state: string }>
  /** Peers admitted under a name an earlier member holds: not members. */
  conflicts: Array<{ peerId: string, name: string, heldBy: string }>
}

export interface ClusterToken { token: string, cluster: string, expiresAt: string }
export interface RemovedPeer { peerId: string, name: string }

export interface RunRequest { name: string, bundle: string }
export interface CheckpointRequest { stop?: boolean }
export interface RestoreRequest { from?: string }

export interface JoinRequest { addr: string }
export interface JoinResult { peerId: string }

export interface ApiErrorBody {
  error: { code: string, message: string, details: string[] }
}

export interface MigrateRequestBody { to?: string, strategy?: 'auto' | 'stop-copy' | 'post-copy' | 'pre-copy' }

/** One line of the NDJSON answer to a migrate request. */
export type MigrateEvent =
  | { type: 'progress', phase: string, bytes: number, totalBytes: number }
  | { type: 'result', result: MigrationResultInfo }

/** `msc peer migrate --json` (docs/cli.md). */
export interface MigrationResultInfo {
  ok: boolean
  container: string
  from: string
  fromName: string
  to: string
  toName: string
  strategy: string
  downtimeMs: number | null
  totalMs: number
  bytes: number
  goodputMBps: number | null
  phases: Record<string, number>
  error?: { code: string, message: string, details: string[] }
  runningOn?: string
}
