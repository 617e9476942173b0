/**
 * Length-prefixed frames over one libp2p stream: `[type u8][length u32 BE][payload]`.
 *
 * Written for libp2p 3.x streams, whose own helpers do not bound memory (see
 * /work/shared/notes/libp2p.md): `onDrain()` resolves too early and reading with
 * `for await` never pushes back. So:
 *  - writes wait while `stream.writeBufferLength` is above a high-water mark, woken by
 *    'drain' (fired on every yamux window update), failed by 'close';
 *  - reads keep their own queue and pause the stream above a limit, which makes yamux
 *    stop granting window to the sender;
 *  - a frame longer than `maxFrameBytes` is refused from its 5-byte header, before
 *    anything of that size is buffered;
 *  - a wait (for input, or for the peer to take our output) longer than
 *    `idleTimeoutMs` is an error, so a peer that stops mid-transfer cannot hold us.
 */
import type { Stream } from '@libp2p/interface'

/**
 * What FramedStream needs of a stream: a libp2p Stream, or a SealedStream (msc's bulk
 * data channel), which offers the same part.
 */
export type ByteStream = Pick<Stream, 'status' | 'writeBufferLength' | 'maxReadBufferLength' | 'readableEnded' | 'send' | 'close' | 'abort' | 'pause' | 'resume' | 'addEventListener' | 'removeEventListener'>
import type { z } from 'zod'
import { MscError, type MscErrorCode } from '../util/errors.ts'

export const FRAME_HEADER_BYTES = 5
/** Frame type used by writeJson/readJson. */
export const FRAME_JSON = 1

/** Why a protocol operation failed; `reason` is a stable machine-readable word. */
export class ProtocolError extends MscError {
  readonly reason: string

  constructor (reason: string, message: string, code: MscErrorCode = 'INVALID_ARGUMENT', options?: ErrorOptions) {
    super(code, message, [], options)
    this.name = 'ProtocolError'
    this.reason = reason
  }
}

export interface Frame {
  type: number
  payload: Uint8Array
}

export interface FramedStreamOptions {
  /** Largest payload accepted by readFrame. Default 4 MiB. */
  maxFrameBytes?: number
  /** writeFrame waits while more than this is queued for sending. Default 4 MiB. */
  writeHighWaterBytes?: number
  /** Reading pauses the stream above this many unread bytes. Default 8 MiB. */
  readBufferBytes?: number
  /** A read or write waiting longer than this fails with IDLE_TIMEOUT. 0 = never. Default 30 s. */
  idleTimeoutMs?: number
}

const MiB = 1024 * 1024
/**
 * Small frames are copied into one buffer of up to BATCH_BYTES before reaching the
 * stream. Sent one by one, tens of thousands of tiny buffers pile up in the stream's
 * write queue (a Uint8ArrayList, consumed with Array.shift: quadratic), which took
 * 84 s for a flood of ~280k small frames here, blocking the event loop.
 */
const SMALL_FRAME_BYTES = 16 * 1024
const BATCH_BYTES = 64 * 1024
const SMALL_CHUNK_BYTES = 4096
const TAIL_BYTES = 64 * 1024
/**
 * While paused, yamux still delivers what the sender had window for (its window grows
 * to 16 MiB). The stream resets itself when its own paused buffer passes
 * `maxReadBufferLength` (default 4 MiB), so pausing with the default would kill fast
 * transfers; this raises it above the largest yamux window.
 */
const STREAM_PAUSED_BUFFER_BYTES = 32 * MiB

export class FramedStream {
  readonly stream: ByteStream
  readonly maxFrameBytes: number
  readonly writeHighWaterBytes: number
  readonly readBufferBytes: number
  readonly idleTimeoutMs: number

  // Unread input: whole chunks as delivered, `headOffset` into the first one.
  private chunks: Uint8Array[] = []
  private headOffset = 0
  private buffered = 0
  private paused = false
  private resuming = false
  private ended = false
  private closeError: Error | undefined
  private wake: (() => void) | undefined
  private reading = false
  // Small frames not yet handed to the stream.
  private batch: Uint8Array | undefined
  private batchLen = 0
  private flushTimer: NodeJS.Immediate | undefined
  // Where small input pieces are gathered (see push).
  private tail: Uint8Array | undefined
  private tailEnd = 0

