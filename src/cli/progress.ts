/** A one-line progress display for a TTY: phase, bytes, MB/s, ETA; redrawn in place. */
export class ProgressLine {
  private readonly out: NodeJS.WriteStream
  private readonly started = Date.now()
  private last = 0

  constructor (out: NodeJS.WriteStream) {
    this.out = out
  }

  update (phase: string, bytes: number, total: number): void {
    const now = Date.now()
    if (now - this.last < 100) return
    this.last = now
    const secs = (now - this.started) / 1000
    const mbps = secs > 0 ? bytes / 1e6 / secs : 0
    const frac = total > 0 ? Math.min(1, bytes / total) : 0
    const width = 24
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.')
    const eta = mbps > 0 && total > bytes ? `${Math.ceil((total - bytes) / 1e6 / mbps)}s` : '-'
    this.out.write(`\r${phase.padEnd(12)} [${bar}] ${(bytes / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB ${mbps.toFixed(1)} MB/s ETA ${eta}   `)
  }

  done (): void {
    this.out.write('\r' + ' '.repeat(90) + '\r')
  }
}
