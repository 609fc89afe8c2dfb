//! Every statement the background worker runs, in one place, so that they can be audited.
//!
//! The worker runs as the role `wa_worker` (see `identity`) with `search_path` pinned to
//! `pg_catalog, pg_temp`, whatever the database's or a role's settings say. On top of that,
//! every function, operator and type below is schema-qualified (`pg_catalog.now()`,
//! `OPERATOR(pg_catalog.=)`, `::pg_catalog.uuid`), so that no object created by whoever owns
//! the database can ever run in the worker, even if the pinning were lost. SQL constructs
//! that find an operator by name through the search path (`IN (…)`, `IS DISTINCT FROM`,
//! `NULLIF`, a simple `CASE x WHEN`, `JOIN … USING`) are not used; `GREATEST`, `LEAST`,
//! `ORDER BY` and `ON CONFLICT` use the types' default operator classes, not the search path.
//! A multi-argument `unnest(a, b)` is only sugar for an unqualified name, so it is written out
//! as `ROWS FROM (pg_catalog.unnest(a), pg_catalog.unnest(b))`.
//! The unit test at the end checks all of this for every statement listed in `ALL`.
//!
//! Functions of the extension the worker calls (`wa._apply_pending_statuses`, which calls
//! `wa._apply_status`) pin their own search_path and are qualified the same way.

/// The version of the extension installed in the worker's database (one row, NULL before
/// `CREATE EXTENSION`). The worker serves only the version it was built for: after a new
/// library is installed it waits for `ALTER EXTENSION whatsapp_pg UPDATE`.
pub const INSTALLED_VERSION: &str = "
SELECT (SELECT e.extversion FROM pg_catalog.pg_extension e
         WHERE e.extname OPERATOR(pg_catalog.=) 'whatsapp_pg')";

/// Whether Citus' catalog of node groups is there (the citus extension exists).
pub const CITUS_PRESENT: &str = "
SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus')";

/// Whether this node is a Citus worker node (group 0 is the coordinator's); run only when
/// `CITUS_PRESENT`.
pub const CITUS_WORKER_NODE: &str = "
SELECT g.groupid OPERATOR(pg_catalog.<>) 0 FROM pg_catalog.pg_dist_local_group g";

