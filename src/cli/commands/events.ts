import type { Command } from 'commander'
import type { NodeEvent } from '../../api/types.ts'
import { clientFor, memberNames, withTarget, type TargetOpts } from './common.ts'
import { eventLine } from '../render.ts'

/** `msc events`: the node's replication, lease and failover events, as they happen. */
export function registerEventCommands (program: Command): void {
  withTarget(program.command('events')
    .description("print the node's replication, lease and failover events as they happen (those it kept first)")
    .option('-f, --follow', 'keep printing new events until interrupted (the default)')
    .option('--no-follow', 'print the events the node kept so far, then end')
    .option('--json', 'print each event as one JSON line (NDJSON, schema in docs/cli.md)'))
    .action(async (opts: TargetOpts & { follow?: boolean }) => {
      const follow = opts.follow !== false
      const ac = new AbortController()
      const onSig = (): void => ac.abort()
      process.once('SIGINT', onSig)
      process.once('SIGTERM', onSig)
      // A reader that went away (`msc events | head`) ends the command, quietly.
      const onOutErr = (): void => ac.abort()
      process.stdout.on('error', onOutErr)
      try {
        const client = await clientFor(opts)
        const { ndjsonLines } = await import('../../api/client.ts')
        const [res, names] = await Promise.all([
          client.events(follow, ac.signal),
          opts.json === true ? new Map<string, string>() : memberNames(client)
        ])
        try {
          for await (const line of ndjsonLines(res)) {
            let e: NodeEvent
            try {
              e = JSON.parse(line) as NodeEvent
            } catch {
              continue // not an event: nothing a program reading NDJSON could use either
            }
            if (e == null || typeof e !== 'object' || Array.isArray(e)) continue
            // --json: the line as the node sent it, one NodeEvent per line.
            process.stdout.write((opts.json === true ? line : eventLine(e, names)) + '\n')
          }
        } catch (err) {
          // A connection that breaks mid-stream is the node going away (stopped, crashed):
          // the same end as a node that closes the stream as it stops.
          const broken = (err as NodeJS.ErrnoException).code === 'ECONNRESET' || (err as Error).message === 'aborted'
          if (!broken) throw err
        }
        if (follow && !ac.signal.aborted) process.stderr.write('msc: the node ended the event stream (it stopped)\n')
      } catch (err) {
        if (!ac.signal.aborted) throw err
      } finally {
        process.off('SIGINT', onSig)
        process.off('SIGTERM', onSig)
        process.stdout.off('error', onOutErr)
      }
    })
}
