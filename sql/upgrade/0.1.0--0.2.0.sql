-- whatsapp_pg 0.1.0 → 0.2.0, the part written by hand: the tables brought to their 0.2.0 shape,
-- with their data kept. The build (scripts/upgrade-scripts.sh) appends everything of the 0.2.0
-- install script after its tables (functions, views, types, the new roles, policies, grants and
-- ownership, from sql/*.sql and the Rust functions), so that those are defined once; this part
-- drops the ones of 0.1.0 first. tests/upgrade checks the result against a fresh install.
-- New columns go at the end of their tables, where sql/schema.sql puts them too.

-- Policies, views, functions and standalone row types of 0.1.0: the appended part defines the
-- 0.2.0 ones. (wa.current_tenant_id() stays, defined with the tables: it is replaced below.)
-- Privileges on tables and sequences are granted again by sql/grants.sql.
DO $drop$
DECLARE
    o record;
    dropped integer;
    remaining integer;
    blocker text;
BEGIN
    FOR o IN
        SELECT p.polname, p.polrelid::pg_catalog.regclass AS rel
          FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.polrelid
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'wa'::pg_catalog.regnamespace
    LOOP
        EXECUTE pg_catalog.format('DROP POLICY %I ON %s', o.polname, o.rel);
    END LOOP;
    FOR o IN
        SELECT c.oid::pg_catalog.regclass AS rel FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'wa'::pg_catalog.regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'v'
    LOOP
        EXECUTE pg_catalog.format('DROP VIEW %s', o.rel);
    END LOOP;
    -- SQL-standard bodies depend on the functions they call: drop in rounds, each function
    -- once nothing depends on it any more. Never CASCADE: an object of the host app that uses
    -- a function of wa (a view, a function) makes the update fail and names it, instead of
    -- being dropped with it.
    LOOP
        dropped := 0;
        remaining := 0;
        FOR o IN
            SELECT p.oid::pg_catalog.regprocedure AS f FROM pg_catalog.pg_proc p
             WHERE p.pronamespace OPERATOR(pg_catalog.=) 'wa'::pg_catalog.regnamespace
               AND p.proname OPERATOR(pg_catalog.<>) 'current_tenant_id'
        LOOP
            BEGIN
                EXECUTE pg_catalog.format('DROP ROUTINE %s', o.f);
                dropped := dropped OPERATOR(pg_catalog.+) 1;
            EXCEPTION WHEN dependent_objects_still_exist THEN
                remaining := remaining OPERATOR(pg_catalog.+) 1;
                GET STACKED DIAGNOSTICS blocker = PG_EXCEPTION_DETAIL;
            END;
        END LOOP;
        EXIT WHEN remaining OPERATOR(pg_catalog.=) 0;
        IF dropped OPERATOR(pg_catalog.=) 0 THEN
            RAISE EXCEPTION 'objects outside the extension use functions of schema wa'
                USING ERRCODE = 'dependent_objects_still_exist', DETAIL = blocker,
                      HINT = 'Drop them before ALTER EXTENSION whatsapp_pg UPDATE and create them again after.';
        END IF;
    END LOOP;
    FOR o IN
        SELECT t.oid::pg_catalog.regtype AS t
          FROM pg_catalog.pg_type t JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.typrelid
         WHERE t.typnamespace OPERATOR(pg_catalog.=) 'wa'::pg_catalog.regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'c'
    LOOP
        EXECUTE pg_catalog.format('DROP TYPE %s', o.t);
    END LOOP;
END
$drop$;
-- Without a SET clause, so that the planner inlines it into the row-level security policies,
-- which no longer wrap it in a subquery (Citus refuses those). Its body is bound when created.
CREATE OR REPLACE FUNCTION wa.current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN NULLIF(pg_catalog.current_setting('wa.tenant_id', true), '')::pg_catalog.uuid;
REVOKE ALL ON ALL TABLES IN SCHEMA wa FROM wa_admin, wa_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA wa FROM wa_admin, wa_app;

-- The restore guard: the configuration was made in this database, so sending goes on here.
ALTER TABLE wa.app_config ADD COLUMN database_name text DEFAULT pg_catalog.current_database();

-- Every tenant gets its own random events channel (the default is evaluated row by row).
ALTER TABLE wa.tenants
    ADD COLUMN sending_paused_at timestamptz,
    ADD COLUMN events_channel text NOT NULL
        DEFAULT ('wa_' OPERATOR(pg_catalog.||)
                 pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''));
CREATE INDEX tenants_sending_paused_idx ON wa.tenants (tenant_id) WHERE sending_paused_at IS NOT NULL;

-- Shaped for Citus (sql/citus.sql): the external references' uniqueness moves to a table of its
-- own, and the tables that become reference tables lose their foreign keys to wa.tenants
-- (wa.delete_tenant empties them).
CREATE TABLE wa.tenant_refs (
    external_ref         text PRIMARY KEY CHECK (external_ref <> ''),
    tenant_id            uuid NOT NULL UNIQUE
);
INSERT INTO wa.tenant_refs (external_ref, tenant_id)
SELECT t.external_ref, t.tenant_id FROM wa.tenants t WHERE t.external_ref IS NOT NULL;
ALTER TABLE wa.tenants DROP CONSTRAINT tenants_external_ref_key;
ALTER TABLE wa.routes DROP CONSTRAINT routes_tenant_id_fkey;

CREATE TABLE wa.released_routes (
    kind                 text NOT NULL CHECK (kind IN ('waba', 'phone_number')),
    external_id          text NOT NULL,
    tenant_id            uuid NOT NULL,
    released_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (kind, external_id, tenant_id)
);
CREATE INDEX released_routes_tenant_idx ON wa.released_routes (tenant_id);

ALTER TABLE wa.credentials
    DROP CONSTRAINT credentials_kind_check,
    ADD CONSTRAINT credentials_kind_check CHECK (kind IN
        ('business_token', 'registration_pin', 'signup_token', 'signup_pin'));

ALTER TABLE wa.messages ADD COLUMN extra_wamids text[];

-- Rows leased by a 0.1.0 worker have no claim id: they become due when their lease ends.
ALTER TABLE wa.outbox
    ADD COLUMN claim_id bigint,
    ADD COLUMN outcome_unknown_at timestamptz,
    ADD COLUMN priority smallint NOT NULL DEFAULT 4 CHECK (priority BETWEEN 0 AND 9);
-- Claims are per number now (src/worker/sql.rs, CLAIM).
DROP INDEX wa.outbox_due_idx;
CREATE INDEX outbox_number_due_idx ON wa.outbox (phone_number_id, priority, next_attempt_at, outbox_id)
    WHERE next_attempt_at < 'infinity';
CREATE INDEX outbox_message_idx ON wa.outbox (tenant_id, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX outbox_recipient_idx ON wa.outbox (tenant_id, phone_number_id, recipient, outbox_id)
    WHERE kind = 'message' AND failed_at IS NULL;

-- Large downloads are stored in chunks (wa.media_chunks).
ALTER TABLE wa.media ADD COLUMN chunks integer NOT NULL DEFAULT 0 CHECK (chunks >= 0);
CREATE INDEX media_stored_idx ON wa.media (downloaded_at) WHERE content IS NOT NULL OR chunks > 0;
CREATE TABLE wa.media_chunks (
    tenant_id            uuid NOT NULL,
    media_id             text NOT NULL,
    seq                  integer NOT NULL CHECK (seq >= 0),
    data                 bytea NOT NULL,
    PRIMARY KEY (tenant_id, media_id, seq),
    FOREIGN KEY (tenant_id, media_id) REFERENCES wa.media ON DELETE CASCADE
);

ALTER TABLE wa.worker_state
    ADD COLUMN paused jsonb,
    ADD COLUMN unknown bigint NOT NULL DEFAULT 0,
    ADD COLUMN duplicates bigint NOT NULL DEFAULT 0,
    ADD COLUMN unrecorded integer NOT NULL DEFAULT 0,
    ADD COLUMN claims bigint NOT NULL DEFAULT 0,
    ADD COLUMN claim_seconds double precision NOT NULL DEFAULT 0,
    ADD COLUMN write_backs bigint NOT NULL DEFAULT 0,
    ADD COLUMN write_back_seconds double precision NOT NULL DEFAULT 0;

ALTER TABLE wa.webhook_events
    ADD COLUMN pruned_at timestamptz,
    DROP CONSTRAINT webhook_events_check,
    ADD CONSTRAINT webhook_events_check
        CHECK (payload IS NOT NULL OR raw_body IS NOT NULL OR pruned_at IS NOT NULL);
CREATE INDEX webhook_events_unpruned_idx ON wa.webhook_events (received_at) WHERE pruned_at IS NULL;

CREATE TABLE wa.parked_parts (
    kind                 text NOT NULL CHECK (kind IN ('waba', 'phone_number')),
    external_id          text NOT NULL,
    webhook_event_id     bigint NOT NULL REFERENCES wa.webhook_events ON DELETE CASCADE,
    parked_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at           timestamptz NOT NULL DEFAULT pg_catalog.now() OPERATOR(pg_catalog.+) interval '7 days',
    applied_at           timestamptz,
    PRIMARY KEY (kind, external_id, webhook_event_id)
);

ALTER TABLE wa.signups
    ADD COLUMN signup_attempt_id uuid,
    ADD COLUMN keeps_connection boolean NOT NULL DEFAULT false;

CREATE TABLE wa.signup_states (
    tenant_id            uuid NOT NULL,
    state_sha256         text NOT NULL CHECK (state_sha256 ~ '^[0-9a-f]{64}$'),
    signup_attempt_id    uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at           timestamptz NOT NULL,
    consumed_at          timestamptz,
    PRIMARY KEY (tenant_id, state_sha256),
    CHECK (expires_at > created_at)
);
-- wa.complete_signup finds a state by its hash alone (the browser does not name the tenant).
CREATE UNIQUE INDEX signup_states_sha256_idx ON wa.signup_states (state_sha256);

SELECT pg_catalog.pg_extension_config_dump('wa.tenant_refs', '');
SELECT pg_catalog.pg_extension_config_dump('wa.released_routes', '');
SELECT pg_catalog.pg_extension_config_dump('wa.parked_parts', '');
SELECT pg_catalog.pg_extension_config_dump('wa.signup_states', '');
SELECT pg_catalog.pg_extension_config_dump('wa.media_chunks', '');
