/**
 * The container log shim's binary alone (src/runtime/shim/log-shim.c), with a shell
 * standing in for runc: like `runc run -d`, the command returns at once and leaves a
 * writer behind (a `cat` of a FIFO the test writes to), so the test controls when the
 * last writer of the pipe goes away. What a user of the shim relies on: runc's status
 * arrives on fd 3 while the container still writes, every byte reaches the log, the
 * log rotates past MAX, a symlink at LOG is refused, the shim exits at EOF and not on
 * SIGHUP.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { buildLogShim } from '../../src/runtime/shim/binary.ts'

let shim = ''
const dirs: string[] = []
const pidFiles: string[] = []
const shims: ChildProcess[] = []

before(async () => {
  shim = await buildLogShim()
})
after(async () => {
  for (const c of shims) if (c.exitCode == null && c.signalCode == null) c.kill('SIGKILL')
  for (const f of pidFiles) {
    const pid = Number(await fs.readFile(f, 'utf8').catch(() => ''))
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
  }
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true })
})

async function tmp (): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-log-shim-'))
  dirs.push(d)
  return d
}

interface Shim {
  child: ChildProcess
  /** The first line on fd 3. */
  status: Promise<string>
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stderr: () => string
}

function startShim (env: Record<string, string>, argv: string[]): Shim {
  const child = spawn(shim, argv, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] })
  shims.push(child)
  let err = ''
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const fd3 = child.stdio[3] as NodeJS.ReadableStream
  const status = new Promise<string>((resolve) => {
    let out = ''
    fd3.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')))
    })
    fd3.on('end', () => resolve(out))
  })
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  return { child, status, exit, stderr: () => err }
}

/**
 * A stand-in for `runc run -d`: leaves `cat FIFO` behind as the container writing to
 * the pipe, and exits with `code`.
 */
async function detachingCommand (dir: string, code = 0): Promise<{ argv: string[]; fifo: string }> {
  const fifo = path.join(dir, 'container-output')
  execFileSync('mkfifo', [fifo])
  const pidFile = path.join(dir, 'cat.pid')
  pidFiles.push(pidFile)
  return { argv: ['/bin/sh', '-c', `cat "$0" & echo $! > "$1"; exit ${code}`, fifo, pidFile], fifo }
}

/** Writes `chunks` into the container's FIFO, one write each, then closes it: the last writer goes. */
async function containerWrites (fifo: string, ...chunks: Buffer[]): Promise<void> {
  const fh = await fs.open(fifo, 'w')
  try {
    for (const c of chunks) await fh.write(c)
  } finally {
    await fh.close()
  }
}

