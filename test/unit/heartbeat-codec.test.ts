/**
 * The membership wire codec: a valid heartbeat round-trips, and everything else is
 * dropped with its named reason (oversized, malformed, version, forged-sender) before
 * the membership view ever sees it.
 */
import { before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signHandover } from '../../src/cluster/handover.ts'
import {
  decodeHeartbeat,
  decodeMessage,
  DROP_REASONS,
  MAX_TOPIC_CHANGES,
  encodeHeartbeat,
  HEARTBEAT_VERSION,
  MAX_CONTAINERS,
  MAX_EPOCH,
  MAX_HEARTBEAT_BYTES
} from '../../src/overlay/membership/heartbeat.ts'
import type { ContainerClaim, DecodeResult, DropReason, Heartbeat, MessageResult } from '../../src/overlay/membership/heartbeat.ts'

let alice = ''
let bob = ''
let bobKey: PrivateKey

before(async () => {
  alice = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  bobKey = await generateKeyPair('Ed25519')
  bob = peerIdFromPrivateKey(bobKey).toString()
  assert.notEqual(alice, bob)
})

function heartbeat (overrides: Partial<Heartbeat> = {}): Heartbeat {
  return {
    v: HEARTBEAT_VERSION,
    type: 'heartbeat',
    peerId: alice,
    incarnation: 1_700_000_000_000,
    seq: 7,
    sentAt: 1_700_000_123_456,
    name: 'node-a',
    version: '0.1.0',
    role: 'node',
    addrs: [`/ip4/10.0.0.1/tcp/4001/p2p/${alice}`, '/ip6/::1/tcp/4001'],
    containers: [
      { name: 'web-1', epoch: 3, state: 'running' },
      { name: 'db.primary', epoch: 1, state: 'checkpointed' }
    ],
    resources: { memFreeBytes: 1_000_000, memTotalBytes: 8_000_000_000, diskFreeBytes: 50_000_000_000 },
    ...overrides
  }
}

/** A JSON object as it would be on the wire, not constrained by the Heartbeat type. */
function raw (hb: Heartbeat, mutate: (o: Record<string, unknown>) => void): Uint8Array {
  const o = JSON.parse(JSON.stringify(hb)) as Record<string, unknown>
  mutate(o)
  return new TextEncoder().encode(JSON.stringify(o))
}

function text (s: string): Uint8Array {
  return new TextEncoder().encode(s)
}

function assertDropped (r: DecodeResult | MessageResult, reason: DropReason, detail?: RegExp): void {
  assert.equal(r.ok, false, `expected a drop for ${reason}, got ${JSON.stringify(r).slice(0, 200)}`)
  if (r.ok) return
  assert.equal(r.reason, reason, `detail: ${r.detail}`)
  assert.equal(typeof r.detail, 'string')
  assert.ok(r.detail.length > 0)
  if (detail != null) assert.match(r.detail, detail)
}

