-- whatsapp_pg schema: tables, indexes and dump configuration (roles, row-level security and
-- privileges are in sql/grants.sql).
--
-- Conventions: tables plural; every tenant-owned table starts with tenant_id and keeps it in its
-- primary key and unique constraints (it is the distribution key if a deployment outgrows one
-- machine); enumerations are text with a CHECK listed once here; times are *_at timestamptz.

-- The background worker serves one database (wa.database); creating the extension elsewhere
-- is almost always a mistake, as in pg_cron. (Test clusters set wa.allow_any_database.)
DO $database$
BEGIN
    IF current_setting('wa.database', true) IS NOT NULL
       AND current_database() OPERATOR(pg_catalog.<>) current_setting('wa.database', true)
       AND COALESCE(current_setting('wa.allow_any_database', true), 'off') NOT IN ('on', 'true', '1') THEN
        RAISE EXCEPTION 'can only create extension in database %', current_setting('wa.database', true)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'whatsapp_pg''s background worker serves the database named by wa.database.',
                  HINT = format('Add wa.database = ''%s'' to postgresql.conf and restart, or create the extension in %s.',
                                current_database(), current_setting('wa.database', true));
    END IF;
END
$database$;

REVOKE ALL ON SCHEMA wa FROM PUBLIC;

-- The tenant a session acts for: SET wa.tenant_id = '<uuid>' (or SET LOCAL in a transaction).
-- NULL when unset or empty. An ill-formed value is an error, never "no tenant". No SET clause,
-- so that the planner inlines it into the row-level security policies (its body is bound when
-- created, whatever the caller's search_path).
CREATE FUNCTION wa.current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN NULLIF(pg_catalog.current_setting('wa.tenant_id', true), '')::pg_catalog.uuid;

-- ---------------------------------------------------------------------------------------------
-- The Technology Provider's Meta app (one row). Secrets are AES-256-GCM envelopes.
CREATE TABLE wa.app_config (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    app_id               text NOT NULL CHECK (app_id ~ '^[0-9]{1,32}$'),
    app_secret_enc       bytea NOT NULL,
    verify_token_enc     bytea NOT NULL,
    config_id            text NOT NULL CHECK (config_id ~ '^[0-9]{1,32}$'),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The database this configuration was made in. A copy restored under another name (a
    -- staging copy of production) sends nothing until wa.resume_sending() accepts it.
    database_name        text DEFAULT pg_catalog.current_database()
);

-- ---------------------------------------------------------------------------------------------
CREATE TABLE wa.tenants (
    tenant_id            uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name                 text NOT NULL CHECK (pg_catalog.btrim(name) <> '' AND pg_catalog.length(name) <= 200),
    -- The host application's own id of the tenant, unique across tenants (wa.tenant_refs).
    external_ref         text CHECK (external_ref <> ''),
    state                text NOT NULL DEFAULT 'not_connected' CHECK (state IN
                            ('not_connected', 'pending', 'connected', 'action_required',
                             'disconnected', 'error')),
    last_error           jsonb,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Set by wa.pause_sending(tenant): nothing is sent for the tenant until it is resumed.
    sending_paused_at    timestamptz,
    -- The LISTEN channel of the tenant's notifications: unguessable (122 random bits, so
    -- unique without a constraint that would span shards), visible only to the tenant itself
    -- and to wa_admin, from wa.events_channel(tenant).
    events_channel       text NOT NULL
                            DEFAULT ('wa_' OPERATOR(pg_catalog.||)
                                     pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''))
);

-- Host applications' references of tenants, unique across tenants. Kept apart from wa.tenants
-- so that wa.tenants can be distributed by tenant_id (docs/SCALING.md): a uniqueness that
-- does not include the distribution key lives in a table of its own, a reference table when
-- sharded. Written by wa.create_tenant and wa.delete_tenant only.
CREATE TABLE wa.tenant_refs (
    external_ref         text PRIMARY KEY CHECK (external_ref <> ''),
    tenant_id            uuid NOT NULL UNIQUE
);

-- WhatsApp Business Accounts connected by a tenant.
CREATE TABLE wa.wabas (
    tenant_id            uuid NOT NULL REFERENCES wa.tenants ON DELETE CASCADE,
    waba_id              text NOT NULL CHECK (waba_id ~ '^[0-9]{1,32}$'),
    name                 text,
    currency             text,
    timezone_id          text,
    subscribed_at        timestamptz,
    status               text NOT NULL DEFAULT 'active' CHECK (status IN
                            ('active', 'restricted', 'disabled', 'removed')),
    restriction          jsonb,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, waba_id)
);

