import net from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createLibp2pHost } from '../src/overlay/libp2p-host.ts'
import { PAGES_PROTOCOL, openPagesTunnel, handlePagesStream } from '../src/protocols/pages/tunnel.ts'
const host = async () => { const n = await createLibp2pHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], bootstrap: [], mdns: false, mdnsIntervalMs: 1000, maxPubsubMessageBytes: 1 << 20 }); await n.start(); return n }
const a = await host(); const b = await host()
const far: net.Socket[] = []
const rude = net.createServer((s) => { far.push(s); console.log('rude conn'); s.on('error', () => {}); s.once('data', () => { console.log('rude destroy'); s.destroy() }) })
await new Promise<void>((r) => rude.listen(0, '127.0.0.1', () => r()))
const port = (rude.address() as net.AddressInfo).port
await a.handle(PAGES_PROTOCOL, async (stream) => {
  try { console.log('src result', await handlePagesStream(stream, () => ({ host: '127.0.0.1', port }))) } catch (e) { console.log('src err', (e as Error).message) }
})
const tunnel = await openPagesTunnel(b, a.getMultiaddrs(), 't', { onError: (e) => console.log('tunnel err', e.message) })
const s1 = net.connect({ host: '127.0.0.1', port: tunnel.port, allowHalfOpen: true })
s1.on('error', (e) => console.log('s1 error', e.message)).on('end', () => console.log('s1 end')).on('close', () => console.log('s1 close'))
s1.write('x')
setTimeout(() => { console.log('timeout; stats', tunnel.stats()); process.exit(0) }, 5000)
s1.on('end', async () => {
  s1.end()
  await new Promise((r) => s1.once('close', r))
  console.log('s1 closed')
  const s2 = net.connect({ host: '127.0.0.1', port: tunnel.port, allowHalfOpen: true })
  s2.on('error', (e) => console.log('s2 error', e.message)).on('end', () => console.log('s2 end')).on('close', () => console.log('s2 close'))
  while (far.length < 2) await new Promise((r) => setTimeout(r, 50))
  far[1]!.on('close', () => console.log('far close'))
  console.log('closing tunnel')
  await tunnel.close()
  console.log('tunnel closed')
})
