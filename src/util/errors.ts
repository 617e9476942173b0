/**
 * One error type for everything msc reports to a user: a stable machine-readable
 * `code` (documented in docs/cli.md) and a one-line human message. `details` carries
 * extra lines (for example the relevant lines of a CRIU log).
 */
export type MscErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_BUNDLE'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'INVALID_STATE'
  | 'RUNTIME_ERROR'
  | 'CRIU_ERROR'
  | 'CRIU_MISSING'
  | 'RUNC_MISSING'
  | 'NO_SPACE'
  | 'NETWORK'
  | 'DAEMON_UNREACHABLE'
  | 'INTERNAL'

export class MscError extends Error {
  readonly code: MscErrorCode
  readonly details: string[]

  constructor (code: MscErrorCode, message: string, details: string[] = [], options?: ErrorOptions) {
    super(message, options)
    this.name = 'MscError'
    this.code = code
    this.details = details
  }

  toJSON (): { code: MscErrorCode; message: string; details: string[] } {
    return { code: this.code, message: this.message, details: this.details }
  }
}

export function isMscError (err: unknown): err is MscError {
  return err instanceof MscError
}

/** Wraps anything thrown into an MscError without losing the original. */
export function toMscError (err: unknown): MscError {
  if (err instanceof MscError) return err
  const ev = eventText(err)
  if (ev != null) return new MscError('INTERNAL', ev, [], { cause: err })
  const e = err as NodeJS.ErrnoException
  if (e?.code === 'ENOSPC') return new MscError('NO_SPACE', `no space left on device: ${e.message}`, [], { cause: err })
  return new MscError('INTERNAL', e?.message ?? String(err), [], { cause: err })
}

/** What went wrong, in one line, whatever was thrown (an abort reason need not be an Error). */
export function errText (err: unknown): string {
  if (err instanceof Error) return err.message
  const ev = eventText(err)
  if (ev != null) return ev
  if (typeof err === 'object' && err != null && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message
  return String(err)
}

/**
 * libp2p rejects some waits with the DOM Event that ended them (a connection or stream
 * that closed under a dial), not with an Error: "[object Event]" says nothing.
 */
function eventText (err: unknown): string | null {
  if (typeof Event === 'undefined' || !(err instanceof Event)) return null
  return `the connection or stream closed (${err.type} event)`
}
