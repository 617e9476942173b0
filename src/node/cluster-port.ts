import type { PrivateKey } from '@libp2p/interface'
import type { Overlay } from '../overlay/overlay.ts'
import type { ClusterPort } from '../migration/host.ts'
import type { ClusterService } from '../cluster/cluster-service.ts'
import { signHandover } from '../cluster/handover.ts'
import { MscError } from '../util/errors.ts'

/**
 * Migration's view of the cluster: who is a member (and under which name) from the
 * persisted member list, who is alive and what they claim from the membership view.
 * Names are the ones members were admitted under, unique in the cluster; what a
 * heartbeat says of itself is never used to pick a target.
 */
export function clusterPort (o: Overlay, cluster: ClusterService, privateKey: PrivateKey, selfName: string): ClusterPort {
  const view = o.view
  const nameOf = (peerId: string): string => cluster.member(peerId)?.name ?? view.get(peerId)?.name ?? peerId
  return {
    selfId: o.peerId,
    selfName,
    signHandover: async (h) => await signHandover(privateKey, { ...h, from: o.peerId, at: Date.now() }),
    resolvePeer: (idOrName) => {
      if (idOrName === o.peerId || idOrName === selfName) throw new MscError('INVALID_ARGUMENT', 'the container already runs on this node')
      const member = cluster.member(idOrName) ?? cluster.members().find((x) => x.name === idOrName)
      if (member == null) throw new MscError('NOT_FOUND', `no member ${idOrName} in this node's cluster (see msc cluster ls)`)
      const state = view.get(member.peerId)?.state
      if (state !== 'alive') throw new MscError('INVALID_STATE', `peer ${member.name} is ${state ?? 'not heard from yet'}`)
      return member.peerId
    },
    pickPeer: (needBytes) => {
      const candidates = view.alive().filter((m) => cluster.isMember(m.peerId) && m.role === 'node' && m.resources.diskFreeBytes > needBytes)
        .sort((a, b) => (b.resources.memFreeBytes - a.resources.memFreeBytes) || (a.containers.length - b.containers.length))
      if (candidates.length === 0) throw new MscError('NOT_FOUND', 'no alive peer with room to migrate to (see msc peer ls)')
      return candidates[0]!.peerId
    },
    peerName: nameOf,
    ownerOf: (container) => {
      const own = view.ownerOf(container)
      return own == null ? undefined : { owner: own.owner, epoch: own.epoch }
    },
    peerState: (peerId) => view.get(peerId)?.state,
    claimOf: (peerId, container) => {
      const c = view.get(peerId)?.containers.find((x) => x.name === container)
      return c == null ? undefined : { epoch: c.epoch, state: c.state, ...(c.resumes != null ? { resumes: c.resumes } : {}) }
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
