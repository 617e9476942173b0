/**
 * Hand-driven libp2p peers for security tests: the same stack an msc node runs (tcp,
 * noise, yamux, gossipsub, optional pnet), but no msc logic, so a test can do what a
 * hostile peer would: dial without being a member, open msc protocols, present a
 * key-file admission, publish membership messages of its own making.
 * Every peer made here is stopped by stopAllRaw() (call it in after()).
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey, Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2pHost, type MscLibp2p } from '../../src/overlay/libp2p-host.ts'
import { FRAME_JSON, FramedStream } from '../../src/protocols/framing.ts'
import { pskKeyBytes } from '../../src/overlay/psk.ts'
import { admissionKey, hmacAdmission, keyClusterId } from '../../src/cluster/records.ts'
import { JOIN_PROTOCOL, JoinAnswerSchema, MAX_CLUSTER_FRAME, SYNC_PROTOCOL, SyncAnswerSchema } from '../../src/cluster/messages.ts'
import { decodeToken } from '../../src/cluster/tokens.ts'
import { membersDigest, readRequest, reply, SWIM_PROTOCOL, SWIM_VERSION } from '../../src/overlay/membership/swim-protocol.ts'

export interface RawPeer {
  host: MscLibp2p
  key: PrivateKey
  id: string
}

const raws = new Set<MscLibp2p>()

export async function rawPeer (opts: { psk?: Uint8Array; listen?: string; answerProbes?: boolean } = {}): Promise<RawPeer> {
  const key = await generateKeyPair('Ed25519')
  const host = await createLibp2pHost({
    privateKey: key,
    listen: [opts.listen ?? '/ip4/127.0.0.1/tcp/0'],
    announce: [],
    bootstrap: [],
    mdns: false,
    ...(opts.psk != null ? { psk: opts.psk } : {}),
    maxPubsubMessageBytes: 32 * 1024 * 1024
  })
  raws.add(host)
  await host.start()
  if (opts.answerProbes !== false) await answerProbes(host)
  return { host, key, id: host.peerId.toString() }
}

/**
 * Answers a node's SWIM probes as a live member does (ack a ping, nack a ping-req, a
 * sync as from a node that knows no member), so a hostile peer stays alive in the node's view for as long as its
 * host runs and a test's checks are not raced by a suspicion. What it publishes is
 * still judged by its content alone.
 */
async function answerProbes (host: MscLibp2p): Promise<void> {
  await host.handle(SWIM_PROTOCOL, (stream) => {
    void (async () => {
      const signal = AbortSignal.timeout(10_000)
      try {
        const { request, framed } = await readRequest(stream, signal)
        if (request.type === 'sync') await reply(framed, { v: SWIM_VERSION, type: 'sync', digest: membersDigest([]) }, signal)
        else await reply(framed, { v: SWIM_VERSION, type: request.type === 'ping' ? 'ack' : 'nack', changes: [] }, signal)
      } catch {
        stream.abort(new Error('not a probe'))
      }
    })()
  })
}

export async function stopRaw (h: MscLibp2p): Promise<void> {
  raws.delete(h)
  try {
    await h.stop()
  } catch {}
}

export async function stopAllRaw (): Promise<void> {
  for (const h of [...raws]) await stopRaw(h)
}

/**
 * What a key holder does to become a member: connects and presents a key-file
 * admission of its own (an HMAC with the cluster key) by cluster sync. Returns the
 * records the node answered with.
 */
export async function presentKeyAdmission (r: RawPeer, nodeAddr: string, psk: Uint8Array, name: string): Promise<number> {
  const key = pskKeyBytes(psk)
  const cluster = keyClusterId(key)
  const rec = hmacAdmission(admissionKey(key), { kind: 'admit', cluster, peerId: r.id, name, addrs: [], admittedAt: Date.now(), admittedBy: 'key' })
  await r.host.dial(multiaddr(nodeAddr), { signal: AbortSignal.timeout(5000) })
  const stream = await r.host.dialProtocol(peerIdFromString(nodeAddr.split('/p2p/')[1]!), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5000) })
  const f = new FramedStream(stream, { maxFrameBytes: MAX_CLUSTER_FRAME })
  await f.writeJson({ type: 'sync', v: 1, cluster, records: [rec] })
  const answer = await f.readJson(SyncAnswerSchema, AbortSignal.timeout(5000))
  assert.equal(answer.type, 'sync', `the node answered the sync: ${JSON.stringify(answer)}`)
  return answer.type === 'sync' ? answer.records.length : 0
}

/**
 * Opens `protocol` on the connected node and sends one msc JSON frame. 'answered' when
 * any byte comes back (a refusal is an answer: the handler read the frame); 'refused'
 * when the node reset or closed the stream without sending one; 'no-stream' when the
 * stream could not even be opened.
 */
export async function probeProtocol (r: RawPeer, peerId: string, protocol: string, payload: unknown): Promise<'refused' | 'answered' | 'no-stream'> {
  let stream: Stream
  try {
    stream = await r.host.dialProtocol(peerIdFromString(peerId), protocol, { signal: AbortSignal.timeout(5000) })
  } catch {
    return 'no-stream'
  }
  const outcome = new Promise<'refused' | 'answered'>((resolve) => {
    stream.addEventListener('message', () => {
      resolve('answered')
    })
    stream.addEventListener('close', () => {
      resolve('refused')
    })
    stream.addEventListener('end', () => {
      resolve('refused')
    })
    setTimeout(() => {
      resolve('refused')
    }, 5000).unref()
  })
  try {
    const body = new TextEncoder().encode(JSON.stringify(payload))
    const header = new Uint8Array(5)
    header[0] = FRAME_JSON
    new DataView(header.buffer).setUint32(1, body.length)
    stream.send(header)
    stream.send(body)
  } catch {}
  const result = await outcome
  try {
    stream.abort(new Error('probe done'))
  } catch {}
  return result
}

/** What `msc node start --join TOKEN` does, by hand: returns the member's answer. */
export async function joinWithToken (r: RawPeer, token: string, name: string): Promise<'admitted' | string> {
  const t = decodeToken(token)
  const stream = await r.host.dialProtocol(multiaddr(t.a[0]!), JOIN_PROTOCOL, { signal: AbortSignal.timeout(5000) })
  const f = new FramedStream(stream, { maxFrameBytes: MAX_CLUSTER_FRAME })
  await f.writeJson({ type: 'join', v: 1, cluster: t.c, secret: t.s, name, addrs: [] })
  const answer = await f.readJson(JoinAnswerSchema, AbortSignal.timeout(5000))
  return answer.type === 'admitted' ? 'admitted' : `${answer.code}: ${answer.reason}`
}
