/**
 * The real `msc` CLI against the real ControlServer with fake handlers: no runc, no
 * node. Checks what the CLI prints for the API's answers, its exit codes (0 ok,
 * 1 failed, 2 bad usage/arguments, 3 no node reachable), and the socket's mode.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { ControlServer, type ControlHandlers } from '../../src/api/server.ts'
import type { CheckpointInfo, ContainerInfo, NodeEvent, NodeStatus } from '../../src/api/types.ts'
import { MscError } from '../../src/util/errors.ts'
import { silentLogger } from '../../src/util/logger.ts'

const MSC = fileURLToPath(new URL('../../bin/msc', import.meta.url))

const PEER_A = '12D3KooWRQsieuXF9A1YqDCpoTLQnBaGLQ6Zcx8MtZbXx1j2Y6ms'
const PEER_B = '12D3KooWMRB2A6uH9ihVZiwXs1vEqyvUiPK2y15kLLeALU7gtB8h'
const PEER_EVIL = '12D3KooWKMwrj6nRyKasioJJpL93YMFxF9ywyyPvZ9cqAKTRbrrz'
const ago = (ms: number): string => new Date(Date.now() - ms).toISOString()

const CONTAINERS: ContainerInfo[] = [
  {
    name: 'web',
    state: 'running',
    pid: 4242,
    started: ago(90_000),
    createdAt: '2025-01-01T00:00:00.000Z',
    bundle: '/srv/bundles/web',
    checkpoints: 2,
    lastCheckpoint: 'ck-2',
    epoch: 3,
    replicas: 1,
    replication: {
      replicas: 1,
      standbys: [{ peerId: PEER_B, name: 'node-b', generation: 41, ackedAt: ago(1_800) }],
      generation: 42,
      ackedGeneration: 41,
      rpoMs: 2_100,
      freezeMs: 120,
      bytesPerRound: 1_258_291,
      imageBytes: 50_331_648,
      intervalMs: 5_000,
      lastError: null,
      leaseHeld: true
    }
  },
  {
    name: 'db.primary',
    state: 'checkpointed',
    pid: null,
    started: null,
    createdAt: '2025-01-02T00:00:00.000Z',
    bundle: '/srv/bundles/db',
    checkpoints: 1,
    lastCheckpoint: 'ck-1',
    epoch: 1,
    replicas: 0
  },
  {
    name: 'cache',
    state: 'stopped',
    pid: null,
    started: null,
    createdAt: '2025-01-03T00:00:00.000Z',
    bundle: '/srv/bundles/cache',
    checkpoints: 0,
    lastCheckpoint: null,
    epoch: 5,
    replicas: 1,
    leaseLost: { epoch: 5, at: ago(30_000) }
  },
  {
    name: 'lonely',
    state: 'running',
    pid: 5151,
    started: ago(10_000),
    createdAt: '2025-01-04T00:00:00.000Z',
    bundle: '/srv/bundles/lonely',
    checkpoints: 0,
    lastCheckpoint: null,
    epoch: 1,
    replicas: 2,
    replication: {
      replicas: 2,
      standbys: [],
      generation: 0,
      ackedGeneration: null,
      rpoMs: null,
      freezeMs: null,
      bytesPerRound: null,
      imageBytes: null,
      intervalMs: 5_000,
      lastError: 'no live member to keep a replica (see msc peer ls)',
      leaseHeld: true
    }
  }
]

const STATUS: NodeStatus = {
  peerId: '12D3KooWFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeF',
  name: 'fake',
  addrs: ['/ip4/127.0.0.1/tcp/4710/p2p/12D3KooWFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeF'],
  peersAlive: 0,
  peersKnown: 0,
  membership: { accepted: 0, dropped: {} },
  version: '0.1.0',
  pid: 1,
  dataDir: '/fake',
  nodeId: 'deadbeef',
  cgroupParent: 'msc-deadbeef',
  runc: 'runc',
  criu: 'criu',
  containers: CONTAINERS.length,
  startedAt: new Date().toISOString(),
  cluster: { id: '0123456789abcdef0123456789abcdef', mode: 'token', members: 3, joinHint: 'run `msc cluster token`', refused: { connections: 0, streams: 0, records: 0 } },
  failover: {
    witness: false,
    leaseMs: 10_000,
    members: 3,
    quorum: 2,
    failover: 'possible while 2 of 3 members are up',
    held: 2,
    replicas: [{ container: 'db', owner: PEER_A, epoch: 4, generation: 17, dumpedAt: ago(3_000) }],
    lost: [{ container: 'gone', owner: PEER_A, epoch: 2, since: ago(60_000) }]
  }
}

const MEMBERS = [
  { peerId: PEER_A, name: 'node-a', addrs: [], admittedAt: ago(7_200_000), admittedBy: PEER_A, self: false, state: 'alive' },
  { peerId: PEER_B, name: 'node-b', addrs: [], admittedAt: ago(3_600_000), admittedBy: PEER_A, self: false, state: 'alive' }
]

/** A name another node chose, with a terminal escape in it. */
const EVIL_NAME = 'evil\x1b[2J\x1b]0;pwned\x07\u202e'
let seq = 0
function event (kind: NodeEvent['kind'], e: { type: string; container?: string; [k: string]: unknown }): NodeEvent {
  return { ...e, seq: ++seq, time: new Date(Date.parse('2026-11-28T17:07:45.111Z') + seq * 1000).toISOString(), kind, type: e.type }
}
const EVENTS: NodeEvent[] = [
  event('lease', { type: 'lease-acquired', container: 'web', epoch: 3 }),
  event('replication', { type: 'standby-chosen', container: 'web', standby: PEER_B, standbyName: 'node-b' }),
  event('replication', { type: 'generation', container: 'web', generation: 42, standby: PEER_B, standbyName: 'node-b', wireBytes: 1_258_291, imageBytes: 50_331_648, freezeMs: 120, full: false }),
  event('replication', { type: 'replica-stored', container: 'db', owner: PEER_A, epoch: 4, generation: 17 }),
  event('failover', { type: 'owner-lost', container: 'db', owner: PEER_A, reason: 'node-a is dead' }),
  event('replication', { type: 'standby-dropped', container: 'web', standby: PEER_EVIL, standbyName: EVIL_NAME })
]
/** The followers of the fake's event stream; test code adds events through them. */
const followers = new Set<(e: NodeEvent) => void>()

