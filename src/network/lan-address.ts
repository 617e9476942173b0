import { z } from 'zod'
import { MscError } from '../util/errors.ts'

/**
 * A container's own address on the hosts' LAN (`--network lan --ip ADDR/PREFIX`): what
 * msc keeps in its record, names in a migration offer and checks in received claims.
 * Pure: no system calls.
 */

export const LAN_DRIVERS = ['macvlan', 'ipvlan'] as const
export type LanDriver = typeof LAN_DRIVERS[number]

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/

/** A dotted IPv4 address, nothing else (no leading zeros, no spaces, no names). */
export const Ipv4Schema = z.string().max(15).regex(IPV4_RE)

export const LanNetworkSchema = z.object({
  mode: z.literal('lan'),
  address: Ipv4Schema,
  /** 8..30: a subnet with room for hosts and a container; never a host route. */
  prefix: z.number().int().min(8).max(30),
  /** The link's MAC (macvlan); ipvlan shares the parent's and keeps none. */
  mac: z.string().regex(MAC_RE).optional(),
  driver: z.enum(LAN_DRIVERS)
}).strict()
export type LanNetwork = z.infer<typeof LanNetworkSchema>

export function ipv4ToInt (a: string): number {
  const p = a.split('.').map(Number)
  return ((p[0]! << 24) >>> 0) + (p[1]! << 16) + (p[2]! << 8) + p[3]!
}

export function intToIpv4 (n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}

function maskOf (prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
}

/** The network address of ADDR/PREFIX, e.g. 10.1.2.0 for 10.1.2.7/24. */
export function subnetOf (address: string, prefix: number): string {
  return intToIpv4((ipv4ToInt(address) & maskOf(prefix)) >>> 0)
}

/** ADDR is inside NET/PREFIX. */
export function inSubnet (address: string, net: string, prefix: number): boolean {
  return subnetOf(address, prefix) === subnetOf(net, prefix)
}

/**
 * Parses `--ip ADDR/PREFIX`. Refuses anything but a dotted IPv4 address with a prefix
 * of 8..30, and the subnet's own network and broadcast addresses.
 */
export function parseLanAddress (raw: unknown): { address: string; prefix: number } {
  if (typeof raw !== 'string' || raw.length > 18) throw new MscError('INVALID_ARGUMENT', `--ip: expected ADDR/PREFIX (e.g. 192.168.1.50/24), got ${JSON.stringify(raw)}`)
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(raw)
  if (m == null || !IPV4_RE.test(m[1]!)) throw new MscError('INVALID_ARGUMENT', `--ip: expected ADDR/PREFIX with an IPv4 address (e.g. 192.168.1.50/24), got ${JSON.stringify(raw)}`)
  const address = m[1]!
  const prefix = Number(m[2])
  if (prefix < 8 || prefix > 30) throw new MscError('INVALID_ARGUMENT', `--ip ${raw}: the prefix must be 8 to 30 (the prefix of the hosts' subnet)`)
  const n = ipv4ToInt(address)
  const mask = maskOf(prefix)
  if ((n & ~mask) >>> 0 === 0) throw new MscError('INVALID_ARGUMENT', `--ip ${raw}: that is the subnet's network address`)
  if ((n & ~mask) >>> 0 === (~mask >>> 0)) throw new MscError('INVALID_ARGUMENT', `--ip ${raw}: that is the subnet's broadcast address`)
  if (address.startsWith('127.') || n >>> 28 >= 14) throw new MscError('INVALID_ARGUMENT', `--ip ${raw}: not a unicast LAN address`)
  return { address, prefix }
}

/**
 * The MAC a macvlan link of ADDR gets on every node: locally administered, unicast
 * (02), 'm' (6d), then the four bytes of the address. The same on source and target,
 * so neighbours' ARP caches stay right across a migration.
 */
export function macForAddress (address: string): string {
  const n = ipv4ToInt(address)
  return ['02', '6d', ...[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, '0'))].join(':')
}

/** The network of a new lan container: its address, and the MAC where the driver has one. */
export function lanNetworkFor (ip: string, driver: LanDriver): LanNetwork {
  const { address, prefix } = parseLanAddress(ip)
  return driver === 'macvlan' ? { mode: 'lan', address, prefix, mac: macForAddress(address), driver } : { mode: 'lan', address, prefix, driver }
}

/** Parses the network of a run request: absent or 'host' is the host's network; 'lan' needs `ip`. */
export function parseRunNetwork (network: unknown, ip: unknown, driver: LanDriver): LanNetwork | null {
  if (network == null || network === 'host') {
    if (ip != null) throw new MscError('INVALID_ARGUMENT', '--ip needs --network lan')
    return null
  }
  if (network !== 'lan') throw new MscError('INVALID_ARGUMENT', `--network: expected host or lan, got ${JSON.stringify(network)}`)
  if (ip == null) throw new MscError('INVALID_ARGUMENT', '--network lan needs --ip ADDR/PREFIX')
  return lanNetworkFor(ip as string, driver)
}

/**
 * A network that arrived from another node (a replication generation's `network`, kept
 * by a standby to restore the container at the same address): hostile until checked.
 * The shape (LanNetworkSchema), then what `--ip` would refuse (a network or broadcast
 * address, loopback, multicast), then the MAC: a macvlan link's is the one its address
 * gives (macForAddress), an ipvlan link has none. Returns the network as this node
 * would have made it; throws INVALID_ARGUMENT naming the first problem.
 */
export function checkReceivedNetwork (raw: unknown): LanNetwork {
  const p = LanNetworkSchema.safeParse(raw)
  if (!p.success) throw new MscError('INVALID_ARGUMENT', `network: ${p.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ').slice(0, 300)}`)
  const net = p.data
  const { address, prefix } = parseLanAddress(`${net.address}/${net.prefix}`)
  const want = lanNetworkFor(`${address}/${prefix}`, net.driver)
  if ((net.mac ?? null) !== (want.mac ?? null)) {
    throw new MscError('INVALID_ARGUMENT', net.driver === 'macvlan' ? `network: a macvlan link of ${address} has the MAC ${want.mac!}, not ${net.mac ?? 'none'}` : 'network: an ipvlan link has no MAC of its own')
  }
  return want
}