  constructor (stream: ByteStream, o: FramedStreamOptions = {}) {
    this.stream = stream
    this.maxFrameBytes = o.maxFrameBytes ?? 4 * MiB
    this.writeHighWaterBytes = o.writeHighWaterBytes ?? 4 * MiB
    this.readBufferBytes = o.readBufferBytes ?? 8 * MiB
    this.idleTimeoutMs = o.idleTimeoutMs ?? 30_000
    if (stream.maxReadBufferLength < STREAM_PAUSED_BUFFER_BYTES) stream.maxReadBufferLength = STREAM_PAUSED_BUFFER_BYTES

    stream.addEventListener('message', (evt) => {
      const data = evt.data
      if (data instanceof Uint8Array) this.push(data)
      else for (const c of data) this.push(c)
      // Not from inside our own resume(): see maybeResume.
      if (!this.resuming) this.maybePause()
      this.notify()
    })
    // 'end', not 'remoteCloseWrite': data still buffered in the stream would be lost.
    stream.addEventListener('end', () => {
      this.ended = true
      this.notify()
    })
    stream.addEventListener('close', (evt) => {
      if (evt.error != null) this.closeError = evt.error
      this.ended = true
      this.notify()
    })
    if (stream.readableEnded) this.ended = true
  }

  /** Sends one frame; resolves once the queued output is back under the high-water mark. */
  async writeFrame (type: number, payload: Uint8Array, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (!Number.isInteger(type) || type < 0 || type > 255) throw new ProtocolError('BAD_FRAME_TYPE', `frame type ${type} is not a byte`, 'INTERNAL')
    if (payload.byteLength > 0xffffffff) throw new ProtocolError('FRAME_TOO_LARGE', 'frame payload over 4 GiB', 'INTERNAL')
    const size = FRAME_HEADER_BYTES + payload.byteLength
    if (size <= SMALL_FRAME_BYTES) {
      if (this.batchLen + size > BATCH_BYTES) this.flush()
      this.batch ??= new Uint8Array(BATCH_BYTES)
      putHeader(this.batch, this.batchLen, type, payload.byteLength)
      this.batch.set(payload, this.batchLen + FRAME_HEADER_BYTES)
      this.batchLen += size
      // Sent when the batch fills, before a large frame, or once the caller yields.
      this.flushTimer ??= setImmediate(() => {
        this.flushTimer = undefined
        try {
          this.flush()
        } catch { /* closed: the next write or read reports it */ }
      })
    } else {
      this.flush()
      const header = new Uint8Array(FRAME_HEADER_BYTES)
      putHeader(header, 0, type, payload.byteLength)
      // Two sends, no copy: the stream queues references, so callers must not reuse `payload`.
      this.send(header)
      this.send(payload)
    }
    while (this.stream.writeBufferLength + this.batchLen > this.writeHighWaterBytes) await this.waitDrain(signal)
  }

  async writeJson (obj: unknown, signal?: AbortSignal): Promise<void> {
    await this.writeFrame(FRAME_JSON, new TextEncoder().encode(JSON.stringify(obj)), signal)
  }

  /**
   * Next frame, or null when the peer closed its side cleanly between frames.
   * `idleTimeoutMs` overrides the stream's default for this call (0 = wait forever).
   */
  async readFrame (signal?: AbortSignal, idleTimeoutMs = this.idleTimeoutMs): Promise<Frame | null> {
    const f = await this.readFrameParts(signal, idleTimeoutMs)
    return f == null ? null : { type: f.type, payload: joined(f.parts) }
  }

  /**
   * As readFrame, but a payload that spans several input chunks comes as those chunks'
   * views instead of one joined copy: for bulk data, where a fresh 256 KiB buffer per
   * frame costs more in page faults (this VM: ~365 MB/s on first touch) than the copy.
   */
  async readFrameParts (signal?: AbortSignal, idleTimeoutMs = this.idleTimeoutMs): Promise<{ type: number; parts: Uint8Array[] } | null> {
    if (this.reading) throw new ProtocolError('CONCURRENT_READ', 'readFrame called while another read is pending', 'INTERNAL')
    this.reading = true
    try {
      if (!await this.fill(FRAME_HEADER_BYTES, signal, idleTimeoutMs)) {
        if (this.buffered === 0) return null
        throw new ProtocolError('TRUNCATED', 'stream ended inside a frame header')
      }
      const header = joined(this.takeParts(FRAME_HEADER_BYTES))
      const type = header[0] as number
      const length = new DataView(header.buffer, header.byteOffset, header.byteLength).getUint32(1)
      if (length > this.maxFrameBytes) {
        throw new ProtocolError('FRAME_TOO_LARGE', `frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes}`)
      }
      if (!await this.fill(length, signal, idleTimeoutMs)) throw new ProtocolError('TRUNCATED', 'stream ended inside a frame')
      return { type, parts: this.takeParts(length) }
    } finally {
      this.reading = false
    }
  }

