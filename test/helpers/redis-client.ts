/**
 * A minimal redis client over one TCP connection, for tests that need a client that
 * stays connected (as an application's would) rather than redis-cli's one connection
 * per command. Commands run one at a time; replies are parsed as far as tests need:
 * simple strings, errors, integers and bulk strings.
 */
import net from 'node:net'

export class RedisConnection {
  private readonly sock: net.Socket
  private buf = Buffer.alloc(0)
  private waiting: { resolve: (v: string) => void; reject: (e: Error) => void } | null = null
  private endedWith: Error | null = null

  private constructor (sock: net.Socket) {
    this.sock = sock
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d])
      this.deliver()
    })
    const end = (err: Error): void => {
      this.endedWith ??= err
      this.waiting?.reject(this.endedWith)
      this.waiting = null
    }
    sock.on('error', end)
    sock.on('close', () => {
      end(new Error('connection closed'))
    })
  }

  static async connect (host: string, port: number, timeoutMs = 5_000): Promise<RedisConnection> {
    const sock = net.connect({ host, port })
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        sock.destroy()
        reject(new Error(`connect to ${host}:${port} timed out`))
      }, timeoutMs)
      sock.once('connect', () => {
        clearTimeout(t)
        resolve()
      })
      sock.once('error', (err) => {
        clearTimeout(t)
        reject(err)
      })
    })
    return new RedisConnection(sock)
  }

  /** Sends one command; resolves with the reply's text, rejects on an error reply or a lost connection. */
  async command (...args: string[]): Promise<string> {
    if (this.endedWith !== null) throw this.endedWith
    if (this.waiting !== null) throw new Error('one command at a time')
    const p = new Promise<string>((resolve, reject) => {
      this.waiting = { resolve, reject }
    })
    this.sock.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''))
    return await p
  }

  close (): void {
    this.sock.destroy()
  }

  private deliver (): void {
    if (this.waiting === null) return
    const eol = this.buf.indexOf('\r\n')
    if (eol < 0) return
    const head = this.buf.subarray(0, eol).toString('utf8')
    let reply: string
    let used = eol + 2
    if (head[0] === '$') {
      const len = Number(head.slice(1))
      if (len < 0) {
        reply = ''
      } else {
        if (this.buf.length < used + len + 2) return
        reply = this.buf.subarray(used, used + len).toString('utf8')
        used += len + 2
      }
    } else {
      reply = head.slice(1)
    }
    this.buf = this.buf.subarray(used)
    const w = this.waiting
    this.waiting = null
    if (head[0] === '-') w.reject(new Error(reply))
    else w.resolve(reply)
  }
}
