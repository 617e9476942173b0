import fs from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import type { Logger } from '../util/logger.ts'
import { MscError } from '../util/errors.ts'
import type { Runc } from '../runtime/runc.ts'
import { loadBundle, writeRuntimeBundle } from '../runtime/bundle.ts'
import { removeTree } from '../runtime/mounts.ts'
import { checkpointLazy, startLazyPagesDaemon } from '../runtime/lazy-pages.ts'
import type { ContainerHost, LazyDump, LocalContainer } from '../migration/host.ts'
import type { PendingIncoming } from '../migration/settle.ts'
import type { Features } from '../migration/messages.ts'
import { countResume, readRecordFile, recoverInterruptedDump, writeRecordFile, type ContainerManager, type ContainerRecord, type DumpRecovery, type DumpRecoveryEnv } from './container-manager.ts'
import { HandoverSchema, type Handover } from '../cluster/handover.ts'
import { readOutgoingJournal, sourceReleased, JOURNAL_FILE } from '../migration/journal.ts'
import { testFailCommit } from '../migration/test-knobs.ts'
import { renameDurable, writeFileAtomic } from '../util/atomic-file.ts'
import { bundleDigest } from '../migration/bundle-digest.ts'
import type { DataDir } from './data-dir.ts'
import type { LanNetwork } from '../network/lan-address.ts'

/**
 * The node's side of migration: ContainerHost over its containers, runc and data dir.
 * Incoming containers live entirely under the data dir (DIR/containers/NAME/src holds
 * their config.json and rootfs); outgoing ones leave a note in DIR/moved/NAME.json.
 */
export class NodeMigrationHost implements ContainerHost {
  private readonly m: ContainerManager
  private readonly runc: Runc
  private readonly dd: DataDir
  private readonly log: Logger
  private readonly announce: () => void
  private featureCache?: Promise<Features>
  private readonly lazyDaemons = new Map<string, { kill: () => void; exited: Promise<void> }>()

  private readonly mayRun: (name: string) => boolean

  constructor (init: { manager: ContainerManager; runc: Runc; dataDir: DataDir; logger: Logger; announce: () => void; mayRun?: (name: string) => boolean }) {
    this.mayRun = init.mayRun ?? (() => true)
    this.m = init.manager
    this.runc = init.runc
    this.dd = init.dataDir
    this.log = init.logger
    this.announce = init.announce
  }

  /** Probed once: CRIU's view of this kernel does not change while the node runs. */
  async features (): Promise<Features> {
    this.featureCache ??= (async () => {
      const criu = this.runc.config.criuPath
      const has = async (f: string): Promise<boolean> => (await execa(criu, ['check', '--feature', f], { reject: false, timeout: 30_000 })).exitCode === 0
      const pipeMax = Number((await fs.readFile('/proc/sys/fs/pipe-max-size', 'utf8').catch(() => '0')).trim())
      return { preCopy: await has('mem_dirty_track'), postCopy: await has('uffd-noncoop') && pipeMax >= 16 * 1024 * 1024 }
    })()
    return await this.featureCache
  }

  async exclusive<T> (name: string, fn: () => Promise<T>): Promise<T> {
    return await this.m.exclusive(name, fn)
  }

  async describe (name: string): Promise<LocalContainer> {
    const r = await this.m.readRecord(name)
    if (r == null) throw new MscError('NOT_FOUND', `no container named ${name} on this node`)
    const st = await this.runc.state(name)
    if (st?.status !== 'running') throw new MscError('INVALID_STATE', `container ${name} is ${st?.status ?? 'stopped'}: only a running container migrates`)
    const b = await loadBundle(r.bundle)
    const log = this.dd.logFile(name)
    const logFiles: string[] = []
    for (const f of [log + '.1', log]) if (await exists(f)) logFiles.push(f)
    if (logFiles.length === 0) {
      await fs.writeFile(log, '')
      logFiles.push(log)
    }
    return { name, epoch: r.epoch ?? 1, resumes: r.resumes ?? 0, replicas: r.replicas ?? 0, bundleDir: b.dir, rootfs: b.rootfs, logFiles, ...(r.network != null ? { network: r.network } : {}) }
  }

