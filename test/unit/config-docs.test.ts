/**
 * docs/configuration.md documents every option of `msc node start`: each flag and each
 * environment variable of NODE_OPTIONS (src/node/config.ts) must appear in it, both
 * in backticks (`--data-dir`, `--data-dir <value>`, `MSC_DATA_DIR`).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { NODE_OPTIONS } from '../../src/node/config.ts'

const doc = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8')

function escapeRegExp (s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

test('docs/configuration.md names every flag of msc node start', () => {
  for (const spec of Object.values(NODE_OPTIONS)) {
    // `--flag` or `--flag <value>`, not a longer flag that starts the same way.
    const re = new RegExp('`' + escapeRegExp(spec.flag) + '[` ]')
    assert.match(doc, re, `${spec.key}: flag ${spec.flag} is not in docs/configuration.md`)
  }
})

test('docs/configuration.md names every environment variable of msc node start', () => {
  for (const spec of Object.values(NODE_OPTIONS)) {
    for (let i = 0; i < spec.env.length; i++) {
      const name = spec.env[i]!
      assert.ok(doc.includes('`' + name + '`'), `${spec.key}: environment variable ${name} is not in docs/configuration.md`)
    }
  }
})
