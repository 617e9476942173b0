/**
 * `msc node start` configuration: flag > environment > default, the original msc's
 * environment names, validation errors that name their source, and defaults that
 * depend on other options (the API socket lives in the data dir).
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { NODE_OPTIONS, PRIVATE_CRIU, resolveClientTarget, resolveNodeConfig } from '../../src/node/config.ts'
import { MscError } from '../../src/util/errors.ts'

/** Asserts that `fn` throws an MscError INVALID_ARGUMENT whose message matches every pattern. */
function assertInvalid (fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MscError, `expected an MscError, got ${String(err)}`)
    assert.equal(err.code, 'INVALID_ARGUMENT')
    for (const p of patterns) assert.match(err.message, p)
    return true
  })
}

describe('defaults', () => {
  test('with no flags and an empty environment', () => {
    const c = resolveNodeConfig({}, {})
    assert.equal(c.dataDir, '/var/lib/msc')
    assert.equal(c.apiSocket, '/var/lib/msc/msc.sock')
    assert.equal(c.logLevel, 'info')
    assert.equal(c.logFormat, process.stderr.isTTY === true ? 'pretty' : 'json')
    assert.equal(c.runcPath, 'runc')
    assert.equal(c.criuPath, existsSync(PRIVATE_CRIU) ? PRIVATE_CRIU : 'criu')
    assert.equal(c.cgroupParent, '', 'empty means msc-NODEID, chosen by the node')
    assert.equal(c.containerLogMaxBytes, 8 * 1024 * 1024)
    assert.equal(c.stopTimeoutMs, 5000)
    assert.equal(c.stopContainersOnExit, false)
  })

  test('every option has a value and a --flag', () => {
    const c = resolveNodeConfig({}, {}) as Record<string, unknown>
    for (const [key, spec] of Object.entries(NODE_OPTIONS)) {
      assert.ok(key in c, `${key} resolved`)
      assert.match(spec.flag, /^--[a-z][a-z-]*$/)
    }
  })

  test('an empty environment variable counts as unset', () => {
    const c = resolveNodeConfig({}, { MSC_DATA_DIR: '', LOG_LEVEL: '', MSC_STOP_TIMEOUT: '' })
    assert.equal(c.dataDir, '/var/lib/msc')
    assert.equal(c.logLevel, 'info')
    assert.equal(c.stopTimeoutMs, 5000)
  })
})

describe('precedence: flag > environment > default', () => {
  test('data dir', () => {
    assert.equal(resolveNodeConfig({}, { MSC_DATA_DIR: '/env/dir' }).dataDir, '/env/dir')
    assert.equal(resolveNodeConfig({ dataDir: '/flag/dir' }, { MSC_DATA_DIR: '/env/dir', DUMP_PATH: '/dump' }).dataDir, '/flag/dir')
  })

  test('log level', () => {
    assert.equal(resolveNodeConfig({}, { LOG_LEVEL: 'warn' }).logLevel, 'warn')
    assert.equal(resolveNodeConfig({ logLevel: 'error' }, { LOG_LEVEL: 'warn', MSC_LOG_LEVEL: 'debug' }).logLevel, 'error')
  })

  test('numbers and booleans', () => {
    const env = { MSC_STOP_TIMEOUT: '1234', MSC_CONTAINER_LOG_MAX: '4096', MSC_STOP_CONTAINERS_ON_EXIT: 'yes' }
    const fromEnv = resolveNodeConfig({}, env)
    assert.equal(fromEnv.stopTimeoutMs, 1234)
    assert.equal(fromEnv.containerLogMaxBytes, 4096)
    assert.equal(fromEnv.stopContainersOnExit, true)
    const fromFlags = resolveNodeConfig({ stopTimeoutMs: '0', containerLogMaxBytes: '2048', stopContainersOnExit: 'false' }, env)
    assert.equal(fromFlags.stopTimeoutMs, 0)
    assert.equal(fromFlags.containerLogMaxBytes, 2048)
    assert.equal(fromFlags.stopContainersOnExit, false)
    // commander hands a boolean flag over as `true`
    assert.equal(resolveNodeConfig({ stopContainersOnExit: true }, { MSC_STOP_CONTAINERS_ON_EXIT: 'off' }).stopContainersOnExit, true)
    assert.equal(resolveNodeConfig({}, { MSC_STOP_CONTAINERS_ON_EXIT: 'off' }).stopContainersOnExit, false)
  })

  test('runtime binaries and cgroup parent', () => {
    const env = { MSC_RUNC: '/env/runc', MSC_CRIU: '/env/criu', MSC_CGROUP_PARENT: 'env-parent' }
    const fromEnv = resolveNodeConfig({}, env)
    assert.deepEqual([fromEnv.runcPath, fromEnv.criuPath, fromEnv.cgroupParent], ['/env/runc', '/env/criu', 'env-parent'])
    const fromFlags = resolveNodeConfig({ runcPath: '/f/runc', criuPath: '/f/criu', cgroupParent: 'a/b' }, env)
    assert.deepEqual([fromFlags.runcPath, fromFlags.criuPath, fromFlags.cgroupParent], ['/f/runc', '/f/criu', 'a/b'])
  })

  test('log format', () => {
    assert.equal(resolveNodeConfig({}, { MSC_LOG_FORMAT: 'pretty' }).logFormat, 'pretty')
    assert.equal(resolveNodeConfig({ logFormat: 'json' }, { MSC_LOG_FORMAT: 'pretty' }).logFormat, 'json')
  })
})

