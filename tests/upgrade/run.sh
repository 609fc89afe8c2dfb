#!/usr/bin/env bash
# The upgrade from the previous release, as a DBA does it, on real clusters:
#   1. build and install the previous release (its library and its install script, from git);
#      check that the install script frozen in sql/ is exactly what that release generates;
#   2. create the extension at that version and give it a realistic life against graph-sim:
#      an app configuration, a tenant connected by Embedded Signup and one by token, messages
#      sent, delivered and read, an inbound message, a status for an unknown wamid (pending),
#      and messages still queued when the server stops (the worker serves another database);
#   3. install the current build over it and restart: the worker waits for the update and
#      sends nothing; ALTER EXTENSION whatsapp_pg UPDATE;
#   4. the data is intact and behaves: each queued message goes out exactly once, secrets
#      open (the tokens send, the app secret verifies a signed webhook), idempotency keys,
#      pending statuses, conversations and statuses are as they were;
#   5. the catalog of the upgraded database equals that of a fresh install of the current
#      version in a cluster of its own (tests/upgrade/catalog.sql): a missing or incomplete
#      upgrade script fails here.
# Run by `make upgrade-test` (part of `make test`); leaves the current build installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGBIN=/usr/lib/postgresql/15/bin
FROM=$(sed -n 's/^\([0-9.]*\) .*/\1/p' RELEASES | tail -1)
FROM_COMMIT=$(sed -n "s/^$FROM \([0-9a-f]\{40\}\)$/\1/p" RELEASES)
TO=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
WORK=/var/tmp/whatsapp_pg-upgrade
RELEASE_SRC=$WORK/release-$FROM
RELEASE_TARGET=/var/tmp/whatsapp_pg-release-target
SIM_PORT=18095
SIM=http://127.0.0.1:$SIM_PORT
UP_DIR=$WORK/upgraded UP_PORT=55435 UP_DB=wa_up
FRESH_DIR=$WORK/fresh FRESH_PORT=55436 FRESH_DB=wa_fresh
APP_SECRET=upgrade-test-secret

