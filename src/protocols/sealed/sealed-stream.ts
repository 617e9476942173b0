/**
 * msc's bulk data channel: one TCP connection sealed with AES-256-GCM under a 32-byte
 * secret that both ends got over an authenticated, encrypted libp2p stream (the
 * migration's control stream, open to members only). It carries what /msc/image
 * carries, at native speed: libp2p's noise + yamux path costs 25-40 ms of CPU per MB
 * and side on a 2-core host, AES-GCM in OpenSSL well under 1 ms.
 *
 * Wire, after the dialer's 16-byte random salt: records of
 *   [u32 length N][N bytes: AES-256-GCM ciphertext of (u8 kind, payload), then a 16-byte tag]
 * with the 4-byte length as additional data. Each direction has its own key,
 * HKDF-SHA256(secret, salt, "msc/sealed/1 dialer" | "msc/sealed/1 listener"), and nonce
 * (a record counter), so a record cannot be replayed, reordered, moved to the other
 * direction or to another connection. Kinds: HELLO (the dialer's first record: the
 * listener hands a connection on only after it), DATA, and END (no more data this
 * way: a TCP end without it is a truncation, an error).
 *
 * SealedStream offers the part of libp2p's Stream that FramedStream uses (send with
 * drain, half-close, abort, pause/resume, the same events), so every protocol written
 * for FramedStream runs over it unchanged.
 */
import crypto from 'node:crypto'
import type net from 'node:net'
import { StreamCloseEvent, StreamMessageEvent, type AbortOptions, type MessageStreamStatus, type Stream } from '@libp2p/interface'

export const SALT_BYTES = 16
export const SECRET_BYTES = 32
/**
 * Largest payload per record; larger sends are split. Under glibc's 128 KiB mmap
 * threshold, so that the cipher's output buffers come from the heap and are reused:
 * each larger one is a fresh mapping, and first touches cost ~11 us per 4 KiB page on
 * these VMs (measured: with 256 KiB records the sender spent 2.5x the CPU).
 */
export const MAX_RECORD_PAYLOAD = 60 * 1024
const TAG_BYTES = 16
const MAX_RECORD_BYTES = 1 + MAX_RECORD_PAYLOAD + TAG_BYTES
const KIND_HELLO = 0
const KIND_DATA = 1
const KIND_END = 2
/** Above this many queued bytes send() returns false and 'drain' follows. */
const WRITE_HIGH_WATER = 4 * 1024 * 1024

export type SealedRole = 'dialer' | 'listener'

export class SealedChannelError extends Error {
  readonly code: 'AUTH_FAILED' | 'TRUNCATED' | 'BAD_RECORD'
  constructor (code: SealedChannelError['code'], message: string) {
    super(message)
    this.name = 'SealedChannelError'
    this.code = code
  }
}

function keyFor (secret: Uint8Array, salt: Uint8Array, sender: SealedRole): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', secret, salt, `msc/sealed/1 ${sender}`, 32))
}

function nonceOf (counter: bigint): Buffer {
  const n = Buffer.alloc(12)
  n.writeBigUInt64BE(counter, 4)
  return n
}

export class SealedStream extends EventTarget {
  /** send() encrypts at once and keeps no reference: a sender may reuse its buffer. */
  readonly sendCopies = true
  status: MessageStreamStatus = 'open'
  maxReadBufferLength = 4 * 1024 * 1024
  readableEnded = false
  private readonly socket: net.Socket
  private readonly txKey: Buffer
  private readonly rxKey: Buffer
  private txCounter = 0n
  private rxCounter = 0n
  private readonly pending: Buffer[] = []
  private pendingBytes = 0
  private writeEnded = false
  private helloSeen: PromiseWithResolvers<void> | undefined
  private closeError: Error | undefined
  /**
   * Data that arrived while nobody listened for 'message' (the hello and the first
   * records often share one TCP read, before the protocol handler is attached): kept,
   * and handed to the first listener, as a libp2p stream does.
   */
  private readonly unread: Uint8Array[] = []
  private listening = false
  private paused = false

