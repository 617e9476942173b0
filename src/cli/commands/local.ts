import path from 'node:path'
import { Option, type Command } from 'commander'
import { MscError } from '../../util/errors.ts'
import { printJson } from './common.ts'
import { resolveSome } from '../../node/config.ts'

/** Commands that work on this host without a node: bundle, doctor. */
export function registerLocalCommands (program: Command): void {
  program.command('bundle')
    .description('write an example OCI bundle: counter (prints 1, 2, 3, ... every second) or redis')
    .addArgument(program.createArgument('<kind>', 'counter | redis').choices(['counter', 'redis']))
    .argument('<dir>', 'directory to write config.json and rootfs/ into')
    .option('--force', 'replace config.json and rootfs/ if the directory is not empty')
    .option('--port <port>', 'redis: TCP port to listen on', '6379')
    .option('--bind <addr>', 'redis: address to bind', '0.0.0.0')
    .option('--interval-ms <ms>', 'counter: milliseconds between numbers', '1000')
    .option('--json', 'print the result as JSON')
    .action(async (kind: string, dir: string, opts: { force?: boolean; port: string; bind: string; intervalMs: string; json?: boolean }) => {
      const { isBundleKind, writeExampleBundle } = await import('../../bundles/index.ts')
      if (!isBundleKind(kind)) throw new MscError('INVALID_ARGUMENT', `unknown bundle kind ${kind}`)
      const port = Number(opts.port)
      const intervalMs = Number(opts.intervalMs)
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new MscError('INVALID_ARGUMENT', `--port: not a TCP port: ${opts.port}`)
      if (!Number.isInteger(intervalMs) || intervalMs < 10) throw new MscError('INVALID_ARGUMENT', `--interval-ms: expected a whole number >= 10, got ${opts.intervalMs}`)
      const info = await writeExampleBundle(kind, path.resolve(dir), { force: opts.force === true, port, bind: opts.bind, intervalMs })
      if (opts.json === true) printJson(info)
      else process.stdout.write(`${kind} bundle written to ${info.dir}\n`)
    })

  program.command('doctor')
    .description('check what this host can do: runc, CRIU, and the kernel features migration strategies need')
    .option('--runc <path>', 'runc binary (env MSC_RUNC)')
    .option('--criu <path>', 'CRIU binary (env MSC_CRIU)')
    .option('--json', 'print the report as JSON (schema in docs/doctor.md)')
    .addOption(new Option('--timeout <ms>', 'give up after this long').default('60000'))
    .action(async (opts: { runc?: string; criu?: string; json?: boolean; timeout: string }) => {
      const { runDoctor } = await import('../../doctor/checks.ts')
      const { renderDoctorTable } = await import('../../doctor/render.ts')
      const timeout = Number(opts.timeout)
      if (!Number.isInteger(timeout) || timeout < 1) throw new MscError('INVALID_ARGUMENT', `--timeout: expected milliseconds, got ${opts.timeout}`)
      const cfg = resolveSome(['runcPath', 'criuPath'], { runcPath: opts.runc, criuPath: opts.criu })
      const report = await runDoctor({ runcPath: cfg.runcPath, criuPath: cfg.criuPath, signal: AbortSignal.timeout(timeout) })
      if (opts.json === true) printJson(report)
      else process.stdout.write(renderDoctorTable(report, process.stdout.isTTY === true) + '\n')
      if (!report.ok) process.exitCode = 1
    })
}
