/**
 * Whatever was thrown becomes one readable line: an Error, an abort reason that is not
 * one, and the DOM Event libp2p rejects some dials with when a connection closes.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { errText, MscError, toMscError } from '../../src/util/errors.ts'

test('an Event thrown by a dial reads as a closed connection, not [object Event]', () => {
  const ev = new Event('close')
  assert.equal(errText(ev), 'the connection or stream closed (close event)')
  const e = toMscError(ev)
  assert.ok(e instanceof MscError)
  assert.match(e.message, /closed \(close event\)/)
  assert.equal(e.cause, ev)
})

test('Errors, message-bearing objects and anything else', () => {
  assert.equal(errText(new Error('boom')), 'boom')
  assert.equal(errText({ message: 'from an object' }), 'from an object')
  assert.equal(errText('a string reason'), 'a string reason')
  const enospc = Object.assign(new Error('write failed'), { code: 'ENOSPC' })
  assert.equal(toMscError(enospc).code, 'NO_SPACE')
})