  async dump (name: string, imageDir: string, signal: AbortSignal, opts: { parentPath?: string | undefined; pageServer?: string } = {}): Promise<void> {
    // Frozen by us first: CRIU then skips its own freezing, which polls the cgroup in
    // 100 ms steps, and a dump that fails leaves the container frozen for resume().
    // With a page server the dump leaves it running as CRIU found it: frozen. Its pages
    // are on the target only, so a rollback thaws it instead of restoring.
    const r = await this.m.readRecord(name)
    try {
      // In parallel: both must be done before CRIU reads the sockets, and both count as downtime.
      await Promise.all([this.quietForDump(name, r?.network), this.runc.pause(name)])
      await this.runc.checkpoint(name, { imageDir, workDir: imageDir, leaveRunning: opts.pageServer != null, pageServer: opts.pageServer, parentPath: opts.parentPath, tcpEstablished: this.m.tcpEstablishedFor(r), signal })
    } catch (err) {
      await this.resumeAfterFailedDump(name, r?.network)
      throw err
    }
    // runc's stopped container stays until release() (or resume(), on a rollback):
    // deleting it here cost 20-60 ms of the downtime.
  }

  async preDump (name: string, imageDir: string, parentPath: string | undefined, signal: AbortSignal): Promise<void> {
    await this.runc.checkpoint(name, { imageDir, workDir: imageDir, preDump: true, parentPath, tcpEstablished: this.m.settings.tcpEstablished, signal })
  }

  async dumpLazy (name: string, imageDir: string, port: number, signal: AbortSignal): Promise<LazyDump> {
    await fs.mkdir(imageDir, { recursive: true })
    // Frozen by us, not by CRIU: CRIU puts the cgroup back as it found it, so a dump that
    // fails once the target runs its copy (the page link cut) leaves ours frozen, not
    // running beside the other. The source resumes it when the target's copy is gone.
    // (CRIU also skips its own freezing, which waits in 100 ms steps.)
    const r = await this.m.readRecord(name)
    let d: Awaited<ReturnType<typeof checkpointLazy>>
    try {
      await Promise.all([this.quietForDump(name, r?.network), this.runc.pause(name)])
      d = await checkpointLazy(this.runc, name, { imageDir, workDir: imageDir, pageServer: `127.0.0.1:${port}`, tcpEstablished: this.m.tcpEstablishedFor(r), signal })
    } catch (err) {
      await this.resumeAfterFailedDump(name, r?.network)
      throw err
    }
    const done = d.done.then(async () => {
      await this.runc.delete(name, { force: true })
    })
    done.catch(() => {})
    return { imagesReady: d.imagesReady, done, cancel: d.cancel }
  }

  /**
   * A lan container's address must go still before CRIU reads its sockets: CRIU does
   * not lock a network namespace it does not own, and whatever the kernel still
   * answers (ACKs, a window update) after the dump would not match the restored
   * sockets. It stays quiet here until resume() or release().
   */
  private async quietForDump (name: string, net: LanNetwork | undefined): Promise<void> {
    if (net != null) await this.m.mustLan().quiet(name) // a failure: resumeAfterFailedDump() makes it live again
  }

  /** A dump that failed before it began leaves the container as we froze it: it runs on. */
  private async resumeAfterFailedDump (name: string, net?: LanNetwork): Promise<void> {
    const st = await this.runc.state(name).catch(() => null)
    if (st?.status === 'paused') await this.runc.resume(name).catch((err) => this.log.error({ name, err: (err as Error).message }, 'could not resume the container after a failed dump'))
    if (net != null) await this.m.mustLan().activate(name, net).catch((err) => this.log.error({ name, err: (err as Error).message }, 'could not make the address live again after a failed dump'))
  }

