#!/usr/bin/env bash
# The main demo: a counter container migrates between msc nodes on a testbed of
# network-namespace hosts and keeps counting. Needs root. Does its own set-up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" >/dev/null 2>&1 || bash "$ROOT/scripts/setup.sh"
exec "$ROOT/node_modules/.bin/node" "$ROOT/demos/migration-demo.ts"
