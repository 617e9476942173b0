/**
 * The formatter (`npm run format`; `npm run format:check` in `npm test`): dprint's
 * TypeScript plugin, run from Node through @dprint/formatter, with the settings of
 * dprint.json. The dprint CLI would need a native binary per platform, which the
 * registry these machines reach does not all have; the plugin is one wasm file.
 *
 *   node scripts/format.ts            rewrite every .ts file that is not formatted
 *   node scripts/format.ts --check    list them and exit 1 if there are any
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createFromBuffer } from '@dprint/formatter'
import { getPath } from '@dprint/typescript'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

interface FormatConfig {
  lineWidth: number
  indentWidth: number
  useTabs: boolean
  newLineKind: 'lf' | 'crlf' | 'auto' | 'system'
  typescript: Record<string, unknown>
  includes: string[]
  excludes: string[]
}

async function* tsFiles (dir: string, excludes: string[]): AsyncGenerator<string> {
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    const rel = path.relative(ROOT, p)
    if (excludes.some((x) => rel === x || rel.startsWith(`${x}/`)) || e.name === 'node_modules') continue
    if (e.isDirectory()) yield* tsFiles(p, excludes)
    else if (e.isFile() && e.name.endsWith('.ts')) yield p
  }
}

async function main (): Promise<number> {
  const check = process.argv.includes('--check')
  const config = JSON.parse(await fs.readFile(path.join(ROOT, 'dprint.json'), 'utf8')) as FormatConfig
  const formatter = createFromBuffer(await fs.readFile(getPath()))
  formatter.setConfig({ lineWidth: config.lineWidth, indentWidth: config.indentWidth, useTabs: config.useTabs, newLineKind: config.newLineKind }, config.typescript)
  const problems = formatter.getConfigDiagnostics()
  if (problems.length > 0) {
    for (const d of problems) process.stderr.write(`dprint.json: ${d.propertyName}: ${d.message}\n`)
    return 2
  }
  const unformatted: string[] = []
  for (const dir of config.includes) {
    for await (const file of tsFiles(path.join(ROOT, dir), config.excludes)) {
      const text = await fs.readFile(file, 'utf8')
      const formatted = formatter.formatText({ filePath: file, fileText: text })
      if (formatted === text) continue
      unformatted.push(path.relative(ROOT, file))
      if (!check) await fs.writeFile(file, formatted)
    }
  }
  if (check && unformatted.length > 0) {
    process.stderr.write(`not formatted (npm run format fixes them):\n${unformatted.map((f) => `  ${f}\n`).join('')}`)
    return 1
  }
  if (!check) process.stdout.write(`${unformatted.length} file(s) formatted\n`)
  return 0
}

process.exitCode = await main()
