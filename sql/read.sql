-- Reading conversations and messages, closing conversations, marking messages read.

-- Row types of the listing functions (PL/pgSQL cannot have an output column named like an
-- argument, and the contract names both tenant_id / conversation_id).
CREATE TYPE wa.conversation_summary AS (
    conversation_id uuid, tenant_id uuid, phone_number_id text, customer_wa_id text,
    customer_user_id text, customer_name text, status text, last_message_at timestamptz,
    last_message_preview text, unread_count integer, window_open boolean,
    window_expires_at timestamptz);

CREATE TYPE wa.message_summary AS (
    message_id uuid, conversation_id uuid, direction text, type text, content jsonb,
    status text, wamid text, error jsonb, created_at timestamptz, sent_at timestamptz,
    delivered_at timestamptz, read_at timestamptz, failed_at timestamptz, context_wamid text,
    media jsonb, pricing jsonb);

-- Conversations of a tenant, newest first. Page with `before` = the last row's
-- last_message_at and `before_id` = its conversation_id (rows can share a timestamp).
CREATE FUNCTION wa.conversations(tenant_id uuid, status text DEFAULT NULL,
                                 max_rows integer DEFAULT 50, before timestamptz DEFAULT NULL,
                                 before_id uuid DEFAULT NULL)
    RETURNS SETOF wa.conversation_summary
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := wa._authorize_tenant($1);
    v_status text := $2;
    v_max integer := $3;
    v_before timestamptz := $4;
    v_before_id uuid := $5;
BEGIN
    IF v_status IS NOT NULL AND v_status NOT IN ('open', 'closed') THEN
        RAISE EXCEPTION 'status must be ''open'', ''closed'' or NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_max IS NULL OR v_max < 1 OR v_max > 1000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 1000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT v.conversation_id, v.tenant_id, v.phone_number_id, c.wa_id, c.user_id,
           c.profile_name, v.status, v.last_message_at, v.last_message_preview,
           v.unread_count, COALESCE(v.window_expires_at > now(), false), v.window_expires_at
      FROM wa.conversations v
      JOIN wa.contacts c ON c.tenant_id = v.tenant_id AND c.contact_id = v.contact_id
     WHERE v.tenant_id = v_tenant
       AND (v_status IS NULL OR v.status = v_status)
       AND (v_before IS NULL
            OR v.last_message_at < v_before
            OR (v_before_id IS NOT NULL AND v.last_message_at = v_before
                AND v.conversation_id < v_before_id))
     ORDER BY v.last_message_at DESC NULLS LAST, v.conversation_id DESC
     LIMIT v_max;
END
$$;

