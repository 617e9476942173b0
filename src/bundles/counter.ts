/**
 * The counter bundle: busybox and a shell loop printing 1, 2, 3, ... once a second.
 * Its output makes a migration visible (the count continues, never restarts).
 *
 * Also home of the busybox base rootfs that the redis bundle builds on.
 */
import { execa } from 'execa'
import { constants } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { MscError } from '../util/errors.ts'
import type { BundleInfo, BundleKind } from './index.ts'
import { defaultSpec, type OciSpec } from './oci-spec.ts'

/** Debian's busybox-static: no shared libraries, so it runs in any rootfs. */
export const BUSYBOX = '/bin/busybox'

export type CounterBundleOptions = { intervalMs?: number }

export async function writeCounterBundle (dir: string, opts: CounterBundleOptions = {}): Promise<BundleInfo> {
  const intervalMs = opts.intervalMs ?? 1000
  if (!Number.isInteger(intervalMs) || intervalMs < 10) {
    throw new MscError('INVALID_ARGUMENT', `intervalMs must be an integer >= 10, got ${String(opts.intervalMs)}`)
  }
  const rootfs = await resetBundle(dir)
  await installBusybox(rootfs)
  // busybox sleep takes fractions ("sleep 0.25"); ms / 1000 prints without exponent for >= 10 ms.
  // As PID 1 the shell ignores SIGTERM unless it traps it: the trap lets `msc stop`
  // end it at once instead of waiting for SIGKILL.
  const script = `trap 'exit 0' TERM INT; i=1; while true; do echo $i; i=$((i+1)); sleep ${intervalMs / 1000}; done\n`
  await fs.writeFile(path.join(rootfs, 'count.sh'), script, { mode: 0o755 })
  return finishBundle(dir, 'counter', defaultSpec({ args: ['/bin/sh', '/count.sh'], hostname: 'counter' }))
}

/**
 * Makes `dir` hold a fresh, empty `rootfs` with the directories every bundle needs,
 * and removes an old config.json. Only the bundle's own two entries are replaced,
 * so a mistaken --force on some other directory cannot wipe it.
 */
export async function resetBundle (dir: string): Promise<string> {
  const abs = path.resolve(dir)
  await refuseIfMounted(abs)
  const rootfs = path.join(abs, 'rootfs')
  await fs.rm(rootfs, { recursive: true, force: true })
  await fs.rm(path.join(abs, 'config.json'), { force: true })
  for (const d of ['bin', 'proc', 'dev', 'sys', 'run', 'etc']) {
    await fs.mkdir(path.join(rootfs, d), { recursive: true })
  }
  await fs.mkdir(path.join(rootfs, 'tmp'))
  await fs.chmod(path.join(rootfs, 'tmp'), 0o1777) // mkdir's mode is cut by the umask
  return rootfs
}

/**
 * fs.rm has no --one-file-system: deleting a rootfs that is still mounted somewhere
 * (a running container, a failed restore's criu-root bind) would delete through the
 * mount. Refuse instead.
 */
async function refuseIfMounted (abs: string): Promise<void> {
  const mountinfo = await fs.readFile('/proc/self/mountinfo', 'utf8')
  const real = await fs.realpath(abs).catch(() => abs)
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4]
    if (field === undefined) continue
    // mountinfo escapes space, tab, newline and backslash as \ooo octal.
    const mnt = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
    if (mnt === real || mnt.startsWith(real + '/')) {
      throw new MscError('INVALID_STATE', `${mnt} is a mount point inside bundle ${abs}; unmount it (or delete the container) first`)
    }
  }
}

/** /bin/busybox plus one symlink per applet, relative so they resolve inside the container. */
export async function installBusybox (rootfs: string): Promise<void> {
  const bin = path.join(rootfs, 'bin')
  await fs.copyFile(BUSYBOX, path.join(bin, 'busybox'))
  await fs.chmod(path.join(bin, 'busybox'), 0o755)
  // `busybox --install -s` would point the links at /proc/self/exe; make our own.
  const { stdout } = await execa(BUSYBOX, ['--list'])
  for (const applet of stdout.split('\n')) {
    if (applet === '' || applet === 'busybox' || applet.includes('/')) continue
    await fs.symlink('busybox', path.join(bin, applet))
  }
}

/** Copies a host file to the same path inside the rootfs, following symlinks. */
export async function copyIntoRootfs (rootfs: string, hostPath: string): Promise<void> {
  const dest = path.join(rootfs, hostPath)
  await fs.mkdir(path.dirname(dest), { recursive: true })
  await fs.copyFile(hostPath, dest, constants.COPYFILE_FICLONE)
}

export async function finishBundle (dir: string, kind: BundleKind, spec: OciSpec): Promise<BundleInfo> {
  const abs = path.resolve(dir)
  await fs.writeFile(path.join(abs, 'config.json'), JSON.stringify(spec, null, 2) + '\n')
  return { dir: abs, kind, args: spec.process.args, sizeBytes: await treeSize(abs) }
}

/** Bytes in regular files (symlinks and directories not counted). */
async function treeSize (dir: string): Promise<number> {
  let total = 0
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) total += (await fs.lstat(path.join(e.parentPath, e.name))).size
  }
  return total
}
