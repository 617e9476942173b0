#!/usr/bin/env bash
# The whole test suite: host set-up (idempotent), type check, lint, format check,
# unit tests, then integration tests with real runc and CRIU. Needs root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PATH="$ROOT/node_modules/.bin:$PATH"   # Node 24 first, whatever the system has
echo "== type check"
tsc --noEmit -p tsconfig.json
echo "== lint and format"
biome lint
node scripts/format.ts --check
echo "== tests (unit, then integration)"
# One test file at a time: integration tests start real containers on 2 cores.
exec node --test --test-concurrency=1 --test-reporter=spec \
  'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts' "$@"
