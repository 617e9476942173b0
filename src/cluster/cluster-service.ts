import crypto from 'node:crypto'
import path from 'node:path'
import type { ConnectionGater, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import { FramedStream } from '../protocols/framing.ts'
import { MemberList, type ClusterMember } from './member-list.ts'
import { memberListFrom, readClusterFile, writeClusterFile, type ClusterMode } from './cluster-file.ts'
import { admissionKey, genesisClusterId, hmacAdmission, keyClusterId, signRecord, verifyRecordProof, type ClusterRecord } from './records.ts'
import { decodeToken, encodeToken, TokenStore, type JoinToken } from './tokens.ts'
import { JOIN_PROTOCOL, JoinAnswerSchema, JoinRequestSchema, MAX_CLUSTER_FRAME, SYNC_PROTOCOL, SyncAnswerSchema, SyncSchema, CLUSTER_VERSION } from './messages.ts'

/** What the cluster needs of the network (the overlay implements it). */
export interface ClusterNet {
  /** Dialable addresses of this node, each ending in /p2p/ID. */
  addresses: () => string[]
  /** Serves a protocol to any connected peer, members or not: the handler decides. */
  handleOpen: (protocol: string, handler: (stream: Stream, remotePeer: string) => Promise<void>, maxInboundStreams: number) => Promise<void>
  dial: (peerId: string, protocol: string, signal: AbortSignal) => Promise<Stream>
  dialAddr: (addr: string, protocol: string, signal: AbortSignal) => Promise<Stream>
  connectedPeers: () => string[]
  disconnect: (peerId: string, why: string) => Promise<void>
  onConnect: (fn: (peerId: string) => void) => () => void
}

export interface ClusterServiceInit {
  dataDir: string
  privateKey: PrivateKey
  selfId: string
  name: string
  /** The key file's key: a key-file cluster (also the pnet key). */
  clusterKey?: Uint8Array
  /** A join token given at start (`--join`). */
  joinToken?: string
  logger: Logger
  now?: () => number
}

export interface ClusterStatus {
  id: string
  mode: ClusterMode
  members: number
  /** How another node joins, in one line. */
  joinHint: string
  refused: { connections: number; streams: number; records: number }
}

export interface MembersChange {
  added: string[]
  removed: string[]
}

/** How long a connected non-member may stay without becoming a member. */
const NON_MEMBER_GRACE_MS = 15_000
/** Members a node passes on records it learned from another member (it did not make them). */
export const RELAY_FANOUT = 3

/**
 * Whom a node passes records on to that it learned from `from`: up to `fanout` connected
 * members, chosen at random, never `from`. The node that makes a record (an admission
 * by token, a removal) sends it to every connected member itself, and every new
 * connection exchanges the whole list, so relaying is only a second path: relaying to
 * every member made one join cost the cluster N² list exchanges (each of the N members
 * that learned the joiner's admission sent the whole list to the N - 1 others).
 */
export function relayTargets (connected: string[], isMember: (peer: string) => boolean, from: string, fanout = RELAY_FANOUT, random: () => number = Math.random): string[] {
  const pool = connected.filter((p) => p !== from && isMember(p))
  for (let i = pool.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[pool[i], pool[j]] = [pool[j]!, pool[i]!]
  }
  return pool.slice(0, fanout)
}

/**
 * Who belongs to this node's cluster: the persisted, signed member list, join tokens,
 * the connection gater, and the two protocols that spread and grow the list. Decides;
 * the overlay carries its messages.
 */
export class ClusterService {
  private readonly init: ClusterServiceInit
  private readonly log: Logger
  private readonly file: string
  private readonly tokens: TokenStore
  private readonly admitKey?: Buffer
  private list!: MemberList
  private mode!: ClusterMode
  /** A `--join` not done yet: the token, and the peers it may dial. */
  private pendingJoin?: JoinToken
  private net?: ClusterNet
  private offConnect?: () => void
  private readonly graceTimers = new Set<NodeJS.Timeout>()
  private readonly refused = { connections: 0, streams: 0, records: 0 }
  private readonly listeners = new Set<(change: MembersChange) => void>()
  private saving: Promise<void> = Promise.resolve()

  private constructor (init: ClusterServiceInit) {
    this.init = init
    this.log = init.logger
    this.file = path.join(init.dataDir, 'cluster.json')
    this.tokens = new TokenStore(path.join(init.dataDir, 'cluster-tokens.json'), init.now)
    if (init.clusterKey != null) this.admitKey = admissionKey(init.clusterKey)
  }

  /**
   * Loads this node's cluster, or makes one: a key-file cluster with --psk, a pending
   * join with --join, else a new single-node cluster. Refuses what contradicts the
   * data dir (another key, another cluster's token, another name).
   */
  static async load (init: ClusterServiceInit): Promise<ClusterService> {
    const s = new ClusterService(init)
    await s.tokens.load()
    const token = init.joinToken != null && init.joinToken !== '' ? decodeToken(init.joinToken) : undefined
    const saved = await readClusterFile(s.file)
    const keyId = init.clusterKey != null ? keyClusterId(init.clusterKey) : undefined
    if (saved != null) {
      if (keyId != null && (saved.mode !== 'key' || saved.cluster !== keyId)) {
        throw new MscError('INVALID_ARGUMENT',
          `this data dir belongs to cluster ${saved.cluster}, which the key file --psk does not open: start the node with that cluster's key${saved.mode === 'token' ? ' (none: it was made without one)' : ''}`)
      }
      if (keyId == null && saved.mode === 'key') throw new MscError('INVALID_ARGUMENT', `this node belongs to cluster ${saved.cluster}, formed by a key file: start it with --psk FILE`)
      if (token != null && token.c !== saved.cluster) throw new MscError('INVALID_ARGUMENT', `this node already belongs to cluster ${saved.cluster}; the token is for ${token.c}. A node is in one cluster: use another data dir`)
      const { list, rejected } = await memberListFrom(saved, s.admitKey)
      if (rejected > 0) s.log.warn({ rejected }, 'records of the cluster file whose proof does not hold were ignored')
      s.list = list
      s.mode = saved.mode
      if (token != null) s.log.info({ cluster: saved.cluster }, "already a member of the token's cluster: the token is not needed any more and was not used")
      const me = list.get(init.selfId)
      if (me == null && !s.list.all().some((r) => r.peerId === init.selfId)) {
        throw new MscError('INVALID_STATE', `this node is not in the member list of its cluster ${saved.cluster}; move ${s.file} away to start afresh`)
      }
      if (list.isRemoved(init.selfId)) throw new MscError('INVALID_STATE', `this node was removed from cluster ${saved.cluster}: it cannot rejoin with its old identity (move the data dir away and join anew)`)
      const mine = list.all().find((r) => r.kind === 'admit' && r.peerId === init.selfId)
      if (mine?.kind === 'admit' && mine.name !== init.name) {
        throw new MscError('INVALID_ARGUMENT', `this node is member "${mine.name}" of cluster ${saved.cluster}: start it with --name ${mine.name}`)
      }
      return s
    }
    if (keyId != null) {
      if (token != null) throw new MscError('INVALID_ARGUMENT', '--psk and --join: a key-file cluster needs no token (holding the key admits a node); give one of them')
      s.mode = 'key'
      s.list = new MemberList(keyId)
      s.list.add(hmacAdmission(s.admitKey!, { kind: 'admit', cluster: keyId, peerId: init.selfId, name: init.name, addrs: [], admittedAt: s.now(), admittedBy: 'key' }))
      await s.save()
      return s
    }
    if (token != null) {
      s.mode = 'token'
      s.list = new MemberList(token.c)
      s.pendingJoin = token
      return s
    }
    s.mode = 'token'
    const nonce = crypto.randomBytes(16).toString('hex')
    const id = genesisClusterId(init.selfId, nonce)
    s.list = new MemberList(id)
    s.list.add(await signRecord(init.privateKey, { kind: 'admit', cluster: id, peerId: init.selfId, name: init.name, addrs: [], admittedAt: s.now(), admittedBy: init.selfId, nonce }))
    await s.save()
    s.log.info({ cluster: id }, 'created a new single-node cluster: run `msc cluster token` here and start other nodes with `--join TOKEN`')
    return s
  }

  private now (): number {
    return (this.init.now ?? Date.now)()
  }

  get clusterId (): string {
    return this.list.clusterId
  }

  isMember (peerId: string): boolean {
    return peerId === this.init.selfId || this.list.isMember(peerId)
  }
  isRemoved (peerId: string): boolean {
    return this.list.isRemoved(peerId)
  }
  members (): ClusterMember[] {
    return this.list.members()
  }
  conflicts (): Array<ClusterMember & { heldBy: string }> {
    return this.list.conflicts()
  }
  member (peerId: string): ClusterMember | undefined {
    return this.list.get(peerId)
  }

  /**
   * Called when members were added (by anyone: their heartbeats count from now on) or
   * removed (their connections and claims go).
   */
  onChange (fn: (change: MembersChange) => void): void {
    this.listeners.add(fn)
  }

  status (): ClusterStatus {
    return {
      id: this.clusterId,
      mode: this.mode,
      members: this.list.members().length,
      joinHint: this.mode === 'key'
        ? "start other nodes with a copy of this cluster's key file: msc node start --psk FILE"
        : 'run `msc cluster token` here and start the new node with `msc node start --join TOKEN`',
      refused: { ...this.refused }
    }
  }

  /**
   * The libp2p connection gater: after noise has authenticated a peer, only members
   * stay connected. Non-members are let in only to become members: in a key-file
   * cluster (pnet proved they hold the key), or while this node has a join token out
   * (inbound) or is joining (outbound); removed members never.
   */
  readonly gater: ConnectionGater = {
    denyDialPeer: (peer: PeerId) => this.denies(peer.toString(), 'out'),
    denyInboundEncryptedConnection: (peer: PeerId) => this.denies(peer.toString(), 'in'),
    denyOutboundEncryptedConnection: (peer: PeerId) => this.denies(peer.toString(), 'out')
  }

  private denies (peer: string, dir: 'in' | 'out'): boolean {
    let deny: boolean
    if (this.list.isRemoved(peer)) deny = true
    else if (this.isMember(peer) || this.mode === 'key') deny = false
    else if (dir === 'out') deny = this.pendingJoin == null || !this.pendingJoin.a.some((a) => a.endsWith(`/p2p/${peer}`))
    else deny = !this.tokens.outstanding()
    if (deny) this.refused.connections++
    return deny
  }

  /** Serves join and sync, finishes a pending `--join`, and syncs with whoever connects. */
  async start (net: ClusterNet, signal?: AbortSignal): Promise<void> {
    this.net = net
    await net.handleOpen(JOIN_PROTOCOL, async (stream, peer) => {
      await this.serveJoin(stream, peer)
    }, 4)
    await net.handleOpen(SYNC_PROTOCOL, async (stream, peer) => {
      await this.serveSync(stream, peer)
    }, 8)
    this.offConnect = net.onConnect((peer) => {
      this.connected(peer)
    })
    if (this.pendingJoin != null) await this.join(this.pendingJoin, signal)
    for (const p of net.connectedPeers()) this.connected(p)
  }

  async stop (): Promise<void> {
    this.offConnect?.()
    for (const t of this.graceTimers) clearTimeout(t)
    this.graceTimers.clear()
    await this.saving
  }

  /** A connection came up: exchange member lists; a non-member gets a grace period. */
  private connected (peer: string): void {
    if (this.list.isRemoved(peer)) {
      void this.net?.disconnect(peer, 'removed from the cluster')
      return
    }
    void this.syncWith(peer)
    if (!this.isMember(peer)) {
      const t = setTimeout(() => {
        this.graceTimers.delete(t)
        if (!this.isMember(peer)) {
          this.refused.connections++
          this.log.warn({ peer }, 'a connected peer did not become a member in time: disconnected')
          void this.net?.disconnect(peer, 'not a member')
        }
      }, NON_MEMBER_GRACE_MS)
      t.unref()
      this.graceTimers.add(t)
    }
  }

  /** `msc cluster token`: a one-time join token for this member, valid `ttlMs`. */
  async issueToken (ttlMs: number): Promise<{ token: string; cluster: string; expiresAt: string }> {
    if (this.pendingJoin != null) throw new MscError('INVALID_STATE', 'this node has not joined its cluster yet')
    const addrs = (this.net?.addresses() ?? []).filter((a) => a.includes('/p2p/')).slice(0, 16)
    if (addrs.length === 0) throw new MscError('INVALID_STATE', 'this node has no address others can dial (see --listen / --announce)')
    const secret = await this.tokens.issue(ttlMs)
    return { token: encodeToken({ c: this.clusterId, s: secret, a: addrs }), cluster: this.clusterId, expiresAt: new Date(this.now() + ttlMs).toISOString() }
  }

  /** `msc peer rm`: removes a member for good (by peer id or unique name). */
  async remove (idOrName: string): Promise<ClusterMember> {
    const m = this.list.get(idOrName) ?? this.list.byName(idOrName)
    if (m == null) throw new MscError('NOT_FOUND', `no member ${idOrName} in cluster ${this.clusterId} (see msc cluster ls)`)
    if (m.peerId === this.init.selfId) throw new MscError('INVALID_ARGUMENT', 'a node cannot remove itself: run msc peer rm on another member')
    const r = await signRecord(this.init.privateKey, { kind: 'remove', cluster: this.clusterId, peerId: m.peerId, removedAt: this.now(), removedBy: this.init.selfId })
    this.list.add(r)
    await this.save()
    this.log.warn({ peer: m.peerId, name: m.name }, 'member removed from the cluster')
    // Tell it first (bounded), so that it knows why every member refuses it from now on.
    await Promise.race([this.syncWith(m.peerId), new Promise((resolve) => setTimeout(resolve, 2000).unref())])
    this.announce({ added: [], removed: [m.peerId] })
    this.pushAll()
    return m
  }

  // ---------------------------------------------------------------- join

  private async join (t: JoinToken, signal?: AbortSignal): Promise<void> {
    const net = this.net!
    const errors: string[] = []
    for (const addr of t.a) {
      try {
        const limit = AbortSignal.timeout(20_000)
        const stream = await net.dialAddr(addr, JOIN_PROTOCOL, signal != null ? AbortSignal.any([signal, limit]) : limit)
        const f = new FramedStream(stream, { maxFrameBytes: MAX_CLUSTER_FRAME, idleTimeoutMs: 20_000 })
        await f.writeJson({ type: 'join', v: CLUSTER_VERSION, cluster: t.c, secret: t.s, name: this.init.name, addrs: net.addresses().slice(0, 16) })
        const answer = await f.readJson(JoinAnswerSchema, limit)
        await f.closeWrite().catch(() => {})
        if (answer.type === 'refuse') {
          throw new MscError(answer.code === 'NAME_TAKEN' ? 'ALREADY_EXISTS' : 'INVALID_STATE', `the cluster refused this node: ${answer.reason}`)
        }
        const added = await this.merge(answer.records, 'join')
        if (!this.list.isMember(this.init.selfId)) throw new MscError('RUNTIME_ERROR', 'the member answered without a valid admission of this node')
        this.pendingJoin = undefined
        await this.save()
        this.log.info({ cluster: t.c, via: addr, records: added }, 'joined the cluster')
        return
      } catch (err) {
        if (err instanceof MscError && (err.code === 'ALREADY_EXISTS' || err.code === 'INVALID_STATE')) throw err
        errors.push(`${addr}: ${describe(err)}`)
      }
    }
    throw new MscError('RUNTIME_ERROR',
      'could not join through the member that issued the token: it is unreachable, or it refused the connection because it has no valid token out (a used or expired token closes the door: make a new one with `msc cluster token`)', errors)
  }

  private async serveJoin (stream: Stream, peer: string): Promise<void> {
    const f = new FramedStream(stream, { maxFrameBytes: 64 * 1024, idleTimeoutMs: 10_000 })
    const refuse = async (code: string, reason: string): Promise<void> => {
      this.refused.streams++
      this.log.warn({ peer, code, reason }, 'join refused')
      await f.writeJson({ type: 'refuse', code, reason }).catch(() => {})
      await f.closeWrite().catch(() => {})
    }
    const req = await f.readJson(JoinRequestSchema, AbortSignal.timeout(10_000))
    if (req.cluster !== this.clusterId) return await refuse('OTHER_CLUSTER', `this node is in cluster ${this.clusterId}, the token names ${req.cluster}`)
    if (this.list.isRemoved(peer)) return await refuse('REMOVED', 'this peer id was removed from the cluster')
    if (this.list.isMember(peer)) {
      await f.writeJson({ type: 'admitted', records: this.list.all() })
      await f.closeWrite().catch(() => {})
      return
    }
    const holder = this.list.byName(req.name)
    if (holder != null) return await refuse('NAME_TAKEN', `the name ${req.name} is taken in the cluster by member ${holder.peerId}: start the node with another --name`)
    if (this.list.full) return await refuse('FULL', 'the member list is full')
    // The token is used up only by a join that is otherwise acceptable.
    if (!await this.tokens.consume(req.secret)) return await refuse('BAD_TOKEN', 'the join token is unknown here, expired, or already used: make a new one with msc cluster token')
    const r = await signRecord(this.init.privateKey, { kind: 'admit', cluster: this.clusterId, peerId: peer, name: req.name, addrs: req.addrs, admittedAt: this.now(), admittedBy: this.init.selfId })
    this.list.add(r)
    await this.save()
    this.log.info({ peer, name: req.name }, 'admitted a new member by token')
    this.announce({ added: [peer], removed: [] })
    await f.writeJson({ type: 'admitted', records: this.list.all() })
    await f.closeWrite().catch(() => {})
    this.pushAll(peer)
  }

  // ---------------------------------------------------------------- sync

  private async syncWith (peer: string): Promise<void> {
    if (this.net == null || this.pendingJoin != null || !this.net.connectedPeers().includes(peer)) return
    try {
      const stream = await this.net.dial(peer, SYNC_PROTOCOL, AbortSignal.timeout(10_000))
      const f = new FramedStream(stream, { maxFrameBytes: MAX_CLUSTER_FRAME, idleTimeoutMs: 10_000 })
      await f.writeJson({ type: 'sync', v: CLUSTER_VERSION, cluster: this.clusterId, records: this.list.all() })
      const answer = await f.readJson(SyncAnswerSchema, AbortSignal.timeout(10_000))
      await f.closeWrite().catch(() => {})
      if (answer.type === 'refuse') {
        this.log.debug({ peer, code: answer.code, reason: answer.reason }, 'sync refused')
        return
      }
      if (answer.cluster !== this.clusterId) return
      await this.merge(answer.records, peer)
    } catch (err) {
      this.log.debug({ peer, err: (err as Error).message }, 'member list sync failed')
    }
  }

  private async serveSync (stream: Stream, peer: string): Promise<void> {
    const f = new FramedStream(stream, { maxFrameBytes: MAX_CLUSTER_FRAME, idleTimeoutMs: 10_000 })
    const msg = await f.readJson(SyncSchema, AbortSignal.timeout(10_000))
    if (msg.cluster !== this.clusterId || this.list.isRemoved(peer)) {
      this.refused.streams++
      await f.writeJson({ type: 'refuse', code: 'OTHER_CLUSTER', reason: `this node is in cluster ${this.clusterId}` }).catch(() => {})
      await f.closeWrite().catch(() => {})
      return
    }
    await this.merge(msg.records, peer)
    await f.writeJson({ type: 'sync', v: CLUSTER_VERSION, cluster: this.clusterId, records: this.list.all() })
    await f.closeWrite().catch(() => {})
  }

  /** Adds the records whose proofs hold; persists what was new, and relays it to a few members (relayTargets). */
  private async merge (records: ClusterRecord[], from: string): Promise<number> {
    const membersBefore = new Set(this.list.members().map((m) => m.peerId))
    let added = 0
    for (const r of records) {
      if (r.cluster !== this.clusterId || this.list.has(r)) continue
      if (!await verifyRecordProof(r, this.admitKey)) {
        this.refused.records++
        continue
      }
      if (this.list.add(r)) added++
    }
    if (added === 0) return 0
    const nowRemoved = [...membersBefore].filter((p) => this.list.isRemoved(p))
    const nowMembers = this.list.members().filter((m) => !membersBefore.has(m.peerId))
    // Listeners first: isMember() answers from the list in memory already, and what they
    // do (exchange heartbeats with a new member, drop a removed one) need not wait for
    // the fsync, which took over a second on a host busy with a joining cluster.
    if (nowRemoved.length > 0 || nowMembers.length > 0) this.announce({ added: nowMembers.map((m) => m.peerId), removed: nowRemoved })
    await this.save()
    if (nowMembers.length > 0) this.log.info({ members: nowMembers.map((m) => m.name), from }, 'new members in the cluster')
    if (this.list.isRemoved(this.init.selfId)) this.log.error('this node was removed from the cluster: its peers will refuse it')
    const taken = this.list.conflicts().find((c) => c.peerId === this.init.selfId)
    if (taken != null) this.log.error({ name: taken.name, heldBy: taken.heldBy }, "this node's name is held by an earlier member: the cluster refuses this node until it is started with another --name (and a fresh data dir)")
    if (this.net != null) { for (const p of relayTargets(this.net.connectedPeers(), (x) => this.isMember(x), from)) void this.syncWith(p) }
    return added
  }

  private announce (change: MembersChange): void {
    for (const p of change.removed) void this.net?.disconnect(p, 'removed from the cluster')
    for (const fn of this.listeners) fn(change)
  }

  /** Sends our whole list to every connected member but `except` (the list is small). */
  private pushAll (except?: string): void {
    for (const p of this.net?.connectedPeers() ?? []) if (p !== except && this.isMember(p)) void this.syncWith(p)
  }

  private async save (): Promise<void> {
    const next = this.saving.then(async () => {
      await writeClusterFile(this.file, this.list, this.mode)
    })
    this.saving = next.catch(() => {})
    await next
  }
}

function describe (err: unknown): string {
  const e = err as Error & { errors?: unknown[] }
  const inner = Array.isArray(e.errors) ? e.errors.map(describe).join('; ') : ''
  return [e.name !== 'Error' ? e.name : '', e.message, inner].filter((x) => x != null && x !== '').join(': ') || String(err)
}
