import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import { execa } from 'execa'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import { inSubnet, type LanDriver, type LanNetwork } from './lan-address.ts'

/**
 * The system side of `--network lan`: per container a named network namespace
 * (/run/netns/msc-NODEID-NAME) holding one macvlan (bridge mode) or ipvlan (l2) link on
 * the node's LAN interface, named eth0 inside, with the container's address.
 *
 * A link can be *quiet*: iptables drops everything but loopback in the namespace and
 * the link answers no ARP. A migration's source quiets it before the dump (CRIU does not
 * lock a namespace it does not own, and the frozen sockets' kernel state must not move
 * on); the target builds it quiet before the restore, so the address is never live on
 * two hosts, and makes it live (and announces it with gratuitous ARP) after.
 */

const NETNS_DIR = '/run/netns'

/** What a node's lan namespaces are named by, before the container's name (`ip netns` names, under /run/netns). */
export function lanNetnsPrefix (nodeId: string): string {
  return `msc-${nodeId}-`
}
const FREEZE_TAG = 'msc-lan-quiet'

export interface LanInterface {
  name: string
  address: string
  prefix: number
  /** The default gateway, when it routes through this interface. */
  gateway: string | null
}

export interface LanNetworksInit {
  /** This node's id: namespaces of nodes sharing a kernel never collide. */
  nodeId: string
  /** The configured interface; '' for the interface of the default route. */
  iface: string
  driver: LanDriver
  logger: Logger
}

interface IpAddrInfo {
  ifname: string
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>
}
interface IpRoute {
  dst: string
  gateway?: string
  dev: string
}

async function ipJson<T> (args: string[]): Promise<T> {
  const r = await execa('ip', ['-j', ...args], { reject: false, timeout: 10_000 })
  if (r.exitCode !== 0) throw new MscError('NETWORK', `ip ${args.join(' ')}: ${String(r.stderr).trim() || `exit ${r.exitCode}`}`)
  return JSON.parse(String(r.stdout) || '[]') as T
}

async function run (cmd: string, args: string[], what: string): Promise<void> {
  const r = await execa(cmd, args, { reject: false, timeout: 15_000, stdin: 'ignore' })
  if (r.exitCode !== 0) throw new MscError('NETWORK', `${what}: ${String(r.stderr).trim() || `exit ${String(r.exitCode)}`}`)
}

/** The node's LAN interface: IFACE (or the default route's) with its IPv4 subnet. */
export async function lanInterface (iface: string): Promise<LanInterface> {
  const routes = await ipJson<IpRoute[]>(['-4', 'route', 'show', 'default']).catch(() => [] as IpRoute[])
  const name = iface !== '' ? iface : routes[0]?.dev
  if (name == null) throw new MscError('NETWORK', 'no LAN interface: this node has no default route; start it with --lan-interface IFACE')
  const links = await ipJson<IpAddrInfo[]>(['-4', 'addr', 'show', 'dev', name]).catch((err: MscError) => {
    throw new MscError('NETWORK', `LAN interface ${name} does not exist on this node (${err.message})`)
  })
  const a = links[0]?.addr_info?.find((x) => x.family === 'inet' && (x.scope ?? 'global') === 'global')
  if (a == null) throw new MscError('NETWORK', `LAN interface ${name} has no IPv4 address: its subnet is the LAN`)
  const gw = routes.find((r) => r.dev === name && r.gateway != null)?.gateway ?? null
  return { name, address: a.local, prefix: a.prefixlen, gateway: gw != null && inSubnet(gw, a.local, a.prefixlen) ? gw : null }
}

/** Why NET cannot live on IFACE, or null. Pure. */
export function networkProblem (net: LanNetwork, iface: LanInterface): string | null {
  if (net.prefix !== iface.prefix || !inSubnet(net.address, iface.address, iface.prefix)) {
    return `${net.address}/${net.prefix} is not in the subnet of ${iface.name} (${iface.address}/${iface.prefix})`
  }
  if (net.address === iface.address) return `${net.address} is the address of ${iface.name} itself`
  return null
}

export class LanNetworks {
  private readonly init: LanNetworksInit
  private readonly log: Logger

  constructor (init: LanNetworksInit) {
    this.init = init
    this.log = init.logger
  }

  get driver (): LanDriver {
    return this.init.driver
  }

  nsName (container: string): string {
    return `${lanNetnsPrefix(this.init.nodeId)}${container}`
  }

  /** The namespace's path: what config.json's network namespace names. */
  nsPath (container: string): string {
    return `${NETNS_DIR}/${this.nsName(container)}`
  }

  /** The link's name in the node's namespace while it is made (at most 15 characters). */
  private tmpLink (container: string): string {
    return 'mscl' + crypto.createHash('sha256').update(this.nsName(container)).digest('hex').slice(0, 11)
  }

  /** Throws NETWORK when this node cannot give NET to a container (no interface, other subnet). */
  async check (net: LanNetwork): Promise<LanInterface> {
    const iface = await lanInterface(this.init.iface)
    const p = networkProblem(net, iface)
    if (p != null) throw new MscError('NETWORK', p)
    return iface
  }

  async exists (container: string): Promise<boolean> {
    return await fs.access(this.nsPath(container)).then(() => true, () => false)
  }

