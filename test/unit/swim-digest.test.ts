import { test } from 'node:test'
import assert from 'node:assert/strict'
import { membersDigest } from '../../src/overlay/membership/swim-protocol.ts'

const A = '12D3KooWRQsieuXF9A1YqDCpoTLQnBaGLQ6Zcx8MtZbXx1j2Y6ms'
const B = '12D3KooWEsHnTdJVXnD7Zm4AknEfJov9hmRXfkXQFuCAjVv83iq3'
const alive = (peer: string, by = peer) => ({ peer, incarnation: 5, refuted: 0, state: 'alive' as const, by })

test('two nodes that agree on every member have the same digest, whatever their order and whoever reached each verdict', () => {
  const fromA = [alive(A), { ...alive(B), state: 'dead' as const, by: A }]
  const fromB = [{ ...alive(B), state: 'dead' as const, by: B }, alive(A)]
  assert.equal(membersDigest(fromA), membersDigest(fromB))
  assert.match(membersDigest(fromA), /^[0-9a-f]{64}$/)
})

test("the digest changes with a member's state, refutation count, incarnation, and with a member more or less", () => {
  const base = membersDigest([alive(A), alive(B)])
  assert.notEqual(membersDigest([alive(A), { ...alive(B), state: 'suspect' }]), base)
  assert.notEqual(membersDigest([alive(A), { ...alive(B), refuted: 1 }]), base)
  assert.notEqual(membersDigest([alive(A), { ...alive(B), incarnation: 6 }]), base)
  assert.notEqual(membersDigest([alive(A)]), base)
  assert.notEqual(membersDigest([]), base)
})
