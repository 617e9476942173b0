/**
 * What a container's runc status means to msc: the one mapping that `msc ps`, the
 * heartbeat claims and the metrics share. Pure, no imports, so that any layer may use it.
 * No runc state (or `stopped`) is `checkpointed` when the record says its last
 * checkpoint stopped it, else `stopped`; runc's `pausing` counts as `paused`.
 */
export type RunState = 'running' | 'paused' | 'created' | 'stopped' | 'checkpointed'

export function runStateOf (runcStatus: string | undefined, checkpointed: boolean): RunState {
  if (runcStatus == null || runcStatus === 'stopped') return checkpointed ? 'checkpointed' : 'stopped'
  if (runcStatus === 'paused' || runcStatus === 'pausing') return 'paused'
  if (runcStatus === 'running') return 'running'
  return 'created'
}
