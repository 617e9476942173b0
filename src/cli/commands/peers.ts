import type { Command } from 'commander'
import { clientFor, printJson, withTarget, type TargetOpts } from './common.ts'
import { peersTable } from '../render.ts'

/** msc peer ls, msc peer join / msc join, msc keygen psk. */
export function registerPeerCommands (program: Command): void {
  const peer = program.command('peer').description('the cluster: peers, joining (and, next, migration)')

  withTarget(peer.command('ls')
    .description('list the peers this node knows: id, name, addresses, state, last heard, containers')
    .option('--json', 'print a JSON array (schema in docs/cli.md)'))
    .action(async (opts: TargetOpts) => {
      const list = await clientFor(opts).peers()
      if (opts.json === true) printJson(list)
      else process.stdout.write(peersTable(list) + '\n')
    })

  const joinAction = async (addr: string, opts: TargetOpts): Promise<void> => {
    const r = await clientFor(opts).join(addr)
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
