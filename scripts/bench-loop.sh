#!/usr/bin/env bash
# `make bench-loop`: the closed loop. The worker sends to graph-sim, graph-sim POSTs signed
# sent/delivered/read status webhooks to the real gateway, which ingests them into the same
# cluster while the worker sends; next to the same burst sent with status webhooks off.
# Prints figures; asserts nothing. Extra arguments go to the bench program (--messages,
# --numbers, --batch, --status-delay-ms, --webhook-concurrency, --rate, --paced-secs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-bench-loop WA_PORT=55440 WA_DATABASE=wa_bench_loop

# The optimised build of everything measured; built first, so the compiler does not compete
# with the cluster for the two cores.
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/dev/null
cargo build --release -p wa-benches --bin bench-loop
cargo build --release -p whatsapp-gateway
scripts/cluster.sh destroy
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
echo "note: the bench cluster runs with fsync=off (scripts/cluster.sh); default worker and gateway settings."
cargo run --release -q -p wa-benches --bin bench-loop -- \
    --host 127.0.0.1 --port "$WA_PORT" --user postgres --db "$WA_DATABASE" \
    --gateway-bin "${CARGO_TARGET_DIR:-target}/release/whatsapp-gateway" "$@"
