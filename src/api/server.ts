import http from 'node:http'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import type { Logger } from '../util/logger.ts'
import { MscError, toMscError, type MscErrorCode } from '../util/errors.ts'
import type { NodeEvent, CheckpointInfo, ContainerInfo, NodeStatus, RunRequest, CheckpointRequest, RestoreRequest, PeerInfo, JoinRequest, JoinResult, MigrateRequestBody, MigrateEvent, MigrationResultInfo, ClusterInfo, ClusterToken,
  RemovedPeer } from './types.ts'

/** What the API serves; the node implements it. Keeps api/ free of node internals. */
export interface ControlHandlers {
  status: () => Promise<NodeStatus>
  list: () => Promise<ContainerInfo[]>
  inspect: (name: string) => Promise<ContainerInfo>
  run: (req: RunRequest, signal: AbortSignal) => Promise<ContainerInfo>
  stop: (name: string) => Promise<ContainerInfo>
  remove: (name: string, force: boolean) => Promise<void>
  checkpoint: (name: string, req: CheckpointRequest, signal: AbortSignal) => Promise<CheckpointInfo>
  checkpoints: (name: string) => Promise<CheckpointInfo[]>
  restore: (name: string, req: RestoreRequest, signal: AbortSignal) => Promise<ContainerInfo>
  logFiles: (name: string) => Promise<string[]>
  peers: () => Promise<PeerInfo[]>
  join: (req: JoinRequest, signal: AbortSignal) => Promise<JoinResult>
  clusterInfo: () => Promise<ClusterInfo>
  clusterToken: (ttlMs: number) => Promise<ClusterToken>
  /** Removes a member for good, by peer id or unique name. */
  removePeer: (idOrName: string) => Promise<RemovedPeer>
  migrate: (name: string, req: MigrateRequestBody, onEvent: (e: MigrateEvent) => void, signal: AbortSignal) => Promise<MigrationResultInfo>
  /** Replication, lease and failover events: those kept so far, then each as it happens, until the returned function is called. */
  events: (fn: (e: NodeEvent) => void) => () => void
  /** Where a container that left this node went, if it did. */
  movedTo: (name: string) => Promise<{ to: string; toName: string; at: string } | null>
}

const STATUS: Record<MscErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  INVALID_BUNDLE: 400,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  INVALID_STATE: 409,
  RUNTIME_ERROR: 500,
  CRIU_ERROR: 500,
  CRIU_MISSING: 500,
  RUNC_MISSING: 500,
  NO_SPACE: 507,
  NETWORK: 422,
  DAEMON_UNREACHABLE: 503,
  INTERNAL: 500
}

const MAX_BODY = 64 * 1024

/**
 * The node's local control API: JSON over HTTP on a unix socket (mode 0600, so only
 * root or the node's user can drive it). Routes are listed in docs/api.md.
 */
export class ControlServer {
  private readonly server: http.Server
  private readonly handlers: ControlHandlers
  private readonly log: Logger
  private readonly followers = new Set<() => void>()

  constructor (handlers: ControlHandlers, logger: Logger) {
    this.handlers = handlers
    this.log = logger
    this.server = http.createServer((req, res) => {
      void this.handle(req, res)
    })
    this.server.requestTimeout = 0 // checkpoints of big containers and `logs -f` take long
  }

