#!/bin/bash
# A throwaway PostgreSQL 15 (Debian's postgresql-15) for tests and trials: initdb + pg_ctl, listening on 127.0.0.1 only.
#   postgres.sh start DIR [PORT]   creates DIR/pgdata on first use, starts the server, prints the connection string
#                                  (also written to DIR/connection); PORT defaults to the first free one from 55432
#   postgres.sh stop DIR           stops it (fast shutdown)
# The role `isr` may connect from 127.0.0.1 without a password (trust): never expose this server. Durability is
# traded for speed (fsync off): the data directory is for tests and trials only. PostgreSQL refuses to run as root,
# so as root the server runs as the `postgres` system user (created by the package), which then owns DIR.
set -euo pipefail

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")
port=${3:-}

bin=${ISR_PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$bin/pg_ctl" ]; then
    echo "postgres.sh: no PostgreSQL 15 at $bin (install postgresql-15: scripts/install-deps.sh)" >&2
    exit 3
fi

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $cmd in
start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if ! as_owner test -x "$dir"; then
        echo "postgres.sh: the server's user cannot enter $dir (a parent directory is closed to it)" >&2
        exit 3
    fi
    if [ ! -f "$dir/pgdata/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/pgdata" -U isr --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # a free port from 55432 on, unless given; another server taking it meanwhile makes the start fail: try the next
    fixed=$port
    next=55432
    for _ in $(seq 1 20); do
        if [ -z "$fixed" ]; then
            for _ in $(seq 1 200); do
                (exec 3<>"/dev/tcp/127.0.0.1/$next") 2>/dev/null || break
                next=$((next + 1))
            done
            port=$next
            next=$((next + 1))
        fi
        if as_owner "$bin/pg_ctl" -D "$dir/pgdata" -l "$dir/server.log" -w -t 60 start \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >/dev/null 2>>"$dir/pg_ctl.log"; then
            started=1
            break
        fi
        [ -z "$fixed" ] || break
    done
    [ "${started:-0}" = 1 ] || { tail -n 5 "$dir/pg_ctl.log" "$dir/server.log" >&2; exit 1; }
    connection="Host=127.0.0.1;Port=$port;Username=isr;Database=postgres"
    echo "$connection" >"$dir/connection"
    echo "$connection"
    ;;
stop)
    [ -f "$dir/pgdata/PG_VERSION" ] || { echo "postgres.sh: no server in $dir" >&2; exit 3; }
    as_owner "$bin/pg_ctl" -D "$dir/pgdata" -m fast -w stop >/dev/null
    ;;
*) usage ;;
esac
