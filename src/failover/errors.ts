import { MscError } from '../util/errors.ts'

/**
 * Errors of lease acquisition (src/failover/lease-service.ts). A refusal carries each
 * grantor's answer, so that the caller (and `msc`'s error output) can say why: the
 * old owner's lease still runs, the owner is alive, a member did not answer...
 */

/** Why one member did not grant: a grantor's reason, or `unreachable` / `timeout` / `invalid-answer` / `error`. */
export interface GrantorRefusal {
  grantor: string
  reason: string
  detail: string
  currentEpoch?: number
  currentHolder?: string
}

/** No quorum of members granted the lease (a quorum became impossible, or everyone answered without one). */
export class LeaseRefusedError extends MscError {
  readonly container: string
  readonly epoch: number
  readonly granted: number
  readonly needed: number
  readonly refusals: GrantorRefusal[]

  constructor (init: { container: string; epoch: number; granted: number; needed: number; refusals: GrantorRefusal[] }) {
    const reasons = [...new Set(init.refusals.map((r) => r.reason))].join(', ')
    super(
      'INVALID_STATE',
      `lease of ${init.container} at epoch ${init.epoch} refused: ${init.granted} of ${init.needed} needed grants${reasons !== '' ? ` (${reasons})` : ''}`,
      init.refusals.map((r) => `${r.grantor}: ${r.reason}: ${r.detail}`)
    )
    this.name = 'LeaseRefusedError'
    this.container = init.container
    this.epoch = init.epoch
    this.granted = init.granted
    this.needed = init.needed
    this.refusals = init.refusals
  }
}
