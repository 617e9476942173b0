/**
 * The main demo, as the original msc showed it: a counter starts on one node, a
 * second node joins the cluster (found by mDNS), and the counter is migrated to it,
 * where it keeps counting; then on to a third node with post-copy. All along, the
 * counter's checkpoints are replicated to a standby; at the end the node that runs it
 * is power-cut, and the counter comes back on its standby, a few numbers back (what
 * was printed since its last replicated checkpoint). Each node is a network namespace
 * on a private bridge (test/testbed), so all traffic and multicast stay on this
 * machine. Everything is removed at the end, also on Ctrl-C.
 */
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ChildProcess } from 'node:child_process'
import { execa } from 'execa'
import { Testbed } from '../test/testbed/testbed.ts'

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)))
const MSC = path.join(ROOT, 'bin', 'msc')
const bold = (s: string): string => process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s
const say = (s: string): void => {
  process.stdout.write(`\n${bold('== ' + s)}\n`)
}
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-demo-'))
await Testbed.destroyStale()
const tb = await Testbed.create({ hosts: 3, name: `demo-${process.pid}` })
const nodes: Array<{ name: string; dir: string; proc: ChildProcess }> = []
let cleaning = false
async function cleanup (): Promise<void> {
  if (cleaning) return
  cleaning = true
  for (const n of nodes) await execa(MSC, ['rm', '--force', 'counter', '--data-dir', n.dir], { reject: false, timeout: 20_000 })
  for (const n of nodes) n.proc.kill('SIGTERM')
  await sleep(500)
  await tb.destroy()
  // MSC_DEMO_KEEP=1 keeps the nodes' data dirs and logs for a look afterwards.
  if (process.env.MSC_DEMO_KEEP === '1') process.stdout.write(`(kept: ${work})\n`)
  else await execa('rm', ['-rf', '--one-file-system', work], { reject: false })
}
process.on('SIGINT', () => {
  void cleanup().then(() => process.exit(130))
})

const msc = async (node: string, ...args: string[]): Promise<string> => {
  const r = await execa(MSC, [...args, '--data-dir', path.join(work, node)], { reject: false })
  if (r.exitCode !== 0) throw new Error(`msc ${args.join(' ')} on ${node}: ${String(r.stderr)}`)
  return String(r.stdout)
}
const count = async (node: string, n = 4): Promise<string> => (await msc(node, 'logs', 'counter')).trim().split('\n').slice(-n).join(' ')

async function startNode (i: number, extra: string[] = []): Promise<void> {
  const name = `node${i}`
  const dir = path.join(work, name)
  await fs.mkdir(dir, { recursive: true })
  const log = await fs.open(path.join(work, `${name}.log`), 'w')
  // Faster failure detection than the defaults (1 s / 5 s), so the failover shows soon.
  const timing = ['--ping-interval', '0.5', '--ping-timeout', '3', '--lease-timeout', '6', '--dump-interval', '2']
  const proc = await tb.spawn(i, MSC, ['node', 'start', '--data-dir', dir, '--name', name, '--mdns-interval', '1', '--log-format', 'json', ...timing, ...extra], { stdio: ['ignore', log.fd, log.fd] })
  await log.close()
  nodes.push({ name, dir, proc })
  for (let t = 0; t < 100; t++) {
    if ((await execa(MSC, ['status', '--data-dir', dir], { reject: false })).exitCode === 0) return
    await sleep(100)
  }
  throw new Error(`${name} did not start (see ${work}/${name}.log)`)
}

try {
  say(`a testbed of 3 hosts on bridge ${tb.bridge}: ${tb.hosts.map((h) => `${h.name}=${h.ip}`).join(', ')}`)
  say('node1 starts on h1 and runs the counter')
  await startNode(1)
  await execa(MSC, ['bundle', 'counter', path.join(work, 'counter')])
  await msc('node1', 'run', 'counter', path.join(work, 'counter'))
  await sleep(4000)
  process.stdout.write(`counter on node1: ${await count('node1')}\n`)

  say('node1 made a new cluster; node2 starts on h2 and joins it with a one-time token from node1')
  const token1 = (await msc('node1', 'cluster', 'token', '--ttl', '10m')).trim()
  process.stdout.write(`msc cluster token (on node1): ${token1.slice(0, 24)}...\n`)
  await startNode(2, ['--join', token1])
  for (let t = 0; t < 50 && !(await msc('node1', 'peer', 'ls')).includes('alive'); t++) await sleep(100)
  process.stdout.write(await msc('node1', 'peer', 'ls') + '\n')

  say('msc peer migrate counter --to node2 --strategy stop-copy')
  process.stdout.write(await msc('node1', 'peer', 'migrate', 'counter', '--to', 'node2', '--strategy', 'stop-copy') + '\n')
  await sleep(3000)
  process.stdout.write(`counter on node2: ${await count('node2')}\n`)
  process.stdout.write((await msc('node2', 'ps')) + '\n')

  say('node3 joins with a token from node2 (any member can admit); the counter moves on with post-copy (memory follows on demand)')
  await startNode(3, ['--join', (await msc('node2', 'cluster', 'token')).trim()])
  process.stdout.write(await msc('node3', 'cluster', 'ls') + '\n')
  for (let t = 0; t < 50 && (await msc('node2', 'peer', 'ls')).split('alive').length < 3; t++) await sleep(100)
  process.stdout.write(await msc('node2', 'peer', 'migrate', 'counter', '--to', 'node3', '--strategy', 'post-copy') + '\n')
  await sleep(3000)
  process.stdout.write(`counter on node3: ${await count('node3')}\n`)

  say('the whole output, carried along from node to node: one sequence, no restart')
  process.stdout.write((await msc('node3', 'logs', 'counter')).trim().split('\n').join(' ') + '\n')

  say('failover: the counter is replicated to a standby (msc inspect); node3 is power-cut')
  for (let t = 0; t < 300; t++) {
    const info = JSON.parse(await msc('node3', 'inspect', 'counter', '--json')) as { replication?: { ackedGeneration: number | null } }
    if ((info.replication?.ackedGeneration ?? 0) >= 1) break
    await sleep(200)
  }
  process.stdout.write(await msc('node3', 'inspect', 'counter') + '\n')
  await tb.kill(3) // the node, its log shims and the container: a power cut
  const died = (await fs.readFile(path.join(work, 'node3', 'containers', 'counter', 'container.log'), 'utf8')).trim().split('\n').at(-1)
  process.stdout.write(`node3 is gone; the last number it printed: ${died}\n`)
  let back = ''
  for (let t = 0; t < 600 && back === ''; t++) {
    for (const n of ['node1', 'node2']) if (/counter\s+running/.test(await msc(n, 'ps').catch(() => ''))) back = n
    if (back === '') await sleep(100)
  }
  if (back === '') throw new Error('the counter did not come back (see the node logs in ' + work + ')')
  await sleep(2000)
  const after = (await msc(back, 'logs', 'counter')).trim().split('\n')
  process.stdout.write(`the counter runs again on ${back}, from its last replicated checkpoint: ${after.slice(0, 4).join(' ')} ...\n`)
  process.stdout.write(`it went back ${Number(died) - Number(after[0]) + 1} numbers: what node3 printed after its last checkpoint reached the standby\n`)
  process.stdout.write((await msc(back, 'events', '--no-follow')).trim().split('\n').filter((l) => /failover|lease-acquired|owner-lost/.test(l)).join('\n') + '\n')
  process.stdout.write(await msc(back, 'ps') + '\n')
} finally {
  await cleanup()
}
