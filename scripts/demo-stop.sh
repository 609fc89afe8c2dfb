#!/usr/bin/env bash
# Stops what `make demo` started: the gateway, graph-sim and the demo cluster.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=${WA_DEMO_DIR:-/var/tmp/whatsapp_pg-demo}
for name in gateway graph-sim; do
    if [ -f "$RUN/$name.pid" ]; then
        kill "$(cat "$RUN/$name.pid")" 2>/dev/null && echo "stopped $name"
        rm -f "$RUN/$name.pid"
    fi
done
scripts/cluster.sh stop && echo "stopped PostgreSQL"
