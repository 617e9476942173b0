import { Option, type Command } from 'commander'
import { MscError, type MscErrorCode } from '../../util/errors.ts'
import { clientFor, printJson, withTarget, type TargetOpts } from './common.ts'
import { peersTable, bytes, escapeControl } from '../render.ts'
import type { MigrationResultInfo } from '../../api/types.ts'
import { registerClusterCommands } from './cluster.ts'

/** msc peer ls, msc peer join / msc join, msc keygen psk. */
export function registerPeerCommands (program: Command): void {
  const peer = program.command('peer').description("the cluster's nodes: list, connect, remove, migrate to")
  registerClusterCommands(program, peer)

  withTarget(peer.command('ls')
    .description('list the peers this node knows: id, name, addresses, state, last heard, containers')
    .option('--json', 'print a JSON array (schema in docs/cli.md)'))
    .action(async (opts: TargetOpts) => {
      const list = await (await clientFor(opts)).peers()
      if (opts.json === true) printJson(list)
      else process.stdout.write(peersTable(list) + '\n')
    })

  const joinAction = async (addr: string, opts: TargetOpts): Promise<void> => {
    const r = await (await clientFor(opts)).join(addr)
    if (opts.json === true) printJson(r)
    else process.stdout.write(`connected to ${r.peerId}; membership follows within a heartbeat\n`)
  }
  for (const cmd of [peer.command('join'), program.command('join')]) {
    withTarget(cmd
      .description('connect this node to a member of another cluster view: /ip4/ADDR/tcp/PORT/p2p/PEER_ID')
      .argument('<multiaddr>')
      .option('--json', 'print the result as JSON'))
      .action(joinAction)
  }

  const migrateAction = async (name: string, opts: TargetOpts & { to?: string; strategy: string; dataChannel: boolean; streamPages: boolean }): Promise<void> => {
    const { ProgressLine } = await import('../progress.ts')
    const bar = opts.json !== true && process.stderr.isTTY === true ? new ProgressLine(process.stderr) : null
    const r = await (await clientFor(opts)).migrate(name, { to: opts.to, strategy: opts.strategy as 'auto', ...(opts.dataChannel === false ? { dataChannel: false } : {}), ...(opts.streamPages === false ? { streamPages: false } : {}) },
      (e) => {
        if (e.type === 'progress') bar?.update(e.phase, e.bytes, e.totalBytes)
      })
    bar?.done()
    if (opts.json === true) {
      // Exactly one JSON document on stdout, the result (ok: false on failure); the
      // reason goes to stderr and the exit status says it failed.
      printJson(r)
      if (!r.ok) {
        process.stderr.write(`msc: ${escapeControl(failureMessage(r))}\n`)
        for (const d of r.error?.details ?? []) process.stderr.write(`  ${escapeControl(d)}\n`)
        process.exitCode = r.error?.code === 'INVALID_ARGUMENT' ? 2 : 1
      }
      return
    }
    if (r.ok) {
      const phases = Object.entries(r.phases).map(([k, v]) => `${k} ${v} ms`).join(', ')
      process.stdout.write(
        `${r.container} migrated ${escapeControl(r.fromName)} -> ${escapeControl(r.toName)} (${r.strategy}): downtime ${r.downtimeMs} ms, total ${r.totalMs} ms, ${bytes(r.bytes)}${
          r.goodputMBps != null ? ` at ${r.goodputMBps} MB/s` : ''
        }\n  ${phases}\n`
      )
    }
    if (!r.ok) throw new MscError((r.error?.code ?? 'RUNTIME_ERROR') as MscErrorCode, failureMessage(r), r.error?.details ?? [])
  }
  const failureMessage = (r: MigrationResultInfo): string => {
    const where = r.runningOn == null ? '' : r.runningOn === r.from ? ` (${r.container} still runs on ${r.fromName})` : ` (${r.container} runs on ${r.toName})`
    return `migration of ${r.container} failed: ${r.error?.message ?? 'unknown error'}${where}`
  }
  for (const cmd of [peer.command('migrate'), program.command('migrate')]) {
    withTarget(cmd
      .description('move a running container to another node; it goes on from where it was')
      .argument('<name>', 'container name')
      .option('--to <peer>', 'target peer id or node name (default: an alive peer with room)')
      .addOption(new Option('--strategy <s>', 'stop-copy | post-copy | pre-copy | auto (the fastest both nodes support)').choices(['auto', 'stop-copy', 'post-copy', 'pre-copy']).default('auto'))
      .option('--no-data-channel', 'send the trees over libp2p (/msc/image), not the sealed data channel')
      .option('--no-stream-pages', 'the pages go the old way: stop-copy dumps them here and sends them after the dump, post-copy fetches them over libp2p')
      .option('--json', 'print one result object (schema in docs/cli.md)'))
      .action(migrateAction)
  }

  program.command('keygen')
    .description('write a key: `msc keygen psk FILE` makes a private-cluster pre-shared key (mode 0600)')
    .addArgument(program.createArgument('<kind>', 'psk').choices(['psk']))
    .argument('<file>')
    .action(async (_kind: string, file: string) => {
      const { writePskFile } = await import('../../overlay/psk.ts')
      await writePskFile(file)
      process.stdout.write(`pre-shared key written to ${file}: give every node of the cluster a copy (--psk ${file})\n`)
    })
}
