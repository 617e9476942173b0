#!/bin/sh
# Entry point of the msc node image (docker/Dockerfile): prepares what a node needs
# inside a container, then becomes `msc node start` (arguments are passed on; options
# also come from MSC_* variables, see `msc node start --help`).
set -eu

# mDNS needs a route for multicast: on a network that gives the container no default
# route, the node's mDNS finds nobody and says nothing. Route 224.0.0.0/4 onto the
# container's own network then.
if [ -z "$(ip -4 route show default)" ] && [ -z "$(ip -4 route show 224.0.0.0/4)" ]; then
  dev="$(ip -4 -o route show scope link | awk 'NR == 1 { for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1) }')"
  [ -n "$dev" ] && ip route add 224.0.0.0/4 dev "$dev"
fi

# Docker mounts /proc/sys read-only in a container that is not privileged, and CRIU
# writes there when it restores a container's namespaces (kernel/hostname of its UTS
# namespace, the IPC namespace's limits, ns_last_pid). `security_opt:
# systempaths=unconfined` would lift it, but only the docker CLI understands that
# option (it turns it into the engine's masked and read-only path lists), so
# docker-compose 1.29 cannot pass it; the node makes /proc/sys writable itself (it has
# CAP_SYS_ADMIN, and this is its own mount namespace).
if ! touch /proc/sys/kernel/hostname 2>/dev/null; then
  mount -o remount,bind,rw /proc/sys
fi

# The cluster key (MSC_PSK_FILE), on a volume all nodes of the testbed share: the first
# node to start makes it, under a lock so that no node reads a half-written key and no
# two nodes make two keys.
if [ -n "${MSC_PSK_FILE:-}" ] && [ ! -s "$MSC_PSK_FILE" ]; then
  keydir="$(dirname "$MSC_PSK_FILE")"
  mkdir -p "$keydir"
  flock "$keydir/.keygen.lock" sh -c '[ -s "$1" ] || msc keygen psk "$1"' keygen "$MSC_PSK_FILE"
fi

exec msc node start "$@"
