//! Behaviour inside a backend. These run in a transaction that is rolled back.
use pgrx::prelude::*;

#[pg_schema]
mod tests {

    use crate::{connect, keys};
    use pgrx::prelude::*;

    const TOKEN: &str = "EAAGtest-token-0123456789abcdef";

    fn new_connected_tenant(name: &str, waba: &str, phone: &str) -> String {
        let tenant =
            Spi::get_one_with_args::<pgrx::Uuid>("SELECT wa.create_tenant($1)", &[name.into()])
                .expect("create_tenant")
                .expect("tenant id");
        Spi::run_with_args(
            "SELECT wa.connect_tenant($1, $2, $3, $4)",
            &[tenant.into(), waba.into(), phone.into(), TOKEN.into()],
        )
        .expect("connect_tenant");
        tenant.to_string()
    }

    #[pg_test]
    fn stored_token_is_encrypted_and_round_trips() {
        let tenant = new_connected_tenant("Hotel A", "1001", "2001");
        let stored = Spi::get_one_with_args::<Vec<u8>>(
            "SELECT ciphertext FROM wa.credentials WHERE tenant_id = $1::uuid",
            &[tenant.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert!(!stored.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
        let plain = connect::business_token(&tenant).unwrap();
        assert_eq!(plain.as_str(), TOKEN);
    }

    #[pg_test]
    fn ciphertext_moved_to_another_tenant_does_not_decrypt() {
        let a = new_connected_tenant("Hotel A", "1001", "2001");
        let b = new_connected_tenant("Hotel B", "1002", "2002");
        Spi::run_with_args(
            "UPDATE wa.credentials SET ciphertext = (SELECT ciphertext FROM wa.credentials WHERE tenant_id = $1::uuid)
              WHERE tenant_id = $2::uuid",
            &[a.as_str().into(), b.as_str().into()],
        )
        .unwrap();
        let err = connect::business_token(&b).unwrap_err();
        assert!(
            matches!(err, crate::error::WaError::Undecryptable { .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains(TOKEN));
        assert_eq!(connect::business_token(&a).unwrap().as_str(), TOKEN);
    }

    #[pg_test]
    fn keyring_comes_from_the_key_file() {
        let ring = keys::keyring().unwrap();
        assert_eq!(ring.active_key_id(), "pgtest");
    }

    #[pg_test]
    fn superuser_is_treated_as_admin() {
        assert!(crate::authz::caller_is_admin());
    }

    #[pg_test(error = "tenant name must not be empty")]
    fn empty_tenant_name_is_rejected() {
        Spi::run("SELECT wa.create_tenant('   ')").unwrap();
    }

    #[pg_test(error = "waba_id must be a numeric Meta id")]
    fn non_numeric_waba_is_rejected() {
        let tenant = Spi::get_one::<pgrx::Uuid>("SELECT wa.create_tenant('x')")
            .unwrap()
            .unwrap();
        Spi::run_with_args(
            "SELECT wa.connect_tenant($1, 'abc', '2001', $2)",
            &[tenant.into(), TOKEN.into()],
        )
        .unwrap();
    }

    /// Nodes of a JSON plan that read a table other than by probing an index with a key from
    /// elsewhere in the plan (`k.wamid`), a parameter other than the tenant (`$3`) or a list of
    /// keys (`= ANY`): a scan of the whole table or of all of a tenant's rows.
    fn scans_without_probe(node: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(table) = node.get("Relation Name").and_then(|r| r.as_str()) {
            let kind = node["Node Type"].as_str().unwrap_or("?");
            let cond = node["Index Cond"].as_str().unwrap_or("");
            // $1 is the tenant in these statements: `tenant_id = $1` alone reads all its rows.
            let probes = cond.contains("= ANY (")
                || cond.split(" = ").skip(1).any(|rhs| {
                    let operand = rhs.split([')', ' ']).next().unwrap_or("");
                    let operand = operand.trim_start_matches('(');
                    operand.contains('.') || (operand.starts_with('$') && operand != "$1")
                });
            // wa.tenants is keyed by tenant_id alone: `tenant_id = $1` there is one row (the
            // tenant's notification channel), not all of the tenant's rows.
            let tenant_row = table == "tenants" && cond == "(tenant_id = $1)";
            let ok = match kind {
                "ModifyTable" => true,
                "Index Scan" | "Index Only Scan" => probes || tenant_row,
                _ => false,
            };
            if !ok {
                out.push(format!("{kind} on {table} ({cond})"));
            }
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            scans_without_probe(child, out);
        }
    }

    /// The set-based ingest statements probe an index per message for every table they read,
    /// with the settings they run with, on tables of sizes where a hash join over a scan of the
    /// whole table looks cheaper to the planner than probes (as it did before the lookups were
    /// written as LATERAL … LIMIT 1 and bitmap scans were off).
    #[pg_test]
    fn ingest_statements_probe_indexes_whatever_the_table_size() {
        use crate::ingest::inbound::{
            LOOKUP, WRITE, WRITE_ONE, WRITE_ONE_WITH_MEDIA, WRITE_WITH_MEDIA,
        };
        let tenant = new_connected_tenant("Hotel A", "1001", "2001");
        for (name, value) in crate::plans::GENERIC_PLAN_SETTINGS {
            let (name, value) = (name.to_str().unwrap(), value.to_str().unwrap());
            Spi::run(&format!("SET LOCAL {name} = {value}")).unwrap();
        }
        let write_types = "uuid, text, text[], text[], text[], jsonb[], float8[], text[], text[]";
        let one_types = "uuid, text, text, text, text, jsonb, float8, text, text";
        let statements = [
            (
                "lookup",
                "uuid, text, text[], text[], text[], text[], text[]",
                LOOKUP,
            ),
            ("write", write_types, WRITE),
            ("write_media", write_types, WRITE_WITH_MEDIA),
            ("write_one", one_types, WRITE_ONE),
            ("write_one_media", one_types, WRITE_ONE_WITH_MEDIA),
        ];
        for (name, types, sql) in statements {
            Spi::run(&format!("PREPARE {name}({types}) AS {sql}")).unwrap();
        }
        // The planner's choice depends on the sizes: look at several.
        let mut customers = 0;
        for size in [50, 500, 5000] {
            Spi::run_with_args(
                "WITH c AS (
                     INSERT INTO wa.contacts (tenant_id, wa_id, profile_name)
                     SELECT $1::uuid, (15550000000 + g)::text, 'Guest ' || g
                       FROM generate_series($2, $3) g
                     RETURNING tenant_id, contact_id),
                 v AS (
                     INSERT INTO wa.conversations (tenant_id, phone_number_id, contact_id)
                     SELECT tenant_id, '2001', contact_id FROM c
                     RETURNING tenant_id, conversation_id)
                 INSERT INTO wa.messages (tenant_id, conversation_id, direction, type, content,
                                          status, wamid)
                 SELECT v.tenant_id, v.conversation_id, 'inbound', 'text', '{}', 'received',
                        'wamid.' || g || '.' || v.conversation_id
                   FROM v, generate_series(1, 5) g",
                &[tenant.as_str().into(), (customers + 1).into(), size.into()],
            )
            .unwrap();
            customers = size;
            Spi::run("ANALYZE wa.contacts, wa.conversations, wa.messages").unwrap();
            for (name, types, _) in statements {
                let nulls = vec!["NULL"; types.split(',').count()].join(", ");
                let plan = Spi::get_one::<pgrx::Json>(&format!(
                    "EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})"
                ))
                .unwrap()
                .unwrap()
                .0;
                let mut bad = Vec::new();
                scans_without_probe(&plan[0]["Plan"], &mut bad);
                assert!(
                    bad.is_empty(),
                    "{name}, {size} customers: {bad:?}\n{plan:#}"
                );
            }
        }
    }

    /// Runs the worker's claim with capacity `capacity` and a default budget of `budget` per
    /// number; returns the recipients of the claimed rows in the order of their priority.
    fn claim(capacity: i64, budget: i32) -> Vec<(String, String, i16)> {
        let _nested = crate::plans::GenericPlans::with(&crate::plans::NESTED_LOOP_PLAN_SETTINGS);
        let empty_text: Vec<String> = Vec::new();
        let empty_uuid: Vec<pgrx::Uuid> = Vec::new();
        let empty_ids: Vec<i64> = Vec::new();
        let ids: Vec<i64> = Spi::connect_mut(|c| {
            let rows = c.update(
                crate::worker::sql::CLAIM,
                None,
                &[
                    capacity.into(),
                    empty_text.clone().into(),
                    pgrx::JsonB(serde_json::json!({})).into(),
                    budget.into(),
                    30.0f64.into(),
                    empty_uuid.into(),
                    empty_ids.into(),
                    7i64.into(),
                ],
            )?;
            rows.map(|r| r.get::<i64>(1).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
        Spi::connect(|c| {
            c.select(
                "SELECT phone_number_id, recipient, priority FROM wa.outbox
                  WHERE outbox_id = ANY ($1) ORDER BY priority, outbox_id",
                None,
                &[ids.into()],
            )?
            .map(|r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<i16>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .unwrap()
    }

    fn enqueue(tenant: &str, phone: &str, recipient: &str, priority: i16, held: bool) {
        Spi::run_with_args(
            "INSERT INTO wa.outbox (tenant_id, kind, phone_number_id, recipient, payload, priority,
                                    next_attempt_at)
             VALUES ($1::uuid, 'message', $2, $3, '{}', $4,
                     CASE WHEN $5 THEN 'infinity'::timestamptz ELSE now() END)",
            &[
                tenant.into(),
                phone.into(),
                recipient.into(),
                priority.into(),
                held.into(),
            ],
        )
        .unwrap();
    }

    /// Within a claim, numbers take turns and each number's most urgent rows go first; a
    /// number's backlog never crowds out another number; per customer, order is kept within a
    /// priority and a more urgent message is not held back by a less urgent one.
    #[pg_test]
    fn claims_take_numbers_in_turn_and_the_most_urgent_rows_first() {
        let a = new_connected_tenant("Hotel A", "1001", "2001");
        let b = new_connected_tenant("Hotel B", "1002", "2002");
        let c = new_connected_tenant("Hotel C", "1003", "2003");
        // A's campaign: 50 marketing messages, then a service reply and an OTP.
        for i in 0..50 {
            enqueue(&a, "2001", &format!("campaign-{i}"), 6, false);
        }
        enqueue(&a, "2001", "reply", 3, false);
        enqueue(&a, "2001", "otp", 2, false);
        // B: one ordinary message, queued after all of A's.
        enqueue(&b, "2002", "guest", 4, false);
        // C: two marketing messages to one customer, then a reply to the same customer; and a
        // held row, which is never claimed however urgent.
        enqueue(&c, "2003", "same", 6, false);
        enqueue(&c, "2003", "same", 6, false);
        enqueue(&c, "2003", "same", 3, false);
        enqueue(&c, "2003", "held", 0, true);

        // Three rows: every number's first, most urgent first, before any number's second.
        let first = claim(3, 10);
        assert_eq!(
            first,
            vec![
                ("2001".into(), "otp".into(), 2),
                ("2003".into(), "same".into(), 3),
                ("2002".into(), "guest".into(), 4),
            ],
        );
        // Then A's reply (its next most urgent), C's first marketing message (the second waits
        // for it: same customer, same priority), and A's campaign up to its budget of 10.
        let second = claim(100, 10);
        assert_eq!(second.len(), 11, "{second:?}");
        assert_eq!(second[0], ("2001".into(), "reply".into(), 3));
        assert_eq!(
            second
                .iter()
                .filter(|r| r.0 == "2003")
                .cloned()
                .collect::<Vec<_>>(),
            vec![("2003".into(), "same".into(), 6)]
        );
        let campaign: Vec<String> = second
            .iter()
            .filter(|r| r.0 == "2001" && r.2 == 6)
            .map(|r| r.1.clone())
            .collect();
        assert_eq!(
            campaign,
            (0..9).map(|i| format!("campaign-{i}")).collect::<Vec<_>>()
        );
        // Nothing is claimed twice while leased; the held row stays.
        let third = claim(100, 10);
        assert!(third.iter().all(|r| r.0 == "2001" && r.2 == 6), "{third:?}");
        assert_eq!(third.len(), 10, "{third:?}");
        assert_eq!(third[0].1, "campaign-9");
    }
}