describe('round trip', () => {
  test('this is version 4, with every drop reason named', () => {
    assert.equal(HEARTBEAT_VERSION, 4)
    assert.deepEqual([...DROP_REASONS], [
      'oversized',
      'malformed',
      'version',
      'forged-sender',
      'not-member',
      'stale',
      'replayed',
      'epoch-regression',
      'owner-conflict',
      'unproven-handover',
      'epoch-jump',
      'claim-limit',
      'claims-digest',
      'claims-page'
    ])
  })

  test('a valid heartbeat decodes to the same object', () => {
    const hb = heartbeat()
    const bytes = encodeHeartbeat(hb)
    assert.ok(bytes instanceof Uint8Array)
    assert.deepEqual(JSON.parse(new TextDecoder().decode(bytes)), hb)
    const r = decodeHeartbeat(bytes, alice)
    assert.deepEqual(r, { ok: true, heartbeat: hb })
  })

  test('a leave message with no containers round-trips', () => {
    const hb = heartbeat({ type: 'leave', containers: [], addrs: [], role: 'observer' })
    assert.deepEqual(decodeHeartbeat(encodeHeartbeat(hb), alice), { ok: true, heartbeat: hb })
  })

  test('a claim with a resume count round-trips', () => {
    const hb = heartbeat({ containers: [{ name: 'web', epoch: 2, state: 'running', resumes: 2 ** 31 }] })
    const r = decodeHeartbeat(encodeHeartbeat(hb), alice)
    assert.equal(r.ok, true)
    if (r.ok) assert.deepEqual(r.heartbeat.containers, hb.containers)
  })

  test('the largest epoch, 2^40, is accepted on the wire', () => {
    assert.equal(MAX_EPOCH, 2 ** 40)
    const hb = heartbeat({ containers: [{ name: 'web', epoch: MAX_EPOCH, state: 'running' }] })
    assert.equal(decodeHeartbeat(encodeHeartbeat(hb), alice).ok, true)
  })

  test('every container state and MAX_CONTAINERS containers are accepted', () => {
    const states: Array<ContainerClaim['state']> = ['running', 'paused', 'created', 'stopped', 'checkpointed']
    const containers = Array.from({ length: MAX_CONTAINERS }, (_, i) => ({ name: `c${i}`, epoch: i + 1, state: states[i % states.length]! }))
    const hb = heartbeat({ containers })
    const r = decodeHeartbeat(encodeHeartbeat(hb), alice)
    assert.equal(r.ok, true)
    if (r.ok) assert.equal(r.heartbeat.containers.length, MAX_CONTAINERS)
  })
})

describe('handover (v2)', () => {
  test('a claim with a handover round-trips, and one claim with a handover is about 330 bytes', async () => {
    const h = await signHandover(bobKey, { container: 'web-1', epoch: 4, from: bob, to: alice, at: 1_700_000_123_000 })
    const plain = heartbeat({ containers: [{ name: 'web-1', epoch: 4, state: 'running' }] })
    const hb = heartbeat({ containers: [{ name: 'web-1', epoch: 4, state: 'running', handover: h }] })
    assert.deepEqual(decodeHeartbeat(encodeHeartbeat(hb), alice), { ok: true, heartbeat: hb })
    const extra = encodeHeartbeat(hb).length - encodeHeartbeat(plain).length
    assert.ok(extra > 250 && extra < 320, `a handover adds ${extra} bytes`)
  })

  test('a malformed handover makes the message malformed', async () => {
    const h = await signHandover(bobKey, { container: 'web-1', epoch: 4, from: bob, to: alice, at: 1 })
    const cases: Array<[string, unknown]> = [
      ['an extra field', { ...h, note: 'x' }],
      ['no sig', { ...h, sig: undefined }],
      ['a short sig', { ...h, sig: h.sig.slice(1) }],
      ['a bad from', { ...h, from: 'bob' }],
      ['epoch 0', { ...h, epoch: 0 }],
      ['a string', 'signed by bob'],
      ['null', null]
    ]
    for (const [what, handover] of cases) {
      const r = decodeHeartbeat(raw(heartbeat(), (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.handover = handover
      }), alice)
      assert.equal(r.ok, false, what)
      if (!r.ok) {
        assert.equal(r.reason, 'malformed', `${what}: ${r.reason}`)
        assert.match(r.detail, /^containers\.0\.handover/, what)
      }
    }
  })

  test('the codec does not check signatures (the view does, when a handover decides)', async () => {
    const h = await signHandover(bobKey, { container: 'web-1', epoch: 4, from: bob, to: alice, at: 1 })
    const forged = { ...h, at: 2 }
    assert.equal(decodeHeartbeat(encodeHeartbeat(heartbeat({ containers: [{ name: 'web-1', epoch: 4, state: 'running', handover: forged }] })), alice).ok, true)
  })
})