say() { printf '\033[1m[upgrade-test]\033[0m %s\n' "$*"; }
fail() { echo "upgrade-test: FAILED: $*" >&2; exit 1; }
cluster() { # dir port db action
    WA_CLUSTER_DIR=$1 WA_PORT=$2 WA_DATABASE=$3 WA_GRAPH_API_URL=$SIM \
        WA_EXTRA_CONF="wa.allow_any_database = on" scripts/cluster.sh "$4" >/dev/null
}
up() { runuser -u postgres -- "$PGBIN/psql" -h "$UP_DIR" -p "$UP_PORT" -d "$UP_DB" -v ON_ERROR_STOP=1 -qAtX "$@"; }
fresh() { runuser -u postgres -- "$PGBIN/psql" -h "$FRESH_DIR" -p "$FRESH_PORT" -d "$FRESH_DB" -v ON_ERROR_STOP=1 -qAtX "$@"; }
expect() { # what, expected, sql
    local got
    got=$(up -c "$3") || fail "$1: query failed"
    [ "$got" = "$2" ] || fail "$1: expected '$2', got '$got'"
    say "ok: $1"
}
wait_until() { # what, seconds, sql that returns t
    local i
    for i in $(seq 1 $(($2 * 10))); do
        [ "$(up -c "$3" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    fail "timed out waiting for $1"
}
sim() { curl -fsS -X "$1" "$SIM/_sim/$2" -H 'Content-Type: application/json' ${3:+-d "$3"}; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
sends_to() { sim GET stats | json "d['sends_per_recipient'].get('$1', 0)"; }
cleanup() {
    cluster "$UP_DIR" "$UP_PORT" "$UP_DB" stop || true
    cluster "$FRESH_DIR" "$FRESH_PORT" "$FRESH_DB" stop || true
    [ -f "$WORK/graph-sim.pid" ] && kill "$(cat "$WORK/graph-sim.pid")" 2>/dev/null || true
}
trap cleanup EXIT

[ -n "$FROM_COMMIT" ] || fail "RELEASES names no commit for $FROM"
[ "$FROM" != "$TO" ] || fail "Cargo.toml's version $TO is the last release: bump it (and add sql/upgrade/$FROM--<new>.sql)"
git cat-file -e "$FROM_COMMIT^{commit}" 2>/dev/null \
    || fail "release $FROM ($FROM_COMMIT) is not in this clone's history"

# ---- 1. the previous release, built from its commit --------------------------------------
cleanup
rm -rf "$WORK"
install -d "$WORK" "$RELEASE_SRC"
git archive "$FROM_COMMIT" | tar -x -C "$RELEASE_SRC"
say "building release $FROM ($FROM_COMMIT)"
(cd "$RELEASE_SRC" && CARGO_TARGET_DIR=$RELEASE_TARGET cargo pgrx install --pg-config "$PG_CONFIG" >"$WORK/release-build.log" 2>&1) \
    || { tail -30 "$WORK/release-build.log"; fail "building release $FROM"; }
cmp -s "$("$PG_CONFIG" --sharedir)/extension/whatsapp_pg--$FROM.sql" "sql/whatsapp_pg--$FROM.sql" \
    || fail "sql/whatsapp_pg--$FROM.sql differs from what release $FROM generates"
say "ok: sql/whatsapp_pg--$FROM.sql is release $FROM's install script"

cargo build -q -p graph-sim
"${CARGO_TARGET_DIR:-target}/debug/graph-sim" --listen "127.0.0.1:$SIM_PORT" --app-secret "$APP_SECRET" \
    --no-webhooks --rate-limit-per-number off --pair-rate-limit off >"$WORK/graph-sim.log" 2>&1 &
echo $! >"$WORK/graph-sim.pid"
for _ in $(seq 1 100); do curl -fsS "$SIM/_sim/health" >/dev/null 2>&1 && break; sleep 0.1; done

# ---- 2. life at the previous release ----------------------------------------------------------
cluster "$UP_DIR" "$UP_PORT" "$UP_DB" start
up -c "CREATE EXTENSION whatsapp_pg VERSION '$FROM'"
expect "created at $FROM" "$FROM" "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp_pg'"
up -c "SELECT wa.configure_app('1234567890123456', '$APP_SECRET', 'verify-me', '987654321')" >/dev/null

a=$(up -c "SELECT wa.create_tenant('Hotel A', 'hotel-a')")
s=$(sim POST signups '{"verified_name":"Hotel A","display_phone_number":"+1 555-010-1000"}')
a_waba=$(echo "$s" | json "d['waba_id']"); a_phone=$(echo "$s" | json "d['phone_number_id']")
up -c "SELECT wa.exchange_code('$a', '$(echo "$s" | json "d['code']")', '$a_waba', '$a_phone')->>'state'" >/dev/null
b=$(up -c "SELECT wa.create_tenant('Shop B', 'shop-b')")
s=$(sim POST signups '{"verified_name":"Shop B","display_phone_number":"+1 555-010-2000","token":true}')
b_waba=$(echo "$s" | json "d['waba_id']"); b_phone=$(echo "$s" | json "d['phone_number_id']")
up -c "SELECT wa.connect_tenant('$b', '$b_waba', '$b_phone', '$(echo "$s" | json "d['access_token']")')->>'state'" >/dev/null
expect "both tenants connected at $FROM" "connected connected" \
    "SELECT string_agg(state, ' ' ORDER BY name) FROM wa.tenants"

for i in 1 2 3; do up -c "SELECT wa.send_text('$a', '1555000100$i', 'before the upgrade $i')" >/dev/null; done
for i in 1 2; do up -c "SELECT wa.send_text('$b', '1555000200$i', 'before the upgrade $i')" >/dev/null; done
wait_until "the first five sends" 30 "SELECT count(*) = 5 FROM wa.messages WHERE wamid IS NOT NULL"
wait_until "an empty outbox" 30 "SELECT count(*) = 0 FROM wa.outbox"

# Meta's webhooks: statuses for what was sent, a customer writing in, a status that beat its
# message (kept pending).
status_payload() { # tenant-side status for every outbound message of a number
    cat <<SQL
SELECT jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
         jsonb_build_object('id', '$2', 'changes', jsonb_build_array(jsonb_build_object(
           'field', 'messages', 'value', jsonb_build_object(
             'messaging_product', 'whatsapp',
             'metadata', jsonb_build_object('display_phone_number', '15550101000', 'phone_number_id', '$1'),
             'statuses', (SELECT jsonb_agg(jsonb_build_object('id', m.wamid, 'status', '$3',
                                  'timestamp', extract(epoch FROM now())::bigint::text,
                                  'recipient_id', c.wa_id))
                            FROM wa.messages m
                            JOIN wa.conversations v USING (tenant_id, conversation_id)
                            JOIN wa.contacts c USING (tenant_id, contact_id)
                           WHERE v.phone_number_id = '$1' AND m.direction = 'outbound'
                             AND m.wamid IS NOT NULL)))))))
SQL
}
up -c "SELECT wa.ingest_webhook(($(status_payload "$a_phone" "$a_waba" delivered)))->>'status'" >/dev/null
up -c "SELECT wa.ingest_webhook(($(status_payload "$b_phone" "$b_waba" read)))->>'status'" >/dev/null
inbound='{"object":"whatsapp_business_account","entry":[{"id":"'$a_waba'","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550101000","phone_number_id":"'$a_phone'"},"contacts":[{"profile":{"name":"Ana Guest"},"wa_id":"15550009999"}],"messages":[{"from":"15550009999","id":"wamid.upgrade-inbound-1","timestamp":"1767000000","type":"text","text":{"body":"Can I check in early?"}}]}}]}]}'
up -c "SELECT wa.ingest_webhook('$inbound'::jsonb)->>'status'" >/dev/null
early='{"object":"whatsapp_business_account","entry":[{"id":"'$a_waba'","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550101000","phone_number_id":"'$a_phone'"},"statuses":[{"id":"wamid.not-known-yet","status":"delivered","timestamp":"1767000000","recipient_id":"15550001001"}]}}]}]}'
up -c "SELECT wa.ingest_webhook('$early'::jsonb)->>'status'" >/dev/null
expect "statuses applied at $FROM" "delivered delivered delivered read read" \
    "SELECT string_agg(status, ' ' ORDER BY status, wamid) FROM wa.messages WHERE direction = 'outbound'"
