/**
 * Settling a migration after a crash (src/migration/settle.ts, journal.ts, and the
 * source's restart recovery in src/node/migration-host.ts), against fakes of the
 * cluster port and the container host: one convergence rule for a live target that
 * lost its decision and for a target restarted before it; commits that keep trying
 * rather than discard the only copy; the source's journal and what a restarted source
 * does with each phase.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signHandover, type Handover } from '../../src/cluster/handover.ts'
import { commitWithRetry, settle, settleLeftIncoming, settleVerdict, type SourceClaim } from '../../src/migration/settle.ts'
import { readOutgoingJournal, sourceReleased, writeOutgoingJournal } from '../../src/migration/journal.ts'
import { recoverOutgoing } from '../../src/node/migration-host.ts'
import { DataDir } from '../../src/node/data-dir.ts'
import { silentLogger } from '../../src/util/logger.ts'

const log = silentLogger()
let kSource: PrivateKey
let SOURCE = ''
let TARGET = ''
let OTHER = ''

before(async () => {
  kSource = await generateKeyPair('Ed25519')
  SOURCE = peerIdFromPrivateKey(kSource).toString()
  TARGET = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  OTHER = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
})

async function handover (container: string, epoch: number, to = TARGET): Promise<Handover> {
  return await signHandover(kSource, { container, epoch, from: SOURCE, to, at: Date.now() })
}

/** A cluster port whose view of the source follows a script: one entry per poll, the last repeats. */
function scriptedCluster (
  script: Array<{ state?: string; claim?: SourceClaim }>
): { selfId: string; peerState: (p: string) => string | undefined; claimOf: (p: string, c: string) => SourceClaim | undefined; polls: () => number } {
  let i = 0
  let polls = 0
  const cur = (): { state?: string; claim?: SourceClaim } => script[Math.min(i, script.length - 1)]!
  return {
    selfId: TARGET,
    peerState: (p) => {
      polls++
      const s = p === SOURCE ? cur().state : undefined
      return s
    },
    claimOf: (p) => {
      const c = p === SOURCE ? cur().claim : undefined
      i++
      return c
    },
    polls: () => polls
  }
}