describe('log shim', () => {
  test("reports the command's status at once, appends every byte the container writes afterwards, exits at EOF", async () => {
    const d = await tmp()
    const log = path.join(d, 'container.log')
    await fs.writeFile(log, 'earlier run\n')
    const { argv, fifo } = await detachingCommand(d, 0)
    const s = startShim({ MSC_SHIM_LOG: log }, argv)
    assert.equal(await s.status, '0', 'the exit status of the command, before the container closed its output')
    const payload = randomBytes(300_000) // several pipe buffers, binary
    await containerWrites(fifo, Buffer.from('hello\n'), payload)
    assert.deepEqual(await s.exit, { code: 0, signal: null })
    assert.deepEqual(await fs.readFile(log), Buffer.concat([Buffer.from('earlier run\nhello\n'), payload]))
  })

  test("creates the log 0600 and sends the command's stdout and stderr there, not its environment", async () => {
    const d = await tmp()
    const log = path.join(d, 'container.log')
    const s = startShim({ MSC_SHIM_LOG: log, MSC_SHIM_MAX: '4096' }, ['/bin/sh', '-c', 'echo "out [$MSC_SHIM_LOG$MSC_SHIM_MAX]"; echo err >&2; read x || echo "stdin closed"; exit 7'])
    assert.equal(await s.status, '7')
    assert.deepEqual(await s.exit, { code: 0, signal: null })
    assert.equal(await fs.readFile(log, 'utf8'), 'out []\nerr\nstdin closed\n')
    assert.equal((await fs.stat(log)).mode & 0o777, 0o600)
  })

  test('reports 128+N for a command killed by signal N, and 127 with the reason in the log when it cannot run', async () => {
    const d = await tmp()
    const log = path.join(d, 'container.log')
    const killed = startShim({ MSC_SHIM_LOG: log }, ['/bin/sh', '-c', 'kill -9 $$'])
    assert.equal(await killed.status, '137')
    await killed.exit
    const missing = startShim({ MSC_SHIM_LOG: log }, [path.join(d, 'no-such-runc'), 'run'])
    assert.equal(await missing.status, '127')
    assert.deepEqual(await missing.exit, { code: 0, signal: null })
    assert.match(await fs.readFile(log, 'utf8'), /cannot run .*no-such-runc: No such file or directory/)
  })

  test('rotates to LOG.1 when a chunk would take LOG past MAX, not when it reaches MAX exactly', async () => {
    const d = await tmp()
    const log = path.join(d, 'container.log')
    const first = Buffer.from('a'.repeat(899) + '\n')
    await fs.writeFile(log, first)
    await fs.writeFile(`${log}.1`, 'older rotation\n')

    const exact = await detachingCommand(d)
    let s = startShim({ MSC_SHIM_LOG: log, MSC_SHIM_MAX: '1000' }, exact.argv)
    assert.equal(await s.status, '0')
    const upToMax = Buffer.from('b'.repeat(99) + '\n')
    await containerWrites(exact.fifo, upToMax)
    await s.exit
    assert.deepEqual(await fs.readFile(log), Buffer.concat([first, upToMax]), '1000 bytes of 1000: no rotation yet')
    assert.equal(await fs.readFile(`${log}.1`, 'utf8'), 'older rotation\n')

    await fs.rm(exact.fifo)
    const past = await detachingCommand(d)
    s = startShim({ MSC_SHIM_LOG: log, MSC_SHIM_MAX: '1000' }, past.argv)
    assert.equal(await s.status, '0')
    await containerWrites(past.fifo, Buffer.from('c\n'), Buffer.from('d'.repeat(500) + '\n'))
    await s.exit
    assert.deepEqual(await fs.readFile(`${log}.1`), Buffer.concat([first, upToMax]), 'the full log moved to LOG.1, replacing the older one')
    assert.equal(await fs.readFile(log, 'utf8'), 'c\n' + 'd'.repeat(500) + '\n', 'LOG starts over with what came after')
  })

  test('refuses a symlink at LOG: nothing runs, nothing is written through the link', async () => {
    const d = await tmp()
    const log = path.join(d, 'container.log')
    const victim = path.join(d, 'victim')
    await fs.writeFile(victim, 'precious\n')
    await fs.symlink(victim, log)
    const ran = path.join(d, 'ran')
    const s = startShim({ MSC_SHIM_LOG: log }, ['/bin/sh', '-c', 'touch "$0"', ran])
    assert.match(await s.status, /^error: .*container\.log is a symlink: refusing to write through it$/)
    assert.deepEqual(await s.exit, { code: 2, signal: null })
    assert.match(s.stderr(), /is a symlink/)
    assert.equal(await fs.readFile(victim, 'utf8'), 'precious\n')
    assert.equal(await fs.stat(ran).then(() => true, () => false), false, 'the command was not started')
  })

  test('fails with a reason when MSC_SHIM_LOG is not set', async () => {
    const d = await tmp()
    const ran = path.join(d, 'ran')
    const s = startShim({}, ['/bin/sh', '-c', 'touch "$0"', ran])
    assert.equal(await s.status, 'error: MSC_SHIM_LOG is not set')
    assert.deepEqual(await s.exit, { code: 2, signal: null })
    assert.equal(await fs.stat(ran).then(() => true, () => false), false)
  })

  test('survives SIGHUP in its own session and keeps logging', async () => {
    const d = await tmp()
    const log = path.join(d, 'container.log')
    const { argv, fifo } = await detachingCommand(d)
    const s = startShim({ MSC_SHIM_LOG: log }, argv)
    assert.equal(await s.status, '0')
    const pid = s.child.pid!
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8')
    const session = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3])
    assert.equal(session, pid, 'the shim leads a session of its own')
    process.kill(pid, 'SIGHUP')
    await containerWrites(fifo, Buffer.from('after the hangup\n'))
    assert.deepEqual(await s.exit, { code: 0, signal: null }, 'it ended at EOF, not by the signal')
    assert.equal(await fs.readFile(log, 'utf8'), 'after the hangup\n')
  })
})