expect "a pending status at $FROM" "1" "SELECT count(*) FROM wa.pending_statuses"

# Messages still queued when the server stops: the worker serves another database meanwhile.
up -c "ALTER SYSTEM SET wa.database = 'postgres'"
cluster "$UP_DIR" "$UP_PORT" "$UP_DB" stop
cluster "$UP_DIR" "$UP_PORT" "$UP_DB" start
q_key=$(up -c "SELECT wa.send_text('$a', '15550001011', 'queued across the upgrade', 'invoice-7')")
up -c "SELECT wa.send_text('$a', '15550001012', 'queued across the upgrade')" >/dev/null
up -c "SELECT wa.send_text('$b', '15550002011', 'queued across the upgrade')" >/dev/null
up -c "SELECT wa.send_text('$b', '15550002012', 'queued across the upgrade')" >/dev/null
expect "four messages queued at $FROM" "4" "SELECT count(*) FROM wa.outbox"
rows_sql="SELECT string_agg(format('%s %s %s %s %s %s', tenant_id, message_id, direction, content,
                                    idempotency_key, CASE WHEN wamid IS NOT NULL AND idempotency_key IS NULL THEN status || ' ' || wamid END),
                             E'\n' ORDER BY message_id)
            FROM wa.messages
           WHERE content->'text'->>'body' LIKE 'before the upgrade%' OR idempotency_key IS NOT NULL
              OR direction = 'inbound'"
before=$(up -c "$rows_sql")
cluster "$UP_DIR" "$UP_PORT" "$UP_DB" stop
sends_before=$(sim GET stats | json "d['sends']['accepted']")

