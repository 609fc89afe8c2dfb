-- Embedded Signup: one-time signup states and what a re-signup keeps aside until it succeeds.
-- (wa.begin_signup and wa.complete_signup are Rust functions, src/signup/state.rs.)

-- A signup state authorises exactly one wa.complete_signup call for one tenant. The host app
-- mints it with wa.begin_signup(tenant) after authenticating its user and hands it to the
-- browser; only its SHA-256 is stored, so the table never holds a usable state.
CREATE TABLE wa.signup_states (
    tenant_id            uuid NOT NULL REFERENCES wa.tenants ON DELETE CASCADE,
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
ALTER TABLE wa.signup_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE wa.signup_states FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON wa.signup_states FOR SELECT TO wa_app
    USING (tenant_id OPERATOR(pg_catalog.=) wa.current_tenant_id());
CREATE POLICY admin_all ON wa.signup_states TO wa_admin USING (true) WITH CHECK (true);
-- Privileges are in grants.sql: wa_admin reads it, wa_app has no access at all (it mints
-- states through wa.begin_signup only).
SELECT pg_catalog.pg_extension_config_dump('wa.signup_states', '');

-- Which wa.complete_signup call (signup state) the signup's progress belongs to, and whether
-- it is a re-signup of a tenant that was connected when it started: then nothing of the
-- current connection (token, WABA, numbers, routes, state) changes until every step succeeded.
ALTER TABLE wa.signups
    ADD COLUMN signup_attempt_id uuid,
    ADD COLUMN keeps_connection boolean NOT NULL DEFAULT false;

-- A re-signup keeps the new token and registration PIN aside ('signup_token', 'signup_pin';
-- the envelope's associated data names the kind, so they cannot be mistaken for the live
-- ones) and promotes them when the signup completes.
ALTER TABLE wa.credentials
    DROP CONSTRAINT credentials_kind_check,
    ADD CONSTRAINT credentials_kind_check CHECK (kind IN
        ('business_token', 'registration_pin', 'signup_token', 'signup_pin'));
