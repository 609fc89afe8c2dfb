#!/usr/bin/env bash
# whatsapp_pg on a real two-node Citus cluster (docs/SCALING.md), as a DBA sets it up:
#   1. Citus 13.2.2 built and installed into the system PostgreSQL 15 from the source tarball
#      of ../shared/citus (its build.sh; nothing of Citus is in this repo);
#   2. two clusters on two ports, both preloading citus and whatsapp_pg: a coordinator and a
#      worker node; CREATE EXTENSION citus on both, the worker added to the coordinator;
#   3. CREATE EXTENSION whatsapp_pg on the coordinator (Citus creates it on the worker too),
#      then wa.distribute(): every table placed as wa.citus_layout() says, the distributed
#      ones colocated with wa.tenants, with shards on both nodes; a second run changes nothing;
#   4. tenants spread over both nodes, found again by tenant from the coordinator;
#   5. eight tenants created and connected through the API (graph-sim answering), their rows
#      on both nodes; a host app's role acting for one tenant, through a SECURITY DEFINER
#      function that forgets its check, sees its own rows and no other tenant's, whichever
#      node holds either; a scope forged by hand does not verify on the worker node; enqueue
#      and reads through the API and the tables;
#   6. signed inbound webhooks, statuses (and their replay), mark read and closing, for tenants
#      on both nodes: every delivery processed (none partial), every notification received on
#      the coordinator;
#   7. sending through the coordinator's worker (claims routed shard by shard): each message
#      accepted once by graph-sim, read receipts sent;
#   8. a third node added, then rebalance_table_shards, while 10,000 messages drain: the added
#      node gets the extension and shards, nothing is lost, each of the 10,000 is sent exactly
#      once, and every tenant still enqueues and reads, isolated;
#   9. DROP EXTENSION on the cluster leaves shard tables behind; DROP SCHEMA wa CASCADE on the
#      coordinator removes them on every node, and the extension starts afresh.
# Run by `make citus-test` (part of `make test`); needs the current build installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

PGBIN=/usr/lib/postgresql/15/bin
DB=wa_citus
COORD_DIR=/var/tmp/whatsapp_pg-citus-coordinator COORD_PORT=55450
WORKER_DIR=/var/tmp/whatsapp_pg-citus-worker WORKER_PORT=55451
NEW_DIR=/var/tmp/whatsapp_pg-citus-added NEW_PORT=55452
SIM_PORT=18096 SIM=http://127.0.0.1:18096
APP_SECRET=citus-test-secret

say() { printf '\033[1m[citus-test]\033[0m %s\n' "$*"; }
fail() { echo "citus-test: FAILED: $*" >&2; exit 1; }

# The Citus sources live beside the project (../shared/citus), or where WA_CITUS_SRC says.
citus_src=""
for d in "${WA_CITUS_SRC:-}" ../shared/citus /work/shared/citus; do
    if [ -n "$d" ] && [ -f "$d/build.sh" ]; then citus_src=$d; break; fi
done
[ -n "$citus_src" ] || fail "no Citus sources: set WA_CITUS_SRC to the folder of citus' build.sh (../shared/citus)"
say "Citus from $citus_src"
bash "$citus_src/build.sh"

