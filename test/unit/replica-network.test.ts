/**
 * The network a replication generation carries (`begin.network`, a `--network lan`
 * container's address, which a failover on the standby takes over): hostile until
 * checked. Refused field by field (shape, what `--ip` refuses, the MAC its address
 * gives), and a standby that could not build it (another subnet, no LAN interface, an
 * address its own container holds) refuses the generation with `network`, before it
 * writes anything. A valid one is admitted and kept with the replica.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { streamPair } from '@libp2p/utils'
import { checkReceivedNetwork, macForAddress, type LanNetwork } from '../../src/network/lan-address.ts'
import { BeginSchema, MAX_REPLICATE_FRAME, ReplySchema, REPLICATE_VERSION, type Begin, type Reply } from '../../src/replication/messages.ts'
import { ReplicationReceiver } from '../../src/replication/receiver.ts'
import { ReplicaStore } from '../../src/replication/replica-store.ts'
import { FramedStream } from '../../src/protocols/framing.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { MscError } from '../../src/util/errors.ts'

const OWNER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const NET: LanNetwork = { mode: 'lan', address: '10.1.2.3', prefix: 24, mac: macForAddress('10.1.2.3'), driver: 'macvlan' }

const dirs: string[] = []
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true })
})

test('a received network: the shape, what --ip refuses, and the MAC its address gives', () => {
  assert.deepEqual(checkReceivedNetwork(NET), NET)
  assert.deepEqual(checkReceivedNetwork({ mode: 'lan', address: '10.1.2.3', prefix: 24, driver: 'ipvlan' }), { mode: 'lan', address: '10.1.2.3', prefix: 24, driver: 'ipvlan' })
  const bad: Array<[string, unknown, RegExp]> = [
    ['a shell word in the address', { ...NET, address: '10.1.2.3;reboot' }, /address/],
    ['an option in the address', { ...NET, address: '10.1.2.3 dev lo' }, /address/],
    ['no address', { ...NET, address: undefined }, /address/],
    ['a number for the address', { ...NET, address: 167838211 }, /address/],
    ['a host route', { ...NET, prefix: 32 }, /prefix/],
    ['a prefix below 8', { ...NET, prefix: 4 }, /prefix/],
    ['a fractional prefix', { ...NET, prefix: 24.5 }, /prefix/],
    ['a string prefix', { ...NET, prefix: '24' }, /prefix/],
    ['an unknown driver', { ...NET, driver: 'bridge' }, /driver/],
    ['a driver with arguments', { ...NET, driver: 'macvlan mode vepa' }, /driver/],
    ['another mode', { ...NET, mode: 'host' }, /mode/],
    ['a field of its own choosing', { ...NET, iface: 'eth0' }, /iface|Unrecognized/],
    ["the subnet's network address", { ...NET, address: '10.1.2.0', mac: macForAddress('10.1.2.0') }, /network address/],
    ['the broadcast address', { ...NET, address: '10.1.2.255', mac: macForAddress('10.1.2.255') }, /broadcast/],
    ['loopback', { ...NET, address: '127.0.0.5', prefix: 8, mac: macForAddress('127.0.0.5') }, /unicast/],
    ['multicast', { ...NET, address: '224.0.0.251', prefix: 8, mac: macForAddress('224.0.0.251') }, /unicast/],
    ["another node's MAC", { ...NET, mac: '02:6d:0a:01:02:04' }, /MAC 02:6d:0a:01:02:03/],
    ['a MAC with garbage', { ...NET, mac: '02:6d:0a:01:02:03 up' }, /mac/],
    ['a macvlan without its MAC', { ...NET, mac: undefined }, /MAC/],
    ['an ipvlan with a MAC', { ...NET, driver: 'ipvlan' }, /ipvlan/],
    ['not an object', 'lan 10.1.2.3/24', /expected object|Invalid input/],
    ['null', null, /expected object|Invalid input/]
  ]
  for (const [what, raw, re] of bad) {
    assert.throws(() => checkReceivedNetwork(raw), (e: unknown) => e instanceof MscError && e.code === 'INVALID_ARGUMENT' && re.test(e.message), `refuses ${what}: ${JSON.stringify(raw)}`)
  }
})

test("begin's network is bounded by the schema before anything reads it", () => {
  const begin = beginWith(NET)
  assert.ok(BeginSchema.safeParse(begin).success)
  assert.ok(BeginSchema.safeParse({ ...begin, network: undefined }).success, 'absent: the host network')
  for (const network of [{ ...NET, address: 'x'.repeat(5000) }, { ...NET, extra: 1 }, { ...NET, prefix: -1 }, [], 'lan']) {
    assert.equal(BeginSchema.safeParse({ ...begin, network }).success, false, `refuses ${JSON.stringify(network).slice(0, 60)}`)
  }
})

/** A standby with a fake node, answering one `begin`: its reply, or null when it aborted the stream. */
async function offer (begin: unknown, opts: { problem?: string | null; noLan?: boolean } = {}): Promise<{ reply: Reply | null; store: ReplicaStore; checked: LanNetwork[] }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'msc-replica-net-'))
  dirs.push(dir)
  const store = new ReplicaStore(path.join(dir, 'replicas'))
  const checked: LanNetwork[] = []
  const receiver = new ReplicationReceiver(store, {
    selfId: '12D3KooWSelfSelfSelfSelfSelfSelfSelfSelfSelfSelfSelfSe',
    witness: false,
    hasContainer: async () => false,
    ownerOf: () => undefined,
    freeBytes: async () => 1e12,
    bundlePolicy: { allowPrivileged: true },
    diskReserveBytes: 0,
    ...(opts.noLan === true
      ? {}
      : {
        networkProblem: async (net: LanNetwork) => {
          checked.push(net)
          return opts.problem ?? null
        }
      })
  }, silentLogger())
  const [a, b] = await streamPair()
  const served = receiver.handle(b, OWNER)
  const framed = new FramedStream(a, { maxFrameBytes: MAX_REPLICATE_FRAME })
  await framed.writeJson(begin)
  let reply: Reply | null = null
  try {
    reply = await framed.readJson(ReplySchema, AbortSignal.timeout(5_000))
  } catch {
    reply = null
  }
  framed.abort(new Error('test done'))
  await served
  return { reply, store, checked }
}

