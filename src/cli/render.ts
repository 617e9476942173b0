import type { CheckpointInfo, ContainerInfo, NodeEvent, NodeStatus, PeerInfo, ReplicationInfo } from '../api/types.ts'

const NAMED_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }

/**
 * Text from elsewhere (peer names, addresses, versions: whatever a peer put in its
 * heartbeat) made safe to print on a terminal: C0 controls, DEL and C1 controls become
 * visible escapes (`\n`, `\r`, `\t`, else `\xNN`), so an ANSI sequence shows as
 * `\x1b[31m` instead of acting; so do the Unicode line separators and the bidirectional
 * overrides and isolates that could reorder what is shown (`\u202e`). Everything else,
 * backslashes included, is left as it is.
 */
export function escapeControl (s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const named = NAMED_ESCAPES[c]
    if (named != null) return named
    const code = c.charCodeAt(0)
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
  })
}

/** A plain aligned table: no colours, safe to pipe. Every cell is printed through escapeControl. */
export function table (headers: string[], rawRows: string[][]): string {
  const rows = rawRows.map((r) => r.map(escapeControl))
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}

export function ago (iso: string | null, now = Date.now()): string {
  if (iso == null) return '-'
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86400)}d ago`
}

export function bytes (n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`
  return `${(n / 1024 ** 3).toFixed(2)} GiB`
}

/**
 * A peer id for a table: its first 8 characters (`12D3KooW`, the key type) and its last
 * 6, which tell members apart (`12D3KooW…j2Y6ms`). Full ids are in the `--json` output.
 */
export function shortPeerId (id: string): string {
  return id.length <= 16 ? id : `${id.slice(0, 8)}…${id.slice(-6)}`
}

/** A member by name when this node knows it (names: peer id to member name), else by short peer id. */
export function peerLabel (id: string, names?: ReadonlyMap<string, string>): string {
  const name = names?.get(id)
  return name == null ? shortPeerId(id) : `${name} (${shortPeerId(id)})`
}

