/**
 * runtimeConfig: the config.json runc runs. It names the node's CRIU configuration and
 * never the bundle's (a CRIU configuration can run scripts as root on the host).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CRIU_CONFIG_ANNOTATION, REQUEST_SOCKET_IN_CONTAINER, runtimeConfig, type LoadedBundle } from '../../src/runtime/bundle.ts'

function bundle (config: Record<string, unknown>): LoadedBundle {
  return { dir: '/b', rootfs: '/b/rootfs', config: { process: { args: ['/bin/sh'], terminal: true }, root: { path: 'rootfs' }, ...config } }
}

test("the node's CRIU configuration replaces the one a bundle names", () => {
  const b = bundle({ annotations: { [CRIU_CONFIG_ANNOTATION]: '/b/rootfs/evil.conf', 'org.example.keep': 'yes' } })
  const c = runtimeConfig(b, { cgroupsPath: '/msc/x', criuConfig: '/data/criu-host-network.conf' })
  assert.deepEqual(c.annotations, { [CRIU_CONFIG_ANNOTATION]: '/data/criu-host-network.conf', 'org.example.keep': 'yes' })
  assert.equal((b.config.annotations as Record<string, string>)[CRIU_CONFIG_ANNOTATION], '/b/rootfs/evil.conf', 'the loaded bundle is not changed')
})

test("without a node configuration (--tcp-established), the bundle's is removed, not kept", () => {
  const c = runtimeConfig(bundle({ annotations: { [CRIU_CONFIG_ANNOTATION]: '/etc/evil.conf' } }), { cgroupsPath: '/msc/x', criuConfig: null })
  assert.deepEqual(c.annotations, {})
})

test("a bundle without annotations gets only the node's", () => {
  const c = runtimeConfig(bundle({}), { cgroupsPath: '/msc/x', criuConfig: '/data/c.conf' })
  assert.deepEqual(c.annotations, { [CRIU_CONFIG_ANNOTATION]: '/data/c.conf' })
  assert.equal(runtimeConfig(bundle({}), { cgroupsPath: '/msc/x' }).annotations, undefined, 'and none when there is nothing to say')
})

test("root made absolute, terminal off, the node's cgroup and request socket", () => {
  const b = bundle({ mounts: [{ destination: REQUEST_SOCKET_IN_CONTAINER, type: 'bind', source: '/elsewhere/ipc.sock' }] })
  const c = runtimeConfig(b, { cgroupsPath: '/msc/x', requestSocket: '/data/ipc.sock' })
  assert.equal(c.root?.path, '/b/rootfs')
  assert.equal(c.process?.terminal, false)
  assert.equal(c.linux?.cgroupsPath, '/msc/x')
  assert.equal(c.mounts?.[0]?.source, '/data/ipc.sock')
})