  /**
   * Builds the namespace and its link, quiet if asked (a migration's target). All or
   * nothing: on any failure what was made is removed.
   */
  async create (container: string, net: LanNetwork, opts: { quiet?: boolean } = {}): Promise<void> {
    const iface = await this.check(net)
    const ns = this.nsName(container)
    if (await this.exists(container)) throw new MscError('ALREADY_EXISTS', `network namespace ${ns} exists already (a container of that name had one): remove it with \`ip netns delete ${ns}\``)
    const tmp = this.tmpLink(container)
    try {
      await run('ip', ['netns', 'add', ns], `creating network namespace ${ns}`)
      // IPv4 only: no IPv6 autoconfiguration or DAD traffic from a link that must stay silent.
      await this.inNs(container, 'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; true', 'disabling IPv6')
      const type = net.driver === 'macvlan' ? ['type', 'macvlan', 'mode', 'bridge'] : ['type', 'ipvlan', 'mode', 'l2']
      const mac = net.driver === 'macvlan' && net.mac != null ? ['address', net.mac] : []
      await run('ip', ['link', 'add', 'link', iface.name, 'name', tmp, ...mac, ...type], `creating the ${net.driver} link on ${iface.name}`)
      await run('ip', ['link', 'set', tmp, 'netns', ns], 'moving the link into the namespace')
      const script = [
        'set -e',
        `ip link set ${tmp} name eth0`,
        `ip addr add ${net.address}/${net.prefix} dev eth0`,
        'ip link set lo up',
        ...(opts.quiet === true ? [...quietCommands(), 'ip link set eth0 arp off'] : []),
        'ip link set eth0 up',
        ...(iface.gateway != null ? [`ip route add default via ${iface.gateway} dev eth0`] : [])
      ].join('\n')
      await this.inNs(container, script, `setting up ${net.address}/${net.prefix} in ${ns}`)
      this.log.info({ container, ns, address: net.address, driver: net.driver, iface: iface.name, quiet: opts.quiet === true }, 'lan network created')
    } catch (err) {
      await this.remove(container)
      throw err
    }
  }

  /** Removes the namespace (and with it the link); nothing there is fine. */
  async remove (container: string): Promise<void> {
    const ns = this.nsName(container)
    await execa('ip', ['link', 'delete', this.tmpLink(container)], { reject: false, timeout: 10_000 })
    if (!(await this.exists(container))) return
    // The link first, synchronously: a namespace is torn down asynchronously once
    // unnamed, and until then its macvlan keeps the MAC, so the same address could not
    // come back here at once (a migration back: "Address already in use").
    await execa('ip', ['-n', ns, 'link', 'delete', 'eth0'], { reject: false, timeout: 10_000 })
    const r = await execa('ip', ['netns', 'delete', ns], { reject: false, timeout: 10_000 })
    if (r.exitCode !== 0) this.log.warn({ ns, err: String(r.stderr).trim() }, 'could not delete a network namespace')
    else this.log.info({ container, ns }, 'lan network removed')
  }

  /** No traffic but loopback, no ARP answers: the address is not live here. */
  async quiet (container: string): Promise<void> {
    await this.inNs(container, ['set -e', ...quietCommands(), 'ip link set eth0 arp off'].join('\n'), 'quieting the lan link')
  }

  /**
   * The address is live here: the quiet rules go, ARP is on, and a gratuitous ARP tells
   * the LAN (switches and neighbours) where it is now. The announcement runs on in the
   * background (its second packet leaves a second later).
   */
  async activate (container: string, net: LanNetwork): Promise<void> {
    // Flushed, not deleted rule by rule: one iptables-restore (this runs inside the
    // downtime), and only msc writes rules here (the container has no CAP_NET_ADMIN
    // unless its bundle was allowed to be privileged).
    const unquiet = [
      "printf '*filter\\n-F INPUT\\n-F OUTPUT\\nCOMMIT\\n' | iptables-restore -w --noflush",
      'ip link set eth0 arp on'
    ].join('\n')
    await this.inNs(container, unquiet, 'making the lan link live')
    const arping = execa('nsenter', [`--net=${this.nsPath(container)}`, 'arping', '-U', '-c', '2', '-I', 'eth0', net.address], { reject: false, timeout: 10_000, stdin: 'ignore' })
    arping.then((r) => {
      if (r.exitCode !== 0 && r.exitCode !== 1) this.log.warn({ container, err: String(r.stderr).trim() || String(r.shortMessage) }, 'gratuitous ARP failed')
    }, () => {})
  }

  private async inNs (container: string, script: string, what: string): Promise<void> {
    await run('nsenter', [`--net=${this.nsPath(container)}`, 'sh', '-c', script], what)
  }
}

/** Both rules in one iptables-restore: one process less inside the downtime. */
function quietCommands (): string[] {
  return [
    `printf '*filter\\n-I INPUT 1 ! -i lo -m comment --comment ${FREEZE_TAG} -j DROP\\n-I OUTPUT 1 ! -o lo -m comment --comment ${FREEZE_TAG} -j DROP\\nCOMMIT\\n' | iptables-restore -w --noflush`
  ]
}
