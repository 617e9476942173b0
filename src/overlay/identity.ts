import fs from 'node:fs/promises'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { MscError } from '../util/errors.ts'

/**
 * The node's libp2p identity: an Ed25519 key made once and kept (0600) in the data
 * dir, so a restarted node keeps its peer id and peers recognise it.
 */
export async function loadOrCreatePeerKey (file: string): Promise<PrivateKey> {
  let buf: Buffer | undefined
  try {
    buf = await fs.readFile(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (buf != null) {
    try {
      return privateKeyFromProtobuf(buf)
    } catch (err) {
      throw new MscError('INVALID_ARGUMENT', `peer key ${file} is corrupt (${(err as Error).message}); move it away to make a new identity`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  await fs.writeFile(file + '.tmp', privateKeyToProtobuf(key), { mode: 0o600 })
  await fs.rename(file + '.tmp', file)
  return key
}
