/**
 * A redis with 100,000 keys, written to all along, fails over when its host is
 * power-cut: on its new node every preloaded key is there, and so is every key whose
 * write was acknowledged before the dump of the last generation a standby had
 * acknowledged (what was written after it is the RPO, lost by design). The writes go
 * over one connection that stays open through every generation's dump.
 *
 * Needs root, runc, CRIU 4.2 (npm run setup), redis-server/redis-cli, iproute2, nsenter.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { execa } from 'execa'
import { fileURLToPath } from 'node:url'
import { makeBundle, startCluster, waitFor, type Cluster, type ClusterNode } from '../helpers/cluster.ts'
import { RedisConnection } from '../helpers/redis-client.ts'
import type { ContainerInfo } from '../../src/api/types.ts'
import { REDIS_CLI } from '../../src/bundles/redis.ts'

const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)))
const PORT = 6391
const KEYS = 100_000
const ARGS = ['--mdns-interval', '1', '--ping-interval', '0.5', '--ping-timeout', '3', '--lease-timeout', '5', '--dump-interval', '1']

let c: Cluster
before(async () => {
  c = await startCluster({ hosts: 3, args: ARGS })
  await c.waitAllAlive(30_000)
})
after(async () => {
  await c?.destroy()
})

async function cli (host: ClusterNode, ...args: string[]): Promise<string> {
  const r = await execa(REDIS_CLI, ['-h', host.host.ip, '-p', String(PORT), ...args], { reject: false, timeout: 10_000 })
  return String(r.stdout).trim()
}

test('redis with 100,000 keys and writes going on: after a power cut every key acknowledged before the last generation is there', async (t) => {
  const n1 = c.node('n1')
  const bundle = await makeBundle('redis', path.join(c.root, 'redis'), '--port', String(PORT))
  assert.equal((await c.msc(n1, 'run', 'kv', bundle, '--replicas', '1')).exitCode, 0)
  await waitFor(async () => await cli(n1, 'PING') === 'PONG', 20_000, 'redis to answer')
  const pop = await execa('bash', [path.join(ROOT, 'demos', 'populate-redis.sh'), '-h', n1.host.ip, '-p', String(PORT), String(KEYS)], { reject: false, timeout: 120_000 })
  assert.equal(String(pop.stdout).trim(), String(KEYS), `populate: ${String(pop.stderr)}`)

  // Writes go on over one connection that stays open, as an application's would: every
  // generation is dumped with it connected (its state is not kept: a restore closes it).
  const acked: Array<{ i: number; at: number }> = []
  let writing = true
  const conn = await RedisConnection.connect(n1.host.ip, PORT)
  let writeError = ''
  const writer = (async () => {
    for (let i = 1; writing; i++) {
      if (await conn.command('SET', `w:${i}`, String(i)) === 'OK') acked.push({ i, at: Date.now() })
    }
  })().catch((err) => {
    if (writing) writeError = `${(err as Error).message} after ${acked.length} writes\n${c.logTail(n1, 40)}`
  })

  let info: ContainerInfo | undefined
  await waitFor(async () => {
    info = await c.inspectApi(n1, 'kv').catch(() => undefined)
    assert.equal(writeError, '', "the writer's connection stays open through every generation's dump")
    return (info?.replication?.ackedGeneration ?? 0) >= 2
  }, 180_000, () => `two generations acknowledged: ${JSON.stringify(info?.replication)}\n${c.logTail(n1, 20)}`)
  const standby = c.node(info!.replication!.standbys[0]!.name)
  const seenAt = Date.now()
  const last = await c.json<ContainerInfo>(n1, 'inspect', 'kv')
  // The newest acknowledged generation was frozen this long before `seenAt`: every write
  // acknowledged before then is in it.
  const safeBefore = seenAt - (last.replication!.rpoMs ?? 0)
  writing = false // from here a closed connection is the power cut's
  await c.tb.kill(n1.host)
  conn.close() // a write in flight to the dead host would wait for TCP to give up
  await writer
  assert.equal(writeError, '', "the writer's connection stayed open until the power cut")
  await waitFor(async () => await cli(standby, 'PING') === 'PONG', 90_000, () => `redis answering on ${standby.name}\n${c.logTail(standby, 15)}`)

  const size = Number(await cli(standby, 'DBSIZE'))
  const mustHave = acked.filter((w) => w.at < safeBefore - 50)
  t.diagnostic(`${acked.length} writes acknowledged, ${mustHave.length} before the last acknowledged generation; DBSIZE ${size}; image ${last.replication!.imageBytes} bytes, last round ${last.replication!.bytesPerRound} bytes on the wire`)
  assert.ok(mustHave.length > 0, 'some writes happened before the last generation')
  assert.ok(size >= KEYS + mustHave.length, `DBSIZE ${size} < ${KEYS} preloaded + ${mustHave.length} written`)
  // Spot-check preloaded keys, and check every write that must be there.
  const sample = [1, 2, 50_000, 99_999, KEYS].map(String)
  const got = await execa(REDIS_CLI, ['-h', standby.host.ip, '-p', String(PORT)], { input: [...sample.map((k) => `GET ${k}`), ...mustHave.map((w) => `GET w:${w.i}`)].join('\n') + '\n', reject: false, timeout: 60_000 })
  const values = String(got.stdout).split('\n')
  assert.deepEqual(values.slice(0, sample.length), sample, 'preloaded keys')
  const missing = mustHave.filter((w, k) => values[sample.length + k] !== String(w.i))
  assert.equal(missing.length, 0, `writes lost although acknowledged before the last generation: ${missing.slice(0, 5).map((w) => w.i).join(', ')}`)
})
