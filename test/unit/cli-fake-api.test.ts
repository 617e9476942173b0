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
import type { CheckpointInfo, ContainerInfo, NodeStatus } from '../../src/api/types.ts'
import { MscError } from '../../src/util/errors.ts'
import { silentLogger } from '../../src/util/logger.ts'

const MSC = fileURLToPath(new URL('../../bin/msc', import.meta.url))

const CONTAINERS: ContainerInfo[] = [
  {
    name: 'web', state: 'running', pid: 4242, started: new Date(Date.now() - 90_000).toISOString(),
    createdAt: '2025-01-01T00:00:00.000Z', bundle: '/srv/bundles/web', checkpoints: 2, lastCheckpoint: 'ck-2'
  },
  {
    name: 'db.primary', state: 'checkpointed', pid: null, started: null,
    createdAt: '2025-01-02T00:00:00.000Z', bundle: '/srv/bundles/db', checkpoints: 1, lastCheckpoint: 'ck-1'
  }
]

const STATUS: NodeStatus = {
  peerId: '12D3KooWFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeF', name: 'fake', addrs: ['/ip4/127.0.0.1/tcp/4710/p2p/12D3KooWFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeF'],
  peersAlive: 0, peersKnown: 0, membership: { accepted: 0, dropped: {} },
  version: '0.1.0', pid: 1, dataDir: '/fake', nodeId: 'deadbeef', cgroupParent: 'msc-deadbeef',
  runc: 'runc', criu: 'criu', containers: CONTAINERS.length, startedAt: new Date().toISOString(),
  cluster: { id: '0123456789abcdef0123456789abcdef', mode: 'token', members: 1, joinHint: 'run `msc cluster token`', refused: { connections: 0, streams: 0, records: 0 } }
}

const calls: Array<{ op: string, args: unknown[] }> = []
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
  join: async () => { throw new MscError('RUNTIME_ERROR', 'no joining in this test') },
  migrate: async () => { throw new MscError('RUNTIME_ERROR', 'no migration in this test') },
  movedTo: async () => null,
  clusterInfo: async () => ({ ...STATUS.cluster, members: [], conflicts: [] }),
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
    return { ...CONTAINERS[0]!, name: req.name, bundle: req.bundle, pid: 777 }
  },
  stop: async (name) => {
    calls.push({ op: 'stop', args: [name] })
    throw notFound(name)
  },
  remove: async (name, force) => { calls.push({ op: 'remove', args: [name, force] }) },
  checkpoint: async (name, req) => {
    calls.push({ op: 'checkpoint', args: [name, req] })
    if (name === 'crash') throw new Error('boom: something unexpected')
    throw new MscError('CRIU_ERROR', `checkpoint of ${name} failed: criu failed`, ['Error (criu/a.c:1): first', 'Error (criu/b.c:2): second'])
  },
  checkpoints: async () => [] as CheckpointInfo[],
  restore: async (name) => { throw notFound(name) },
  logFiles: async (name) => {
    if (name !== 'web') throw notFound(name)
    return [logA, logB]
  }
}

/** Runs the real CLI with a clean environment (no MSC_* from the caller). */
async function msc (...args: string[]): Promise<{ exitCode: number, stdout: string, stderr: string }> {
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
  try { await server.listen(sock) } finally { process.umask(old) }
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
    assert.match(lines[0]!, /^NAME\s+STATE\s+PID\b/)
    assert.match(lines[1]!, /^web\s+running\s+4242\s/)
    assert.match(lines[1]!, /\/srv\/bundles\/web$/)
    assert.match(lines[2]!, /^db\.primary\s+checkpointed\s+-\s/)
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
    assert.equal(r.stdout, 'api running (pid 777)\n')
    assert.deepEqual(calls, [{ op: 'run', args: [{ name: 'api', bundle: path.join(dir, 'bundles/api') }] }])
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
    const out = JSON.parse(r.stdout) as { ok: boolean, error: { code: string, message: string, details: string[] } }
    assert.equal(out.ok, false)
    assert.equal(out.error.code, 'CRIU_ERROR')
    assert.equal(out.error.details.length, 2)
  })

  test('an unexpected handler error: exit 1 with its message', async () => {
    const r = await msc('checkpoint', 'crash', '--api-socket', sock)
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr, 'msc: boom: something unexpected\n')
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
    const res = await new Promise<{ status: number, body: string }>((resolve, reject) => {
      const req = http.request({ socketPath: sock, path: '/v1/containers/%zz/stop', method: 'POST' }, (r) => {
        let body = ''
        r.setEncoding('utf8').on('data', (d: string) => { body += d }).on('end', () => resolve({ status: r.statusCode ?? 0, body }))
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