const calls: Array<{ op: string; args: unknown[] }> = []
let dir = ''
let sock = ''
let server: ControlServer
let logA = ''
let logB = ''

function notFound (name: string): MscError {
  return new MscError('NOT_FOUND', `no container named ${name} on this node`)
}

const handlers: ControlHandlers = {
  status: async () => STATUS,
  peers: async () => [],
  join: async () => {
    throw new MscError('RUNTIME_ERROR', 'no joining in this test')
  },
  migrate: async () => {
    throw new MscError('RUNTIME_ERROR', 'no migration in this test')
  },
  movedTo: async () => null,
  clusterInfo: async () => ({ ...STATUS.cluster, members: MEMBERS, conflicts: [] }),
  events: (fn) => {
    for (const e of EVENTS) fn(e)
    followers.add(fn)
    return () => {
      followers.delete(fn)
    }
  },
  clusterToken: async (ttlMs) => {
    calls.push({ op: 'clusterToken', args: [ttlMs] })
    return { token: 'msc1.faketoken', cluster: STATUS.cluster.id, expiresAt: new Date(Date.now() + ttlMs).toISOString() }
  },
  removePeer: async (who) => {
    calls.push({ op: 'removePeer', args: [who] })
    if (who === 'ghost') throw new MscError('NOT_FOUND', 'no member ghost in cluster')
    return { peerId: '12D3KooWRemovedRemovedRemovedRemovedRemovedRemoved', name: who }
  },
  list: async () => CONTAINERS,
  inspect: async (name) => {
    const c = CONTAINERS.find((x) => x.name === name)
    if (c == null) throw notFound(name)
    return c
  },
  run: async (req) => {
    calls.push({ op: 'run', args: [req] })
    if (req.name === 'bad') throw new MscError('INVALID_ARGUMENT', 'invalid container name "bad": reasons')
    if (req.name === 'nobundle') throw new MscError('INVALID_BUNDLE', `bundle directory ${req.bundle} does not exist`)
    const { replication: _, ...c } = CONTAINERS[0]!
    return { ...c, name: req.name, bundle: req.bundle, pid: 777, epoch: 1, replicas: req.replicas ?? 1 }
  },
  stop: async (name) => {
    calls.push({ op: 'stop', args: [name] })
    throw notFound(name)
  },
  remove: async (name, force) => {
    calls.push({ op: 'remove', args: [name, force] })
  },
  checkpoint: async (name, req) => {
    calls.push({ op: 'checkpoint', args: [name, req] })
    if (name === 'crash') throw new Error('boom: something unexpected')
    throw new MscError('CRIU_ERROR', `checkpoint of ${name} failed: criu failed`, ['Error (criu/a.c:1): first', 'Error (criu/b.c:2): second'])
  },
  checkpoints: async () => [] as CheckpointInfo[],
  restore: async (name) => {
    throw notFound(name)
  },
  logFiles: async (name) => {
    if (name !== 'web') throw notFound(name)
    return [logA, logB]
  }
}