  async resume (name: string, imageDir: string, signal: AbortSignal): Promise<void> {
    // A replicated container whose lease ran out while it was frozen (the source was cut
    // off during the migration) may run elsewhere by now: a failover took it.
    const r = await this.m.readRecord(name)
    if (r?.leaseLost != null || r?.fenced != null || !this.mayRun(name)) {
      // Nothing of it runs here then: runc's stopped container (left by dump()), or the
      // frozen one a dump to a page server leaves, goes.
      const left = (await this.runc.state(name).catch(() => null))?.status
      if (left === 'stopped' || left === 'paused') await this.runc.delete(name, { force: true }).catch(() => {})
      throw new MscError('INVALID_STATE', `${name} is not resumed here: its lease ran out while it was frozen, and a standby may run it by now (msc ps on the others)`)
    }
    // Counted before it runs: a target that lost the decision takes our `running` claim
    // for this resume only at the new count (an older one may predate the freeze).
    if (r != null) {
      countResume(r)
      await this.m.writeRecord(r)
    }
    await this.resumeHere(name, imageDir, r, signal)
    // Its address is live here again (the target never made it live, or has gone).
    if (r?.network != null) await this.m.mustLan().activate(name, r.network)
  }

  private async resumeHere (name: string, imageDir: string, r: ContainerRecord | null, signal: AbortSignal): Promise<void> {
    const st = await this.runc.state(name)
    if (st?.status === 'running') return // the dump never stopped it (post-copy cancelled before the freeze)
    if (st?.status === 'paused') {
      await this.runc.resume(name)
      return
    }
    if (st != null) await this.runc.delete(name, { force: true })
    const workDir = this.dd.workDir(name, `resume-${Date.now()}`)
    await fs.mkdir(workDir, { recursive: true })
    await this.runc.restore(name, this.dd.runtimeBundle(name), {
      imageDir,
      workDir,
      tcpEstablished: this.m.tcpEstablishedFor(r),
      logFile: this.dd.logFile(name),
      logMaxBytes: this.m.settings.logMaxBytes,
      pidFile: this.dd.pidFileOf(name),
      signal
    })
    this.log.info({ name }, 'container resumed on the source after a failed migration')
  }

  async release (name: string, movedTo: { peerId: string; name: string }): Promise<void> {
    const r = await this.m.readRecord(name)
    await this.runc.delete(name, { force: true }).catch(() => {})
    // Quiet since the dump, so its sockets' end here never reset the moved connections.
    if (r?.network != null) await this.m.mustLan().remove(name)
    await this.dd.writeMoved(name, movedTo)
    await removeTree(this.dd.containerDir(name))
    this.announce()
  }

  async staging (migrationId: string): Promise<string> {
    const dir = path.join(this.dd.tmp, `mig-${migrationId}`)
    await fs.mkdir(dir, { recursive: true, mode: 0o700 })
    return dir
  }

  async removeStaging (dir: string): Promise<void> {
    if (!dir.startsWith(this.dd.tmp + '/')) throw new MscError('INTERNAL', `refusing to remove ${dir}`)
    await removeTree(dir)
  }

  async freeBytes (): Promise<number> {
    const s = await fs.statfs(this.dd.root)
    return s.bavail * s.bsize
  }

  async nameFree (name: string): Promise<boolean> {
    return (await this.m.readRecord(name)) == null && (await this.runc.state(name)) == null
  }

  async prepareNetwork (name: string, network: LanNetwork): Promise<void> {
    await this.m.checkAddressFree(network.address, name)
    await this.m.mustLan().create(name, network, { quiet: true })
  }

  async removeNetwork (name: string): Promise<void> {
    await this.m.mustLan().remove(name)
  }

  async cachedBundle (digest: string): Promise<string | null> {
    const dir = path.join(this.dd.root, 'bundles', digest)
    return await exists(path.join(dir, 'rootfs')) ? dir : null
  }

