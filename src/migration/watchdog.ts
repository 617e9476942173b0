/** An AbortSignal that fires when nobody kicked it for `ms` (a stalled transfer). */
export class Watchdog {
  private readonly ac = new AbortController()
  private timer: NodeJS.Timeout
  private readonly ms: number
  readonly reason: string

  constructor (ms: number, reason: string) {
    this.ms = ms
    this.reason = reason
    this.timer = setTimeout(() => this.ac.abort(new Error(reason)), ms)
  }

  get signal (): AbortSignal {
    return this.ac.signal
  }

  kick (): void {
    clearTimeout(this.timer)
    if (!this.ac.signal.aborted) this.timer = setTimeout(() => this.ac.abort(new Error(this.reason)), this.ms)
  }

  stop (): void {
    clearTimeout(this.timer)
  }
}