  async listen (socketPath: string): Promise<void> {
    await fsp.rm(socketPath, { force: true })
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      // umask-independent 0600: create, then chmod before anyone is told we listen.
      this.server.listen(socketPath, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    await fsp.chmod(socketPath, 0o600)
  }

  async close (): Promise<void> {
    for (const stop of this.followers) stop()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private async handle (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const ac = new AbortController()
    res.on('close', () => {
      if (!res.writableFinished) ac.abort()
    })
    const method = req.method ?? 'GET'
    try {
      // Inside the try: a malformed %-escape must be an error answer, not a crashed node.
      const url = new URL(req.url ?? '/', 'http://msc')
      // The raw path, not url.pathname: URL would resolve a name of '.' or '..' away.
      let parts: string[]
      try {
        parts = (req.url ?? '/').split('?')[0]!.split('/').filter(Boolean).map(decodeURIComponent)
      } catch {
        throw new MscError('INVALID_ARGUMENT', 'malformed escape in request path')
      }
      if (parts[0] !== 'v1') throw new MscError('NOT_FOUND', `no route ${method} ${url.pathname}`)
      if (parts.length > 4) throw new MscError('NOT_FOUND', `no route ${method} ${url.pathname}`)
      const [, a, name, op] = parts
      const h = this.handlers
      if (a === 'status' && method === 'GET' && name == null) return send(res, 200, await h.status())
      if (a === 'peers' && name == null && method === 'GET') return send(res, 200, await h.peers())
      if (a === 'events' && name == null && method === 'GET') return this.streamEvents(url.searchParams.get('follow') === '1', res)
      if (a === 'peers' && name === 'join' && op == null && method === 'POST') {
        const j = await body<JoinRequest>(req)
        if (typeof j.addr !== 'string' || j.addr === '') throw new MscError('INVALID_ARGUMENT', 'join needs an address')
        return send(res, 200, await h.join(j, ac.signal))
      }
      if (a === 'peers' && name != null && name !== 'join' && op === 'remove' && method === 'POST') return send(res, 200, await h.removePeer(name))
      if (a === 'cluster' && name == null && method === 'GET') return send(res, 200, await h.clusterInfo())
      if (a === 'cluster' && name === 'token' && op == null && method === 'POST') {
        const t = await body<{ ttlMs?: unknown }>(req)
        const ttl = t.ttlMs ?? 3_600_000
        if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1000 || ttl > 30 * 86_400_000) throw new MscError('INVALID_ARGUMENT', 'a token lives from 1 s to 30 days')
        return send(res, 201, await h.clusterToken(ttl))
      }
      if (a !== 'containers') throw new MscError('NOT_FOUND', `no route ${method} ${url.pathname}`)
      if (name == null) {
        if (method === 'GET') return send(res, 200, await h.list())
        if (method === 'POST') return send(res, 201, await h.run(await body<RunRequest>(req), ac.signal))
      } else if (op == null) {
        if (method === 'GET') return send(res, 200, await h.inspect(name))
        if (method === 'DELETE') {
          await h.remove(name, url.searchParams.get('force') === '1')
          return send(res, 200, { removed: name })
        }
      } else if (method === 'POST' && op === 'stop') {
        return send(res, 200, await h.stop(name))
      } else if (method === 'POST' && op === 'checkpoint') {
        return send(res, 201, await h.checkpoint(name, await body<CheckpointRequest>(req), ac.signal))
      } else if (method === 'GET' && op === 'checkpoints') {
        return send(res, 200, await h.checkpoints(name))
      } else if (method === 'POST' && op === 'restore') {
        return send(res, 200, await h.restore(name, await body<RestoreRequest>(req), ac.signal))
      } else if (method === 'POST' && op === 'migrate') {
        const mreq = await body<MigrateRequestBody>(req)
        // NDJSON: progress lines while it runs, then one result line. The head goes out
        // with the first line, so a request refused up front still gets a JSON error.
        const line = (e: MigrateEvent): void => {
          if (res.writableEnded) return
          if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/x-ndjson' })
          res.write(JSON.stringify(e) + '\n')
        }
        const result = await h.migrate(name, mreq, line, ac.signal)
        line({ type: 'result', result })
        res.end()
        return
      } else if (method === 'GET' && op === 'logs') {
        return await this.streamLogs(name, url.searchParams.get('follow') === '1', res)
      }
      throw new MscError('NOT_FOUND', `no route ${method} ${url.pathname}`)
    } catch (err) {
      const e = toMscError(err)
      if (e.code === 'INTERNAL') this.log.error({ err }, 'api request failed')
      else this.log.debug({ code: e.code, msg: e.message }, 'api request refused')
      if (!res.headersSent) send(res, STATUS[e.code] ?? 500, { error: e.toJSON() })
      else res.destroy()
    }
  }

  /**
   * NDJSON: the events the node kept, then (follow) each new one as it happens, until
   * the client goes away. A client that does not read is cut off rather than buffered
   * without bound.
   */
  private streamEvents (follow: boolean, res: http.ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    const unsubscribe = this.handlers.events((e) => {
      if (res.writableEnded) return
      if (res.writableLength > 4 * 1024 * 1024) {
        stop()
        return
      }
      res.write(JSON.stringify(e) + '\n')
    })
    const stop = (): void => {
      unsubscribe()
      this.followers.delete(stop)
      if (!res.writableEnded) res.end()
    }
    if (!follow) {
      stop()
      return
    }
    this.followers.add(stop)
    res.on('close', stop)
  }

  /**
   * Sends the container's output so far and, with follow, what it writes next, until
   * the client goes away. Follows LOG across a rotation by watching its size.
   */
  private async streamLogs (name: string, follow: boolean, res: http.ServerResponse): Promise<void> {
    const [rotated, current] = await this.handlers.logFiles(name)
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    for (const f of [rotated!, current!]) {
      try {
        await pipeFile(f, 0, res)
      } catch {}
    }
    if (!follow) {
      res.end()
      return
    }
    let pos = (await fsp.stat(current!).catch(() => ({ size: 0 }))).size
    let busy = false
    const tick = async (): Promise<void> => {
      if (busy) return
      busy = true
      try {
        const st = await fsp.stat(current!).catch(() => null)
        if (st == null) {
          // The container left this node (migrated): say where, then end.
          const moved = await this.handlers.movedTo(name).catch(() => null)
          if (moved != null) {
            res.write(`[msc] ${name} moved to ${moved.toName} (${moved.to}) at ${moved.at}; follow it there: msc logs -f ${name} on that node\n`)
            stop()
          }
          return
        }
        if (st.size < pos) pos = 0 // rotated: start the new file from its beginning
        if (st.size > pos) pos = await pipeFile(current!, pos, res)
      } finally {
        busy = false
      }
    }
    const timer = setInterval(() => {
      void tick()
    }, 200)
    const stop = (): void => {
      clearInterval(timer)
      this.followers.delete(stop)
      res.end()
    }
    this.followers.add(stop)
    res.on('close', stop)
  }
}

async function pipeFile (file: string, start: number, res: http.ServerResponse): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const rs = fs.createReadStream(file, { start })
    let pos = start
    rs.on('data', (d) => {
      pos += d.length
      res.write(d)
    })
    rs.on('end', () => resolve(pos))
    rs.on('error', reject)
  })
}

function send (res: http.ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

async function body<T> (req: http.IncomingMessage): Promise<T> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > MAX_BODY) throw new MscError('INVALID_ARGUMENT', 'request body too large')
    chunks.push(c as Buffer)
  }
  if (size === 0) return {} as T
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
    if (v == null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object')
    return v as T
  } catch (err) {
    throw new MscError('INVALID_ARGUMENT', `request body is not a JSON object: ${(err as Error).message}`)
  }
}
