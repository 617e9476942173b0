import type { CheckpointInfo, ContainerInfo, NodeStatus, PeerInfo } from '../api/types.ts'

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

export function containersTable (list: ContainerInfo[]): string {
  return table(['NAME', 'STATE', 'PID', 'STARTED', 'CHECKPOINTS', 'BUNDLE'],
    list.map((c) => [c.name, c.state, c.pid == null ? '-' : String(c.pid), ago(c.started), String(c.checkpoints), c.bundle]))
}

export function checkpointsTable (list: CheckpointInfo[]): string {
  return table(['ID', 'CREATED', 'SIZE', 'TOOK', 'AFTERWARDS'],
    list.map((c) => [c.id, ago(c.createdAt), bytes(c.sizeBytes), `${c.durationMs} ms`, c.leftRunning ? 'kept running' : 'stopped']))
}

export function peersTable (list: PeerInfo[]): string {
  return table(['NAME', 'STATE', 'LAST HEARD', 'RTT', 'CONTAINERS', 'PEER ID', 'ADDRESSES'],
    list.map((p) => [p.name, p.state, ago(p.lastHeard), p.rttMs == null ? '-' : `${p.rttMs} ms`,
      p.containers.map((c) => `${c.name}@${c.epoch}`).join(',') || '-', p.peerId, p.addrs.join(' ')]))
}

export function statusText (s: NodeStatus): string {
  const dropped = Object.entries(s.membership.dropped).filter(([, n]) => n > 0).map(([k, n]) => `${k}=${n}`).join(' ')
  return table(['FIELD', 'VALUE'], [
    ['peer id', s.peerId], ['name', s.name], ['addresses', s.addrs.join(' ') || '-'],
    ['peers alive', `${s.peersAlive} of ${s.peersKnown} known`],
    ['heartbeats', `${s.membership.accepted} accepted${dropped === '' ? '' : `, dropped: ${dropped}`}`],
    ['version', s.version], ['pid', String(s.pid)], ['data dir', s.dataDir], ['node id', s.nodeId],
    ['cgroup parent', s.cgroupParent], ['runc', s.runc], ['criu', s.criu], ['containers', String(s.containers)],
    ['started', `${s.startedAt} (${ago(s.startedAt)})`],
    ...clusterRows(s)
  ])
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
