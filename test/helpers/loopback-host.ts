/**
 * A started msc libp2p host (tcp + noise + yamux + identify + ping + gossipsub, as a
 * node builds it) listening on 127.0.0.1 only, with no discovery: for tests and
 * benchmarks of one protocol between two such hosts in one machine. Stop it with
 * `host.stop()`.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createLibp2pHost, type MscLibp2p } from '../../src/overlay/libp2p-host.ts'

export async function loopbackHost (): Promise<MscLibp2p> {
  const host = await createLibp2pHost({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    announce: [],
    bootstrap: [],
    mdns: false,
    maxPubsubMessageBytes: 1 << 20
  })
  await host.start()
  return host
}
