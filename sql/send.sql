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

-- Records an outbound message as queued in its conversation and enqueues its request body.
-- Returns the message id (an existing one when the idempotency key was used before).
CREATE FUNCTION wa._enqueue_message(p_tenant uuid, p_phone text, p_wa_id text, p_user_id text,
                                    p_recipient text, p_type text, p_content jsonb,
                                    p_preview text, p_idempotency_key text, p_message_id uuid,
                                    p_body text, p_context_wamid text)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state text;
    v_contact uuid;
    v_conversation uuid;
    v_message uuid;
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        SELECT m.message_id INTO v_message FROM wa.messages m
         WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant
           AND m.idempotency_key OPERATOR(pg_catalog.=) p_idempotency_key;
        IF v_message IS NOT NULL THEN
            RETURN v_message;
        END IF;
    END IF;
    SELECT t.state INTO v_state FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant;
    IF v_state NOT IN ('connected', 'action_required') THEN
        RAISE EXCEPTION 'tenant % is not connected', p_tenant
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its connection state is %s.', v_state),
                  HINT = 'Connect it with wa.exchange_code() or wa.connect_tenant() first.';
    END IF;
    v_contact := wa._upsert_contact(p_tenant, p_wa_id, p_user_id, NULL, NULL);
    v_conversation := wa._conversation_for(p_tenant, p_phone, v_contact);
    INSERT INTO wa.messages (tenant_id, message_id, conversation_id, direction, type, content,
                             status, idempotency_key, context_wamid)
    VALUES (p_tenant, p_message_id, v_conversation, 'outbound', p_type, p_content, 'queued',
            p_idempotency_key, p_context_wamid)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING message_id INTO v_message;
    IF v_message IS NULL THEN
        -- A concurrent call with the same idempotency key won.
        SELECT m.message_id INTO v_message FROM wa.messages m
         WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant
           AND m.idempotency_key OPERATOR(pg_catalog.=) p_idempotency_key;
        RETURN v_message;
    END IF;
    -- A tenant whose token was revoked keeps queuing, held until it is reconnected.
    INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, recipient, payload,
                           next_attempt_at)
    VALUES (p_tenant, 'message', v_message, p_phone, p_recipient, p_body,
            CASE WHEN v_state = 'action_required' THEN 'infinity'::timestamptz ELSE now() END);
    UPDATE wa.conversations v
       SET status = 'open', closed_at = NULL, last_message_at = GREATEST(v.last_message_at, now()),
           last_message_preview = p_preview, updated_at = now()
     WHERE v.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND v.conversation_id OPERATOR(pg_catalog.=) v_conversation;
    RETURN v_message;
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
BEGIN
    SELECT v.phone_number_id INTO v_phone
      FROM wa.messages m
      JOIN wa.conversations v ON v.tenant_id = m.tenant_id AND v.conversation_id = m.conversation_id
     WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant AND m.message_id OPERATOR(pg_catalog.=) v_message;
    INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, payload, next_attempt_at)
    SELECT p_tenant, 'mark_read', NULL, v_phone, p_body,
           CASE WHEN t.state = 'connected' THEN now() ELSE 'infinity'::timestamptz END
      FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant;
    RETURN v_message;
END
$$;

-- Puts a tenant's held messages (token revoked) back in the queue; called on reconnect.
CREATE FUNCTION wa._release_held(p_tenant uuid) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH released AS (
        UPDATE wa.outbox o SET next_attempt_at = now()
         WHERE o.tenant_id OPERATOR(pg_catalog.=) p_tenant
           AND o.failed_at IS NULL
           AND o.next_attempt_at OPERATOR(pg_catalog.=) 'infinity'::timestamptz
        RETURNING 1)
    SELECT count(*) FROM released;
END;

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
