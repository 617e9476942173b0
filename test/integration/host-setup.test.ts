/**
 * `npm run setup` on a host that may run msc as a service: it puts `msc` on PATH and
 * installs no service of its own. Debian's redis-server package would start a system
 * redis on port 6379; set-up unpacks the redis binaries the demos and tests use into
 * its tools prefix instead. Runs the real scripts/setup.sh (idempotent, seconds when
 * everything is there). Needs root.
 */
import { before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { realpathSync } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import { ROOT } from '../helpers/node-harness.ts'
import { REDIS_BENCHMARK, REDIS_CLI, REDIS_SERVER } from '../../src/bundles/redis.ts'
import { VERSION } from '../../src/version.ts'

/** Where a root login shell on Debian looks for commands (not npm's augmented PATH). */
const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
const TOOLS = process.env.MSC_TOOLS_DIR || '/opt/msc'

/** Inodes of the sockets listening on TCP `port`, IPv4 and IPv6, in this namespace. */
async function listenersOn (port: number): Promise<Set<string>> {
  const found = new Set<string>()
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = (await fs.readFile(f, 'utf8').catch(() => '')).split('\n').slice(1)
    for (const line of lines) {
      const cols = line.trim().split(/\s+/)
      // local_address is HEXIP:HEXPORT; state 0A is LISTEN; column 9 the inode.
      if (cols.length > 9 && cols[3] === '0A' && parseInt(cols[1]!.split(':')[1]!, 16) === port) found.add(cols[9]!)
    }
  }
  return found
}

async function packageInstalled (name: string): Promise<boolean> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const r = await execa('dpkg-query', ['-W', '-f=${Status}', name], { reject: false })
  return String(r.stdout).includes('install ok installed')
}

describe('npm run setup', () => {
  let redisListenersBefore = new Set<string>()
  let redisServerPackageBefore = false
  let setup: { exitCode?: number; stderr: unknown }

  before(async () => {
    redisListenersBefore = await listenersOn(6379)
    redisServerPackageBefore = await packageInstalled('redis-server')
    setup = await execa('bash', [path.join(ROOT, 'scripts', 'setup.sh')], { reject: false, timeout: 600_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  })

  test('succeeds', () => {
    assert.equal(setup.exitCode, 0, String(setup.stderr).slice(-3000))
  })

  test('starts nothing on port 6379 and installs no redis service', async () => {
    assert.deepEqual([...await listenersOn(6379)].sort(), [...redisListenersBefore].sort(), 'the sockets listening on 6379 are the ones that listened before set-up')
    if (!redisServerPackageBefore) assert.equal(await packageInstalled('redis-server'), false, "Debian's redis-server package (a system service) was not installed")
  })

  test('the redis binaries the demos and tests use are in the tools prefix and run', async () => {
    for (const bin of [REDIS_SERVER, REDIS_CLI, REDIS_BENCHMARK]) {
      assert.ok(bin.startsWith(`${TOOLS}/bin/`), `${bin} is the unpacked one`)
      const r = await execa(bin, ['--version'], { reject: false })
      assert.equal(r.exitCode, 0, `${bin} --version: ${String(r.stderr)}`)
    }
    // One binary, whose role is its name: under this name it must be the server.
    assert.match(String((await execa(REDIS_SERVER, ['--version'])).stdout), /^Redis server v=/)
  })

  test("msc is on a root shell's PATH: this checkout's bin/msc, on its own Node, with nothing on stderr", async () => {
    const which = await execa('sh', ['-c', 'command -v msc'], { env: { PATH: ROOT_PATH }, extendEnv: false, reject: false })
    assert.equal(String(which.stdout).trim(), '/usr/local/bin/msc')
    assert.equal(realpathSync('/usr/local/bin/msc'), path.join(ROOT, 'bin', 'msc'))
    // /usr/bin/node (Node 20 here) first on PATH must not matter.
    const r = await execa('sh', ['-c', 'msc --version'], { env: { PATH: ROOT_PATH, HOME: '/root' }, extendEnv: false, reject: false })
    assert.equal(r.exitCode, 0, String(r.stderr))
    assert.equal(String(r.stdout).trim(), VERSION)
    assert.equal(String(r.stderr), '', 'no warnings')
  })

  test('contrib/systemd/msc.service is a valid unit for the msc set-up linked', async (t) => {
    if ((await execa('systemd-analyze', ['--version'], { reject: false })).exitCode !== 0) return t.skip('no systemd-analyze on this host')
    const unit = path.join(ROOT, 'contrib', 'systemd', 'msc.service')
    const r = await execa('systemd-analyze', ['verify', '--man=no', unit], { reject: false })
    assert.equal(r.exitCode, 0, `systemd-analyze verify: ${String(r.stderr)}`)
    const text = await fs.readFile(unit, 'utf8')
    for (const line of ['KillMode=process', 'Delegate=yes', 'Restart=on-failure', 'EnvironmentFile=-/etc/default/msc', 'ExecStart=/usr/local/bin/msc node start']) {
      assert.ok(text.split('\n').some((l) => l.startsWith(line)), `the unit has ${line}`)
    }
  })
})
