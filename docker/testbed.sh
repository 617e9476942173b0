#!/usr/bin/env bash
# The docker testbed (docker/compose.yaml): three msc nodes, one Docker container each,
# that find each other by mDNS and form one cluster. Needs root.
#
#   docker/testbed.sh             build what is missing, start a fresh testbed, run the
#                                 counter on node1, migrate it to node2, show it counting
#                                 on; the testbed stays up for a look around
#   docker/testbed.sh exec NODE CMD...   run CMD in a node's container (e.g. msc ps)
#   docker/testbed.sh --down      remove it all: containers, network, volumes, the
#                                 containers' cgroups; and dockerd, if this script
#                                 started it (the images stay, for the next run)
#
# Installs Debian's docker.io (and docker-compose when no compose is there) and starts
# dockerd when none runs; what it started is recorded in /run/msc-docker.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT=msctestbed   # the same in compose 1.29 and v2 (1.29 strips '-' and '_')
NODES=(node1 node2 node3)
BUNDLE=/srv/bundles/counter
log() { printf '[testbed] %s\n' "$*" >&2; }
say() { printf '\n== %s\n' "$*"; }

# shellcheck source=engine.sh
. "$ROOT/docker/engine.sh"

if [ "$(id -u)" != 0 ]; then log "must run as root"; exit 1; fi

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/docker/compose.yaml" "$@"; }
# -T: no terminal, so it works from scripts and tests alike.
on() { local node="$1"; shift; compose exec -T "$node" "$@"; }

# The cgroups the nodes' runc made in the host's hierarchies (MSC_CGROUP_PARENT in
# compose.yaml): rmdir only, so a cgroup that still holds a process is left alone.
remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/msc-docker-node[0-9]* /sys/fs/cgroup/msc-docker-node[0-9]*; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

down() {
  if engine_answers; then
    find_compose
    # msc rm first: each node stops its container and removes its cgroups itself.
    local n
    for n in "${NODES[@]}"; do on "$n" msc rm --force counter >/dev/null 2>&1 || true; done
    compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || compose down -v --remove-orphans --timeout 10
  fi
  remove_cgroups
  stop_docker_engine_if_ours
  log "testbed removed"
}

# Polls `msc status` on a node until it sees N alive peers (max 90 s).
wait_for_peers() {
  local node="$1" want="$2" i alive=''
  for i in $(seq 1 180); do
    alive="$(on "$node" msc status --json 2>/dev/null | sed -n 's/.*"peersAlive": *\([0-9]*\).*/\1/p' | head -1 || true)"
    [ "${alive:-0}" -ge "$want" ] && return 0
    sleep 0.5
  done
  log "$node sees ${alive:-no} alive peers, not $want; its log:"; compose logs --tail 30 "$node" >&2 || true
  return 1
}

last_count() { on "$1" msc logs counter 2>/dev/null | tail -1 | tr -d '\r' || true; }

up() {
  bash "$ROOT/scripts/setup.sh" >/dev/null 2>&1 || bash "$ROOT/scripts/setup.sh"
  ensure_docker_engine
  find_compose
  bash "$ROOT/docker/build.sh"
  # A fresh testbed every time: what an earlier run left goes first.
  compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  remove_cgroups
  say "three msc nodes (${COMPOSE[*]} -p $PROJECT -f docker/compose.yaml up -d)"
  compose up -d
  for n in "${NODES[@]}"; do wait_for_peers "$n" 2; done
  on node1 msc peer ls

  say "node1 runs the counter: msc bundle counter $BUNDLE; msc run counter $BUNDLE"
  on node1 msc bundle counter "$BUNDLE" >/dev/null
  on node1 msc run counter "$BUNDLE"
  local i
  for i in $(seq 1 40); do [ "$(last_count node1)" -ge 4 ] 2>/dev/null && break; sleep 0.5; done
  echo "counter on node1: $(on node1 msc logs counter | tr -d '\r' | tr '\n' ' ')"

  say "${COMPOSE[*]} exec node1 msc peer migrate counter --to node2"
  on node1 msc peer migrate counter --to node2
  local at
  at="$(last_count node2)"
  for i in $(seq 1 40); do [ "$(last_count node2)" -ge $((at + 3)) ] 2>/dev/null && break; sleep 0.5; done

  say "msc logs counter (on node2): the count goes on where node1 left it"
  on node2 msc logs counter | tr -d '\r' | tr '\n' ' '; echo
  for n in "${NODES[@]}"; do echo "$n: $(on "$n" msc ps | tail -n +2 | awk '{print $1, $2}' | tr '\n' ' ')"; done

  say "the testbed stays up; look around, then remove it"
  echo "  ${COMPOSE[*]} -p $PROJECT -f docker/compose.yaml exec node2 msc logs -f counter"
  echo "  npm run testbed:docker -- --down"
}

case "${1:-up}" in
  up) up ;;
  --down|down) down ;;
  exec)
    shift
    [ $# -ge 2 ] || { log "usage: docker/testbed.sh exec NODE CMD..."; exit 2; }
    find_compose; on "$@" ;;
  *) log "usage: docker/testbed.sh [--down | exec NODE CMD...]"; exit 2 ;;
esac
