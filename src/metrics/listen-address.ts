/**
 * `--metrics-listen HOST:PORT`: an IPv4 address, a host name or a bracketed IPv6
 * address, and a port. Pure, so that `msc node start` refuses a bad value before it
 * starts anything.
 */
export interface ListenAddress {
  host: string
  port: number
}

export function parseListenAddress (raw: string): ListenAddress | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})?)):(\d{1,5})$/.exec(raw.trim())
  if (m == null) return null
  const port = Number(m[3])
  if (port > 65535) return null
  const host = m[1] ?? m[2]!
  if (m[1] != null && !m[1].includes(':')) return null
  return { host, port }
}

/** HOST:PORT again, with brackets around an IPv6 host. */
export function formatListenAddress (a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`
}
