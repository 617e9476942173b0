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
  /** Ownership epoch in the cluster (raised at each migration and failover). */
  epoch?: number
  /** Standbys it should have (0: not replicated). */
  replicas?: number
  /** Its own address on the LAN (`--network lan`); absent: the host's network. */
  network?: { mode: 'lan'; address: string; prefix: number; driver: 'macvlan' | 'ipvlan' }
  /** Replication as its owner sees it (only on the node that runs it). */
  replication?: ReplicationInfo
  /**
   * Set when this node killed it because it could not renew its lease (self-fencing;
   * `cause` `renewal` or absent), or it died while this node was down (`node-down`).
   */
  leaseLost?: LeaseLost
}

/** The epoch whose lease was lost, when, and why (absent in records from before `cause`: renewal). */
export interface LeaseLost {
  epoch: number
  at: string
  cause?: 'renewal' | 'node-down'
}

/** `msc inspect NAME --json`: a replicated container's standbys and the age of its newest safe copy. */
export interface ReplicationInfo {
  replicas: number
  standbys: Array<{ peerId: string; name: string; generation: number | null; ackedAt: string | null }>
  /** Generations dumped so far (this run of the node). */
  generation: number
  /** The newest generation a standby acknowledged. */
  ackedGeneration: number | null
  /** Age of that generation's dump: what a failover now would lose (the RPO). */
  rpoMs: number | null
  /** How long the container was frozen for the last generation. */
  freezeMs: number | null
  /** Bytes the last round put on the wire (all standbys), and the size of its images. */
  bytesPerRound: number | null
  imageBytes: number | null
  /** The effective interval: max(DUMP_INTERVAL, 20 x the last freeze). */
  intervalMs: number
  lastError: string | null
  /** Whether this node holds the container's ownership lease now. */
  leaseHeld: boolean
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
  containers: Array<{ name: string; epoch: number; state: string }>
  resources: { memFreeBytes: number; memTotalBytes: number; diskFreeBytes: number }
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
  membership: { accepted: number; dropped: Record<string, number> }
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
  failover: FailoverSummary
}

/** One line of `msc events --json` (NDJSON): what replication, leases and failover did. */
export interface NodeEvent {
  /** Increases by one per event in this run of the node. */
  seq: number
  /** ISO 8601. */
  time: string
  kind: 'replication' | 'lease' | 'failover'
  type: string
  container?: string
  [k: string]: unknown
}

/** `msc status`: leases, failover and the replicas this node keeps for others. */
export interface FailoverSummary {
  /** A witness votes on leases and runs no container. */
  witness: boolean
  leaseMs: number
  members: number
  /** Grants a failover needs: a majority of the persisted member list. */
  quorum: number
  /** Whether a failover can happen, in one line (two members cannot: add a witness). */
  failover: string
  /** Leases this node holds for its own containers. */
  held: number
  replicas: Array<{ container: string; owner: string; epoch: number; generation: number | null; dumpedAt: string }>
  /** Containers whose node died with every standby that could bring them back (or without a majority up): nothing runs them. */
  lost: Array<{ container: string; owner: string; epoch: number; since: string }>
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
  refused: { connections: number; streams: number; records: number }
}

/** `msc cluster ls --json`: the persisted member list. */
export interface ClusterInfo extends Omit<ClusterSummary, 'members'> {
  members: Array<{ peerId: string; name: string; addrs: string[]; admittedAt: string; admittedBy: string; self: boolean; state: string }>
  /** Peers admitted under a name an earlier member holds: not members. */
  conflicts: Array<{ peerId: string; name: string; heldBy: string }>
}

export interface ClusterToken {
  token: string
  cluster: string
  expiresAt: string
}
export interface RemovedPeer {
  peerId: string
  name: string
}

export interface RunRequest {
  name: string
  bundle: string
  replicas?: number
  /** 'host' (default) or 'lan' (then `ip` is required). */
  network?: 'host' | 'lan'
  /** `--ip ADDR/PREFIX`: the container's address on the LAN. */
  ip?: string
}
export interface CheckpointRequest {
  stop?: boolean
}
export interface RestoreRequest {
  from?: string
}

export interface JoinRequest {
  addr: string
}
export interface JoinResult {
  peerId: string
}

export interface ApiErrorBody {
  error: { code: string; message: string; details: string[] }
}

export interface MigrateRequestBody {
  to?: string
  strategy?: 'auto' | 'stop-copy' | 'post-copy' | 'pre-copy'
  /** false: the trees go over /msc/image, not the sealed data channel. */
  dataChannel?: boolean
  /** false: the pages go the old way (stop-copy: after the dump; post-copy: over /msc/pages). */
  streamPages?: boolean
}

/** One line of the NDJSON answer to a migrate request. */
export type MigrateEvent =
  | { type: 'progress'; phase: string; bytes: number; totalBytes: number }
  | { type: 'result'; result: MigrationResultInfo }

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
  /** The trees went over the sealed data channel (not /msc/image). */
  dataChannel?: boolean
  /** The pages crossed over a sealed page connection (stop-copy: while CRIU dumped; post-copy: the page link). */
  streamedPages?: boolean
  phases: Record<string, number>
  error?: { code: string; message: string; details: string[] }
  runningOn?: string
}