/// Claims due outbox rows, at most `$1`, at most `$4` (or the number's budget in the `$3`
/// object) per number, none for the exhausted numbers `$2`, the tenants `$6` whose token
/// cannot be decrypted now or the rows `$7` whose outcome the worker still holds, and leases
/// them for `$5` seconds under the claim id `$8`. Returns each row with the version of its
/// tenant's token (the credential's `updated_at`) and whether an earlier claim of it never
/// reported back (the worker died while it was in flight).
///
/// Claims are per number and fair:
/// - `numbers` lists the numbers with live rows by a skip scan of `outbox_number_due_idx`
///   (one index descent per number, whatever the backlog);
/// - each number's due rows are taken from that index in its order, most urgent `priority`
///   first, then oldest, up to the number's budget (a LATERAL probe per number: a campaign
///   of 100,000 rows on one number costs its budget, not a scan);
/// - when more is due than `$1`, the numbers take turns: every number's first row, then
///   every number's second, each round most urgent first.
///
/// A message waits while an earlier message of the same number to the same customer, of the
/// same or a more urgent priority, is still in the outbox (not failed), so that each customer
/// gets them in the order they were enqueued, retries included; a more urgent message is not
/// held back by a less urgent one.
///
/// It runs with `plans::NESTED_LOOP_PLAN_SETTINGS`: the picked rows are updated by primary-key
/// probes, and the budgets are a jsonb lookup rather than a join.
///
/// `CLAIM_TENANT` is the same claim among the rows of some tenants of one shard (`$9`), for
/// Citus: every table it reads names the tenants, so that it is routed to their shard (Citus
/// cannot run the skip scan over every shard). The worker claims shard by shard there, the
/// tenants with due rows found by `DUE_TENANTS` and grouped by `SHARD_GROUPS`. The token
/// version is the credential's `updated_at` in its binary form (an immutable expression:
/// Citus refuses others in `RETURNING`).
macro_rules! claim {
    ($o:literal, $e:literal, $c:literal) => {
        concat!(
            "
WITH RECURSIVE numbers AS (
    (SELECT o.phone_number_id FROM wa.outbox o
      WHERE o.next_attempt_at OPERATOR(pg_catalog.<) 'infinity'::pg_catalog.timestamptz",
            $o,
            "
      ORDER BY o.phone_number_id LIMIT 1)
    UNION ALL
    SELECT (SELECT o.phone_number_id FROM wa.outbox o
             WHERE o.next_attempt_at OPERATOR(pg_catalog.<) 'infinity'::pg_catalog.timestamptz
               AND o.phone_number_id OPERATOR(pg_catalog.>) n.phone_number_id",
            $o,
            "
             ORDER BY o.phone_number_id LIMIT 1)
      FROM numbers n
     WHERE n.phone_number_id IS NOT NULL
), due AS (
    SELECT d.tenant_id, d.outbox_id, d.old_claim, d.priority, d.next_attempt_at, d.kind,
           d.recipient, n.phone_number_id,
           pg_catalog.row_number() OVER (PARTITION BY n.phone_number_id
                                         ORDER BY d.priority, d.next_attempt_at, d.outbox_id) AS rn
      FROM numbers n
      CROSS JOIN LATERAL (
          SELECT o.tenant_id, o.outbox_id, o.claim_id AS old_claim, o.priority, o.next_attempt_at,
                 o.kind, o.recipient
            FROM wa.outbox o
           WHERE o.phone_number_id OPERATOR(pg_catalog.=) n.phone_number_id
             AND o.next_attempt_at OPERATOR(pg_catalog.<) 'infinity'::pg_catalog.timestamptz
             AND o.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()
             AND o.tenant_id OPERATOR(pg_catalog.<>) ALL ($6::pg_catalog.uuid[])
             AND o.outbox_id OPERATOR(pg_catalog.<>) ALL ($7::pg_catalog.int8[])",
            $o,
            "
           ORDER BY o.priority, o.next_attempt_at, o.outbox_id
           -- Up to the number's budget, and twice its share of the batch: with 500 numbers
           -- at 1,000 msg/s, budgets alone made 500,000 candidates for a batch of 4,000.
           LIMIT LEAST(COALESCE(($3 OPERATOR(pg_catalog.->>) n.phone_number_id)::pg_catalog.int4, $4),
                       $1,
                       (SELECT GREATEST(2 OPERATOR(pg_catalog.*) $1 OPERATOR(pg_catalog./)
                                        GREATEST(pg_catalog.count(*), 1), 1)
                          FROM numbers c WHERE c.phone_number_id IS NOT NULL))) d
     WHERE n.phone_number_id IS NOT NULL
       AND n.phone_number_id OPERATOR(pg_catalog.<>) ALL ($2::pg_catalog.text[])
), pick AS (
    -- The due rows carry what this needs, and the check below stays a probe per due row
    -- (OFFSET 0 keeps it from becoming an anti join). The planner cannot know how many
    -- numbers are due, and with a join it chose to read the whole outbox: 2.3 s per claim
    -- with 1,000,000 rows queued over 500 numbers.
    SELECT d.tenant_id, d.outbox_id, d.old_claim
      FROM due d
     WHERE NOT EXISTS (
           SELECT 1 FROM wa.outbox e
            WHERE d.kind OPERATOR(pg_catalog.=) 'message'
              AND e.tenant_id OPERATOR(pg_catalog.=) d.tenant_id
              AND e.phone_number_id OPERATOR(pg_catalog.=) d.phone_number_id
              AND e.recipient OPERATOR(pg_catalog.=) d.recipient
              AND e.kind OPERATOR(pg_catalog.=) 'message'
              AND e.failed_at IS NULL
              AND e.outbox_id OPERATOR(pg_catalog.<) d.outbox_id
              AND e.priority OPERATOR(pg_catalog.<=) d.priority",
            $e,
            "
           OFFSET 0)
     ORDER BY d.rn, d.priority, d.next_attempt_at, d.outbox_id
     LIMIT $1
)
UPDATE wa.outbox o
   SET next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+) ($5 OPERATOR(pg_catalog.*) interval '1 second'),
       attempts = o.attempts OPERATOR(pg_catalog.+) 1,
       claim_id = $8
  FROM pick p
 WHERE o.tenant_id OPERATOR(pg_catalog.=) p.tenant_id
   AND o.outbox_id OPERATOR(pg_catalog.=) p.outbox_id
   AND o.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()",
            $o,
            "
RETURNING o.outbox_id, o.tenant_id::pg_catalog.text, o.kind, o.message_id::pg_catalog.text,
          o.phone_number_id, o.recipient, o.payload, o.attempts,
          COALESCE((SELECT pg_catalog.encode(pg_catalog.timestamptz_send(c.updated_at), 'hex')
                      FROM wa.credentials c
                     WHERE c.tenant_id OPERATOR(pg_catalog.=) o.tenant_id
                       AND c.kind OPERATOR(pg_catalog.=) 'business_token'",
            $c,
            "), ''),
          p.old_claim IS NOT NULL"
        )
    };
}

/// The claim (see `claim!`).
pub const CLAIM: &str = claim!("", "", "");

/// The claim among the rows of the tenants `$9`, all of one shard (Citus; see `claim!`).
pub const CLAIM_TENANT: &str = claim!(
    "
             AND o.tenant_id OPERATOR(pg_catalog.=) ANY ($9::pg_catalog.uuid[])",
    "
              AND e.tenant_id OPERATOR(pg_catalog.=) ANY ($9::pg_catalog.uuid[])",
    "
                       AND c.tenant_id OPERATOR(pg_catalog.=) ANY ($9::pg_catalog.uuid[])"
);

/// The tenants `$1` grouped by the shard that holds them (Citus; run on the coordinator, over
/// no table), so that one claim serves every due tenant of a shard.
pub const SHARD_GROUPS: &str = "
SELECT pg_catalog.array_agg(t.tenant_id::pg_catalog.text ORDER BY t.tenant_id)
  FROM pg_catalog.unnest($1::pg_catalog.uuid[]) AS t(tenant_id)
 GROUP BY pg_catalog.get_shard_id_for_distribution_column('wa.tenants'::pg_catalog.regclass, t.tenant_id)";

/// The tenants with due rows on numbers not among `$1`, the tenants `$2` left out (Citus: one
/// statement over every shard, an index probe per number; see `CLAIM_TENANT`).
pub const DUE_TENANTS: &str = "
SELECT p.tenant_id::pg_catalog.text
  FROM wa.phone_numbers p
 WHERE p.phone_number_id OPERATOR(pg_catalog.<>) ALL ($1::pg_catalog.text[])
   AND p.tenant_id OPERATOR(pg_catalog.<>) ALL ($2::pg_catalog.uuid[])
   AND EXISTS (SELECT 1 FROM wa.outbox o
                WHERE o.tenant_id OPERATOR(pg_catalog.=) p.tenant_id
                  AND o.phone_number_id OPERATOR(pg_catalog.=) p.phone_number_id
                  AND o.next_attempt_at OPERATOR(pg_catalog.<) 'infinity'::pg_catalog.timestamptz
                  AND o.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now())
 GROUP BY p.tenant_id";

/// The numbers all of whose tenants are among `$1` (paused, or whose token does not open):
/// claims leave them out.
pub const BLOCKED_NUMBERS: &str = "
SELECT pg_catalog.array_agg(b.phone_number_id)
  FROM (SELECT p.phone_number_id FROM wa.phone_numbers p
         GROUP BY p.phone_number_id
        HAVING pg_catalog.bool_and(p.tenant_id OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.uuid[]))) b";