-- Tenant of a conversation, authorised for the caller.
CREATE FUNCTION wa._authorize_conversation(p_conversation uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid;
BEGIN
    IF p_conversation IS NULL THEN
        RAISE EXCEPTION 'conversation_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT v.tenant_id INTO v_tenant FROM wa.conversations v
     WHERE v.conversation_id OPERATOR(pg_catalog.=) p_conversation;
    IF v_tenant IS NULL AND NOT wa._caller_is_admin() THEN
        -- Row-level security hides other tenants' conversations: refuse the way
        -- wa._authorize_tenant does, without telling whether the conversation exists.
        IF wa.current_tenant_id() IS NULL THEN
            RAISE EXCEPTION 'wa.tenant_id is not set'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Run SET wa.tenant_id = ''<tenant uuid>'' (or SET LOCAL in the transaction) before calling whatsapp_pg functions as wa_app.';
        END IF;
        RAISE EXCEPTION 'conversation % is not a conversation of the tenant this session acts for', p_conversation
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('wa.tenant_id is set to %s.', wa.current_tenant_id());
    ELSIF v_tenant IS NULL THEN
        RAISE EXCEPTION 'conversation % does not exist', p_conversation USING ERRCODE = 'undefined_object';
    END IF;
    RETURN wa._authorize_tenant(v_tenant);
END
$$;

-- Messages of a conversation, newest first. Page with `before` = the last row's created_at
-- and `before_id` = its message_id (messages of one transaction share a timestamp).
CREATE FUNCTION wa.messages(conversation_id uuid, max_rows integer DEFAULT 50,
                            before timestamptz DEFAULT NULL, before_id uuid DEFAULT NULL)
    RETURNS SETOF wa.message_summary
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_conversation uuid := $1;
    v_tenant uuid := wa._authorize_conversation($1);
    v_max integer := $2;
    v_before timestamptz := $3;
    v_before_id uuid := $4;
BEGIN
    IF v_max IS NULL OR v_max < 1 OR v_max > 1000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 1000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT m.message_id, m.conversation_id, m.direction, m.type, m.content, m.status, m.wamid,
           m.error, m.created_at, m.sent_at, m.delivered_at, m.read_at, m.failed_at,
           m.context_wamid, m.media, m.pricing
      FROM wa.messages m
     WHERE m.conversation_id = v_conversation
       AND m.tenant_id = v_tenant
       AND (v_before IS NULL
            OR m.created_at < v_before
            OR (v_before_id IS NOT NULL AND m.created_at = v_before AND m.message_id < v_before_id))
     ORDER BY m.created_at DESC, m.message_id DESC
     LIMIT v_max;
END
$$;

CREATE FUNCTION wa.close_conversation(conversation_id uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_conversation uuid := $1;
    v_tenant uuid := wa._authorize_conversation($1);
    v_closed boolean;
BEGIN
    UPDATE wa.conversations v
       SET status = 'closed', closed_at = now(), updated_at = now()
     WHERE v.tenant_id OPERATOR(pg_catalog.=) v_tenant
       AND v.conversation_id OPERATOR(pg_catalog.=) v_conversation
       AND v.status OPERATOR(pg_catalog.=) 'open';
    v_closed := FOUND;
    IF v_closed THEN
        PERFORM wa._notify_tenant(v_tenant, pg_catalog.json_build_object(
            'kind', 'conversation.closed', 'tenant_id', v_tenant,
            'conversation_id', v_conversation, 'message_id', NULL)::text);
    END IF;
    RETURN v_closed;
END
$$;

-- Marks an inbound message, and every earlier inbound message of its conversation, as read,
-- and recounts the conversation's unread messages. Returns the message id.
CREATE FUNCTION wa._mark_read_local(p_tenant uuid, p_wamid text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_message uuid;
    v_conversation uuid;
    v_at timestamptz;
    v_now timestamptz := pg_catalog.now();
    v_unread bigint;
BEGIN
    -- Plain values in the updates' SET lists, which Citus requires (no function of a column,
    -- no subquery).
    SELECT m.message_id, m.conversation_id, m.created_at INTO v_message, v_conversation, v_at
      FROM wa.messages m
     WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant AND m.wamid OPERATOR(pg_catalog.=) p_wamid
       AND m.direction OPERATOR(pg_catalog.=) 'inbound';
    IF v_message IS NULL THEN
        RAISE EXCEPTION 'no inbound message with wamid % for this tenant', p_wamid
            USING ERRCODE = 'undefined_object';
    END IF;
    UPDATE wa.messages m
       SET status = 'read', read_at = COALESCE(m.read_at, v_now), updated_at = v_now
     WHERE m.conversation_id OPERATOR(pg_catalog.=) v_conversation
       AND m.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND m.direction OPERATOR(pg_catalog.=) 'inbound'
       AND m.status OPERATOR(pg_catalog.=) 'received'
       AND m.created_at OPERATOR(pg_catalog.<=) v_at;
    SELECT pg_catalog.count(*) INTO v_unread FROM wa.messages m
     WHERE m.conversation_id OPERATOR(pg_catalog.=) v_conversation
       AND m.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND m.direction OPERATOR(pg_catalog.=) 'inbound'
       AND m.status OPERATOR(pg_catalog.=) 'received';
    UPDATE wa.conversations v
       SET unread_count = v_unread, updated_at = v_now
     WHERE v.tenant_id OPERATOR(pg_catalog.=) p_tenant
       AND v.conversation_id OPERATOR(pg_catalog.=) v_conversation;
    RETURN v_message;
END
$$;

-- The bytes of a downloaded media file, whether stored in one row or in chunks; NULL when the
-- file is not (or no longer) stored. Read the chunks of wa.media_chunks in seq order to stream
-- a large file without holding it whole.
CREATE FUNCTION wa.media_content(tenant_id uuid, media_id text) RETURNS bytea
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := wa._authorize_tenant($1);
    v_media text := $2;
    v_content bytea;
    v_chunks integer;
BEGIN
    SELECT m.content, m.chunks INTO v_content, v_chunks FROM wa.media m
     WHERE m.tenant_id OPERATOR(pg_catalog.=) v_tenant AND m.media_id OPERATOR(pg_catalog.=) v_media;
    IF v_content IS NOT NULL OR COALESCE(v_chunks, 0) OPERATOR(pg_catalog.=) 0 THEN
        RETURN v_content;
    END IF;
    RETURN (SELECT pg_catalog.string_agg(c.data, ''::bytea ORDER BY c.seq) FROM wa.media_chunks c
             WHERE c.tenant_id OPERATOR(pg_catalog.=) v_tenant
               AND c.media_id OPERATOR(pg_catalog.=) v_media);
END
$$;
