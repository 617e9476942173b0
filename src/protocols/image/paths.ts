/**
 * Path rules of /msc/image: what a peer may name, and where a symlink may point.
 * Pure functions: the receiver supplies how to look a path up.
 */

/** Linux limits: PATH_MAX and NAME_MAX, in bytes. */
const MAX_PATH_BYTES = 4095
const MAX_NAME_BYTES = 255

/**
 * Null when `p` is an acceptable relative path inside the tree, else what is wrong.
 * Accepted: non-empty, '/'-separated, no leading '/', no empty, '.' or '..' segment,
 * no NUL. Anything else could name something outside the tree, or two spellings of
 * one file (which would defeat the duplicate and parent checks).
 */
export function pathProblem (p: string): string | null {
  if (p.length === 0) return 'empty path'
  if (p.includes('\0')) return 'path contains NUL'
  if (p.startsWith('/')) return 'absolute path'
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) return 'path too long'
  for (const seg of p.split('/')) {
    if (seg === '') return 'empty path segment'
    if (seg === '.' || seg === '..') return `"${seg}" path segment`
    if (Buffer.byteLength(seg) > MAX_NAME_BYTES) return 'path segment too long'
  }
  return null
}

export function parentOf (p: string): string {
  const i = p.lastIndexOf('/')
  return i < 0 ? '' : p.slice(0, i)
}

/**
 * What a tree may hold as symlinks. 'contained': links that resolve inside the tree.
 * 'rootfs': any link, kept verbatim (a container's root filesystem, resolved inside the
 * container). 'none': no link at all (CRIU images, logs: plain files the node reads or
 * appends to, where a link could only point it at a host file).
 */
export type SymlinkMode = 'contained' | 'rootfs' | 'none'

/** What a lookup knows about a relative path: a symlink's target matters, nothing else. */
export type LookupResult = { kind: 'symlink'; target: string } | { kind: 'other' }
export type Lookup = (rel: string) => LookupResult | Promise<LookupResult>

const MAX_LINK_HOPS = 40 // the kernel's own limit (MAXSYMLINKS)

/**
 * Null when symlink `linkPath -> target` resolves inside the tree, else why not.
 * Resolves component by component, following every symlink found by `lookup` (with
 * '..' applied after the substitution, as the kernel does), so a chain such as
 * `a -> b/c/../..` with `b/c -> .` is caught; a lexical normalize() would miss it.
 * Unknown components count as plain directories.
 */
export async function symlinkProblem (linkPath: string, target: string, lookup: Lookup): Promise<string | null> {
  if (target.length === 0) return 'empty symlink target'
  if (target.includes('\0')) return 'symlink target contains NUL'
  if (target.startsWith('/')) return `symlink ${linkPath} points to an absolute path (${target})`
  const stack = parentOf(linkPath).split('/').filter((s) => s !== '')
  const todo = target.split('/')
  let hops = 0
  while (todo.length > 0) {
    const seg = todo.shift() as string
    if (seg === '' || seg === '.') continue
    if (seg === '..') {
      if (stack.length === 0) return `symlink ${linkPath} -> ${target} leaves the tree`
      stack.pop()
      continue
    }
    stack.push(seg)
    const found = await lookup(stack.join('/'))
    if (found.kind !== 'symlink') continue
    if (++hops > MAX_LINK_HOPS) return `symlink ${linkPath} -> ${target}: too many levels of symlinks`
    if (found.target.startsWith('/')) return `symlink ${linkPath} -> ${target} goes through a symlink to an absolute path`
    stack.pop()
    todo.unshift(...found.target.split('/'))
  }
  return null
}