  /** Next frame, which must be a JSON frame matching `schema`; a clean end is an error here. */
  async readJson<S extends z.ZodType> (schema: S, signal?: AbortSignal, idleTimeoutMs?: number): Promise<z.infer<S>> {
    const f = await this.readFrame(signal, idleTimeoutMs)
    if (f == null) throw new ProtocolError('TRUNCATED', 'stream ended where a message was expected')
    return parseJsonFrame(f, schema)
  }

  /** Half-close: flushes what is queued, then tells the peer nothing more will come. */
  async closeWrite (signal?: AbortSignal): Promise<void> {
    try {
      this.flush()
      await this.stream.close(signal != null ? { signal } : {})
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      throw this.closedError('closing the stream failed', err)
    }
  }

  /** Resets the stream: both directions stop, unsent and unread data are dropped. */
  abort (err: Error): void {
    clearImmediate(this.flushTimer)
    this.batch = undefined
    this.batchLen = 0
    this.stream.abort(err)
    this.chunks = []
    this.tail = undefined
    this.buffered = 0
    this.headOffset = 0
  }

  /** Sends the batch of small frames, if any. */
  private flush (): void {
    clearImmediate(this.flushTimer)
    this.flushTimer = undefined
    if (this.batch == null || this.batchLen === 0) return
    const out = this.batch.subarray(0, this.batchLen)
    this.batch = undefined // the stream keeps a reference to `out`
    this.batchLen = 0
    this.send(out)
  }

  private send (b: Uint8Array): void {
    try {
      this.stream.send(b)
    } catch (err) {
      throw this.closedError('cannot write: stream is closed', err)
    }
  }

  /**
   * Queues input. Pieces under SMALL_CHUNK_BYTES are copied into a shared tail buffer:
   * the peer chooses the yamux frame sizes, and one array entry per 1-byte frame would
   * cost ~100 bytes of memory per byte buffered (and make shift() slow).
   */
  private push (c: Uint8Array): void {
    const n = c.byteLength
    if (n === 0) return
    this.buffered += n
    if (n >= SMALL_CHUNK_BYTES) {
      this.chunks.push(c)
      return
    }
    if (this.tail == null || this.tailEnd + n > this.tail.byteLength) {
      this.tail = new Uint8Array(TAIL_BYTES)
      this.tailEnd = 0
    }
    this.tail.set(c, this.tailEnd)
    const last = this.chunks.at(-1)
    if (last != null && last.buffer === this.tail.buffer && last.byteOffset + last.byteLength === this.tailEnd) {
      // Grow the last view in place (same start, so headOffset stays valid).
      this.chunks[this.chunks.length - 1] = new Uint8Array(this.tail.buffer, last.byteOffset, last.byteLength + n)
    } else {
      this.chunks.push(this.tail.subarray(this.tailEnd, this.tailEnd + n))
    }
    this.tailEnd += n
  }

  private notify (): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  /** Waits until `n` bytes are buffered; false if the stream ended first. */
  private async fill (n: number, signal: AbortSignal | undefined, idleTimeoutMs: number): Promise<boolean> {
    while (this.buffered < n) {
      if (this.closeError != null) throw this.closedError('stream was reset', this.closeError)
      if (this.ended) return false
      // The whole frame must fit, so a large frame may need more than the pause limit.
      this.maybeResume(Math.max(this.readBufferBytes, n))
      try {
        await this.waitFor((resolve) => {
          this.wake = resolve
        }, signal, idleTimeoutMs, 'no data from the peer')
      } finally {
        this.wake = undefined
      }
    }
    return true
  }