describe('the settle rule', () => {
  test('what the source shows decides', () => {
    const cases: Array<[string | undefined, { epoch: number; state: string; resumes?: number } | undefined, string, string]> = [
      ['alive', undefined, 'commit', 'released: no claim'],
      ['alive', { epoch: 3, state: 'running', resumes: 3 }, 'abort', 'resumed at its epoch since the offer (count 2 then)'],
      ['alive', { epoch: 3, state: 'running', resumes: 2 }, 'wait', 'running at the count of the offer: a claim from before the freeze'],
      ['alive', { epoch: 3, state: 'running' }, 'wait', 'never resumed: a claim from before the freeze'],
      ['alive', { epoch: 3, state: 'paused' }, 'wait', 'frozen for the migration: its thaw or its release shows which'],
      ['alive', { epoch: 4, state: 'running' }, 'abort', 'running at a later epoch'],
      ['alive', { epoch: 2, state: 'running' }, 'commit', 'an older claim is not this migration'],
      ['alive', { epoch: 3, state: 'checkpointed' }, 'commit', 'only images (a source restarted after its dump)'],
      ['alive', { epoch: 3, state: 'stopped' }, 'wait', 'between its dump and its resume or release'],
      ['alive', { epoch: 3, state: 'created' }, 'wait', 'resuming'],
      ['left', undefined, 'commit', 'left without it'],
      ['left', { epoch: 3, state: 'running', resumes: 5 }, 'abort', 'left with it resumed and running (containers outlive the node)'],
      ['left', { epoch: 3, state: 'stopped' }, 'wait', 'left between its dump and its resume or release: its restart shows which'],
      ['left', { epoch: 3, state: 'checkpointed' }, 'commit', 'left holding only images'],
      ['suspect', undefined, 'wait', 'suspect'],
      ['dead', { epoch: 3, state: 'running', resumes: 3 }, 'wait', 'dead: its last claim may be stale'],
      [undefined, undefined, 'wait', 'not heard yet (a restarted target)']
    ]
    for (const [state, claim, want, why] of cases) assert.equal(settleVerdict(state, claim, 3, 2), want, `${why}: ${state} ${JSON.stringify(claim)}`)
    assert.equal(settleVerdict('alive', { epoch: 3, state: 'running', resumes: 1 }, 3), 'abort', 'the first resume, against an offer without a count')
  })

  test('waits through a transient state, then follows the source', async () => {
    const c = scriptedCluster([{}, { state: 'alive', claim: { epoch: 1, state: 'stopped' } }, { state: 'alive', claim: { epoch: 1, state: 'stopped' } }, { state: 'alive', claim: { epoch: 1, state: 'running', resumes: 1 } }])
    assert.equal(await settle({ cluster: c, source: SOURCE, container: 'web', epoch: 1, timeoutMs: 5_000, pollMs: 5, logger: log }), 'abort')
    assert.equal(c.polls(), 4)
    // The source killed right after "restored", before a heartbeat showed the freeze:
    // its last claim still says running (count unchanged). The target waits through
    // that and its death, and commits once the restarted source no longer claims it.
    const k = scriptedCluster([{ state: 'alive', claim: { epoch: 1, state: 'running', resumes: 4 } }, { state: 'suspect', claim: { epoch: 1, state: 'running', resumes: 4 } }, { state: 'dead',
      claim: { epoch: 1, state: 'running', resumes: 4 } }, { state: 'alive' }])
    assert.equal(await settle({ cluster: k, source: SOURCE, container: 'web', epoch: 1, resumes: 4, timeoutMs: 5_000, pollMs: 5, logger: log }), 'commit')
    assert.equal(k.polls(), 4)
    const r = scriptedCluster([{ state: 'dead', claim: { epoch: 1, state: 'running' } }, { state: 'alive' }])
    assert.equal(await settle({ cluster: r, source: SOURCE, container: 'web', epoch: 1, timeoutMs: 5_000, pollMs: 5, logger: log }), 'commit')
  })

  test('a source silent for the whole window: commit; a node stopping: unknown', async () => {
    const silent = scriptedCluster([{ state: 'dead' }])
    const t0 = Date.now()
    assert.equal(await settle({ cluster: silent, source: SOURCE, container: 'web', epoch: 1, timeoutMs: 150, pollMs: 10, logger: log }), 'commit')
    assert.ok(Date.now() - t0 >= 140, 'waited the window')
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 50)
    assert.equal(await settle({ cluster: silent, source: SOURCE, container: 'web', epoch: 1, timeoutMs: 10_000, pollMs: 10, logger: log, signal: ac.signal }), 'unknown')
  })
})

describe('commit keeps trying', () => {
  const enospc = (): Error => Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })

  test('a failing commit is retried until it lands', async () => {
    let calls = 0
    const ok = await commitWithRetry({ commit: async () => {
      if (++calls < 3) throw enospc()
    }, still: async () => true, logger: log, retryMs: 5 })
    assert.equal(ok, true)
    assert.equal(calls, 3)
  })

  test('gives up when the container is no longer pending, or the node stops', async () => {
    let calls = 0
    assert.equal(await commitWithRetry({ commit: async () => {
      calls++
      throw enospc()
    }, still: async () => calls < 2, logger: log, retryMs: 5 }), false)
    assert.equal(calls, 2)
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 30)
    assert.equal(await commitWithRetry({ commit: async () => {
      throw enospc()
    }, still: async () => true, logger: log, retryMs: 5, signal: ac.signal }), false)
  })
})