CREATE TABLE wa.phone_numbers (
    tenant_id            uuid NOT NULL,
    phone_number_id      text NOT NULL CHECK (phone_number_id ~ '^[0-9]{1,32}$'),
    waba_id              text NOT NULL,
    display_phone_number text,
    verified_name        text,
    quality_rating       text CHECK (quality_rating IN ('GREEN', 'YELLOW', 'RED', 'UNKNOWN', 'NA')),
    messaging_limit      text,
    throughput_level     text,
    rate_limit_per_sec   integer CHECK (rate_limit_per_sec > 0),
    name_status          text,
    code_verification_status text,
    registration_status  text NOT NULL DEFAULT 'unregistered' CHECK (registration_status IN
                            ('unregistered', 'registered', 'failed', 'deregistered')),
    status               text NOT NULL DEFAULT 'active' CHECK (status IN
                            ('active', 'flagged', 'restricted', 'disabled', 'removed')),
    last_error           jsonb,
    registered_at        timestamptz,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, phone_number_id),
    FOREIGN KEY (tenant_id, waba_id) REFERENCES wa.wabas ON DELETE CASCADE
);

-- Webhooks name a WABA or a phone number, never a tenant: this is how they are routed. A WABA or
-- number belongs to at most one tenant. (A small lookup table, a reference table when sharded:
-- hence no foreign key to wa.tenants, whose rows wa.delete_tenant removes with the routes.)
CREATE TABLE wa.routes (
    kind                 text NOT NULL CHECK (kind IN ('waba', 'phone_number')),
    external_id          text NOT NULL,
    tenant_id            uuid NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (kind, external_id)
);
CREATE INDEX routes_tenant_idx ON wa.routes (tenant_id);

-- Routes a tenant had before wa.disconnect_tenant released them (the WABA or number may since
-- belong to another tenant). Late status webhooks for messages the former tenant sent still
-- find those messages through here. (A reference table when sharded, like wa.routes.)
CREATE TABLE wa.released_routes (
    kind                 text NOT NULL CHECK (kind IN ('waba', 'phone_number')),
    external_id          text NOT NULL,
    tenant_id            uuid NOT NULL,
    released_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (kind, external_id, tenant_id)
);
CREATE INDEX released_routes_tenant_idx ON wa.released_routes (tenant_id);

-- Encrypted secrets of a tenant. The envelope's associated data is "<tenant_id>/<kind>", so a
-- ciphertext copied to another row or tenant does not decrypt. wa_app has no access at all.
CREATE TABLE wa.credentials (
    tenant_id            uuid NOT NULL REFERENCES wa.tenants ON DELETE CASCADE,
    -- A re-signup keeps the new token and registration PIN aside ('signup_token', 'signup_pin';
    -- the envelope's associated data names the kind, so they cannot be mistaken for the live
    -- ones) and promotes them when the signup completes.
    kind                 text NOT NULL CHECK (kind IN
                            ('business_token', 'registration_pin', 'signup_token', 'signup_pin')),
    ciphertext           bytea NOT NULL,
    key_id               text NOT NULL,
    source               text NOT NULL CHECK (source IN ('embedded_signup', 'manual')),
    expires_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, kind)
);

-- ---------------------------------------------------------------------------------------------
-- Customers. Meta identifies them by phone number (wa_id) and/or business-scoped user id
-- (user_id, "BSUID"); either may be missing, never both.
CREATE TABLE wa.contacts (
    tenant_id            uuid NOT NULL REFERENCES wa.tenants ON DELETE CASCADE,
    contact_id           uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    wa_id                text CHECK (wa_id ~ '^[0-9]{5,20}$'),
    user_id              text CHECK (user_id ~ '^[A-Z]{2}\.[0-9A-Za-z]{5,64}$'),
    username             text,
    profile_name         text,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, contact_id),
    UNIQUE (tenant_id, wa_id),
    UNIQUE (tenant_id, user_id),
    CHECK (wa_id IS NOT NULL OR user_id IS NOT NULL)
);

-- One conversation per (business number, customer); closed conversations reopen on the next
-- message. window_expires_at is the end of the 24-hour customer service window.
CREATE TABLE wa.conversations (
    tenant_id            uuid NOT NULL,
    conversation_id      uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    phone_number_id      text NOT NULL,
    contact_id           uuid NOT NULL,
    status               text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    last_message_at      timestamptz,
    last_message_preview text,
    last_inbound_at      timestamptz,
    window_expires_at    timestamptz,
    unread_count         integer NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    closed_at            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, conversation_id),
    UNIQUE (tenant_id, phone_number_id, contact_id),
    FOREIGN KEY (tenant_id, phone_number_id) REFERENCES wa.phone_numbers ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, contact_id) REFERENCES wa.contacts ON DELETE CASCADE
);
-- wa.conversations(tenant, status, before): newest first per tenant.
CREATE INDEX conversations_recent_idx
    ON wa.conversations (tenant_id, last_message_at DESC NULLS LAST, conversation_id);
