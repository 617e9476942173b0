/**
 * Manual control of testbeds (see README.md next to this file). Needs root.
 *
 *   node test/testbed/cli.ts up N [--name NAME]    create; prints the testbed as JSON
 *   node test/testbed/cli.ts down NAME             destroy (a missing NAME is fine)
 *   node test/testbed/cli.ts exec NAME HOST -- CMD [ARGS...]
 *   node test/testbed/cli.ts kill|cut|heal|crash NAME HOST
 *   node test/testbed/cli.ts ls                    recorded testbeds
 *   node test/testbed/cli.ts clean [--all]         remove stale testbeds (--all: every one)
 *
 * HOST is h2, 2 or the namespace name. Testbeds made by `up` are persistent: `clean`
 * keeps them (their creator, this script, exits at once); remove them with `down`.
 */
import { once } from 'node:events'
import { Testbed } from './testbed.ts'

const USAGE = `usage: node test/testbed/cli.ts <command>
  up N [--name NAME]            create N hosts; prints the testbed as JSON
  down NAME                     destroy the testbed (processes, namespaces, links, rules)
  exec NAME HOST -- CMD [ARG..] run CMD inside HOST's network namespace (stdio inherited)
  kill NAME HOST                SIGKILL every process in HOST
  cut NAME HOST                 drop HOST's traffic on the bridge (except ARP)
  heal NAME HOST                undo cut
  crash NAME HOST               cut, then kill
  ls                            list recorded testbeds
  clean [--all]                 remove testbeds whose creator died (--all: every one)
HOST is h2, 2 or the namespace name.`

function fail (msg: string): never {
  process.stderr.write(`${msg}\n`)
  process.exit(2)
}

async function main (argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  const need = (n: number): string[] => {
    if (rest.length < n) fail(USAGE)
    return rest
  }
  switch (cmd) {
    case 'up': {
      const count = Number(need(1)[0])
      const i = rest.indexOf('--name')
      const name = i >= 0 ? rest[i + 1] ?? fail('--name needs a value') : undefined
      const tb = await Testbed.create({ hosts: count, name, persistent: true })
      process.stdout.write(JSON.stringify(tb.state, null, 2) + '\n')
      return 0
    }
    case 'down': {
      // Idempotent, so that scripts can `trap '... down NAME' EXIT`.
      const name = need(1)[0]!
      if (!(await Testbed.list()).some((s) => s.name === name)) {
        process.stderr.write(`no testbed ${name}: nothing to do\n`)
        return 0
      }
      await (await Testbed.open(name)).destroy()
      return 0
    }
    case 'exec': {
      const sep = rest.indexOf('--')
      const [name, host] = rest
      if (sep !== 2 || name == null || host == null || rest[3] == null) fail(USAGE)
      const tb = await Testbed.open(name)
      const child = await tb.spawn(host, rest[3], rest.slice(4), { stdio: 'inherit' })
      const [code, signal] = await once(child, 'exit') as [number | null, NodeJS.Signals | null]
      return code ?? (signal != null ? 128 + (signalNumber(signal) ?? 1) : 1)
    }
    case 'kill':
    case 'cut':
    case 'heal':
    case 'crash': {
      const [name, host] = need(2)
      const tb = await Testbed.open(name!)
      await tb[cmd](tb.host(host!))
      return 0
    }
    case 'ls': {
      for (const s of await Testbed.list()) {
        const owner = s.owner == null ? 'persistent' : `pid ${s.owner.pid}${s.alive ? '' : ' (dead: stale)'}`
        process.stdout.write(`${s.name}\t${s.subnet}\t${s.bridge}\t${s.hosts.length} hosts\t${owner}\t${s.createdAt}\n`)
      }
      return 0
    }
    case 'clean': {
      const removed = await Testbed.destroyStale({ all: rest.includes('--all') })
      process.stdout.write(removed.length === 0 ? 'nothing to remove\n' : `removed: ${removed.join(' ')}\n`)
      return 0
    }
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(USAGE + '\n')
      return cmd === undefined ? 2 : 0
    default:
      fail(`unknown command ${cmd}\n${USAGE}`)
  }
}

function signalNumber (sig: NodeJS.Signals): number | undefined {
  const map: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 }
  return map[sig]
}

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
}