/** A duration for people: `0.4s`, `2.1s`, `42s`, `3m5s`, `2h10m`. */
export function dur (ms: number): string {
  if (ms < 10_000) return `${Number((Math.max(0, ms) / 1000).toFixed(1))}s`
  const s = Math.round(ms / 1000)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 === 0 ? '' : `${s % 60}s`}`
  return `${Math.floor(s / 3600)}h${Math.floor(s / 60) % 60 === 0 ? '' : `${Math.floor(s / 60) % 60}m`}`
}

/** At most `max` characters: cut at a word's end where one is near, with `…`. */
function clip (s: string, max: number): string {
  if (s.length <= max) return s
  const cut = s.slice(0, max - 1)
  const space = cut.lastIndexOf(' ')
  return (space >= max / 2 ? cut.slice(0, space) : cut).trimEnd() + '…'
}

/** The state as `msc ps` shows it: a copy killed because its lease was lost says so. */
export function stateText (c: ContainerInfo): string {
  return c.leaseLost != null && c.state !== 'running' ? `${c.state} (lease lost)` : c.state
}

/**
 * STANDBYS: the standbys' names, or why there are none (the replication's last error,
 * without its parenthesised hints, cut at 16 characters: `msc inspect` has it whole);
 * `-` when this node does not replicate the container.
 */
function standbysCell (r: ReplicationInfo | undefined): string {
  if (r == null) return '-'
  if (r.standbys.length > 0) return r.standbys.map((s) => s.name).join(',')
  if (r.lastError == null) return 'no standby'
  return clip(escapeControl(r.lastError).replace(/ \([^)]*\)/g, '').trim(), 16)
}

export function containersTable (list: ContainerInfo[]): string {
  return table(['NAME', 'STATE', 'PID', 'STARTED', 'REPLICAS', 'STANDBYS', 'RPO', 'BUNDLE'], list.map((
    c
  ) => [c.name, stateText(c), c.pid == null ? '-' : String(c.pid), ago(c.started), c.replicas == null || c.replicas === 0 ? '-' : String(c.replicas), standbysCell(c.replication),
    c.replication?.rpoMs == null ? '-' : dur(c.replication.rpoMs), c.bundle]
  ))
}

/** `msc inspect NAME`: one container, field by field, with its replication. */
export function containerText (c: ContainerInfo, now = Date.now()): string {
  const rows: string[][] = [
    ['name', c.name],
    ['state', stateText(c)],
    ['pid', c.pid == null ? '-' : String(c.pid)],
    ['started', c.started == null ? '-' : `${c.started} (${ago(c.started, now)})`],
    ['created', c.createdAt],
    ['bundle', c.bundle],
    ['checkpoints', `${c.checkpoints}${c.lastCheckpoint == null ? '' : ` (newest ${c.lastCheckpoint})`}`],
    ['epoch', c.epoch == null ? '-' : String(c.epoch)],
    ['replicas', c.replicas == null ? '-' : c.replicas === 0 ? '0 (not replicated: no failover)' : String(c.replicas)]
  ]
  if (c.fenced != null) {
    const f = c.fenced
    rows.push(['fenced', `${f.ownerName ?? 'peer'} (${f.owner}) owns it at epoch ${f.epoch} since ${f.at}; this copy never runs again`])
  }
  if (c.leaseLost != null) {
    const why = c.leaseLost.cause === 'node-down' ? 'it died while this node was down (power cut, crash)' : 'this node could not renew its lease and killed it'
    rows.push(['lease lost', `at epoch ${c.leaseLost.epoch}, ${c.leaseLost.at} (${ago(c.leaseLost.at, now)}): ${why}; another node may run it now`])
  }
  const r = c.replication
  if (r != null) {
    rows.push(['lease', r.leaseHeld ? 'held by this node' : 'not held: no replication until this node holds it'])
    if (r.standbys.length === 0) rows.push(['standbys', `none of ${r.replicas} wanted`])
    for (const s of r.standbys) {
      rows.push(['standby', `${s.name} (${s.peerId}): ${s.generation == null ? 'no generation acknowledged yet' : `generation ${s.generation} acknowledged ${ago(s.ackedAt, now)}`}`])
    }
    rows.push(['generation', `${r.generation} dumped, newest acknowledged: ${r.ackedGeneration ?? 'none yet'}`])
    rows.push(['rpo', r.rpoMs == null ? '- (no safe copy yet: a failover now would have nothing to restore)' : `${dur(r.rpoMs)} (a failover now loses the last ${dur(r.rpoMs)})`])
    rows.push(['freeze', r.freezeMs == null ? '-' : `${r.freezeMs} ms per generation`])
    rows.push(['per round', r.bytesPerRound == null
      ? '-'
      : `${bytes(r.bytesPerRound)} on the wire${r.imageBytes == null ? '' : ` for ${bytes(r.imageBytes)} of images${r.imageBytes > 0 ? ` (${(100 * r.bytesPerRound / r.imageBytes).toFixed(1)}%)` : ''}`}`])
    rows.push(['interval', dur(r.intervalMs)])
    rows.push(['last error', r.lastError ?? '-'])
  }
  return table(['FIELD', 'VALUE'], rows)
}

export function checkpointsTable (list: CheckpointInfo[]): string {
  return table(['ID', 'CREATED', 'SIZE', 'TOOK', 'AFTERWARDS'], list.map((c) => [c.id, ago(c.createdAt), bytes(c.sizeBytes), `${c.durationMs} ms`, c.leftRunning ? 'kept running' : 'stopped']))
}

export function peersTable (list: PeerInfo[]): string {
  return table(['NAME', 'STATE', 'LAST HEARD', 'RTT', 'CONTAINERS', 'PEER ID', 'ADDRESSES'],
    list.map((p) => [p.name, p.state, ago(p.lastHeard), p.rttMs == null ? '-' : `${p.rttMs} ms`, p.containers.map((c) => `${c.name}@${c.epoch}`).join(',') || '-', p.peerId, p.addrs.join(' ')]))
}

/** `names`: peer id to member name, to name the owners of the replicas this node keeps. */
export function statusText (s: NodeStatus, names?: ReadonlyMap<string, string>): string {
  const dropped = Object.entries(s.membership.dropped).filter(([, n]) => n > 0).map(([k, n]) => `${k}=${n}`).join(' ')
  const main = table(['FIELD', 'VALUE'], [
    ['peer id', s.peerId],
    ['name', s.name],
    ['addresses', s.addrs.join(' ') || '-'],
    ['peers alive', `${s.peersAlive} of ${s.peersKnown} known`],
    ['heartbeats', `${s.membership.accepted} accepted${dropped === '' ? '' : `, dropped: ${dropped}`}`],
    ['version', s.version],
    ['pid', String(s.pid)],
    ['data dir', s.dataDir],
    ['node id', s.nodeId],
    ['cgroup parent', s.cgroupParent],
    ['runc', s.runc],
    ['criu', s.criu],
    ['containers', String(s.containers)],
    ['started', `${s.startedAt} (${ago(s.startedAt)})`],
    ...clusterRows(s),
    ...failoverRows(s)
  ])
  const f = s.failover as NodeStatus['failover'] | undefined // absent from a node of an older version
  if (f == null || f.replicas.length === 0) return main
  return main + '\n\n' + table(['REPLICA OF', 'OWNER', 'EPOCH', 'GENERATION', 'DUMPED'], f.replicas.map((r) => [r.container, peerLabel(r.owner, names), String(r.epoch), r.generation == null ? '-' : String(r.generation), ago(r.dumpedAt)]))
}

function failoverRows (s: NodeStatus): string[][] {
  const f = s.failover as NodeStatus['failover'] | undefined
  if (f == null) return []
  return [
    ['failover', f.failover],
    ['witness', f.witness ? 'yes: votes on leases, runs no container' : 'no'],
    ['quorum', `${f.quorum} of ${f.members} member${f.members === 1 ? '' : 's'}`],
    ['leases', `${dur(f.leaseMs)} each, ${f.held} held by this node`],
    ['replicas', f.replicas.length === 0 ? 'none kept for other nodes' : `${f.replicas.length} kept for other nodes (below)`],
    // Peer-provided names: escaped like every other peer text.
    ...(f.lost ?? []).map((l) => ['LOST', escapeControl(`${l.container} (epoch ${l.epoch}): its node ${l.owner} died with every standby that could bring it back, or no majority is up; since ${l.since}`)])
  ]
}

function clusterRows (s: NodeStatus): string[][] {
  const c = s.cluster as NodeStatus['cluster'] | undefined // absent from a node of an older version
  if (c == null) return []
  const refused = Object.entries(c.refused).filter(([, n]) => n > 0).map(([k, n]) => `${k}=${n}`).join(' ')
  return [
    ['cluster', `${c.id} (${c.mode === 'key' ? 'key file' : 'tokens'}, ${c.members} member${c.members === 1 ? '' : 's'})`],
    ['join', c.joinHint],
    ...(refused === '' ? [] : [['refused', refused]])
  ]
}

/** Event fields that hold a peer id: shown by member name, else shortened. */
const PEER_FIELDS = new Set(['standby', 'owner', 'from'])
const EVENT_HEAD = new Set(['seq', 'time', 'kind', 'type', 'container'])

/**
 * One event, one line: `TIME KIND TYPE CONTAINER key=value ...` (the fields after the
 * container in the node's order, `reason` last). Peer ids become member names (a
 * standby's name comes with the event; `names` maps the others), times given in ms
 * since the epoch become ISO 8601. Values with spaces are quoted. Every part is escaped:
 * names and reasons come from other nodes.
 */
export function eventLine (e: NodeEvent, names?: ReadonlyMap<string, string>): string {
  const fields: string[] = []
  const keys = Object.keys(e).filter((k) => !EVENT_HEAD.has(k) && k !== 'standbyName' && k !== 'reason')
  if ('reason' in e) keys.push('reason')
  for (const k of keys) {
    const v = e[k]
    let text: string
    if (k === 'standby' && typeof v === 'string') text = typeof e.standbyName === 'string' && e.standbyName !== '' ? e.standbyName : names?.get(v) ?? shortPeerId(v)
    else if (PEER_FIELDS.has(k) && typeof v === 'string') text = names?.get(v) ?? shortPeerId(v)
    else if (k.endsWith('At') && typeof v === 'number' && Number.isFinite(v)) text = new Date(v).toISOString()
    else if (typeof v === 'string') text = v
    else if (v === undefined) continue
    else text = JSON.stringify(v) ?? String(v)
    fields.push(`${k}=${quoted(escapeControl(text))}`)
  }
  const head = [String(e.time), String(e.kind).padEnd(11), String(e.type).padEnd(17), String(e.container ?? '-')]
  return escapeControl([...head, ...fields].join(' ')).trimEnd()
}

/** A value with spaces or quotes in double quotes (a quote in it as `\"`), so that fields stay apart. */
function quoted (s: string): string {
  return s === '' || /[\s"]/.test(s) ? `"${s.replace(/"/g, '\\"')}"` : s
}