/// Whether this database is a copy restored under another name than the one the app was
/// configured in (it then sends nothing until `wa.resume_sending()` accepts it), and the
/// tenants whose sending is paused.
pub const PAUSES: &str = "
SELECT EXISTS (SELECT 1 FROM wa.app_config c
                WHERE c.database_name IS NOT NULL
                  AND c.database_name OPERATOR(pg_catalog.<>) pg_catalog.current_database()::pg_catalog.text),
       ARRAY(SELECT t.tenant_id::pg_catalog.text FROM wa.tenants t
              WHERE t.sending_paused_at IS NOT NULL)";

/// A tenant's encrypted business token and the key id it is stored under.
pub const TOKEN: &str = "
SELECT c.ciphertext, c.key_id
  FROM wa.credentials c
 WHERE c.tenant_id OPERATOR(pg_catalog.=) $1::pg_catalog.uuid
   AND c.kind OPERATOR(pg_catalog.=) 'business_token'";

/// Per-number rates that differ from the default.
pub const RATES: &str = "
SELECT p.phone_number_id,
       COALESCE(p.rate_limit_per_sec,
                CASE WHEN p.throughput_level OPERATOR(pg_catalog.=) 'HIGH' THEN 1000 END)::pg_catalog.float8
  FROM wa.phone_numbers p
 WHERE p.rate_limit_per_sec IS NOT NULL
    OR p.throughput_level OPERATOR(pg_catalog.=) 'HIGH'";

/// Claimed rows put back unsent (`$3` seconds from now), their attempt not counted, unless a
/// newer claim or a hold took them meanwhile (claims `$4`).
pub const RELEASE: &str = "
UPDATE wa.outbox o
   SET next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+) ($3 OPERATOR(pg_catalog.*) interval '1 second'),
       attempts = GREATEST(o.attempts OPERATOR(pg_catalog.-) 1, 0),
       claim_id = NULL
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                   pg_catalog.unnest($2::pg_catalog.uuid[]),
                   pg_catalog.unnest($4::pg_catalog.int8[])) AS s(outbox_id, tenant_id, claim)
 WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
   AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id
   AND o.claim_id OPERATOR(pg_catalog.=) s.claim";

/// Claimed rows (claims `$4`) held until their tenant is connected again (no token is stored for it), their
/// attempt not counted. The tenant's state is not touched: only Meta's 190 moves it.
pub const HOLD_ROWS: &str = "
UPDATE wa.outbox o
   SET next_attempt_at = 'infinity'::pg_catalog.timestamptz,
       attempts = GREATEST(o.attempts OPERATOR(pg_catalog.-) 1, 0),
       last_error = $3::pg_catalog.jsonb,
       claim_id = NULL
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                   pg_catalog.unnest($2::pg_catalog.uuid[]),
                   pg_catalog.unnest($4::pg_catalog.int8[])) AS s(outbox_id, tenant_id, claim)
 WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
   AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id
   AND o.claim_id OPERATOR(pg_catalog.=) s.claim";

/// Leases of claimed rows still waiting for an HTTP thread, renewed for `$3` seconds (claims
/// `$4`); returns the rows renewed (a row held or claimed anew meanwhile is not).
pub const RENEW: &str = "
UPDATE wa.outbox o
   SET next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+) ($3 OPERATOR(pg_catalog.*) interval '1 second')
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                   pg_catalog.unnest($2::pg_catalog.uuid[]),
                   pg_catalog.unnest($4::pg_catalog.int8[])) AS s(outbox_id, tenant_id, claim)
 WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
   AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id
   AND o.claim_id OPERATOR(pg_catalog.=) s.claim
RETURNING o.outbox_id";

/// Sends whose outcome is unknown (a timeout after the request went out, an unreadable
/// success, a claim that never reported back): not sent again before `$3` seconds, so that
/// the `sent` status webhook, which carries our message id, can settle them first. `$5` is 1
/// for rows whose attempt this claim did not make.
pub const UNKNOWN: &str = "
UPDATE wa.outbox o
   SET next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+) ($3 OPERATOR(pg_catalog.*) interval '1 second'),
       attempts = GREATEST(o.attempts OPERATOR(pg_catalog.-) s.uncounted, 0),
       outcome_unknown_at = pg_catalog.now(),
       last_error = COALESCE(s.error, o.last_error),
       claim_id = NULL
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                  pg_catalog.unnest($2::pg_catalog.uuid[]),
                  pg_catalog.unnest($4::pg_catalog.int8[]),
                  pg_catalog.unnest($5::pg_catalog.int4[]),
                  pg_catalog.unnest($6::pg_catalog.jsonb[])) AS s(outbox_id, tenant_id, claim, uncounted, error)
 WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
   AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id
   AND o.claim_id OPERATOR(pg_catalog.=) s.claim";

/// The worker's heartbeat, counters (deltas since the last one; `$7` = first since start),
/// last error, pause, per-number pacing, and how many outcomes wait to be recorded.
pub const HEARTBEAT: &str = "
INSERT INTO wa.worker_state AS s (singleton, pid, started_at, heartbeat_at, sent, failed, retried,
                                  media_downloaded, last_error, last_error_at, rate_limits, paused,
                                  unknown, duplicates, unrecorded, claims, claim_seconds, write_backs,
                                  write_back_seconds)
