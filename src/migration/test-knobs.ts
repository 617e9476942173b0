import type { Logger } from '../util/logger.ts'

/**
 * Fault-injection points for the crash tests (test/integration/migration-crash.test.ts).
 * Test-only: nothing happens unless the node's environment names the point.
 *
 *   MSC_TEST_PAUSE_AT=POINT[,POINT]   the migration waits MSC_TEST_PAUSE_MS (default
 *                                     20000) at each named point, after logging
 *                                     "MSC_TEST_PAUSE_AT: pausing at POINT", so that a test
 *                                     can kill or restart the node right there.
 *   points: source-dumped     the final dump and its journal are on disk, nothing sent yet
 *           source-restored   the target said "restored"; journal written, commit not sent
 *           target-adopted    the container runs here, "restored" not yet sent
 *           target-restored   "restored" sent, the decision not yet read
 *           replicate-partial a replication generation is half sent to a standby (its
 *                             pagemaps are there, its pages not): src/replication
 *
 *   MSC_TEST_CUT_PAGES_AFTER=BYTES    the source cuts a post-copy page stream once it
 *                                     has forwarded BYTES of its page server's output
 *                                     (src/protocols/pages/tunnel.ts): a link that fails
 *                                     after the target resumed the container.
 *   MSC_TEST_FAIL_COMMIT=enospc[:N]   the first N (default 1) commits of incoming
 *                                     migrations fail with ENOSPC (src/node/migration-host.ts).
 */
export type PausePoint = 'source-dumped' | 'source-restored' | 'target-adopted' | 'target-restored' | 'replicate-partial'

export async function testPause (point: PausePoint, log: Logger, signal?: AbortSignal): Promise<void> {
  const at = process.env.MSC_TEST_PAUSE_AT
  if (at == null || at === '' || !at.split(',').map((s) => s.trim()).includes(point)) return
  const ms = Number(process.env.MSC_TEST_PAUSE_MS ?? 20_000)
  log.warn({ point, ms }, `MSC_TEST_PAUSE_AT: pausing at ${point} for ${ms} ms`)
  await new Promise<void>((resolve) => {
    const t = setTimeout(done, Number.isFinite(ms) && ms > 0 ? ms : 20_000)
    function done (): void {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
  log.warn({ point }, `MSC_TEST_PAUSE_AT: resuming after ${point}`)
}

let commitFailuresLeft: number | undefined

/** MSC_TEST_FAIL_COMMIT: throws ENOSPC while failures are left to inject. */
export function testFailCommit (): void {
  const v = process.env.MSC_TEST_FAIL_COMMIT
  if (v == null || v === '') return
  const m = /^enospc(?::(\d+))?$/.exec(v)
  if (m == null) return
  commitFailuresLeft ??= m[1] != null ? Number(m[1]) : 1
  if (commitFailuresLeft <= 0) return
  commitFailuresLeft--
  const err = new Error('ENOSPC: no space left on device (MSC_TEST_FAIL_COMMIT)') as NodeJS.ErrnoException
  err.code = 'ENOSPC'
  throw err
}

/** MSC_TEST_CUT_PAGES_AFTER: bytes after which the source cuts a page stream, or undefined. */
export function testCutPagesAfter (): number | undefined {
  const v = Number(process.env.MSC_TEST_CUT_PAGES_AFTER)
  return Number.isSafeInteger(v) && v > 0 ? v : undefined
}

/**
 * MSC_TEST_CUT_STREAMED_PAGES_AFTER=N (source node, tests only): the sealed page
 * connection of a stop-copy dump fails after N bytes went out, so the dump fails midway.
 */
export function testCutStreamedPagesAfter (): number | undefined {
  const v = Number(process.env.MSC_TEST_CUT_STREAMED_PAGES_AFTER)
  return Number.isSafeInteger(v) && v > 0 ? v : undefined
}