-- wa.messages(conversation_id) is called with the conversation id alone.
CREATE INDEX conversations_id_idx ON wa.conversations (conversation_id);

-- Every message in and out. Statuses only move forward (see wa.status_rank()).
CREATE TABLE wa.messages (
    tenant_id            uuid NOT NULL,
    message_id           uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    conversation_id      uuid NOT NULL,
    direction            text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    type                 text NOT NULL CHECK (type ~ '^[a-z_]{1,40}$'),
    content              jsonb NOT NULL,
    status               text NOT NULL CHECK (status IN
                            ('queued', 'sent', 'delivered', 'read', 'played', 'failed',
                             'received', 'deleted')),
    wamid                text,
    idempotency_key      text CHECK (pg_catalog.length(idempotency_key) BETWEEN 1 AND 200),
    context_wamid        text,
    error                jsonb,
    pricing              jsonb,
    meta_conversation    jsonb,
    media                jsonb,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at              timestamptz,
    delivered_at         timestamptz,
    read_at              timestamptz,
    played_at            timestamptz,
    failed_at            timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Further wamids Meta gave the same message (it was sent twice: an unknown outcome
    -- retried, or in flight at a crash); their statuses apply to this row too.
    extra_wamids         text[],
    PRIMARY KEY (tenant_id, message_id),
    UNIQUE (tenant_id, wamid),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES wa.conversations ON DELETE CASCADE,
    CHECK (direction = 'outbound' OR wamid IS NOT NULL)
);
-- Only messages sent with an idempotency key are in it (inbound ones never have one).
CREATE UNIQUE INDEX messages_idempotency_key_idx
    ON wa.messages (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_conversation_idx
    ON wa.messages (conversation_id, created_at DESC, message_id);

-- The outbox the background worker drains. Logged (a crash loses nothing); a claim is a lease
-- (lease_until) so a worker that died mid-request has its rows picked up again.
CREATE TABLE wa.outbox (
    tenant_id            uuid NOT NULL,
    outbox_id            bigint GENERATED ALWAYS AS IDENTITY,
    kind                 text NOT NULL CHECK (kind IN ('message', 'mark_read', 'media_download')),
    message_id           uuid,
    phone_number_id      text NOT NULL,
    recipient            text,
    payload              text NOT NULL,
    attempts             integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Due time; a claim moves it forward by the lease (a crashed claim becomes due again);
    -- 'infinity' while the tenant's queue is held (token revoked) or after a permanent failure.
    next_attempt_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    failed_at            timestamptz,
    last_error           jsonb,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The claim that leased the row (NULL when none): every write-back is conditional on it,
    -- so a stale claim never overwrites a newer one or a hold.
    claim_id             bigint,
    -- Set when a send's outcome was unknown (a timeout after the request went out, a worker
    -- that died): the row waits for Meta's status webhook before it is sent again.
    outcome_unknown_at   timestamptz,
    -- 0 (most urgent) to 9: a number's due rows go most urgent first (see wa.send_message).
    priority             smallint NOT NULL DEFAULT 4 CHECK (priority BETWEEN 0 AND 9),
    PRIMARY KEY (tenant_id, outbox_id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES wa.messages ON DELETE CASCADE
);
CREATE INDEX tenants_sending_paused_idx ON wa.tenants (tenant_id) WHERE sending_paused_at IS NOT NULL;
-- The worker's claims: the numbers with live rows (a skip scan), then each number's due rows,
-- most urgent first, then oldest. Held and failed rows ('infinity') are not in it.
CREATE INDEX outbox_number_due_idx ON wa.outbox (phone_number_id, priority, next_attempt_at, outbox_id)
    WHERE next_attempt_at < 'infinity';
-- Messages to one customer from one number go out in the order they were enqueued: a claim
-- looks for an earlier message still waiting.
-- A status webhook settles a message the worker has not recorded yet (its outcome unknown).
CREATE INDEX outbox_message_idx ON wa.outbox (tenant_id, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX outbox_recipient_idx ON wa.outbox (tenant_id, phone_number_id, recipient, outbox_id)
    WHERE kind = 'message' AND failed_at IS NULL;

-- Inbound media downloaded by the worker (Meta's media URLs expire within minutes).
CREATE TABLE wa.media (
    tenant_id            uuid NOT NULL REFERENCES wa.tenants ON DELETE CASCADE,
    media_id             text NOT NULL,
    mime_type            text,
    sha256               text,
    size_bytes           bigint,
    -- The bytes of a file of up to one chunk (1 MiB); NULL for a larger one (in
    -- wa.media_chunks) and once wa.prune removed them. wa.media_content() reads either.
    content              bytea,
    downloaded_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- How many rows of wa.media_chunks hold the file (0: none).
    chunks               integer NOT NULL DEFAULT 0 CHECK (chunks >= 0),
    PRIMARY KEY (tenant_id, media_id)
);
-- What wa.prune looks at: media whose bytes are still stored.
CREATE INDEX media_stored_idx ON wa.media (downloaded_at) WHERE content IS NOT NULL OR chunks > 0;

-- A file larger than one chunk, in chunks of 1 MiB: the worker streams a download to disk
-- and writes it here a chunk at a time, so that no process holds a whole video in memory.
CREATE TABLE wa.media_chunks (
    tenant_id            uuid NOT NULL,
    media_id             text NOT NULL,
    seq                  integer NOT NULL CHECK (seq >= 0),
    data                 bytea NOT NULL,
    PRIMARY KEY (tenant_id, media_id, seq),
    FOREIGN KEY (tenant_id, media_id) REFERENCES wa.media ON DELETE CASCADE
);

-- What the background worker last reported about itself (one row, written about once a
-- second while it works): counters, last error, per-number rate-limit state.
CREATE TABLE wa.worker_state (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pid                  integer,
    started_at           timestamptz,
    heartbeat_at         timestamptz,
    sent                 bigint NOT NULL DEFAULT 0,
    failed               bigint NOT NULL DEFAULT 0,
    retried              bigint NOT NULL DEFAULT 0,
    media_downloaded     bigint NOT NULL DEFAULT 0,
    last_error           jsonb,
    last_error_at        timestamptz,
    rate_limits          jsonb NOT NULL DEFAULT '{}',
    -- What sending is held back for, by the operator's side (a key file problem), or NULL.
    paused               jsonb,
    unknown              bigint NOT NULL DEFAULT 0,
    duplicates           bigint NOT NULL DEFAULT 0,
    unrecorded           integer NOT NULL DEFAULT 0,
    -- Claims and write-backs since the worker started, and their total duration (seconds).
    claims               bigint NOT NULL DEFAULT 0,
    claim_seconds        double precision NOT NULL DEFAULT 0,
    write_backs          bigint NOT NULL DEFAULT 0,
    write_back_seconds   double precision NOT NULL DEFAULT 0
);

-- Statuses that arrived before the message they describe was known; applied when it is.
CREATE TABLE wa.pending_statuses (
    tenant_id            uuid NOT NULL REFERENCES wa.tenants ON DELETE CASCADE,
    wamid                text NOT NULL,
    status               text NOT NULL,
    status_payload       jsonb NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, wamid, status)
);

-- Message templates of a WABA, kept current by template webhooks.
CREATE TABLE wa.templates (
    tenant_id            uuid NOT NULL,
    waba_id              text NOT NULL,
    template_id          text NOT NULL,
    name                 text NOT NULL,
    language             text NOT NULL,
    category             text,
    status               text NOT NULL DEFAULT 'PENDING',
    quality_score        text,
    components           jsonb,
    rejected_reason      text,
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, template_id),
    UNIQUE (tenant_id, waba_id, name, language),
    FOREIGN KEY (tenant_id, waba_id) REFERENCES wa.wabas ON DELETE CASCADE
);

-- Connection history: onboarding steps, account_update events, disconnects. Append-only.
CREATE TABLE wa.account_events (
    tenant_id            uuid NOT NULL REFERENCES wa.tenants ON DELETE CASCADE,
    account_event_id     bigint GENERATED ALWAYS AS IDENTITY,
    kind                 text NOT NULL CHECK (kind ~ '^[a-z_.]{1,60}$'),
    detail               jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, account_event_id)
);

