import type { CheckpointInfo, ContainerInfo, NodeStatus, PeerInfo } from '../api/types.ts'

/** A plain aligned table: no colours, safe to pipe. */
export function table (headers: string[], rows: string[][]): string {
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
    ['started', `${s.startedAt} (${ago(s.startedAt)})`]
  ])
}
