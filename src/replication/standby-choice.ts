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

/**
 * The first `n` candidates in the container's rendezvous order, passing over those in
 * `avoid` (members that refused it for a reason that lasts, such as having a container
 * of that name) as long as enough others are there; avoided ones fill the rest, in order.
 */
export function chooseStandbys (container: string, candidates: Iterable<string>, n: number, avoid: ReadonlySet<string> = new Set()): string[] {
  const ranked = rankStandbys(container, candidates)
  const want = Math.max(0, n)
  return [...ranked.filter((p) => !avoid.has(p)), ...ranked.filter((p) => avoid.has(p))].slice(0, want)
}

/**
 * The current standbys (peer -> the generation it acknowledged, null for none yet) that
 * drop their replicas now: those no longer chosen, and only once the chosen ones are
 * `wanted` (or more) and each holds a generation, so that switching standbys never
 * leaves a moment without a replica to fail over from. A standby passed over because
 * the owner cannot reach it (it looks dead from here, or every member does, as during
 * a cut of the owner's own link) keeps its replica meanwhile: a drop sent now would
 * reach it once the link is back, maybe just when the owner loses its lease and that
 * replica is the one to bring the container back. Pure.
 */
export function standbysToDrop (current: ReadonlyMap<string, number | null>, chosen: readonly string[], wanted: number): string[] {
  const covered = chosen.length >= wanted && chosen.every((p) => current.get(p) != null)
  return covered ? [...current.keys()].filter((p) => !chosen.includes(p)) : []
}