describe('the original msc environment names', () => {
  test('DUMP_PATH sets the data dir; MSC_DATA_DIR wins over it', () => {
    assert.equal(resolveNodeConfig({}, { DUMP_PATH: '/dumps' }).dataDir, '/dumps')
    assert.equal(resolveNodeConfig({}, { DUMP_PATH: '/dumps', MSC_DATA_DIR: '/msc' }).dataDir, '/msc')
  })

  test('LOG_LEVEL sets the log level; it wins over MSC_LOG_LEVEL', () => {
    assert.equal(resolveNodeConfig({}, { LOG_LEVEL: 'trace' }).logLevel, 'trace')
    assert.equal(resolveNodeConfig({}, { MSC_LOG_LEVEL: 'debug' }).logLevel, 'debug')
    assert.equal(resolveNodeConfig({}, { LOG_LEVEL: 'silent', MSC_LOG_LEVEL: 'debug' }).logLevel, 'silent')
  })

  test('RPC_ADDR sets the API socket', () => {
    assert.equal(resolveNodeConfig({}, { RPC_ADDR: '/run/msc.sock' }).apiSocket, '/run/msc.sock')
  })
})

describe('the API socket follows the data dir', () => {
  test('from a flag, from either env name, and resolved to an absolute path', () => {
    assert.equal(resolveNodeConfig({ dataDir: '/srv/a' }, {}).apiSocket, '/srv/a/msc.sock')
    assert.equal(resolveNodeConfig({}, { MSC_DATA_DIR: '/srv/b' }).apiSocket, '/srv/b/msc.sock')
    assert.equal(resolveNodeConfig({}, { DUMP_PATH: '/srv/c' }).apiSocket, '/srv/c/msc.sock')
    const rel = resolveNodeConfig({ dataDir: 'rel/dir' }, {})
    assert.equal(rel.dataDir, path.resolve('rel/dir'))
    assert.equal(rel.apiSocket, path.join(path.resolve('rel/dir'), 'msc.sock'))
  })

  test('unless the socket is given itself', () => {
    assert.equal(resolveNodeConfig({ dataDir: '/srv/a', apiSocket: '/tmp/x.sock' }, {}).apiSocket, '/tmp/x.sock')
    assert.equal(resolveNodeConfig({ dataDir: '/srv/a' }, { MSC_API_SOCKET: '/tmp/y.sock' }).apiSocket, '/tmp/y.sock')
  })

  test('the CLI finds the node the same way', () => {
    assert.deepEqual(resolveClientTarget({}, { DUMP_PATH: '/srv/d' }), { dataDir: '/srv/d', apiSocket: '/srv/d/msc.sock' })
    assert.deepEqual(resolveClientTarget({ dataDir: '/srv/e' }, { MSC_DATA_DIR: '/srv/f' }), { dataDir: '/srv/e', apiSocket: '/srv/e/msc.sock' })
    assert.deepEqual(resolveClientTarget({ apiSocket: '/tmp/z.sock' }, {}), { dataDir: '/var/lib/msc', apiSocket: '/tmp/z.sock' })
  })
})

