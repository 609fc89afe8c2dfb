-- Applying webhook parts. The Rust side (src/ingest/) stores the delivery, parses it with
-- whatsapp-client, resolves tenants, applies inbound messages set-based (src/ingest/inbound.rs,
-- which calls the contact and conversation functions below for new or changed customers) and
-- calls the others once per part. Each is idempotent: a
-- replayed or reordered delivery leaves the same state as one ordered pass.

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

-- One status of an outbound message. Finds the message by wamid, or through
-- biz_opaque_callback_data (our message id) when the worker has not stored the wamid yet;
-- otherwise keeps it pending. p_tenant is the tenant the number is routed to now (NULL when
-- none is); with p_phone, a message not found there is looked for among the number's former
-- tenants (wa.released_routes), so that statuses arriving after a disconnect still apply.
-- Returns 'applied', 'unchanged', 'pending', or 'unrouted' (no tenant has the message and the
-- number has no current tenant to keep it pending for).
-- Called by the worker (as wa_worker, without p_phone): every function and operator is
-- qualified.
CREATE FUNCTION wa._apply_status(p_tenant uuid, p_wamid text, p_status text, p_at timestamptz,
                                 p_callback text, p_pricing jsonb, p_conversation jsonb,
                                 p_errors jsonb, p_payload jsonb, p_phone text DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := p_tenant;
    v_callback uuid;
    v_message uuid;
    v_conversation uuid;
    v_current text;
    v_wamid text;
    v_new text;
    v_changed boolean;
BEGIN
    IF p_callback OPERATOR(pg_catalog.~)
       '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        v_callback := p_callback::uuid;
    END IF;
    IF p_tenant IS NOT NULL THEN
        SELECT m.message_id, m.conversation_id, m.status, m.wamid
          INTO v_message, v_conversation, v_current, v_wamid
          FROM wa.messages m
         WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant AND m.wamid OPERATOR(pg_catalog.=) p_wamid
           FOR UPDATE;
        IF v_message IS NULL AND v_callback IS NOT NULL THEN
            SELECT m.message_id, m.conversation_id, m.status, m.wamid
              INTO v_message, v_conversation, v_current, v_wamid
              FROM wa.messages m
             WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant
               AND m.message_id OPERATOR(pg_catalog.=) v_callback
               AND m.direction OPERATOR(pg_catalog.=) 'outbound'
               FOR UPDATE;
        END IF;
    END IF;
    IF v_message IS NULL AND p_phone IS NOT NULL THEN
        -- Not the current tenant's: a message a former tenant of the number sent.
        SELECT m.tenant_id, m.message_id, m.conversation_id, m.status, m.wamid
          INTO v_tenant, v_message, v_conversation, v_current, v_wamid
          FROM wa.released_routes r
          JOIN wa.messages m ON m.tenant_id OPERATOR(pg_catalog.=) r.tenant_id
         WHERE r.kind OPERATOR(pg_catalog.=) 'phone_number'
           AND r.external_id OPERATOR(pg_catalog.=) p_phone
           AND r.tenant_id IS DISTINCT FROM p_tenant
           AND m.wamid OPERATOR(pg_catalog.=) p_wamid
         ORDER BY r.released_at DESC
         LIMIT 1
           FOR UPDATE OF m;
        IF v_message IS NULL AND v_callback IS NOT NULL THEN
            SELECT m.tenant_id, m.message_id, m.conversation_id, m.status, m.wamid
              INTO v_tenant, v_message, v_conversation, v_current, v_wamid
              FROM wa.released_routes r
              JOIN wa.messages m ON m.tenant_id OPERATOR(pg_catalog.=) r.tenant_id
             WHERE r.kind OPERATOR(pg_catalog.=) 'phone_number'
               AND r.external_id OPERATOR(pg_catalog.=) p_phone
               AND r.tenant_id IS DISTINCT FROM p_tenant
               AND m.message_id OPERATOR(pg_catalog.=) v_callback
               AND m.direction OPERATOR(pg_catalog.=) 'outbound'
             ORDER BY r.released_at DESC
             LIMIT 1
               FOR UPDATE OF m;
        END IF;
        IF v_message IS NULL THEN
            v_tenant := p_tenant;
        END IF;
    END IF;
    IF v_message IS NULL THEN
        IF p_tenant IS NULL THEN
            RETURN 'unrouted';
        END IF;
        INSERT INTO wa.pending_statuses (tenant_id, wamid, status, status_payload)
        VALUES (p_tenant, p_wamid, p_status, p_payload)
        ON CONFLICT (tenant_id, wamid, status) DO NOTHING;
        RETURN 'pending';
    END IF;
    v_new := CASE WHEN v_current OPERATOR(pg_catalog.<>) 'failed'
                   AND wa.status_rank(p_status) OPERATOR(pg_catalog.>) wa.status_rank(v_current)
                  THEN p_status ELSE v_current END;
    UPDATE wa.messages m
       SET status = v_new,
           wamid = COALESCE(m.wamid, p_wamid),
           sent_at = CASE WHEN p_status OPERATOR(pg_catalog.=) 'sent' THEN COALESCE(m.sent_at, p_at) ELSE m.sent_at END,
           delivered_at = CASE WHEN p_status OPERATOR(pg_catalog.=) 'delivered' THEN COALESCE(m.delivered_at, p_at) ELSE m.delivered_at END,
           read_at = CASE WHEN p_status OPERATOR(pg_catalog.=) 'read' THEN COALESCE(m.read_at, p_at) ELSE m.read_at END,
           played_at = CASE WHEN p_status OPERATOR(pg_catalog.=) 'played' THEN COALESCE(m.played_at, p_at) ELSE m.played_at END,
           failed_at = CASE WHEN p_status OPERATOR(pg_catalog.=) 'failed' THEN COALESCE(m.failed_at, p_at) ELSE m.failed_at END,
           error = CASE WHEN p_status OPERATOR(pg_catalog.=) 'failed' AND v_new OPERATOR(pg_catalog.=) 'failed'
                        THEN COALESCE(m.error, p_errors) ELSE m.error END,
           pricing = COALESCE(p_pricing, m.pricing),
           meta_conversation = COALESCE(p_conversation, m.meta_conversation),
           updated_at = pg_catalog.now()
     WHERE m.tenant_id OPERATOR(pg_catalog.=) v_tenant
       AND m.message_id OPERATOR(pg_catalog.=) v_message
       AND (m.status IS DISTINCT FROM v_new
            OR m.wamid IS NULL
            OR (p_status OPERATOR(pg_catalog.=) 'sent' AND m.sent_at IS NULL)
            OR (p_status OPERATOR(pg_catalog.=) 'delivered' AND m.delivered_at IS NULL)
            OR (p_status OPERATOR(pg_catalog.=) 'read' AND m.read_at IS NULL)
            OR (p_status OPERATOR(pg_catalog.=) 'played' AND m.played_at IS NULL)
            OR (p_status OPERATOR(pg_catalog.=) 'failed' AND m.failed_at IS NULL)
            OR (p_pricing IS NOT NULL AND m.pricing IS NULL)
            OR (p_conversation IS NOT NULL AND m.meta_conversation IS NULL));
    v_changed := FOUND;
    IF v_current OPERATOR(pg_catalog.=) 'queued' THEN
        -- Meta has the message although the worker has not recorded it (its answer is still
        -- on the way, or was lost to a timeout or a crash): it must not be sent again.
        DELETE FROM wa.outbox o
         WHERE o.tenant_id OPERATOR(pg_catalog.=) v_tenant
           AND o.message_id OPERATOR(pg_catalog.=) v_message
           AND o.kind OPERATOR(pg_catalog.=) 'message';
    END IF;
    IF v_wamid IS NOT NULL AND v_wamid OPERATOR(pg_catalog.<>) p_wamid THEN
        -- Matched through our id under another wamid: Meta took the message twice.
        UPDATE wa.messages m
           SET extra_wamids = pg_catalog.array_append(m.extra_wamids, p_wamid)
         WHERE m.tenant_id OPERATOR(pg_catalog.=) v_tenant
           AND m.message_id OPERATOR(pg_catalog.=) v_message
           AND NOT COALESCE(p_wamid OPERATOR(pg_catalog.=) ANY (m.extra_wamids), false);
    END IF;
    IF NOT v_changed THEN
        RETURN 'unchanged';
    END IF;
    IF v_wamid IS NULL THEN
        -- Matched through biz_opaque_callback_data: this is where the message learnt its wamid.
        PERFORM wa._apply_pending_statuses(ARRAY[v_tenant], ARRAY[p_wamid]);
    END IF;
    IF v_new IS DISTINCT FROM v_current THEN
        PERFORM pg_catalog.pg_notify(t.events_channel, pg_catalog.json_build_object(
            'kind', 'message.status', 'status', v_new, 'tenant_id', v_tenant,
            'conversation_id', v_conversation, 'message_id', v_message)::text)
           FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) v_tenant;
    END IF;
    RETURN 'applied';