describe('a restarted target settles what it left pending', () => {
  function fakeHost (pending: Array<{ name: string; running: boolean; handover: Handover | null; sourceResumes?: number }>): {
    host: Parameters<typeof settleLeftIncoming>[0]['host']
    committed: Array<[string, number, Handover]>
    discarded: string[]
  } {
    const committed: Array<[string, number, Handover]> = []
    const discarded: string[] = []
    let left = [...pending]
    return {
      committed,
      discarded,
      host: {
        pendingIncoming: async () => left.map((x) => ({ sourceResumes: 0, ...x })),
        commit: async (name, epoch, h) => {
          committed.push([name, epoch, h])
          left = left.filter((x) => x.name !== name)
        },
        discard: async (name) => {
          discarded.push(name)
          left = left.filter((x) => x.name !== name)
        },
        exclusive: async (_name, fn) => await fn()
      }
    }
  }

  test('released by the source: committed with the kept handover; resumed by it: removed', async () => {
    const hA = await handover('a', 2)
    const hB = await handover('b', 5)
    const hC = await handover('c', 5)
    const f = fakeHost([{ name: 'a', running: true, handover: hA }, { name: 'b', running: true, handover: hB, sourceResumes: 1 }, { name: 'c', running: true, handover: hC, sourceResumes: 1 }])
    const cluster = {
      selfId: TARGET,
      peerState: (p: string) => p === SOURCE ? 'alive' : undefined,
      // b resumed since its offer (count 1 then); c's claim is the one from before the freeze.
      claimOf: (_p: string, c: string) => c === 'b' ? { epoch: 4, state: 'running', resumes: 2 } : c === 'c' ? { epoch: 4, state: 'running', resumes: 1 } : undefined
    }
    const out = await settleLeftIncoming({ host: f.host, cluster, logger: log, settleTimeoutMs: 300, pollMs: 5 })
    assert.deepEqual(out, [{ name: 'a', outcome: 'commit' }, { name: 'b', outcome: 'abort' }, { name: 'c', outcome: 'commit' }], 'c waited the window out, then committed')
    assert.deepEqual(f.committed, [['a', 2, hA], ['c', 5, hC]])
    assert.deepEqual(f.discarded, ['b'])
  })

  test('not running: left to the daemon; no valid handover to this node: never claimed, never killed', async () => {
    const f = fakeHost([
      { name: 'gone', running: false, handover: await handover('gone', 2) },
      { name: 'bare', running: true, handover: null },
      { name: 'elsewhere', running: true, handover: await handover('elsewhere', 2, OTHER) },
      { name: 'renamed', running: true, handover: await handover('other-name', 2) },
      { name: 'forged', running: true, handover: { ...await handover('forged', 2), epoch: 3 } }
    ])
    const cluster = { selfId: TARGET, peerState: () => 'alive', claimOf: () => undefined }
    const out = await settleLeftIncoming({ host: f.host, cluster, logger: log, settleTimeoutMs: 5_000, pollMs: 5 })
    assert.deepEqual(out.map((x) => x.outcome), ['not-running', 'no-proof', 'no-proof', 'no-proof', 'no-proof'])
    assert.deepEqual(f.committed, [])
    assert.deepEqual(f.discarded, [])
  })

  test('a source silent past the window: committed; the node stopping first: left pending', async () => {
    const h = await handover('c', 2)
    const f = fakeHost([{ name: 'c', running: true, handover: h }])
    const silent = { selfId: TARGET, peerState: () => undefined, claimOf: () => undefined }
    assert.deepEqual(await settleLeftIncoming({ host: f.host, cluster: silent, logger: log, settleTimeoutMs: 100, pollMs: 10 }), [{ name: 'c', outcome: 'commit' }])
    const g = fakeHost([{ name: 'd', running: true, handover: await handover('d', 2) }])
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 30)
    assert.deepEqual(await settleLeftIncoming({ host: g.host, cluster: silent, logger: log, settleTimeoutMs: 10_000, pollMs: 5, signal: ac.signal }), [{ name: 'd', outcome: 'unknown' }])
    assert.deepEqual([g.committed, g.discarded], [[], []])
  })
})

