/**
 * Small C helpers msc compiles itself (the beacon workload, the container log shim):
 * linked static (they run inside bundles with no libraries, or on hosts and images
 * without a compiler), built once per version of their source and kept under
 * node_modules/.cache/msc/NAME/HASH/NAME. gcc 12 and static glibc are on the machines
 * msc is built on; `npm run setup` builds the helpers a node needs.
 */
import { execa } from 'execa'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AbortOptions } from '@libp2p/interface'
import { fsyncDir } from './atomic-file.ts'
import { MscError } from './errors.ts'

const CACHE_ROOT = fileURLToPath(new URL('../../node_modules/.cache/msc', import.meta.url))
const GCC_FLAGS = ['-O2', '-static', '-Wall', '-Wextra', '-Werror']

/** Where the binary of `source` (a .c file) is kept: it changes with the source and the flags. */
export async function staticBinaryPath (name: string, source: string): Promise<string> {
  const text = await fs.readFile(source)
  const hash = createHash('sha256').update(text).update('\0' + GCC_FLAGS.join(' ')).digest('hex').slice(0, 16)
  return path.join(CACHE_ROOT, name, hash, name)
}

/** The binary of `source` when it was built already, else undefined (compiles nothing). */
export async function builtStaticBinary (name: string, source: string): Promise<string | undefined> {
  const binary = await staticBinaryPath(name, source)
  return await fs.access(binary, fs.constants.X_OK).then(() => binary, () => undefined)
}

/**
 * The binary of `source`, compiled on first use (or when the source or the flags
 * change), then reused. Concurrent builds each write their own temp file and rename it
 * into place, so a reader never sees a partial binary.
 */
export async function staticBinary (name: string, source: string, options?: AbortOptions): Promise<string> {
  const built = await builtStaticBinary(name, source)
  if (built != null) return built
  const binary = await staticBinaryPath(name, source)
  const dir = path.dirname(binary)
  await fs.mkdir(dir, { recursive: true })
  const tmp = path.join(dir, `.${name}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const r = await execa('gcc', [...GCC_FLAGS, '-o', tmp, source], { reject: false, cancelSignal: options?.signal, timeout: 120_000 })
    if ((r as { code?: string }).code === 'ENOENT') {
      throw new MscError('INVALID_STATE', `gcc not found: ${name} is compiled from ${source} (Debian: apt-get install gcc libc6-dev)`)
    }
    if (r.isCanceled) throw options?.signal?.reason ?? new Error('aborted')
    if (r.exitCode !== 0) {
      const lines = String(r.stderr).split('\n').filter(Boolean)
      const hint = lines.some((l) => /cannot find -lc\b/.test(l)) ? ' (static glibc missing? Debian: apt-get install libc6-dev)' : ''
      throw new MscError('INTERNAL', `gcc failed to build ${source}${hint}`, lines.slice(-20))
    }
    const fh = await fs.open(tmp, 'r')
    try {
      await fh.sync()
    } finally {
      await fh.close()
    }
    await fs.rename(tmp, binary)
    await fsyncDir(dir)
  } finally {
    await fs.rm(tmp, { force: true })
  }
  return binary
}
