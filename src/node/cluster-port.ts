import type { Overlay } from '../overlay/overlay.ts'
import type { ClusterPort } from '../migration/host.ts'
import { MscError } from '../util/errors.ts'

/** Migration's view of the cluster, answered from the overlay's membership view. */
export function clusterPort (o: Overlay, selfName: string): ClusterPort {
  const view = o.view
  return {
    selfId: o.peerId,
    selfName,
    resolvePeer: (idOrName) => {
      const all = view.members()
      const m = all.find((x) => x.peerId === idOrName) ?? all.filter((x) => x.name === idOrName).sort((a, b) => (a.state === 'alive' ? 0 : 1) - (b.state === 'alive' ? 0 : 1))[0]
      if (idOrName === o.peerId || idOrName === selfName) throw new MscError('INVALID_ARGUMENT', 'the container already runs on this node')
      if (m == null) throw new MscError('NOT_FOUND', `no peer ${idOrName} in this node's view (see msc peer ls)`)
      if (m.state !== 'alive') throw new MscError('INVALID_STATE', `peer ${m.name} is ${m.state}`)
      return m.peerId
    },
    pickPeer: (needBytes) => {
      const candidates = view.alive().filter((m) => m.role === 'node' && m.resources.diskFreeBytes > needBytes)
        .sort((a, b) => (b.resources.memFreeBytes - a.resources.memFreeBytes) || (a.containers.length - b.containers.length))
      if (candidates.length === 0) throw new MscError('NOT_FOUND', 'no alive peer with room to migrate to (see msc peer ls)')
      return candidates[0]!.peerId
    },
    peerName: (peerId) => view.get(peerId)?.name ?? peerId,
    ownerOf: (container) => {
      const own = view.ownerOf(container)
      return own == null ? undefined : { owner: own.owner, epoch: own.epoch }
    },
    peerState: (peerId) => view.get(peerId)?.state,
    claimOf: (peerId, container) => {
      const c = view.get(peerId)?.containers.find((x) => x.name === container)
      return c == null ? undefined : { epoch: c.epoch, state: c.state }
    },
    waitForOwner: async (container, owner, epoch, timeoutMs) => {
      const deadline = Date.now() + timeoutMs
      while (Date.now() < deadline) {
        const own = view.ownerOf(container)
        if (own != null && own.owner === owner && own.epoch >= epoch) return
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      throw new MscError('RUNTIME_ERROR', `the cluster did not see ${container} owned at epoch ${epoch} within ${timeoutMs} ms`)
    }
  }
}