describe('the source journal and a restarted source', () => {
  let dir = ''
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-unit-journal-'))
  })
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })

  test('written atomically, read back, garbage reads as none', async () => {
    const staging = path.join(dir, 'j1')
    await fs.mkdir(staging)
    assert.equal(await readOutgoingJournal(staging), null)
    await writeOutgoingJournal(staging, { migrationId: 'm1', container: 'web', epoch: 3, target: TARGET, targetName: 'n2', phase: 'dumped' })
    const j = await readOutgoingJournal(staging)
    assert.equal(j?.phase, 'dumped')
    assert.equal(sourceReleased(j), false)
    await writeOutgoingJournal(staging, { migrationId: 'm1', container: 'web', epoch: 3, target: TARGET, targetName: 'n2', phase: 'restored-on-target' })
    assert.equal(sourceReleased(await readOutgoingJournal(staging)), true)
    assert.deepEqual((await fs.readdir(staging)).sort(), ['journal.json'], 'no temp file left')
    await fs.writeFile(path.join(staging, 'journal.json'), '{"v":1,"phase":"committed"')
    assert.equal(await readOutgoingJournal(staging), null)
    assert.equal(sourceReleased(null), false)
  })

  async function sourceWith (name: string, epoch: number, phase: 'dumped' | 'restored-on-target' | 'committed'): Promise<{ dd: DataDir; staging: string }> {
    const dd = new DataDir(await fs.mkdtemp(path.join(dir, 'dd-')))
    await fs.mkdir(dd.checkpointsDir(name), { recursive: true })
    await fs.writeFile(dd.recordFile(name), JSON.stringify({ name, bundle: '/nowhere', createdAt: '', startedAt: '', checkpointed: false, epoch }))
    const staging = path.join(dd.tmp, 'mig-out-m1')
    await fs.mkdir(path.join(staging, 'images'), { recursive: true })
    await fs.writeFile(path.join(staging, 'images', 'inventory.img'), 'x')
    await writeOutgoingJournal(staging, { migrationId: 'm1', container: name, epoch: 3, target: TARGET, targetName: 'n2', phase })
    return { dd, staging }
  }
  const noRunc = { state: async () => null, delete: async () => {} }

  for (const phase of ['restored-on-target', 'committed'] as const) {
    test(`${phase}: the restart finishes the release; the dump is not offered as a checkpoint`, async () => {
      const { dd, staging } = await sourceWith('web', 3, phase)
      const r = await recoverOutgoing({ dataDir: dd, runc: noRunc, cgroupsPath: (n) => `/p/${n}` }, staging)
      assert.deepEqual(r, { released: 'web', to: TARGET, toName: 'n2', phase })
      await assert.rejects(fs.access(dd.containerDir('web')), 'the container is gone from this node')
      await assert.rejects(fs.access(staging), 'and its dump')
      assert.equal((await dd.readMoved('web'))?.toName, 'n2', 'msc logs says where it went')
    })
  }

  test('released, but the record is another incarnation (other epoch): the record stays', async () => {
    const { dd, staging } = await sourceWith('web', 7, 'committed')
    const r = await recoverOutgoing({ dataDir: dd, runc: noRunc, cgroupsPath: (n) => `/p/${n}` }, staging)
    assert.ok('released' in r)
    await fs.access(dd.recordFile('web'))
  })

  test('released, but runc still runs it: nothing touched, said why', async () => {
    const { dd, staging } = await sourceWith('web', 3, 'restored-on-target')
    const r = await recoverOutgoing({ dataDir: dd, runc: { state: async () => ({ id: 'web', pid: 1, status: 'running', bundle: '', created: '' }), delete: async () => {} }, cgroupsPath: (n) => `/p/${n}` }, staging)
    assert.match((r as { reason: string }).reason, /runc has web running/)
    await fs.access(dd.recordFile('web'))
    await fs.access(path.join(staging, 'journal.json'))
  })

  test('dumped: the dump goes the checkpoint way (an incomplete one is kept, with its journal)', async () => {
    const { dd, staging } = await sourceWith('web', 3, 'dumped')
    const r = await recoverOutgoing({ dataDir: dd, runc: noRunc, cgroupsPath: (n) => `/p/${n}` }, staging)
    assert.match((r as { reason: string }).reason, /dump\.log/)
    await fs.access(dd.recordFile('web'))
    await fs.access(path.join(staging, 'journal.json'))
  })
})
