#!/usr/bin/env bash
# Browser test of <whatsapp-connect>: builds the gateway and graph-sim (unless
# WA_SKIP_BUILD=1), installs playwright-core from the lock file if needed, and runs
# `node --test` in headless Chromium (Debian's `chromium`; nothing is downloaded).
#
# Needs a running throwaway cluster with whatsapp_pg installed and preloaded, e.g.
#   WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-gw WA_PORT=55434 WA_DATABASE=wa_gw WA_EXTRA_CONF="wa.allow_any_database = on" scripts/cluster.sh start
# The test points that cluster's wa.graph_api_url at its own graph-sim (ALTER SYSTEM).
#
# Environment:
#   WA_GATEWAY_TEST_DSN  superuser DSN, key=value form
#                        (default: host=127.0.0.1 port=55434 user=postgres dbname=postgres)
#   CARGO_TARGET_DIR     where cargo builds (default: <repo>/target)
#   WA_GATEWAY_BIN, GRAPH_SIM_BIN  binaries (default: $CARGO_TARGET_DIR/debug/…)
#   CHROMIUM             browser (default: /usr/bin/chromium)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
frontend=$(dirname "$here")
repo=$(dirname "$frontend")

export WA_GATEWAY_TEST_DSN=${WA_GATEWAY_TEST_DSN:-host=127.0.0.1 port=55434 user=postgres dbname=postgres}
target=${CARGO_TARGET_DIR:-$repo/target}
export WA_GATEWAY_BIN=${WA_GATEWAY_BIN:-$target/debug/whatsapp-gateway}
export GRAPH_SIM_BIN=${GRAPH_SIM_BIN:-$target/debug/graph-sim}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ "${WA_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$repo" && cargo build --quiet -p whatsapp-gateway -p graph-sim)
fi
for bin in "$WA_GATEWAY_BIN" "$GRAPH_SIM_BIN"; do
    [ -x "$bin" ] || { echo "run.sh: $bin is missing (cargo build -p whatsapp-gateway -p graph-sim)" >&2; exit 1; }
done
[ -x "$CHROMIUM" ] || { echo "run.sh: $CHROMIUM is missing (apt-get install -y chromium)" >&2; exit 1; }
command -v psql >/dev/null || { echo "run.sh: psql is missing" >&2; exit 1; }
psql "$WA_GATEWAY_TEST_DSN" -XAtqc 'SELECT 1' >/dev/null \
    || { echo "run.sh: cannot connect to $WA_GATEWAY_TEST_DSN (start the cluster first)" >&2; exit 1; }

cd "$frontend"
if [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
mkdir -p test/artifacts
exec node --test --test-concurrency=1 test/connect.test.mjs