cluster() { # dir port action
    WA_CLUSTER_DIR=$1 WA_PORT=$2 WA_DATABASE=$DB WA_GRAPH_API_URL=$SIM \
        WA_EXTRA_CONF="shared_preload_libraries = 'citus,whatsapp_pg'
max_prepared_transactions = 100
wa.sending_enabled = off" \
        scripts/cluster.sh "$3" >/dev/null
}
sim() { curl -fsS -X "$1" "$SIM/_sim/$2" -H 'Content-Type: application/json' ${3:+-d "$3"}; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
jsonl() { python3 -c "import json,sys; [print(eval(sys.argv[1], {'d': json.loads(l)})) for l in sys.stdin if l.strip()]" "$1"; }
stop_all() {
    cluster "$COORD_DIR" "$COORD_PORT" stop
    cluster "$WORKER_DIR" "$WORKER_PORT" stop
    cluster "$NEW_DIR" "$NEW_PORT" stop
    [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null || true
}
trap stop_all EXIT
cargo build -q -p graph-sim
"${CARGO_TARGET_DIR:-target}/debug/graph-sim" --listen "127.0.0.1:$SIM_PORT" --app-secret "$APP_SECRET" \
    --no-webhooks --rate-limit-per-number off --pair-rate-limit off >/var/tmp/whatsapp_pg-citus-graph-sim.log 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do curl -fsS "$SIM/_sim/health" >/dev/null 2>&1 && break; sleep 0.1; done
cluster "$COORD_DIR" "$COORD_PORT" destroy
cluster "$WORKER_DIR" "$WORKER_PORT" destroy
cluster "$NEW_DIR" "$NEW_PORT" destroy
cluster "$COORD_DIR" "$COORD_PORT" start
# Every node has the same key file: the coordinator signs what the worker node verifies.
install -d -o postgres -g postgres -m 0700 "$WORKER_DIR"
install -o postgres -g postgres -m 0600 "$COORD_DIR/master.key" "$WORKER_DIR/master.key"
cluster "$WORKER_DIR" "$WORKER_PORT" start
coord() { "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$COORD_PORT" -U postgres -d "$DB" -Atq "$@"; }
worker() { "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$WORKER_PORT" -U postgres -d "$DB" -Atq "$@"; }
expect() { # what got want
    [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}
wait_until() { # what seconds sql-returning-t
    for _ in $(seq 1 $(($2 * 10))); do [ "$(coord -c "$3")" = t ] && return 0; sleep 0.1; done
    fail "timed out waiting for $1"
}

say "two nodes: coordinator :$COORD_PORT, worker :$WORKER_PORT"
worker -c "CREATE EXTENSION citus"
# The coordinator holds shards too, so that tenants lie on both nodes.
coord -c "CREATE EXTENSION citus" \
      -c "SELECT citus_set_coordinator_host('127.0.0.1', $COORD_PORT)" \
      -c "SELECT citus_set_node_property('127.0.0.1', $COORD_PORT, 'shouldhaveshards', true)" \
      -c "SELECT citus_add_node('127.0.0.1', $WORKER_PORT)" >/dev/null
expect "active worker nodes" "$(coord -c "SELECT count(*) FROM citus_get_active_worker_nodes()")" 1

say "CREATE EXTENSION whatsapp_pg, then wa.distribute()"
coord -c "CREATE EXTENSION whatsapp_pg"
expect "whatsapp_pg on the worker node" \
    "$(worker -c "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp_pg'")" \
    "$(coord -c "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp_pg'")"
first=$(coord -c "SELECT placement || ':' || done FROM wa.distribute() GROUP BY 1 ORDER BY 1" | paste -sd' ')
expect "first wa.distribute()" "$first" \
    "distributed:distributed by tenant_id local:kept local reference:made a reference table"

# Citus' own catalog agrees with wa.citus_layout(), table by table.
mismatched=$(coord -c "
    SELECT l.relation::text || ' (' || l.placement || ', citus: '
           || COALESCE(p.partmethod::text, 'none') || ')'
      FROM wa.citus_layout() l
      LEFT JOIN pg_dist_partition p ON p.logicalrelid = l.relation
     WHERE NOT CASE l.placement
               WHEN 'distributed' THEN p.partmethod = 'h'
                    AND pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) = 'tenant_id'
                    AND p.colocationid = (SELECT colocationid FROM pg_dist_partition
                                           WHERE logicalrelid = 'wa.tenants'::regclass)
               WHEN 'reference' THEN p.partmethod = 'n' AND p.repmodel = 't'
               ELSE p.logicalrelid IS NULL END")
[ -z "$mismatched" ] || fail "placements differ from wa.citus_layout(): $mismatched"
expect "tables in schema wa that Citus knows but the layout does not" "$(coord -c "
    SELECT count(*) FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
     WHERE c.relnamespace = 'wa'::regnamespace
       AND p.logicalrelid NOT IN (SELECT relation FROM wa.citus_layout())")" 0
nodes_holding() { # placement: the fewest nodes holding a placement of one such table
    coord -c "
    SELECT min(n) FROM (SELECT count(DISTINCT p.nodeport) AS n
                          FROM wa.citus_layout() l
                          JOIN pg_dist_shard s ON s.logicalrelid = l.relation
                          JOIN pg_dist_shard_placement p ON p.shardid = s.shardid
                         WHERE l.placement = '$1' GROUP BY l.relation) x"
}
expect "nodes holding shards of every distributed table" "$(nodes_holding distributed)" 2
expect "reference tables on both nodes" "$(nodes_holding reference)" 2
second=$(coord -c "SELECT placement || ':' || done FROM wa.distribute() GROUP BY 1 ORDER BY 1" | paste -sd' ')
expect "second wa.distribute()" "$second" \
    "distributed:already placed local:kept local reference:already placed"

# The worker node's background worker stays idle: the coordinator's sends for every shard.
for _ in $(seq 1 100); do
    grep -q "stays idle: this is a Citus worker node" "$WORKER_DIR/postgres.log" && break
    sleep 0.1
done
grep -q "stays idle: this is a Citus worker node" "$WORKER_DIR/postgres.log" \
    || fail "the worker node's background worker did not say it stays idle"
if grep -q "stays idle: this is a Citus worker node" "$COORD_DIR/postgres.log"; then
    fail "the coordinator's background worker took itself for a worker node's"
fi
# A worker that serves writes its heartbeat; the idle one never does.
wait_until "the coordinator's worker to serve" 30 "SELECT count(*) = 1 FROM wa.worker_state WHERE heartbeat_at IS NOT NULL"
expect "heartbeats of a worker on the worker node" "$(worker -c "SELECT count(*) FROM wa.worker_state WHERE heartbeat_at IS NOT NULL")" 0

say "tenants spread over both nodes"
coord -c "INSERT INTO wa.tenants (name) SELECT 'tenant ' || g FROM generate_series(1, 40) g"
per_node=$(coord -c "
    SELECT count(*) FILTER (WHERE rows > 0)
      FROM (SELECT nodeport, sum(result::int) AS rows
              FROM run_command_on_placements('wa.tenants', 'SELECT count(*) FROM %s')
             GROUP BY nodeport) x")
expect "nodes holding tenants" "$per_node" 2
# Each tenant is found from the coordinator by its id (a query routed to one shard).
found=$(coord -c "
    SELECT count(*) FROM (SELECT tenant_id FROM wa.tenants) t
     WHERE EXISTS (SELECT 1 FROM wa.tenants x WHERE x.tenant_id = t.tenant_id)")
expect "tenants found by id" "$found" 40
coord -c "DELETE FROM wa.tenants"

say "tenants created and connected through the API, on both nodes; isolation on every shard"
coord -c "SELECT wa.configure_app('1234567890123456', '$APP_SECRET', 'verify-me', '987654321')" >/dev/null
tenants=() phones=() wabas=()
for i in $(seq 1 8); do
    t=$(coord -c "SELECT wa.create_tenant('Hotel $i', 'hotel-$i')")
    s=$(sim POST signups "{\"verified_name\":\"Hotel $i\",\"display_phone_number\":\"+1 555-020-$((1000 + i))\",\"token\":true}")
    phone=$(echo "$s" | json "d['phone_number_id']")
    waba=$(echo "$s" | json "d['waba_id']")
    coord -c "SELECT wa.connect_tenant('$t', '$waba', '$phone', '$(echo "$s" | json "d['access_token']")')->>'state'" >/dev/null
    tenants+=("$t") phones+=("$phone") wabas+=("$waba")
done
expect "tenants connected" "$(coord -c "SELECT count(*) FROM wa.tenants WHERE state = 'connected'")" 8
expect "nodes holding connected tenants" "$(coord -c "
    SELECT count(*) FILTER (WHERE rows > 0)
      FROM (SELECT nodeport, sum(result::int) AS rows
              FROM run_command_on_placements('wa.tenants', 'SELECT count(*) FROM %s WHERE state = ''connected''')
             GROUP BY nodeport) x")" 2
# Tenant isolation on the shards of both nodes. A host application's role (wa_app), acting for
# one tenant, calls a SECURITY DEFINER function that checks nothing (owned by wa_owner like the
# extension's own): the owner's policies still bound it to that tenant's rows, on the
# coordinator's shards and the worker node's alike. The tenant's scope reaches the worker node
# signed (wa.acting, set by wa._authorize_tenant); a scope set by hand does not verify there.
coord -c "CREATE ROLE citus_test_app LOGIN IN ROLE wa_app"
coord -c "
CREATE FUNCTION wa.forgetful_count(p_table text, p_tenant uuid) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS \$\$ DECLARE n bigint; BEGIN
    EXECUTE pg_catalog.format('SELECT count(*) FROM wa.%I WHERE tenant_id = \$1', p_table) INTO n USING p_tenant;
    RETURN n; END \$\$;
REVOKE ALL ON FUNCTION wa.forgetful_count(text, uuid) FROM PUBLIC;
ALTER FUNCTION wa.forgetful_count(text, uuid) OWNER TO wa_owner;
GRANT EXECUTE ON FUNCTION wa.forgetful_count(text, uuid) TO wa_app;"
app() { # tenant sql...: as the host app, in one transaction acting for the tenant
    local t=$1; shift
    local args=()
    for q in "$@"; do args+=(-c "$q"); done
    "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$COORD_PORT" -U citus_test_app -d "$DB" -Atq \
        -c "BEGIN" -c "SET LOCAL wa.tenant_id = '$t'" "${args[@]}" -c "COMMIT"
}
node_of() { coord -c "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = get_shard_id_for_distribution_column('wa.tenants', '$1')"; }
remote=() local_=()
for t in "${tenants[@]}"; do
    if [ "$(node_of "$t")" = "$WORKER_PORT" ]; then remote+=("$t"); else local_+=("$t"); fi
done
[ ${#remote[@]} -gt 0 ] && [ ${#local_[@]} -gt 0 ] || fail "tenants on one node only: ${#remote[@]} remote, ${#local_[@]} local"
for pair in "${remote[0]} ${local_[0]}" "${local_[0]} ${remote[0]}" "${remote[0]} ${remote[1]:-${local_[1]}}"; do
    set -- $pair
    for table in tenants phone_numbers credentials routes tenant_refs account_events; do
        got=$(app "$1" "SELECT wa.connection_status('$1')->>'state'" "SELECT wa.forgetful_count('$table', '$1') > 0, wa.forgetful_count('$table', '$2')" | tail -1)
        expect "wa.$table through a forgetful function: own rows seen, another tenant's (node :$(node_of "$2")) not" "$got" "t|0"
    done
done
# A scope written by hand (all tenants, a far expiry, a made-up MAC) does not verify.
got=$(app "${remote[0]}" "SET LOCAL citus.propagate_set_commands = 'local'" \
    "SET LOCAL wa.acting = '*|9999999999|k1|$(printf '0%.0s' $(seq 1 64))'" \
    "SELECT wa.forgetful_count('tenants', '${remote[1]:-${local_[0]}}')" | tail -1)
expect "another tenant's row under a forged scope" "$got" 0

say "enqueue and reads through the API, on both nodes"
for i in "${!tenants[@]}"; do
    t=${tenants[$i]}
    app "$t" "SELECT wa.send_text('$t', '1555030$((1000 + i))', 'Your room is ready')" \
             "SELECT count(*) FROM wa.send_bulk('$t', ARRAY['1555031$((1000 + i))', '1555032$((1000 + i))'],
                                               '{\"type\": \"text\", \"text\": {\"body\": \"Breakfast is served\"}}')" >/dev/null
done
expect "messages queued" "$(coord -c "SELECT count(*) FROM wa.messages WHERE status = 'queued'")" 24
expect "outbox rows" "$(coord -c "SELECT count(*) FROM wa.outbox WHERE kind = 'message'")" 24
for i in "${!tenants[@]}"; do
    t=${tenants[$i]}
    expect "tenant $((i + 1)) (node :$(node_of "$t")): its conversations, through the API" \
        "$(app "$t" "SELECT count(*) FROM wa.conversations('$t')" | tail -1)" 3
    expect "tenant $((i + 1)): its messages, through the API" \
        "$(app "$t" "SELECT count(*) FROM wa.messages((SELECT conversation_id FROM wa.conversations('$t') LIMIT 1))" | tail -1)" 1
    expect "tenant $((i + 1)): wa.messages read directly, under row-level security" \
        "$(app "$t" "SELECT count(*) FROM wa.messages" | tail -1)" 3
done
say "inbound webhooks, statuses, mark read and closing, on both nodes; notified on the coordinator"
# Deliveries as Meta posts them, signed over the raw body with the app secret, applied by
# wa.ingest_signed_webhook on the coordinator. Applications LISTEN on the coordinator, so every
# notification must reach it, whichever node holds the tenant's shard; the session that
# applies a delivery listens on the tenant's channel and must receive each one (a notification
# made on the worker node would never arrive, and would fail its part of the commit).
webhook() { # waba phone value-json (the "value" of one "messages" change) -> the raw body
    python3 -c '
import json, sys
waba, phone, value = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
value = {"messaging_product": "whatsapp",
         "metadata": {"display_phone_number": "15550200000", "phone_number_id": phone}, **value}
print(json.dumps({"object": "whatsapp_business_account",
                  "entry": [{"id": waba, "changes": [{"field": "messages", "value": value}]}]}))' "$@"
}
deliver() { # channel body -> the result, then one line per notification received on channel
    local sig
    sig=$(printf '%s' "$2" | openssl dgst -sha256 -hmac "$APP_SECRET" -r | cut -d' ' -f1)
    "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$COORD_PORT" -U postgres -d "$DB" -At \
        -v body="$2" -v sig="sha256=$sig" <<SQL | sed -n 's/^Asynchronous notification "[^"]*" with payload "\(.*\)" received from server process with PID [0-9]*\.$/\1/p; t; /^{/p'
LISTEN "$1";
SELECT wa.ingest_signed_webhook(:'body', :'sig')::text;
SELECT 1 \g /dev/null
SQL
}
channel_of() { coord -c "SELECT events_channel FROM wa.tenants WHERE tenant_id = '$1'"; }
now=$(date +%s)
for i in "${!tenants[@]}"; do
    t=${tenants[$i]} ch=$(channel_of "${tenants[$i]}") guest=1555040$((1000 + i))
    where="tenant $((i + 1)) (node :$(node_of "$t"))"
    # A guest writes in: a new conversation, one message.received.
    body=$(webhook "${wabas[$i]}" "${phones[$i]}" "{\"contacts\": [{\"profile\": {\"name\": \"Guest $i\"}, \"wa_id\": \"$guest\"}],
        \"messages\": [{\"from\": \"$guest\", \"id\": \"wamid.citus-in-$i\", \"timestamp\": \"$now\", \"type\": \"text\", \"text\": {\"body\": \"Is the pool open?\"}}]}")
    out=$(deliver "$ch" "$body")
    expect "$where: the inbound delivery" "$(echo "$out" | head -1 | json "d['status']")" processed
    expect "$where: notifications of the inbound delivery" "$(echo "$out" | tail -n +2 | jsonl "d['kind']" | paste -sd' ')" message.received
    # Meta's statuses for the tenant's three queued messages, sent, delivered and read, matched
    # through our id (biz_opaque_callback_data): the worker has not stored a wamid yet.
    statuses=$(coord -c "
        SELECT json_agg(json_build_object('id', 'wamid.citus-out-' || m.message_id, 'status', s.status,
                                          'timestamp', ($now + s.n)::text, 'recipient_id', c.wa_id,
                                          'biz_opaque_callback_data', m.message_id) ORDER BY m.message_id, s.n)
          FROM wa.messages m
          JOIN wa.conversations v ON v.tenant_id = m.tenant_id AND v.conversation_id = m.conversation_id
          JOIN wa.contacts c ON c.tenant_id = v.tenant_id AND c.contact_id = v.contact_id
          CROSS JOIN (VALUES (1, 'sent'), (2, 'delivered'), (3, 'read')) s(n, status)
         WHERE m.tenant_id = '$t' AND m.direction = 'outbound'")
    body=$(webhook "${wabas[$i]}" "${phones[$i]}" "{\"statuses\": $statuses}")
    out=$(deliver "$ch" "$body")
    expect "$where: the status delivery" "$(echo "$out" | head -1 | json "d['status']")" processed
    expect "$where: its status notifications" "$(echo "$out" | tail -n +2 | jsonl "d['status']" | sort | uniq -c | awk '{print $2 ":" $1}' | paste -sd' ')" \
        "delivered:3 read:3 sent:3"
    # A replay changes nothing and notifies nothing.
    out=$(deliver "$ch" "$body")
    expect "$where: the replayed status delivery" "$(echo "$out" | head -1 | json "d['status']")" processed
    expect "$where: notifications of the replay" "$(echo "$out" | tail -n +2 | wc -l)" 0
    expect "$where: its outbound messages read, with Meta's wamids, out of the outbox" \
        "$(coord -c "SELECT string_agg(DISTINCT status, ',') || ' ' || count(*) FILTER (WHERE wamid LIKE 'wamid.citus-out-%')
                       || ' ' || (SELECT count(*) FROM wa.outbox o WHERE o.tenant_id = '$t' AND o.kind = 'message')
                       FROM wa.messages WHERE tenant_id = '$t' AND direction = 'outbound'")" "read 3 0"
    # The host app reads the guest's message and closes the conversation.
    conv=$(app "$t" "SELECT conversation_id FROM wa.messages WHERE wamid = 'wamid.citus-in-$i'" | tail -1)
    expect "$where: unread messages before mark read" "$(app "$t" "SELECT unread_count FROM wa.conversations WHERE conversation_id = '$conv'" | tail -1)" 1
    app "$t" "SELECT wa.mark_read('$t', 'wamid.citus-in-$i')" >/dev/null
    expect "$where: after mark read (message, unread count)" \
        "$(app "$t" "SELECT (SELECT status FROM wa.messages WHERE wamid = 'wamid.citus-in-$i') || ' '
                            || (SELECT unread_count FROM wa.conversations WHERE conversation_id = '$conv')" | tail -1)" "read 0"
    expect "$where: the read receipt queued" \
        "$(coord -c "SELECT count(*) FROM wa.outbox WHERE tenant_id = '$t' AND kind = 'mark_read'")" 1
    closed=$("$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$COORD_PORT" -U citus_test_app -d "$DB" -At <<SQL | sed -n 's/^Asynchronous notification "[^"]*" with payload "\(.*\)" received from server process with PID [0-9]*\.$/\1/p'
LISTEN "$ch";
BEGIN;
SET LOCAL wa.tenant_id = '$t';
SELECT wa.close_conversation('$conv') \g /dev/null
COMMIT;
SELECT 1 \g /dev/null
SQL
)
    expect "$where: the notification of closing" "$(echo "$closed" | jsonl "d['kind'] + ' ' + d['conversation_id']")" "conversation.closed $conv"
    expect "$where: the conversation's status" "$(app "$t" "SELECT status FROM wa.conversations WHERE conversation_id = '$conv'" | tail -1)" closed
done
expect "deliveries not processed" "$(coord -c "SELECT count(*) FROM wa.webhook_events WHERE status <> 'processed'")" 0

say "sending through the coordinator's worker, for tenants on both nodes: each message once"
# Sending was off so far (the queue above was checked as queued); the coordinator's worker
# claims tenant by tenant, each claim routed to the tenant's shard.
sim POST reset >/dev/null
coord -c "ALTER SYSTEM SET wa.sending_enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
for i in "${!tenants[@]}"; do
    t=${tenants[$i]}
    app "$t" "SELECT count(*) FROM wa.send_bulk('$t', ARRAY['1555050$((1000 + i))', '1555051$((1000 + i))', '1555052$((1000 + i))'],
                                               '{\"type\": \"text\", \"text\": {\"body\": \"Checkout is at 11\"}}')" >/dev/null
done
wait_until "the outbox to drain" 60 "SELECT count(*) = 0 FROM wa.outbox"
expect "messages sent, with Meta's wamids" \
    "$(coord -c "SELECT count(*) FROM wa.messages WHERE direction = 'outbound' AND status = 'sent' AND wamid IS NOT NULL")" 24
stats=$(sim GET stats)
expect "graph-sim: sends accepted, distinct messages, rejected" \
    "$(echo "$stats" | json "'%d %d %d' % (d['sends']['accepted'], d['sends']['distinct_callbacks'], d['sends']['rejected'])")" "24 24 0"
expect "graph-sim: read receipts" "$(echo "$stats" | json "d['per_endpoint'].get('mark_read', 0)")" 8

say "a node added later, and shards rebalanced onto it while 10,000 messages drain: nothing lost, nothing sent twice"
sim POST reset >/dev/null
# The new node gets the extension from the coordinator (Citus creates it there from the
# install script), the same key file, and a share of the shards.
install -d -o postgres -g postgres -m 0700 "$NEW_DIR"
install -o postgres -g postgres -m 0600 "$COORD_DIR/master.key" "$NEW_DIR/master.key"
cluster "$NEW_DIR" "$NEW_PORT" start
newnode() { "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$NEW_PORT" -U postgres -d "$DB" -Atq "$@"; }
newnode -c "CREATE EXTENSION citus"
for i in "${!tenants[@]}"; do
    t=${tenants[$i]}
    app "$t" "SELECT count(*) FROM wa.send_bulk('$t', ARRAY(SELECT '1556' || lpad(($i * 10000 + g)::text, 7, '0') FROM generate_series(1, 1250) g),
                                               '{\"type\": \"text\", \"text\": {\"body\": \"Our spa reopens\"}}')" >/dev/null
done
drain_before=$(coord -c "SELECT count(*) FROM wa.outbox")
[ "$drain_before" -gt 0 ] || fail "the 10,000 messages were sent before the node was added"
before=$(coord -c "SELECT (SELECT count(*) FROM wa.messages) || ' ' || (SELECT count(*) FROM wa.conversations)")
coord -c "SELECT citus_add_node('127.0.0.1', $NEW_PORT)" >/dev/null
expect "whatsapp_pg on the added node" \
    "$(newnode -c "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp_pg'")" \
    "$(coord -c "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp_pg'")"
coord -c "SET client_min_messages = warning" \
      -c "SELECT rebalance_table_shards(shard_transfer_mode := 'block_writes')" >/dev/null
drain_after=$(coord -c "SELECT count(*) FROM wa.outbox")
say "outbox rows: $drain_before when the node was added, $drain_after after the rebalance"
expect "shard placements on the added node" "$(coord -c "SELECT count(*) > 0 FROM pg_dist_shard_placement WHERE nodeport = $NEW_PORT")" t
expect "messages and conversations after the rebalance" \
    "$(coord -c "SELECT (SELECT count(*) FROM wa.messages) || ' ' || (SELECT count(*) FROM wa.conversations)")" "$before"
wait_until "the 10,000 messages to drain" 300 "SELECT count(*) = 0 FROM wa.outbox"
expect "messages sent after the rebalance (all, with Meta's wamids)" \
    "$(coord -c "SELECT count(*) FILTER (WHERE status = 'sent' AND wamid IS NOT NULL) || ' ' || count(*) FROM wa.messages WHERE direction = 'outbound' AND content::text LIKE '%Our spa reopens%'")" "10000 10000"
stats=$(sim GET stats)
expect "graph-sim during the rebalance: sends accepted, distinct messages, rejected" \
    "$(echo "$stats" | json "'%d %d %d' % (d['sends']['accepted'], d['sends']['distinct_callbacks'], d['sends']['rejected'])")" "10000 10000 0"
moved=0
for i in "${!tenants[@]}"; do
    t=${tenants[$i]}
    [ "$(node_of "$t")" = "$NEW_PORT" ] && moved=$((moved + 1))
    app "$t" "SELECT wa.send_text('$t', '1555030$((1000 + i))', 'Your key is at the desk')" >/dev/null
    expect "tenant $((i + 1)) (now on node :$(node_of "$t")): its messages, through the API" \
        "$(app "$t" "SELECT count(*) FROM wa.messages((SELECT conversation_id FROM wa.conversations('$t') ORDER BY last_message_at DESC LIMIT 1))" | tail -1)" 2
    expect "tenant $((i + 1)): another tenant's rows through a forgetful function" \
        "$(app "$t" "SELECT wa.connection_status('$t')->>'state'" "SELECT wa.forgetful_count('messages', '${tenants[$(( (i + 1) % ${#tenants[@]} ))]}')" | tail -1)" 0
done
[ "$moved" -gt 0 ] || fail "no tenant moved to the added node"
say "$moved of ${#tenants[@]} tenants moved to the added node"
# The added node's background worker stays idle too.
for _ in $(seq 1 100); do grep -q "stays idle: this is a Citus worker node" "$NEW_DIR/postgres.log" && break; sleep 0.1; done
grep -q "stays idle: this is a Citus worker node" "$NEW_DIR/postgres.log" \
    || fail "the added node's background worker did not say it stays idle"

say "DROP EXTENSION on the cluster, the documented clean-up, and a fresh start"
# DROP EXTENSION … CASCADE leaves the shards of the distributed and reference tables behind
# in schema wa on every node (Citus' metadata goes, the shard tables do not); DROP SCHEMA wa
# CASCADE on the coordinator removes them on every node (docs/SCALING.md).
coord -c "SET client_min_messages = warning" -c "DROP EXTENSION whatsapp_pg CASCADE"
wa_relations() { # node-query-function
    "$1" -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'wa'"
}
left=$(wa_relations worker)
[ "$left" -gt 0 ] || fail "DROP EXTENSION left no shard tables on the worker node: update docs/SCALING.md"
say "DROP EXTENSION left $left relations in schema wa on the worker node"
coord -c "SET client_min_messages = warning" -c "DROP SCHEMA wa CASCADE"
for node in coord worker newnode; do
    expect "relations left in schema wa ($node)" "$(wa_relations "$node")" 0
done
coord -c "CREATE EXTENSION whatsapp_pg" \
      -c "SELECT wa.configure_app('1234567890123456', '$APP_SECRET', 'verify-me', '987654321')" >/dev/null
expect "wa.distribute() after a fresh CREATE EXTENSION" \
    "$(coord -c "SELECT count(*) FROM wa.distribute() WHERE done IN ('distributed by tenant_id', 'made a reference table')")" 18
t=$(coord -c "SELECT wa.create_tenant('Hotel again', 'hotel-again')")
s=$(sim POST signups '{"verified_name":"Hotel again","display_phone_number":"+1 555-020-1999","token":true}')
expect "a tenant connected after the fresh start" \
    "$(coord -c "SELECT wa.connect_tenant('$t', '$(echo "$s" | json "d['waba_id']")', '$(echo "$s" | json "d['phone_number_id']")', '$(echo "$s" | json "d['access_token']")')->>'state'")" connected
say "passed"