  /**
   * Keeps a pristine copy of a received rootfs, so the next migration of the same bundle
   * skips it. The digest is only what the sender said: the copy is hashed again, so that
   * no member can store a rootfs of its own under another bundle's digest for a later
   * migration of that bundle to pick up.
   */
  async cacheBundle (digest: string, bundleDir: string, config: Record<string, unknown>): Promise<void> {
    const dir = path.join(this.dd.root, 'bundles', digest)
    if (await exists(dir)) return
    await removeTree(`${dir}.tmp`)
    await fs.mkdir(`${dir}.tmp`, { recursive: true, mode: 0o700 })
    await execa('cp', ['-a', path.join(bundleDir, 'rootfs'), path.join(`${dir}.tmp`, 'rootfs')], { timeout: 120_000 })
    const actual = (await bundleDigest(config, path.join(`${dir}.tmp`, 'rootfs'))).digest
    if (actual !== digest) {
      // Also when the container changed its rootfs between the offer and the freeze.
      this.log.warn({ digest, actual }, 'received rootfs does not have the digest it was offered under: not cached')
      await removeTree(`${dir}.tmp`)
      return
    }
    await fs.rename(`${dir}.tmp`, dir)
  }

  /**
   * DIR/containers/NAME/commit.json: the record an incoming container will have once
   * committed (owner epoch, the source's handover), written at adopt before it runs.
   * It is the target's migration journal: a restarted node settles a pending incoming
   * container with the handover kept there, and commit is its rename over
   * container.json, which needs no new data blocks: it lands on a disk too full for a new write.
   */
  private committedFile (name: string): string {
    return path.join(this.dd.containerDir(name), 'commit.json')
  }

  async adopt (
    req: { name: string; bundleDir: string; imageDir: string; workDir: string; logDir: string; lazyPagesPort?: number; handover: Handover; sourceResumes: number; replicas?: number; network?: LanNetwork; signal: AbortSignal }
  ): Promise<{ pid: number }> {
    const t0 = Date.now()
    // Checked before anything moves: the log shim appends to these as root, and a link
    // would have it write to a host file.
    const logs: string[] = []
    for (const f of ['container.log.1', 'container.log']) {
      const st = await fs.lstat(path.join(req.logDir, f)).catch(() => null)
      if (st == null) continue
      if (!st.isFile()) throw new MscError('INVALID_ARGUMENT', `received log ${f} is not a regular file`)
      logs.push(f)
    }
    const cdir = this.dd.containerDir(req.name)
    await fs.mkdir(cdir, { recursive: true, mode: 0o700 })
    const src = path.join(cdir, 'src')
    await fs.rename(req.bundleDir, src)
    for (const f of logs) await fs.rename(path.join(req.logDir, f), path.join(cdir, f))
    const bundle = await loadBundle(src)
    await writeRuntimeBundle(this.dd.runtimeBundle(req.name), this.m.runtimeConfigFor(req.name, bundle, req.network))
    if (req.network != null) await this.m.writeCriuConfig(req.name, 'established')
    const now = new Date().toISOString()
    const net = req.network != null ? { network: req.network } : {}
    const committed: ContainerRecord = { name: req.name, bundle: src, createdAt: now, startedAt: now, checkpointed: false, epoch: req.handover.epoch, handover: req.handover, pendingMigration: false, replicas: req.replicas ?? 0, ...net }
    await writeFileAtomic(this.committedFile(req.name), JSON.stringify(committed, null, 2), { mode: 0o600 })
    await this.m.writeRecord({ name: req.name, bundle: src, createdAt: now, startedAt: now, checkpointed: false, epoch: 0, pendingMigration: true, ...net, ...(req.sourceResumes > 0 ? { sourceResumes: req.sourceResumes } : {}) })
    await fs.mkdir(req.workDir, { recursive: true })
    let daemon: { exited: Promise<void>; kill: () => void } | undefined
    if (req.lazyPagesPort != null) {
      // No signal: the daemon must live until every page arrived (it exits by itself);
      // discard() kills it with the container.
      const dmn = await startLazyPagesDaemon(this.runc.config.criuPath, { imageDir: req.imageDir, workDir: req.workDir, address: '127.0.0.1', port: req.lazyPagesPort })
      this.lazyDaemons.set(req.name, dmn)
      dmn.exited.finally(() => {
        if (this.lazyDaemons.get(req.name) === dmn) this.lazyDaemons.delete(req.name)
      }).catch(() => {})
      daemon = dmn
      dmn.exited.catch((err) => this.log.warn({ err: (err as Error).message, name: req.name }, 'lazy-pages daemon failed'))
      await dmn.ready
    }
    const t1 = Date.now()
    try {
      const st = await this.runc.restore(req.name, this.dd.runtimeBundle(req.name), {
        imageDir: req.imageDir,
        workDir: req.workDir,
        lazyPages: req.lazyPagesPort != null,
        tcpEstablished: this.m.tcpEstablishedFor(req),
        logFile: this.dd.logFile(req.name),
        logMaxBytes: this.m.settings.logMaxBytes,
        pidFile: this.dd.pidFileOf(req.name),
        signal: req.signal
      })
      // The source's copy is quiet (frozen, no traffic, no ARP): the address is live here now.
      if (req.network != null) await this.m.mustLan().activate(req.name, req.network)
      this.log.debug({ name: req.name, prepareMs: t1 - t0, runcRestoreMs: Date.now() - t1 }, 'adopted')
      return { pid: st.pid }
    } catch (err) {
      daemon?.kill()
      throw err
    }
  }

