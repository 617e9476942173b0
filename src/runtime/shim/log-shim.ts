/**
 * msc log shim: the reader end of a container's stdout/stderr pipe.
 *
 * Why a separate process: CRIU can only dump and restore a container whose stdio are
 * anonymous pipes (not sockets, not host files). Node's own child stdio are socketpairs,
 * so the shim is started at the end of a shell pipeline, `runc ... | log-shim`, which
 * gives the container a real pipe(2). The shim lives in its own session, so the
 * container's output keeps flowing (and the container is not killed by SIGPIPE) while
 * the msc node restarts. It exits when every writer closed the pipe (container gone).
 *
 * It appends to LOG (env MSC_SHIM_LOG) and rotates it to LOG.1 past MSC_SHIM_MAX bytes,
 * so a chatty container costs at most twice that on disk.
 */
import fs from 'node:fs'

const logPath = process.env.MSC_SHIM_LOG
const maxBytes = Number(process.env.MSC_SHIM_MAX ?? 8 * 1024 * 1024)
if (logPath == null || logPath === '') {
  process.stderr.write('log-shim: MSC_SHIM_LOG is not set\n')
  process.exit(2)
}

// A SIGHUP from the terminal the node ran in must not end the container's output.
process.on('SIGHUP', () => {})
process.on('SIGPIPE', () => {})

// O_NOFOLLOW: the shim runs as root, and a symlink put at LOG (by a received log tree,
// say) must never have it append to the file the link names.
const APPEND = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW

function openLog (): number {
  return fs.openSync(logPath!, APPEND, 0o600)
}

let fd: number
try {
  fd = openLog()
} catch (err) {
  const why = (err as NodeJS.ErrnoException).code === 'ELOOP' ? 'is a symlink: refusing to write through it' : (err as Error).message
  process.stderr.write(`log-shim: ${logPath} ${why}\n`)
  process.exit(2)
}
let size = fs.fstatSync(fd).size

/** A link planted at LOG meanwhile makes the reopen throw: output is then dropped, as on a full disk. */
function rotate (): void {
  fs.closeSync(fd)
  try { fs.renameSync(logPath!, `${logPath!}.1`) } catch {}
  fd = openLog()
  size = 0
}

process.stdin.on('data', (chunk: Buffer) => {
  try {
    if (size + chunk.length > maxBytes && size > 0) rotate()
    fs.writeSync(fd, chunk)
    size += chunk.length
  } catch {
    // A full disk must not kill the container: drop output until space returns.
  }
})
process.stdin.on('end', () => {
  try { fs.closeSync(fd) } catch {}
  process.exit(0)
})
process.stdin.on('error', () => process.exit(0))
