import type { Command } from 'commander'
import { clientFor, parseReplicas, printJson, withTarget, type TargetOpts } from './common.ts'
import { parseLanAddress } from '../../network/lan-address.ts'
import { MscError } from '../../util/errors.ts'
import { checkpointsTable, containersTable, containerText, bytes } from '../render.ts'

/** run, ps, inspect, logs, stop, rm, checkpoint, checkpoints, restore: each one API call. */
export function registerContainerCommands (program: Command): void {
  withTarget(program.command('run')
    .description('start a container from an OCI bundle (config.json + rootfs)')
    .argument('<name>', 'container name, unique on the node')
    .argument('<bundle>', 'OCI bundle directory')
    .option('--replicas <n>', "standbys that keep a copy of it for failover, 0 to 8 (default: the node's --default-replicas, 1 unless set)")
    .option('--network <mode>', "host (default: the node's network) or lan (an address of its own on the node's LAN, kept across migrations)")
    .option('--ip <addr/prefix>', "with --network lan: the address, e.g. 192.168.1.50/24 (in the subnet of the node's --lan-interface)")
    .option('--json', 'print the container as JSON'))
    .action(async (name: string, bundle: string, opts: TargetOpts & { replicas?: string; network?: string; ip?: string }) => {
      // Checked here, before any request: a bad value never reaches the node.
      const replicas = opts.replicas == null ? undefined : parseReplicas(opts.replicas)
      const network = parseNetworkOption(opts.network, opts.ip)
      const { resolve } = await import('node:path')
      const c = await (await clientFor(opts)).run(name, resolve(bundle), replicas, { network, ip: opts.ip })
      if (opts.json === true) printJson(c)
      else process.stdout.write(`${c.name} running (pid ${c.pid})${c.network != null ? `, address ${c.network.address}/${c.network.prefix}` : ''}${c.replicas == null || c.replicas === 0 ? '' : `, replicas: ${c.replicas}`}\n`)
    })

  withTarget(program.command('ps')
    .description("list the node's containers")
    .option('--json', 'print a JSON array (schema in docs/cli.md)'))
    .action(async (opts: TargetOpts) => {
      const list = await (await clientFor(opts)).list()
      if (opts.json === true) printJson(list)
      else process.stdout.write(containersTable(list) + '\n')
    })

  withTarget(program.command('inspect')
    .description('show one container: state, epoch, replicas, and its standbys and RPO if this node replicates it')
    .argument('<name>')
    .option('--json', 'print the container as JSON (schema in docs/cli.md)'))
    .action(async (name: string, opts: TargetOpts) => {
      const c = await (await clientFor(opts)).inspect(name)
      if (opts.json === true) printJson(c)
      else process.stdout.write(containerText(c) + '\n')
    })

  withTarget(program.command('logs')
    .description("print a container's output so far")
    .argument('<name>')
    .option('-f, --follow', 'keep printing new output until interrupted'))
    .action(async (name: string, opts: TargetOpts & { follow?: boolean }) => {
      const ac = new AbortController()
      const onSig = (): void => ac.abort()
      process.once('SIGINT', onSig)
      process.once('SIGTERM', onSig)
      try {
        const res = await (await clientFor(opts)).logs(name, opts.follow === true, ac.signal)
        for await (const chunk of res) process.stdout.write(chunk as Buffer)
      } catch (err) {
        if (!ac.signal.aborted) throw err
      } finally {
        process.off('SIGINT', onSig)
        process.off('SIGTERM', onSig)
      }
    })

  withTarget(program.command('stop')
    .description("stop a running container (SIGTERM, then SIGKILL after the node's stop timeout)")
    .argument('<name>')
    .option('--json', 'print the container as JSON'))
    .action(async (name: string, opts: TargetOpts) => {
      const c = await (await clientFor(opts)).stop(name)
      if (opts.json === true) printJson(c)
      else process.stdout.write(`${c.name} stopped\n`)
    })

  withTarget(program.command('rm')
    .description('remove a stopped container with its checkpoints and logs')
    .argument('<name>')
    .option('--force', 'stop it first if it runs')
    .option('--json', 'print the result as JSON'))
    .action(async (name: string, opts: TargetOpts & { force?: boolean }) => {
      const r = await (await clientFor(opts)).remove(name, opts.force === true)
      if (opts.json === true) printJson(r)
      else process.stdout.write(`${name} removed\n`)
    })

  withTarget(program.command('checkpoint')
    .description('checkpoint a running container with CRIU (it keeps running unless --stop)')
    .argument('<name>')
    .option('--stop', 'stop the container once its checkpoint is written')
    .option('--json', 'print the checkpoint as JSON'))
    .action(async (name: string, opts: TargetOpts & { stop?: boolean }) => {
      const cp = await (await clientFor(opts)).checkpoint(name, opts.stop === true)
      if (opts.json === true) printJson(cp)
      else process.stdout.write(`${cp.id}  ${bytes(cp.sizeBytes)} in ${cp.durationMs} ms${cp.leftRunning ? '' : ', container stopped'}\n`)
    })

  withTarget(program.command('checkpoints')
    .description("list a container's checkpoints, oldest first")
    .argument('<name>')
    .option('--json', 'print a JSON array'))
    .action(async (name: string, opts: TargetOpts) => {
      const list = await (await clientFor(opts)).checkpoints(name)
      if (opts.json === true) printJson(list)
      else process.stdout.write(checkpointsTable(list) + '\n')
    })

  withTarget(program.command('restore')
    .description('bring a stopped container back from a checkpoint (the latest unless --from)')
    .argument('<name>')
    .option('--from <checkpoint>', 'checkpoint id (see msc checkpoints NAME)')
    .option('--json', 'print the container as JSON'))
    .action(async (name: string, opts: TargetOpts & { from?: string }) => {
      const c = await (await clientFor(opts)).restore(name, opts.from)
      if (opts.json === true) printJson(c)
      else process.stdout.write(`${c.name} restored (pid ${c.pid})\n`)
    })
}

/** `--network` and `--ip` as given: the mode to ask for, the address checked for its form. */
function parseNetworkOption (network: string | undefined, ip: string | undefined): 'host' | 'lan' | undefined {
  if (network == null) {
    if (ip != null) throw new MscError('INVALID_ARGUMENT', '--ip needs --network lan')
    return undefined
  }
  if (network !== 'host' && network !== 'lan') throw new MscError('INVALID_ARGUMENT', `--network: expected host or lan, got "${network}"`)
  if (network === 'lan') {
    if (ip == null) throw new MscError('INVALID_ARGUMENT', '--network lan needs --ip ADDR/PREFIX')
    parseLanAddress(ip)
  } else if (ip != null) throw new MscError('INVALID_ARGUMENT', '--ip needs --network lan')
  return network
}