# ---- 3. the new library, then the update ------------------------------------------------------
say "installing the current build ($TO) over release $FROM"
make -s install >"$WORK/install.log" 2>&1 || { tail -30 "$WORK/install.log"; fail "make install"; }
cluster "$UP_DIR" "$UP_PORT" "$UP_DB" start
up -c "ALTER SYSTEM RESET wa.database" -c "SELECT pg_reload_conf()" >/dev/null
cluster "$UP_DIR" "$UP_PORT" "$UP_DB" stop
cluster "$UP_DIR" "$UP_PORT" "$UP_DB" start
for _ in $(seq 1 50); do grep -q "waits: the extension is installed at version $FROM" "$UP_DIR/postgres.log" && break; sleep 0.1; done
grep -q "waits: the extension is installed at version $FROM and this library is version $TO" "$UP_DIR/postgres.log" \
    || fail "the worker did not say it waits for ALTER EXTENSION UPDATE"
say "ok: the $TO worker waits for the update"
sleep 2
[ "$(sim GET stats | json "d['sends']['accepted']")" = "$sends_before" ] || fail "the worker sent before the update"
expect "nothing sent before the update" "4" "SELECT count(*) FROM wa.outbox"

# An object of the host app that uses a function of wa stops the update, which then changes
# nothing and names it; it is never dropped along.
up -c "CREATE VIEW public.host_app_report AS SELECT wa.status_rank('read') AS read_rank"
if up -c "ALTER EXTENSION whatsapp_pg UPDATE" 2>"$WORK/blocked.txt"; then
    fail "the update went ahead over the host app's view"
fi
grep -q "objects outside the extension use functions of schema wa" "$WORK/blocked.txt" \
    && grep -q "host_app_report" "$WORK/blocked.txt" || { cat "$WORK/blocked.txt"; fail "the refusal does not name the view"; }
expect "a refused update changes nothing" "$FROM 1" \
    "SELECT extversion || ' ' || (SELECT count(*) FROM pg_views WHERE viewname = 'host_app_report') FROM pg_extension WHERE extname = 'whatsapp_pg'"
up -c "DROP VIEW public.host_app_report"

up -c "ALTER EXTENSION whatsapp_pg UPDATE"
expect "updated to $TO" "$TO" "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp_pg'"

# ---- 4. the data, intact and working ----------------------------------------------------------
wait_until "the queued messages to go out" 30 "SELECT count(*) = 0 FROM wa.outbox"
expect "every message has its wamid" "0" "SELECT count(*) FROM wa.messages WHERE direction = 'outbound' AND wamid IS NULL"
for r in 15550001011 15550001012 15550002011 15550002012 15550001001 15550001002 15550001003 15550002001 15550002002; do
    [ "$(sends_to "$r")" = 1 ] || fail "customer $r got $(sends_to "$r") sends, not 1"
done
say "ok: each of the 9 customers got exactly one message"
# The rows that had a wamid keep it and their status; the queued one with a key got one since.
expect "the messages of $FROM are unchanged" "$before" \
    "$rows_sql"
expect "the idempotency key still holds" "$q_key" \
    "SET wa.tenant_id = '$a'; SELECT wa.send_text('$a', '15550001011', 'queued across the upgrade', 'invoice-7')"
expect "the pending status is kept" "wamid.not-known-yet delivered" "SELECT wamid || ' ' || status FROM wa.pending_statuses"
expect "the conversation with the guest" "1 Can I check in early?" \
    "SELECT c.unread_count || ' ' || (m.content->'text'->>'body') FROM wa.conversations c JOIN wa.messages m USING (tenant_id, conversation_id) WHERE m.direction = 'inbound'"
expect "each tenant has its own events channel" "2" "SELECT count(DISTINCT events_channel) FROM wa.tenants"
expect "the external references moved to wa.tenant_refs" "hotel-a shop-b" \
    "SELECT string_agg(r.external_ref, ' ' ORDER BY r.external_ref) FROM wa.tenant_refs r JOIN wa.tenants t ON t.tenant_id = r.tenant_id AND t.external_ref = r.external_ref"
if up -c "SELECT wa.create_tenant('Another A', 'hotel-a')" >/dev/null 2>&1; then
    fail "a second tenant got the external reference hotel-a after the update"
