import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import { z } from 'zod'
import { MscError } from '../util/errors.ts'
import { writeFileAtomic } from '../util/atomic-file.ts'

/**
 * Join tokens: `msc1.` + base64url(JSON { c: cluster id, s: one-time secret, a: the
 * issuing member's addresses }). The issuing member keeps only sha256(secret) and an
 * expiry; a token admits one node once, on the member that issued it.
 */
export const TOKEN_PREFIX = 'msc1.'

const TokenBodySchema = z.object({
  c: z.string().regex(/^[0-9a-f]{32}$/),
  s: z.string().regex(/^[0-9a-f]{64}$/),
  a: z.array(z.string().min(1).max(256).regex(/\/p2p\/[1-9A-HJ-NP-Za-km-z]+$/)).min(1).max(16)
}).strict()
export type JoinToken = z.infer<typeof TokenBodySchema>

export function encodeToken (t: JoinToken): string {
  return TOKEN_PREFIX + Buffer.from(JSON.stringify(t)).toString('base64url')
}

export function decodeToken (text: string): JoinToken {
  const s = text.trim()
  if (!s.startsWith(TOKEN_PREFIX) || s.length > 8192) throw new MscError('INVALID_ARGUMENT', 'not an msc join token (it starts with msc1.; make one with `msc cluster token` on a member)')
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(s.slice(TOKEN_PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw new MscError('INVALID_ARGUMENT', 'the join token is damaged (not base64url JSON): copy the whole line')
  }
  const r = TokenBodySchema.safeParse(json)
  if (!r.success) throw new MscError('INVALID_ARGUMENT', 'the join token is damaged (fields missing or malformed): copy the whole line')
  return r.data
}

export function secretHash (secret: string): string {
  return crypto.createHash('sha256').update(`msc-join-secret-v1\n${secret}`).digest('hex')
}

const StoreSchema = z.object({
  v: z.literal(1),
  tokens: z.array(z.object({ hash: z.string().regex(/^[0-9a-f]{64}$/), expiresAt: z.number().int(), createdAt: z.number().int() }).strict()).max(1024)
}).strict()

/** Outstanding tokens of this member, on disk (DIR/cluster-tokens.json, 0600). */
export class TokenStore {
  private readonly file: string
  private readonly now: () => number
  private tokens: Array<{ hash: string; expiresAt: number; createdAt: number }> = []

  constructor (file: string, now: () => number = Date.now) {
    this.file = file
    this.now = now
  }

  async load (): Promise<void> {
    try {
      const r = StoreSchema.safeParse(JSON.parse(await fs.readFile(this.file, 'utf8')))
      this.tokens = r.success ? r.data.tokens : []
    } catch {
      this.tokens = []
    }
  }

  /** A new secret valid for `ttlMs`; persisted before it is handed out. */
  async issue (ttlMs: number): Promise<string> {
    this.prune()
    if (this.tokens.length >= 1024) throw new MscError('INVALID_STATE', 'too many outstanding join tokens (1024): wait for some to expire')
    const secret = crypto.randomBytes(32).toString('hex')
    const now = this.now()
    this.tokens.push({ hash: secretHash(secret), expiresAt: now + ttlMs, createdAt: now })
    await this.save()
    return secret
  }

  /** Uses up a secret: true once, for an unexpired token this member issued. */
  async consume (secret: string): Promise<boolean> {
    this.prune()
    const h = secretHash(secret)
    const i = this.tokens.findIndex((t) => crypto.timingSafeEqual(Buffer.from(t.hash, 'hex'), Buffer.from(h, 'hex')))
    if (i < 0) return false
    this.tokens.splice(i, 1)
    await this.save()
    return true
  }

  /** Whether any token is still valid: only then may non-members connect, to join. */
  outstanding (): boolean {
    const now = this.now()
    return this.tokens.some((t) => t.expiresAt > now)
  }

  private prune (): void {
    const now = this.now()
    this.tokens = this.tokens.filter((t) => t.expiresAt > now)
  }

  private async save (): Promise<void> {
    await writeFileAtomic(this.file, JSON.stringify({ v: 1, tokens: this.tokens }), { mode: 0o600 })
  }
}
