import fs from 'node:fs/promises'
import path from 'node:path'
import crypto from 'node:crypto'
import { MscError } from '../util/errors.ts'
import { writeFileAtomic } from '../util/atomic-file.ts'

/**
 * The layout of a node's data directory, in one place:
 *
 *   DIR/node-id                  8 hex chars made once: names this node's cgroups
 *   DIR/msc.sock                 control API (0600)
 *   DIR/node.pid                 the running daemon, so two never share a DIR
 *   DIR/ipc.sock                 container requests (datagrams: CHECKPOINT, MIGRATE)
 *   DIR/peer.key                 libp2p identity (0600)
 *   DIR/moved/NAME.json          where a container that left this node went
 *   DIR/bundles/DIGEST/          received rootfs copies, reused by later migrations
 *   DIR/runc/                    runc --root
 *   DIR/containers/NAME/
 *       container.json           msc's record of the container
 *       bundle/config.json       the config runc uses (root.path -> the user's rootfs)
 *       container.log[.1]        its output (bounded, rotated once)
 *       checkpoints/CKID/        CRIU images + meta.json
 *       work/                    CRIU work dirs (logs of dumps and restores)
 *   DIR/tmp/                     partial downloads, renamed into place when whole
 *   DIR/msc-data-dir             marker: this is an msc data dir, and its format version
 */
export interface MovedNote {
  container: string
  to: string
  toName: string
  at: string
}

export class DataDir {
  readonly root: string

  constructor (root: string) {
    this.root = root
  }

  get runcRoot (): string {
    return path.join(this.root, 'runc')
  }
  /** Datagram socket containers send CHECKPOINT / MIGRATE to (bind-mounted at /run/msc.sock). */
  get requestSocket (): string {
    return path.join(this.root, 'ipc.sock')
  }
  /** The CRIU configuration runc hands CRIU for containers in the host's network (CRIU_CONFIG_ANNOTATION). */
  get criuConfigFile (): string {
    return path.join(this.root, 'criu-host-network.conf')
  }
  /**
   * The CRIU configuration of `--network lan` containers made before each had its own
   * (CRIU_LAN_NETWORK_CONFIG); still written at every start for them.
   */
  get criuLanConfigFile (): string {
    return path.join(this.root, 'criu-lan-network.conf')
  }
  /**
   * A `--network lan` container's own CRIU configuration (criu.conf in its directory):
   * connections repaired (CRIU_LAN_NETWORK_CONFIG), except while a replication
   * generation is dumped or a failover restores one (CRIU_HOST_NETWORK_CONFIG: closed).
   */
  criuConfigOf (name: string): string {
    return path.join(this.containerDir(name), 'criu.conf')
  }
  get pidFile (): string {
    return path.join(this.root, 'node.pid')
  }
  get tmp (): string {
    return path.join(this.root, 'tmp')
  }
  get containersDir (): string {
    return path.join(this.root, 'containers')
  }
  containerDir (name: string): string {
    return path.join(this.containersDir, name)
  }
  /** Fenced copies set aside when this node restored the same name from a replica (replica-ops.ts). */
  get fencedDir (): string {
    return path.join(this.containersDir, '.fenced')
  }
  recordFile (name: string): string {
    return path.join(this.containerDir(name), 'container.json')
  }
  runtimeBundle (name: string): string {
    return path.join(this.containerDir(name), 'bundle')
  }
  logFile (name: string): string {
    return path.join(this.containerDir(name), 'container.log')
  }
  pidFileOf (name: string): string {
    return path.join(this.containerDir(name), 'container.pid')
  }
  checkpointsDir (name: string): string {
    return path.join(this.containerDir(name), 'checkpoints')
  }
  checkpointDir (name: string, id: string): string {
    return path.join(this.checkpointsDir(name), id)
  }
  workDir (name: string, what: string): string {
    return path.join(this.containerDir(name), 'work', what)
  }

  movedFile (name: string): string {
    return path.join(this.root, 'moved', `${name}.json`)
  }

  /** Remembers where a container that left this node went (msc logs says so). */
  async writeMoved (name: string, to: { peerId: string; name: string }, extra: Record<string, unknown> = {}): Promise<void> {
    await fs.mkdir(path.dirname(this.movedFile(name)), { recursive: true })
    await writeFileAtomic(this.movedFile(name), JSON.stringify({ container: name, to: to.peerId, toName: to.name, at: new Date().toISOString(), ...extra }) + '\n')
  }

  async readMoved (name: string): Promise<MovedNote | null> {
    try {
      return JSON.parse(await fs.readFile(this.movedFile(name), 'utf8')) as MovedNote
    } catch {
      return null
    }
  }

  async forgetMoved (name: string): Promise<void> {
    await fs.rm(this.movedFile(name), { force: true })
  }

  get markerFile (): string {
    return path.join(this.root, MARKER)
  }

  /**
   * Makes the data dir ready, after checking that it may be used: the node chmods it
   * 0700, empties DIR/tmp and later removes what it finds stale, so a wrong
   * `--data-dir` (`/`, `/etc`, someone's home) must be refused before anything is
   * touched.
   */
  async init (): Promise<void> {
    const kind = await inspectDataDir(this.root)
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 })
    await fs.chmod(this.root, 0o700)
    for (const d of [this.runcRoot, this.containersDir, this.tmp]) await fs.mkdir(d, { recursive: true, mode: 0o700 })
    if (kind !== 'msc') await writeFileAtomic(this.markerFile, JSON.stringify({ format: DATA_DIR_FORMAT }) + '\n', { mode: 0o600 })
    await writeFileAtomic(this.criuConfigFile, CRIU_HOST_NETWORK_CONFIG, { mode: 0o600 })
    await writeFileAtomic(this.criuLanConfigFile, CRIU_LAN_NETWORK_CONFIG, { mode: 0o600 })
  }

  /** A short id made once per data dir; it names the node's cgroup parent. */
  async nodeId (): Promise<string> {
    const file = path.join(this.root, 'node-id')
    try {
      const id = (await fs.readFile(file, 'utf8')).trim()
      if (/^[0-9a-f]{8}$/.test(id)) return id
    } catch {}
    const id = crypto.randomBytes(4).toString('hex')
    await writeFileAtomic(file, id + '\n', { mode: 0o600 })
    return id
  }
}