VALUES (true, pg_catalog.pg_backend_pid(), pg_catalog.now(), pg_catalog.now(), $1, $2, $3, $4, $5,
        CASE WHEN $5 IS NOT NULL THEN pg_catalog.now() END, $6, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (singleton) DO UPDATE SET
    pid = pg_catalog.pg_backend_pid(),
    started_at = CASE WHEN $7 THEN pg_catalog.now() ELSE s.started_at END,
    heartbeat_at = pg_catalog.now(),
    sent = (CASE WHEN $7 THEN 0 ELSE s.sent END) OPERATOR(pg_catalog.+) $1,
    failed = (CASE WHEN $7 THEN 0 ELSE s.failed END) OPERATOR(pg_catalog.+) $2,
    retried = (CASE WHEN $7 THEN 0 ELSE s.retried END) OPERATOR(pg_catalog.+) $3,
    media_downloaded = (CASE WHEN $7 THEN 0 ELSE s.media_downloaded END) OPERATOR(pg_catalog.+) $4,
    last_error = COALESCE($5, s.last_error),
    last_error_at = CASE WHEN $5 IS NOT NULL THEN pg_catalog.now() ELSE s.last_error_at END,
    rate_limits = $6,
    paused = $8,
    unknown = (CASE WHEN $7 THEN 0 ELSE s.unknown END) OPERATOR(pg_catalog.+) $9,
    duplicates = (CASE WHEN $7 THEN 0 ELSE s.duplicates END) OPERATOR(pg_catalog.+) $10,
    unrecorded = $11,
    claims = (CASE WHEN $7 THEN 0 ELSE s.claims END) OPERATOR(pg_catalog.+) $12,
    claim_seconds = (CASE WHEN $7 THEN 0 ELSE s.claim_seconds END) OPERATOR(pg_catalog.+) $13,
    write_backs = (CASE WHEN $7 THEN 0 ELSE s.write_backs END) OPERATOR(pg_catalog.+) $14,
    write_back_seconds = (CASE WHEN $7 THEN 0 ELSE s.write_back_seconds END) OPERATOR(pg_catalog.+) $15";

/// The end of the statements that change a message's status: one notification per changed
/// message, on its tenant's channel, returned as two arrays (channels, payloads) for the
/// worker to make (`crate::notify`): on Citus the rows may come from another node, where a
/// `pg_notify` would reach nobody.
macro_rules! notify_status {
    ($rows:literal, $status:literal) => {
        concat!(
            "
notes AS (
    SELECT t.events_channel AS channel, pg_catalog.json_build_object(
           'kind', 'message.status', 'status', ",
            $status,
            ", 'tenant_id', u.tenant_id,
           'conversation_id', u.conversation_id, 'message_id', u.message_id)::pg_catalog.text AS payload
      FROM ",
            $rows,
            " u
      JOIN wa.tenants t ON t.tenant_id OPERATOR(pg_catalog.=) u.tenant_id)"
        )
    };
}

/// The two arrays of `notify_status!`, in one order.
macro_rules! notes {
    () => {
        "(SELECT pg_catalog.array_agg(n.channel ORDER BY n.payload) FROM notes n),
       (SELECT pg_catalog.array_agg(n.payload ORDER BY n.payload) FROM notes n)"
    };
}

/// Messages Meta accepted: the outbox rows go (whatever claim they are under: the message is
/// out), the messages get their wamid and `sent`. A message that already had another wamid
/// was sent twice (an unknown outcome retried, or in flight at a crash): the second wamid is
/// kept in `extra_wamids` and counted. Returns that count and the notifications; `$5` is the
/// time (Citus allows no function of a column in `UPDATE … SET`).
pub const SENT: &str = concat!(
    "
WITH s AS (
    SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                             pg_catalog.unnest($2::pg_catalog.uuid[]),
                             pg_catalog.unnest($3::pg_catalog.uuid[]),
                             pg_catalog.unnest($4::pg_catalog.text[]))
           AS s(outbox_id, tenant_id, message_id, wamid)),
gone AS (
    DELETE FROM wa.outbox o USING s
     WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
       AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id),
twice AS (
    SELECT s.message_id FROM s
      JOIN wa.messages m ON m.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
                        AND m.message_id OPERATOR(pg_catalog.=) s.message_id
     WHERE m.wamid IS NOT NULL AND s.wamid IS NOT NULL
       AND m.wamid OPERATOR(pg_catalog.<>) s.wamid
       AND NOT COALESCE(s.wamid OPERATOR(pg_catalog.=) ANY (m.extra_wamids), false)),
upd AS (
    UPDATE wa.messages m
       SET wamid = COALESCE(m.wamid, s.wamid),
           extra_wamids = CASE WHEN m.wamid IS NOT NULL AND s.wamid IS NOT NULL
                                    AND m.wamid OPERATOR(pg_catalog.<>) s.wamid
                                    AND NOT COALESCE(s.wamid OPERATOR(pg_catalog.=) ANY (m.extra_wamids), false)
                               THEN pg_catalog.array_append(m.extra_wamids, s.wamid)
                               ELSE m.extra_wamids END,
           status = CASE WHEN m.status OPERATOR(pg_catalog.=) 'queued' THEN 'sent' ELSE m.status END,
           sent_at = COALESCE(m.sent_at, $5::pg_catalog.timestamptz),
           updated_at = $5::pg_catalog.timestamptz
      FROM s
     WHERE m.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
       AND m.message_id OPERATOR(pg_catalog.=) s.message_id
    RETURNING m.tenant_id, m.conversation_id, m.message_id, m.status),",
    notify_status!("upd", "u.status"),
    "
SELECT (SELECT pg_catalog.count(*) FROM twice),
       ",
    notes!()
);

/// Statuses Meta sent before we knew these wamids apply now.
pub const PENDING_STATUSES: &str =
    "SELECT wa._apply_pending_statuses($1::pg_catalog.uuid[], $2::pg_catalog.text[])";

