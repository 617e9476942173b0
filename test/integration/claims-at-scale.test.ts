/**
 * Claims at any count, with real msc nodes in two network-namespace hosts: a node with
 * 1,000 container records (stopped: records written to its data dir while it was
 * down, in the format the node keeps) has all 1,000 claims in its peer's view, which
 * fetched them over /msc/claims/1; removing one container and running another reach
 * the peer as changes; no claim set is refused on the way.
 * Needs root, iproute2, nsenter and runc (test/testbed/README.md).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import path from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { Testbed } from '../testbed/testbed.ts'
import { makeBundle, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { presentKeyAdmission, probeProtocol, rawPeer, stopAllRaw } from '../helpers/raw-peer.ts'
import type { PeerInfo } from '../../src/api/types.ts'
import { readPskFile } from '../../src/overlay/psk.ts'
import { claimDigest } from '../../src/overlay/membership/claim-set.ts'
import { CLAIMS_PROTOCOL, fetchClaims } from '../../src/overlay/membership/claims-protocol.ts'

const RECORDS = 1000
const nameOf = (i: number): string => `idle-${String(i).padStart(4, '0')}`

/** A stopped container's record, as the node writes it at `msc run` (container-manager.ts). */
async function writeRecord (dataDir: string, name: string): Promise<void> {
  const dir = path.join(dataDir, 'containers', name)
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  const record = { name, bundle: path.join(dir, 'bundle'), createdAt: new Date().toISOString(), startedAt: null, checkpointed: false, epoch: 1 }
  await fs.writeFile(path.join(dir, 'container.json'), JSON.stringify(record, null, 2) + '\n')
}

async function claimsSeen (c: Cluster, observer: ClusterNode, subject: ClusterNode): Promise<PeerInfo['containers'] | undefined> {
  return (await c.peersApi(observer)).find((p) => p.peerId === subject.peerId)?.containers
}

before(async () => {
  await Testbed.destroyStale()
})

describe(`a node with ${RECORDS} container records`, () => {
  let c: Cluster
  let n1: ClusterNode
  let n2: ClusterNode

  before(async () => {
    c = await startCluster({ hosts: 2, start: false, args: ['--no-mdns'] })
    n1 = c.node('n1')
    n2 = c.node('n2')
    // Once, so that the data dir is an msc data dir, then down while its records are written.
    await c.start(n1)
    await c.stop(n1)
    for (let i = 0; i < RECORDS; i++) await writeRecord(n1.dataDir, nameOf(i))
    await c.start(n1)
    n2.args = ['--no-mdns', '--bootstrap', n1.addr]
    await c.start(n2)
  })
  after(async () => {
    await stopAllRaw()
    await c?.destroy()
  })

  test('keeps all its claims visible to its peer', { timeout: 60_000 }, async () => {
    await c.waitAllAlive(20_000)
    let seen: PeerInfo['containers'] | undefined
    await waitFor(async () => {
      seen = await claimsSeen(c, n2, n1)
      return seen?.length === RECORDS
    }, 30_000, async () => `n2 to list ${RECORDS} claims of n1 (has ${seen?.length ?? 'none'})`)
    const names = seen!.map((x) => x.name).sort()
    assert.deepEqual(names, Array.from({ length: RECORDS }, (_, i) => nameOf(i)))
    for (const x of seen!) assert.deepEqual({ epoch: x.epoch, state: x.state }, { epoch: 1, state: 'stopped' }, x.name)
    // Seen through the CLI too, as a user would.
    const cli = (await c.peers(n2)).find((p) => p.peerId === n1.peerId)
    assert.equal(cli?.containers.length, RECORDS)
    assert.equal(cli?.state, 'alive')
  })

  test('/msc/claims/1 answers members only, with the whole set', { timeout: 60_000 }, async () => {
    // A holder of the cluster key may connect before it is a member (key-file clusters).
    const r = await rawPeer({ psk: await readPskFile(c.keyFile) })
    await r.host.dial(multiaddr(n1.addr), { signal: AbortSignal.timeout(5000) })
    assert.equal(await probeProtocol(r, n1.peerId, CLAIMS_PROTOCOL, { v: 1, type: 'get' }), 'refused', 'a non-member gets nothing')
    await presentKeyAdmission(r, n1.addr, await readPskFile(c.keyFile), 'raw')
    const stream = await r.host.dialProtocol(peerIdFromString(n1.peerId), CLAIMS_PROTOCOL, { signal: AbortSignal.timeout(5000) })
    const set = await fetchClaims(stream, n1.peerId, AbortSignal.timeout(20_000))
    assert.equal(set.claims.length, RECORDS)
    assert.equal(claimDigest(set.claims), set.digest)
    assert.deepEqual(set.claims.map((x) => x.name), Array.from({ length: RECORDS }, (_, i) => nameOf(i)))
  })

  test('a removed and a new container reach the peer; no claim set was refused', { timeout: 90_000 }, async () => {
    const rm = await c.msc(n1, 'rm', nameOf(7))
    assert.equal(rm.exitCode, 0, rm.stderr)
    await waitFor(async () => !((await claimsSeen(c, n2, n1)) ?? []).some((x) => x.name === nameOf(7)), 15_000, `n2 to see ${nameOf(7)} gone`)
    const bundle = await makeBundle('counter', path.join(c.root, 'bundle-counter'), '--interval-ms', '500')
    const run = await c.msc(n1, 'run', 'fresh', bundle)
    assert.equal(run.exitCode, 0, run.stderr)
    let fresh: PeerInfo['containers'][number] | undefined
    await waitFor(async () => {
      fresh = ((await claimsSeen(c, n2, n1)) ?? []).find((x) => x.name === 'fresh')
      return fresh?.state === 'running'
    }, 15_000, 'n2 to see fresh running on n1')
    assert.equal(fresh?.epoch, 1)
    const seen = await claimsSeen(c, n2, n1)
    assert.equal(seen?.length, RECORDS)
    // n2 owns nothing, so the names are n1's in its view: `msc run` of one on n2 is refused.
    const taken = await c.msc(n2, 'run', nameOf(8), bundle)
    assert.notEqual(taken.exitCode, 0, 'a name n1 claims cannot be run on n2')
    assert.match(taken.stderr, /taken in the cluster by peer n1/)
    const s = await c.statusApi(n2)
    assert.equal(s.membership.dropped['claims-digest'], 0, JSON.stringify(s.membership))
    assert.equal(s.membership.dropped['claims-page'], 0, JSON.stringify(s.membership))
    assert.equal(s.membership.dropped.malformed, 0, JSON.stringify(s.membership))
    assert.equal(s.membership.dropped.oversized, 0, JSON.stringify(s.membership))
    const r = await c.msc(n1, 'rm', '--force', 'fresh')
    assert.equal(r.exitCode, 0, r.stderr)
  })
})
