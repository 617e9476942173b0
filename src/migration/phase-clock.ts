import type { Logger } from '../util/logger.ts'
import type { Phase } from './messages.ts'

export interface Progress {
  phase: Phase
  bytes: number
  totalBytes: number
}

/**
 * Times the named phases of one migration (each logged when it ends) and carries the
 * byte progress a CLI can show. Phases may repeat (pre-copy rounds): times add up.
 */
export class PhaseClock {
  readonly started = Date.now()
  readonly phases: Partial<Record<Phase, number>> = {}
  private current: { phase: Phase; at: number } | null = null
  private readonly log: Logger
  private readonly onProgress?: (p: Progress) => void
  private bytes = 0
  private totalBytes = 0

  constructor (log: Logger, onProgress?: (p: Progress) => void) {
    this.log = log
    this.onProgress = onProgress
  }

  enter (phase: Phase): void {
    this.end()
    this.current = { phase, at: Date.now() }
    this.log.info({ phase }, `phase ${phase}`)
    this.report()
  }

  end (): void {
    if (this.current == null) return
    const ms = Date.now() - this.current.at
    this.phases[this.current.phase] = (this.phases[this.current.phase] ?? 0) + ms
    this.log.debug({ phase: this.current.phase, ms }, 'phase done')
    this.current = null
  }

  get phase (): Phase | null {
    return this.current?.phase ?? null
  }

  addTotal (n: number): void {
    this.totalBytes += n
    this.report()
  }
  /** `n` more bytes went out (several transfers may run at once: each adds its own). */
  sent (n: number): void {
    this.bytes += n
    this.report()
  }

  private report (): void {
    if (this.current != null) this.onProgress?.({ phase: this.current.phase, bytes: this.bytes, totalBytes: this.totalBytes })
  }

  totalMs (): number {
    return Date.now() - this.started
  }
}
