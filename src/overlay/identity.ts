import fs from 'node:fs/promises'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { MscError } from '../util/errors.ts'
import { writeFileAtomic } from '../util/atomic-file.ts'

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
  // Durable before the peer id is announced: a key lost to a crash would give the
  // node a new identity that its peers do not know.
  await writeFileAtomic(file, privateKeyToProtobuf(key), { mode: 0o600 })
  return key
}
