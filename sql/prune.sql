-- Retention: wa.prune(older_than, batch_size) removes what is no longer needed, a small batch
-- of each kind per call, so that no call holds many locks or writes much WAL at once. Call it
-- until it returns done = true (pg_cron every minute: README, "Retention").
--
-- What goes, for rows older than older_than:
--   * webhook deliveries: the payload and raw body (the summary, status and errors stay, and
--     pruned_at says when); never while a parked part of the delivery still waits;
--   * outbox rows of permanent failures (the message keeps its status 'failed' and its
--     error; wa.retry_failed can no longer retry it);
--   * pending statuses whose message never became known;
--   * parked parts applied that long ago, and parked parts past their expiry (whatever age);
--   * the bytes of downloaded media (the row, its type, size and SHA-256 stay);
--   * expired signup states.
CREATE FUNCTION wa.prune(older_than interval, batch_size integer DEFAULT 1000) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before timestamptz;
    v_payloads bigint;
    v_outbox bigint;
    v_pending bigint;
    v_parked bigint;
    v_media bigint;
    v_states bigint;
BEGIN
    IF NOT wa._caller_is_admin() THEN
        RAISE EXCEPTION 'only wa_admin may prune'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM wa._act_for(NULL);
    IF older_than IS NULL OR older_than OPERATOR(pg_catalog.<) interval '1 day' THEN
        RAISE EXCEPTION 'older_than must be at least 1 day'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Meta retries a webhook for up to 7 days: keep at least that much to reprocess failures.';
    END IF;
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1
       OR batch_size OPERATOR(pg_catalog.>) 100000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 100000'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_before := now() OPERATOR(pg_catalog.-) older_than;

    WITH b AS (
        SELECT e.webhook_event_id FROM wa.webhook_events e
         WHERE e.pruned_at IS NULL AND e.received_at OPERATOR(pg_catalog.<) v_before
           AND e.status OPERATOR(pg_catalog.<>) 'received'
           AND NOT EXISTS (SELECT 1 FROM wa.parked_parts p
                            WHERE p.webhook_event_id OPERATOR(pg_catalog.=) e.webhook_event_id
                              AND p.applied_at IS NULL
                              AND p.expires_at OPERATOR(pg_catalog.>) now())
         ORDER BY e.received_at
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED)
    UPDATE wa.webhook_events e SET payload = NULL, raw_body = NULL, pruned_at = now()
      FROM b WHERE e.webhook_event_id OPERATOR(pg_catalog.=) b.webhook_event_id;
    GET DIAGNOSTICS v_payloads = ROW_COUNT;

    WITH b AS (
        SELECT o.tenant_id, o.outbox_id FROM wa.outbox o
         WHERE o.failed_at OPERATOR(pg_catalog.<) v_before
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED)
    DELETE FROM wa.outbox o USING b
     WHERE o.tenant_id OPERATOR(pg_catalog.=) b.tenant_id
       AND o.outbox_id OPERATOR(pg_catalog.=) b.outbox_id;
    GET DIAGNOSTICS v_outbox = ROW_COUNT;

    WITH b AS (
        SELECT s.tenant_id, s.wamid, s.status FROM wa.pending_statuses s
         WHERE s.received_at OPERATOR(pg_catalog.<) v_before
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED)
    DELETE FROM wa.pending_statuses s USING b
     WHERE s.tenant_id OPERATOR(pg_catalog.=) b.tenant_id
       AND s.wamid OPERATOR(pg_catalog.=) b.wamid
       AND s.status OPERATOR(pg_catalog.=) b.status;
    GET DIAGNOSTICS v_pending = ROW_COUNT;

    WITH b AS (
        SELECT p.kind, p.external_id, p.webhook_event_id FROM wa.parked_parts p
         WHERE p.applied_at OPERATOR(pg_catalog.<) v_before
            OR (p.applied_at IS NULL AND p.expires_at OPERATOR(pg_catalog.<=) now())
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED)
    DELETE FROM wa.parked_parts p USING b
     WHERE p.kind OPERATOR(pg_catalog.=) b.kind
       AND p.external_id OPERATOR(pg_catalog.=) b.external_id
       AND p.webhook_event_id OPERATOR(pg_catalog.=) b.webhook_event_id;
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    WITH b AS (
        SELECT m.tenant_id, m.media_id FROM wa.media m
         WHERE (m.content IS NOT NULL OR m.chunks OPERATOR(pg_catalog.>) 0)
           AND m.downloaded_at OPERATOR(pg_catalog.<) v_before
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED),
    chunks AS (
        DELETE FROM wa.media_chunks c USING b
         WHERE c.tenant_id OPERATOR(pg_catalog.=) b.tenant_id
           AND c.media_id OPERATOR(pg_catalog.=) b.media_id)
    UPDATE wa.media m SET content = NULL, chunks = 0
      FROM b WHERE m.tenant_id OPERATOR(pg_catalog.=) b.tenant_id
               AND m.media_id OPERATOR(pg_catalog.=) b.media_id;
    GET DIAGNOSTICS v_media = ROW_COUNT;

    WITH b AS (
        SELECT s.tenant_id, s.state_sha256 FROM wa.signup_states s
         WHERE s.expires_at OPERATOR(pg_catalog.<) v_before
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED)
    DELETE FROM wa.signup_states s USING b
     WHERE s.tenant_id OPERATOR(pg_catalog.=) b.tenant_id
       AND s.state_sha256 OPERATOR(pg_catalog.=) b.state_sha256;
    GET DIAGNOSTICS v_states = ROW_COUNT;

    RETURN jsonb_build_object(
        'webhook_payloads', v_payloads, 'failed_outbox', v_outbox,
        'pending_statuses', v_pending, 'parked_parts', v_parked,
        'media_content', v_media, 'signup_states', v_states,
        'done', GREATEST(v_payloads, v_outbox, v_pending, v_parked, v_media, v_states)
                OPERATOR(pg_catalog.<) batch_size);
END
$$;
