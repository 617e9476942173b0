/**
 * `--network lan --ip`: parsing the address, the MAC a macvlan link gets, whether an
 * address fits the node's LAN interface, and the address field where it arrives from
 * other nodes (a heartbeat's claim, a migration offer): hostile until checked.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { LanNetworkSchema, inSubnet, lanNetworkFor, macForAddress, parseLanAddress, parseRunNetwork, subnetOf } from '../../src/network/lan-address.ts'
import { networkProblem } from '../../src/network/lan-netns.ts'
import { ContainerClaimSchema } from '../../src/overlay/membership/heartbeat.ts'
import { runtimeConfig } from '../../src/runtime/bundle.ts'
import { MscError } from '../../src/util/errors.ts'

const refused = (raw: unknown, re: RegExp): void => {
  assert.throws(() => parseLanAddress(raw), (e: unknown) => e instanceof MscError && e.code === 'INVALID_ARGUMENT' && re.test(e.message), `refuses ${JSON.stringify(raw)}`)
}

test('--ip ADDR/PREFIX parses a dotted IPv4 address with its prefix', () => {
  assert.deepEqual(parseLanAddress('192.168.1.50/24'), { address: '192.168.1.50', prefix: 24 })
  assert.deepEqual(parseLanAddress('10.1.2.3/8'), { address: '10.1.2.3', prefix: 8 })
})

test('--ip refuses what is not ADDR/PREFIX', () => {
  refused('192.168.1.50', /ADDR\/PREFIX/)
  refused('192.168.1/24', /IPv4/)
  refused('192.168.1.256/24', /IPv4/)
  refused('192.168.01.5/24', /IPv4/)
  refused(' 192.168.1.5/24', /IPv4/)
  refused('fe80::1/64', /IPv4/)
  refused('host.example/24', /IPv4/)
  refused(42, /ADDR\/PREFIX/)
  refused('1'.repeat(100), /ADDR\/PREFIX/)
})

test('--ip refuses a prefix outside 8..30, the network and broadcast addresses, and non-unicast ones', () => {
  refused('10.0.0.5/32', /prefix must be 8 to 30/)
  refused('10.0.0.5/7', /prefix must be 8 to 30/)
  refused('10.0.0.0/24', /network address/)
  refused('10.0.0.255/24', /broadcast address/)
  refused('127.0.0.5/8', /not a unicast/)
  refused('224.0.0.5/8', /not a unicast/)
})

test('network and ip of a run request: lan needs an address, host takes none', () => {
  assert.equal(parseRunNetwork(undefined, undefined, 'macvlan'), null)
  assert.equal(parseRunNetwork('host', undefined, 'macvlan'), null)
  assert.deepEqual(parseRunNetwork('lan', '10.0.0.5/24', 'ipvlan'), { mode: 'lan', address: '10.0.0.5', prefix: 24, driver: 'ipvlan' })
  assert.throws(() => parseRunNetwork('lan', undefined, 'macvlan'), /needs --ip/)
  assert.throws(() => parseRunNetwork('host', '10.0.0.5/24', 'macvlan'), /--ip needs --network lan/)
  assert.throws(() => parseRunNetwork('bridge', '10.0.0.5/24', 'macvlan'), /expected host or lan/)
})

test('a macvlan link has a fixed, locally administered unicast MAC made of its address', () => {
  assert.equal(macForAddress('10.213.7.200'), '02:6d:0a:d5:07:c8')
  assert.equal(lanNetworkFor('10.213.7.200/24', 'macvlan').mac, '02:6d:0a:d5:07:c8')
  assert.equal(lanNetworkFor('10.213.7.200/24', 'ipvlan').mac, undefined, "ipvlan uses the interface's")
})

test('subnets', () => {
  assert.equal(subnetOf('10.1.2.7', 24), '10.1.2.0')
  assert.equal(subnetOf('10.1.2.7', 8), '10.0.0.0')
  assert.ok(inSubnet('10.1.2.7', '10.1.2.1', 24))
  assert.ok(!inSubnet('10.1.3.7', '10.1.2.1', 24))
})

test("an address must be in the LAN interface's subnet, with its prefix, and not the interface's own", () => {
  const iface = { name: 'eth0', address: '10.1.2.1', prefix: 24, gateway: null }
  assert.equal(networkProblem(lanNetworkFor('10.1.2.9/24', 'macvlan'), iface), null)
  assert.match(networkProblem(lanNetworkFor('10.1.3.9/24', 'macvlan'), iface) ?? '', /not in the subnet of eth0 \(10\.1\.2\.1\/24\)/)
  assert.match(networkProblem(lanNetworkFor('10.1.2.9/16', 'macvlan'), iface) ?? '', /not in the subnet/)
  assert.match(networkProblem(lanNetworkFor('10.1.2.1/24', 'macvlan'), iface) ?? '', /address of eth0 itself/)
})

test("a claim's address field: a dotted IPv4 address or nothing", () => {
  const claim = { name: 'kv', epoch: 1, state: 'running' }
  assert.ok(ContainerClaimSchema.safeParse(claim).success)
  assert.ok(ContainerClaimSchema.safeParse({ ...claim, address: '10.1.2.3' }).success)
  for (const address of ['10.1.2', '10.1.2.300', '010.1.2.3', '10.1.2.3 ', '10.1.2.3/24', 'x'.repeat(100), 7, null, ['10.1.2.3'], '::1']) {
    assert.equal(ContainerClaimSchema.safeParse({ ...claim, address }).success, false, `refuses ${JSON.stringify(address)}`)
  }
})

test("an offer's network: bounded, well-formed, nothing more", () => {
  const net = { mode: 'lan', address: '10.1.2.3', prefix: 24, mac: '02:6d:0a:01:02:03', driver: 'macvlan' }
  assert.ok(LanNetworkSchema.safeParse(net).success)
  const bad: Array<[string, unknown]> = [
    ['address', '10.1.2.3; rm -rf /'],
    ['address', '10.1.2.3 dev lo'],
    ['prefix', 32],
    ['prefix', 7],
    ['prefix', 24.5],
    ['mac', '02:6d:0a:01:02'],
    ['mac', '02:6d:0a:01:02:03 up'],
    ['driver', 'bridge'],
    ['mode', 'host']
  ]
  for (const [k, v] of bad) assert.equal(LanNetworkSchema.safeParse({ ...net, [k]: v }).success, false, `refuses ${k} ${JSON.stringify(v)}`)
  assert.equal(LanNetworkSchema.safeParse({ ...net, iface: 'eth0' }).success, false, 'no field of its own choosing (strict)')
})

test("a lan container's config.json joins its namespace instead of the bundle's network choice", () => {
  const b = { dir: '/b', rootfs: '/b/rootfs', config: { process: { args: ['/bin/sh'] }, root: { path: 'rootfs' }, linux: { namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'mount' }] } } }
  const c = runtimeConfig(b, { cgroupsPath: '/msc/kv', netnsPath: '/run/netns/msc-0123abcd-kv' })
  assert.deepEqual(c.linux?.namespaces, [{ type: 'pid' }, { type: 'mount' }, { type: 'network', path: '/run/netns/msc-0123abcd-kv' }])
  assert.deepEqual(runtimeConfig(b, { cgroupsPath: '/msc/kv' }).linux?.namespaces, b.config.linux.namespaces, 'without it, unchanged')
})
