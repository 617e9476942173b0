/**
 * ContainerRequestServer with its real python3 relay on a temporary socket. Senders are
 * python3 processes; "a container" is a process that moved itself into the cgroup
 * /<parent>/c1 of the cgroup v1 pids hierarchy, as runc puts a container there. No runc,
 * no node. Needs root, python3 and /sys/fs/cgroup/pids.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { pino } from 'pino'
import { ContainerRequestServer, containerOfPid } from '../../src/node/container-requests.ts'
import { waitFor } from '../helpers/node-harness.ts'

const PIDS = '/sys/fs/cgroup/pids'
const parent = `msc-test${crypto.randomBytes(4).toString('hex')}`
const cgroup = path.join(PIDS, parent, 'c1')

/** Moves itself into the cgroup (argv[2], '' for none), sends the datagrams, waits for stdin to close. */
const SENDER = `
import base64, json, os, socket, sys
path, procs, datagrams = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if procs:
    with open(procs, 'w') as f:
        f.write(str(os.getpid()))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for d in datagrams:
    s.sendto(base64.b64decode(d), path)
s.close()
sys.stdout.write('sent %d\\n' % os.getpid())
sys.stdout.flush()
sys.stdin.read()
`

interface Sender {
  pid: number
  exit: () => Promise<void>
}

/**
 * Sends `datagrams` from a python3 process (in cgroup c1 when `inContainer`) that stays
 * alive until exit(): the node reads the sender's cgroup by pid, and a process that has
 * exited has none.
 */
async function send (datagrams: Array<string | Buffer>, inContainer: boolean): Promise<Sender> {
  const b64 = datagrams.map((d) => Buffer.from(d).toString('base64'))
  const child = spawn('python3', ['-c', SENDER, socketPath, inContainer ? path.join(cgroup, 'cgroup.procs') : '', JSON.stringify(b64)], {
    stdio: ['pipe', 'pipe', 'inherit']
  })
  senders.add(child)
  let out = ''
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString()
  })
  await waitFor(() => out.includes('\n') || child.exitCode != null, 10_000, 'the sender')
  assert.match(out, /^sent \d+\n$/, 'the sender sent')
  const exited = once(child, 'exit')
  return {
    pid: child.pid!,
    exit: async () => {
      child.stdin.end()
      await exited
      senders.delete(child)
    }
  }
}

let dir = ''
let socketPath = ''
const senders = new Set<ReturnType<typeof spawn>>()
const calls: Array<{ op: 'checkpoint' | 'migrate'; name: string; peer?: string }> = []
const logs: Array<Record<string, unknown>> = []
let gate: Promise<void> | null = null
let inFlight = 0
let maxInFlight = 0
let server: ContainerRequestServer

async function record (c: { op: 'checkpoint' | 'migrate'; name: string; peer?: string }): Promise<string> {
  inFlight++
  maxInFlight = Math.max(maxInFlight, inFlight)
  try {
    calls.push(c)
    if (gate != null) await gate
    if (c.peer === 'boom') throw new Error('no such peer: boom')
    return 'ok'
  } finally {
    inFlight--
  }
}

const skip = process.getuid?.() !== 0 ? 'needs root' : !existsSync(PIDS) ? 'needs the cgroup v1 pids hierarchy' : false

before(async () => {
  if (skip !== false) return
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-test-ipc-'))
  socketPath = path.join(dir, 'ipc.sock')
  await fs.mkdir(cgroup, { recursive: true })
  const logger = pino({ level: 'debug' }, { write: (line: string) => {
    logs.push(JSON.parse(line) as Record<string, unknown>)
  } })
  server = new ContainerRequestServer({
    socketPath,
    cgroupParent: parent,
    logger,
    onCheckpoint: async (name) => await record({ op: 'checkpoint', name }),
    onMigrate: async (name, peer) => await record({ op: 'migrate', name, peer })
  })
  await server.start()
})

after(async () => {
  for (const c of senders) c.kill('SIGKILL')
  await Promise.all([...senders].map(async (c) => {
    if (c.exitCode == null && c.signalCode == null) await once(c, 'exit')
  }))
  if (server != null) await server.stop()
  await fs.rmdir(cgroup).catch(() => {})
  await fs.rmdir(path.join(PIDS, parent)).catch(() => {})
  if (dir !== '') await fs.rm(dir, { recursive: true, force: true })
})

