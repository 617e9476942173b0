import fs from 'node:fs/promises'
import path from 'node:path'
import { MscError } from '../util/errors.ts'
import { writeFileAtomic } from '../util/atomic-file.ts'

/** The parts of an OCI runtime config msc reads or rewrites; the rest passes through. */
export interface OciConfig {
  ociVersion?: string
  process?: { terminal?: boolean; args?: string[]; cwd?: string; env?: string[]; [k: string]: unknown }
  root?: { path?: string; readonly?: boolean }
  mounts?: Array<{ destination: string; type?: string; source?: string; options?: string[] }>
  linux?: { cgroupsPath?: string; namespaces?: Array<{ type: string; path?: string }>; [k: string]: unknown }
  [k: string]: unknown
}

export interface LoadedBundle {
  dir: string
  config: OciConfig
  rootfs: string
}

/**
 * Reads and checks an OCI bundle: `config.json` parses, names a process, and its root
 * is an existing directory. Every problem is an INVALID_BUNDLE error that says which.
 */
export async function loadBundle (dir: string): Promise<LoadedBundle> {
  const abs = path.resolve(dir)
  let st
  try {
    st = await fs.stat(abs)
  } catch {
    throw new MscError('INVALID_BUNDLE', `bundle directory ${abs} does not exist`)
  }
  if (!st.isDirectory()) throw new MscError('INVALID_BUNDLE', `bundle ${abs} is not a directory`)
  let text: string
  try {
    text = await fs.readFile(path.join(abs, 'config.json'), 'utf8')
  } catch {
    throw new MscError('INVALID_BUNDLE', `bundle ${abs} has no config.json`)
  }
  let config: OciConfig
  try {
    config = JSON.parse(text) as OciConfig
  } catch (err) {
    throw new MscError('INVALID_BUNDLE', `bundle ${abs}: config.json is not valid JSON (${(err as Error).message})`)
  }
  if (config == null || typeof config !== 'object' || Array.isArray(config)) {
    throw new MscError('INVALID_BUNDLE', `bundle ${abs}: config.json is not an object`)
  }
  const args = config.process?.args
  if (!Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')) {
    throw new MscError('INVALID_BUNDLE', `bundle ${abs}: config.json has no process.args`)
  }
  const rootPath = config.root?.path
  if (typeof rootPath !== 'string' || rootPath === '') throw new MscError('INVALID_BUNDLE', `bundle ${abs}: config.json has no root.path`)
  const rootfs = path.resolve(abs, rootPath)
  try {
    if (!(await fs.stat(rootfs)).isDirectory()) throw new Error('not a directory')
  } catch {
    throw new MscError('INVALID_BUNDLE', `bundle ${abs}: root ${rootfs} is not a directory`)
  }
  const exe = args[0]!
  if (exe.startsWith('/')) {
    try {
      await fs.lstat(path.join(rootfs, exe))
    } catch {
      throw new MscError('INVALID_BUNDLE', `bundle ${abs}: process ${exe} does not exist in the rootfs`)
    }
  }
  return { dir: abs, config, rootfs }
}

/** Where a bundle asks for the node's request socket (docs/container-requests.md). */
export const REQUEST_SOCKET_IN_CONTAINER = '/run/msc.sock'

/**
 * The annotation runc 1.1 reads (as a container label) for a CRIU configuration file that
 * it hands to CRIU on every checkpoint and restore. runc runs CRIU as root, and a CRIU
 * configuration can name scripts to run (`action-script`): only the node may set it.
 */
export const CRIU_CONFIG_ANNOTATION = 'org.criu.config'

export interface RuntimeConfigOptions {
  cgroupsPath: string
  /** The node's request socket, bound where the bundle asks for it. */
  requestSocket?: string
  /** The node's CRIU configuration file; null leaves the container without one. */
  criuConfig?: string | null
  /** A network namespace to join (a `--network lan` container's); absent: the bundle's own choice. */
  netnsPath?: string
}

/**
 * The config runc actually runs: the user's, with the root made absolute (the bundle
 * dir runc sees is the node's, not the user's), the node's cgroup path, no terminal
 * (CRIU needs the container's stdio to be pipes), and the node's CRIU configuration in
 * place of whatever the bundle named.
 */
export function runtimeConfig (b: LoadedBundle, opts: RuntimeConfigOptions): OciConfig {
  const c = structuredClone(b.config)
  c.root = { ...c.root, path: b.rootfs }
  // The socket lives in each node's own data dir: whatever source the bundle names
  // (or the node it came from used), bind this node's.
  const requestSocket = opts.requestSocket
  if (requestSocket != null && Array.isArray(c.mounts)) {
    c.mounts = c.mounts.map((m) => m.destination === REQUEST_SOCKET_IN_CONTAINER ? { ...m, source: requestSocket } : m)
  }
  c.process = { ...c.process, terminal: false }
  c.linux = { ...(c.linux ?? {}), cgroupsPath: opts.cgroupsPath }
  if (opts.netnsPath != null) {
    // runc joins it, and tells CRIU it is external: a dump leaves it out, a restore
    // puts the container back into the namespace config.json names on that node.
    const others = (Array.isArray(c.linux.namespaces) ? c.linux.namespaces : []).filter((n) => n.type !== 'network')
    c.linux.namespaces = [...others, { type: 'network', path: opts.netnsPath }]
  }
  const annotations: Record<string, unknown> = { ...(isRecord(c.annotations) ? c.annotations : {}) }
  delete annotations[CRIU_CONFIG_ANNOTATION]
  if (opts.criuConfig != null) annotations[CRIU_CONFIG_ANNOTATION] = opts.criuConfig
  if (Object.keys(annotations).length > 0 || c.annotations !== undefined) c.annotations = annotations
  return c
}

function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export async function writeRuntimeBundle (dir: string, config: OciConfig): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  // Restores after a crash read this config: it must be whole, never half-written.
  await writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(config, null, 2), { mode: 0o600 })
}
