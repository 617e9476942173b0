# Sourced by docker/build.sh and docker/testbed.sh: a Docker engine and a compose
# command, installed and started when missing, and stopped again by whoever started it.
#
# The project's machines come without a Docker engine (at most a docker client), and no
# registry but Debian's and npm's is reachable: the engine is Debian's docker.io, and
# compose is whichever of `docker compose` (v2) and Debian's docker-compose (1.29) is
# there, else the latter from Debian.
# Whether this script started dockerd is recorded in $MSC_DOCKER_STATE/dockerd.started
# before it starts, so that `docker/testbed.sh --down` stops exactly the dockerd it
# started (and one left by an interrupted run), never one the machine already ran.

MSC_DOCKER_STATE="${MSC_DOCKER_STATE:-/run/msc-docker}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/msc-dockerd.log}"
DOCKERD_PIDFILE=/var/run/docker.pid

engine_log() { printf '[docker] %s\n' "$*" >&2; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Installs docker.io when there is no dockerd, starts dockerd when no engine answers.
ensure_docker_engine() {
  if ! command -v dockerd >/dev/null 2>&1; then
    engine_log "installing Debian's docker.io (the Docker engine)"
    apt_install docker.io
  fi
  engine_answers && return 0
  mkdir -p "$MSC_DOCKER_STATE"
  # Recorded first: if anything below fails or is interrupted, --down still stops it.
  echo "started $(date -u +%FT%TZ)" > "$MSC_DOCKER_STATE/dockerd.started.tmp"
  mv "$MSC_DOCKER_STATE/dockerd.started.tmp" "$MSC_DOCKER_STATE/dockerd.started"
  engine_log "starting dockerd (log: $DOCKERD_LOG)"
  # Its own session, so it outlives this script; stdin from /dev/null, so it never
  # holds a caller's pipe open.
  # No inherited descriptors beyond stdio: a lock or pipe of the caller (flock, a test
  # runner) would otherwise be held for as long as the engine runs.
  setsid dockerd --pidfile "$DOCKERD_PIDFILE" >>"$DOCKERD_LOG" 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  local i
  for i in $(seq 1 120); do
    engine_answers && { engine_log "dockerd $(docker version --format '{{.Server.Version}}') is up"; return 0; }
    sleep 0.5
  done
  engine_log "dockerd did not answer within 60 s; its log:"; tail -20 "$DOCKERD_LOG" >&2 || true
  return 1
}

# Stops dockerd if ensure_docker_engine started it (now or in an earlier run).
stop_docker_engine_if_ours() {
  [ -f "$MSC_DOCKER_STATE/dockerd.started" ] || return 0
  local pid=''
  [ -f "$DOCKERD_PIDFILE" ] && pid="$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    engine_log "stopping the dockerd this testbed started (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
    if [ -d "/proc/$pid" ]; then engine_log "dockerd $pid still running after 30 s"; return 1; fi
  fi
  rm -f "$MSC_DOCKER_STATE/dockerd.started"
}

# Sets COMPOSE to the compose command line (an array): v2 when present, else 1.29.
find_compose() {
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose)
  else
    engine_log "installing Debian's docker-compose"
    apt_install docker-compose
    COMPOSE=(docker-compose)
  fi
}