-- Every webhook delivery, stored before it is processed. Not tenant-owned (one delivery can
-- span WABAs of several tenants); only wa_admin reads it.
CREATE TABLE wa.webhook_events (
    webhook_event_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    signature_verified   boolean NOT NULL,
    payload              jsonb,
    raw_body             text,
    status               text NOT NULL DEFAULT 'received' CHECK (status IN
                            ('received', 'processed', 'partial', 'rejected', 'failed')),
    summary              jsonb,
    errors               jsonb,
    processed_at         timestamptz,
    -- When wa.prune removed the payload and raw body (the summary, status and errors stay).
    pruned_at            timestamptz,
    CHECK (payload IS NOT NULL OR raw_body IS NOT NULL OR pruned_at IS NOT NULL)
);
CREATE INDEX webhook_events_received_idx ON wa.webhook_events (received_at);
-- What wa.prune looks at: deliveries not pruned yet, oldest first.
CREATE INDEX webhook_events_unpruned_idx ON wa.webhook_events (received_at) WHERE pruned_at IS NULL;

-- Deliveries that named a WABA or number no tenant was connected to yet (Meta starts sending
-- right after the subscription, before the connection has committed): kept, and applied again
-- when that WABA or number is connected; forgotten after seven days, the longest Meta retries.
CREATE TABLE wa.parked_parts (
    kind                 text NOT NULL CHECK (kind IN ('waba', 'phone_number')),
    external_id          text NOT NULL,
    webhook_event_id     bigint NOT NULL REFERENCES wa.webhook_events ON DELETE CASCADE,
    parked_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at           timestamptz NOT NULL DEFAULT pg_catalog.now() OPERATOR(pg_catalog.+) interval '7 days',
    applied_at           timestamptz,
    PRIMARY KEY (kind, external_id, webhook_event_id)
);

