import { preSharedKey } from '@libp2p/pnet'
import type { ConnectionProtector, MultiaddrConnection, AbortOptions } from '@libp2p/interface'

/**
 * @libp2p/pnet's XSalsa20 runs in WebAssembly whose memory cannot grow past its limit,
 * and it copies each chunk it is given into that memory whole. A connection that was
 * paused hands over everything it buffered as one chunk (tens of MB during a
 * migration), and `Memory.grow()` throws a RangeError out of an event handler, which
 * kills the node. XSalsa20 is a stream cipher whose state carries across calls, so
 * feeding the same bytes in slices gives the same output: this wraps pnet's protector
 * so that no single call ever sees more than SLICE_BYTES.
 *
 * The slice must also stay below the module's initial memory (640 KiB): every cipher
 * instance holds a view of that one memory, a growth makes the others' views stale,
 * and each stale instance then grows it again by a page on its next call, so a single
 * growth snowballs to the 64 MB cap under many interleaved connections. At 64 KiB
 * slices the memory never grows below thousands of open connections.
 */
export const SLICE_BYTES = 64 * 1024

type Update = (input: Uint8Array) => Uint8Array

export function slicedUpdate (update: Update, input: Uint8Array, slice = SLICE_BYTES): Uint8Array {
  if (input.length <= slice) return update(input)
  const out = new Uint8Array(input.length)
  for (let at = 0; at < input.length; at += slice) out.set(update(input.subarray(at, at + slice)), at)
  return out
}

export function slicedPreSharedKey (init: { psk: Uint8Array }): () => ConnectionProtector {
  const factory = preSharedKey(init)
  return () => {
    const inner = factory()
    return {
      async protect (conn: MultiaddrConnection, options?: AbortOptions): Promise<MultiaddrConnection> {
        const box = await inner.protect(conn, options) as MultiaddrConnection & Record<string, { update: Update } | undefined>
        for (const side of ['inboundXor', 'outboundXor']) {
          const xor = box[side]
          if (xor == null || typeof xor.update !== 'function') throw new Error(`@libp2p/pnet changed: no ${side} to wrap (see src/overlay/pnet.ts)`)
          const update = xor.update.bind(xor)
          xor.update = (input: Uint8Array) => slicedUpdate(update, input)
        }
        return box
      }
    }
  }
}
