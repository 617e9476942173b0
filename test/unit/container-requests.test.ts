/**
 * The pure parts of container requests: parseRequest (the datagram grammar) and
 * containerOfCgroupText (which container a /proc/PID/cgroup names).
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { containerOfCgroupText, parseRequest } from '../../src/node/container-requests.ts'

describe('parseRequest', () => {
  test('CHECKPOINT, with or without one trailing newline', () => {
    assert.deepEqual(parseRequest('CHECKPOINT'), { kind: 'checkpoint' })
    assert.deepEqual(parseRequest('CHECKPOINT\n'), { kind: 'checkpoint' })
  })

  test('MIGRATE with and without a peer', () => {
    assert.deepEqual(parseRequest('MIGRATE'), { kind: 'migrate' })
    assert.deepEqual(parseRequest('MIGRATE\n'), { kind: 'migrate' })
    assert.deepEqual(parseRequest('MIGRATE n2'), { kind: 'migrate', peer: 'n2' })
    assert.deepEqual(parseRequest('MIGRATE n2\n'), { kind: 'migrate', peer: 'n2' })
    assert.deepEqual(parseRequest('MIGRATE node-2.example_A'), { kind: 'migrate', peer: 'node-2.example_A' })
    const longest = 'p'.repeat(128)
    assert.deepEqual(parseRequest(`MIGRATE ${longest}`), { kind: 'migrate', peer: longest })
    const peerId = '12D3KooWFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeF'
    assert.deepEqual(parseRequest(`MIGRATE ${peerId}\n`), { kind: 'migrate', peer: peerId })
  })

  test('a migrate without a peer has no peer key', () => {
    const r = parseRequest('MIGRATE')
    assert.ok(r != null && !('peer' in r))
  })

  test('everything else is null', () => {
    const bad = [
      '',
      '\n',
      ' ',
      'HELLO',
      'checkpoint',
      'Checkpoint',
      'migrate n2',
      'CHECKPOINT now',
      'CHECKPOINT ',
      ' CHECKPOINT',
      'CHECKPOINT\n\n',
      'CHECKPOINT\r\n',
      '\nCHECKPOINT',
      'CHECKPOINT\0',
      'CHECKPOINT\t',
      'MIGRATE ',
      'MIGRATE  n2',
      'MIGRATE n2 ',
      'MIGRATE\tn2',
      'MIGRATE a b',
      'MIGRATE ../x',
      'MIGRATE a/b',
      'MIGRATE n2\n\n',
      'MIGRATE n\u00e92',
      'MIGRATE n\u20ac',
      'MIGRATE ' + 'p'.repeat(129),
      'MIGRATE n2;rm',
      'MIGRATE $(x)',
      'MIGRATE n2\nCHECKPOINT'
    ]
    for (const text of bad) assert.equal(parseRequest(text), null, JSON.stringify(text))
  })

  test('more than 256 bytes is null, even when the words would do', () => {
    assert.equal(parseRequest('CHECKPOINT'.padEnd(300, ' ')), null)
    assert.equal(parseRequest('x'.repeat(10_000)), null)
    // 'MIGRATE ' + 128-byte peer + '\n' is 137 bytes: fine; the limit is on the whole datagram.
    assert.notEqual(parseRequest(`MIGRATE ${'p'.repeat(128)}\n`), null)
  })
})

describe('containerOfCgroupText', () => {
  const v1 = (path: string): string =>
    [
      '12:pids:' + path,
      '11:memory:' + path,
      '10:freezer:' + path,
      '1:name=systemd:/user.slice',
      '0::/',
      ''
    ].join('\n')

  test('cgroup v1 and v2 paths /<parent>/<name>', () => {
    assert.equal(containerOfCgroupText(v1('/msc-1a2b3c4d/counter'), 'msc-1a2b3c4d'), 'counter')
    assert.equal(containerOfCgroupText('0::/msc-1a2b3c4d/web.1\n', 'msc-1a2b3c4d'), 'web.1')
  })

  test('below a prefix (a nested node) and above sub-cgroups the container made', () => {
    assert.equal(containerOfCgroupText('0::/system.slice/docker-abc.scope/msc-x/db\n', 'msc-x'), 'db')
    assert.equal(containerOfCgroupText('0::/msc-x/db/worker/1\n', 'msc-x'), 'db')
  })

  test('a parent with several segments', () => {
    assert.equal(containerOfCgroupText('0::/a/b/c1\n', 'a/b'), 'c1')
    assert.equal(containerOfCgroupText('0::/a/c1\n', 'a/b'), null)
  })

  test('other parents, the parent itself, the root: null', () => {
    assert.equal(containerOfCgroupText(v1('/msc-other/counter'), 'msc-1a2b3c4d'), null)
    assert.equal(containerOfCgroupText(v1('/msc-1a2b3c4d'), 'msc-1a2b3c4d'), null)
    assert.equal(containerOfCgroupText(v1('/'), 'msc-1a2b3c4d'), null)
    assert.equal(containerOfCgroupText('0::/msc-1a2b3c4dX/counter\n', 'msc-1a2b3c4d'), null)
    assert.equal(containerOfCgroupText('', 'msc-x'), null)
    assert.equal(containerOfCgroupText('0::/msc-x/c1\n', ''), null)
  })

  test('a name that is no valid container name: null', () => {
    assert.equal(containerOfCgroupText('0::/msc-x/-bad\n', 'msc-x'), null)
  })

  test('lines naming different containers: null', () => {
    assert.equal(containerOfCgroupText('12:pids:/msc-x/a\n11:memory:/msc-x/b\n', 'msc-x'), null)
    assert.equal(containerOfCgroupText('12:pids:/msc-x/a\n11:memory:/\n', 'msc-x'), 'a')
  })
})
