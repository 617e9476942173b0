/**
 * `node src/runtime/shim/build.ts [--check]`: prints the path of the container log
 * shim's binary, compiling it first when it is missing (`npm run setup` runs this), or
 * with --check only tells whether it is there (exit 1 when not: an image without gcc).
 */
import { buildLogShim, builtLogShim, LOG_SHIM_SOURCE } from './binary.ts'

if (process.argv.includes('--check')) {
  const binary = await builtLogShim()
  if (binary == null) {
    process.stderr.write(`log shim not built for ${LOG_SHIM_SOURCE}: run \`npm run setup\`\n`)
    process.exit(1)
  }
  process.stdout.write(binary + '\n')
} else {
  process.stdout.write(await buildLogShim() + '\n')
}
