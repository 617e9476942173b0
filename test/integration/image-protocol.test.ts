/**
 * /msc/image/1.0.0 between two real libp2p hosts on 127.0.0.1 (tcp + noise + yamux):
 *  - a tree (nested dirs, a 64 MiB file, small files, symlinks, modes, owners) arrives
 *    identical; goodput is reported;
 *  - overlay mode applies a rootfs delta: changed files, new ones, deletes;
 *  - a hostile sender (raw frames) is refused with the right reason for each trick:
 *    nothing appears outside the temporary directory, which is removed, and the
 *    receiving host keeps working (a good transfer right after succeeds).
 * Runs as root for the ownership checks (lchown); skips those checks otherwise.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import { createReadStream, existsSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import v8 from 'node:v8'
import vm from 'node:vm'
import type { Stream } from '@libp2p/interface'
import type { MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { loopbackHost } from '../helpers/loopback-host.ts'
import { FramedStream, type ProtocolError } from '../../src/protocols/framing.ts'
import {
  IMAGE_PROTOCOL,
  changedSince,
  receiveTree,
  sendTree,
  treeManifest,
  type ReceiveTreeOptions,
  type ReceiveTreeResult,
  type TreeHeader
} from '../../src/protocols/image/index.ts'
import { FRAME_DATA, FRAME_MSG, VerdictSchema, type Verdict } from '../../src/protocols/image/messages.ts'

const MiB = 1024 * 1024
// A forced GC for the memory test, without needing --expose-gc on the command line.
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void
const isRoot = process.getuid?.() === 0
const LIMITS = { maxTotalBytes: 1024 * MiB, maxFileBytes: 1024 * MiB, maxFiles: 10_000 }

let sandbox: string
let tmpRoot: string
let sender: MscLibp2p
let receiver: MscLibp2p

type Outcome = { ok: true; r: ReceiveTreeResult } | { ok: false; err: ProtocolError }
/** What the receiving host does with the next incoming stream, and where it reports. */
let nextReceive: { opts: ReceiveTreeOptions; done: PromiseWithResolvers<Outcome> } | undefined

before(async () => {
  sandbox = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-image-test-'))
  tmpRoot = path.join(sandbox, 'tmp')
  await fs.mkdir(tmpRoot)
  sender = await loopbackHost()
  receiver = await loopbackHost()
  await receiver.handle(IMAGE_PROTOCOL, async (stream) => {
    const job = nextReceive
    nextReceive = undefined
    if (job == null) {
      stream.abort(new Error('no receive expected'))
      return
    }
    try {
      job.done.resolve({ ok: true, r: await receiveTree(stream, job.opts) })
    } catch (err) {
      job.done.resolve({ ok: false, err: err as ProtocolError })
    }
  }, { maxInboundStreams: 4 })
})

after(async () => {
  await Promise.resolve(sender?.stop()).catch(() => {})
  await Promise.resolve(receiver?.stop()).catch(() => {})
  if (sandbox != null) await fs.rm(sandbox, { recursive: true, force: true })
})

async function dial (signal: AbortSignal): Promise<Stream> {
  const addr = receiver.getMultiaddrs()[0]
  assert.ok(addr != null)
  return await sender.dialProtocol(addr, IMAGE_PROTOCOL, { signal })
}

function receiveOpts (destDir: string, over: Partial<ReceiveTreeOptions> = {}): ReceiveTreeOptions {
  return { tmpRoot, destDir, mode: 'replace', limits: LIMITS, idleTimeoutMs: 5000, signal: AbortSignal.timeout(120_000), ...over } as ReceiveTreeOptions
}

function expectReceive (opts: ReceiveTreeOptions): Promise<Outcome> {
  const done = Promise.withResolvers<Outcome>()
  nextReceive = { opts, done }
  return done.promise
}

/** One good transfer with sendTree/receiveTree. */
async function transfer (src: string, destDir: string, send: Partial<Parameters<typeof sendTree>[2]> = {}, recv: Partial<ReceiveTreeOptions> = {}) {
  const outcome = expectReceive(receiveOpts(destDir, recv))
  const signal = AbortSignal.timeout(120_000)
  const stream = await dial(signal)
  const sent = await sendTree(stream, src, { transferId: 't-good', label: 'test tree', signal, ...send })
  const got = await outcome
  return { sent, got }
}