END
$$;

-- A message got its wamid (the worker stored Meta's answer): apply the statuses that arrived
-- before it was known. Called by the worker's write-back for every batch (a join against an
-- almost always empty table) rather than by a per-row trigger on the hot path.
CREATE FUNCTION wa._apply_pending_statuses(p_tenants uuid[], p_wamids text[]) RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    n integer := 0;
BEGIN
    FOR p IN
        DELETE FROM wa.pending_statuses s
         USING ROWS FROM (pg_catalog.unnest(p_tenants), pg_catalog.unnest(p_wamids)) AS k(tenant_id, wamid)
         WHERE s.tenant_id OPERATOR(pg_catalog.=) k.tenant_id
           AND s.wamid OPERATOR(pg_catalog.=) k.wamid
        RETURNING s.*
    LOOP
        PERFORM wa._apply_status(
            p.tenant_id, p.wamid, p.status,
            pg_catalog.to_timestamp((p.status_payload OPERATOR(pg_catalog.->>) 'timestamp')::double precision),
            NULL, p.status_payload OPERATOR(pg_catalog.->) 'pricing',
            p.status_payload OPERATOR(pg_catalog.->) 'conversation',
            p.status_payload OPERATOR(pg_catalog.->) 'errors', p.status_payload);
        n := n OPERATOR(pg_catalog.+) 1;
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
        PERFORM pg_catalog.pg_notify(t.events_channel, pg_catalog.json_build_object(
            'kind', 'connection.changed', 'state', v_new, 'tenant_id', p_tenant,
            'conversation_id', NULL, 'message_id', NULL)::text)
           FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) p_tenant;
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
