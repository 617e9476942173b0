/**
 * Example OCI bundles for msc, built from the host's Debian packages (no Docker, no
 * image pulls): `counter` (busybox shell loop) and `redis` (redis-server); and `beacon`
 * (beacon.ts: a UDP sender with checksummed memory, for measuring from outside).
 */
import fs from 'node:fs/promises'
import { MscError } from '../util/errors.ts'
import { writeCounterBundle } from './counter.ts'
import { writeRedisBundle } from './redis.ts'

export type BundleKind = 'counter' | 'redis' | 'beacon'

/** What `msc bundle` writes; the beacon (beacon.ts) needs a target and is made by the tests and benchmarks. */
export const BUNDLE_KINDS: readonly BundleKind[] = ['counter', 'redis']

export type BundleInfo = {
  /** Absolute path of the bundle directory (holds config.json and rootfs/). */
  dir: string
  kind: BundleKind
  /** The container's process.args. */
  args: string[]
  /** Bytes in regular files of the bundle. */
  sizeBytes: number
}

export type WriteBundleOptions = {
  /** Replace config.json and rootfs/ of a non-empty directory. */
  force?: boolean
  /** counter: ms between two numbers (default 1000). */
  intervalMs?: number
  /** redis: listening port (default 6379). */
  port?: number
  /** redis: listening address (default 0.0.0.0). */
  bind?: string
}

export { defaultSpec } from './oci-spec.ts'
export type { OciSpec, OciMount, DefaultSpecOptions } from './oci-spec.ts'
export { writeCounterBundle, writeRedisBundle }

export function isBundleKind (s: string): s is BundleKind {
  return (BUNDLE_KINDS as readonly string[]).includes(s)
}

export async function writeExampleBundle (kind: BundleKind, dir: string, opts: WriteBundleOptions = {}): Promise<BundleInfo> {
  if (!isBundleKind(kind)) {
    throw new MscError('INVALID_ARGUMENT', `unknown bundle kind '${String(kind)}' (expected one of: ${BUNDLE_KINDS.join(', ')})`)
  }
  const entries = await fs.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return []
    if (err.code === 'ENOTDIR') throw new MscError('INVALID_ARGUMENT', `${dir} exists and is not a directory`)
    throw err
  })
  if (entries.length > 0 && opts.force !== true) {
    throw new MscError('INVALID_ARGUMENT', `${dir} exists and is not empty (use --force to replace its bundle)`)
  }
  return kind === 'counter'
    ? writeCounterBundle(dir, { intervalMs: opts.intervalMs })
    : writeRedisBundle(dir, { port: opts.port, bind: opts.bind })
}