  async commit (name: string, epoch: number, handover: Handover): Promise<void> {
    const r = await this.m.readRecord(name)
    if (r == null) throw new MscError('INTERNAL', `committed container ${name} has no record`)
    testFailCommit()
    const prepared = await readJsonFile(this.committedFile(name)) as ContainerRecord | null
    if (prepared?.name === name && prepared.epoch === epoch && prepared.handover?.sig === handover.sig && prepared.pendingMigration === false) {
      await renameDurable(this.committedFile(name), this.dd.recordFile(name))
    } else {
      r.epoch = epoch
      r.handover = handover
      r.pendingMigration = false
      await this.m.writeRecord(r)
      await fs.rm(this.committedFile(name), { force: true })
    }
    // It came back (or came here for the first time): no longer "moved away".
    await this.dd.forgetMoved(name)
    this.announce()
  }

  async pendingIncoming (): Promise<PendingIncoming[]> {
    const out: PendingIncoming[] = []
    for (const name of await this.m.names()) {
      const pending = await this.m.readRecord(name)
      if (pending?.pendingMigration !== true) continue
      const st = await this.runc.state(name).catch(() => null)
      const h = HandoverSchema.safeParse((await readJsonFile(this.committedFile(name)) as ContainerRecord | null)?.handover)
      const resumes = pending.sourceResumes
      out.push({ name, running: st?.status === 'running' || st?.status === 'paused', handover: h.success ? h.data : null, sourceResumes: Number.isSafeInteger(resumes) && resumes! > 0 ? resumes! : 0 })
    }
    return out
  }

  async lazyPagesEnded (name: string): Promise<string | null> {
    const d = this.lazyDaemons.get(name)
    if (d == null) return null
    return await d.exited.then(() => null, (err: Error) => err.message)
  }

  async freeze (name: string): Promise<void> {
    const st = await this.runc.state(name).catch(() => null)
    if (st?.status !== 'running') return // not restored yet, or already gone
    try {
      await this.runc.pause(name)
      this.log.warn({ name }, 'page link broke: restored copy frozen before its lazy-pages daemon exits')
    } catch (err) {
      this.log.warn({ name, err: (err as Error).message }, 'could not freeze the copy whose page link broke')
    }
  }

