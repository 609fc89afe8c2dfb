#!/usr/bin/env bash
# `make bench-ingest`: messages per second through wa.ingest_webhook (single-message deliveries
# and 100-message batches) next to plain INSERTs of the same rows, on a dedicated cluster.
# Prints figures; asserts nothing. Extra arguments go to the bench program, e.g.
#   scripts/bench-ingest.sh --clients 4 --messages 10000 --reps 7
#   scripts/bench-ingest.sh --profile   # also pg_stat_statements of the nested statements
#                                       # (on its own cluster with the module preloaded)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

export WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-bench WA_PORT=55436 WA_DATABASE=wa_bench
export WA_EXTRA_CONF="wa.allow_any_database = on"
# wa.connect_tenant verifies against the Graph API where reachable: here nothing answers.
export WA_GRAPH_API_URL=http://127.0.0.1:9
for arg in "$@"; do
    if [ "$arg" = --profile ]; then
        export WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-bench-profile WA_PORT=55437
        WA_EXTRA_CONF+=$'\nshared_preload_libraries = \'whatsapp_pg,pg_stat_statements\''
    fi
done

# Build first, so the compiler does not compete with the cluster for the two cores.
cargo build --release -p wa-benches --bin bench-ingest

# A running postmaster keeps the previously installed library: restart to load the current one.
scripts/cluster.sh stop
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
# The background worker serves wa.database (wa_bench) and is woken by every committed delivery.
# With the extension there it finds an empty outbox, as in production; without it, every wake
# fails ("relation wa.outbox does not exist") and that error path would skew the figures.
psql -h 127.0.0.1 -p "$WA_PORT" -U postgres -d "$WA_DATABASE" -qc "CREATE EXTENSION IF NOT EXISTS whatsapp_pg"
# Also for a cluster made before the setting was added at creation.
psql -h 127.0.0.1 -p "$WA_PORT" -U postgres -d postgres -q \
    -c "ALTER SYSTEM SET wa.graph_api_url = '$WA_GRAPH_API_URL'" -c "SELECT pg_reload_conf()" >/dev/null
# Databases left by an interrupted run (the bench drops its own at the end). This cluster is
# the bench's alone, and this script is its only user while it runs.
for stale in $(psql -h 127.0.0.1 -p "$WA_PORT" -U postgres -d postgres -Atc \
        "SELECT datname FROM pg_database WHERE datname ~ '^wa_bench_ingest_[0-9]+$'"); do
    psql -h 127.0.0.1 -p "$WA_PORT" -U postgres -d postgres -qc "DROP DATABASE $stale WITH (FORCE)"
done

echo "note: the bench cluster runs with fsync=off (scripts/cluster.sh); the ingest and the plain-INSERT"
echo "      baseline share it, so both sides get the same settings (printed below)."
cargo run --release -q -p wa-benches --bin bench-ingest -- \
    --host 127.0.0.1 --port "$WA_PORT" --user postgres --db postgres "$@"
