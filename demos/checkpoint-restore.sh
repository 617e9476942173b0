#!/usr/bin/env bash
# A one-node demo: a counter container runs on an msc node, is checkpointed with CRIU,
# stopped, and restored; the count goes on from where it was. Needs root.
# Everything it makes lives in a temporary directory and is removed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" >/dev/null 2>&1 || bash "$ROOT/scripts/setup.sh"
MSC="$ROOT/bin/msc"
WORK="$(mktemp -d /tmp/msc-demo-XXXXXX)"
export MSC_DATA_DIR="$WORK/node"
NODE_PID=""
cleanup() {
  "$MSC" rm --force counter >/dev/null 2>&1 || true
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null || true
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT INT TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show_count() { "$MSC" logs counter | tail -n "${1:-3}" | tr '\n' ' '; echo; }

say "starting an msc node (data dir $MSC_DATA_DIR)"
# On loopback without mDNS: this demo is one node, and multicast must not reach a real LAN.
"$MSC" node start --log-level warn --log-format pretty --no-mdns --listen /ip4/127.0.0.1/tcp/0 &
NODE_PID=$!
for _ in $(seq 50); do "$MSC" status >/dev/null 2>&1 && break; sleep 0.2; done
"$MSC" status

say "writing the counter bundle and running it"
"$MSC" bundle counter "$WORK/counter"
"$MSC" run counter "$WORK/counter"
sleep 4
"$MSC" ps
printf 'counter so far: '; show_count 4

say "checkpointing it with CRIU and stopping it"
"$MSC" checkpoint counter --stop
"$MSC" ps
printf 'last value before the checkpoint: '; show_count 1
sleep 2
printf 'two seconds later, still: '; show_count 1

say "restoring it from the checkpoint"
"$MSC" restore counter
sleep 3
printf 'counting again: '; show_count 4
"$MSC" ps

say "the whole log: one sequence, no restart at 1"
"$MSC" logs counter | tr '\n' ' '; echo
