/**
 * The control API's request and response bodies, shared by the server (inside the node)
 * and the client (the CLI). `msc ... --json` prints these objects as they are, so they
 * are a documented, stable contract (docs/cli.md): add fields, never rename or remove.
 */

export type ContainerState = 'running' | 'paused' | 'created' | 'stopped' | 'checkpointed'

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
}

export interface NodeStatus {
  version: string
  pid: number
  dataDir: string
  nodeId: string
  cgroupParent: string
  runc: string
  criu: string
  containers: number
  startedAt: string
}

export interface RunRequest { name: string, bundle: string }
export interface CheckpointRequest { stop?: boolean }
export interface RestoreRequest { from?: string }

export interface ApiErrorBody {
  error: { code: string, message: string, details: string[] }
}