function beginWith (network: unknown): Begin {
  return {
    type: 'begin',
    v: REPLICATE_VERSION,
    container: 'kv',
    epoch: 1,
    generation: 1,
    base: null,
    config: { process: { args: ['/bin/sh'] }, root: { path: 'rootfs' } },
    replicas: 1,
    standbys: [],
    dumpedAt: Date.now(),
    transfers: { full: 'fullfullfull', delta: 'deltadelta' },
    estimatedBytes: 1000,
    ...(network !== undefined ? { network } : {})
  } as Begin
}

test('a standby refuses a generation whose network is hostile, before it stages anything', async () => {
  for (const network of [{ ...NET, mac: '02:6d:0a:01:02:04' }, { ...NET, address: '10.1.2.255', mac: macForAddress('10.1.2.255') }, { ...NET, driver: 'ipvlan' }]) {
    const { reply, store, checked } = await offer(beginWith(network))
    assert.equal(reply?.type, 'nack', `refused: ${JSON.stringify(network)}`)
    assert.equal(reply?.type === 'nack' ? reply.reason : '', 'malformed')
    assert.deepEqual(checked, [], 'never handed to the system side')
    assert.deepEqual(await fs.readdir(store.root).catch(() => []), [], 'nothing staged')
  }
  // Outside the schema: the opening does not parse, the stream is aborted unanswered.
  const { reply, store } = await offer(beginWith({ ...NET, address: '10.1.2.3 dev lo' }))
  assert.equal(reply, null)
  assert.deepEqual(await fs.readdir(store.root).catch(() => []), [])
})

test('a standby that could not take the address over refuses the generation (network)', async () => {
  const other = await offer(beginWith(NET), { problem: '10.1.2.3/24 is not in the subnet of eth0 (192.168.7.2/24)' })
  assert.equal(other.reply?.type, 'nack')
  assert.equal(other.reply?.type === 'nack' ? other.reply.reason : '', 'network')
  assert.match(other.reply?.type === 'nack' ? other.reply.detail : '', /not in the subnet of eth0/)
  assert.deepEqual(other.checked, [NET])
  const none = await offer(beginWith(NET), { noLan: true })
  assert.equal(none.reply?.type === 'nack' ? none.reply.reason : '', 'network')
})

test('a valid network is admitted (ready) once checked against the node', async () => {
  const { reply, checked } = await offer(beginWith(NET))
  assert.equal(reply?.type, 'ready')
  assert.deepEqual(checked, [NET])
  const host = await offer(beginWith(undefined))
  assert.equal(host.reply?.type, 'ready', 'no network: the host network, nothing to check')
  assert.deepEqual(host.checked, [])
})
