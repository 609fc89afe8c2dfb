#!/usr/bin/env bash
# `make bench-send`: the background worker draining queued messages to graph-sim (limits off),
# next to a bare Rust HTTP client at the same concurrency, plus enqueue → request latency when
# idle and a large backlog with memory and open files. Prints figures; asserts nothing.
# Extra arguments go to the bench program (--messages, --backlog, --latency-samples, --concurrency).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-bench-send WA_PORT=55439 WA_DATABASE=wa_bench_send

# Measure the optimised build: install the extension in release mode, build the bench first so
# the compiler does not compete with the cluster for the two cores.
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/dev/null
cargo build --release -p wa-benches --bin bench-send
scripts/cluster.sh destroy
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
echo "note: the bench cluster runs with fsync=off (scripts/cluster.sh); default worker settings."
cargo run --release -q -p wa-benches --bin bench-send -- \
    --host 127.0.0.1 --port "$WA_PORT" --user postgres --db "$WA_DATABASE" "$@"
