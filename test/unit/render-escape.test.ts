/**
 * Terminal hygiene: text that came from a peer (names, addresses, container names,
 * versions) is printed with control characters escaped, in every table the CLI prints.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { containersTable, containerText, escapeControl, eventLine, peersTable, statusText, table } from '../../src/cli/render.ts'
import type { ContainerInfo, NodeEvent, NodeStatus, PeerInfo } from '../../src/api/types.ts'

/** Nothing a terminal would act on: no C0 (except none at all), DEL, C1, bidi or line separators. */
function inert (s: string): boolean {
  return !/[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(s)
}

describe('escapeControl', () => {
  test('C0, DEL and C1 controls become visible escapes', () => {
    assert.equal(escapeControl('\x1b[31mred\x1b[0m'), '\\x1b[31mred\\x1b[0m')
    assert.equal(escapeControl('a\nb\rc\td'), 'a\\nb\\rc\\td')
    assert.equal(escapeControl('\x00\x07\x08\x1f\x7f'), '\\x00\\x07\\x08\\x1f\\x7f')
    assert.equal(escapeControl('\x80\x9b2J\x9f'), '\\x80\\x9b2J\\x9f')
    // OSC 8 hyperlink and window-title sequences.
    assert.equal(escapeControl('\x1b]0;pwned\x07'), '\\x1b]0;pwned\\x07')
    assert.equal(escapeControl('\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\'), '\\x1b]8;;http://evil\\x1b\\x\\x1b]8;;\\x1b\\')
  })

  test('bidirectional overrides and line separators are escaped too', () => {
    assert.equal(escapeControl('abc\u202Efdp.exe'), 'abc\\u202efdp.exe')
    assert.equal(escapeControl('a\u2028b\u2029c\u2066d\u2069'), 'a\\u2028b\\u2029c\\u2066d\\u2069')
  })

  test('ordinary text, Unicode and backslashes are left as they are', () => {
    for (const s of ['node-a', '/ip4/10.0.0.1/tcp/4710/p2p/12D3KooWRQsieuXF9A1YqDCpoTLQnBaGLQ6Zcx8MtZbXx1j2Y6ms', 'nœud é 節點 🚀', 'C:\\path', '0.1.0', '']) {
      assert.equal(escapeControl(s), s)
    }
  })
})

describe('tables escape every cell', () => {
  const hostile = 'evil\x1b[2J\x1b[H\nnode-b\u202e'
  const peer: PeerInfo = {
    peerId: '12D3KooWRQsieuXF9A1YqDCpoTLQnBaGLQ6Zcx8MtZbXx1j2Y6ms',
    name: hostile,
    addrs: ['/ip4/10.0.0.1/tcp/4710\x1b]0;title\x07', '/dns4/x\r\n/tcp/1'],
    state: 'alive',
    lastHeard: new Date().toISOString(),
    stateSince: new Date().toISOString(),
    connected: true,
    version: '0.1.0\x1b[5m',
    role: 'node\x9b',
    rttMs: null,
    containers: [{ name: 'web\x1b[8m', epoch: 3, state: 'running' }],
    resources: { memFreeBytes: 1, memTotalBytes: 2, diskFreeBytes: 3 }
  }

  test('peersTable', () => {
    const out = peersTable([peer])
    assert.ok(inert(out), JSON.stringify(out))
    assert.equal(out.split('\n').length, 2, 'one header line, one line per peer')
    assert.ok(out.includes('evil\\x1b[2J\\x1b[H\\nnode-b\\u202e'))
    assert.ok(out.includes('web\\x1b[8m@3'))
    assert.ok(out.includes('/ip4/10.0.0.1/tcp/4710\\x1b]0;title\\x07 /dns4/x\\r\\n/tcp/1'))
  })

  test('statusText', () => {
    const s: NodeStatus = {
      peerId: peer.peerId,
      name: hostile,
      addrs: peer.addrs,
      peersAlive: 1,
      peersKnown: 1,
      membership: { accepted: 1, dropped: { 'not-member': 2, 'evil\x1b[1m': 1 } },
      version: '0.1.0\x1b[5m',
      pid: 1,
      dataDir: '/var/lib/msc\n',
      nodeId: 'abcd1234',
      cgroupParent: 'msc-abcd1234',
      runc: 'runc',
      criu: 'criu',
      containers: 0,
      startedAt: new Date().toISOString(),
      cluster: { id: 'c1\x1b[1m', mode: 'token', members: 2, joinHint: 'run msc cluster token\n', refused: { connections: 3, streams: 0, records: 1 } },
      failover: {
        witness: true,
        leaseMs: 2_500,
        members: 2,
        quorum: 2,
        held: 0,
        failover: 'not possible: 2 members, a majority is 2; add a third member (any node, or one with --witness)',
        replicas: [{ container: 'db\x1b[8m', owner: peer.peerId, epoch: 4, generation: null, dumpedAt: new Date().toISOString() }],
        lost: [{ container: 'lost\x1b[2J', owner: peer.peerId, epoch: 2, since: new Date().toISOString() }]
      }
    }
    const out = statusText(s, new Map([[peer.peerId, hostile]]))
    assert.ok(inert(out), JSON.stringify(out))
    assert.ok(out.includes('not-member=2'))
    assert.ok(out.includes('0.1.0\\x1b[5m'))
    assert.match(out, /^cluster +c1\\x1b\[1m \(tokens, 2 members\)$/m)
    assert.match(out, /^join +run msc cluster token\\n$/m)
    assert.match(out, /^refused +connections=3 records=1$/m)
    assert.match(out, /^failover +not possible: 2 members, a majority is 2; add a third member \(any node, or one with --witness\)$/m)
    assert.match(out, /^witness +yes: votes on leases, runs no container$/m)
    assert.match(out, /^leases +2\.5s each, 0 held by this node$/m)
    assert.match(out, /^db\\x1b\[8m +evil\\x1b\[2J\\x1b\[H\\nnode-b\\u202e \(12D3KooW…j2Y6ms\) +4 +- +0s ago$/m)
  })

  test('containersTable and containerText: standby names and replication errors', () => {
    const c: ContainerInfo = {
      name: 'web',
      state: 'running',
      pid: 1,
      started: new Date().toISOString(),
      createdAt: new Date().toISOString(),
      bundle: '/srv/b\x1b[1m',
      checkpoints: 0,
      lastCheckpoint: null,
      epoch: 2,
      replicas: 1,
      replication: {
        replicas: 1,
        standbys: [{ peerId: peer.peerId, name: hostile, generation: 3, ackedAt: new Date().toISOString() }],
        generation: 3,
        ackedGeneration: 3,
        rpoMs: 900,
        freezeMs: 40,
        bytesPerRound: 4096,
        imageBytes: 8192,
        intervalMs: 5000,
        lastError: 'peer \x1b[31mbusy\x1b[0m (try later)',
        leaseHeld: true
      }
    }
    const ps = containersTable([c, { ...c, name: 'solo', replication: { ...c.replication!, standbys: [] } }])
    assert.ok(inert(ps), JSON.stringify(ps))
    assert.ok(ps.includes('evil\\x1b[2J\\x1b[H\\nnode-b\\u202e'))
    assert.ok(ps.includes('  peer \\x1b[31mbu…  '), ps)
    const text = containerText(c)
    assert.ok(inert(text), JSON.stringify(text))
    assert.match(text, /^last error +peer \\x1b\[31mbusy\\x1b\[0m \(try later\)$/m)
  })

  test('eventLine', () => {
    const e: NodeEvent = {
      seq: 7,
      time: '2026-11-28T17:07:45.111Z',
      kind: 'replication',
      type: 'generation-failed',
      container: 'web\x1b[8m',
      generation: 4,
      standby: peer.peerId,
      standbyName: hostile,
      reason: 'closed "by peer"\r\n\x9b2J'
    }
    const line = eventLine(e)
    assert.ok(inert(line), JSON.stringify(line))
    assert.equal(line.split('\n').length, 1)
    assert.equal(line, '2026-11-28T17:07:45.111Z replication generation-failed web\\x1b[8m generation=4 standby=evil\\x1b[2J\\x1b[H\\nnode-b\\u202e reason="closed \\"by peer\\"\\r\\n\\x9b2J"')
    // Without a name, a peer id is shortened; a member name from the list replaces it.
    const lost: NodeEvent = { seq: 8, time: e.time, kind: 'failover', type: 'owner-lost', container: 'db', owner: peer.peerId, reason: 'dead' }
    assert.match(eventLine(lost), / owner=12D3KooW…j2Y6ms reason=dead$/)
    assert.match(eventLine(lost, new Map([[peer.peerId, 'node a']])), / owner="node a" reason=dead$/)
  })

  test('table() itself, so every other table is covered', () => {
    assert.equal(table(['A', 'B'], [['x\x1b', 'y\n']]), 'A      B\nx\\x1b  y\\n')
  })
})