  /** Removes `n` buffered bytes as views of the chunks they are in (no copy). */
  private takeParts (n: number): Uint8Array[] {
    const out: Uint8Array[] = []
    let left = n
    while (left > 0) {
      const c = this.chunks[0] as Uint8Array
      const k = Math.min(left, c.byteLength - this.headOffset)
      out.push(c.subarray(this.headOffset, this.headOffset + k))
      left -= k
      this.headOffset += k
      if (this.headOffset === c.byteLength) {
        this.chunks.shift()
        this.headOffset = 0
      }
    }
    this.buffered -= n
    this.maybeResume(this.readBufferBytes)
    return out
  }

  private maybePause (): void {
    if (this.paused || this.buffered <= this.readBufferBytes) return
    this.paused = true
    try {
      this.stream.pause()
    } catch { /* closing: nothing more will come anyway */ }
  }

  /**
   * Resume below half the limit (hysteresis: not one pause/resume per frame).
   * stream.resume() delivers the paused data synchronously and only then tells yamux to
   * resume: a pause() from the 'message' handler in between is overwritten, the yamux
   * stream keeps granting window while reads stay paused, and the stream resets itself
   * when its buffer overflows (measured: 33 MB, StreamBufferError). So pause afterwards.
   */
  private maybeResume (limit: number): void {
    if (!this.paused || this.buffered >= limit / 2) return
    this.paused = false
    this.resuming = true
    try {
      this.stream.resume()
    } catch {
      /* resume() throws once closed; 'end'/'close' tell the rest */
    } finally {
      this.resuming = false
    }
    this.maybePause()
  }

  private async waitDrain (signal: AbortSignal | undefined): Promise<void> {
    if (this.stream.status !== 'open') throw this.closedError('stream closed while writing', this.closeError)
    let onDrain = (): void => {}
    let onClose = (): void => {}
    try {
      await this.waitFor((resolve, reject) => {
        onDrain = resolve
        onClose = () => reject(this.closedError('stream closed while writing', this.closeError))
        this.stream.addEventListener('drain', onDrain)
        this.stream.addEventListener('close', onClose)
      }, signal, this.idleTimeoutMs, 'the peer stopped reading')
    } finally {
      this.stream.removeEventListener('drain', onDrain)
      this.stream.removeEventListener('close', onClose)
    }
  }

  /** Runs `arm` until it resolves, racing the caller's signal and the idle timer. */
  private async waitFor (
    arm: (resolve: () => void, reject: (err: Error) => void) => void,
    signal: AbortSignal | undefined,
    idleTimeoutMs: number,
    what: string
  ): Promise<void> {
    signal?.throwIfAborted()
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    const onAbort = (): void => reject(signal?.reason as Error)
    signal?.addEventListener('abort', onAbort, { once: true })
    const timer = idleTimeoutMs > 0
      ? setTimeout(() => reject(new ProtocolError('IDLE_TIMEOUT', `${what} for ${idleTimeoutMs} ms`, 'INTERNAL')), idleTimeoutMs)
      : undefined
    try {
      arm(resolve, reject)
      await promise
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
  }

  private closedError (message: string, cause: unknown): ProtocolError {
    return new ProtocolError('STREAM_CLOSED', message, 'INTERNAL', cause != null ? { cause } : undefined)
  }
}

/** The parts as one array: the only one as it is, several copied into a new one. */
export function joined (parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!
  const n = parts.reduce((sum, p) => sum + p.byteLength, 0)
  const out = new Uint8Array(n)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

function putHeader (buf: Uint8Array, at: number, type: number, length: number): void {
  buf[at] = type
  new DataView(buf.buffer, buf.byteOffset + at, FRAME_HEADER_BYTES).setUint32(1, length)
}

/** Decodes a JSON frame and validates it; any failure is MALFORMED. */
export function parseJsonFrame<S extends z.ZodType> (f: Frame, schema: S): z.infer<S> {
  if (f.type !== FRAME_JSON) throw new ProtocolError('MALFORMED', `expected a JSON frame, got frame type ${f.type}`)
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(f.payload))
  } catch {
    throw new ProtocolError('MALFORMED', 'frame is not valid UTF-8 JSON')
  }
  const r = schema.safeParse(value)
  if (!r.success) throw new ProtocolError('MALFORMED', `invalid message: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return r.data
}
