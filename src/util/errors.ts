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
  const e = err as NodeJS.ErrnoException
  if (e?.code === 'ENOSPC') return new MscError('NO_SPACE', `no space left on device: ${e.message}`, [], { cause: err })
  return new MscError('INTERNAL', e?.message ?? String(err), [], { cause: err })
}

/** What went wrong, in one line, whatever was thrown (an abort reason need not be an Error). */
export function errText (err: unknown): string {
  if (err instanceof Error) return err.message
  if (typeof err === 'object' && err != null && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message
  return String(err)
}
