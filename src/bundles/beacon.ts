/**
 * The beacon bundle: a static C program (beacon.c) that holds N MiB of seeded
 * pseudo-random memory and sends a UDP datagram `SEQ CHECKSUM PASS INCARNATION` to a
 * target every few ms. Seen from a third host, a migration shows as a gap in arrivals;
 * a repeated SEQ means two copies ran, a SEQ going back or a new INCARNATION means a
 * restart, a new CHECKSUM means memory was lost (test/helpers/observer.ts reads them).
 *
 * The binary is compiled once per version of beacon.c and kept under
 * node_modules/.cache/msc/beacon/HASH/ (src/util/static-binary.ts; the rootfs has no
 * libraries, so it is linked static).
 */
import fs from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AbortOptions } from '@libp2p/interface'
import { MscError } from '../util/errors.ts'
import { staticBinary } from '../util/static-binary.ts'
import { finishBundle, installBusybox, resetBundle } from './counter.ts'
import type { BundleInfo } from './index.ts'
import { defaultSpec } from './oci-spec.ts'

export const BEACON_SOURCE = fileURLToPath(new URL('./beacon.c', import.meta.url))

/** Where the program is inside the bundle's rootfs. */
export const BEACON_PATH = '/beacon'

export type BeaconBundleOptions = {
  /** MiB of memory the beacon fills and keeps (default 64). */
  memoryMiB?: number
  /** `IPV4:PORT` the datagrams go to. */
  target: string
  /** ms between two datagrams (default 5). */
  intervalMs?: number
  /** Seed of the memory pattern (default 1): the same seed, the same checksum. */
  seed?: number
  /** Pages rewritten (same content) per datagram: a dirty rate that keeps the checksum (default 0). */
  dirtyPagesPerTick?: number
}

export async function writeBeaconBundle (dir: string, opts: BeaconBundleOptions, options?: AbortOptions): Promise<BundleInfo> {
  const memoryMiB = opts.memoryMiB ?? 64
  const intervalMs = opts.intervalMs ?? 5
  const seed = opts.seed ?? 1
  const dirtyPages = opts.dirtyPagesPerTick ?? 0
  if (!Number.isInteger(memoryMiB) || memoryMiB < 1 || memoryMiB > 65536) {
    throw new MscError('INVALID_ARGUMENT', `memoryMiB must be an integer in 1..65536, got ${String(opts.memoryMiB)}`)
  }
  if (!Number.isInteger(intervalMs) || intervalMs < 1) {
    throw new MscError('INVALID_ARGUMENT', `intervalMs must be an integer >= 1, got ${String(opts.intervalMs)}`)
  }
  if (!Number.isSafeInteger(seed) || seed < 0) throw new MscError('INVALID_ARGUMENT', `seed must be an integer >= 0, got ${String(opts.seed)}`)
  if (!Number.isInteger(dirtyPages) || dirtyPages < 0) {
    throw new MscError('INVALID_ARGUMENT', `dirtyPagesPerTick must be an integer >= 0, got ${String(opts.dirtyPagesPerTick)}`)
  }
  parseTarget(opts.target)

  const binary = await beaconBinary(options)
  const rootfs = await resetBundle(dir)
  await installBusybox(rootfs)
  await fs.copyFile(binary, path.join(rootfs, BEACON_PATH))
  await fs.chmod(path.join(rootfs, BEACON_PATH), 0o755)
  const args = [
    BEACON_PATH,
    'send',
    '--to',
    opts.target,
    '--mib',
    String(memoryMiB),
    '--interval-ms',
    String(intervalMs),
    '--seed',
    String(seed),
    '--dirty-pages',
    String(dirtyPages)
  ]
  // 'beacon' is not (yet) one of index.ts's BundleKinds; the cast goes once it is.
  return finishBundle(dir, 'beacon', defaultSpec({ args, hostname: 'beacon' }))
}

/** `IPV4:PORT`, checked here so that a typo fails before a container starts. */
export function parseTarget (target: string): { host: string; port: number } {
  const i = target.lastIndexOf(':')
  const host = target.slice(0, i)
  const port = Number(target.slice(i + 1))
  if (i < 0 || !net.isIPv4(host) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new MscError('INVALID_ARGUMENT', `target must be IPV4:PORT, got '${target}'`)
  }
  return { host, port }
}

/** The compiled beacon for the current beacon.c (built on first use, then reused). */
export async function beaconBinary (options?: AbortOptions): Promise<string> {
  return await staticBinary('beacon', BEACON_SOURCE, options)
}