  /** The socket has sent or received the salt already; see dialSealed / acceptSealed. */
  constructor (socket: net.Socket, secret: Uint8Array, salt: Uint8Array, role: SealedRole) {
    super()
    if (secret.byteLength !== SECRET_BYTES) throw new Error(`a sealed channel needs a ${SECRET_BYTES}-byte secret`)
    this.socket = socket
    this.txKey = keyFor(secret, salt, role)
    this.rxKey = keyFor(secret, salt, role === 'dialer' ? 'listener' : 'dialer')
    if (role === 'listener') this.helloSeen = Promise.withResolvers<void>()
    this.helloSeen?.promise.catch(() => {})
    socket.setNoDelay(true)
    socket.on('data', (d: Buffer) => this.onData(d))
    socket.on('drain', () => this.dispatchEvent(new Event('drain')))
    socket.on('end', () => {
      if (!this.readableEnded) this.fail(new SealedChannelError('TRUNCATED', 'the connection ended without an authenticated end'))
    })
    socket.on('error', (err) => this.fail(err))
    socket.on('close', () => {
      if (this.status === 'aborted' || this.status === 'reset' || this.status === 'closed') return
      if (!(this.readableEnded && this.writeEnded)) this.closeError ??= new SealedChannelError('TRUNCATED', 'the connection closed before both sides ended')
      this.status = this.closeError != null ? 'reset' : 'closed'
      this.helloSeen?.reject(this.closeError ?? new SealedChannelError('TRUNCATED', 'closed before the hello'))
      this.dispatchEvent(new StreamCloseEvent(false, this.closeError))
    })
  }

  override addEventListener (...args: Parameters<EventTarget['addEventListener']>): void {
    super.addEventListener(...args)
    if (args[0] !== 'message' || args[1] == null || this.listening) return
    this.listening = true
    for (const data of this.unread.splice(0)) this.dispatchEvent(new StreamMessageEvent(data))
  }

  get writeBufferLength (): number {
    return this.socket.writableLength
  }

  /** Listener side: resolves once the dialer's HELLO record authenticated. */
  async hello (): Promise<void> {
    await this.helloSeen?.promise
  }

  /** Dialer side: the first record, which lets the listener check the key before anything else. */
  sendHello (): void {
    this.seal(KIND_HELLO, new Uint8Array(0))
  }

  send (data: Parameters<Stream['send']>[0]): boolean {
    if (this.status !== 'open' || this.writeEnded) throw new Error(`cannot send: the sealed stream is ${this.writeEnded ? 'closed for writing' : this.status}`)
    const chunks = data instanceof Uint8Array ? [data] : [...data]
    for (const c of chunks) {
      for (let off = 0; off < c.byteLength; off += MAX_RECORD_PAYLOAD) this.seal(KIND_DATA, c.subarray(off, Math.min(c.byteLength, off + MAX_RECORD_PAYLOAD)))
    }
    return this.socket.writableLength < WRITE_HIGH_WATER
  }

  /** Half-close: an authenticated END, then TCP's; resolves once it is written. */
  async close (options?: AbortOptions): Promise<void> {
    if (this.writeEnded) return
    if (this.status !== 'open') throw new Error(`cannot close: the sealed stream is ${this.status}`)
    this.seal(KIND_END, new Uint8Array(0))
    this.writeEnded = true
    this.status = this.readableEnded ? 'closing' : 'open'
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    const onAbort = (): void => reject(options?.signal?.reason as Error)
    options?.signal?.addEventListener('abort', onAbort, { once: true })
    this.socket.end(() => resolve())
    try {
      await promise
    } finally {
      options?.signal?.removeEventListener('abort', onAbort)
    }
  }

  abort (err: Error): void {
    if (this.status === 'aborted' || this.status === 'closed' || this.status === 'reset') return
    this.status = 'aborted'
    this.closeError = err
    this.helloSeen?.reject(err)
    this.socket.destroy()
    this.dispatchEvent(new StreamCloseEvent(true, err))
  }

  /** As a libp2p stream's: 'paused' between pause() and resume(), 'closed' once the remote ended. */
  get readStatus (): 'readable' | 'paused' | 'closed' {
    if (this.readableEnded || (this.status !== 'open' && this.status !== 'closing')) return 'closed'
    return this.paused ? 'paused' : 'readable'
  }

  pause (): void {
    this.paused = true
    this.socket.pause()
  }

  resume (): void {
    this.paused = false
    this.socket.resume()
  }

