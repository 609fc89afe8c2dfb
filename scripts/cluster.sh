#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster with whatsapp_pg preloaded, for integration tests, benches
# and the demo. Runs as the 'postgres' OS user (PostgreSQL refuses root).
#
#   scripts/cluster.sh start    # initdb if needed, write a key file, start
#   scripts/cluster.sh stop
#   scripts/cluster.sh env      # print PG* variables for psql / tests
#
# Settings (environment): WA_CLUSTER_DIR (default /var/tmp/whatsapp_pg-cluster),
# WA_PORT (55432), WA_DATABASE (whatsapp), WA_GRAPH_API_URL (unset = Meta).
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
DIR=${WA_CLUSTER_DIR:-/var/tmp/whatsapp_pg-cluster}
PORT=${WA_PORT:-55432}
DB=${WA_DATABASE:-whatsapp}
DATA=$DIR/data
KEY=$DIR/master.key
LOG=$DIR/postgres.log

as_pg() {
    if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

start() {
    install -d -o postgres -g postgres -m 0700 "$DIR"
    if [ ! -f "$KEY" ]; then
        # 32 random bytes; readable only by the server's OS user.
        ( umask 077; printf 'k1:%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" > "$KEY" )
        chown postgres:postgres "$KEY"
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        as_pg "$PGBIN/initdb" -D "$DATA" -A trust -U postgres --no-sync >/dev/null
        cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
shared_preload_libraries = 'whatsapp_pg'
max_connections = 200
fsync = off
full_page_writes = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
wa.key_file = '$KEY'
wa.database = '$DB'
CONF
        # Extra settings, one per line (e.g. "wa.allow_any_database = on" for test clusters).
        if [ -n "${WA_EXTRA_CONF:-}" ]; then
            printf '%s\n' "$WA_EXTRA_CONF" >> "$DATA/postgresql.conf"
        fi
        if [ -n "${WA_GRAPH_API_URL:-}" ]; then
            echo "wa.graph_api_url = '$WA_GRAPH_API_URL'" >> "$DATA/postgresql.conf"
        fi
    fi
    if as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        echo "cluster already running on port $PORT"
    else
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null
        echo "cluster started on port $PORT (log: $LOG)"
    fi
    if ! as_pg "$PGBIN/psql" -h "$DIR" -p "$PORT" -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DB'" postgres | grep -q 1; then
        as_pg "$PGBIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$DB"
    fi
}

stop() {
    if [ -f "$DATA/PG_VERSION" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    destroy) stop; rm -rf "$DIR" ;;
    env) echo "PGHOST=$DIR PGPORT=$PORT PGUSER=postgres PGDATABASE=$DB" ;;
    *) echo "usage: $0 start|stop|destroy|env" >&2; exit 2 ;;
esac
