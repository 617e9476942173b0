import { Command, Option, CommanderError } from 'commander'
import { MscError, toMscError } from '../util/errors.ts'
import { VERSION } from '../version.ts'
import { registerContainerCommands } from './commands/containers.ts'
import { registerNodeCommands } from './commands/node.ts'
import { registerLocalCommands } from './commands/local.ts'
import { registerPeerCommands } from './commands/peers.ts'
import { registerEventCommands } from './commands/events.ts'
import { escapeControl } from './render.ts'

/**
 * msc's command line. Commands talk to a node through its control API (api/client.ts);
 * only `node start`, `bundle` and `doctor` work without one.
 *
 * Exit codes: 0 ok, 1 the operation failed, 2 bad usage or arguments, 3 no node reachable.
 */
export function buildProgram (): Command {
  const program = new Command('msc')
    .description('Live migration and failover of runc containers between peer-to-peer nodes')
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(run msc --help for usage)')
    .exitOverride()
    // Usage errors in the same one-line form as every other error.
    .configureOutput({ outputError: (str, write) => write(`msc: ${str.replace(/^error: /, '')}`) })
  registerNodeCommands(program)
  registerContainerCommands(program)
  registerPeerCommands(program)
  registerEventCommands(program)
  registerLocalCommands(program)
  return program
}

export function exitCodeOf (err: MscError): number {
  if (err.code === 'INVALID_ARGUMENT' || err.code === 'INVALID_BUNDLE') return 2
  if (err.code === 'DAEMON_UNREACHABLE') return 3
  return 1
}

/** Prints an error: one line of reason, then any detail lines indented. */
export function reportError (err: unknown, json: boolean): number {
  const e = toMscError(err)
  if (json) process.stdout.write(JSON.stringify({ ok: false, error: e.toJSON() }) + '\n')
  // Messages may quote what a peer said (a refusal's reason): never raw to a terminal.
  process.stderr.write(`msc: ${escapeControl(e.message)}\n`)
  for (const d of e.details) process.stderr.write(`  ${escapeControl(d)}\n`)
  return exitCodeOf(e)
}

async function main (argv: string[]): Promise<void> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2
      return
    }
    process.exitCode = reportError(err, argv.includes('--json'))
    // A failed command must end even if something it started still holds the event
    // loop (a child process, a socket): the error is reported, nothing is left to do.
    setTimeout(() => process.exit(), 3000).unref()
  }
}

export { Option }
await main(process.argv)