fi
say "ok: external references stay unique across tenants"
expect "sending is not paused in the upgraded database" "$UP_DB" "SELECT database_name FROM wa.app_config"
# The app secret opens: a webhook signed with it is accepted, one signed otherwise is not.
read_payload=$(up -c "SELECT ($(status_payload "$a_phone" "$a_waba" read))::text")
sig=$(printf '%s' "$read_payload" | openssl dgst -sha256 -hmac "$APP_SECRET" -r | cut -d' ' -f1)
expect "a webhook signed with the app secret is applied" "processed" \
    "SELECT wa.ingest_signed_webhook(\$p\$$read_payload\$p\$, 'sha256=$sig')->>'status'"
expect "statuses still move forward" "5" "SELECT count(*) FROM wa.messages WHERE direction = 'outbound' AND status = 'read' AND conversation_id IN (SELECT conversation_id FROM wa.conversations WHERE phone_number_id = '$a_phone')"
if up -c "SELECT wa.ingest_signed_webhook(\$p\$$read_payload\$p\$, 'sha256=$(printf '%064d' 0)')" >/dev/null 2>&1; then
    fail "a webhook with a wrong signature was accepted"
fi
# The tokens open: a message sent now goes out for each tenant.
up -c "SELECT wa.send_text('$a', '15550001021', 'after the upgrade')" -c "SELECT wa.send_text('$b', '15550002021', 'after the upgrade')" >/dev/null
wait_until "sends after the update" 30 "SELECT count(*) = 0 FROM wa.outbox"
[ "$(sends_to 15550001021)" = 1 ] && [ "$(sends_to 15550002021)" = 1 ] || fail "sends after the update"
say "ok: both tenants' tokens send after the update"

# ---- 5. the catalog equals a fresh install's -------------------------------------------------
cluster "$FRESH_DIR" "$FRESH_PORT" "$FRESH_DB" start
fresh -c "CREATE EXTENSION whatsapp_pg"
up -f tests/upgrade/catalog.sql >"$WORK/catalog-upgraded.txt"
fresh -f tests/upgrade/catalog.sql >"$WORK/catalog-fresh.txt"
[ "$(wc -l <"$WORK/catalog-fresh.txt")" -gt 300 ] || fail "the catalog listing looks empty"
if ! diff -u "$WORK/catalog-fresh.txt" "$WORK/catalog-upgraded.txt" >"$WORK/catalog.diff"; then
    head -80 "$WORK/catalog.diff"
    fail "the catalog after ALTER EXTENSION UPDATE differs from a fresh install of $TO (- fresh, + upgraded; $WORK/catalog.diff)"
fi
say "ok: the upgraded catalog equals a fresh install ($(wc -l <"$WORK/catalog-fresh.txt") lines)"

# The running worker notices when the extension is no longer at its version (here: dropped),
# stops, and serves it again once it is back.
up -c "DROP EXTENSION whatsapp_pg CASCADE"
for _ in $(seq 1 100); do grep -q "worker stops: the extension is now at version (none)" "$UP_DIR/postgres.log" && break; sleep 0.1; done
grep -q "worker stops: the extension is now at version (none) and this library is version $TO" "$UP_DIR/postgres.log" \
    || fail "the running worker did not notice the extension was dropped"
up -c "CREATE EXTENSION whatsapp_pg" -c "SELECT wa.configure_app('1234567890123456', '$APP_SECRET', 'verify-me', '987654321')" >/dev/null
c=$(up -c "SELECT wa.create_tenant('Hotel C', 'hotel-c')")
s=$(sim POST signups '{"verified_name":"Hotel C","display_phone_number":"+1 555-010-3000","token":true}')
up -c "SELECT wa.connect_tenant('$c', '$(echo "$s" | json "d['waba_id']")', '$(echo "$s" | json "d['phone_number_id']")', '$(echo "$s" | json "d['access_token']")')" >/dev/null
up -c "SELECT wa.send_text('$c', '15550003001', 'after the extension came back')" >/dev/null
wait_until "a send once the extension is back" 30 "SELECT count(*) = 0 FROM wa.outbox"
[ "$(sends_to 15550003001)" = 1 ] || fail "no send once the extension was back"
say "ok: the running worker stops when the extension goes and serves it when it is back"

say "upgrade $FROM → $TO passed"
