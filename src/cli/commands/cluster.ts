import type { Command } from 'commander'
import { MscError } from '../../util/errors.ts'
import { clientFor, printJson, withTarget, type TargetOpts } from './common.ts'
import { ago, escapeControl, table } from '../render.ts'
import type { ClusterInfo } from '../../api/types.ts'

/** `1h`, `30m`, `90s`, `2d` or plain seconds, in ms. */
export function parseTtl (raw: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(raw.trim())
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
  const ms = m == null ? NaN : Number(m[1]) * unit[(m[2] ?? 's') as keyof typeof unit]
  if (!Number.isSafeInteger(ms) || ms < 1000 || ms > 30 * 86_400_000) throw new MscError('INVALID_ARGUMENT', `--ttl: a duration from 1s to 30d, like 1h or 90m, got "${raw}"`)
  return ms
}

/** msc cluster token, msc cluster ls, msc peer rm. */
export function registerClusterCommands (program: Command, peer: Command): void {
  const cluster = program.command('cluster').description('the cluster this node belongs to: members, join tokens')

  withTarget(cluster.command('token')
    .description('print a one-time join token: start a new node with `msc node start --join TOKEN`')
    .option('--ttl <duration>', 'how long the token stays valid (e.g. 10m, 1h, 2d)', '1h')
    .option('--json', 'print { token, cluster, expiresAt }'))
    .action(async (opts: TargetOpts & { ttl: string }) => {
      const t = await (await clientFor(opts)).clusterToken(parseTtl(opts.ttl))
      if (opts.json === true) printJson(t)
      else process.stdout.write(t.token + '\n')
    })

  withTarget(cluster.command('ls')
    .description('the persisted member list: who was admitted, when and by whom')
    .option('--json', 'print as JSON (schema in docs/cli.md)'))
    .action(async (opts: TargetOpts) => {
      const info = await (await clientFor(opts)).cluster()
      if (opts.json === true) printJson(info)
      else process.stdout.write(clusterTable(info) + '\n')
    })

  withTarget(peer.command('rm')
    .description('remove a member from the cluster for good (peer id or unique member name): its connections are closed, its claims dropped, its identity refused from then on')
    .argument('<peer>')
    .option('--json', 'print { peerId, name }'))
    .action(async (who: string, opts: TargetOpts) => {
      const r = await (await clientFor(opts)).removePeer(who)
      if (opts.json === true) printJson(r)
      else process.stdout.write(`removed ${escapeControl(r.name)} (${r.peerId}) from the cluster\n`)
    })
}

export function clusterTable (c: ClusterInfo): string {
  const nameOf = new Map(c.members.map((m) => [m.peerId, m.name]))
  const by = (m: ClusterInfo['members'][number]): string => m.admittedBy === 'key' ? 'key file' : m.admittedBy === m.peerId ? 'created the cluster' : nameOf.get(m.admittedBy) ?? m.admittedBy
  const rows = c.members.map((m) => [m.name + (m.self ? ' (this node)' : ''), m.peerId, m.state, ago(m.admittedAt), by(m)])
  for (const x of c.conflicts) rows.push([x.name, x.peerId, `refused: name held by ${x.heldBy}`, '-', '-'])
  return `cluster ${c.id} (${c.mode === 'key' ? 'key file' : 'join tokens'}), ${c.members.length} member(s)\n` +
    table(['NAME', 'PEER ID', 'STATE', 'ADMITTED', 'BY'], rows)
}