  private seal (kind: number, payload: Uint8Array): void {
    const nonce = nonceOf(this.txCounter++)
    const header = Buffer.alloc(4)
    header.writeUInt32BE(1 + payload.byteLength + TAG_BYTES)
    const c = crypto.createCipheriv('aes-256-gcm', this.txKey, nonce)
    c.setAAD(header)
    // Pieces, not one joined buffer: corked, they leave in one writev without a copy.
    const kindOut = c.update(Uint8Array.of(kind))
    const body = c.update(payload)
    c.final()
    this.socket.cork()
    this.socket.write(header)
    this.socket.write(kindOut)
    if (body.byteLength > 0) this.socket.write(body)
    this.socket.write(c.getAuthTag())
    this.socket.uncork()
  }

  private onData (d: Buffer): void {
    this.pending.push(d)
    this.pendingBytes += d.byteLength
    while (this.status === 'open' || this.status === 'closing') {
      if (this.pendingBytes < 4) return
      const head = this.peek(4)
      const n = head.readUInt32BE(0)
      if (n < 1 + TAG_BYTES || n > MAX_RECORD_BYTES) {
        this.fail(new SealedChannelError('BAD_RECORD', `a record of ${n} bytes (at most ${MAX_RECORD_BYTES})`))
        return
      }
      if (this.pendingBytes < 4 + n) return
      const rec = this.take(4 + n)
      const plain = this.open(rec)
      if (plain == null) {
        this.fail(new SealedChannelError('AUTH_FAILED', 'a record failed authentication (wrong key, or altered on the way)'))
        return
      }
      const kind = plain[0]
      if (this.helloSeen != null && this.rxCounter === 1n) {
        if (kind !== KIND_HELLO) {
          this.fail(new SealedChannelError('BAD_RECORD', 'the first record is not a hello'))
          return
        }
        this.helloSeen.resolve()
        continue
      }
      if (this.readableEnded) {
        this.fail(new SealedChannelError('BAD_RECORD', 'a record after the end'))
        return
      }
      if (kind === KIND_DATA) {
        if (plain.byteLength > 1) {
          if (this.listening) this.dispatchEvent(new StreamMessageEvent(plain.subarray(1)))
          else this.unread.push(plain.subarray(1))
        }
      } else if (kind === KIND_END) {
        this.readableEnded = true
        this.dispatchEvent(new Event('remoteCloseWrite'))
        this.dispatchEvent(new Event('end'))
        if (this.writeEnded) this.status = 'closing'
      } else {
        this.fail(new SealedChannelError('BAD_RECORD', `a record of kind ${kind}`))
        return
      }
    }
  }

  /** Decrypts one whole record; null when it does not authenticate. */
  private open (rec: Buffer): Buffer | null {
    const header = rec.subarray(0, 4)
    const body = rec.subarray(4, rec.byteLength - TAG_BYTES)
    const tag = rec.subarray(rec.byteLength - TAG_BYTES)
    try {
      const d = crypto.createDecipheriv('aes-256-gcm', this.rxKey, nonceOf(this.rxCounter++))
      d.setAAD(header)
      d.setAuthTag(tag)
      const plain = d.update(body)
      d.final() // throws unless the tag authenticates; GCM has no output left here
      return plain
    } catch {
      return null
    }
  }

  private peek (n: number): Buffer {
    if (this.pending[0]!.byteLength >= n) return this.pending[0]!.subarray(0, n)
    return this.gather(n).subarray(0, n)
  }

  private take (n: number): Buffer {
    const first = this.gather(n)
    const out = first.subarray(0, n)
    if (first.byteLength === n) this.pending.shift()
    else this.pending[0] = first.subarray(n)
    this.pendingBytes -= n
    return out
  }

  /** Joins the first chunks until the first holds at least `n` bytes (only as many as needed). */
  private gather (n: number): Buffer {
    if (this.pending[0]!.byteLength >= n) return this.pending[0]!
    let k = 0
    let have = 0
    while (have < n) have += this.pending[k++]!.byteLength
    const joined = Buffer.concat(this.pending.splice(0, k), have)
    this.pending.unshift(joined)
    return joined
  }

  private fail (err: Error): void {
    this.abort(err)
  }
}