  async discard (name: string): Promise<void> {
    // The container first, then its lazy-pages daemon (a container without its daemon
    // would fault on pages that never come). A copy frozen because its page link broke
    // is killed frozen (`delete --force` sends SIGKILL, which a frozen task obeys): a
    // graceful stop would thaw it first and let it run on memory it lacks.
    const st = await this.runc.state(name).catch(() => null)
    if (st?.status === 'paused') await this.runc.delete(name, { force: true }).catch(() => {})
    await this.runc.stop(name, 1_000).catch(async () => {
      await this.runc.delete(name, { force: true }).catch(() => {})
    })
    this.lazyDaemons.get(name)?.kill()
    this.lazyDaemons.delete(name)
    if ((await this.m.readRecord(name))?.network != null) await this.m.mustLan().remove(name)
    await removeTree(this.dd.containerDir(name))
  }
}

/**
 * A source node restarted with DIR/tmp/mig-out-ID left over: its outgoing migration was
 * interrupted after (or during) its final dump. The journal there says how far it got:
 * - past "restored" on the target (restored-on-target, committed): the source had
 *   passed the point of no return, so the restart finishes what it would have done:
 *   the container is released (record and directory removed, DIR/moved/NAME.json says
 *   where it went) and the dump is deleted. The target keeps its copy (it commits, or
 *   settles to commit, as this node no longer claims the container).
 * - otherwise (dumped, or no journal): the dump is the container; it becomes the
 *   checkpoint `migration-ID` (recoverInterruptedDump), never restored automatically.
 */
export async function recoverOutgoing (env: DumpRecoveryEnv, staging: string): Promise<DumpRecovery | { released: string; to: string; toName: string; phase: string } | { frozen: string; migrationId: string }> {
  const j = await readOutgoingJournal(staging)
  if (j != null && !sourceReleased(j) && j.streamedPages === true) {
    // The pages are on the target only; the container's memory is whole in its frozen
    // processes here. The target may have restored it (and keeps it once it sees this
    // node gone), so nothing thaws it automatically: `msc restore` does.
    const r = await readRecordFile(env.dataDir, j.container)
    const st = await env.runc.state(j.container)
    if (r != null && (r.epoch ?? 1) === j.epoch && st?.status === 'paused') {
      r.frozenByMigration = j.migrationId
      await writeRecordFile(env.dataDir, r)
      await removeTree(staging)
      return { frozen: j.container, migrationId: j.migrationId }
    }
  }
  if (j != null && sourceReleased(j)) {
    const dd = env.dataDir
    const name = j.container
    const r = JSON.parse(await fs.readFile(dd.recordFile(name), 'utf8').catch(() => 'null')) as ContainerRecord | null
    const st = await env.runc.state(name)
    // Paused: a dump that streamed its pages to the target leaves the container frozen
    // here; past the point of no return that copy must never run again.
    if (st != null && st.status !== 'stopped' && st.status !== 'paused') return { reason: `runc has ${name} ${st.status} although the target restored it: kept for the operator` }
    if (r != null && (r.epoch ?? 1) === j.epoch && r.pendingMigration !== true) {
      if (st != null) await env.runc.delete(name, { force: true })
      await dd.writeMoved(name, { peerId: j.target, name: j.targetName })
      await removeTree(dd.containerDir(name))
    }
    await removeTree(staging)
    return { released: name, to: j.target, toName: j.targetName, phase: j.phase }
  }
  const r = await recoverInterruptedDump(env, staging)
  if ('container' in r) {
    await fs.rm(path.join(staging, JOURNAL_FILE), { force: true })
    await fs.rmdir(staging).catch(() => {})
  }
  return r
}

async function readJsonFile (file: string): Promise<unknown> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8'))
  } catch {
    return null
  }
}

async function exists (p: string): Promise<boolean> {
  try {
    await fs.access(p)
    return true
  } catch {
    return false
  }
}
