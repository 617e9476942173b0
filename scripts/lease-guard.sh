#!/bin/sh
# lease-guard.sh DIR RUNC RUNC_ROOT [NETNS_PREFIX]
#
# The lease guard (src/failover/lease-guard.ts, protocols/lease.md "The guard"): kills
# a container whose lease deadline has passed, even when the msc daemon that should
# have renewed it, or fenced it, is dead. Containers outlive the daemon by design; if
# the daemon crashes, its peers fail the containers over once the leases run out, and
# the copies left here must be dead by then. This loop is independent of the daemon.
#
# DIR/NAME      an armed lease: one integer, the deadline in /proc/uptime centiseconds
#               (written by the daemon with a rename, so never seen half-written).
#               NAME is a container name: ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$
# DIR/.NAME.fenced   the guard killed NAME: the daemon reads these at start.
# DIR/.guard.pid     this process's pid.
# DIR/.stop          asks this process to exit (it removes the file).
# Control files start with a dot, which no container name does: no name collides.
#
# Every ~100 ms while a deadline is less than 0.6 s away, else every 0.5 s: for each
# armed NAME whose deadline is reached, run
# `RUNC --root RUNC_ROOT kill --all NAME KILL` (errors ignored: a container that is
# already gone is fine) and rename DIR/NAME to DIR/.NAME.fenced. With NETNS_PREFIX
# (`msc-NODEID-`), a NAME that has the network namespace /run/netns/NETNS_PREFIX+NAME
# (a `--network lan` container) also loses that namespace's eth0, its LAN link: with
# the daemon dead and the host up, the address must not answer here once a standby
# took it over. Exits when DIR/.stop exists or DIR is gone. POSIX sh only.
set -u

if [ "$#" -ne 3 ] && [ "$#" -ne 4 ]; then
  echo "usage: lease-guard.sh DIR RUNC RUNC_ROOT [NETNS_PREFIX]" >&2
  exit 2
fi
dir=$1
runc=$2
root=$3
netns_prefix=${4:-}

[ -d "$dir" ] || exit 1
echo "$$" > "$dir/.guard.pid.tmp" && mv -f "$dir/.guard.pid.tmp" "$dir/.guard.pid"

while :; do
  if [ ! -d "$dir" ]; then
    exit 0
  fi
  if [ -e "$dir/.stop" ]; then
    rm -f "$dir/.stop" "$dir/.guard.pid"
    exit 0
  fi
  # "12345.67 98765.43": seconds with two decimals. Concatenated digits are
  # centiseconds; test's -ge compares them as decimal (leading zeros are fine there,
  # unlike in $(( )) where they would mean octal).
  read -r up _rest < /proc/uptime || up=
  now=${up%.*}${up#*.}
  case $now in ''|*[!0-9]*) sleep 0.1; continue ;; esac
  armed=0
  soon=0
  for f in "$dir"/*; do
    [ -f "$f" ] || continue
    armed=1
    name=${f##*/}
    case $name in
      *[!A-Za-z0-9_.-]*) continue ;;
      [A-Za-z0-9]*) ;;
      *) continue ;;
    esac
    [ "${#name}" -le 63 ] || continue
    deadline=
    # The file may be renamed away meanwhile (disarmed, re-armed): then skip it.
    { read -r deadline < "$f"; } 2> /dev/null || :
    case $deadline in ''|*[!0-9]*) continue ;; esac
    if [ "$now" -ge "$deadline" ]; then
      "$runc" --root "$root" kill --all "$name" KILL > /dev/null 2>&1 || :
      if [ -n "$netns_prefix" ] && [ -e "/run/netns/$netns_prefix$name" ]; then
        ip -n "$netns_prefix$name" link delete eth0 > /dev/null 2>&1 || :
      fi
      mv -f "$f" "$dir/.$name.fenced" 2> /dev/null || :
    elif [ "$deadline" -le $((now + 60)) ]; then
      soon=1
    fi
  done
  # It looks again in 0.5 s unless a deadline is closer than 0.6 s. A deadline is at
  # least 0.7 s away when the daemon writes it (lease - margin - the longest wait for
  # grants: 2 - 0.3 - 1 s for the shortest lease, more for longer ones), and a renewal
  # only moves it later, so none comes due unseen. Each look forks a `sleep`: looking
  # every 100 ms all the time cost several percent of a core per node.
  if [ "$soon" -eq 1 ]; then sleep 0.1; else sleep 0.5; fi
done
