-- Scale-out on Citus (docs/SCALING.md): where each table of schema wa goes, and the function
-- that lays a database out that way. On a plain PostgreSQL nothing here changes anything.
--
-- The placement is decided here, once, for every table, because it cannot be revised later:
-- distributing a table the extension owns cannot be undone (undistribute_table refuses), and a
-- node added later gets the tables of the install script, which must already be shaped for it.
--   distributed  by tenant_id, colocated with wa.tenants: every key leads with tenant_id, and
--                every statement on the hot paths names the tenant, so it runs on one shard;
--   reference    small lookup tables read without a tenant (webhook routing, signup states,
--                external references), copied to every node; no foreign key to wa.tenants;
--   local        the coordinator's own tables: the app configuration, the worker's state and
--                the raw webhook log with its parked parts, which name no tenant.
-- Distributed tables are listed parents first (foreign keys between them need the parent
-- distributed already).
CREATE FUNCTION wa.citus_layout()
    RETURNS TABLE (relation regclass, placement text, step integer)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.relation::regclass, l.placement, l.step::integer
      FROM (VALUES
        ('wa.tenant_refs', 'reference', 1),
        ('wa.routes', 'reference', 2),
        ('wa.released_routes', 'reference', 3),
        ('wa.signup_states', 'reference', 4),
        ('wa.tenants', 'distributed', 10),
        ('wa.wabas', 'distributed', 11),
        ('wa.phone_numbers', 'distributed', 12),
        ('wa.credentials', 'distributed', 13),
        ('wa.contacts', 'distributed', 14),
        ('wa.conversations', 'distributed', 15),
        ('wa.messages', 'distributed', 16),
        ('wa.outbox', 'distributed', 17),
        ('wa.media', 'distributed', 18),
        ('wa.media_chunks', 'distributed', 19),
        ('wa.pending_statuses', 'distributed', 20),
        ('wa.templates', 'distributed', 21),
        ('wa.account_events', 'distributed', 22),
        ('wa.signups', 'distributed', 23),
        ('wa.app_config', 'local', 30),
        ('wa.worker_state', 'local', 31),
        ('wa.webhook_events', 'local', 32),
        ('wa.parked_parts', 'local', 33)
      ) AS l (relation, placement, step)
$$;

-- Lays the tables out as wa.citus_layout() says, on the coordinator of a Citus cluster (as a
-- superuser, once, after CREATE EXTENSION whatsapp_pg). Idempotent: tables already placed are
-- left alone, so it can be run again after an upgrade adds a table. Returns what it did, by
-- table. Without Citus it changes nothing and says so.
CREATE FUNCTION wa.distribute()
    RETURNS TABLE (relation regclass, placement text, done text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    r record;
    v_placed boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'wa.distribute() needs Citus'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'The citus extension is not installed in this database; nothing was changed.',
                  HINT = 'On a plain PostgreSQL the schema needs no distribution.';
    END IF;
    IF NOT (SELECT s.rolsuper FROM pg_catalog.pg_roles s WHERE s.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        RAISE EXCEPTION 'wa.distribute() must be run by a superuser' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Citus runs shard queries on the worker nodes as the statement's current role: inside the
    -- extension's functions wa_owner, in the background worker wa_worker. Both must be able to
    -- log in there (pg_hba.conf decides from where; docs/SCALING.md). Citus propagates this.
    ALTER ROLE wa_owner LOGIN;
    ALTER ROLE wa_worker LOGIN;
    -- SET LOCAL wa.tenant_id (and the functions' signed scope) reach the worker nodes only
    -- with this setting: the host application's sessions get it by default.
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET citus.propagate_set_commands = %L',
                              pg_catalog.current_database(), 'local');
    FOR r IN SELECT l.relation, l.placement FROM wa.citus_layout() l ORDER BY l.step LOOP
        relation := r.relation;
        placement := r.placement;
        IF r.placement OPERATOR(pg_catalog.=) 'local' THEN
            done := 'kept local';
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- pg_dist_partition exists only with Citus: read it dynamically.
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                                 WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1)'
           INTO v_placed USING r.relation;
        IF v_placed THEN
            done := 'already placed';
        ELSIF r.placement OPERATOR(pg_catalog.=) 'reference' THEN
            EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING r.relation;
            done := 'made a reference table';
        ELSE
            EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''tenant_id'', colocate_with => $2)'
              USING r.relation,
                    CASE WHEN r.relation OPERATOR(pg_catalog.=) 'wa.tenants'::regclass THEN 'none' ELSE 'wa.tenants' END;
            done := 'distributed by tenant_id';
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
