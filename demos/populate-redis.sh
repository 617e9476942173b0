#!/usr/bin/env bash
# Loads N keys into a redis: key "i" = value "i" for i in 1..N, then prints DBSIZE.
# Usage: populate-redis.sh [-h HOST] [-p PORT] N
# The commands are generated as RESP by awk and streamed through `redis-cli --pipe`
# (one connection, no round trip per key): 1,000,000 keys take a few seconds.
# Only the DBSIZE goes to stdout, so scripts can capture it; redis-cli's summary
# goes to stderr.
set -euo pipefail

host=127.0.0.1
port=6379
usage() { echo "usage: $0 [-h HOST] [-p PORT] N" >&2; exit 2; }
while getopts 'h:p:' opt; do
  case "$opt" in
    h) host=$OPTARG ;;
    p) port=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
n=$1
[[ "$n" =~ ^[0-9]+$ ]] || usage
# npm run setup unpacks redis-cli into its tools prefix (no system redis); else PATH's.
redis_cli="${MSC_TOOLS_DIR:-/opt/msc}/bin/redis-cli"
[ -x "$redis_cli" ] || redis_cli=redis-cli

# RESP for "SET i i": *3 CRLF $3 CRLF SET CRLF $len CRLF i CRLF $len CRLF i CRLF
awk -v n="$n" 'BEGIN {
  for (i = 1; i <= n; i++) {
    s = i ""; l = length(s)
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", l, s, l, s
  }
}' | "$redis_cli" -h "$host" -p "$port" --pipe >&2

"$redis_cli" -h "$host" -p "$port" DBSIZE