describe('oversized', () => {
  test('one byte over 64 KiB is dropped before parsing', () => {
    assert.equal(MAX_HEARTBEAT_BYTES, 65536)
    // Padding inside a valid heartbeat: the size alone decides.
    const data = new Uint8Array(MAX_HEARTBEAT_BYTES + 1).fill(0x20)
    data.set(encodeHeartbeat(heartbeat()))
    assertDropped(decodeHeartbeat(data, alice), 'oversized', /65537 bytes/)
  })

  test('exactly 64 KiB is not oversized', () => {
    const data = new Uint8Array(MAX_HEARTBEAT_BYTES).fill(0x20)
    data.set(encodeHeartbeat(heartbeat()))
    const r = decodeHeartbeat(data, alice)
    assert.equal(r.ok, true, JSON.stringify(r).slice(0, 200))
  })

  test('a 10 MB buffer is dropped as oversized', () => {
    const data = new Uint8Array(10 * 1024 * 1024).fill(0x7b)
    assertDropped(decodeHeartbeat(data, alice), 'oversized', new RegExp(`${10 * 1024 * 1024} bytes`))
  })

  test('encodeHeartbeat refuses a heartbeat that would exceed 64 KiB', () => {
    // Schema-valid, but 512 long container names and 32 long addresses exceed the wire limit.
    const containers = Array.from({ length: MAX_CONTAINERS }, (_, i) => ({
      name: `c${String(i).padStart(3, '0')}`.padEnd(63, 'x'),
      epoch: MAX_EPOCH,
      state: 'checkpointed' as const
    }))
    const addrs = Array.from({ length: 32 }, (_, i) => `/dns4/host${i}.example.org/tcp/4001/`.padEnd(256, 'a'))
    const hb = heartbeat({ containers, addrs })
    const size = new TextEncoder().encode(JSON.stringify(hb)).length
    assert.ok(size > MAX_HEARTBEAT_BYTES, `test heartbeat is only ${size} bytes`)
    assert.throws(() => encodeHeartbeat(hb), new RegExp(`heartbeat of ${size} bytes exceeds ${MAX_HEARTBEAT_BYTES}`))
    // And the receiving side drops the same bytes as oversized.
    assertDropped(decodeHeartbeat(text(JSON.stringify(hb)), alice), 'oversized')
  })
})

