-- Privileges on functions, applied after every function exists. Nothing is granted to PUBLIC.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA wa FROM PUBLIC;

-- Row-level security policies call this as the querying role.
GRANT EXECUTE ON FUNCTION wa.current_tenant_id() TO wa_app, wa_admin;

-- Host applications.
GRANT EXECUTE ON FUNCTION
    wa.signup_config(),
    wa.connection_status(uuid),
    wa.conversations(uuid, text, integer, timestamptz, uuid),
    wa.messages(uuid, integer, timestamptz, uuid),
    wa.close_conversation(uuid),
    wa.status_rank(text),
    wa.send_message(uuid, text, jsonb, text, text),
    wa.send_text(uuid, text, text, text),
    wa.send_template(uuid, text, text, text, jsonb, text),
    wa.mark_read(uuid, text, boolean),
    wa.retry_failed(uuid),
    wa.pause_sending(uuid),
    wa.resume_sending(uuid)
TO wa_app, wa_admin;
GRANT SELECT ON wa.tenant_connections TO wa_app, wa_admin;

-- Administration.
GRANT EXECUTE ON FUNCTION
    wa.configure_app(text, text, text, text),
    wa.create_tenant(text, text),
    wa.connect_tenant(uuid, text, text, text),
    wa.disconnect_tenant(uuid),
    wa.rotate_key(),
    -- The webhook gateway connects as a member of wa_admin.
    wa.verify_webhook(text, text, text),
    wa.ingest_webhook(jsonb),
    wa.ingest_signed_webhook(text, text),
    wa.exchange_code(uuid, text, text, text),
    wa.worker_status(),
    wa.reprocess_webhooks(timestamptz),
    wa.prune(interval, integer)
TO wa_admin;
GRANT EXECUTE ON FUNCTION wa.events_channel(uuid) TO wa_app, wa_admin;

-- ---------------------------------------------------------------------------------------------
-- The second line of defence: every object of schema wa belongs to wa_owner (NOSUPERUSER,
-- NOBYPASSRLS), so SECURITY DEFINER functions run as wa_owner and, every table forcing
-- row-level security, its policies apply inside them. A function that forgets its tenant check
-- still reads and writes only the rows of the tenant the caller acts for (wa.tenant_id);
-- callers with wa_admin's privileges (or superusers) act for every tenant. The policies take
-- the caller from wa._caller_is_admin(), which looks past the SECURITY DEFINER switch.
--
-- The worker (wa_worker) runs its SQL directly, under its own grants below.
GRANT USAGE ON SCHEMA wa TO wa_owner, wa_worker;

DO $policies$
DECLARE
    t text;
    -- Init-plans (scalar subqueries): evaluated once per statement, not once per row.
    v_tenant_rule constant text :=
        '(SELECT wa._caller_is_admin()) OR tenant_id OPERATOR(pg_catalog.=) (SELECT wa.current_tenant_id())';
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'wa'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'r'
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE wa.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('ALTER TABLE wa.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY worker_all ON wa.%I FOR ALL TO wa_worker USING (true) WITH CHECK (true)', t);
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.format('wa.%I', t)::regclass
                      AND a.attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT a.attisdropped) THEN
            EXECUTE pg_catalog.format(
                'CREATE POLICY owner_tenant ON wa.%I FOR ALL TO wa_owner USING (%s) WITH CHECK (%s)',
                t, v_tenant_rule, v_tenant_rule);
        END IF;
    END LOOP;
END
$policies$;
-- The tables without a tenant: the app configuration is read by every webhook and signup;
-- the raw webhook log is the administrators'; the worker's state is for everyone who may call
-- wa.worker_status(). A table of schema wa missing here and without tenant_id has no policy
-- for wa_owner at all, so functions see none of its rows (a failure, never a leak).
CREATE POLICY owner_all ON wa.app_config FOR ALL TO wa_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_admin ON wa.webhook_events FOR ALL TO wa_owner
    USING ((SELECT wa._caller_is_admin())) WITH CHECK ((SELECT wa._caller_is_admin()));
CREATE POLICY owner_all ON wa.worker_state FOR ALL TO wa_owner USING (true) WITH CHECK (true);
CREATE POLICY owner_admin ON wa.parked_parts FOR ALL TO wa_owner
    USING ((SELECT wa._caller_is_admin())) WITH CHECK ((SELECT wa._caller_is_admin()));

-- What the background worker does, and nothing more.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON wa.outbox, wa.messages, wa.pending_statuses, wa.media, wa.worker_state TO wa_worker;
GRANT SELECT, UPDATE ON wa.tenants, wa.conversations TO wa_worker;
GRANT SELECT ON wa.credentials, wa.phone_numbers, wa.app_config, wa.routes, wa.contacts TO wa_worker;
GRANT INSERT ON wa.account_events TO wa_worker;
GRANT EXECUTE ON FUNCTION
    wa.status_rank(text),
    wa._apply_pending_statuses(uuid[], text[]),
    wa._apply_status(uuid, text, text, timestamptz, text, jsonb, jsonb, jsonb, jsonb, text),
    wa.current_tenant_id()
TO wa_worker;

-- Embedded Signup with one-time states (sql/signup.sql, src/signup/state.rs). The host app
-- mints a state for its tenant; the gateway (a wa_admin member) completes the signup with it.
GRANT EXECUTE ON FUNCTION wa.begin_signup(uuid, interval) TO wa_app, wa_admin;
GRANT EXECUTE ON FUNCTION wa.complete_signup(text, text, text, text) TO wa_admin;
GRANT SELECT ON wa.signup_states TO wa_admin;

-- Ownership last, once every grant is made (grants made by the old owner pass to the new one).
-- Identity sequences and indexes follow their tables; row types of tables follow the tables.
DO $owner$
DECLARE
    o record;
BEGIN
    FOR o IN
        SELECT pg_catalog.format('wa.%I', c.relname) AS name,
               CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                              WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'wa'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        UNION ALL
        SELECT pg_catalog.format('wa.%I', t.typname), 'TYPE'
          FROM pg_catalog.pg_type t
          LEFT JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.typrelid
         WHERE t.typnamespace OPERATOR(pg_catalog.=) 'wa'::regnamespace
           AND t.typtype IN ('c', 'e', 'd')
           AND (t.typtype OPERATOR(pg_catalog.<>) 'c' OR c.relkind OPERATOR(pg_catalog.=) 'c')
        UNION ALL
        SELECT pg_catalog.format('wa.%I(%s)', p.proname,
                                 pg_catalog.pg_get_function_identity_arguments(p.oid)), 'ROUTINE'
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'wa'::regnamespace
    LOOP
        EXECUTE pg_catalog.format('ALTER %s %s OWNER TO wa_owner', o.kind, o.name);
        IF o.kind OPERATOR(pg_catalog.=) 'TYPE' THEN
            -- Types are usable by PUBLIC by default; the row types of the listing functions
            -- are for the roles that call them.
            EXECUTE pg_catalog.format('REVOKE ALL ON TYPE %s FROM PUBLIC', o.name);
            EXECUTE pg_catalog.format('GRANT USAGE ON TYPE %s TO wa_app, wa_admin', o.name);
        END IF;
    END LOOP;
END
$owner$;
