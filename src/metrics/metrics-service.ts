/**
 * `--metrics-listen HOST:PORT`: Prometheus text at http://HOST:PORT/metrics, with
 * libp2p's own metrics (@libp2p/prometheus-metrics) and msc's (msc-metrics.ts) on one
 * registry. Read-only and unauthenticated: it serves counts and gauges, never a
 * container's arguments or environment (docs/metrics.md, docs/security.md).
 *
 * It reads the node only through a NodeReader (snapshot.ts, at each scrape) and its
 * event log; the daemon reports the end of each outgoing migration.
 */
import http from 'node:http'
import { Registry } from 'prom-client'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import type { Startable } from '@libp2p/interface'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import { MscMetrics } from './msc-metrics.ts'
import { readSnapshot, type NodeReader } from './snapshot.ts'
import { updatesOfEvent, updatesOfMigration, type EventLike, type MigrationEnd } from './updates.ts'
import { formatListenAddress, type ListenAddress } from './listen-address.ts'

/** The node's event log, as metrics read it (src/node/events.ts fits). */
export interface EventSource {
  history: () => EventLike[]
  subscribe: (fn: (e: EventLike) => void) => () => void
}

export interface MetricsServiceInit {
  listen: ListenAddress
  /** What the gauges read of the node at each scrape. */
  node: NodeReader
  events: EventSource
  /** Where libp2p's filesystem gauge (nodejs_fs_usage_bytes) looks: the data dir. */
  statfsLocation: string
  logger: Logger
}

/** A scrape that takes longer is answered with 503 (a hung runc must not pile up scrapes). */
const SCRAPE_TIMEOUT_MS = 10_000

export class MetricsService implements Startable {
  readonly registry = new Registry()
  private readonly msc: MscMetrics
  private readonly init: MetricsServiceInit
  private readonly log: Logger
  private server?: http.Server
  private unsubscribe?: () => void
  /** One snapshot at a time: concurrent scrapes share it. */
  private refreshing?: Promise<void>

  constructor (init: MetricsServiceInit) {
    this.init = init
    this.log = init.logger
    this.msc = new MscMetrics(this.registry)
  }

  /** libp2p's metrics, for createLibp2p: the same registry as msc's. */
  libp2pMetrics (): ReturnType<typeof prometheusMetrics> {
    return prometheusMetrics({ registry: this.registry, statfsLocation: this.init.statfsLocation })
  }

  /** An outgoing migration ended (succeeded or not). */
  migrationEnded (r: MigrationEnd): void {
    this.msc.apply(updatesOfMigration(r))
  }

  async start (): Promise<void> {
    // What happened before start (the log keeps the last 1000), then what comes.
    for (const e of this.init.events.history()) this.msc.apply(updatesOfEvent(e))
    this.unsubscribe = this.init.events.subscribe((e) => {
      this.msc.apply(updatesOfEvent(e))
    })
    const server = http.createServer((req, res) => {
      void this.serve(req, res)
    })
    server.requestTimeout = SCRAPE_TIMEOUT_MS * 2
    server.headersTimeout = SCRAPE_TIMEOUT_MS
    const where = formatListenAddress(this.init.listen)
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new MscError('INVALID_ARGUMENT', `--metrics-listen ${where}: cannot listen there: ${bindReason(err)}`, [], { cause: err }))
      }
      server.once('error', onError)
      server.listen({ host: this.init.listen.host, port: this.init.listen.port, exclusive: true }, () => {
        server.off('error', onError)
        resolve()
      })
    })
    server.on('error', (err) => {
      this.log.warn({ err: err.message }, 'metrics server error')
    })
    this.server = server
    this.log.info({ url: `http://${formatListenAddress(this.address() ?? this.init.listen)}/metrics` }, 'serving metrics')
  }

  /** Where it listens (the port the kernel chose, for port 0). */
  address (): ListenAddress | null {
    const a = this.server?.address()
    return a != null && typeof a === 'object' ? { host: a.address, port: a.port } : null
  }

  async stop (): Promise<void> {
    this.unsubscribe?.()
    this.unsubscribe = undefined
    const s = this.server
    this.server = undefined
    if (s == null) return
    s.closeAllConnections()
    await new Promise<void>((resolve) => {
      s.close(() => {
        resolve()
      })
    })
  }

  private async serve (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = (req.url ?? '/').split('?')[0]
    if (url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('only GET\n')
      return
    }
    try {
      await this.refresh()
      const body = await this.registry.metrics()
      res.writeHead(200, { 'content-type': this.registry.contentType })
      res.end(req.method === 'HEAD' ? undefined : body)
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'metrics scrape failed')
      if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' })
      res.end('metrics unavailable\n')
    }
  }

  private async refresh (): Promise<void> {
    this.refreshing ??= (async () => {
      let timer: NodeJS.Timeout | undefined
      try {
        const snapshot = await Promise.race([
          readSnapshot(this.init.node),
          new Promise<never>((_resolve, reject) => {
            timer = setTimeout(() => {
              reject(new Error(`reading the node took over ${SCRAPE_TIMEOUT_MS} ms`))
            }, SCRAPE_TIMEOUT_MS)
          })
        ])
        this.msc.setSnapshot(snapshot)
      } finally {
        clearTimeout(timer)
        this.refreshing = undefined
      }
    })()
    await this.refreshing
  }
}

/** The factory the daemon calls: no service without --metrics-listen. */
export function createMetricsService (init: Omit<MetricsServiceInit, 'listen'> & { listen: ListenAddress | null }): MetricsService | undefined {
  return init.listen == null ? undefined : new MetricsService({ ...init, listen: init.listen })
}

function bindReason (err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'EADDRINUSE':
      return 'the address is in use (another process listens on that port)'
    case 'EADDRNOTAVAIL':
      return 'no interface of this host has that address'
    case 'EACCES':
      return 'permission denied (ports below 1024 need privileges)'
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'the host name does not resolve'
    default:
      return err.message
  }
}