// ---------- fixtures and comparison ----------

async function writeRandomFile (p: string, bytes: number): Promise<void> {
  const fh = await fs.open(p, 'w')
  try {
    for (let off = 0; off < bytes; off += 4 * MiB) await fh.write(crypto.randomBytes(Math.min(4 * MiB, bytes - off)))
  } finally {
    await fh.close()
  }
}

/** A tree with nested dirs, a big file, small files, symlinks, odd modes and owners. */
async function makeTree (root: string, bigBytes: number): Promise<void> {
  await fs.mkdir(path.join(root, 'a/b/c'), { recursive: true })
  await fs.mkdir(path.join(root, 'empty'))
  await writeRandomFile(path.join(root, 'a/big.bin'), bigBytes)
  for (let i = 0; i < 50; i++) await fs.writeFile(path.join(root, 'a/b', `small-${i}.txt`), crypto.randomBytes(i * 97))
  await fs.writeFile(path.join(root, 'a/b/c/zero'), '')
  await fs.writeFile(path.join(root, 'a/b/c/script.sh'), '#!/bin/sh\necho hi\n')
  await fs.chmod(path.join(root, 'a/b/c/script.sh'), 0o755)
  await fs.writeFile(path.join(root, 'secret'), 'key')
  await fs.chmod(path.join(root, 'secret'), 0o600)
  await fs.writeFile(path.join(root, 'setuid'), 'x')
  await fs.chmod(path.join(root, 'setuid'), 0o4755)
  await fs.symlink('b/c/script.sh', path.join(root, 'a/link-to-script'))
  await fs.symlink('../a/b', path.join(root, 'empty/link-to-dir'))
  await fs.symlink('does-not-exist', path.join(root, 'dangling'))
  // A read-only directory with contents: the receiver must still fill it.
  await fs.mkdir(path.join(root, 'ro'))
  await fs.writeFile(path.join(root, 'ro/inside'), 'ro')
  await fs.chmod(path.join(root, 'ro/inside'), 0o444)
  await fs.chmod(path.join(root, 'ro'), 0o555)
  if (isRoot) {
    await fs.lchown(path.join(root, 'secret'), 1234, 5678)
    await fs.lchown(path.join(root, 'a/link-to-script'), 4321, 8765)
  }
  // Skipped by the sender, with a note.
  execFileSync('mkfifo', [path.join(root, 'a/fifo')])
}

async function sha256File (p: string): Promise<string> {
  const h = crypto.createHash('sha256')
  for await (const c of createReadStream(p)) h.update(c as Buffer)
  return h.digest('hex')
}