describe('malformed', () => {
  test('bytes that are not UTF-8', () => {
    assertDropped(decodeHeartbeat(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), alice), 'malformed', /not JSON/)
    // A valid heartbeat with one invalid byte inside a string value.
    const bytes = encodeHeartbeat(heartbeat({ name: 'node-#' }))
    bytes[bytes.indexOf(0x23)] = 0xc3
    assertDropped(decodeHeartbeat(bytes, alice), 'malformed', /not JSON/)
  })

  test('text that is not JSON', () => {
    assertDropped(decodeHeartbeat(text('hello'), alice), 'malformed', /not JSON/)
    assertDropped(decodeHeartbeat(text(''), alice), 'malformed', /not JSON/)
    assertDropped(decodeHeartbeat(text(JSON.stringify(heartbeat()).slice(0, -1)), alice), 'malformed', /not JSON/)
  })

  test('JSON that is not an object', () => {
    assertDropped(decodeHeartbeat(text(JSON.stringify([heartbeat()])), alice), 'malformed')
    assertDropped(decodeHeartbeat(text('[]'), alice), 'malformed')
    assertDropped(decodeHeartbeat(text('null'), alice), 'malformed')
    assertDropped(decodeHeartbeat(text('42'), alice), 'malformed')
    assertDropped(decodeHeartbeat(text('"heartbeat"'), alice), 'malformed')
  })

  test('a missing field', () => {
    for (const field of ['v', 'type', 'peerId', 'incarnation', 'seq', 'sentAt', 'name', 'version', 'role', 'addrs', 'containers', 'resources']) {
      const data = raw(heartbeat(), (o) => {
        delete o[field]
      })
      assertDropped(decodeHeartbeat(data, alice), 'malformed', new RegExp(`^${field}`))
    }
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      delete (o.resources as Record<string, unknown>).diskFreeBytes
    }), alice), 'malformed', /resources\.diskFreeBytes/)
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      delete (o.containers as Array<Record<string, unknown>>)[1]!.epoch
    }), alice), 'malformed', /containers\.1\.epoch/)
  })

  test('an extra field, at any level', () => {
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      o.admin = true
    }), alice), 'malformed')
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      ;(o.resources as Record<string, unknown>).cpu = 4
    }), alice), 'malformed')
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      ;(o.containers as Array<Record<string, unknown>>)[0]!.owner = bob
    }), alice), 'malformed')
  })

  test('wrong types and out-of-range values', () => {
    const cases: Array<[string, (o: Record<string, unknown>) => void]> = [
      ['seq as a string', (o) => {
        o.seq = '7'
      }],
      ['seq negative', (o) => {
        o.seq = -1
      }],
      ['seq fractional', (o) => {
        o.seq = 1.5
      }],
      ['seq above MAX_SAFE_INTEGER', (o) => {
        o.seq = 2 ** 53
      }],
      ['incarnation null', (o) => {
        o.incarnation = null
      }],
      ['sentAt as a string', (o) => {
        o.sentAt = new Date().toISOString()
      }],
      ['type unknown', (o) => {
        o.type = 'join'
      }],
      ['role unknown', (o) => {
        o.role = 'leader'
      }],
      ['name empty', (o) => {
        o.name = ''
      }],
      ['name too long', (o) => {
        o.name = 'n'.repeat(65)
      }],
      ['version as a number', (o) => {
        o.version = 1
      }],
      ['addrs as a string', (o) => {
        o.addrs = '/ip4/10.0.0.1/tcp/4001'
      }],
      ['an empty addr', (o) => {
        o.addrs = ['']
      }],
      ['too many addrs', (o) => {
        o.addrs = Array.from({ length: 33 }, (_, i) => `/ip4/10.0.0.${i}/tcp/4001`)
      }],
      ['containers as an object', (o) => {
        o.containers = {}
      }],
      ['resources as a number', (o) => {
        o.resources = 0
      }],
      ['memFreeBytes negative', (o) => {
        ;(o.resources as Record<string, unknown>).memFreeBytes = -1
      }],
      ['container epoch 0', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.epoch = 0
      }],
      ['container epoch above 2^40', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.epoch = MAX_EPOCH + 1
      }],
      ['container epoch 2^53', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.epoch = 2 ** 53
      }],
      ['container epoch as a string', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.epoch = '3'
      }],
      ['container state unknown', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.state = 'migrating'
      }],
      ['container resumes 0 (absent means never)', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.resumes = 0
      }],
      ['container resumes above 2^31', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.resumes = 2 ** 31 + 1
      }],
      ['container resumes fractional', (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.resumes = 1.5
      }],
      ['peerId as a number', (o) => {
        o.peerId = 12
      }],
      ['peerId too short', (o) => {
        o.peerId = '12D3Koo'
      }],
      ['peerId not base58', (o) => {
        o.peerId = `${alice.slice(0, -1)}0`
      }]
    ]
    for (const [what, mutate] of cases) {
      const r = decodeHeartbeat(raw(heartbeat(), mutate), alice)
      assert.equal(r.ok, false, what)
      if (!r.ok) assert.equal(r.reason, 'malformed', `${what}: ${r.reason} ${r.detail}`)
    }
  })

  test('a bad container name', () => {
    for (const name of ['', '-web', '.hidden', '_x', 'a/b', '../etc', 'web 1', 'wéb', 'a'.repeat(64)]) {
      const r = decodeHeartbeat(raw(heartbeat(), (o) => {
        ;(o.containers as Array<Record<string, unknown>>)[0]!.name = name
      }), alice)
      assert.equal(r.ok, false, JSON.stringify(name))
      if (!r.ok) assert.equal(r.reason, 'malformed', `${name}: ${r.reason}`)
    }
    // The longest accepted name: 63 characters.
    assert.equal(decodeHeartbeat(encodeHeartbeat(heartbeat({ containers: [{ name: 'a'.repeat(63), epoch: 1, state: 'running' }] })), alice).ok, true)
  })

  test('more than MAX_CONTAINERS containers', () => {
    const containers = Array.from({ length: MAX_CONTAINERS + 1 }, (_, i) => ({ name: `c${i}`, epoch: 1, state: 'running' as const }))
    const hb = heartbeat({ containers })
    const bytes = encodeHeartbeat(hb)
    assert.ok(bytes.length <= MAX_HEARTBEAT_BYTES)
    assertDropped(decodeHeartbeat(bytes, alice), 'malformed', /^containers/)
  })

  test('the same container listed twice', () => {
    const hb = heartbeat({
      containers: [
        { name: 'web-1', epoch: 3, state: 'running' },
        { name: 'db', epoch: 1, state: 'running' },
        { name: 'web-1', epoch: 4, state: 'paused' }
      ]
    })
    assertDropped(decodeHeartbeat(encodeHeartbeat(hb), alice), 'malformed', /container web-1 listed twice/)
  })
})

