import type { Features } from './messages.ts'
import type { Handover, HandoverBody } from '../cluster/handover.ts'
import type { LanNetwork } from '../network/lan-address.ts'
import type { PendingIncoming, SourceClaim } from './settle.ts'

/**
 * What migration needs from the node's containers, on either side. The node
 * implements it over its ContainerManager and runtime; migration/ stays free of
 * runc details and the node stays free of protocol details.
 * Source-side calls are made while the migration holds the container exclusively.
 */
export interface LocalContainer {
  name: string
  epoch: number
  /** How often this node ran it again at its epoch from a dump or checkpoint (ContainerRecord.resumes). */
  resumes: number
  /** Standbys it keeps (0: not replicated). */
  replicas: number
  /** Directory with config.json and the rootfs the container runs on. */
  bundleDir: string
  rootfs: string
  /** Output files, oldest first. */
  logFiles: string[]
  /** Its own address on the LAN, which moves with it (absent: the host's network). */
  network?: LanNetwork
}

export interface LazyDump {
  /** Images (without memory) are written and the page server listens. */
  imagesReady: Promise<void>
  /** Every page was fetched; the source process is gone. */
  done: Promise<void>
  cancel: () => void
}

export interface ContainerHost {
  features: () => Promise<Features>
  /** Runs `fn` with the container locked against every other operation. */
  exclusive: <T>(name: string, fn: () => Promise<T>) => Promise<T>

  // ---- source side ----
  describe: (name: string) => Promise<LocalContainer>
  /**
   * Final dump: the container is frozen, dumped and gone from runc. `parentPath`
   * (relative to imageDir) names the last pre-dump, so only what changed since is dumped.
   * With `pageServer` (ADDR:PORT) the memory pages go there as CRIU dumps them, not into
   * imageDir, and the container stays frozen in runc (paused) instead of gone: a rollback
   * thaws it (resume), a commit removes it (release).
   */
  dump: (name: string, imageDir: string, signal: AbortSignal, opts?: { parentPath?: string | undefined; pageServer?: string }) => Promise<void>
  /** Pre-copy round: memory dumped while the container keeps running. */
  preDump: (name: string, imageDir: string, parentPath: string | undefined, signal: AbortSignal) => Promise<void>
  /**
   * Post-copy dump: pages stay behind a page server on 127.0.0.1:port. The container is
   * frozen first and stays frozen if the dump fails, even after the target resumed it,
   * until `resume` (the target's copy must be gone before this one runs again).
   */
  dumpLazy: (name: string, imageDir: string, pageServerPort: number, signal: AbortSignal) => Promise<LazyDump>
  /** Rollback: brings the container back here from the images of its final dump. */
  resume: (name: string, imageDir: string, signal: AbortSignal) => Promise<void>
  /** After commit: forget the container here, remember where it went. */
  release: (name: string, movedTo: { peerId: string; name: string }) => Promise<void>

  // ---- target side ----
  /** A new directory for one incoming migration, inside the data dir. */
  staging: (migrationId: string) => Promise<string>
  freeBytes: () => Promise<number>
  /** The name is free on this node (no record, nothing in runc). */
  nameFree: (name: string) => Promise<boolean>
  /**
   * Builds the network an incoming lan container needs, quiet (no traffic, no ARP) until
   * adopt() restored the container: throws NETWORK when this node cannot (no LAN
   * interface, another subnet) or ALREADY_EXISTS when the address is taken here.
   */
  prepareNetwork: (name: string, network: LanNetwork) => Promise<void>
  /** Removes what prepareNetwork made (nothing there is fine). */
  removeNetwork: (name: string) => Promise<void>
  /** A cached copy of a bundle with this content digest, if this node has one. */
  cachedBundle: (digest: string) => Promise<string | null>
  /** Keeps bundleDir's rootfs under `digest`, if `config` and it really have that digest. */
  cacheBundle: (digest: string, bundleDir: string, config: Record<string, unknown>) => Promise<void>
  /**
   * Restores a received container; it is not owned (claimed) until commit. The record
   * it will have once committed (at `handover.epoch`, with `handover`) is prepared on
   * disk before it runs: a node restarted before the decision settles it with that
   * (settle.ts), and commit needs no new disk space.
   */
  adopt: (
    req: { name: string; bundleDir: string; imageDir: string; workDir: string; logDir: string; lazyPagesPort?: number; handover: Handover; sourceResumes: number; replicas?: number; network?: LanNetwork; signal: AbortSignal }
  ) => Promise<{ pid: number }>
  /** Commit: the container is ours at `epoch` (proven by `handover`), and the membership says so at once. */
  commit: (name: string, epoch: number, handover: Handover) => Promise<void>
  /** Containers restored here by incoming migrations that are not committed yet. */
  pendingIncoming: () => Promise<PendingIncoming[]>
  /** Abort: kills and removes an adopted, uncommitted container. */
  discard: (name: string) => Promise<void>
  /**
   * Post-copy: settles once NAME's lazy-pages daemon is gone: `null` when it copied
   * every page (or none runs), else why it failed (the restored process then lacks
   * memory that only the source had).
   */
  lazyPagesEnded: (name: string) => Promise<string | null>
  /**
   * Post-copy: the page link broke. Freezes the restored copy before its lazy-pages
   * daemon learns of it (once the daemon is gone, a page that never arrived reads as
   * zeros), so that it never runs on memory it lacks. Best effort: it is discarded next.
   */
  freeze: (name: string) => Promise<void>
  removeStaging: (dir: string) => Promise<void>
}

/** What migration needs from the overlay: streams, and the cluster's view. */
export interface ClusterPort {
  selfId: string
  selfName: string
  /** Signs, as this node, a certificate handing a container over (src/cluster/handover.ts). */
  signHandover: (h: Omit<HandoverBody, 'from' | 'at'>) => Promise<Handover>
  /** Resolves a peer id or a unique member name to an alive member's peer id. */
  resolvePeer: (idOrName: string) => string
  /** An alive peer with room, other than self. */
  pickPeer: (needBytes: number) => string
  peerName: (peerId: string) => string
  /** Who owns the container, per the membership view. */
  ownerOf: (container: string) => { owner: string | null; epoch: number } | undefined
  peerState: (peerId: string) => string | undefined
  /** What the peer's latest heartbeat says of the container, if it claims it. */
  claimOf: (peerId: string, container: string) => SourceClaim | undefined
  /** Resolves once the view shows `owner` at `epoch` (or rejects on timeout). */
  waitForOwner: (container: string, owner: string, epoch: number, timeoutMs: number) => Promise<void>
}
