import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createLibp2pHost } from '../src/overlay/libp2p-host.ts'
import { PAGES_PROTOCOL, openPagesTunnel, handlePagesStream } from '../src/protocols/pages/tunnel.ts'
const host = async () => { const n = await createLibp2pHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], bootstrap: [], mdns: false, mdnsIntervalMs: 1000, maxPubsubMessageBytes: 1 << 20 }); await n.start(); return n }
const a = await host(); const b = await host()
const echo = net.createServer({ allowHalfOpen: true }, (s) => { s.pipe(s) })
await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()))
const port = (echo.address() as net.AddressInfo).port
let srcStream: any
await a.handle(PAGES_PROTOCOL, async (stream) => { srcStream = stream; try { await handlePagesStream(stream, () => ({ host: '127.0.0.1', port })) } catch (e) { console.log('src error', (e as Error).message) } })
const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), 't', { onError: (e) => console.log('tunnel error', e.message) })
const delay = Number(process.argv[2] ?? 1500)
const total = Number(process.env.MIB ?? 200) * 2 ** 20
const block = randomBytes(2 ** 20)
global.gc?.()
const base = process.memoryUsage()
const peak: Record<string, number> = {}
let n = 0
const q: Record<string, number> = {}
const qs = (k: string, v: number) => { q[k] = Math.max(q[k] ?? 0, v) }
const sampler = setInterval(() => { if (process.env.GC && ++n % 2 === 0) global.gc?.();
  for (const c of b.getConnections()) for (const st of c.streams) if (st.protocol === PAGES_PROTOCOL) { qs('tgt.w', st.writeBufferLength); qs('tgt.r', st.readBufferLength) }
  if (srcStream) { qs('src.w', srcStream.writeBufferLength); qs('src.r', srcStream.readBufferLength) }
  qs('client.w', s?.writableLength ?? 0); const m = process.memoryUsage() as any; for (const k of Object.keys(m)) peak[k] = Math.max(peak[k] ?? 0, m[k] - (base as any)[k]) }, 20)
var s: net.Socket = net.connect({ host: '127.0.0.1', port: tunnel.port, allowHalfOpen: true })
let received = 0
const t0 = Date.now()
const done = new Promise((r) => s.on('end', r))
s.pause()
let written = 0
setTimeout(() => { global.gc?.(); const m = process.memoryUsage(); console.log('at stall end: written MiB', (written / 2 ** 20).toFixed(1), 'arrayBuffers growth after gc', ((m.arrayBuffers - base.arrayBuffers) / 2 ** 20).toFixed(1), 'rss growth', ((m.rss - base.rss) / 2 ** 20).toFixed(1)); s.on('data', (d: Buffer) => { received += d.length }); s.resume() }, delay)
for (let off = 0; off < total; off += block.length) { written += block.length; if (!s.write(block)) await new Promise((r) => s.once('drain', r)) }
s.end()
await done
clearInterval(sampler)
console.log('secs', (Date.now() - t0) / 1000, 'received', received / 2 ** 20)
for (const [k, v] of Object.entries(peak)) console.log(k, (v / 2 ** 20).toFixed(1), 'MiB')
console.log(Object.fromEntries(Object.entries(q).map(([k, v]) => [k, (v / 2 ** 20).toFixed(2)])))
process.exit(0)
