/**
 * The driver of a client process on a testbed host (test/helpers/lan-client.ts run
 * there with Testbed.spawn): the lines it printed, waiting for one, its report, and a
 * reset of its longest gap. Shared by the lan-address test and the client-downtime
 * benchmark.
 */
import type { ChildProcess } from 'node:child_process'
import readline from 'node:readline'

export interface ClientReport {
  pings: number
  errors: string[]
  maxGapMs: number
  maxGapAt: number
  closed: boolean
  reconnects: number
}

/** The client on h3: its process, the lines it printed, and a way to ask for its report. */
export class ClientProcess {
  readonly lines: string[] = []
  private readonly waiters: Array<() => void> = []
  readonly proc: ChildProcess
  constructor (proc: ChildProcess) {
    this.proc = proc
    readline.createInterface({ input: proc.stdout! }).on('line', (l) => {
      this.lines.push(l)
      for (const w of this.waiters.splice(0)) w()
    })
  }

  async waitLine (test: (l: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const l = this.lines.find(test)
      if (l != null) return l
      if (Date.now() > deadline) throw new Error(`client: no ${what} within ${timeoutMs} ms; it printed: ${this.lines.slice(-10).join(' | ')}`)
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve)
        setTimeout(resolve, 200)
      })
    }
  }

  async report (): Promise<ClientReport> {
    const before = this.lines.length
    this.proc.stdin!.write('report\n')
    const deadline = Date.now() + 5_000
    while (Date.now() < deadline) {
      const l = this.lines.slice(before).find((x) => x.startsWith('{'))
      if (l != null) return JSON.parse(l) as ClientReport
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    throw new Error('client: no report')
  }

  async resetGap (): Promise<void> {
    this.proc.stdin!.write('reset\n')
    await this.waitLine((l) => l === 'reset-done', 5_000, 'reset')
    this.lines.splice(this.lines.indexOf('reset-done'), 1)
  }
}