describe('container requests over the datagram socket', { skip }, () => {
  test('the socket is there, mode 0666', () => {
    const st = statSync(socketPath)
    assert.ok(st.isSocket())
    assert.equal(st.mode & 0o777, 0o666)
    assert.ok(server.pid > 0)
  })

  test('CHECKPOINT, MIGRATE n2 and MIGRATE from c1 reach the callbacks; garbage is ignored', async () => {
    const before = server.stats()
    const s = await send([
      'CHECKPOINT\n',
      'HELLO',
      'MIGRATE n2',
      crypto.randomBytes(10 * 1024),
      'MIGRATE a b',
      'MIGRATE ../x',
      'MIGRATE'
    ], true)
    assert.equal(await containerOfPid(s.pid, parent), 'c1')
    await waitFor(() => calls.length === 3 && server.stats().ignored === before.ignored + 4, 10_000, '3 calls and 4 ignored')
    await s.exit()
    assert.deepEqual(calls, [
      { op: 'checkpoint', name: 'c1' },
      { op: 'migrate', name: 'c1', peer: 'n2' },
      { op: 'migrate', name: 'c1', peer: undefined }
    ])
    assert.deepEqual(server.stats(), { accepted: before.accepted + 3, ignored: before.ignored + 4 })
    const ignored = logs.filter((l) => l.msg === 'container datagram ignored')
    assert.deepEqual(ignored.map((l) => l.reason), ['not a request', 'longer than 4096 bytes', 'not a request', 'not a request'])
    const done = logs.filter((l) => l.msg === 'container request done')
    assert.equal(done.length, 3)
    for (const l of done) {
      assert.equal(l.container, 'c1')
      assert.equal(l.outcome, 'ok')
      assert.equal(typeof l.ms, 'number')
    }
    assert.deepEqual(done.map((l) => l.kind), ['checkpoint', 'migrate', 'migrate'])
  })

  test('a sender outside the container cgroup is ignored', async () => {
    calls.length = 0
    const before = server.stats()
    const s = await send(['CHECKPOINT', 'MIGRATE n2'], false)
    assert.equal(await containerOfPid(s.pid, parent), null)
    await waitFor(() => server.stats().ignored === before.ignored + 2, 10_000, '2 ignored')
    await s.exit()
    assert.equal(calls.length, 0)
    assert.equal(server.stats().accepted, before.accepted)
    assert.ok(logs.some((l) => l.reason === 'sender is no container of this node' && l.pid === s.pid))
  })

  test('one request at a time per container, 4 wait, more are dropped; a failing callback is logged', async () => {
    calls.length = 0
    maxInFlight = 0
    const before = server.stats()
    let open: () => void = () => {}
    gate = new Promise<void>((resolve) => {
      open = resolve
    })
    // 1 runs (and fails), 4 wait, 2 are dropped
    const s = await send(['MIGRATE boom', 'CHECKPOINT', 'CHECKPOINT', 'CHECKPOINT', 'CHECKPOINT', 'CHECKPOINT', 'CHECKPOINT'], true)
    await waitFor(() => server.stats().accepted + server.stats().ignored === before.accepted + before.ignored + 7, 10_000, 'all 7 handled')
    assert.deepEqual(server.stats(), { accepted: before.accepted + 5, ignored: before.ignored + 2 })
    assert.equal(calls.length, 1, 'only the first runs while it is busy')
    gate = null
    open()
    await waitFor(() => calls.length === 5 && inFlight === 0, 10_000, '5 calls')
    await s.exit()
    assert.equal(maxInFlight, 1)
    assert.deepEqual(calls.map((c) => c.op), ['migrate', 'checkpoint', 'checkpoint', 'checkpoint', 'checkpoint'])
    assert.equal(logs.filter((l) => l.reason === 'queue full').length, 2)
    const failed = logs.filter((l) => l.msg === 'container request failed')
    assert.equal(failed.length, 1)
    assert.equal(failed[0]!.outcome, 'error')
    assert.equal(failed[0]!.peer, 'boom')
    assert.match(JSON.stringify(failed[0]!.err), /no such peer: boom/)
  })

  test('a relay that dies is restarted, and requests work again', async () => {
    calls.length = 0
    const old = server.pid
    process.kill(old, 'SIGKILL')
    await waitFor(() => server.pid !== 0 && server.pid !== old && existsSync(socketPath), 10_000, 'a new relay')
    const s = await send(['CHECKPOINT'], true)
    await waitFor(() => calls.length === 1, 10_000, 'the checkpoint')
    await s.exit()
    assert.deepEqual(calls, [{ op: 'checkpoint', name: 'c1' }])
  })

  test('stop: the relay is gone and the socket removed', async () => {
    const pid = server.pid
    assert.ok(pid > 0)
    assert.ok(existsSync(`/proc/${pid}`))
    await server.stop()
    assert.equal(server.pid, 0)
    assert.ok(!existsSync(`/proc/${pid}`), `relay ${pid} gone`)
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' })
    assert.ok(!existsSync(socketPath), 'socket removed')
  })
})