describe('validation: INVALID_ARGUMENT naming the flag or variable', () => {
  test('log level', () => {
    assertInvalid(() => resolveNodeConfig({ logLevel: 'loud' }, {}), /--log-level/, /loud/, /info/)
    assertInvalid(() => resolveNodeConfig({}, { LOG_LEVEL: 'loud' }), /LOG_LEVEL/, /loud/)
    assertInvalid(() => resolveNodeConfig({}, { MSC_LOG_LEVEL: 'loud' }), /MSC_LOG_LEVEL/)
  })

  test('log format', () => {
    assertInvalid(() => resolveNodeConfig({ logFormat: 'xml' }, {}), /--log-format/, /xml/)
    assertInvalid(() => resolveNodeConfig({}, { MSC_LOG_FORMAT: 'xml' }), /MSC_LOG_FORMAT/)
  })

  test('numbers: not a number, negative, fractional, out of range', () => {
    assertInvalid(() => resolveNodeConfig({ stopTimeoutMs: 'soon' }, {}), /--stop-timeout/, /soon/)
    assertInvalid(() => resolveNodeConfig({ stopTimeoutMs: '-1' }, {}), /--stop-timeout/)
    assertInvalid(() => resolveNodeConfig({ stopTimeoutMs: '1.5' }, {}), /--stop-timeout/)
    assertInvalid(() => resolveNodeConfig({ stopTimeoutMs: '3600001' }, {}), /--stop-timeout/)
    assertInvalid(() => resolveNodeConfig({}, { MSC_STOP_TIMEOUT: '5s' }), /MSC_STOP_TIMEOUT/, /5s/)
    assertInvalid(() => resolveNodeConfig({ containerLogMaxBytes: '1023' }, {}), /--container-log-max/, /1024/)
    assertInvalid(() => resolveNodeConfig({}, { MSC_CONTAINER_LOG_MAX: '1e6' }), /MSC_CONTAINER_LOG_MAX/)
  })

  test('booleans', () => {
    assertInvalid(() => resolveNodeConfig({}, { MSC_STOP_CONTAINERS_ON_EXIT: 'maybe' }), /MSC_STOP_CONTAINERS_ON_EXIT/, /maybe/)
  })

  test('paths and cgroup parent', () => {
    assertInvalid(() => resolveNodeConfig({ dataDir: '' }, {}), /--data-dir/)
    assertInvalid(() => resolveNodeConfig({ dataDir: '/ok', apiSocket: '  ' }, {}), /--api-socket/)
    assertInvalid(() => resolveNodeConfig({ cgroupParent: '../escape' }, {}), /--cgroup-parent/, /\.\.\/escape/)
    assertInvalid(() => resolveNodeConfig({ cgroupParent: 'a/./b' }, {}), /--cgroup-parent/)
    assertInvalid(() => resolveNodeConfig({ cgroupParent: '/abs' }, {}), /--cgroup-parent/)
    assertInvalid(() => resolveNodeConfig({}, { MSC_CGROUP_PARENT: 'a b' }), /MSC_CGROUP_PARENT/)
  })

  test('a bad value is refused even when a valid one is further down the precedence', () => {
    // The flag is wrong: msc must not silently fall back to the (valid) environment.
    assertInvalid(() => resolveNodeConfig({ logLevel: 'loud' }, { LOG_LEVEL: 'warn' }), /--log-level/)
  })
})