/** Runs the real CLI with a clean environment (no MSC_* from the caller). */
async function msc (...args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await execa(MSC, args, { reject: false, stripFinalNewline: false, extendEnv: false, env: { PATH: process.env.PATH }, cwd: dir, timeout: 30_000 })
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) }
}

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-test-cli-'))
  sock = path.join(dir, 'api.sock')
  logA = path.join(dir, 'container.log.1')
  logB = path.join(dir, 'container.log')
  await fs.writeFile(logA, '1\n2\n')
  await fs.writeFile(logB, '3\n4\n')
  server = new ControlServer(handlers, silentLogger())
  // With umask 0 the socket would be 0777 unless the server sets its mode itself.
  const old = process.umask(0)
  try {
    await server.listen(sock)
  } finally {
    process.umask(old)
  }
})

after(async () => {
  await server?.close()
  await fs.rm(dir, { recursive: true, force: true })
})

test('the API socket is mode 0600 whatever the umask', async () => {
  const st = await fs.stat(sock)
  assert.ok(st.isSocket())
  assert.equal((st.mode & 0o777).toString(8), '600')
})

describe('output', () => {
  test('ps --json prints exactly what the node answered', async () => {
    const r = await msc('ps', '--json', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.equal(r.stderr, '')
    assert.deepEqual(JSON.parse(r.stdout), CONTAINERS)
  })

  test('ps prints a table with a NAME header and one row per container', async () => {
    const r = await msc('ps', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    const lines = r.stdout.trimEnd().split('\n')
    assert.equal(lines.length, 1 + CONTAINERS.length, r.stdout)
    assert.match(lines[0]!, /^NAME\s+STATE\s+PID\s+STARTED\s+REPLICAS\s+STANDBYS\s+RPO\s+BUNDLE$/)
    assert.match(lines[1]!, /^web\s+running\s+4242\s/)
    assert.match(lines[1]!, /\/srv\/bundles\/web$/)
    assert.match(lines[2]!, /^db\.primary\s+checkpointed\s+-\s/)
  })

  test('ps shows replicas, the standby by name and the RPO; a lost lease in the state', async () => {
    const r = await msc('ps', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    const row = (name: string): string => r.stdout.split('\n').find((l) => l.startsWith(name + ' ')) ?? assert.fail(`no row ${name}:\n${r.stdout}`)
    assert.match(row('web'), /^web\s+running\s+4242\s+\d+m ago\s+1\s+node-b\s+2\.1s\s+\/srv\/bundles\/web$/)
    assert.match(row('db.primary'), /^db\.primary\s+checkpointed\s+-\s+-\s+-\s+-\s+-\s+\/srv\/bundles\/db$/)
    assert.match(row('cache'), /^cache\s+stopped \(lease lost\)\s+-\s+-\s+1\s+-\s+-\s+\/srv\/bundles\/cache$/)
    // No standby: the replication's error, cut short to keep the table narrow.
    assert.match(row('lonely'), /^lonely\s+running\s+5151\s+\d+s ago\s+2\s+no live member…\s+-\s+\/srv\/bundles\/lonely$/)
  })

  test('inspect shows epoch, replicas, the standby with its generation, and the RPO', async () => {
    const r = await msc('inspect', 'web', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.match(r.stdout, /^FIELD\s+VALUE$/m)
    assert.match(r.stdout, /^state\s+running$/m)
    assert.match(r.stdout, /^epoch\s+3$/m)
    assert.match(r.stdout, /^replicas\s+1$/m)
    assert.match(r.stdout, /^lease\s+held by this node$/m)
    assert.match(r.stdout, new RegExp(`^standby\\s+node-b \\(${PEER_B}\\): generation 41 acknowledged \\d+s ago$`, 'm'))
    assert.match(r.stdout, /^generation\s+42 dumped, newest acknowledged: 41$/m)
    assert.match(r.stdout, /^rpo\s+2\.1s /m)
    assert.match(r.stdout, /^freeze\s+120 ms per generation$/m)
    assert.match(r.stdout, /^per round\s+1\.2 MiB on the wire for 48\.0 MiB of images \(2\.5%\)$/m)
    assert.match(r.stdout, /^interval\s+5s$/m)
    assert.match(r.stdout, /^last error\s+-$/m)
    const lost = await msc('inspect', 'cache', '--api-socket', sock)
    assert.match(lost.stdout, /^state\s+stopped \(lease lost\)$/m)
    assert.match(lost.stdout, /^lease lost\s+at epoch 5, /m)
    const json = await msc('inspect', 'web', '--json', '--api-socket', sock)
    assert.deepEqual(JSON.parse(json.stdout), CONTAINERS[0])
    const ghost = await msc('inspect', 'ghost', '--api-socket', sock)
    assert.equal(ghost.exitCode, 1)
    assert.equal(ghost.stderr, 'msc: no container named ghost on this node\n')
  })

  test('status shows the failover section and the replicas this node keeps, owners by name', async () => {
    const r = await msc('status', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.match(r.stdout, /^failover\s+possible while 2 of 3 members are up$/m)
    assert.match(r.stdout, /^witness\s+no$/m)
    assert.match(r.stdout, /^quorum\s+2 of 3 members$/m)
    assert.match(r.stdout, /^leases\s+10s each, 2 held by this node$/m)
    assert.match(r.stdout, /^REPLICA OF\s+OWNER\s+EPOCH\s+GENERATION\s+DUMPED$/m)
    assert.match(r.stdout, /^db\s+node-a \(12D3KooW…j2Y6ms\)\s+4\s+17\s+\d+s ago$/m)
    assert.match(r.stdout, /^LOST\s+gone \(epoch 2\): its node 12D3\S+ died with every standby/m, 'a lost container is said')
  })

  test('status --json prints the node status', async () => {
    const r = await msc('status', '--json', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout), STATUS)
  })

  test('run sends the name and the bundle as an absolute path', async () => {
    calls.length = 0
    const r = await msc('run', 'api', 'bundles/api', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.equal(r.stdout, 'api running (pid 777), replicas: 1\n')
    assert.deepEqual(calls, [{ op: 'run', args: [{ name: 'api', bundle: path.join(dir, 'bundles/api') }] }], "no replicas: the node's default")
  })

  test('run --replicas sends the number; 0 says the container has none', async () => {
    calls.length = 0
    const two = await msc('run', 'api', '/b', '--replicas', '2', '--api-socket', sock)
    assert.equal(two.exitCode, 0, two.stderr)
    assert.equal(two.stdout, 'api running (pid 777), replicas: 2\n')
    const none = await msc('run', 'api', '/b', '--replicas', '0', '--api-socket', sock)
    assert.equal(none.stdout, 'api running (pid 777)\n')
    assert.deepEqual(calls, [
      { op: 'run', args: [{ name: 'api', bundle: '/b', replicas: 2 }] },
      { op: 'run', args: [{ name: 'api', bundle: '/b', replicas: 0 }] }
    ])
  })

  test('rm --force reaches the handler with force', async () => {
    calls.length = 0
    const r = await msc('rm', 'web', '--force', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.deepEqual(calls, [{ op: 'remove', args: ['web', true] }])
  })

  test('cluster token prints one line, the token, and sends the --ttl in ms', async () => {
    const r = await msc('cluster', 'token', '--ttl', '10m', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.equal(r.stdout, 'msc1.faketoken\n')
    assert.deepEqual(calls.at(-1), { op: 'clusterToken', args: [600_000] })
    const bad = await msc('cluster', 'token', '--ttl', 'forever', '--api-socket', sock)
    assert.equal(bad.exitCode, 2, bad.stderr)
    assert.match(bad.stderr, /--ttl/)
  })

  test('peer rm reaches the handler with the peer as given; an unknown one exits 1', async () => {
    const r = await msc('peer', 'rm', 'n3', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.match(r.stdout, /removed n3 \(12D3KooW/)
    assert.deepEqual(calls.at(-1), { op: 'removePeer', args: ['n3'] })
    const ghost = await msc('peer', 'rm', 'ghost', '--api-socket', sock)
    assert.equal(ghost.exitCode, 1)
    assert.match(ghost.stderr, /no member ghost/)
  })

  test("events --json --no-follow prints the node's events as NDJSON, unchanged, and ends", async () => {
    const r = await msc('events', '--json', '--no-follow', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.equal(r.stderr, '')
    assert.ok(r.stdout.endsWith('\n'))
    const lines = r.stdout.trimEnd().split('\n')
    assert.equal(lines.length, EVENTS.length, r.stdout)
    assert.deepEqual(lines.map((l) => JSON.parse(l)), EVENTS)
    assert.deepEqual(lines, EVENTS.map((e) => JSON.stringify(e)))
  })

  test('events: one line per event, TIME KIND TYPE CONTAINER key=value, peers by name', async () => {
    const r = await msc('events', '--no-follow', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    const lines = r.stdout.trimEnd().split('\n')
    assert.equal(lines.length, EVENTS.length, r.stdout)
    assert.equal(lines[0], '2026-11-28T17:07:46.111Z lease       lease-acquired    web epoch=3')
    assert.equal(lines[2], '2026-11-28T17:07:48.111Z replication generation        web generation=42 standby=node-b wireBytes=1258291 imageBytes=50331648 freezeMs=120 full=false')
    assert.equal(lines[3], '2026-11-28T17:07:49.111Z replication replica-stored    db owner=node-a epoch=4 generation=17')
    assert.equal(lines[4], '2026-11-28T17:07:50.111Z failover    owner-lost        db owner=node-a reason="node-a is dead"')
  })

  test('events: a name a peer chose is printed with its escape sequences made visible', async () => {
    const r = await msc('events', '--no-follow', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.ok(!/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]/.test(r.stdout), JSON.stringify(r.stdout))
    const last = r.stdout.trimEnd().split('\n').at(-1)!
    assert.equal(last, '2026-11-28T17:07:51.111Z replication standby-dropped   web standby=evil\\x1b[2J\\x1b]0;pwned\\x07\\u202e')
  })

  test('events follows new events until SIGINT, then exits 0', async () => {
    const child = execa(MSC, ['events', '--api-socket', sock], { reject: false, stripFinalNewline: false, extendEnv: false, env: { PATH: process.env.PATH }, cwd: dir, timeout: 30_000 })
    let out = ''
    const seen = async (re: RegExp): Promise<void> =>
      await new Promise((resolve, reject) => {
        const check = (): void => {
          if (re.test(out)) {
            child.stdout.off('data', onData)
            resolve()
          }
        }
        const onData = (d: Buffer): void => {
          out += d.toString()
          check()
        }
        child.stdout.on('data', onData)
        child.once('exit', () => reject(new Error(`msc events exited; output:\n${out}`)))
        check()
      })
    await seen(/standby-dropped/)
    for (const fn of followers) fn(event('failover', { type: 'failover', container: 'db', epoch: 5, generation: 17, from: PEER_A, ms: 2345, dumpedAt: Date.parse('2026-11-28T17:07:40.000Z') }))
    await seen(/failover +db epoch=5 generation=17 from=node-a ms=2345 dumpedAt=2026-11-28T17:07:40\.000Z\n/)
    child.kill('SIGINT')
    const r = await child
    assert.equal(r.exitCode, 0, String(r.stderr))
    assert.equal(String(r.stderr), '')
  })

  test('events ends, with a note and exit 0, when the node goes away', async () => {
    const sock2 = path.join(dir, 'going.sock')
    const s2 = new ControlServer(handlers, silentLogger())
    await s2.listen(sock2)
    const child = execa(MSC, ['events', '--json', '--api-socket', sock2], { reject: false, stripFinalNewline: false, extendEnv: false, env: { PATH: process.env.PATH }, cwd: dir, timeout: 30_000 })
    await new Promise<void>((resolve) => {
      let n = 0
      child.stdout.on('data', (d: Buffer) => {
        n += d.toString().split('\n').length - 1
        if (n >= EVENTS.length) resolve()
      })
    })
    await s2.close()
    const r = await child
    assert.equal(r.exitCode, 0, String(r.stderr))
    assert.equal(String(r.stdout).trimEnd().split('\n').length, EVENTS.length)
    assert.equal(String(r.stderr), 'msc: the node ended the event stream (it stopped)\n')
  })

  test('logs prints the rotated file, then the current one', async () => {
    const r = await msc('logs', 'web', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.equal(r.stdout, '1\n2\n3\n4\n')
  })
})

describe('errors and exit codes', () => {
  test('NOT_FOUND: exit 1, one line "msc: <message>"', async () => {
    const r = await msc('stop', 'ghost', '--api-socket', sock)
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr, 'msc: no container named ghost on this node\n')
    assert.equal(r.stdout, '')
  })

  test('NOT_FOUND from a log stream: exit 1', async () => {
    const r = await msc('logs', 'ghost', '--api-socket', sock)
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr, 'msc: no container named ghost on this node\n')
  })

  test('INVALID_ARGUMENT: exit 2', async () => {
    const r = await msc('run', 'bad', '/b', '--api-socket', sock)
    assert.equal(r.exitCode, 2)
    assert.equal(r.stderr, 'msc: invalid container name "bad": reasons\n')
  })

  test('INVALID_BUNDLE: exit 2', async () => {
    const r = await msc('run', 'nobundle', '/nope', '--api-socket', sock)
    assert.equal(r.exitCode, 2)
    assert.equal(r.stderr, 'msc: bundle directory /nope does not exist\n')
  })

  test('details follow the message, indented', async () => {
    const r = await msc('checkpoint', 'web', '--api-socket', sock)
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr, 'msc: checkpoint of web failed: criu failed\n  Error (criu/a.c:1): first\n  Error (criu/b.c:2): second\n')
  })

  test('with --json the error is also printed as JSON on stdout', async () => {
    const r = await msc('checkpoint', 'web', '--json', '--api-socket', sock)
    assert.equal(r.exitCode, 1)
    const out = JSON.parse(r.stdout) as { ok: boolean; error: { code: string; message: string; details: string[] } }
    assert.equal(out.ok, false)
    assert.equal(out.error.code, 'CRIU_ERROR')
    assert.equal(out.error.details.length, 2)
  })

  test('an unexpected handler error: exit 1 with its message', async () => {
    const r = await msc('checkpoint', 'crash', '--api-socket', sock)
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr, 'msc: boom: something unexpected\n')
  })

  test('run --replicas outside 0..8: exit 2 before any request', async () => {
    calls.length = 0
    for (const bad of ['9', '-1', 'two', '1.5', '']) {
      const r = await msc('run', 'api', '/b', `--replicas=${bad}`, '--api-socket', sock)
      assert.equal(r.exitCode, 2, `--replicas=${bad}: ${r.stderr}`)
      assert.equal(r.stderr, `msc: --replicas: a whole number from 0 (no standby, no failover) to 8, got "${bad}"\n`)
      assert.equal(r.stdout, '')
    }
    assert.deepEqual(calls, [], 'the node saw no request')
    // Not even a connection: with no node at all it is still a usage error, not exit 3.
    const nowhere = await msc('run', 'api', '/b', '--replicas', '9', '--api-socket', path.join(dir, 'nobody.sock'))
    assert.equal(nowhere.exitCode, 2, nowhere.stderr)
  })

  test('events with no node: exit 3, naming the socket', async () => {
    const missing = path.join(dir, 'nobody.sock')
    const r = await msc('events', '--api-socket', missing)
    assert.equal(r.exitCode, 3)
    assert.ok(r.stderr.startsWith(`msc: no msc node is listening on ${missing}`), r.stderr)
  })

  test('bad usage: exit 2', async () => {
    const unknownOpt = await msc('ps', '--bogus', '--api-socket', sock)
    assert.equal(unknownOpt.exitCode, 2)
    assert.match(unknownOpt.stderr, /--bogus/)
    const missingArg = await msc('stop', '--api-socket', sock)
    assert.equal(missingArg.exitCode, 2)
  })

  test('no socket file: exit 3, naming the socket', async () => {
    const missing = path.join(dir, 'nobody.sock')
    const r = await msc('ps', '--api-socket', missing)
    assert.equal(r.exitCode, 3)
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr)
    assert.ok(r.stderr.startsWith(`msc: no msc node is listening on ${missing}`), r.stderr)
  })

  test('a stale socket file nobody listens on: exit 3', async () => {
    // A process killed while listening leaves its socket file behind.
    const stale = path.join(dir, 'stale.sock')
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve())
      child.once('exit', (c) => reject(new Error(`listener exited ${c}`)))
    })
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
    assert.ok((await fs.stat(stale)).isSocket(), 'the socket file is left behind')
    const r = await msc('ps', '--api-socket', stale)
    assert.equal(r.exitCode, 3)
    assert.ok(r.stderr.startsWith(`msc: no msc node is listening on ${stale}`), r.stderr)
  })

  test('names "." and ".." reach the handler as they are, not resolved as path segments', async () => {
    calls.length = 0
    const stop = await msc('stop', '..', '--api-socket', sock)
    assert.equal(stop.exitCode, 1)
    assert.equal(stop.stderr, 'msc: no container named .. on this node\n')
    assert.deepEqual(calls, [{ op: 'stop', args: ['..'] }])
    const logs = await msc('logs', '.', '--api-socket', sock)
    assert.equal(logs.exitCode, 1)
    assert.equal(logs.stderr, 'msc: no container named . on this node\n')
  })

  test('a malformed request path gets an error answer and the server keeps serving', async () => {
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ socketPath: sock, path: '/v1/containers/%zz/stop', method: 'POST' }, (r) => {
        let body = ''
        r.setEncoding('utf8').on('data', (d: string) => {
          body += d
        }).on('end', () => resolve({ status: r.statusCode ?? 0, body }))
      })
      req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')))
      req.on('error', reject)
      req.end()
    })
    assert.ok(res.status >= 400, `status ${res.status}`)
    assert.ok((JSON.parse(res.body) as { error?: unknown }).error != null, res.body)
    const r = await msc('ps', '--json', '--api-socket', sock)
    assert.equal(r.exitCode, 0, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout), CONTAINERS)
  })

  test('the socket from MSC_API_SOCKET / --data-dir is used when no --api-socket', async () => {
    const viaEnv = await execa(MSC, ['ps', '--json'], { reject: false, extendEnv: false, env: { PATH: process.env.PATH, MSC_API_SOCKET: sock } })
    assert.equal(viaEnv.exitCode, 0, String(viaEnv.stderr))
    assert.deepEqual(JSON.parse(String(viaEnv.stdout)), CONTAINERS)
    // --data-dir points at a dir whose msc.sock nobody serves.
    const viaDir = await msc('ps', '--data-dir', path.join(dir, 'elsewhere'))
    assert.equal(viaDir.exitCode, 3)
    assert.match(viaDir.stderr, new RegExp(`${path.join(dir, 'elsewhere', 'msc.sock')}`))
  })
})
