/**
 * The container log shim's binary (log-shim.c, compiled static by `npm run setup` into
 * node_modules/.cache/msc/log-shim/HASH/). A node must not compile on its critical
 * path, so it asks for the binary once at start-up: built already, or built then, or
 * start-up fails naming `npm run setup`.
 */
import { fileURLToPath } from 'node:url'
import type { AbortOptions } from '@libp2p/interface'
import { MscError } from '../../util/errors.ts'
import { builtStaticBinary, staticBinary } from '../../util/static-binary.ts'

export const LOG_SHIM_SOURCE = fileURLToPath(new URL('./log-shim.c', import.meta.url))
const NAME = 'log-shim'

/** The binary for the current log-shim.c when it was built, else undefined. */
export async function builtLogShim (): Promise<string | undefined> {
  return await builtStaticBinary(NAME, LOG_SHIM_SOURCE)
}

/** The binary, compiled now when it is missing; fails with an error naming `npm run setup`. */
export async function buildLogShim (options?: AbortOptions): Promise<string> {
  try {
    return await staticBinary(NAME, LOG_SHIM_SOURCE, options)
  } catch (err) {
    options?.signal?.throwIfAborted()
    const why = (err as Error).message
    throw new MscError('INVALID_STATE', `the container log shim is not built and cannot be built here (${why}): run \`npm run setup\``, (err as MscError).details ?? [], { cause: err })
  }
}

let ready: Promise<string> | undefined

/**
 * buildLogShim() once per process: what the launcher and the node's start-up ask for.
 * Takes no signal: the one build is shared by every caller.
 */
export async function logShimBinary (): Promise<string> {
  ready ??= buildLogShim().catch((err: unknown) => {
    ready = undefined
    throw err
  })
  return await ready
}
