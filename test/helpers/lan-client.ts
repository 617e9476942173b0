/**
 * A redis client as an application on another host would be, run there as its own
 * process (Testbed.spawn: `node lan-client.ts HOST PORT`):
 *   - ONE connection sends PING every 5 ms, one at a time, for as long as it runs,
 *     and records every error and the longest gap between two answers;
 *   - a second connection is subscribed to channel `ch` and prints each message.
 * It prints `ready` once both connections are up, `message TEXT` per message, and on
 * a line `report` on stdin one JSON line: { pings, errors, maxGapMs, maxGapAt, closed,
 * reconnects }. A lost connection is never re-made: what the client sees is what an
 * application holding one connection would.
 *
 * `node lan-client.ts HOST1,HOST2,... PORT reconnect`: a client of a service in the
 * host's network instead (no subscriber): when its connection is lost it connects to
 * the hosts in turn until one answers PING (where the service moved to), and the gap
 * includes that. Errors are then the lost connections, counted as reconnects.
 */
import net from 'node:net'
import readline from 'node:readline'
import { RedisConnection } from './redis-client.ts'

const [hostList, portText, mode] = process.argv.slice(2)
const hosts = hostList!.split(',')
const host = hosts[0]!
const port = Number(portText)
const INTERVAL_MS = 5
const reconnect = mode === 'reconnect'

let pinger = await RedisConnection.connect(host, port)
const errors: string[] = []
let reconnects = 0
let pings = 0
let last = Date.now()
let maxGapMs = 0
let maxGapAt = 0
let closed = false

const sub = net.connect({ host, port })
if (!reconnect) {
  await new Promise<void>((resolve, reject) => {
    sub.once('connect', () => resolve())
    sub.once('error', reject)
  })
} else {
  sub.on('error', () => {})
  sub.destroy()
}
let subBuf = ''
let subscribed = false
sub.on('data', (d) => {
  subBuf += d.toString('utf8')
  // RESP arrays: *3 $7 message $2 ch $N payload. Parsed line-wise: enough for a test.
  const lines = subBuf.split('\r\n')
  subBuf = lines.pop() ?? ''
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] === 'subscribe') subscribed = true
    if (lines[i] === 'message' && lines[i + 4] != null) {
      process.stdout.write(`message ${lines[i + 4]}\n`)
      i += 4
    } else if (lines[i] === 'message') {
      subBuf = lines.slice(i).join('\r\n') + '\r\n' + subBuf
      break
    }
  }
})
if (!reconnect) {
  sub.on('close', () => process.stdout.write('subscriber-closed\n'))
  sub.on('error', (err) => errors.push(`subscriber: ${err.message}`))
  sub.write('*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n')
  while (!subscribed) await new Promise((resolve) => setTimeout(resolve, 5))
}

/** Connects to the hosts in turn until one answers PING. */
async function reconnectAnywhere (): Promise<void> {
  for (let i = 0; !closed; i++) {
    try {
      const c = await RedisConnection.connect(hosts[i % hosts.length]!, port, 500)
      if (await c.command('PING') === 'PONG') {
        pinger = c
        reconnects++
        return
      }
      c.close()
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS))
  }
}

const loop = async (): Promise<void> => {
  while (!closed) {
    try {
      const r = await pinger.command('PING')
      if (r !== 'PONG') errors.push(`PING answered ${r}`)
      pings++
      const now = Date.now()
      if (now - last > maxGapMs) {
        maxGapMs = now - last
        maxGapAt = now
      }
      last = now
    } catch (err) {
      if (reconnect) {
        pinger.close()
        await reconnectAnywhere()
        continue
      }
      errors.push((err as Error).message)
      closed = true
      break
    }
    await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS))
  }
}
void loop()
process.stdout.write('ready\n')

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'report') {
    process.stdout.write(JSON.stringify({ pings, errors, maxGapMs, maxGapAt, closed, reconnects }) + '\n')
  } else if (line.trim() === 'reset') {
    maxGapMs = 0
    process.stdout.write('reset-done\n')
  } else if (line.trim() === 'quit') {
    closed = true
    pinger.close()
    sub.destroy()
    process.exit(0)
  }
})
