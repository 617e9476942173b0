import { pino, type Logger, type LevelWithSilent } from 'pino'

export type { Logger }

/**
 * The process-wide root logger. Components take a child (`logger.child({ component })`)
 * handed to them, so every line says which component wrote it.
 * Human-readable (pino-pretty) on a TTY, JSON lines otherwise.
 */
export function createLogger (level: LevelWithSilent = 'info', opts: { pretty?: boolean; destination?: number } = {}): Logger {
  const pretty = opts.pretty ?? process.stderr.isTTY === true
  const dest = opts.destination ?? 2
  if (pretty) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: dest, colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } }
    })
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest, sync: true }))
}

export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