/**
 * A container in the host's network shares its address with the node, so its TCP
 * connections cannot follow it to another host: CRIU dumps them without their state and
 * without blocking them (a checkpoint that leaves the container running keeps serving
 * its clients), and restores them closed, so that clients see a reset and reconnect.
 * Without this, CRIU refuses to dump a container with a connected client at all.
 * Connections still in a listening socket's queue (not yet accepted) are skipped: CRIU
 * refuses the dump otherwise ("In-flight connection"), which failed 12 of 13 generations
 * of a redis taking 20 new connections a second; their clients send their SYN again.
 */
export const CRIU_HOST_NETWORK_CONFIG = '# Written by msc at node start; edits are overwritten.\ntcp-close\nskip-in-flight\n'

/**
 * A container with its own address on the LAN keeps it on every node, so its TCP
 * connections move with it: CRIU dumps them with TCP repair and restores them
 * established. Connections not yet accepted are skipped, as for the host's network.
 */
export const CRIU_LAN_NETWORK_CONFIG = '# Written by msc at node start; edits are overwritten.\ntcp-established\nskip-in-flight\n'

/** The layout version this msc writes and reads (the marker's `format`). */
export const DATA_DIR_FORMAT = 1
const MARKER = 'msc-data-dir'

/**
 * Directories that are never a data dir themselves (their subdirectories may be:
 * /var/lib/msc, /tmp/x). Taking one would chmod it 0700 and fill it with msc's files.
 */
export const SYSTEM_DIRS: ReadonlySet<string> = new Set(['/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib64', '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/var'])

/** What an msc data dir made before the marker existed always has one of. */
const LEGACY_ENTRIES = ['node-id', 'peer.key', 'containers']
/** A fresh file system's own entry: a dedicated mount point counts as empty. */
const IGNORED_ENTRIES = new Set(['lost+found'])

/** Why `dir` (absolute, normalised) may not be a data dir, or null. Pure: no file system. */
export function systemDirReason (dir: string): string | null {
  if (SYSTEM_DIRS.has(dir)) return `${dir} is a system directory; use a directory of its own, e.g. /var/lib/msc`
  return null
}

/**
 * Classifies a would-be data dir from its entries (null: it does not exist) and the
 * marker's text, if any. Pure, for tests. 'msc': a data dir of this format; 'legacy':
 * one made before the marker (the marker is written now); 'new': missing or empty.
 */
export function classifyDataDir (dir: string, entries: string[] | null, marker: string | null): 'msc' | 'legacy' | 'new' {
  if (marker != null) {
    let format: unknown
    try {
      format = (JSON.parse(marker) as { format?: unknown }).format
    } catch {}
    if (typeof format !== 'number' || !Number.isInteger(format) || format < 1) {
      throw new MscError('INVALID_ARGUMENT', `data dir ${dir}: its ${MARKER} marker is unreadable; check the directory, then remove the marker to use it again`)
    }
    if (format > DATA_DIR_FORMAT) {
      throw new MscError('INVALID_ARGUMENT', `data dir ${dir} has format ${format}, made by a newer msc (this one reads format ${DATA_DIR_FORMAT})`)
    }
    return 'msc'
  }
  const present = (entries ?? []).filter((e) => !IGNORED_ENTRIES.has(e))
  if (present.length === 0) return 'new'
  if (LEGACY_ENTRIES.some((e) => present.includes(e))) return 'legacy'
  const shown = present.slice(0, 3).join(', ') + (present.length > 3 ? ', ...' : '')
  throw new MscError('INVALID_ARGUMENT', `data dir ${dir} is not empty (${shown}) and is not an msc data dir (no ${MARKER} marker): use an empty or new directory`)
}

/** Checks `root` may be used as a data dir, touching nothing. Throws INVALID_ARGUMENT. */
export async function inspectDataDir (root: string): Promise<'msc' | 'legacy' | 'new'> {
  const abs = path.resolve(root)
  // Both the name given and where it really leads (a symlink to /etc is /etc).
  const real = await fs.realpath(abs).catch(() => abs)
  const reason = systemDirReason(abs) ?? systemDirReason(real)
  if (reason != null) throw new MscError('INVALID_ARGUMENT', `refusing data dir ${root}: ${reason}`)
  let entries: string[] | null = null
  try {
    const st = await fs.stat(abs)
    if (!st.isDirectory()) throw new MscError('INVALID_ARGUMENT', `data dir ${root} exists and is not a directory`)
    entries = await fs.readdir(abs)
  } catch (err) {
    if (err instanceof MscError) throw err
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTDIR') throw new MscError('INVALID_ARGUMENT', `data dir ${root}: a parent of it is not a directory`)
    if (code !== 'ENOENT') throw err
  }
  const marker = entries?.includes(MARKER) === true ? await fs.readFile(path.join(abs, MARKER), 'utf8') : null
  return classifyDataDir(root, entries, marker)
}
