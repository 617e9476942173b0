import type { IncomingMessage } from 'node:http'
import { StringDecoder } from 'node:string_decoder'
import { MscError, type MscErrorCode } from '../util/errors.ts'
import type { CheckpointInfo, ContainerInfo, NodeStatus, ApiErrorBody, PeerInfo, JoinResult, MigrateEvent, MigrateRequestBody, MigrationResultInfo, ClusterInfo, ClusterToken, RemovedPeer, RunRequest } from './types.ts'

// The ESM import of node:http loads undici, http2 and tls for its lazy WebSocket
// exports (about as long as Node's own start); the CommonJS module object does not.
const http = process.getBuiltinModule('node:http')
const net = process.getBuiltinModule('node:net')

/** The CLI's view of a node: typed calls over the node's unix socket. */
export class ControlClient {
  readonly socketPath: string

  constructor (socketPath: string) {
    this.socketPath = socketPath
  }

  private async request<T> (method: string, path: string, payload?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.raw(method, path, payload, signal)
    await throwIfError(res)
    return await readJsonBody(res) as T
  }

  /** A raw response, for streams (logs, events). */
  async raw (method: string, path: string, payload?: unknown, signal?: AbortSignal): Promise<IncomingMessage> {
    const body = payload === undefined ? undefined : JSON.stringify(payload)
    return await new Promise((resolve, reject) => {
      const req = http.request({
        // One connection of our own instead of the global Agent's pool: the Agent checks
        // whether the host name is an IPv6 address, and compiling that regular
        // expression alone costs ~10 ms, at every command.
        createConnection: () => net.createConnection({ path: this.socketPath }),
        method,
        path,
        signal,
        headers: body == null ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
      }, resolve)
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
          reject(new MscError('DAEMON_UNREACHABLE', `no msc node is listening on ${this.socketPath} (start one with \`msc node start --data-dir DIR\`, or pass --data-dir / MSC_DATA_DIR)`))
        } else if (err.code === 'EACCES') {
          reject(new MscError('DAEMON_UNREACHABLE', `permission denied on ${this.socketPath} (the API socket is 0600: run as the node's user)`))
        } else reject(err)
      })
      if (body != null) req.write(body)
      req.end()
    })
  }

  status (): Promise<NodeStatus> {
    return this.request('GET', '/v1/status')
  }
  list (): Promise<ContainerInfo[]> {
    return this.request('GET', '/v1/containers')
  }
  inspect (name: string): Promise<ContainerInfo> {
    return this.request('GET', `/v1/containers/${enc(name)}`)
  }
  /** `replicas` absent: the node's --default-replicas applies. */
  run (name: string, bundle: string, replicas?: number, net?: { network?: 'host' | 'lan'; ip?: string }): Promise<ContainerInfo> {
    const req: RunRequest = replicas == null ? { name, bundle } : { name, bundle, replicas }
    if (net?.network != null) req.network = net.network
    if (net?.ip != null) req.ip = net.ip
    return this.request('POST', '/v1/containers', req)
  }
  stop (name: string): Promise<ContainerInfo> {
    return this.request('POST', `/v1/containers/${enc(name)}/stop`, {})
  }
  remove (name: string, force = false): Promise<{ removed: string }> {
    return this.request('DELETE', `/v1/containers/${enc(name)}${force ? '?force=1' : ''}`)
  }
  checkpoint (name: string, stop = false): Promise<CheckpointInfo> {
    return this.request('POST', `/v1/containers/${enc(name)}/checkpoint`, { stop })
  }
  checkpoints (name: string): Promise<CheckpointInfo[]> {
    return this.request('GET', `/v1/containers/${enc(name)}/checkpoints`)
  }
  restore (name: string, from?: string): Promise<ContainerInfo> {
    return this.request('POST', `/v1/containers/${enc(name)}/restore`, from == null ? {} : { from })
  }

  /** Starts a migration; `onEvent` sees each progress line; resolves with the result. */
  async migrate (name: string, body: MigrateRequestBody, onEvent: (e: MigrateEvent) => void, signal?: AbortSignal): Promise<MigrationResultInfo> {
    const res = await this.raw('POST', `/v1/containers/${enc(name)}/migrate`, body, signal)
    await throwIfError(res)
    let result: MigrationResultInfo | undefined
    for await (const line of ndjsonLines(res)) {
      const e = JSON.parse(line) as MigrateEvent
      if (e.type === 'result') result = e.result
      else onEvent(e)
    }
    if (result == null) throw new MscError('DAEMON_UNREACHABLE', 'the node closed the migration stream without a result (did it stop?)')
    return result
  }

  peers (): Promise<PeerInfo[]> {
    return this.request('GET', '/v1/peers')
  }
  join (addr: string): Promise<JoinResult> {
    return this.request('POST', '/v1/peers/join', { addr })
  }
  removePeer (idOrName: string): Promise<RemovedPeer> {
    return this.request('POST', `/v1/peers/${enc(idOrName)}/remove`)
  }
  cluster (): Promise<ClusterInfo> {
    return this.request('GET', '/v1/cluster')
  }
  clusterToken (ttlMs: number): Promise<ClusterToken> {
    return this.request('POST', '/v1/cluster/token', { ttlMs })
  }

  async logs (name: string, follow: boolean, signal?: AbortSignal): Promise<IncomingMessage> {
    const res = await this.raw('GET', `/v1/containers/${enc(name)}/logs${follow ? '?follow=1' : ''}`, undefined, signal)
    await throwIfError(res)
    return res
  }

  /**
   * The node's replication, lease and failover events, NDJSON: those it kept, then (follow)
   * each as it happens until `signal` aborts or the node ends the stream. Read it with
   * ndjsonLines; each line is one NodeEvent.
   */
  async events (follow: boolean, signal?: AbortSignal): Promise<IncomingMessage> {
    const res = await this.raw('GET', `/v1/events${follow ? '?follow=1' : ''}`, undefined, signal)
    await throwIfError(res)
    return res
  }
}

function enc (s: string): string {
  return encodeURIComponent(s)
}

async function readJsonBody (res: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  for await (const c of res) chunks.push(c as Buffer)
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new MscError('INTERNAL', `node answered ${res.statusCode} with a body that is not JSON`)
  }
}

/** An error answer (JSON ApiErrorBody) becomes the MscError the node raised. */
async function throwIfError (res: IncomingMessage): Promise<void> {
  if ((res.statusCode ?? 500) < 400) return
  const e = (await readJsonBody(res) as ApiErrorBody).error
  throw new MscError((e?.code ?? 'INTERNAL') as MscErrorCode, e?.message ?? `node answered ${res.statusCode}`, e?.details ?? [])
}

/**
 * The complete, non-blank lines of an NDJSON stream, without their newline. A last line
 * without one (the sender died mid-line) is dropped: it is not a whole JSON value.
 */
export async function* ndjsonLines (stream: AsyncIterable<unknown>): AsyncGenerator<string> {
  const dec = new StringDecoder('utf8') // a character split across chunks stays whole
  let buf = ''
  for await (const c of stream) {
    buf += typeof c === 'string' ? c : dec.write(c as Buffer)
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (line.trim() !== '') yield line
    }
  }
}
