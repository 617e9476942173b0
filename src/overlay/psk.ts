import fs from 'node:fs/promises'
import { generateKey } from '@libp2p/pnet'
import { MscError } from '../util/errors.ts'

/**
 * Pre-shared keys for a private cluster (libp2p pnet): every connection is wrapped in
 * XSalsa20 keyed by it, so a node without the key cannot even start a handshake.
 * Format (as go-ipfs): "/key/swarm/psk/1.0.0/\n/base16/\n<64 hex>".
 */
const PSK_RE = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-fA-F]{64}\n?$/

export async function writePskFile (file: string): Promise<void> {
  const bytes = new Uint8Array(95)
  generateKey(bytes)
  await fs.writeFile(file, bytes, { mode: 0o600, flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EEXIST') throw new MscError('ALREADY_EXISTS', `${file} exists; not overwriting a cluster key`)
    throw err
  })
}

export async function readPskFile (file: string): Promise<Uint8Array> {
  let buf: Buffer
  try {
    buf = await fs.readFile(file)
  } catch (err) {
    throw new MscError('INVALID_ARGUMENT', `cannot read PSK file ${file}: ${(err as Error).message}`)
  }
  if (!PSK_RE.test(buf.toString('utf8'))) {
    throw new MscError('INVALID_ARGUMENT', `${file} is not a libp2p PSK file (make one with \`msc keygen psk FILE\`)`)
  }
  return new Uint8Array(buf)
}

/** The 32 key bytes of a PSK file (what the cluster id and admissions derive from). */
export function pskKeyBytes (psk: Uint8Array): Uint8Array {
  const hex = new TextDecoder().decode(psk).split('\n')[2]?.trim().toLowerCase() ?? ''
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}