-- Embedded Signup progress per tenant: each step's completion time, so that calling
-- wa.exchange_code again resumes at the step that failed instead of redoing the others.
CREATE TABLE wa.signups (
    tenant_id            uuid PRIMARY KEY REFERENCES wa.tenants ON DELETE CASCADE,
    code_sha256          text,
    waba_id              text,
    phone_number_id      text,
    token_at             timestamptz,
    access_checked_at    timestamptz,
    subscribed_at        timestamptz,
    registered_at        timestamptz,
    info_at              timestamptz,
    completed_at         timestamptz,
    last_error           jsonb,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Which wa.complete_signup call (signup state) the signup's progress belongs to, and
    -- whether it is a re-signup of a tenant that was connected when it started: then nothing
    -- of the current connection (token, WABA, numbers, routes, state) changes until every step
    -- succeeded.
    signup_attempt_id    uuid,
    keeps_connection     boolean NOT NULL DEFAULT false
);
-- A signup state authorises exactly one wa.complete_signup call for one tenant. The host app
-- mints it with wa.begin_signup(tenant) after authenticating its user and hands it to the
-- browser; only its SHA-256 is stored, so the table never holds a usable state.
CREATE TABLE wa.signup_states (
    -- No foreign key: a reference table when sharded (the gateway finds a state by its hash
    -- alone, whatever the tenant); wa.delete_tenant removes a tenant's states.
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

-- pg_dump keeps the data of extension tables only when asked to.
SELECT pg_catalog.pg_extension_config_dump('wa.app_config', '');
SELECT pg_catalog.pg_extension_config_dump('wa.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('wa.tenant_refs', '');
SELECT pg_catalog.pg_extension_config_dump('wa.wabas', '');
SELECT pg_catalog.pg_extension_config_dump('wa.phone_numbers', '');
SELECT pg_catalog.pg_extension_config_dump('wa.routes', '');
SELECT pg_catalog.pg_extension_config_dump('wa.released_routes', '');
SELECT pg_catalog.pg_extension_config_dump('wa.credentials', '');
SELECT pg_catalog.pg_extension_config_dump('wa.contacts', '');
SELECT pg_catalog.pg_extension_config_dump('wa.conversations', '');
SELECT pg_catalog.pg_extension_config_dump('wa.messages', '');
SELECT pg_catalog.pg_extension_config_dump('wa.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('wa.pending_statuses', '');
SELECT pg_catalog.pg_extension_config_dump('wa.templates', '');
SELECT pg_catalog.pg_extension_config_dump('wa.account_events', '');
SELECT pg_catalog.pg_extension_config_dump('wa.webhook_events', '');
SELECT pg_catalog.pg_extension_config_dump('wa.parked_parts', '');
SELECT pg_catalog.pg_extension_config_dump('wa.media', '');
SELECT pg_catalog.pg_extension_config_dump('wa.media_chunks', '');
SELECT pg_catalog.pg_extension_config_dump('wa.outbox_outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wa.account_events_account_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wa.webhook_events_webhook_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wa.signups', '');
SELECT pg_catalog.pg_extension_config_dump('wa.signup_states', '');
