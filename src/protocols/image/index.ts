/** `/msc/image/1.0.0`: moves a directory tree between nodes (protocols/image.md). */
export { IMAGE_PROTOCOL, REFUSAL_REASONS, type RefusalReason, type TreeHeader, type Verdict } from './messages.ts'
export { sendTree, type SendTreeOptions, type SendTreeResult } from './sender.ts'
export { receiveTree, type ReceiveTreeOptions, type ReceiveTreeResult, type TreeDestination, type TreeLimits } from './receiver.ts'
export { treeManifest, changedSince, type TreeManifest, type ManifestEntry, type EntryKind } from './manifest.ts'
export { pathProblem, symlinkProblem } from './paths.ts'
export { ProtocolError } from '../framing.ts'
