import type { Command } from 'commander'
import { NODE_OPTIONS, resolveNodeConfig, type NodeOptionKey, type OptionSpec } from '../../node/config.ts'
import { clientFor, memberNames, printJson, withTarget, type TargetOpts } from './common.ts'
import { statusText } from '../render.ts'

export function flagAttribute (flag: string): string {
  return flag.replace(/^--(no-)?/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
}

/** `msc node start` (the daemon, in the foreground) and `msc status`. */
export function registerNodeCommands (program: Command): void {
  const node = program.command('node').description('run an msc node (the daemon)')
  const start = node.command('start')
    .description('run a node in the foreground until SIGTERM or SIGINT')
  for (const spec of Object.values(NODE_OPTIONS) as OptionSpec<unknown>[]) {
    const envs = spec.env.length > 0 ? ` (env ${spec.env.join(', ')})` : ''
    const help = `${spec.description}${envs} [default: ${spec.defaultText}]`
    if (spec.kind === 'flag' || spec.kind === 'negated') start.option(spec.flag, help)
    else if (spec.kind === 'list') start.option(`${spec.flag} <addr>`, help, (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    else start.option(`${spec.flag} <value>`, help)
  }
  start.action(async (opts: Record<string, string | boolean | undefined>) => {
    const flags: Partial<Record<NodeOptionKey, string | boolean | undefined>> = {}
    // Commander names each value after its flag (--stop-timeout -> stopTimeout), not
    // after the option's key (stopTimeoutMs): map through the flag.
    for (const [key, s] of Object.entries(NODE_OPTIONS)) {
      const spec = s as OptionSpec<unknown>
      const v = opts[flagAttribute(spec.flag)] as string | boolean | string[] | undefined
      if (spec.kind === 'negated') flags[key as NodeOptionKey] = v === false ? 'false' : undefined // commander defaults --no-x to true
      else if (Array.isArray(v)) flags[key as NodeOptionKey] = v.join(',')
      else flags[key as NodeOptionKey] = v
    }
    const config = resolveNodeConfig(flags)
    // Loaded here, not at the top: every other command starts faster without them.
    const { createLogger } = await import('../../util/logger.ts')
    const { MscNode } = await import('../../node/daemon.ts')
    const logger = createLogger(config.logLevel, { pretty: config.logFormat === 'pretty' })
    const n = new MscNode(config, logger)
    await n.start()
    await new Promise<void>((resolve) => {
      let stopping = false
      const onSignal = (sig: string): void => {
        if (stopping) return
        stopping = true
        logger.info({ signal: sig }, 'stopping')
        n.stop().catch((err) => logger.error({ err }, 'stop failed')).finally(resolve)
      }
      process.on('SIGTERM', () => onSignal('SIGTERM'))
      process.on('SIGINT', () => onSignal('SIGINT'))
    })
    logger.flush?.()
  })

  withTarget(program.command('status')
    .description('show this node: version, data dir, runtime, containers, cluster, failover')
    .option('--json', 'print as JSON'))
    .action(async (opts: TargetOpts) => {
      const client = await clientFor(opts)
      if (opts.json === true) {
        printJson(await client.status())
        return
      }
      const [s, names] = await Promise.all([client.status(), memberNames(client)])
      process.stdout.write(statusText(s, names) + '\n')
    })
}
