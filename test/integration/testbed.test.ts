// The testbed itself (test/testbed/testbed.ts): three network-namespace hosts on one
// bridge. Needs root, iproute2, nsenter and iptables/ebtables. Every process here is a
// small `node -e` script run inside a host with nsenter.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs/promises'
import { execa } from 'execa'
import { Testbed, STATE_DIR } from '../testbed/testbed.ts'

const NODE = process.execPath

// Listens on 0.0.0.0:PORT; greets each client with this host's eth0 address, then
// echoes. os.networkInterfaces() uses netlink, so it sees the namespace's interfaces.
const SERVER = `
const net = require('node:net'), os = require('node:os')
const me = os.networkInterfaces().eth0.find((a) => a.family === 'IPv4').address
net.createServer((s) => { s.write(me + '\\n'); s.on('data', (d) => s.write(d)); s.on('error', () => {}) })
  .listen(Number(process.argv[1]), '0.0.0.0', () => console.log('listening ' + me))
`

// One connection attempt; prints {ok, greeting, remote} or {error} with 'TIMEOUT' when
// nothing answered within the time limit.
const CLIENT = `
const net = require('node:net')
const [host, port, ms] = process.argv.slice(1)
const s = net.connect(Number(port), host)
const done = (r) => { console.log(JSON.stringify(r)); process.exit(0) }
setTimeout(() => done({ error: 'TIMEOUT' }), Number(ms))
s.on('error', (e) => done({ error: e.code }))
s.once('data', (d) => done({ ok: true, greeting: String(d).trim(), remote: s.remoteAddress, local: s.localAddress }))
`

// A long-lived connection: prints 'connected', sends stdin lines, prints what comes back
// and any error or close (an RST would show as ECONNRESET).
const PERSISTENT = `
const net = require('node:net')
const s = net.connect(Number(process.argv[2]), process.argv[1])
s.on('connect', () => console.log('connected'))
s.on('data', (d) => console.log('data ' + String(d).trim()))
s.on('error', (e) => console.log('error ' + e.code))
s.on('close', () => console.log('closed'))
process.stdin.on('data', (d) => s.write(d))
`

// Joins 224.0.0.251 on the host's address, port 5353 (mDNS), prints each datagram.
const MCAST_RECEIVER = `
const dgram = require('node:dgram')
const s = dgram.createSocket({ type: 'udp4', reuseAddr: true })
s.on('message', (m, r) => console.log('got ' + String(m) + ' from ' + r.address))
s.bind(5353, () => { s.addMembership('224.0.0.251', process.argv[1]); console.log('ready') })
`

// Sends COUNT datagrams to 224.0.0.251:5353 without choosing an interface: the
// namespace's route for 224.0.0.0/4 decides where they go.
const MCAST_SENDER = `
const dgram = require('node:dgram')
const [token, count] = process.argv.slice(1)
const s = dgram.createSocket('udp4')
let n = 0
const next = () => {
  if (n === Number(count)) { s.close(); console.log('sent ' + n); return }
  s.send(token + ' ' + n++, 5353, '224.0.0.251', (err) => { if (err) { console.log('error ' + err.code); process.exit(1) } setImmediate(next) })
}
next()
`

