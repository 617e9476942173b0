/**
 * Client commands load only what they use: no libp2p, no runc/CRIU code, no daemon,
 * and `msc --version` not even the API client (its node:http import alone costs about
 * as much as starting Node). Start-up time itself is measured, as a ratio to
 * `node -e 0`, by benchmarks/cli-startup.ts; this checks the module graph behind it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'

const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)))
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts')

/** Prints every module URL the process loads, one per line on fd 3, as it exits. */
const HOOK = 'data:text/javascript,' + encodeURIComponent(`
import { registerHooks } from 'node:module'
import { writeSync } from 'node:fs'
const seen = []
registerHooks({ load (url, ctx, next) { seen.push(url); return next(url, ctx) } })
process.on('exit', () => writeSync(3, seen.join('\\n') + '\\n'))
`)

async function modulesLoadedBy (...args: string[]): Promise<string[]> {
  const r = await execa(process.execPath, ['--disable-warning=ExperimentalWarning', '--import', HOOK, MAIN, ...args], {
    reject: false,
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    env: { MSC_DATA_DIR: '', MSC_API_SOCKET: '' }
  })
  const loaded = String(r.stdio[3]).split('\n').filter(Boolean)
  assert.ok(loaded.some((u) => u.endsWith('/src/cli/main.ts')), `the hook saw the CLI start (exit ${r.exitCode}: ${String(r.stderr)})`)
  return loaded.map((u) => u.replace(`file://${ROOT}/`, ''))
}

/** Code a client command must never load. */
const HEAVY = [
  /node_modules\/(libp2p|@libp2p|@chainsafe|@multiformats|pino|execa)\//,
  /^src\/(overlay|runtime|migration|replication|failover|cluster|protocols|doctor|bundles)\//,
  /^src\/node\/(daemon|container-manager)/
]

function heavyIn (loaded: string[]): string[] {
  return loaded.filter((u) => HEAVY.some((re) => re.test(u)))
}

test('msc --version loads no command, no API client, no node:http', async () => {
  const loaded = await modulesLoadedBy('--version')
  assert.deepEqual(heavyIn(loaded), [])
  assert.deepEqual(loaded.filter((u) => u === 'node:http' || u.endsWith('src/api/client.ts') || u.startsWith('src/cli/commands/')), [])
})

test('msc ps and msc status load no libp2p, runc, CRIU or daemon code', async () => {
  const sock = path.join(ROOT, 'no-such-dir', 'msc.sock') // no node: the command fails, after loading what it needs
  for (const cmd of ['ps', 'status', 'logs']) {
    const args = cmd === 'logs' ? [cmd, 'x', '--api-socket', sock] : [cmd, '--api-socket', sock]
    const loaded = await modulesLoadedBy(...args)
    assert.ok(loaded.some((u) => u.endsWith('src/api/client.ts')), `${cmd} loaded the API client`)
    assert.deepEqual(heavyIn(loaded), [], `msc ${cmd}`)
    // Only the module that registers the command (and the shared helpers).
    assert.ok(!loaded.includes('src/cli/commands/peers.ts'), `msc ${cmd} did not load the peer commands`)
  }
})

test('msc --help lists every command without loading any of their code', async () => {
  const loaded = await modulesLoadedBy('--help')
  assert.deepEqual(heavyIn(loaded), [])
  assert.ok(loaded.includes('src/cli/commands/peers.ts') && loaded.includes('src/cli/commands/local.ts'), 'every command module, to list them')
})
