-- Applying webhook parts. The Rust side (src/ingest/) stores the delivery, parses it with
-- whatsapp-client, resolves tenants, applies inbound messages set-based (src/ingest/inbound.rs,
-- which calls the contact and conversation functions below for new or changed customers) and
-- calls the others once per part. Each is idempotent: a
-- replayed or reordered delivery leaves the same state as one ordered pass.

-- Notifies a tenant's channel. Two statements: the channel is read (on Citus, a query routed
-- to the node of the tenant's shard), then the notification is made by this backend. A
-- pg_notify inside the routed query would run on that node, where nobody listens, and a node
-- that notified cannot prepare its part of the transaction's two-phase commit.
CREATE FUNCTION wa._notify_tenant(p_tenant uuid, p_payload text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_channel text;
BEGIN
    SELECT t.events_channel INTO v_channel
      FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant;
    IF v_channel IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify(v_channel, p_payload);
    END IF;
END
$$;

-- Order of message statuses; a status only ever moves to a higher rank. failed is terminal.
CREATE FUNCTION wa.status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE status
        WHEN 'queued' THEN 0 WHEN 'received' THEN 0
        WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 WHEN 'played' THEN 4
        WHEN 'deleted' THEN 90 WHEN 'failed' THEN 100
        ELSE -1 END;

-- A customer by BSUID and/or phone number; created on first sight, completed as Meta reveals
-- more (first seen by BSUID only, later with both, stays one contact).
CREATE FUNCTION wa._upsert_contact(p_tenant uuid, p_wa_id text, p_user_id text,
                                   p_name text, p_username text)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_contact uuid;
    v_wa_id text;
    v_user_id text;
    v_name text;
    v_username text;
BEGIN
    IF p_wa_id IS NULL AND p_user_id IS NULL THEN
        RAISE EXCEPTION 'a contact needs a wa_id or a user_id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR attempt IN 1..2 LOOP
        IF p_user_id IS NOT NULL THEN
            SELECT c.contact_id, c.wa_id, c.user_id, c.profile_name, c.username
              INTO v_contact, v_wa_id, v_user_id, v_name, v_username
              FROM wa.contacts c
             WHERE c.tenant_id OPERATOR(pg_catalog.=) p_tenant
               AND c.user_id OPERATOR(pg_catalog.=) p_user_id;
        END IF;
        IF v_contact IS NULL AND p_wa_id IS NOT NULL THEN
            SELECT c.contact_id, c.wa_id, c.user_id, c.profile_name, c.username
              INTO v_contact, v_wa_id, v_user_id, v_name, v_username
              FROM wa.contacts c
             WHERE c.tenant_id OPERATOR(pg_catalog.=) p_tenant
               AND c.wa_id OPERATOR(pg_catalog.=) p_wa_id;
        END IF;
        IF v_contact IS NOT NULL THEN
            -- Fill in what was missing; touch the row only when something changes.
            IF (v_wa_id IS NULL AND p_wa_id IS NOT NULL)
               OR (v_user_id IS NULL AND p_user_id IS NOT NULL)
               OR (p_name IS NOT NULL AND v_name IS DISTINCT FROM p_name)
               OR (p_username IS NOT NULL AND v_username IS DISTINCT FROM p_username) THEN
                BEGIN
                    UPDATE wa.contacts c
                       SET wa_id = COALESCE(c.wa_id, p_wa_id),
                           user_id = COALESCE(c.user_id, p_user_id),
                           profile_name = COALESCE(p_name, c.profile_name),
                           username = COALESCE(p_username, c.username),
                           updated_at = now()
                     WHERE c.tenant_id OPERATOR(pg_catalog.=) p_tenant
                       AND c.contact_id OPERATOR(pg_catalog.=) v_contact;
                EXCEPTION WHEN unique_violation THEN
                    -- The other identifier already belongs to a separate contact (seen
                    -- separately before Meta linked them); keep both rather than fail.
                    NULL;
                END;
            END IF;
            RETURN v_contact;
        END IF;
        INSERT INTO wa.contacts (tenant_id, wa_id, user_id, profile_name, username)
        VALUES (p_tenant, p_wa_id, p_user_id, p_name, p_username)
        ON CONFLICT DO NOTHING
        RETURNING contact_id INTO v_contact;
        IF v_contact IS NOT NULL THEN
            RETURN v_contact;
        END IF;
        -- Lost a race with a concurrent delivery: read the winner's row.
    END LOOP;
    RAISE EXCEPTION 'could not upsert contact' USING ERRCODE = 'internal_error';
END
$$;

-- The conversation between a business number and a customer, created on first message.
CREATE FUNCTION wa._conversation_for(p_tenant uuid, p_phone text, p_contact uuid) RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_conversation uuid;
BEGIN
    SELECT v.conversation_id INTO v_conversation FROM wa.conversations v
     WHERE v.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND v.phone_number_id OPERATOR(pg_catalog.=) p_phone
       AND v.contact_id OPERATOR(pg_catalog.=) p_contact;
    IF v_conversation IS NULL THEN
        INSERT INTO wa.conversations (tenant_id, phone_number_id, contact_id)
        VALUES (p_tenant, p_phone, p_contact)
        ON CONFLICT (tenant_id, phone_number_id, contact_id) DO NOTHING
        RETURNING conversation_id INTO v_conversation;
        IF v_conversation IS NULL THEN
            SELECT v.conversation_id INTO v_conversation FROM wa.conversations v
             WHERE v.tenant_id OPERATOR(pg_catalog.=) p_tenant
               AND v.phone_number_id OPERATOR(pg_catalog.=) p_phone
               AND v.contact_id OPERATOR(pg_catalog.=) p_contact;
        END IF;
    END IF;
    RETURN v_conversation;
END
$$;

-- The statuses of one business number in one delivery (or a tenant's pending statuses),
-- applied set-based: a few statements whatever their number. The state they leave is the
-- state applying them one at a time, in the given order, leaves (tests/ingest.rs compares the
-- two for a shuffled, replayed storm):
--  * a message's status only moves to a higher rank (wa.status_rank; failed is terminal);
--  * each per-status timestamp, the pricing, Meta's conversation and a failure's errors are
--    the first ones given: a replay or a late copy never overwrites them;
--  * one message.status notification for each status that raised the rank, with that status.
-- Each status finds its message by wamid, else through biz_opaque_callback_data (our message
-- id) when the worker has not stored the wamid yet: among the messages of p_tenant, the
-- number's current tenant (NULL when none), then, given p_phone, among those of the number's
-- former tenants (wa.released_routes), so that statuses arriving after a disconnect still
-- apply. A status whose message is not known yet is kept in wa.pending_statuses for p_tenant
-- and applied when the message gets its wamid; with no p_tenant it is unrouted.
-- p_ats are Unix times (NULL: now). Returns the 1-based positions of the unrouted statuses
-- (NULL when there are none).
-- The messages are locked in key order, so concurrent deliveries cannot deadlock on them.
-- Called by the worker (as wa_worker, through wa._apply_pending_statuses): every function and
-- operator is qualified.
CREATE FUNCTION wa._apply_statuses(p_tenant uuid, p_phone text, p_wamids text[],
                                   p_statuses text[], p_ats double precision[],
                                   p_callbacks text[], p_payloads jsonb[])
    RETURNS integer[]
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    -- Planned once per session, as the kept plans of src/plans.rs: every statement probes
    -- tables by key from the given arrays, and planning them afresh on each call (custom
    -- plans) cost more than running them: 3.5x the single-status deliveries per second. A
    -- generic plan made while a table is small must not scan it whole later: index probes
    -- only (an ANALYZE of a grown table plans again). Hash joins stay, for the joins of
    -- the statements' own row sets with each other. The estimates look expensive (the
    -- arrays' sizes are unknown), and JIT compiling would take half a second for a few
    -- milliseconds of work.
    SET plan_cache_mode = force_generic_plan -- saved here, chosen by wa._probe_plan_cache_mode() below
    SET enable_seqscan = off
    SET enable_bitmapscan = off
    SET jit = off
AS $$
DECLARE
    v_tenants uuid[];
    v_messages uuid[];
    v_learnt_tenants uuid[];
    v_learnt_wamids text[];
    v_channels text[];
    v_payloads text[];
    v_former uuid;
    v_pass integer;
    v_t uuid;
    v_tenant_learnt uuid[];
    v_wamids_learnt text[];
BEGIN
    PERFORM pg_catalog.set_config('plan_cache_mode', wa._probe_plan_cache_mode(), true);
    -- 1. Each status's message (NULL where none is known). Each statement looks among one
    --    tenant's messages (on Citus, a query routed to that tenant's shard): the current
    --    tenant's, then, for the statuses still unknown, each former tenant of the number in
    --    turn, the most recently released first, by wamid, then through our id.
    SELECT pg_catalog.array_agg(CASE WHEN k.message_id IS NOT NULL THEN p_tenant END ORDER BY k.ord),
           pg_catalog.array_agg(k.message_id ORDER BY k.ord)
      INTO v_tenants, v_messages
      FROM (SELECT s.ord, COALESCE(
                       (SELECT m.message_id FROM wa.messages m
                         WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant
                           AND m.wamid OPERATOR(pg_catalog.=) s.wamid),
                       (SELECT m.message_id FROM wa.messages m
                         WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant
                           AND m.message_id OPERATOR(pg_catalog.=) s.callback
                           AND m.direction OPERATOR(pg_catalog.=) 'outbound')) AS message_id
              FROM (SELECT s.ord, s.wamid,
                           CASE WHEN s.callback OPERATOR(pg_catalog.~)
                                     '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                THEN s.callback::pg_catalog.uuid END AS callback
                      FROM ROWS FROM (pg_catalog.unnest(p_wamids), pg_catalog.unnest(p_callbacks))
                           WITH ORDINALITY AS s(wamid, callback, ord)) s) k;
    IF p_phone IS NOT NULL AND pg_catalog.array_position(v_messages, NULL) IS NOT NULL THEN
        FOR v_pass IN 1..2 LOOP
            FOR v_former IN
                SELECT r.tenant_id FROM wa.released_routes r
                 WHERE r.kind OPERATOR(pg_catalog.=) 'phone_number'
                   AND r.external_id OPERATOR(pg_catalog.=) p_phone
                   AND (p_tenant IS NULL OR r.tenant_id OPERATOR(pg_catalog.<>) p_tenant)
                 ORDER BY r.released_at DESC
            LOOP
                SELECT pg_catalog.array_agg(COALESCE(k.tenant_id,
                           CASE WHEN k.found IS NOT NULL THEN v_former END) ORDER BY k.ord),
                       pg_catalog.array_agg(COALESCE(k.message_id, k.found) ORDER BY k.ord)
                  INTO v_tenants, v_messages
                  FROM (SELECT s.ord, s.tenant_id, s.message_id,
                               CASE WHEN s.message_id IS NOT NULL THEN NULL
                                    WHEN v_pass OPERATOR(pg_catalog.=) 1 THEN
                                        (SELECT m.message_id FROM wa.messages m
                                          WHERE m.tenant_id OPERATOR(pg_catalog.=) v_former
                                            AND m.wamid OPERATOR(pg_catalog.=) s.wamid)
                                    ELSE
                                        (SELECT m.message_id FROM wa.messages m
                                          WHERE m.tenant_id OPERATOR(pg_catalog.=) v_former
                                            AND m.message_id OPERATOR(pg_catalog.=) CASE
                                                WHEN s.cb OPERATOR(pg_catalog.~)
                                                     '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                                THEN s.cb::pg_catalog.uuid END
                                            AND m.direction OPERATOR(pg_catalog.=) 'outbound')
                               END AS found
                          FROM ROWS FROM (pg_catalog.unnest(v_tenants), pg_catalog.unnest(v_messages),
                                          pg_catalog.unnest(p_wamids), pg_catalog.unnest(p_callbacks))
                               WITH ORDINALITY AS s(tenant_id, message_id, wamid, cb, ord)) k;
                EXIT WHEN pg_catalog.array_position(v_messages, NULL) IS NULL;
            END LOOP;
            EXIT WHEN pg_catalog.array_position(v_messages, NULL) IS NULL;
        END LOOP;
    END IF;

    -- 2 and 3, for each tenant in turn (in key order, the current tenant included for the
    -- statuses kept pending): every statement names the tenant, so that on Citus it is routed
    -- to that tenant's shard.
    FOR v_t IN
        SELECT DISTINCT k.t FROM pg_catalog.unnest(pg_catalog.array_append(v_tenants, p_tenant)) AS k(t)
         WHERE k.t IS NOT NULL ORDER BY k.t
    LOOP
        -- 2. Lock the messages, in key order.
        PERFORM 1
           FROM wa.messages m
           JOIN (SELECT DISTINCT k.tenant_id, k.message_id
                   FROM ROWS FROM (pg_catalog.unnest(v_tenants), pg_catalog.unnest(v_messages))
                        AS k(tenant_id, message_id)
                  WHERE k.message_id IS NOT NULL AND k.tenant_id OPERATOR(pg_catalog.=) v_t) k
             ON m.tenant_id OPERATOR(pg_catalog.=) k.tenant_id
            AND m.message_id OPERATOR(pg_catalog.=) k.message_id
          WHERE m.tenant_id OPERATOR(pg_catalog.=) v_t
          ORDER BY m.tenant_id, m.message_id
            FOR UPDATE OF m;

        -- 3. Apply them (this statement sees the locked rows as they are now).
        WITH s AS (
            SELECT k.ord, k.tenant_id, k.message_id, k.wamid, k.status,
                   wa.status_rank(k.status) AS rank,
                   COALESCE(pg_catalog.to_timestamp(k.at), pg_catalog.now()) AS at, k.payload
              FROM ROWS FROM (pg_catalog.unnest(v_tenants), pg_catalog.unnest(v_messages),
                              pg_catalog.unnest(p_wamids), pg_catalog.unnest(p_statuses),
                              pg_catalog.unnest(p_ats), pg_catalog.unnest(p_payloads))
                   WITH ORDINALITY AS k(tenant_id, message_id, wamid, status, at, payload, ord)
             WHERE k.tenant_id OPERATOR(pg_catalog.=) v_t
                OR (k.message_id IS NULL AND v_t OPERATOR(pg_catalog.=) p_tenant)
        ), pend AS (
            INSERT INTO wa.pending_statuses (tenant_id, wamid, status, status_payload)
            SELECT v_t, s.wamid, s.status, s.payload
              FROM s
             WHERE s.message_id IS NULL
             ORDER BY s.ord
            ON CONFLICT (tenant_id, wamid, status) DO NOTHING
        ), agg AS (
            SELECT s.tenant_id, s.message_id,
                   (pg_catalog.array_agg(s.status ORDER BY s.rank DESC, s.ord))[1] AS top,
                   pg_catalog.max(s.rank) AS top_rank,
                   (pg_catalog.array_agg(s.at ORDER BY s.ord)
                        FILTER (WHERE s.status OPERATOR(pg_catalog.=) 'sent'))[1] AS sent_at,
                   (pg_catalog.array_agg(s.at ORDER BY s.ord)
                        FILTER (WHERE s.status OPERATOR(pg_catalog.=) 'delivered'))[1] AS delivered_at,
                   (pg_catalog.array_agg(s.at ORDER BY s.ord)
                        FILTER (WHERE s.status OPERATOR(pg_catalog.=) 'read'))[1] AS read_at,
                   (pg_catalog.array_agg(s.at ORDER BY s.ord)
                        FILTER (WHERE s.status OPERATOR(pg_catalog.=) 'played'))[1] AS played_at,
                   (pg_catalog.array_agg(s.at ORDER BY s.ord)
                        FILTER (WHERE s.status OPERATOR(pg_catalog.=) 'failed'))[1] AS failed_at,
                   (pg_catalog.array_agg(s.payload OPERATOR(pg_catalog.->) 'errors' ORDER BY s.ord)
                        FILTER (WHERE s.status OPERATOR(pg_catalog.=) 'failed'
                                  AND (s.payload OPERATOR(pg_catalog.->) 'errors') IS NOT NULL))[1] AS errors,
                   (pg_catalog.array_agg(s.payload OPERATOR(pg_catalog.->) 'pricing' ORDER BY s.ord)
                        FILTER (WHERE (s.payload OPERATOR(pg_catalog.->) 'pricing') IS NOT NULL))[1] AS pricing,
                   (pg_catalog.array_agg(s.payload OPERATOR(pg_catalog.->) 'conversation' ORDER BY s.ord)
                        FILTER (WHERE (s.payload OPERATOR(pg_catalog.->) 'conversation') IS NOT NULL))[1]
                       AS conversation,
                   pg_catalog.array_agg(s.wamid ORDER BY s.ord) AS wamids
              FROM s
             WHERE s.message_id IS NOT NULL
             GROUP BY s.tenant_id, s.message_id
        ), x AS (
            -- Each message as it is now, and what it becomes.
            SELECT a.*, m.status AS old_status, m.wamid AS old_wamid, m.conversation_id,
                   CASE WHEN m.status OPERATOR(pg_catalog.<>) 'failed'
                         AND a.top_rank OPERATOR(pg_catalog.>) wa.status_rank(m.status)
                        THEN a.top ELSE m.status END AS new_status,
                   COALESCE(m.wamid, a.wamids[1]) AS new_wamid,
                   -- Further wamids Meta gave it (found through our id under another wamid: Meta
                   -- took the message twice), in the order they came.
                   ARRAY(SELECT w.wamid
                           FROM pg_catalog.unnest(a.wamids) WITH ORDINALITY AS w(wamid, i)
                          WHERE w.wamid OPERATOR(pg_catalog.<>) COALESCE(m.wamid, a.wamids[1])
                            AND NOT COALESCE(w.wamid OPERATOR(pg_catalog.=) ANY (m.extra_wamids), false)
                          GROUP BY w.wamid
                          ORDER BY pg_catalog.min(w.i)) AS extras
              FROM agg a
              JOIN wa.messages m ON m.tenant_id OPERATOR(pg_catalog.=) a.tenant_id
                                AND m.message_id OPERATOR(pg_catalog.=) a.message_id
             WHERE m.tenant_id OPERATOR(pg_catalog.=) v_t
        ), upd AS (
            UPDATE wa.messages m
               SET status = x.new_status,
                   wamid = x.new_wamid,
                   extra_wamids = CASE WHEN pg_catalog.cardinality(x.extras) OPERATOR(pg_catalog.>) 0
                                       THEN pg_catalog.array_cat(m.extra_wamids, x.extras)
                                       ELSE m.extra_wamids END,
                   sent_at = COALESCE(m.sent_at, x.sent_at),
                   delivered_at = COALESCE(m.delivered_at, x.delivered_at),
                   read_at = COALESCE(m.read_at, x.read_at),
                   played_at = COALESCE(m.played_at, x.played_at),
                   failed_at = COALESCE(m.failed_at, x.failed_at),
                   error = COALESCE(m.error, x.errors),
                   pricing = COALESCE(m.pricing, x.pricing),
                   meta_conversation = COALESCE(m.meta_conversation, x.conversation),
                   updated_at = pg_catalog.now()
              FROM x
             WHERE m.tenant_id OPERATOR(pg_catalog.=) v_t
               AND m.tenant_id OPERATOR(pg_catalog.=) x.tenant_id
               AND m.message_id OPERATOR(pg_catalog.=) x.message_id
               AND (m.status OPERATOR(pg_catalog.<>) x.new_status
                    OR m.wamid IS NULL
                    OR pg_catalog.cardinality(x.extras) OPERATOR(pg_catalog.>) 0
                    OR (x.sent_at IS NOT NULL AND m.sent_at IS NULL)
                    OR (x.delivered_at IS NOT NULL AND m.delivered_at IS NULL)
                    OR (x.read_at IS NOT NULL AND m.read_at IS NULL)
                    OR (x.played_at IS NOT NULL AND m.played_at IS NULL)
                    OR (x.failed_at IS NOT NULL AND m.failed_at IS NULL)
                    OR (x.errors IS NOT NULL AND m.error IS NULL)
                    OR (x.pricing IS NOT NULL AND m.pricing IS NULL)
                    OR (x.conversation IS NOT NULL AND m.meta_conversation IS NULL))
            RETURNING m.tenant_id, m.message_id
        ), gone AS (
            -- Meta has these messages although the worker has not recorded them (its answer is
            -- still on the way, or was lost to a timeout or a crash): they must not be sent again.
            DELETE FROM wa.outbox o
             USING x
             WHERE x.old_status OPERATOR(pg_catalog.=) 'queued'
               AND o.tenant_id OPERATOR(pg_catalog.=) v_t
               AND o.tenant_id OPERATOR(pg_catalog.=) x.tenant_id
               AND o.message_id OPERATOR(pg_catalog.=) x.message_id
               AND o.kind OPERATOR(pg_catalog.=) 'message'
        ), notes AS (
            -- One notification per status that moved its message, on its tenant's channel; made
            -- below, by this backend (not inside this statement, which Citus may run on the node
            -- of the tenant's shard, where nobody listens).
            SELECT t.events_channel AS channel, n.ord,
                   pg_catalog.json_build_object(
                       'kind', 'message.status', 'status', n.status, 'tenant_id', n.tenant_id,
                       'conversation_id', x.conversation_id, 'message_id', n.message_id)::pg_catalog.text
                       AS payload
              FROM (SELECT s.*, pg_catalog.max(s.rank) OVER (
                               PARTITION BY s.tenant_id, s.message_id ORDER BY s.ord
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
                      FROM s
                     WHERE s.message_id IS NOT NULL) n
              JOIN x ON x.tenant_id OPERATOR(pg_catalog.=) n.tenant_id
                    AND x.message_id OPERATOR(pg_catalog.=) n.message_id
              JOIN wa.tenants t ON t.tenant_id OPERATOR(pg_catalog.=) n.tenant_id
             WHERE t.tenant_id OPERATOR(pg_catalog.=) v_t
               AND n.rank OPERATOR(pg_catalog.>)
                   GREATEST(wa.status_rank(x.old_status), COALESCE(n.before, -1))
        )
        -- An aggregate without GROUP BY: always one row.
        SELECT (SELECT pg_catalog.array_agg(q.channel ORDER BY q.ord) FROM notes q),
               (SELECT pg_catalog.array_agg(q.payload ORDER BY q.ord) FROM notes q),
               pg_catalog.array_agg(x.tenant_id) FILTER (WHERE x.old_wamid IS NULL),
               pg_catalog.array_agg(x.new_wamid) FILTER (WHERE x.old_wamid IS NULL)
          INTO v_channels, v_payloads, v_tenant_learnt, v_wamids_learnt
          FROM upd u
          JOIN x ON x.tenant_id OPERATOR(pg_catalog.=) u.tenant_id
                AND x.message_id OPERATOR(pg_catalog.=) u.message_id;
        PERFORM pg_catalog.pg_notify(n.c, n.p)
           FROM ROWS FROM (pg_catalog.unnest(v_channels), pg_catalog.unnest(v_payloads))
                WITH ORDINALITY AS n(c, p, i)
          ORDER BY n.i;
        v_learnt_tenants := v_learnt_tenants OPERATOR(pg_catalog.||) v_tenant_learnt;
        v_learnt_wamids := v_learnt_wamids OPERATOR(pg_catalog.||) v_wamids_learnt;
    END LOOP;

    -- 4. Messages that learnt their wamid here (matched through our id): the statuses that
    --    arrived before it was known.
    IF v_learnt_wamids IS NOT NULL THEN
        PERFORM wa._apply_pending_statuses(v_learnt_tenants, v_learnt_wamids);
    END IF;
    RETURN (SELECT pg_catalog.array_agg(k.ord::pg_catalog.int4 ORDER BY k.ord)
              FROM pg_catalog.unnest(v_messages) WITH ORDINALITY AS k(message_id, ord)
             WHERE k.message_id IS NULL AND p_tenant IS NULL);
END
$$;

-- A message got its wamid (the worker stored Meta's answer, or a status matched it through our
-- id): apply the statuses that arrived before it was known, in the order they arrived. Called
-- by the worker's write-back for every batch (a join against an almost always empty table)
-- rather than by a per-row trigger on the hot path.
CREATE FUNCTION wa._apply_pending_statuses(p_tenants uuid[], p_wamids text[]) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    -- As wa._apply_statuses, which it calls.
    SET plan_cache_mode = force_generic_plan -- saved here, chosen by wa._probe_plan_cache_mode() below
    SET enable_seqscan = off
    SET enable_bitmapscan = off
    SET jit = off
AS $$
DECLARE
    p record;
    n integer := 0;
BEGIN
    PERFORM pg_catalog.set_config('plan_cache_mode', wa._probe_plan_cache_mode(), true);
    FOR p IN
        WITH d AS (
            DELETE FROM wa.pending_statuses s
             USING ROWS FROM (pg_catalog.unnest(p_tenants), pg_catalog.unnest(p_wamids)) AS k(tenant_id, wamid)
             WHERE s.tenant_id OPERATOR(pg_catalog.=) k.tenant_id
               AND s.wamid OPERATOR(pg_catalog.=) k.wamid
            RETURNING s.*)
        SELECT d.tenant_id,
               pg_catalog.array_agg(d.wamid ORDER BY d.received_at, wa.status_rank(d.status)) AS wamids,
               pg_catalog.array_agg(d.status ORDER BY d.received_at, wa.status_rank(d.status)) AS statuses,
               pg_catalog.array_agg(
                   CASE WHEN (d.status_payload OPERATOR(pg_catalog.->>) 'timestamp')
                             OPERATOR(pg_catalog.~) '^[0-9]{1,12}$'
                        THEN (d.status_payload OPERATOR(pg_catalog.->>) 'timestamp')::pg_catalog.float8 END
                   ORDER BY d.received_at, wa.status_rank(d.status)) AS ats,
               pg_catalog.array_agg(NULL::pg_catalog.text) AS callbacks,
               pg_catalog.array_agg(d.status_payload ORDER BY d.received_at, wa.status_rank(d.status))
                   AS payloads
          FROM d
         GROUP BY d.tenant_id
    LOOP
        PERFORM wa._apply_statuses(p.tenant_id, NULL, p.wamids, p.statuses, p.ats, p.callbacks,
                                   p.payloads);
        n := n OPERATOR(pg_catalog.+) pg_catalog.cardinality(p.wamids);
    END LOOP;
    RETURN n;
END
$$;

-- account_update: moves the tenant's connection state. Returns the new state.
CREATE FUNCTION wa._apply_account_update(p_tenant uuid, p_waba text, p_event text, p_detail jsonb)
    RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state text;
    v_new text;
    v_waba_status text;
BEGIN
    SELECT t.state INTO v_state FROM wa.tenants t
     WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant FOR UPDATE;
    v_new := v_state;
    CASE p_event
        WHEN 'PARTNER_ADDED' THEN
            IF v_state IN ('not_connected', 'disconnected') THEN v_new := 'pending'; END IF;
        WHEN 'PARTNER_REMOVED', 'PARTNER_APP_UNINSTALLED', 'ACCOUNT_OFFBOARDED', 'ACCOUNT_DELETED' THEN
            v_new := 'disconnected';
            v_waba_status := 'removed';
        WHEN 'ACCOUNT_VIOLATION', 'ACCOUNT_RESTRICTION' THEN
            v_new := 'action_required';
            v_waba_status := 'restricted';
        WHEN 'DISABLED_UPDATE' THEN
            IF p_detail #>> '{ban_info,waba_ban_state}' = 'REINSTATE' THEN
                v_new := 'connected';
                v_waba_status := 'active';
            ELSE
                v_new := 'action_required';
                v_waba_status := 'disabled';
            END IF;
        ELSE
            NULL;
    END CASE;
    IF v_waba_status IS NOT NULL AND p_waba IS NOT NULL THEN
        UPDATE wa.wabas w
           SET status = v_waba_status,
               restriction = CASE WHEN v_waba_status IN ('restricted', 'disabled') THEN p_detail ELSE NULL END,
               updated_at = now()
         WHERE w.tenant_id OPERATOR(pg_catalog.=) p_tenant AND w.waba_id OPERATOR(pg_catalog.=) p_waba;
    END IF;
    INSERT INTO wa.account_events (tenant_id, kind, detail)
    VALUES (p_tenant, 'account_update.' || lower(p_event), p_detail);
    IF v_new IS DISTINCT FROM v_state THEN
        -- Sending stops while the account cannot send, and resumes when it can again.
        IF v_new IN ('action_required', 'disconnected') THEN
            UPDATE wa.outbox o SET next_attempt_at = 'infinity'
             WHERE o.tenant_id OPERATOR(pg_catalog.=) p_tenant AND o.failed_at IS NULL;
        ELSIF v_new = 'connected' THEN
            PERFORM wa._release_held(p_tenant);
        END IF;
        UPDATE wa.tenants t
           SET state = v_new,
               last_error = CASE WHEN v_new = 'action_required'
                                 THEN jsonb_build_object('event', p_event, 'detail', p_detail)
                                 WHEN v_new = 'connected' THEN NULL ELSE t.last_error END,
               updated_at = now()
         WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant;
        PERFORM wa._notify_tenant(p_tenant, pg_catalog.json_build_object(
            'kind', 'connection.changed', 'state', v_new, 'tenant_id', p_tenant,
            'conversation_id', NULL, 'message_id', NULL)::text);
    END IF;
    RETURN v_new;
END
$$;

-- message_template_status_update / _quality_update / template_category_update.
CREATE FUNCTION wa._apply_template_update(p_tenant uuid, p_waba text, p_template_id text,
                                          p_name text, p_language text, p_status text,
                                          p_quality text, p_category text, p_reason text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO wa.templates AS t (tenant_id, waba_id, template_id, name, language, category,
                                   status, quality_score, rejected_reason)
    VALUES (p_tenant, p_waba, p_template_id, COALESCE(p_name, p_template_id),
            COALESCE(p_language, 'und'), p_category, COALESCE(p_status, 'PENDING'), p_quality,
            CASE WHEN p_reason IS DISTINCT FROM 'NONE' THEN p_reason END)
    ON CONFLICT (tenant_id, template_id) DO UPDATE
       SET status = COALESCE(p_status, t.status),
           quality_score = COALESCE(p_quality, t.quality_score),
           category = COALESCE(p_category, t.category),
           rejected_reason = CASE WHEN p_status IS NULL THEN t.rejected_reason
                                  WHEN p_reason IS DISTINCT FROM 'NONE' THEN p_reason END,
           updated_at = now();
END
$$;

-- phone_number_quality_update / phone_number_name_update: Meta names the number by its
-- display number within the WABA.
CREATE FUNCTION wa._apply_number_update(p_tenant uuid, p_waba text, p_display text,
                                        p_event text, p_limit text, p_verified_name text,
                                        p_name_status text)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE wa.phone_numbers p
       SET messaging_limit = COALESCE(p_limit, p.messaging_limit),
           status = CASE WHEN p_event = 'FLAGGED' THEN 'flagged'
                         WHEN p_event = 'UNFLAGGED' AND p.status = 'flagged' THEN 'active'
                         ELSE p.status END,
           quality_rating = CASE WHEN p_event = 'FLAGGED' THEN 'RED'
                                 WHEN p_event = 'UNFLAGGED' THEN 'GREEN'
                                 ELSE p.quality_rating END,
           throughput_level = CASE WHEN p_event = 'THROUGHPUT_UPGRADE' THEN 'HIGH' ELSE p.throughput_level END,
           rate_limit_per_sec = CASE WHEN p_event = 'THROUGHPUT_UPGRADE' THEN 1000 ELSE p.rate_limit_per_sec END,
           verified_name = CASE WHEN p_name_status = 'APPROVED' AND p_verified_name IS NOT NULL
                                THEN p_verified_name ELSE p.verified_name END,
           name_status = COALESCE(p_name_status, p.name_status),
           updated_at = now()
     WHERE p.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND (p_waba IS NULL OR p.waba_id OPERATOR(pg_catalog.=) p_waba)
       AND regexp_replace(p.display_phone_number, '[^0-9]', '', 'g')
           OPERATOR(pg_catalog.=) regexp_replace(p_display, '[^0-9]', '', 'g');
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