/// Other accepted requests (mark read): the outbox rows go.
pub const DONE: &str = "
DELETE FROM wa.outbox o
 USING ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                   pg_catalog.unnest($2::pg_catalog.uuid[])) AS s(outbox_id, tenant_id)
 WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
   AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id";

/// Transient failures: tried again after each row's delay, unless a newer claim or a hold
/// took the row meanwhile.
/// (The times are computed in the row source: Citus allows no stable function of a column in
/// `UPDATE … SET`.)
pub const RETRY: &str = "
UPDATE wa.outbox o
   SET next_attempt_at = s.at,
       last_error = s.error,
       claim_id = NULL
  FROM (SELECT r.outbox_id, r.tenant_id, r.error, r.claim,
               pg_catalog.now() OPERATOR(pg_catalog.+) (r.delay OPERATOR(pg_catalog.*) interval '1 second') AS at
          FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                          pg_catalog.unnest($2::pg_catalog.uuid[]),
                          pg_catalog.unnest($3::pg_catalog.float8[]),
                          pg_catalog.unnest($4::pg_catalog.jsonb[]),
                          pg_catalog.unnest($5::pg_catalog.int8[])) AS r(outbox_id, tenant_id, delay, error, claim)) s
 WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
   AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id
   AND o.claim_id OPERATOR(pg_catalog.=) s.claim";

/// Permanent failures: the outbox rows stay as failed, the messages become `failed` (not for a
/// row a newer claim or a hold took meanwhile). Returns the notifications.
pub const FAILED: &str = concat!(
    "
WITH s AS (
    SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                   pg_catalog.unnest($2::pg_catalog.uuid[]),
                   pg_catalog.unnest($3::pg_catalog.jsonb[]),
                   pg_catalog.unnest($4::pg_catalog.int8[]))
           AS s(outbox_id, tenant_id, error, claim)),
o AS (
    UPDATE wa.outbox o
       SET failed_at = pg_catalog.now(), next_attempt_at = 'infinity'::pg_catalog.timestamptz,
           last_error = s.error, claim_id = NULL
      FROM s
     WHERE o.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
       AND o.outbox_id OPERATOR(pg_catalog.=) s.outbox_id
       AND o.claim_id OPERATOR(pg_catalog.=) s.claim
    RETURNING o.tenant_id, o.message_id, s.error),
upd AS (
    UPDATE wa.messages m
       SET status = 'failed', error = o.error, failed_at = pg_catalog.now(),
           updated_at = pg_catalog.now()
      FROM o
     WHERE m.tenant_id OPERATOR(pg_catalog.=) o.tenant_id
       AND m.message_id OPERATOR(pg_catalog.=) o.message_id
       AND m.status OPERATOR(pg_catalog.<>) 'failed'
    RETURNING m.tenant_id, m.conversation_id, m.message_id),",
    notify_status!("upd", "'failed'"),
    "
SELECT ",
    notes!()
);

/// Meta refused the tenant's token (code 190): its queue is held (not retried into a storm)
/// until it reconnects, the attempt that met the error is not counted, and the tenant moves
/// to `action_required` (once). Returns the tenant's channel and the notification when it
/// moved, for the worker to make.
pub const HOLD_TENANT: &str = "
WITH t AS (
    SELECT t.tenant_id, t.state, t.events_channel FROM wa.tenants t
     WHERE t.tenant_id OPERATOR(pg_catalog.=) $1::pg_catalog.uuid
       FOR UPDATE),
held AS (
    UPDATE wa.outbox o
       SET next_attempt_at = 'infinity'::pg_catalog.timestamptz,
           attempts = GREATEST(o.attempts OPERATOR(pg_catalog.-) 1, 0),
           last_error = $2::pg_catalog.jsonb,
           claim_id = NULL
     WHERE o.tenant_id OPERATOR(pg_catalog.=) $1::pg_catalog.uuid
       AND o.failed_at IS NULL),
moved AS (
    UPDATE wa.tenants x
       SET state = 'action_required', last_error = $2::pg_catalog.jsonb, updated_at = pg_catalog.now()
      FROM t
     WHERE x.tenant_id OPERATOR(pg_catalog.=) t.tenant_id
       AND t.state OPERATOR(pg_catalog.<>) 'action_required'
    RETURNING x.tenant_id),
event AS (
    INSERT INTO wa.account_events (tenant_id, kind, detail)
    SELECT m.tenant_id, 'connection.token_rejected', $2::pg_catalog.jsonb FROM moved m)
SELECT t.events_channel, pg_catalog.json_build_object(
           'kind', 'connection.changed', 'state', 'action_required', 'tenant_id', t.tenant_id,
           'conversation_id', NULL, 'message_id', NULL)::pg_catalog.text
  FROM moved m
  JOIN t ON t.tenant_id OPERATOR(pg_catalog.=) m.tenant_id";

/// An inbound media file downloaded: stored (`$8` its bytes when they fit in the row, else
/// `$9` chunks follow, written with `MEDIA_CHUNK`), the message points at it, the job goes.
/// Returns whether the file is new (a second download of the same media id stores nothing).
pub const MEDIA_STORED: &str = "
WITH stored AS (
    INSERT INTO wa.media (tenant_id, media_id, mime_type, sha256, size_bytes, content, chunks)
    VALUES ($2::pg_catalog.uuid, $4, $5, $6, $7, $8::pg_catalog.bytea, $9)
    ON CONFLICT (tenant_id, media_id) DO NOTHING
    RETURNING true AS new),
msg AS (
    UPDATE wa.messages m
       SET media = pg_catalog.jsonb_build_object('media_id', $4, 'mime_type', $5, 'sha256', $6,
                                                 'size_bytes', $7, 'stored', true),
           updated_at = pg_catalog.now()
     WHERE m.tenant_id OPERATOR(pg_catalog.=) $2::pg_catalog.uuid
       AND m.message_id OPERATOR(pg_catalog.=) $3::pg_catalog.uuid),
