import crypto from 'node:crypto'

/**
 * Which members keep a container's replicas: rendezvous (highest random weight)
 * hashing of (container, peer). Every node computes the same order from the same
 * candidates; containers spread evenly over the members; when a standby dies only the
 * containers it served move, each to the next peer in its own order. Pure.
 */
export function rankStandbys (container: string, candidates: Iterable<string>): string[] {
  const scored = [...new Set(candidates)].map((peer) => ({ peer, w: crypto.createHash('sha256').update(`${container}\n${peer}`).digest('hex') }))
  return scored.sort((a, b) => (a.w < b.w ? 1 : a.w > b.w ? -1 : 0)).map((s) => s.peer)
}

export function chooseStandbys (container: string, candidates: Iterable<string>, n: number): string[] {
  return rankStandbys(container, candidates).slice(0, Math.max(0, n))
}
