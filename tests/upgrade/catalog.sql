-- Everything the whatsapp_pg extension puts into a database and its cluster, one line per
-- fact, sorted, with no OIDs: run in a database upgraded with ALTER EXTENSION … UPDATE and in
-- a fresh install of the same version (of another cluster); the two outputs must be equal.
-- Columns are compared by position too (an upgrade that appends a column a fresh install puts
-- elsewhere changes SELECT * and the row type), constraints, indexes and triggers by their
-- definitions, functions by pg_get_functiondef plus owner and ACL.
WITH ext AS (
    SELECT e.* FROM pg_catalog.pg_extension e WHERE e.extname = 'whatsapp_pg'
), rels AS (
    SELECT c.* FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'wa'::pg_catalog.regnamespace
), acl AS (
    -- ACLs sorted item by item (their order in the array depends on the order of the GRANTs).
    SELECT a.relid, pg_catalog.array_to_string(pg_catalog.array_agg(a.item::text ORDER BY a.item::text), ' ') AS items
      FROM (SELECT c.oid AS relid, pg_catalog.unnest(c.relacl) AS item FROM rels c) a
     GROUP BY a.relid
), facts(fact) AS (
    SELECT pg_catalog.format('extension version=%s relocatable=%s schema=%s', extversion,
                             extrelocatable, extnamespace::pg_catalog.regnamespace)
      FROM ext
    UNION ALL
    -- pg_extension_config_dump: which tables pg_dump dumps, with which filter.
    SELECT pg_catalog.format('config_dump %s %s', c.cfg::pg_catalog.regclass, c.cond)
      FROM ext, LATERAL ROWS FROM (pg_catalog.unnest(ext.extconfig), pg_catalog.unnest(ext.extcondition)) AS c(cfg, cond)
    UNION ALL
    -- Membership: every object that belongs to the extension.
    SELECT pg_catalog.format('member %s %s', o.type, o.identity)
      FROM ext
      JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                 AND d.refobjid = ext.oid AND d.deptype = 'e'
      , LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) o
    UNION ALL
    SELECT pg_catalog.format('role %s super=%s inherit=%s createrole=%s createdb=%s login=%s replication=%s bypassrls=%s connlimit=%s',
                             r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb,
                             r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit)
      FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'wa\_%'
    UNION ALL
    SELECT pg_catalog.format('role_member %s in %s admin=%s', m.member::pg_catalog.regrole,
                             m.roleid::pg_catalog.regrole, m.admin_option)
      FROM pg_catalog.pg_auth_members m
     WHERE m.roleid::pg_catalog.regrole::text LIKE 'wa\_%'
        OR m.member::pg_catalog.regrole::text LIKE 'wa\_%'
    UNION ALL
    SELECT pg_catalog.format('schema %s owner=%s acl=%s', n.nspname, n.nspowner::pg_catalog.regrole,
                             (SELECT pg_catalog.array_agg(i::text ORDER BY i::text) FROM pg_catalog.unnest(n.nspacl) i))
      FROM pg_catalog.pg_namespace n WHERE n.nspname = 'wa'
    UNION ALL
    SELECT pg_catalog.format('relation %s kind=%s owner=%s persistence=%s rls=%s force_rls=%s options=%s acl=%s',
                             c.relname, c.relkind, c.relowner::pg_catalog.regrole, c.relpersistence,
                             c.relrowsecurity, c.relforcerowsecurity, c.reloptions, a.items)
      FROM rels c LEFT JOIN acl a ON a.relid = c.oid
    UNION ALL
    SELECT pg_catalog.format('column %s #%s %s %s notnull=%s default=%s identity=%s generated=%s collation=%s acl=%s',
                             c.relname,
                             pg_catalog.row_number() OVER (PARTITION BY c.oid ORDER BY at.attnum),
                             at.attname, pg_catalog.format_type(at.atttypid, at.atttypmod), at.attnotnull,
                             pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), at.attidentity, at.attgenerated,
                             at.attcollation::pg_catalog.regcollation, at.attacl)
      FROM rels c
      JOIN pg_catalog.pg_attribute at ON at.attrelid = c.oid AND at.attnum > 0 AND NOT at.attisdropped
      LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = at.attnum
    UNION ALL
    SELECT pg_catalog.format('constraint %s %s %s', c.relname, k.conname, pg_catalog.pg_get_constraintdef(k.oid))
      FROM rels c JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid
    UNION ALL
    SELECT pg_catalog.format('constraint type %s %s %s', t.typname, k.conname, pg_catalog.pg_get_constraintdef(k.oid))
      FROM pg_catalog.pg_type t JOIN pg_catalog.pg_constraint k ON k.contypid = t.oid
     WHERE t.typnamespace = 'wa'::pg_catalog.regnamespace
    UNION ALL
    SELECT pg_catalog.format('index %s', pg_catalog.pg_get_indexdef(i.indexrelid))
      FROM rels c JOIN pg_catalog.pg_index i ON i.indrelid = c.oid
    UNION ALL
    SELECT pg_catalog.format('trigger %s enabled=%s', pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled)
      FROM rels c JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT pg_catalog.format('policy %s %s permissive=%s cmd=%s roles=%s using=%s check=%s',
                             p.tablename, p.policyname, p.permissive, p.cmd, p.roles, p.qual, p.with_check)
      FROM pg_catalog.pg_policies p WHERE p.schemaname = 'wa'
    UNION ALL
    SELECT pg_catalog.format('view %s %s', c.relname, pg_catalog.pg_get_viewdef(c.oid))
      FROM rels c WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT pg_catalog.format('sequence %s %s %s %s %s %s %s', c.relname, s.seqtypid::pg_catalog.regtype,
                             s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcycle)
      FROM rels c JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
    UNION ALL
    SELECT pg_catalog.format('type %s type=%s owner=%s labels=%s attributes=%s acl=%s', t.typname, t.typtype,
                             t.typowner::pg_catalog.regrole,
                             (SELECT pg_catalog.array_agg(e.enumlabel ORDER BY e.enumsortorder)
                                FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
                             (SELECT pg_catalog.array_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                                FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND t.typtype = 'c' AND a.attnum > 0),
                             t.typacl)
      FROM pg_catalog.pg_type t
     WHERE t.typnamespace = 'wa'::pg_catalog.regnamespace
       AND (t.typrelid = 0 OR (SELECT r.relkind FROM pg_catalog.pg_class r WHERE r.oid = t.typrelid) = 'c')
       AND t.typelem = 0
    UNION ALL
    SELECT pg_catalog.format('function %s owner=%s acl=%s %s', p.oid::pg_catalog.regprocedure,
                             p.proowner::pg_catalog.regrole,
                             (SELECT pg_catalog.array_agg(i::text ORDER BY i::text) FROM pg_catalog.unnest(p.proacl) i),
                             pg_catalog.pg_get_functiondef(p.oid))
      FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'wa'::pg_catalog.regnamespace AND p.prokind <> 'a'
    UNION ALL
    SELECT pg_catalog.format('comment %s %s', o.identity, d.description)
      FROM pg_catalog.pg_description d, LATERAL pg_catalog.pg_identify_object(d.classoid, d.objoid, d.objsubid) o
     WHERE o.schema = 'wa' OR (o.type = 'schema' AND o.identity = 'wa')
    UNION ALL
    SELECT pg_catalog.format('event_trigger %s on %s tags=%s enabled=%s function=%s', t.evtname, t.evtevent,
                             t.evttags, t.evtenabled, t.evtfoid::pg_catalog.regproc)
      FROM pg_catalog.pg_event_trigger t
    UNION ALL
    SELECT pg_catalog.format('default_acl %s %s %s %s', d.defaclrole::pg_catalog.regrole,
                             d.defaclnamespace::pg_catalog.regnamespace, d.defaclobjtype, d.defaclacl)
      FROM pg_catalog.pg_default_acl d
    UNION ALL
    -- What pg_dump treats as the extension's own privileges (recorded while its scripts run).
    SELECT pg_catalog.format('init_privs %s %s %s', o.type, o.identity,
                             (SELECT pg_catalog.array_agg(i::text ORDER BY i::text) FROM pg_catalog.unnest(ip.initprivs) i))
      FROM pg_catalog.pg_init_privs ip, LATERAL pg_catalog.pg_identify_object(ip.classoid, ip.objoid, ip.objsubid) o
     WHERE ip.privtype = 'e'
)
SELECT fact FROM facts ORDER BY fact COLLATE "C";
