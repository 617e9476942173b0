import fs from 'node:fs/promises'
import path from 'node:path'
import crypto from 'node:crypto'

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
 */
export interface MovedNote { container: string, to: string, toName: string, at: string }

export class DataDir {
  readonly root: string

  constructor (root: string) {
    this.root = root
  }

  get runcRoot (): string { return path.join(this.root, 'runc') }
  /** Datagram socket containers send CHECKPOINT / MIGRATE to (bind-mounted at /run/msc.sock). */
  get requestSocket (): string { return path.join(this.root, 'ipc.sock') }
  get pidFile (): string { return path.join(this.root, 'node.pid') }
  get tmp (): string { return path.join(this.root, 'tmp') }
  get containersDir (): string { return path.join(this.root, 'containers') }
  containerDir (name: string): string { return path.join(this.containersDir, name) }
  recordFile (name: string): string { return path.join(this.containerDir(name), 'container.json') }
  runtimeBundle (name: string): string { return path.join(this.containerDir(name), 'bundle') }
  logFile (name: string): string { return path.join(this.containerDir(name), 'container.log') }
  pidFileOf (name: string): string { return path.join(this.containerDir(name), 'container.pid') }
  checkpointsDir (name: string): string { return path.join(this.containerDir(name), 'checkpoints') }
  checkpointDir (name: string, id: string): string { return path.join(this.checkpointsDir(name), id) }
  workDir (name: string, what: string): string { return path.join(this.containerDir(name), 'work', what) }

  movedFile (name: string): string { return path.join(this.root, 'moved', `${name}.json`) }

  /** Remembers where a container that left this node went (msc logs says so). */
  async writeMoved (name: string, to: { peerId: string, name: string }, extra: Record<string, unknown> = {}): Promise<void> {
    await fs.mkdir(path.dirname(this.movedFile(name)), { recursive: true })
    await fs.writeFile(this.movedFile(name), JSON.stringify({ container: name, to: to.peerId, toName: to.name, at: new Date().toISOString(), ...extra }) + '\n')
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

  async init (): Promise<void> {
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 })
    await fs.chmod(this.root, 0o700)
    for (const d of [this.runcRoot, this.containersDir, this.tmp]) await fs.mkdir(d, { recursive: true, mode: 0o700 })
  }

  /** A short id made once per data dir; it names the node's cgroup parent. */
  async nodeId (): Promise<string> {
    const file = path.join(this.root, 'node-id')
    try {
      const id = (await fs.readFile(file, 'utf8')).trim()
      if (/^[0-9a-f]{8}$/.test(id)) return id
    } catch {}
    const id = crypto.randomBytes(4).toString('hex')
    await fs.writeFile(file, id + '\n', { mode: 0o600 })
    return id
  }
}
