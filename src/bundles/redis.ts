/**
 * The redis bundle: Debian's redis-server with exactly the shared libraries it links,
 * on the busybox base. A stateful workload whose keys must survive a migration.
 */
import { execa } from 'execa'
import { existsSync } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { MscError } from '../util/errors.ts'
import { copyIntoRootfs, finishBundle, installBusybox, resetBundle } from './counter.ts'
import type { BundleInfo } from './index.ts'
import { defaultSpec } from './oci-spec.ts'

/**
 * Where `npm run setup` puts the redis binaries: Debian's redis-tools unpacked into
 * $MSC_TOOLS_DIR/redis (never installed, so no system redis service), linked from
 * $MSC_TOOLS_DIR/bin. A host's own /usr/bin/NAME when that prefix is missing.
 */
function redisBinary (name: string): string {
  const own = `${process.env.MSC_TOOLS_DIR || '/opt/msc'}/bin/${name}`
  return existsSync(own) ? own : `/usr/bin/${name}`
}

/**
 * A symlink to redis-check-rdb: one binary that picks its role from argv[0]. Copying
 * follows the link, and the copy is named redis-server, so it serves.
 */
export const REDIS_SERVER = redisBinary('redis-server')
/** For tests, demos and benchmarks on the host. */
export const REDIS_CLI = redisBinary('redis-cli')
export const REDIS_BENCHMARK = redisBinary('redis-benchmark')

export type RedisBundleOptions = {
  port?: number
  /** Default 0.0.0.0: inside a test host's network namespace, other hosts must reach it. */
  bind?: string
}

export async function writeRedisBundle (dir: string, opts: RedisBundleOptions = {}): Promise<BundleInfo> {
  const port = opts.port ?? 6379
  const bind = opts.bind ?? '0.0.0.0'
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new MscError('INVALID_ARGUMENT', `port must be an integer in 1..65535, got ${String(opts.port)}`)
  }
  if (bind === '' || /\s/.test(bind)) throw new MscError('INVALID_ARGUMENT', `invalid bind address '${bind}'`)

  const libs = await sharedLibraries(REDIS_SERVER)
  const rootfs = await resetBundle(dir)
  await installBusybox(rootfs)
  for (const file of [REDIS_SERVER, ...libs]) await copyIntoRootfs(rootfs, file)
  await fs.writeFile(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n')
  await fs.writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n')
  await fs.mkdir(path.join(rootfs, 'data'))

  const args = [
    REDIS_SERVER,
    '--port',
    String(port),
    '--bind',
    bind,
    // No RDB/AOF: the state lives in memory only, which is what a checkpoint carries.
    '--save',
    '',
    '--appendonly',
    'no',
    '--protected-mode',
    'no',
    '--dir',
    '/data'
  ]
  return finishBundle(dir, 'redis', defaultSpec({ args, hostname: 'redis' }))
}

/**
 * The libraries `ldd` resolves for a binary, dynamic loader included, as host paths.
 * Copied to the same paths, the loader finds them without an ld.so.cache because
 * Debian's glibc searches /lib/x86_64-linux-gnu by default.
 */
export async function sharedLibraries (binary: string): Promise<string[]> {
  const { stdout } = await execa('ldd', [binary])
  const libs: string[] = []
  for (const raw of stdout.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('linux-vdso')) continue
    if (line.includes('not found')) throw new MscError('INVALID_BUNDLE', `${binary}: shared library missing on this host: ${line}`)
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line)
    if (m?.[1] !== undefined) libs.push(m[1])
  }
  if (libs.length === 0) throw new MscError('INVALID_BUNDLE', `ldd found no libraries for ${binary}: ${stdout}`)
  return libs
}
