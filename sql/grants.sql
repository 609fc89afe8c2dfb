-- Row-level security, policies and privileges: after every table and function exists (the
-- tables are in sql/schema.sql). An upgrade drops the policies and grants of the version it
-- upgrades from and runs this file again, so this is the one place they are defined.
--
-- Roles are cluster-wide, so they may already exist from another database.
DO $roles$
DECLARE
    r text;
BEGIN
    -- wa_owner owns every object of schema wa (sql/grants.sql), so SECURITY DEFINER functions
    -- run as a role that row-level security applies to. wa_worker is the background worker.
    FOREACH r IN ARRAY ARRAY['wa_admin', 'wa_app', 'wa_owner', 'wa_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN%s', r,
                    CASE WHEN r OPERATOR(pg_catalog.=) 'wa_owner'
                         THEN ' NOSUPERUSER NOBYPASSRLS NOINHERIT' ELSE '' END);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created concurrently by CREATE EXTENSION in another database
            END;
        END IF;
    END LOOP;
    -- An existing wa_owner that bypasses row-level security would silently void isolation.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                WHERE rolname OPERATOR(pg_catalog.=) 'wa_owner' AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role wa_owner must not be a superuser or bypass row-level security'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER ROLE wa_owner NOSUPERUSER NOBYPASSRLS, then create the extension again.';
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA wa TO wa_admin, wa_app;

-- Row-level security: wa_app sees only the rows of the tenant in wa.tenant_id; wa_admin sees
-- all. Forced, so even the table owner is subject to it unless it is a superuser.
DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'tenant_refs', 'wabas', 'phone_numbers', 'routes', 'released_routes',
                             'credentials', 'contacts', 'conversations', 'messages', 'outbox', 'media', 'media_chunks',
                             'pending_statuses', 'templates', 'account_events', 'signups', 'signup_states']
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE wa.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('ALTER TABLE wa.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY tenant_isolation ON wa.%I FOR SELECT TO wa_app '
            'USING (tenant_id OPERATOR(pg_catalog.=) wa.current_tenant_id())', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY admin_all ON wa.%I TO wa_admin USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$rls$;
ALTER TABLE wa.app_config ENABLE ROW LEVEL SECURITY;
ALTER TABLE wa.app_config FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON wa.app_config TO wa_admin USING (true) WITH CHECK (true);
ALTER TABLE wa.worker_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE wa.worker_state FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON wa.worker_state TO wa_admin USING (true) WITH CHECK (true);
ALTER TABLE wa.webhook_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE wa.webhook_events FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON wa.webhook_events TO wa_admin USING (true) WITH CHECK (true);
ALTER TABLE wa.parked_parts ENABLE ROW LEVEL SECURITY;
ALTER TABLE wa.parked_parts FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON wa.parked_parts TO wa_admin USING (true) WITH CHECK (true);

-- Privileges. Nothing to PUBLIC. wa_app reads its tenant's rows (changes go through functions);
-- it never touches secrets, the app configuration or the raw webhook log.
REVOKE ALL ON ALL TABLES IN SCHEMA wa FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA wa FROM PUBLIC;
GRANT SELECT ON wa.tenants, wa.wabas, wa.phone_numbers, wa.contacts, wa.conversations,
    wa.messages, wa.templates, wa.account_events, wa.media, wa.media_chunks TO wa_app;
GRANT SELECT ON ALL TABLES IN SCHEMA wa TO wa_admin;
-- Admins see that secrets exist and under which key, never plaintext (there is none to see).
REVOKE SELECT ON wa.credentials FROM wa_admin;
GRANT SELECT (tenant_id, kind, key_id, source, expires_at, created_at, updated_at)
    ON wa.credentials TO wa_admin;
REVOKE SELECT ON wa.app_config FROM wa_admin;
GRANT SELECT (app_id, config_id, updated_at) ON wa.app_config TO wa_admin;
GRANT SELECT ON wa.signups TO wa_app, wa_admin;


-- ---------------------------------------------------------------------------------------------
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
    wa.media_content(uuid, text),
    wa.status_rank(text),
    wa.send_message(uuid, text, jsonb, text, text, integer),
    wa.send_text(uuid, text, text, text, integer),
    wa.send_template(uuid, text, text, text, jsonb, text, integer),
    wa.send_bulk(uuid, text[], jsonb, jsonb, text[], text, integer, boolean),
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
    wa.delete_tenant(uuid),
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
-- Where each table goes on Citus; wa.distribute() itself is for superusers only.
GRANT EXECUTE ON FUNCTION wa.citus_layout() TO wa_admin;

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
-- The owner of every table may create in the schema: Citus creates the shards of a table on a
-- node added later (the copies of the reference tables, the shards a rebalance moves) as the
-- table's owner. No function of the extension runs DDL as wa_owner.
GRANT CREATE ON SCHEMA wa TO wa_owner;

DO $policies$
DECLARE
    t text;
    -- Plain calls of STABLE functions, no subqueries: Citus refuses policies with subqueries
    -- on distributed and reference tables (sql/citus.sql). The third arm only decides where
    -- the caller is not known, on a Citus worker node (wa._acting_for, src/authz.rs); the
    -- first two decide every row of a single node.
    v_tenant_rule constant text :=
        'wa._caller_is_admin() OR tenant_id OPERATOR(pg_catalog.=) wa.current_tenant_id() '
        'OR wa._acting_for(tenant_id)';
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
    ON wa.outbox, wa.messages, wa.pending_statuses, wa.media, wa.media_chunks, wa.worker_state
    TO wa_worker;
GRANT SELECT, UPDATE ON wa.tenants, wa.conversations TO wa_worker;
GRANT SELECT ON wa.credentials, wa.phone_numbers, wa.app_config, wa.routes, wa.contacts TO wa_worker;
GRANT INSERT ON wa.account_events TO wa_worker;
GRANT EXECUTE ON FUNCTION
    wa.status_rank(text),
    wa._apply_pending_statuses(uuid[], text[]),
    wa._apply_statuses(uuid, text, text[], text[], double precision[], text[], jsonb[]),
    wa._probe_plan_cache_mode(),
    wa.current_tenant_id()
TO wa_worker;

-- Embedded Signup with one-time states (wa.signup_states in sql/schema.sql, src/signup/state.rs). The host app
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
