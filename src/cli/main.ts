import { Command, Option, CommanderError } from 'commander'
import { type MscError, toMscError } from '../util/errors.ts'
import { VERSION } from '../version.ts'
import { escapeControl } from './render.ts'

type Register = (program: Command) => void

/**
 * The command modules, by the top-level commands each registers. A command line that
 * names one loads only its module (start-up time is what a shell loop over `msc ps`
 * pays per call); help, no command or an unknown one load them all.
 */
const COMMAND_GROUPS: Array<[string[], () => Promise<Register>]> = [
  [['node', 'status'], async () => (await import('./commands/node.ts')).registerNodeCommands],
  [['run', 'ps', 'inspect', 'logs', 'stop', 'rm', 'checkpoint', 'checkpoints', 'restore'], async () => (await import('./commands/containers.ts')).registerContainerCommands],
  [['peer', 'join', 'migrate', 'keygen', 'cluster'], async () => (await import('./commands/peers.ts')).registerPeerCommands],
  [['events'], async () => (await import('./commands/events.ts')).registerEventCommands],
  [['bundle', 'doctor'], async () => (await import('./commands/local.ts')).registerLocalCommands]
]

/**
 * msc's command line. Commands talk to a node through its control API (api/client.ts);
 * only `node start`, `bundle` and `doctor` work without one.
 *
 * Exit codes: 0 ok, 1 the operation failed, 2 bad usage or arguments, 3 no node reachable.
 */
export async function buildProgram (argv: string[] = []): Promise<Command> {
  const program = new Command('msc')
    .description('Live migration and failover of runc containers between peer-to-peer nodes')
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(run msc --help for usage)')
    .exitOverride()
    // Usage errors in the same one-line form as every other error.
    .configureOutput({ outputError: (str, write) => write(`msc: ${str.replace(/^error: /, '')}`) })
  const args = argv.slice(2)
  const named = args.find((a) => !a.startsWith('-'))
  const versionOnly = named == null && (args.includes('-V') || args.includes('--version')) && !args.includes('-h') && !args.includes('--help')
  const groups = versionOnly ? [] : COMMAND_GROUPS.filter(([commands]) => named != null && commands.includes(named))
  for (const [, load] of groups.length > 0 || versionOnly ? groups : COMMAND_GROUPS) (await load())(program)
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
  const program = await buildProgram(argv)
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
