import type { Command } from 'commander'
import { ControlClient } from '../../api/client.ts'
import { resolveClientTarget } from '../../node/config.ts'

export interface TargetOpts { dataDir?: string, apiSocket?: string, json?: boolean }

/** Adds the options every client command shares: which node to talk to. */
export function withTarget (cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', 'data dir of the node to talk to (env MSC_DATA_DIR, DUMP_PATH; default /var/lib/msc)')
    .option('--api-socket <path>', 'API socket of the node (env MSC_API_SOCKET; default DATA_DIR/msc.sock)')
}

export function clientFor (opts: TargetOpts): ControlClient {
  return new ControlClient(resolveClientTarget(opts).apiSocket)
}

export function printJson (v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n')
}