describe('version', () => {
  test('v: 3 (the previous version) and v: 5 are version drops, even when the rest would not parse', () => {
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      o.v = 3
    }), alice), 'version', /version 3/)
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      o.v = 5
    }), alice), 'version', /version 5/)
    assertDropped(decodeHeartbeat(text('{"v":5,"future":"format"}'), alice), 'version', /version 5/)
  })

  test('v: "4" (a string) is a version drop', () => {
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      o.v = '4'
    }), alice), 'version', /version "4"/)
  })

  test('v: null and v: 0 are version drops', () => {
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      o.v = null
    }), alice), 'version')
    assertDropped(decodeHeartbeat(raw(heartbeat(), (o) => {
      o.v = 0
    }), alice), 'version')
  })
})

describe('forged-sender', () => {
  test('a heartbeat that speaks for another peer is forged', () => {
    const bytes = encodeHeartbeat(heartbeat({ peerId: alice }))
    assertDropped(decodeHeartbeat(bytes, bob), 'forged-sender', new RegExp(`claims ${alice}`))
    assert.equal(decodeHeartbeat(bytes, alice).ok, true)
    const fromBob = encodeHeartbeat(heartbeat({ peerId: bob, addrs: [] }))
    assertDropped(decodeHeartbeat(fromBob, alice), 'forged-sender')
    assert.equal(decodeHeartbeat(fromBob, bob).ok, true)
  })

  test('a leave message for another peer is forged', () => {
    assertDropped(decodeHeartbeat(encodeHeartbeat(heartbeat({ type: 'leave', peerId: bob, containers: [] })), alice), 'forged-sender')
  })
})

describe('changes messages (SWIM verdicts on the topic)', () => {
  const msg = (o: Record<string, unknown> = {}): Uint8Array =>
    text(JSON.stringify({
      v: HEARTBEAT_VERSION,
      type: 'changes',
      peerId: alice,
      incarnation: 1_700_000_000_000,
      seq: 8,
      sentAt: 1_700_000_123_456,
      changes: [{ peer: bob, incarnation: 5, refuted: 0, state: 'suspect', by: alice }],
      ...o
    }))

  test('a valid one decodes as changes; decodeHeartbeat refuses it', () => {
    const r = decodeMessage(msg(), alice)
    assert.ok(r.ok && 'changes' in r, JSON.stringify(r))
    assert.equal(r.changes.changes[0]?.state, 'suspect')
    assertDropped(decodeHeartbeat(msg(), alice), 'malformed', /changes message/)
  })

  test('signed by another peer than its peerId: forged-sender', () => {
    assertDropped(decodeMessage(msg(), bob), 'forged-sender')
  })

  test('bounds and shapes: none, too many, unknown state, unknown field, bad peer id, wrong version', () => {
    const c = { peer: bob, incarnation: 5, refuted: 0, state: 'suspect', by: alice }
    assertDropped(decodeMessage(msg({ changes: [] }), alice), 'malformed')
    assertDropped(decodeMessage(msg({ changes: Array.from({ length: MAX_TOPIC_CHANGES + 1 }, () => c) }), alice), 'malformed')
    assertDropped(decodeMessage(msg({ changes: [{ ...c, state: 'left' }] }), alice), 'malformed')
    assertDropped(decodeMessage(msg({ changes: [{ ...c, extra: true }] }), alice), 'malformed')
    assertDropped(decodeMessage(msg({ extra: true }), alice), 'malformed')
    assertDropped(decodeMessage(msg({ changes: [{ ...c, peer: 'O0Il' }] }), alice), 'malformed')
    assertDropped(decodeMessage(msg({ changes: [{ ...c, refuted: -1 }] }), alice), 'malformed')
    assertDropped(decodeMessage(msg({ v: HEARTBEAT_VERSION - 1 }), alice), 'version')
  })
})
