#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the tests and benchmarks.
#   deploy/test-postgres.sh start DIR PORT [durable]   -> prints the server's URL
#   (durable: fsync on, as a production server; for the benchmarks)
#   deploy/test-postgres.sh stop DIR
# Installs Debian's postgresql package when no server is installed (as root), and runs
# the server as the postgres user when run as root (initdb refuses root).
set -euo pipefail

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_server() {
    if [ -n "$(server_bin)" ]; then return; fi
    if [ "$(id -u)" != 0 ]; then
        echo "PostgreSQL is not installed: apt-get install postgresql (as root)" >&2
        exit 1
    fi
    echo "installing Debian's postgresql package" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

start() {
    local dir=$1 port=$2 fsync=off
    if [ "${3:-}" = durable ]; then fsync=on; fi
    install_server
    local bin
    bin=$(server_bin)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U credref -E UTF8 --no-sync >"$dir/initdb.log"
    # fsync off for the tests: their data need not survive the machine, only a restart
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
        "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=$fsync -c max_connections=200" \
        start >&2
    echo "postgresql://credref@127.0.0.1:$port/postgres"
}

stop() {
    local dir=$1
    as_owner "$(server_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
}

case "${1:-}" in
start) start "$2" "$3" "${4:-}" ;;
stop) stop "$2" ;;
*) echo "usage: $0 start DIR PORT [durable] | stop DIR" >&2; exit 2 ;;
esac