gone AS (
    DELETE FROM wa.outbox o
     WHERE o.tenant_id OPERATOR(pg_catalog.=) $2::pg_catalog.uuid
       AND o.outbox_id OPERATOR(pg_catalog.=) $1)
SELECT COALESCE((SELECT s.new FROM stored s), false)";

/// One chunk (`$3`, from 0) of a stored media file that did not fit in its row.
pub const MEDIA_CHUNK: &str = "
INSERT INTO wa.media_chunks (tenant_id, media_id, seq, data)
VALUES ($1::pg_catalog.uuid, $2, $3, $4::pg_catalog.bytea)";

/// An inbound media file that cannot be downloaded: the message says why, the job is failed.
pub const MEDIA_FAILED: &str = "
WITH msg AS (
    UPDATE wa.messages m
       SET media = COALESCE(m.media, '{}'::pg_catalog.jsonb) OPERATOR(pg_catalog.||)
                   pg_catalog.jsonb_build_object('stored', false, 'error', $4::pg_catalog.jsonb),
           updated_at = pg_catalog.now()
     WHERE m.tenant_id OPERATOR(pg_catalog.=) $2::pg_catalog.uuid
       AND m.message_id OPERATOR(pg_catalog.=) $3::pg_catalog.uuid)
UPDATE wa.outbox o
   SET failed_at = pg_catalog.now(), next_attempt_at = 'infinity'::pg_catalog.timestamptz,
       last_error = $4::pg_catalog.jsonb
 WHERE o.tenant_id OPERATOR(pg_catalog.=) $2::pg_catalog.uuid
   AND o.outbox_id OPERATOR(pg_catalog.=) $1";

/// Run by the backend that drops the worker's database (`dropdb.rs`): checks what
/// PostgreSQL's dropdb checks before it would wait for, or end, other sessions.
/// Written schema-qualified: it runs in the caller's session, under the caller's search_path.
pub const DROP_WILL_PROCEED: &str = "
SELECT NOT d.datistemplate
   AND ($3 OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                           WHERE a.datid OPERATOR(pg_catalog.=) d.oid
                             AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
                             AND a.pid OPERATOR(pg_catalog.<>) $2))
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts x
                    WHERE x.database OPERATOR(pg_catalog.=) d.datname)
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots r
                    WHERE r.datoid OPERATOR(pg_catalog.=) d.oid)
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s
                    WHERE s.subdbid OPERATOR(pg_catalog.=) d.oid)
  FROM pg_catalog.pg_database d
 WHERE d.oid OPERATOR(pg_catalog.=) $1";

/// Every statement above, by name, for the audit.
#[cfg(test)]
pub const ALL: &[(&str, &str)] = &[
    ("INSTALLED_VERSION", INSTALLED_VERSION),
    ("CLAIM", CLAIM),
    ("CLAIM_TENANT", CLAIM_TENANT),
    ("DUE_TENANTS", DUE_TENANTS),
    ("SHARD_GROUPS", SHARD_GROUPS),
    ("BLOCKED_NUMBERS", BLOCKED_NUMBERS),
    ("TOKEN", TOKEN),
    ("PAUSES", PAUSES),
    ("RATES", RATES),
    ("RELEASE", RELEASE),
    ("HOLD_ROWS", HOLD_ROWS),
    ("RENEW", RENEW),
    ("UNKNOWN", UNKNOWN),
    ("HEARTBEAT", HEARTBEAT),
    ("SENT", SENT),
    ("PENDING_STATUSES", PENDING_STATUSES),
    ("DONE", DONE),
    ("RETRY", RETRY),
    ("FAILED", FAILED),
    ("HOLD_TENANT", HOLD_TENANT),
    ("MEDIA_STORED", MEDIA_STORED),
    ("MEDIA_CHUNK", MEDIA_CHUNK),
    ("MEDIA_FAILED", MEDIA_FAILED),
    ("DROP_WILL_PROCEED", DROP_WILL_PROCEED),
];

/// Settings the worker pins for its whole session right after it connects, over anything the
/// database or a role set (`ALTER DATABASE … SET`): a hostile search_path, a read-only
/// default, row security switched off, or timeouts that would make every write-back fail.
pub const PINNED_SETTINGS: &[(&std::ffi::CStr, &std::ffi::CStr)] = &[
    (c"search_path", c"pg_catalog, pg_temp"),
    (c"row_security", c"on"),
    (c"default_transaction_read_only", c"off"),
    (c"default_transaction_isolation", c"read committed"),
    (c"statement_timeout", c"0"),
    (c"lock_timeout", c"0"),
    (c"idle_in_transaction_session_timeout", c"0"),
    (c"transform_null_equals", c"off"),
    (c"plan_cache_mode", c"auto"),
    // Its statements are index probes over small sets; a JIT compilation would cost more
    // than any of them.
    (c"jit", c"off"),
];

#[cfg(test)]
mod audit {
    //! A small lexer-level audit of the worker's SQL (see the module comment).

    /// Words after which `(` does not call a function.
    const NOT_CALLS: &[&str] = &[
        "AS",
        "IN",
        "ON",
        "AND",
        "OR",
        "NOT",
        "ALL",
        "ANY",
        "SOME",
        "EXISTS",
        "VALUES",
        "FROM",
        "JOIN",
        "LATERAL",
        "WHERE",
        "SELECT",
        "SET",
        "THEN",
        "ELSE",
        "WHEN",
        "OVER",
        "FILTER",
        "BY",
        "LIMIT",
        "USING",
        "COALESCE",
        "GREATEST",
        "LEAST",
        "OPERATOR",
        "RETURNING",
        "WITH",
        "CONFLICT",
        "INTO",
        "CASE",
        "ARRAY",
        "ROW",
        "OPX",
    ];
    /// Type names the grammar itself maps to pg_catalog (never looked up in the search path).
    const KEYWORD_TYPES: &[&str] = &[
        "bigint", "integer", "int", "smallint", "boolean", "interval", "numeric", "real",
    ];
    /// Constructs that resolve an operator by name through the search path.
    const FORBIDDEN: &[&str] = &["IN", "DISTINCT", "NULLIF"];

