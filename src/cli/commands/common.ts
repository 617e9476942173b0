import type { Command } from 'commander'
import type { ControlClient } from '../../api/client.ts'
import { MscError } from '../../util/errors.ts'
import { resolveClientTarget } from '../../node/config.ts'

export interface TargetOpts {
  dataDir?: string
  apiSocket?: string
  json?: boolean
}

/** Adds the options every client command shares: which node to talk to. */
export function withTarget (cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', 'data dir of the node to talk to (env MSC_DATA_DIR, DUMP_PATH; default /var/lib/msc)')
    .option('--api-socket <path>', 'API socket of the node (env MSC_API_SOCKET; default DATA_DIR/msc.sock)')
}

/**
 * The client is loaded when a command runs, not when the program is built: it brings
 * node:http, whose ESM import alone costs about as much as starting Node (it loads
 * undici, http2 and tls for its lazy WebSocket exports), and `msc --version` or
 * `msc help` need none of it.
 */
export async function clientFor (opts: TargetOpts): Promise<ControlClient> {
  const { ControlClient } = await import('../../api/client.ts')
  return new ControlClient(resolveClientTarget(opts).apiSocket)
}

export function printJson (v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n')
}

/**
 * Peer id to member name, from the node's persisted member list, to show peers by name.
 * Best effort: an empty map if the node does not answer (the command's own request
 * reports that).
 */
export async function memberNames (client: ControlClient): Promise<Map<string, string>> {
  try {
    return new Map((await client.cluster()).members.map((m) => [m.peerId, m.name]))
  } catch {
    return new Map()
  }
}

/** `--replicas N`: standbys for a new container, 0 to 8. */
export function parseReplicas (raw: string): number {
  const n = /^\d{1,2}$/.test(raw.trim()) ? Number(raw.trim()) : NaN
  if (!(n >= 0 && n <= 8)) throw new MscError('INVALID_ARGUMENT', `--replicas: a whole number from 0 (no standby, no failover) to 8, got "${raw}"`)
  return n
}