/** Collects a child's stdout lines; waitFor() resolves with the first line matching. */
function lines (child: ChildProcess): { all: string[]; waitFor: (re: RegExp, ms: number) => Promise<string> } {
  const all: string[] = []
  let buf = ''
  const waiters = new Set<() => void>()
  child.stdout?.setEncoding('utf8')
  child.stdout?.on('data', (d: string) => {
    buf += d
    const parts = buf.split('\n')
    buf = parts.pop() ?? ''
    all.push(...parts)
    for (const w of waiters) w()
  })
  return {
    all,
    waitFor: async (re, ms) =>
      await new Promise((resolve, reject) => {
        const check = (): void => {
          const hit = all.find((l) => re.test(l))
          if (hit != null) {
            waiters.delete(check)
            clearTimeout(timer)
            resolve(hit)
          }
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no line matching ${re} within ${ms} ms; got: ${JSON.stringify(all)}`))
        }, ms)
        waiters.add(check)
        check()
      })
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function sh (cmd: string, args: string[]): Promise<string> {
  return String((await execa(cmd, args, { timeout: 15_000 })).stdout)
}

/** The machine's real uplink: the root namespace's default-route interface, if any. */
async function uplink (): Promise<string | null> {
  const routes = JSON.parse(await sh('ip', ['-j', 'route', 'show', 'default'])) as Array<{ dev?: string }>
  return routes[0]?.dev ?? null
}

async function txPackets (dev: string): Promise<number> {
  return Number(await fs.readFile(`/sys/class/net/${dev}/statistics/tx_packets`, 'utf8'))
}

describe('testbed: three hosts on a bridge', () => {
  let tb: Testbed
  let createMs = 0

  before(async () => {
    await Testbed.destroyStale() // leftovers of an earlier crashed run
    const t0 = performance.now()
    tb = await Testbed.create({ hosts: 3 })
    createMs = performance.now() - t0
  })

  after(async () => {
    await tb?.destroy() // idempotent: also runs after the destroy test and after failures
  })

  test('each host has its own address, loopback, and only its own subnet', async () => {
    const ips = new Set<string>()
    for (const h of tb.hosts) {
      const addrs = JSON.parse((await tb.exec(h, 'ip', ['-j', '-4', 'addr', 'show'])).stdout) as Array<{ ifname: string; operstate: string; addr_info: Array<{ local: string; prefixlen: number }> }>
      const eth0 = addrs.find((a) => a.ifname === 'eth0')
      assert.deepEqual(eth0?.addr_info.map((a) => `${a.local}/${a.prefixlen}`), [`${h.ip}/24`], h.name)
      assert.ok(addrs.some((a) => a.ifname === 'lo' && a.addr_info.some((i) => i.local === '127.0.0.1')), `${h.name} lo`)
      ips.add(h.ip)
      // No default route: nothing can be sent off the testbed. (`ip route get` sends nothing.)
      assert.equal((await tb.exec(h, 'ip', ['route', 'show', 'default'])).stdout.trim(), '')
      const outside = await tb.exec(h, 'ip', ['route', 'get', '198.51.100.1'])
      assert.notEqual(outside.exitCode, 0)
      assert.match(outside.stderr, /unreachable/i)
    }
    assert.equal(ips.size, 3)
  })

  test('host 1 reaches hosts 2 and 3 by TCP', async () => {
    const servers = await Promise.all([tb.host(2), tb.host(3)].map(async (h) => {
      const p = await tb.spawn(h, NODE, ['-e', SERVER, '7001'])
      await lines(p).waitFor(/^listening/, 10_000)
      return p
    }))
    try {
      for (const h of [tb.host(2), tb.host(3)]) {
        const r = await tb.exec(1, NODE, ['-e', CLIENT, h.ip, '7001', '5000'])
        const out = JSON.parse(r.stdout)
        assert.deepEqual(out, { ok: true, greeting: h.ip, remote: h.ip, local: tb.host(1).ip }, r.stderr)
      }
    } finally {
      for (const s of servers) s.kill('SIGKILL')
    }
  })

  test('multicast to 224.0.0.251:5353 from host 1 reaches host 2 and stays on the bridge', async () => {
    // Structure: the multicast route in each host goes to its own eth0, and the bridge's
    // only ports are this testbed's veths (no physical interface is enslaved).
    for (const h of tb.hosts) {
      const route = JSON.parse((await tb.exec(h, 'ip', ['-j', 'route', 'get', '224.0.0.251'])).stdout) as Array<{ dev: string }>
      assert.equal(route[0]?.dev, 'eth0', h.name)
    }
    const ports = JSON.parse(await sh('ip', ['-j', 'link', 'show', 'master', tb.bridge])) as Array<{ ifname: string }>
    assert.deepEqual(ports.map((p) => p.ifname).sort(), tb.hosts.map((h) => h.vethHost).sort())

    const rx = await tb.spawn(2, NODE, ['-e', MCAST_RECEIVER, tb.host(2).ip])
    const out = lines(rx)
    try {
      await out.waitFor(/^ready$/, 10_000)
      // Traffic: a burst of datagrams must not show up on the machine's uplink. Other
      // traffic on it is small, so its tx counter must grow by less than the burst.
      const dev = await uplink()
      const before = dev == null ? 0 : await txPackets(dev)
      const token = `msc-testbed-${process.pid}`
      const burst = 300
      const sent = await tb.exec(1, NODE, ['-e', MCAST_SENDER, token, String(burst)])
      assert.equal(sent.stdout.trim(), `sent ${burst}`, sent.stderr)
      const got = await out.waitFor(new RegExp(`^got ${token} \\d+ from `), 5000)
      assert.match(got, new RegExp(`from ${tb.host(1).ip.replaceAll('.', '\\.')}$`))
      if (dev != null) {
        const grew = await txPackets(dev) - before
        assert.ok(grew < burst, `${dev} sent ${grew} packets while ${burst} datagrams went to the testbed`)
      }
    } finally {
      rx.kill('SIGKILL')
    }
  })

  test('cut makes host 2 unreachable (timeouts, no resets); heal restores it', async () => {
    const server = await tb.spawn(2, NODE, ['-e', SERVER, '7002'])
    await lines(server).waitFor(/^listening/, 10_000)
    const conn = await tb.spawn(1, NODE, ['-e', PERSISTENT, tb.host(2).ip, '7002'])
    const connOut = lines(conn)
    try {
      await connOut.waitFor(/^data 10\./, 5000) // connected, greeting received

      await tb.cut(2)
      await tb.cut(2) // twice is harmless
      conn.stdin?.write('during-cut\n')
      const t0 = performance.now()
      const r = await tb.exec(1, NODE, ['-e', CLIENT, tb.host(2).ip, '7002', '1500'])
      assert.deepEqual(JSON.parse(r.stdout), { error: 'TIMEOUT' }, 'a new connection to a cut host hangs (no RST, no ICMP)')
      assert.ok(performance.now() - t0 >= 1400)
      // The other hosts still reach each other.
      const server3 = await tb.spawn(3, NODE, ['-e', SERVER, '7002'])
      await lines(server3).waitFor(/^listening/, 10_000)
      assert.equal(JSON.parse((await tb.exec(1, NODE, ['-e', CLIENT, tb.host(3).ip, '7002', '3000'])).stdout).ok, true)
      server3.kill('SIGKILL')
      // The established connection sees nothing: no echo, no error, no close.
      assert.deepEqual(connOut.all.filter((l) => l !== 'connected' && !l.startsWith('data 10.')), [])

      await tb.heal(2)
      await tb.heal(2) // twice is harmless
      const ok = JSON.parse((await tb.exec(1, NODE, ['-e', CLIENT, tb.host(2).ip, '7002', '3000'])).stdout)
      assert.equal(ok.ok, true)
      // TCP retransmits what was written during the cut (RTO backoff: a few seconds).
      await connOut.waitFor(/^data during-cut$/, 15_000)
      assert.ok(!connOut.all.some((l) => l.startsWith('error') || l === 'closed'), JSON.stringify(connOut.all))
    } finally {
      await tb.heal(2)
      conn.kill('SIGKILL')
      server.kill('SIGKILL')
    }
  })

  test('kill ends every process in host 3 and nothing elsewhere', async () => {
    const server = await tb.spawn(3, NODE, ['-e', SERVER, '7003'])
    await lines(server).waitFor(/^listening/, 10_000)
    // A daemonized process (not our child, reparented away) and a small process tree.
    const daemon = await tb.exec(3, 'sh', ['-c', 'setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!'])
    const daemonPid = Number(daemon.stdout.trim())
    assert.ok(daemonPid > 0, daemon.stderr)
    const tree = await tb.spawn(3, 'sh', ['-c', 'sleep 1000 & sleep 1000 & wait'], { stdio: 'ignore' })
    const bystander = await tb.spawn(2, 'sleep', ['1000'], { stdio: 'ignore' })
    try {
      // server, daemon, sh and its two sleeps (sh forks them a moment after it starts)
      const deadline = Date.now() + 5000
      while ((await tb.pids(3)).length < 5 && Date.now() < deadline) await sleep(20)
      assert.ok((await tb.pids(3)).length >= 5, `pids in h3: ${await tb.pids(3)}`)
      const t0 = performance.now()
      await tb.kill(3)
      const killMs = performance.now() - t0
      assert.deepEqual(await tb.pids(3), [])
      assert.equal(server.signalCode, 'SIGKILL')
      assert.equal(tree.signalCode, 'SIGKILL')
      const st = await fs.readFile(`/proc/${daemonPid}/stat`, 'utf8').catch(() => null)
      assert.ok(st == null || / Z /.test(st), `daemon ${daemonPid} still runs: ${st}`)
      assert.equal(bystander.exitCode, null)
      assert.equal(bystander.signalCode, null)
      assert.ok(killMs < 5000, `kill took ${killMs} ms`)
      // The host itself stays: it can run processes again (a reboot).
      assert.equal((await tb.exec(3, 'true', [])).exitCode, 0)
    } finally {
      bystander.kill('SIGKILL')
    }
  })

  test('destroy leaves no namespace, link, firewall rule or state file; twice is fine', async (t) => {
    const { id, bridge, name } = tb.state
    const server = await tb.spawn(1, NODE, ['-e', SERVER, '7004'])
    await lines(server).waitFor(/^listening/, 10_000)
    await tb.cut(2) // a cut left in place must go too
    const t0 = performance.now()
    await tb.destroy()
    const destroyMs = performance.now() - t0
    await tb.destroy()
    t.diagnostic(`3 hosts: create ${createMs.toFixed(0)} ms, destroy ${destroyMs.toFixed(0)} ms`)

    assert.equal(server.signalCode, 'SIGKILL')
    const netns = await sh('ip', ['netns', 'list'])
    assert.ok(!netns.includes(`msc${id}`), netns)
    const links = await sh('ip', ['-o', 'link'])
    assert.ok(!links.includes(bridge) && !links.includes(`msc${id}v`), links)
    const fwd = await sh('iptables', ['-S', 'FORWARD'])
    assert.ok(!fwd.includes(bridge) && !fwd.includes(`msc-testbed ${id}`), fwd)
    const eb = await sh('ebtables', ['-L'])
    assert.ok(!eb.includes(`msc${id}`), eb)
    await assert.rejects(fs.access(`${STATE_DIR}/${name}.json`))
    await assert.rejects(fs.access(`${STATE_DIR}/net-${tb.state.subnetIndex}.claim`))
    await assert.rejects(tb.exec(1, 'true', []), /destroyed/)
  })
})
