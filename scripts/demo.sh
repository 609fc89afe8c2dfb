#!/usr/bin/env bash
# The whole product on one machine, against the local Graph API simulator instead of Meta:
# PostgreSQL 15 with whatsapp_pg (and its worker), graph-sim, and the webhook gateway.
# Walks through Embedded Signup → send → delivery statuses → a customer's reply.
# (`make demo` builds and installs the extension first; `make demo-stop` stops everything.)
# The package test runs it against an installed package: WA_DEMO_GATEWAY_BIN and
# WA_DEMO_ASSETS_DIR name the packaged gateway and component instead of the build tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
export WA_CLUSTER_DIR=${WA_CLUSTER_DIR:-/var/tmp/whatsapp_pg-cluster}
export WA_PORT=${WA_PORT:-55432}
export WA_DATABASE=${WA_DATABASE:-whatsapp}
SIM_PORT=${WA_DEMO_SIM_PORT:-18080}
GW_PORT=${WA_DEMO_GATEWAY_PORT:-18081}
RUN=${WA_DEMO_DIR:-/var/tmp/whatsapp_pg-demo}
APP_ID=1234567890123456
APP_SECRET=demo-app-secret-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
VERIFY_TOKEN=demo-verify-token
SIM=http://127.0.0.1:$SIM_PORT
GW=http://127.0.0.1:$GW_PORT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sql() { runuser -u postgres -- psql -h "$WA_CLUSTER_DIR" -p "$WA_PORT" -d "$WA_DATABASE" -v ON_ERROR_STOP=1 -qAtX "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
conversation() {
    sql -c "SELECT format('  %-8s %-9s %-10s %s', m.direction, m.type, m.status,
                          coalesce(m.content->'text'->>'body', m.content->'template'->>'name', ''))
              FROM wa.conversations('$tenant') c, LATERAL wa.messages(c.conversation_id) m
             ORDER BY m.created_at"
}
wait_for() { # what, seconds, command...
    local what=$1 t=$2; shift 2
    for _ in $(seq 1 $((t * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "demo: timed out waiting for $what" >&2
    return 1
}

install -d "$RUN"
step "Build graph-sim and the gateway"
cargo build --quiet -p graph-sim -p whatsapp-gateway
TARGET=${CARGO_TARGET_DIR:-target}/debug
GATEWAY_BIN=${WA_DEMO_GATEWAY_BIN:-$TARGET/whatsapp-gateway}
ASSETS_DIR=${WA_DEMO_ASSETS_DIR:-frontend}

scripts/demo-stop.sh >/dev/null 2>&1 || true

step "Start the Graph API simulator on $SIM (Meta stand-in)"
"$TARGET/graph-sim" --listen "127.0.0.1:$SIM_PORT" --app-id "$APP_ID" --app-secret "$APP_SECRET" \
    --webhook-url "$GW/webhook" --status-delay-ms 300 >"$RUN/graph-sim.log" 2>&1 &
echo $! >"$RUN/graph-sim.pid"
wait_for graph-sim 10 curl -fsS "$SIM/_sim/health"

step "Start PostgreSQL 15 with whatsapp_pg preloaded (port $WA_PORT, database $WA_DATABASE)"
# A fresh cluster each run: the demo shows the whole path from nothing.
scripts/cluster.sh destroy
scripts/cluster.sh start
runuser -u postgres -- psql -h "$WA_CLUSTER_DIR" -p "$WA_PORT" -d postgres -qAtX \
    -c "ALTER SYSTEM SET wa.graph_api_url = '$SIM'" -c "SELECT pg_reload_conf()" >/dev/null
sql -c "CREATE EXTENSION IF NOT EXISTS whatsapp_pg"
sql -c "SELECT 'whatsapp_pg ' || extversion FROM pg_extension WHERE extname = 'whatsapp_pg'"
sql -c "SELECT wa.configure_app('$APP_ID', '$APP_SECRET', '$VERIFY_TOKEN', '987654321')" >/dev/null
echo "Meta app configured: $(sql -c 'SELECT wa.signup_config()')"

step "Start the webhook gateway on $GW"
WA_GATEWAY_DATABASE_URL="host=$WA_CLUSTER_DIR port=$WA_PORT user=postgres dbname=$WA_DATABASE" \
    "$GATEWAY_BIN" --listen "127.0.0.1:$GW_PORT" --assets-dir "$ASSETS_DIR" >"$RUN/gateway.log" 2>&1 &
echo $! >"$RUN/gateway.pid"
wait_for gateway 10 curl -fsS "$GW/healthz"
curl -fsS "$GW/assets/whatsapp-connect.js" | grep -q "customElements.define" \
    || { echo "demo: the gateway does not serve the <whatsapp-connect> component" >&2; exit 1; }
echo "Meta's webhook handshake: $(curl -fsS -X POST "$SIM/_sim/webhook_verify" -H 'Content-Type: application/json' \
    -d "{\"verify_token\":\"$VERIFY_TOKEN\"}" | json "'ok' if d['ok'] else d")"

step "A business customer of the host app becomes a tenant"
tenant=$(sql -c "SELECT tenant_id FROM wa.tenants WHERE external_ref = 'demo-hotel'")
if [ -z "$tenant" ]; then
    tenant=$(sql -c "SELECT wa.create_tenant('Demo Hotel', 'demo-hotel')")
fi
echo "tenant $tenant: $(sql -c "SELECT wa.connection_status('$tenant')->>'state'")"

step "Embedded Signup: the popup gives the browser a code, the browser posts it to the gateway"
signup=$(curl -fsS -X POST "$SIM/_sim/signups" -H 'Content-Type: application/json' \
    -d '{"verified_name":"Demo Hotel","display_phone_number":"+1 555-010-2030"}')
code=$(echo "$signup" | json "d['code']")
waba=$(echo "$signup" | json "d['waba_id']")
phone=$(echo "$signup" | json "d['phone_number_id']")
# The host app mints a one-time signup state for its signed-in user's tenant and puts it in
# the page (<whatsapp-connect state="…">); the gateway hands it back to wa.complete_signup.
state=$(sql -c "SELECT wa.begin_signup('$tenant')->>'state'")
echo "WABA $waba, phone number id $phone"
curl -fsS -X POST "$GW/signup/exchange" -H 'Content-Type: application/json' \
    -d "{\"state\":\"$state\",\"code\":\"$code\",\"waba_id\":\"$waba\",\"phone_number_id\":\"$phone\"}" \
    | json "'connection: ' + d['state'] + ' · ' + str(d['phone_numbers'][0]['verified_name']) + ' ' + str(d['phone_numbers'][0]['display_phone_number']) + ' · quality ' + str(d['phone_numbers'][0]['quality_rating'])"

step "The host app sends a WhatsApp message with SQL"
guest=15550001234
message=$(sql -c "SET wa.tenant_id = '$tenant'; SELECT wa.send_text('$tenant', '$guest', 'Hello from Demo Hotel! Your room is ready.')")
echo "message $message queued"
wait_for "delivery" 20 bash -c "[ \"\$(runuser -u postgres -- psql -h $WA_CLUSTER_DIR -p $WA_PORT -d $WA_DATABASE -qAtX -c \"SELECT status FROM wa.messages WHERE message_id = '$message'\")\" = read ]"
sql -c "SELECT format('status %s: sent %s, delivered %s, read %s', status, sent_at::time(0), delivered_at::time(0), read_at::time(0))
          FROM wa.messages WHERE message_id = '$message'"
conversation

step "The guest replies (the simulator delivers Meta's signed webhook to the gateway)"
curl -fsS -X POST "$SIM/_sim/inbound" -H 'Content-Type: application/json' \
    -d "{\"phone_number_id\":\"$phone\",\"from\":\"$guest\",\"name\":\"Ana Guest\",\"text\":\"Thanks! Can I check in early?\"}" >/dev/null
wait_for "the reply" 20 bash -c "[ \"\$(runuser -u postgres -- psql -h $WA_CLUSTER_DIR -p $WA_PORT -d $WA_DATABASE -qAtX -c \"SELECT count(*) FROM wa.messages WHERE direction = 'inbound'\")\" -ge 1 ]"
sql -c "SELECT format('conversation with %s (%s): %s unread, service window open: %s',
                      customer_name, customer_wa_id, unread_count, window_open)
          FROM wa.conversations('$tenant')"
conversation

step "Connection status and worker"
sql -c "SELECT jsonb_pretty(wa.connection_status('$tenant') - 'updated_at')"
sql -c "SELECT format('worker: running %s, sent %s, queue depth %s', w->>'running', w->>'sent', w->>'queue_depth')
          FROM wa.worker_status() w"

cat <<EOT

Everything keeps running:
  PostgreSQL   psql -h $WA_CLUSTER_DIR -p $WA_PORT -U postgres $WA_DATABASE   (as root: runuser -u postgres -- psql …)
  graph-sim    $SIM   (admin API under /_sim/, log $RUN/graph-sim.log)
  gateway      $GW    (webhooks at /webhook, Connect WhatsApp page at /connect?state=<wa.begin_signup(tenant)->>'state'>, log $RUN/gateway.log)
Stop it all with: make demo-stop
EOT