    /// The statement without string literals and comments (each replaced by a space).
    fn strip(sql: &str) -> String {
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    while let Some(d) = chars.next() {
                        if d == '\'' {
                            if chars.peek() == Some(&'\'') {
                                chars.next();
                            } else {
                                break;
                            }
                        }
                    }
                    out.push_str(" '' ");
                }
                '-' if chars.peek() == Some(&'-') => {
                    for d in chars.by_ref() {
                        if d == '\n' {
                            break;
                        }
                    }
                    out.push(' ');
                }
                _ => out.push(c),
            }
        }
        out
    }

    /// What is wrong with `sql`, one line per problem.
    pub fn problems(sql: &str) -> Vec<String> {
        let text = strip(sql);
        let mut problems = Vec::new();
        // unnest(a, b) exists only as grammar sugar for the unqualified name.
        for (i, _) in text.match_indices("unnest(") {
            let mut depth = 0;
            for c in text[i + "unnest".len()..].chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 1 => {
                        problems.push("unnest with several arguments is never qualified".into());
                        break;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        }
        // OPERATOR(schema.op) is the qualified form: drop it after checking the schema.
        let mut rest = String::with_capacity(text.len());
        let mut s = text.as_str();
        while let Some(i) = s.find("OPERATOR(") {
            rest.push_str(&s[..i]);
            let after = &s[i + "OPERATOR(".len()..];
            let end = after.find(')').unwrap_or(after.len());
            if !after[..end].starts_with("pg_catalog.") {
                problems.push(format!("operator not in pg_catalog: {}", &after[..end]));
            }
            rest.push_str(" OPX ");
            s = &after[(end + 1).min(after.len())..];
        }
        rest.push_str(s);
        // Tokens: words (with dots), and single punctuation characters.
        let bytes = rest.as_bytes();
        let mut tokens: Vec<String> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i] as char;
            if c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.' {
                let start = i;
                while i < bytes.len() {
                    let d = bytes[i] as char;
                    if d.is_ascii_alphanumeric() || d == '_' || d == '$' || d == '.' {
                        i += 1;
                    } else {
                        break;
                    }
                }
                tokens.push(rest[start..i].to_string());
            } else if c.is_whitespace() {
                i += 1;
            } else if c == ':' && bytes.get(i + 1) == Some(&b':') {
                tokens.push("::".into());
                i += 2;
            } else {
                tokens.push(c.to_string());
                i += 1;
            }
        }
        for (k, t) in tokens.iter().enumerate() {
            let prev = if k > 0 { tokens[k - 1].as_str() } else { "" };
            let next = tokens.get(k + 1).map(String::as_str).unwrap_or("");
            let upper = t.to_ascii_uppercase();
            if FORBIDDEN.contains(&upper.as_str()) && t.chars().all(|c| c.is_ascii_uppercase()) {
                problems.push(format!("{t} resolves an operator through the search path"));
            }
            match t.as_str() {
                "(" => {
                    // A call: the word before must be qualified, a keyword, or an alias.
                    let callee = prev;
                    let is_word = callee
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
                    let before = if k > 1 { tokens[k - 2].as_str() } else { "" };
                    if is_word
                        && !callee.contains('.')
                        && !NOT_CALLS.contains(&callee.to_ascii_uppercase().as_str())
                        && !before.eq_ignore_ascii_case("AS")
                        && !before.eq_ignore_ascii_case("INTO")
                    {
                        problems.push(format!("unqualified call of {callee}()"));
                    }
                }
                "::" => {
                    let qualified = next.starts_with("pg_catalog.");
                    if !qualified && !KEYWORD_TYPES.contains(&next) {
                        problems.push(format!("cast to unqualified type {next}"));
                    }
                }
                "=" | "<" | ">" | "+" | "-" | "/" | "|" | "~" | "!" | "@" | "#" | "%" | "^"
                | "&" | "?" => {
                    // `SET x = …` and `DO UPDATE SET x = …` assign, they compare nothing.
                    let assignment = t == "=" && k >= 2 && {
                        let mut j = k - 1;
                        // walk back over the target `x` or `s.x`
                        let target = &tokens[j];
                        let ok = target
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                        if ok {
                            j -= 1;
                        }
                        ok && (tokens[j].eq_ignore_ascii_case("SET") || tokens[j] == ",")
                            && is_in_set_clause(&tokens, j)
                    };
                    if !assignment {
                        problems.push(format!("unqualified operator {t} near {prev} {t} {next}"));
                    }
                }
                // `*` in `count(*)`, `SELECT *`, `x.*` is no operator.
                "*" if !(prev == "("
                    || prev.eq_ignore_ascii_case("SELECT")
                    || prev.ends_with('.')) =>
                {
                    problems.push(format!("unqualified operator * near {prev} * {next}"));
                }
                _ => {}
            }
        }
        problems
    }

    /// Whether the `,` or `SET` at `j` lies in the SET list of an UPDATE (after the last SET
    /// and before any FROM/WHERE/RETURNING).
    fn is_in_set_clause(tokens: &[String], j: usize) -> bool {
        let mut depth = 0i32;
        for t in tokens[..=j].iter().rev() {
            match t.to_ascii_uppercase().as_str() {
                ")" => depth += 1,
                "(" => depth -= 1,
                "SET" if depth <= 0 => return true,
                "FROM" | "WHERE" | "RETURNING" | "SELECT" | "VALUES" if depth <= 0 => {
                    return false;
                }
                _ => {}
            }
        }
        false
    }

    /// The tables distributed by tenant on Citus (sql/citus.sql, `wa.citus_layout()`).
    const TENANT_TABLES: &[&str] = &[
        "wa.tenants",
        "wa.wabas",
        "wa.phone_numbers",
        "wa.credentials",
        "wa.contacts",
        "wa.conversations",
        "wa.messages",
        "wa.outbox",
        "wa.media",
        "wa.media_chunks",
        "wa.pending_statuses",
        "wa.templates",
        "wa.account_events",
        "wa.signups",
    ];

    /// Each use of a tenant table in `sql` that does not name the tenant: a read, update or
    /// delete whose alias has no `alias.tenant_id OPERATOR(pg_catalog.=) …` condition, or an
    /// insert without a `tenant_id` column. On Citus such a statement would run on every
    /// shard, or could not be planned.
    pub fn unnamed_tenants(sql: &str) -> Vec<String> {
        let text = strip(sql);
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$'))
            .filter(|w| !w.is_empty())
            .collect();
        let mut found = Vec::new();
        for (k, w) in words.iter().enumerate() {
            if !TENANT_TABLES.contains(w) {
                continue;
            }
            if k > 0 && words[k - 1].eq_ignore_ascii_case("INTO") {
                let columns = text.split(w).nth(1).unwrap_or("");
                let columns = columns.split(')').next().unwrap_or("");
                if !columns.contains("tenant_id") {
                    found.push(format!("INSERT INTO {w} without tenant_id"));
                }
                continue;
            }
            let alias = match words.get(k + 1) {
                Some(a) if a.eq_ignore_ascii_case("AS") => words.get(k + 2).copied(),
                a => a.copied(),
            };
            let Some(alias) = alias else {
                found.push(format!("{w} without an alias"));
                continue;
            };
            let needle = format!("{alias}.tenant_id OPERATOR(pg_catalog.=)");
            let reversed = format!("OPERATOR(pg_catalog.=) {alias}.tenant_id");
            if !text.contains(&needle) && !text.contains(&reversed) {
                found.push(format!("{w} {alias}: no {needle} filter"));
            }
        }
        found
    }

    #[cfg(test)]
    mod tests {
        use super::problems;

        #[test]
        fn every_worker_statement_is_schema_qualified() {
            for (name, sql) in super::super::ALL {
                let found = problems(sql);
                assert!(found.is_empty(), "{name}: {found:#?}");
            }
        }

        #[test]
        fn the_audit_finds_what_it_is_for() {
            for (sql, what) in [
                ("SELECT now()", "unqualified call"),
                ("SELECT a FROM t WHERE a = 1", "unqualified operator ="),
                ("SELECT x::uuid", "cast to unqualified type"),
                ("SELECT a FROM t WHERE a IN (1, 2)", "IN resolves"),
                ("SELECT a IS DISTINCT FROM b", "DISTINCT resolves"),
                ("SELECT a OPERATOR(evil.=) b", "operator not in pg_catalog"),
                ("SELECT a || b", "unqualified operator |"),
                ("SELECT 2 * 3", "unqualified operator *"),
                ("SELECT j ->> 'k'", "unqualified operator -"),
                (
                    "SELECT * FROM pg_catalog.unnest($1, $2)",
                    "unnest with several arguments",
                ),
            ] {
                let found = problems(sql);
                assert!(
                    found.iter().any(|p| p.contains(what)),
                    "{sql}: expected {what:?}, found {found:?}"
                );
            }
            for sql in [
                "UPDATE wa.t SET a = pg_catalog.now(), b = 1 WHERE c OPERATOR(pg_catalog.=) 2",
                "SELECT pg_catalog.count(*) FROM wa.t AS s(a, b)",
                "SELECT 'a = b -- IN (x)' -- now()\n",
                "SELECT x::pg_catalog.int8[], interval '1 second', y::bigint",
            ] {
                assert_eq!(problems(sql), Vec::<String>::new(), "{sql}");
            }
        }

        /// Statements that read across tenants by design: the coordinator's scans for due
        /// work and for settings, the single-node claim (the Citus worker claims with
        /// `CLAIM_TENANT`), and statements on local tables or the catalog.
        const ACROSS_TENANTS: &[&str] = &[
            "INSTALLED_VERSION",
            "CITUS_PRESENT",
            "CITUS_WORKER_NODE",
            "CLAIM",
            "DUE_TENANTS",
            "BLOCKED_NUMBERS",
            "PAUSES",
            "RATES",
            "HEARTBEAT",
            "DROP_WILL_PROCEED",
        ];

        #[test]
        fn every_statement_on_tenant_tables_names_the_tenant() {
            for (name, sql) in super::super::ALL {
                if ACROSS_TENANTS.contains(name) {
                    continue;
                }
                let found = super::unnamed_tenants(sql);
                assert!(found.is_empty(), "{name}: {found:#?}");
            }
            // And the audit finds what it is for.
            assert_eq!(
                super::unnamed_tenants(
                    "UPDATE wa.outbox o SET a = 1 WHERE o.outbox_id OPERATOR(pg_catalog.=) $1"
                ),
                ["wa.outbox o: no o.tenant_id OPERATOR(pg_catalog.=) filter"]
            );
            assert_eq!(
                super::unnamed_tenants("INSERT INTO wa.media (media_id) VALUES ($1)"),
                ["INSERT INTO wa.media without tenant_id"]
            );
            assert!(
                super::unnamed_tenants(
                    "SELECT 1 FROM wa.messages m JOIN wa.app_config c ON true
                  WHERE m.tenant_id OPERATOR(pg_catalog.=) $1"
                )
                .is_empty()
            );
        }
    }
}