/** Everything that must survive the trip, per path (fifos excluded). */
async function describeTree (root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await fs.readdir(path.join(root, rel))).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`
      const p = path.join(root, r)
      const st = await fs.lstat(p)
      const owner = isRoot ? ` ${st.uid}:${st.gid}` : ''
      if (st.isFIFO()) continue
      if (st.isSymbolicLink()) {
        out.set(r, `symlink -> ${await fs.readlink(p)}${owner} mtime ${st.mtimeMs}`)
      } else if (st.isDirectory()) {
        out.set(r, `dir ${(st.mode & 0o7777).toString(8)}${owner} mtime ${st.mtimeMs}`)
        await walk(r)
      } else {
        out.set(r, `file ${(st.mode & 0o7777).toString(8)}${owner} ${st.size} ${await sha256File(p)} mtime ${st.mtimeMs}`)
      }
    }
  }
  await walk('')
  return out
}

async function assertSameTree (a: string, b: string): Promise<void> {
  assert.deepEqual(Object.fromEntries(await describeTree(b)), Object.fromEntries(await describeTree(a)))
}

// ---------- good transfers ----------

describe('good transfers', () => {
  test('a tree with a 64 MiB file arrives identical (replace mode)', async (t) => {
    const src = path.join(sandbox, 'src')
    await makeTree(src, 64 * MiB)
    const dest = path.join(sandbox, 'dest-replace')
    let progressCalls = 0
    const { sent, got } = await transfer(src, dest, { onProgress: (n, total) => {
      progressCalls++
      assert.ok(n <= total)
    } })
    assert.ok(got.ok, got.ok ? '' : `${got.err.reason}: ${got.err.message}`)
    assert.equal(got.r.transferId, 't-good')
    assert.equal(got.r.label, 'test tree')
    assert.equal(got.r.bytes, sent.bytes)
    assert.equal(got.r.files, sent.files)
    assert.ok(progressCalls >= 256)
    assert.deepEqual(sent.skipped, ['fifo a/fifo'])
    await assertSameTree(src, dest)
    const [sd, dd] = [await fs.stat(src), await fs.stat(dest)]
    assert.deepEqual([dd.mode & 0o7777, dd.mtimeMs], [sd.mode & 0o7777, sd.mtimeMs], 'the root keeps its mode and mtime')
    assert.deepEqual(await fs.readdir(tmpRoot), [], 'temporary directory gone')
    t.diagnostic(`replace: ${sent.files} entries, ${(sent.bytes / MiB).toFixed(1)} MiB in ${sent.ms.toFixed(0)} ms = ${sent.goodputMBps.toFixed(1)} MB/s goodput`)
  })

  test('overlay mode applies changed files, new files and deletes; never deletes through a symlink', async (t) => {
    const src = path.join(sandbox, 'ov-src')
    const dest = path.join(sandbox, 'ov-dest')
    await makeTree(src, 3 * MiB)
    await fs.mkdir(path.join(src, 'gone-dir/sub'), { recursive: true })
    await fs.writeFile(path.join(src, 'gone-dir/sub/f'), 'bye')
    await fs.writeFile(path.join(src, 'gone-file'), 'bye')
    await fs.writeFile(path.join(src, 'becomes-link'), 'file for now')
    const first = await transfer(src, dest)
    assert.ok(first.got.ok)
    const before = await treeManifest(src)

    await sleep(20) // distinct mtimes
    await fs.appendFile(path.join(src, 'a/b/small-3.txt'), 'changed')
    await fs.chmod(path.join(src, 'secret'), 0o640)
    await fs.mkdir(path.join(src, 'new/deeper'), { recursive: true })
    await fs.writeFile(path.join(src, 'new/deeper/file'), 'new')
    await fs.rm(path.join(src, 'gone-dir'), { recursive: true })
    await fs.rm(path.join(src, 'gone-file'))
    await fs.rm(path.join(src, 'becomes-link'))
    await fs.symlink('a/b', path.join(src, 'becomes-link'))
    const delta = changedSince(before, await treeManifest(src))
    assert.deepEqual(delta.deleted, ['gone-dir', 'gone-file'])
    assert.ok(delta.changed.includes('a/b/small-3.txt') && delta.changed.includes('secret') && delta.changed.includes('new/deeper/file'))
    assert.ok(!delta.changed.includes('a/big.bin'))

    // Something the receiver must not delete through: dest/out -> a directory outside.
    const outside = path.join(sandbox, 'outside')
    await fs.mkdir(outside)
    await fs.writeFile(path.join(outside, 'victim'), 'keep me')
    await fs.symlink(outside, path.join(dest, 'out'))
    await fs.symlink(outside, path.join(src, 'out')) // the same link on both sides: not part of the delta
    // The same times too: made a clock tick apart, the two links' mtimes would differ.
    const t0 = Math.floor(Date.now() / 1000)
    for (const side of [src, dest]) await fs.lutimes(path.join(side, 'out'), t0, t0)

    const changed = new Set(delta.changed)
    const { sent, got } = await transfer(src, dest, { transferId: 't-delta', include: (p) => changed.has(p), deletes: [...delta.deleted, 'out/victim'] }, { mode: 'overlay' })
    assert.ok(got.ok, got.ok ? '' : `${got.err.reason}: ${got.err.message}`)
    assert.ok(sent.bytes < MiB, `only the delta is sent (${sent.bytes} bytes)`)
    await assertSameTree(src, dest)
    assert.equal(await fs.readFile(path.join(outside, 'victim'), 'utf8'), 'keep me')
    assert.deepEqual(await fs.readdir(tmpRoot), [])
    t.diagnostic(`overlay: ${sent.files} entries, ${sent.bytes} bytes, ${delta.deleted.length} deletes`)
  })

  test('replace refuses an existing destination (DEST_EXISTS)', async () => {
    const src = path.join(sandbox, 'small-src')
    await fs.mkdir(src, { recursive: true })
    await fs.writeFile(path.join(src, 'f'), 'x')
    const dest = path.join(sandbox, 'exists')
    await fs.mkdir(dest)
    await assert.rejects(transfer(src, dest), (err: ProtocolError) => err.reason === 'DEST_EXISTS' && err.code === 'ALREADY_EXISTS')
    assert.deepEqual(await fs.readdir(dest), [])
  })

  test('beforeVerdict runs on the committed tree before the sender hears the verdict; its failure does not fail the tree', async () => {
    const src = path.join(sandbox, 'hook-src')
    await fs.mkdir(src, { recursive: true })
    await fs.writeFile(path.join(src, 'f'), 'hooked')
    for (const fails of [false, true]) {
      const dest = path.join(sandbox, `hook-dest-${String(fails)}`)
      let sawFile = ''
      let hookEnd = 0
      const outcome = expectReceive(receiveOpts(dest, {
        beforeVerdict: async () => {
          sawFile = await fs.readFile(path.join(dest, 'f'), 'utf8')
          await new Promise((resolve) => setTimeout(resolve, 300))
          hookEnd = performance.now()
          if (fails) throw new Error('the hook failed')
        }
      }))
      const signal = AbortSignal.timeout(30_000)
      const sent = await sendTree(await dial(signal), src, { transferId: 't-hook', label: 'hooked tree', signal })
      const answeredAt = performance.now()
      assert.equal((await outcome).ok, true)
      assert.equal(sawFile, 'hooked', 'the hook saw the committed tree')
      assert.ok(hookEnd > 0 && hookEnd <= answeredAt, 'sendTree resolved only after the hook ended')
      assert.equal(sent.files, 1)
      assert.equal(await fs.readFile(path.join(dest, 'f'), 'utf8'), 'hooked')
    }
  })
})

// ---------- hostile senders ----------

interface HostileRun {
  outcome: Outcome
  verdict: Verdict | Error
}

/**
 * Runs `script` as a raw sender against a receiver with `opts`; writes stop when the
 * receiver answers. Returns what the receiver concluded and the verdict it sent.
 */
async function hostile (script: (f: FramedStream, signal: AbortSignal) => Promise<void>, opts: Partial<ReceiveTreeOptions> = {}, destDir = path.join(sandbox, 'hostile-dest')): Promise<HostileRun> {
  const outcome = expectReceive(receiveOpts(destDir, opts))
  const stream = await dial(AbortSignal.timeout(10_000))
  const f = new FramedStream(stream, { idleTimeoutMs: 0 })
  const answered = new AbortController()
  const verdictP = f.readJson(VerdictSchema, AbortSignal.timeout(60_000), 0)
    .catch((err: Error) => err).finally(() => answered.abort(new Error('answered')))
  await script(f, answered.signal).catch(() => {})
  const result = await outcome
  const verdict = await verdictP
  f.abort(new Error('test done'))
  return { outcome: result, verdict }
}

const hdr = (o: Partial<TreeHeader> = {}): TreeHeader => ({ type: 'header', v: 1, transferId: 't-hostile', label: 'hostile', files: 1, bytes: 0, deletes: [], ...o })
const meta = { mode: 0o644, uid: 0, gid: 0, mtimeMs: Date.now() }
const fileEntry = (p: string, size: number) => ({ type: 'entry', kind: 'file', path: p, ...meta, size })
const dirEntry = (p: string) => ({ type: 'entry', kind: 'dir', path: p, ...meta, mode: 0o755 })
const linkEntry = (p: string, target: string) => ({ type: 'entry', kind: 'symlink', path: p, ...meta, target })
const sha = (b: Uint8Array | string) => crypto.createHash('sha256').update(b).digest('hex')

/** Sends one whole file: entry, data, trailer. */
async function sendFile (f: FramedStream, p: string, data: Uint8Array, s: AbortSignal, claimedSize = data.byteLength, hash = sha(data)): Promise<void> {
  await f.writeJson(fileEntry(p, claimedSize), s)
  await f.writeFrame(FRAME_DATA, data, s)
  await f.writeJson({ type: 'trailer', sha256: hash }, s)
}

async function topLevel (): Promise<string[]> {
  return (await fs.readdir(sandbox)).sort()
}

/** The refusal is the expected one on both sides; nothing leaked; the host still works. */
async function assertRefused (run: HostileRun, reason: string, mustNotExist: string[] = [], sandboxBefore?: string[]): Promise<void> {
  assert.equal(run.outcome.ok, false, 'receiver refused')
  if (run.outcome.ok) return
  assert.equal(run.outcome.err.reason, reason, `receiver reason (${run.outcome.err.message})`)
  assert.ok(!(run.verdict instanceof Error), `a verdict was sent (${run.verdict instanceof Error ? run.verdict.message : ''})`)
  if (!(run.verdict instanceof Error)) {
    assert.equal(run.verdict.ok, false)
    if (!run.verdict.ok) assert.equal(run.verdict.reason, reason)
  }
  for (const p of mustNotExist) assert.equal(existsSync(p), false, `${p} must not exist`)
  assert.equal(existsSync(path.join(sandbox, 'hostile-dest')), false, 'nothing committed')
  assert.deepEqual(await fs.readdir(tmpRoot), [], 'temporary directory removed')
  if (sandboxBefore != null) assert.deepEqual(await topLevel(), sandboxBefore, 'nothing new in the sandbox')
  // The receiving host keeps working.
  const src = path.join(sandbox, 'after-src')
  await fs.mkdir(src, { recursive: true })
  await fs.writeFile(path.join(src, 'ok'), crypto.randomBytes(1000))
  const dest = path.join(sandbox, 'after-dest')
  const good = await transfer(src, dest)
  assert.ok(good.got.ok)
  await assertSameTree(src, dest)
  await fs.rm(dest, { recursive: true })
}

describe('hostile sender', () => {
  test('"../" paths are refused (BAD_PATH)', async () => {
    for (const p of ['../escape.txt', 'a/../../escape.txt', '..']) {
      const before = await topLevel()
      const run = await hostile(async (f, s) => {
        await f.writeJson(hdr({ bytes: 4 }), s)
        await sendFile(f, p, new TextEncoder().encode('evil'), s)
        await f.writeJson({ type: 'end' }, s)
      })
      await assertRefused(run, 'BAD_PATH', [path.join(sandbox, 'escape.txt'), path.join(tmpRoot, 'escape.txt')], before)
    }
  })

  test('absolute, empty, NUL and "." paths are refused (BAD_PATH)', async () => {
    const abs = path.join(sandbox, 'abs-escape.txt')
    for (const p of [abs, '', 'a\0b', './x', 'a//b', 'a/']) {
      const run = await hostile(async (f, s) => {
        await f.writeJson(hdr({ bytes: 4 }), s)
        await sendFile(f, p, new TextEncoder().encode('evil'), s)
      })
      await assertRefused(run, 'BAD_PATH', [abs])
    }
  })

  test('symlinks pointing out (../../etc, /etc, a chain) followed by a file through them (SYMLINK_ESCAPE)', async () => {
    const marker = `msc-image-test-${crypto.randomBytes(6).toString('hex')}`
    const cases: Array<{ entries: object[]; through: string; mustNotExist: string[] }> = [
      { entries: [linkEntry('esc', '../../etc')], through: `esc/${marker}`, mustNotExist: [path.join(sandbox, 'etc'), path.join(tmpRoot, '..', 'etc', marker)] },
      { entries: [linkEntry('esc', '/etc')], through: `esc/${marker}`, mustNotExist: [path.join('/etc', marker)] },
      {
        // up -> a/b/c/../../.. looks harmless lexically, but c -> . makes it climb one more.
        entries: [dirEntry('a'), dirEntry('a/b'), linkEntry('a/b/c', '.'), linkEntry('up', 'a/b/c/../../..')],
        through: `up/${marker}`,
        mustNotExist: [path.join(tmpRoot, marker), path.join(sandbox, marker)]
      }
    ]
    for (const c of cases) {
      const before = await topLevel()
      const run = await hostile(async (f, s) => {
        await f.writeJson(hdr({ files: c.entries.length + 1, bytes: 4 }), s)
        for (const e of c.entries) await f.writeJson(e, s)
        await sendFile(f, c.through, new TextEncoder().encode('evil'), s)
        await f.writeJson({ type: 'end' }, s)
      })
      await assertRefused(run, 'SYMLINK_ESCAPE', c.mustNotExist, before)
    }
  })

  test('a file through a symlink inside the tree is refused (PATH_THROUGH_SYMLINK)', async () => {
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 3, bytes: 4 }), s)
      await f.writeJson(dirEntry('d'), s)
      await f.writeJson(linkEntry('l', 'd'), s)
      await sendFile(f, 'l/x', new TextEncoder().encode('evil'), s)
    })
    await assertRefused(run, 'PATH_THROUGH_SYMLINK')
  })

  test('rootfs trees keep absolute and upward links verbatim, and still never write through one', async () => {
    // A container's rootfs: /bin -> usr/bin style and absolute links are resolved inside
    // the container; the receiver stores them, never follows them.
    const src = path.join(sandbox, 'rootfs-src')
    await fs.mkdir(path.join(src, 'usr', 'bin'), { recursive: true })
    await fs.writeFile(path.join(src, 'usr', 'bin', 'tool'), 'x')
    await fs.symlink('/usr/bin', path.join(src, 'bin'))
    await fs.symlink('../../../../etc/passwd', path.join(src, 'usr', 'up'))
    const dest = path.join(sandbox, 'rootfs-dest')
    const contained = await transfer(src, path.join(sandbox, 'rootfs-refused')).catch((err: Error) => err)
    assert.ok(contained instanceof Error, 'a contained tree refuses the absolute link')
    await transfer(src, dest, { transferId: 't-rootfs' }, { symlinks: 'rootfs' } as Partial<ReceiveTreeOptions>)
    assert.equal(await fs.readlink(path.join(dest, 'bin')), '/usr/bin')
    assert.equal(await fs.readlink(path.join(dest, 'usr', 'up')), '../../../../etc/passwd')
    assert.equal(await fs.readFile(path.join(dest, 'usr', 'bin', 'tool'), 'utf8'), 'x')
    // A hostile rootfs sender still cannot write through a link it sent.
    const run = await hostile(async (f, sig) => {
      await f.writeJson(hdr({ files: 2, bytes: 4 }), sig)
      await f.writeJson(linkEntry('etc', '/etc'), sig)
      await sendFile(f, 'etc/evil', new TextEncoder().encode('evil'), sig)
    }, { symlinks: 'rootfs' } as Partial<ReceiveTreeOptions>, path.join(sandbox, 'rootfs-hostile'))
    await assertRefused(run, 'PATH_THROUGH_SYMLINK', ['/etc/evil'])
  })

  test('an entry before its directory is refused (NO_PARENT)', async () => {
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 1, bytes: 1 }), s)
      await sendFile(f, 'nodir/x', new Uint8Array(1), s)
    })
    await assertRefused(run, 'NO_PARENT')
  })

  test('a file larger than announced is refused (FILE_OVERSIZE)', async () => {
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: 10 }), s)
      await sendFile(f, 'f', crypto.randomBytes(20), s, 10)
    })
    await assertRefused(run, 'FILE_OVERSIZE')
  })

  test('a file shorter than announced is refused (FILE_TRUNCATED)', async () => {
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: 10 }), s)
      await sendFile(f, 'f', crypto.randomBytes(5), s, 10)
    })
    await assertRefused(run, 'FILE_TRUNCATED')
  })

  test('a hash mismatch is refused (HASH_MISMATCH)', async () => {
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: 100 }), s)
      await sendFile(f, 'f', crypto.randomBytes(100), s, 100, sha('something else'))
      await f.writeJson({ type: 'end' }, s)
    })
    await assertRefused(run, 'HASH_MISMATCH')
  })

  test('more entries than announced, totals over announced or over limits, duplicates', async () => {
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 2 }), s)
      for (let i = 0;; i++) await f.writeJson(dirEntry(`d${i}`), s) // endless entries
    }), 'TOO_MANY_FILES')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 2, bytes: 10 }), s)
      await sendFile(f, 'a', new Uint8Array(8), s)
      await sendFile(f, 'b', new Uint8Array(8), s)
    }), 'TOTAL_EXCEEDED')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 1, bytes: 2 * 1024 * MiB }), s)
    }), 'LIMIT_EXCEEDED')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 1, bytes: 100 }), s)
      await sendFile(f, 'a', new Uint8Array(100), s)
    }, { limits: { ...LIMITS, maxFileBytes: 50 } }), 'LIMIT_EXCEEDED')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 1_000_000 }), s)
    }), 'LIMIT_EXCEEDED')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 2 }), s)
      await f.writeJson(dirEntry('d'), s)
      await f.writeJson(dirEntry('d'), s)
    }), 'DUPLICATE_PATH')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 2 }), s)
      await f.writeJson(dirEntry('d'), s)
      await f.writeJson({ type: 'end' }, s)
      await f.closeWrite(s)
    }), 'INCOMPLETE')
  })

  test('a wrong transfer id is refused (WRONG_TRANSFER)', async () => {
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ transferId: 'someone-else', files: 0 }), s)
      await f.writeJson({ type: 'end' }, s)
      await f.closeWrite(s)
    }, { expectTransferId: 't-hostile' } as Partial<ReceiveTreeOptions>)
    await assertRefused(run, 'WRONG_TRANSFER')
  })

  test('malformed frames are refused (MALFORMED, FRAME_TOO_LARGE, UNSUPPORTED_VERSION)', async () => {
    const raw = (f: FramedStream, bytes: number[]) => f.stream.send(Uint8Array.from(bytes))
    await assertRefused(await hostile(async (f, s) => {
      await f.writeFrame(FRAME_MSG, new TextEncoder().encode('{"type": "header", nope'), s)
    }), 'MALFORMED')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: 1 }), s)
      await f.writeFrame(9, new Uint8Array(3), s)
    }), 'MALFORMED')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson({ ...hdr(), files: -1 }, s)
    }), 'MALFORMED')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: 1 }), s)
      await f.writeFrame(FRAME_DATA, new Uint8Array(1), s) // data outside a file
    }), 'MALFORMED')
    await assertRefused(await hostile(async (f) => {
      raw(f, [FRAME_MSG, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]) // announces a 4 GiB frame
    }), 'FRAME_TOO_LARGE')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson({ ...hdr(), v: 2 }, s)
    }), 'UNSUPPORTED_VERSION')
    await assertRefused(await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 0 }), s)
      await f.writeJson({ type: 'end' }, s)
      await f.writeJson({ type: 'end' }, s) // nothing may follow the end
      await f.closeWrite(s)
    }), 'MALFORMED')
  })

  test('an endless data stream is refused by the announced size, with bounded memory', async (t) => {
    const announced = 480 * MiB
    const chunk = crypto.randomBytes(256 * 1024) // the same bytes again and again: the sender allocates nothing
    let sent = 0
    // Sender and receiver share this process, and noise/yamux allocate a fresh buffer
    // per 64 KiB frame: the rss peak is mostly garbage V8 has not collected yet. What
    // must stay bounded is what is kept, so every 250 ms a forced GC measures that.
    gc()
    const rss0 = process.memoryUsage().rss
    let peak = 0
    let retained = 0
    let ticks = 0
    const sampler = setInterval(() => {
      if (++ticks % 12 === 0) {
        gc()
        retained = Math.max(retained, process.memoryUsage().rss)
      }
      peak = Math.max(peak, process.memoryUsage().rss)
    }, 20)
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: announced }), s)
      await f.writeJson(fileEntry('endless', announced), s)
      for (;;) {
        await f.writeFrame(FRAME_DATA, chunk, s)
        sent += chunk.byteLength
      }
    }, { limits: { maxTotalBytes: 512 * MiB, maxFileBytes: 512 * MiB, maxFiles: 10 }, idleTimeoutMs: 10_000 })
    clearInterval(sampler)
    const keptMiB = (retained - rss0) / MiB
    const peakMiB = (peak - rss0) / MiB
    t.diagnostic(`sent ${(sent / MiB).toFixed(0)} MiB before the refusal; rss growth: ${keptMiB.toFixed(1)} MiB after GC, ${peakMiB.toFixed(1)} MiB peak`)
    assert.ok(sent >= 500 * 1e6, `at least 500 MB were sent (${sent})`)
    assert.ok(keptMiB < 100, `rss growth after GC ${keptMiB.toFixed(1)} MiB < 100 MiB`)
    assert.ok(peakMiB < 250, `rss peak growth ${peakMiB.toFixed(1)} MiB < 250 MiB`)
    await assertRefused(run, 'FILE_OVERSIZE')
  })

  test('a sender that stops mid-transfer is refused after the idle timeout (IDLE_TIMEOUT)', async () => {
    const started = Date.now()
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: 1000 }), s)
      await f.writeJson(fileEntry('f', 1000), s)
      await f.writeFrame(FRAME_DATA, new Uint8Array(100), s)
      // ... and nothing more, without closing.
    }, { idleTimeoutMs: 500 })
    const ms = Date.now() - started
    assert.ok(ms >= 450 && ms < 5000, `refused after ${ms} ms`)
    await assertRefused(run, 'IDLE_TIMEOUT')
  })

  test('a sender that closes mid-file is refused (TRUNCATED)', async () => {
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ bytes: 1000 }), s)
      await f.writeJson(fileEntry('f', 1000), s)
      await f.writeFrame(FRAME_DATA, new Uint8Array(100), s)
      await f.closeWrite(s)
    })
    await assertRefused(run, 'TRUNCATED')
  })

  test('overlay deletes are validated like paths (BAD_PATH)', async () => {
    const dest = path.join(sandbox, 'ov-bad')
    await fs.mkdir(dest)
    await fs.writeFile(path.join(sandbox, 'precious'), 'keep')
    const run = await hostile(async (f, s) => {
      await f.writeJson(hdr({ files: 0, deletes: ['../precious'] }), s)
      await f.writeJson({ type: 'end' }, s)
      await f.closeWrite(s)
    }, { mode: 'overlay' }, dest)
    await assertRefused(run, 'BAD_PATH')
    assert.equal(await fs.readFile(path.join(sandbox, 'precious'), 'utf8'), 'keep')
  })
})

describe('framing over yamux', () => {
  test('a peer that stops reading stalls the writer with bounded buffers, then IDLE_TIMEOUT', async (t) => {
    const held: FramedStream[] = []
    await receiver.handle('/msc/test/stall', (stream) => {
      held.push(new FramedStream(stream))
    }) // never reads
    const stream = await sender.dialProtocol(receiver.getMultiaddrs()[0]!, '/msc/test/stall')
    const f = new FramedStream(stream, { idleTimeoutMs: 1000 })
    const chunk = new Uint8Array(256 * 1024)
    let sent = 0
    await assert.rejects((async () => {
      for (;;) {
        await f.writeFrame(FRAME_DATA, chunk)
        sent += chunk.byteLength
      }
    })(), (err: ProtocolError) => err.reason === 'IDLE_TIMEOUT')
    t.diagnostic(`the writer stalled after ${(sent / MiB).toFixed(1)} MiB`)
    // Reader's queue (8 MiB) + yamux window (<= 16 MiB) + writer's high-water mark (4 MiB).
    assert.ok(sent < 32 * MiB, `the writer stopped after ${(sent / MiB).toFixed(1)} MiB`)
    assert.ok(stream.writeBufferLength <= 4 * MiB + chunk.byteLength + 5)
    f.abort(new Error('done'))
    await receiver.unhandle('/msc/test/stall')
  })
})

describe('disk full', () => {
  test('ENOSPC is refused as NO_SPACE and the temporary directory is removed', async (t) => {
    const small = path.join(sandbox, 'small-fs')
    await fs.mkdir(small)
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small], { stdio: 'ignore' })
    } catch {
      t.skip('cannot mount a small tmpfs here (needs root)')
      return
    }
    try {
      const src = path.join(sandbox, 'nospace-src')
      await fs.mkdir(src)
      await writeRandomFile(path.join(src, 'big'), 8 * MiB)
      await fs.mkdir(path.join(small, 'tmp'))
      const p = transfer(src, path.join(small, 'dest'), {}, { tmpRoot: path.join(small, 'tmp') })
      await assert.rejects(p, (err: ProtocolError) => err.reason === 'NO_SPACE' && err.code === 'NO_SPACE')
      assert.deepEqual(await fs.readdir(path.join(small, 'tmp')), [])
      assert.equal(existsSync(path.join(small, 'dest')), false)
    } finally {
      execFileSync('umount', [small])
    }
  })
})
