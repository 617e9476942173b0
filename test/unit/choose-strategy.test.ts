import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chooseStrategy } from '../../src/migration/messages.ts'

const none = { preCopy: false, postCopy: false }
const uffd = { preCopy: false, postCopy: true }
const all = { preCopy: true, postCopy: true }
const dirty = { preCopy: true, postCopy: false }

test('auto picks the least downtime both nodes support', () => {
  assert.deepEqual(chooseStrategy('auto', all, all, 't'), { strategy: 'post-copy' })
  assert.deepEqual(chooseStrategy('auto', uffd, all, 't'), { strategy: 'post-copy' })
  assert.deepEqual(chooseStrategy('auto', dirty, all, 't'), { strategy: 'pre-copy' })
  assert.deepEqual(chooseStrategy('auto', dirty, uffd, 't'), { strategy: 'stop-copy' })
  assert.deepEqual(chooseStrategy('auto', none, none, 't'), { strategy: 'stop-copy' })
})

test('pre-copy runs where both track dirty memory, and is refused with the reason and an alternative elsewhere', () => {
  assert.deepEqual(chooseStrategy('pre-copy', dirty, all, 't'), { strategy: 'pre-copy' })
  const here = chooseStrategy('pre-copy', uffd, uffd, 'n2')
  assert.ok('refuse' in here)
  assert.match(here.refuse, /memory dirty tracking \(soft-dirty\).*both nodes.*mem_dirty_track.*--strategy post-copy/)
  const target = chooseStrategy('pre-copy', all, uffd, 'n2')
  assert.ok('refuse' in target && /the target node n2/.test(target.refuse))
  const source = chooseStrategy('pre-copy', none, dirty, 'n2')
  assert.ok('refuse' in source && /the source node/.test(source.refuse) && /--strategy stop-copy/.test(source.refuse))
})

test('post-copy needs userfaultfd on both; stop-copy always runs', () => {
  assert.deepEqual(chooseStrategy('post-copy', uffd, uffd, 't'), { strategy: 'post-copy' })
  const r = chooseStrategy('post-copy', uffd, none, 'n3')
  assert.ok('refuse' in r && /uffd-noncoop.*n3.*--strategy stop-copy/.test(r.refuse))
  assert.deepEqual(chooseStrategy('stop-copy', none, none, 't'), { strategy: 'stop-copy' })
})
