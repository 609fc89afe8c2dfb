-- Sending: recording an outbound message in its conversation and enqueuing it in the caller's
-- transaction (src/send validates and builds the request body first), and operations.

-- The business number a tenant sends from: the one asked for (it must be the tenant's), or
-- the tenant's first active number.
CREATE FUNCTION wa._sending_number(p_tenant uuid, p_phone text) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_phone text;
BEGIN
    SELECT p.phone_number_id INTO v_phone FROM wa.phone_numbers p
     WHERE p.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND (p_phone IS NULL OR p.phone_number_id OPERATOR(pg_catalog.=) p_phone)
       AND p.status IN ('active', 'flagged')
     ORDER BY p.created_at, p.phone_number_id
     LIMIT 1;
    IF v_phone IS NULL AND p_phone IS NOT NULL THEN
        RAISE EXCEPTION 'phone number % is not an active number of tenant %', p_phone, p_tenant
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF v_phone IS NULL THEN
        RAISE EXCEPTION 'tenant % has no active phone number', p_tenant
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Connect a number with wa.exchange_code() or wa.connect_tenant().';
    END IF;
    RETURN v_phone;
END
$$;

-- How urgent a message is when the caller does not say (0 most urgent … 9): authentication
-- templates 2; service replies and utility templates 3; marketing templates 6; a template the
-- tenant's WABAs are not known to have 4.
CREATE FUNCTION wa._default_priority(p_tenant uuid, p_type text, p_content jsonb) RETURNS smallint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_category text;
BEGIN
    IF p_type OPERATOR(pg_catalog.<>) 'template' THEN
        RETURN 3;
    END IF;
    -- (PL/pgSQL, not SQL: Citus cannot plan a SQL function's parameters; the tenant's shard.)
    SELECT t.category INTO v_category
      FROM wa.templates t
     WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND t.name OPERATOR(pg_catalog.=) (p_content OPERATOR(pg_catalog.#>>) '{template,name}')
       AND t.language OPERATOR(pg_catalog.=) (p_content OPERATOR(pg_catalog.#>>) '{template,language,code}')
     ORDER BY t.updated_at DESC
     LIMIT 1;
    RETURN CASE WHEN NOT FOUND THEN 4
                WHEN v_category OPERATOR(pg_catalog.=) 'AUTHENTICATION' THEN 2
                WHEN v_category OPERATOR(pg_catalog.=) 'UTILITY' THEN 3
                WHEN v_category OPERATOR(pg_catalog.=) 'MARKETING' THEN 6
                ELSE 4 END;
END
$$;

-- Records outbound messages as queued in their conversations and enqueues their request
-- bodies, set-based: wa.send_message passes one, wa.send_bulk thousands, and the statements are
-- the same. Position i of the arrays is one message: its customer (p_wa_ids or p_user_ids),
-- recipient as sent, type, content, preview, idempotency key, message id, request body and
-- the message it replies to. p_phone is the sending number (NULL: the tenant's first active
-- one); p_priority the outbox priority (NULL: wa._default_priority, and 5 or less urgent
-- when p_bulk). Returns each position with its message id: the new one, or the existing one
-- when its idempotency key was used before (also by an earlier position of the same call).
CREATE FUNCTION wa._enqueue_messages(p_tenant uuid, p_phone text, p_wa_ids text[],
                                     p_user_ids text[], p_recipients text[], p_types text[],
                                     p_contents jsonb[], p_previews text[], p_keys text[],
                                     p_message_ids uuid[], p_bodies text[], p_contexts text[],
                                     p_priority smallint, p_bulk boolean)
    RETURNS TABLE (out_position integer, out_message_id uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    -- As wa._apply_statuses: planned once per session (every statement probes by key from
    -- the given arrays), index probes only, no JIT compilation.
    SET plan_cache_mode = force_generic_plan -- saved here, chosen by wa._probe_plan_cache_mode() below
    SET enable_seqscan = off
    SET enable_bitmapscan = off
    SET jit = off
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_state text;
    v_phone text := wa._sending_number(p_tenant, p_phone);
    v_contacts uuid[];
    v_conversations uuid[];
    v_inserted uuid[];
BEGIN
    PERFORM pg_catalog.set_config('plan_cache_mode', wa._probe_plan_cache_mode(), true);
    SELECT t.state INTO v_state FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant;
    IF v_state NOT IN ('connected', 'action_required') THEN
        RAISE EXCEPTION 'tenant % is not connected', p_tenant
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its connection state is %s.', v_state),
                  HINT = 'Connect it with wa.exchange_code() or wa.connect_tenant() first.';
    END IF;
    -- Customers seen for the first time become contacts (one already known is left as is).
    INSERT INTO wa.contacts (tenant_id, wa_id, user_id)
    SELECT DISTINCT p_tenant, k.wa_id, k.user_id
      FROM ROWS FROM (pg_catalog.unnest(p_wa_ids), pg_catalog.unnest(p_user_ids)) AS k(wa_id, user_id)
    ON CONFLICT DO NOTHING;
    SELECT pg_catalog.array_agg(COALESCE(
               (SELECT c.contact_id FROM wa.contacts c
                 WHERE c.tenant_id OPERATOR(pg_catalog.=) p_tenant
                   AND c.wa_id OPERATOR(pg_catalog.=) k.wa_id),
               (SELECT c.contact_id FROM wa.contacts c
                 WHERE c.tenant_id OPERATOR(pg_catalog.=) p_tenant
                   AND c.user_id OPERATOR(pg_catalog.=) k.user_id)) ORDER BY k.i)
      INTO v_contacts
      FROM ROWS FROM (pg_catalog.unnest(p_wa_ids), pg_catalog.unnest(p_user_ids))
           WITH ORDINALITY AS k(wa_id, user_id, i);
    -- Their conversations with the sending number.
    INSERT INTO wa.conversations (tenant_id, phone_number_id, contact_id)
    SELECT DISTINCT p_tenant, v_phone, c.contact_id FROM pg_catalog.unnest(v_contacts) AS c(contact_id)
    ON CONFLICT (tenant_id, phone_number_id, contact_id) DO NOTHING;
    SELECT pg_catalog.array_agg(
               (SELECT v.conversation_id FROM wa.conversations v
                 WHERE v.tenant_id OPERATOR(pg_catalog.=) p_tenant
                   AND v.phone_number_id OPERATOR(pg_catalog.=) v_phone
                   AND v.contact_id OPERATOR(pg_catalog.=) c.contact_id) ORDER BY c.i)
      INTO v_conversations
      FROM pg_catalog.unnest(v_contacts) WITH ORDINALITY AS c(contact_id, i);
    -- The messages (a position whose idempotency key is taken gets none), their request
    -- bodies, and their conversations opened with the last message's preview. A tenant whose
    -- token was revoked keeps queuing, held until it is reconnected.
    WITH k AS (
        SELECT k.*
          FROM ROWS FROM (pg_catalog.unnest(p_message_ids), pg_catalog.unnest(v_conversations),
                          pg_catalog.unnest(p_types), pg_catalog.unnest(p_contents),
                          pg_catalog.unnest(p_keys), pg_catalog.unnest(p_contexts),
                          pg_catalog.unnest(p_recipients), pg_catalog.unnest(p_bodies),
                          pg_catalog.unnest(p_previews))
               WITH ORDINALITY AS k(message_id, conversation_id, type, content, key, context,
                                    recipient, body, preview, i)
    ), ins AS (
        INSERT INTO wa.messages (tenant_id, message_id, conversation_id, direction, type, content,
                                 status, idempotency_key, context_wamid)
        SELECT p_tenant, k.message_id, k.conversation_id, 'outbound', k.type, k.content, 'queued',
               k.key, k.context
          FROM k
         ORDER BY k.i
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING message_id
    ), queued AS (
        SELECT k.* FROM k JOIN ins ON ins.message_id OPERATOR(pg_catalog.=) k.message_id
    ), outbox AS (
        INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, recipient, payload,
                               next_attempt_at, priority)
        SELECT p_tenant, 'message', q.message_id, v_phone, q.recipient, q.body,
               CASE WHEN v_state OPERATOR(pg_catalog.=) 'action_required'
                    THEN 'infinity'::pg_catalog.timestamptz ELSE v_now END,
               COALESCE(p_priority,
                        CASE WHEN p_bulk
                             THEN GREATEST(wa._default_priority(p_tenant, q.type, q.content), 5::smallint)
                             ELSE wa._default_priority(p_tenant, q.type, q.content) END)
          FROM queued q
         ORDER BY q.i
        -- (Unused here: on Citus, an INSERT … SELECT with RETURNING goes through intermediate
        -- results and INSERTs, not a COPY, which row-level security refuses.)
        RETURNING 1
    ), opened AS (
        UPDATE wa.conversations v
           SET status = 'open', closed_at = NULL,
               last_message_at = GREATEST(v.last_message_at, v_now),
               last_message_preview = l.preview, updated_at = v_now
          FROM (SELECT DISTINCT ON (q.conversation_id) q.conversation_id, q.preview
                  FROM queued q
                 ORDER BY q.conversation_id, q.i DESC) l
         WHERE v.tenant_id OPERATOR(pg_catalog.=) p_tenant
           AND v.conversation_id OPERATOR(pg_catalog.=) l.conversation_id
    )
    SELECT pg_catalog.array_agg(ins.message_id) INTO v_inserted FROM ins;
    RETURN QUERY
    SELECT k.i::integer,
           CASE WHEN n.message_id IS NOT NULL THEN k.message_id
                ELSE (SELECT m.message_id FROM wa.messages m
                       WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant
                         AND m.idempotency_key OPERATOR(pg_catalog.=) k.key) END
      FROM ROWS FROM (pg_catalog.unnest(p_message_ids), pg_catalog.unnest(p_keys))
           WITH ORDINALITY AS k(message_id, key, i)
      LEFT JOIN pg_catalog.unnest(v_inserted) AS n(message_id)
        ON n.message_id OPERATOR(pg_catalog.=) k.message_id
     ORDER BY k.i;
END
$$;

-- Marks an inbound message read locally and enqueues the Graph "read" call.
CREATE FUNCTION wa._enqueue_mark_read(p_tenant uuid, p_wamid text, p_body text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_message uuid := wa._mark_read_local(p_tenant, p_wamid);
    v_phone text;
    v_state text;
    v_now timestamptz := pg_catalog.now();
BEGIN
    -- Each statement routed to the tenant's shard, with plain values (Citus).
    SELECT v.phone_number_id INTO v_phone
      FROM wa.messages m
      JOIN wa.conversations v ON v.tenant_id OPERATOR(pg_catalog.=) m.tenant_id
                             AND v.conversation_id OPERATOR(pg_catalog.=) m.conversation_id
     WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant AND m.message_id OPERATOR(pg_catalog.=) v_message;
    SELECT t.state INTO v_state FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant;
    IF v_state IS NULL THEN
        RETURN v_message;
    END IF;
    INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, payload, next_attempt_at,
                           priority)
    VALUES (p_tenant, 'mark_read', NULL, v_phone, p_body,
            CASE WHEN v_state OPERATOR(pg_catalog.=) 'connected' THEN v_now
                 ELSE 'infinity'::timestamptz END, 3);
    RETURN v_message;
END
$$;

-- Puts a tenant's held messages (token revoked) back in the queue; called on reconnect.
-- (PL/pgSQL: Citus cannot plan a SQL function's parameters into a distributed statement.)
CREATE FUNCTION wa._release_held(p_tenant uuid) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_count bigint;
BEGIN
    UPDATE wa.outbox o SET next_attempt_at = v_now
     WHERE o.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND o.failed_at IS NULL
       AND o.next_attempt_at OPERATOR(pg_catalog.=) 'infinity'::timestamptz;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Sends failed messages again (those that failed before Meta accepted them, i.e. without a
-- wamid; a message Meta accepted and later reported failed needs a new send). The one place
-- a status moves from failed back to queued, by an operator's decision.
CREATE FUNCTION wa.retry_failed(tenant_id uuid DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := $1;
    v_count bigint;
BEGIN
    IF v_tenant IS NOT NULL THEN
        PERFORM wa._authorize_tenant(v_tenant);
    ELSIF NOT wa._caller_is_admin() THEN
        RAISE EXCEPTION 'only wa_admin may retry the failed messages of every tenant'
            USING ERRCODE = 'insufficient_privilege', HINT = 'Pass your tenant_id.';
    END IF;
    WITH retried AS (
        UPDATE wa.outbox o
           SET failed_at = NULL, next_attempt_at = now(), attempts = 0, last_error = NULL
          FROM wa.tenants t
         WHERE t.tenant_id = o.tenant_id AND t.state = 'connected'
           AND o.failed_at IS NOT NULL
           AND (v_tenant IS NULL OR o.tenant_id = v_tenant)
        RETURNING o.tenant_id, o.message_id)
    UPDATE wa.messages m
       SET status = 'queued', error = NULL, failed_at = NULL, updated_at = now()
      FROM retried r
     WHERE m.tenant_id = r.tenant_id AND m.message_id = r.message_id
       AND m.status = 'failed' AND m.wamid IS NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM wa._wake_worker_on_commit();
    RETURN v_count;
END
$$;

-- The worker's health and the queue, for operators.
CREATE FUNCTION wa.worker_status() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT jsonb_build_object(
        -- From shared memory, not the last heartbeat (a restarted worker has a new pid before
        -- it writes its first heartbeat) nor pg_stat_activity (which hides other roles' rows).
        'running', w.pid IS NOT NULL,
        'pid', COALESCE(w.pid, s.pid),
        'started_at', s.started_at,
        'heartbeat_at', s.heartbeat_at,
        'database', current_setting('wa.database'),
        'queue_depth', q.depth,
        'due', q.due,
        'held', q.held,
        'failed_in_queue', q.failed,
        'sent', COALESCE(s.sent, 0),
        'failed', COALESCE(s.failed, 0),
        'retried', COALESCE(s.retried, 0),
        'media_downloaded', COALESCE(s.media_downloaded, 0),
        'last_error', s.last_error,
        'last_error_at', s.last_error_at,
        'rate_limits', COALESCE(s.rate_limits, '{}'::jsonb),
        'paused', s.paused,
        'unknown_outcomes', COALESCE(s.unknown, 0),
        'duplicates', COALESCE(s.duplicates, 0),
        'unrecorded', COALESCE(s.unrecorded, 0),
        'unknown_in_queue', q.unknown,
        -- Since the worker started: committed claims and write-backs, and their summed time.
        'latency', jsonb_build_object(
            'claims', COALESCE(s.claims, 0),
            'claim_seconds', COALESCE(s.claim_seconds, 0),
            'write_backs', COALESCE(s.write_backs, 0),
            'write_back_seconds', COALESCE(s.write_back_seconds, 0)),
        'sending', jsonb_build_object(
            'enabled', current_setting('wa.sending_enabled')::boolean,
            'restored_from', (SELECT c.database_name FROM wa.app_config c
                               WHERE c.database_name OPERATOR(pg_catalog.<>) current_database()::text),
            'paused_tenants', (SELECT count(*) FROM wa.tenants t WHERE t.sending_paused_at IS NOT NULL)),
        'webhooks', jsonb_build_object(
            'last_received_at', (SELECT max(e.received_at) FROM wa.webhook_events e),
            'parked_waiting', (SELECT count(*) FROM wa.parked_parts p
                                WHERE p.applied_at IS NULL AND p.expires_at OPERATOR(pg_catalog.>) now())))
      FROM (SELECT count(*) FILTER (WHERE o.next_attempt_at OPERATOR(pg_catalog.<) 'infinity'::timestamptz) AS depth,
                   count(*) FILTER (WHERE o.next_attempt_at OPERATOR(pg_catalog.<=) now()) AS due,
                   count(*) FILTER (WHERE o.failed_at IS NULL AND o.next_attempt_at OPERATOR(pg_catalog.=) 'infinity'::timestamptz) AS held,
                   count(*) FILTER (WHERE o.failed_at IS NOT NULL) AS failed,
                   count(*) FILTER (WHERE o.outcome_unknown_at IS NOT NULL AND o.failed_at IS NULL) AS unknown
              FROM wa.outbox o) q
      LEFT JOIN wa.worker_state s ON true
      CROSS JOIN (SELECT wa._worker_pid() AS pid) w;
END;

-- Pauses sending for a tenant: its messages keep queuing, and none is sent until it is
-- resumed (those already handed to the HTTP threads, at most about a second's worth, still go).
CREATE FUNCTION wa.pause_sending(tenant_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := wa._authorize_tenant($1);
BEGIN
    UPDATE wa.tenants t SET sending_paused_at = COALESCE(t.sending_paused_at, now()), updated_at = now()
     WHERE t.tenant_id OPERATOR(pg_catalog.=) v_tenant;
    INSERT INTO wa.account_events (tenant_id, kind, detail) VALUES (v_tenant, 'sending.paused', '{}');
    RETURN jsonb_build_object('tenant_id', v_tenant, 'sending', 'paused');
END
$$;

-- Resumes a tenant's sending, or, without a tenant (wa_admin), accepts this database as the
-- one that sends: a copy restored under another name sends nothing until then.
CREATE FUNCTION wa.resume_sending(tenant_id uuid DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := $1;
BEGIN
    IF v_tenant IS NULL THEN
        IF NOT wa._caller_is_admin() THEN
            RAISE EXCEPTION 'only wa_admin may resume sending for this database'
                USING ERRCODE = 'insufficient_privilege', HINT = 'Pass your tenant_id.';
        END IF;
        UPDATE wa.app_config c SET database_name = current_database(), updated_at = now();
        PERFORM wa._wake_worker_on_commit();
        RETURN jsonb_build_object('database', current_database(), 'sending', 'resumed');
    END IF;
    PERFORM wa._authorize_tenant(v_tenant);
    UPDATE wa.tenants t SET sending_paused_at = NULL, updated_at = now()
     WHERE t.tenant_id OPERATOR(pg_catalog.=) v_tenant AND t.sending_paused_at IS NOT NULL;
    IF FOUND THEN
        INSERT INTO wa.account_events (tenant_id, kind, detail) VALUES (v_tenant, 'sending.resumed', '{}');
    END IF;
    PERFORM wa._wake_worker_on_commit();
    RETURN jsonb_build_object('tenant_id', v_tenant, 'sending', 'resumed');
END
$$;
