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
    wa.retry_failed(uuid)
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
    wa.worker_status()
TO wa_admin;

-- ---------------------------------------------------------------------------------------------
-- Embedded Signup with one-time states (sql/signup.sql, src/signup/state.rs). The host app
-- mints a state for its tenant; the gateway (a wa_admin member) completes the signup with it.
GRANT EXECUTE ON FUNCTION wa.begin_signup(uuid, interval) TO wa_app, wa_admin;
GRANT EXECUTE ON FUNCTION wa.complete_signup(text, text, text, text) TO wa_admin;
GRANT SELECT ON wa.signup_states TO wa_admin;
