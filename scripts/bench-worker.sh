#!/usr/bin/env bash
# The benchmarks that drive the background worker against graph-sim, each on a cluster of its
# own (fsync=off, default worker settings), the release build installed first:
#   scripts/bench-worker.sh send  [args]  # make bench-send, bench-backlog: draining queued
#                                         # messages next to a bare Rust client, idle latency,
#                                         # a large backlog with memory and open files
#   scripts/bench-worker.sh loop  [args]  # make bench-loop: the closed loop, signed status
#                                         # webhooks back through the gateway
#   scripts/bench-worker.sh media [args]  # make bench-media: a burst of large inbound videos
#                                         # through the gateway, next to bare downloads
# Prints figures; asserts nothing. The arguments go to the bench program (--help-like usage
# on a wrong flag).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bench=${1:?usage: scripts/bench-worker.sh send|loop|media [args]}
shift
case "$bench" in
    send) port=55439 gateway=0 ;;
    loop) port=55440 gateway=55441 ;;
    media) port=55442 gateway=55443 ;;
    *) echo "unknown bench $bench (send, loop, media)" >&2; exit 2 ;;
esac
export WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-bench-$bench WA_PORT=$port WA_DATABASE=wa_bench_$bench

# The optimised build of everything measured; built first, so the compiler does not compete
# with the cluster for the two cores.
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/dev/null
cargo build --release -p wa-benches --bin "bench-$bench"
args=(--host 127.0.0.1 --port "$WA_PORT" --user postgres --db "$WA_DATABASE")
if [ "$gateway" != 0 ]; then
    cargo build --release -p whatsapp-gateway
    args+=(--gateway-bin "${CARGO_TARGET_DIR:-target}/release/whatsapp-gateway" --gateway-port "$gateway")
fi
scripts/cluster.sh destroy
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
echo "note: the bench cluster runs with fsync=off (scripts/cluster.sh); default worker and gateway settings."
cargo run --release -q -p wa-benches --bin "bench-$bench" -- "${args[@]}" "$@"
