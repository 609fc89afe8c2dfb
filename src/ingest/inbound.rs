//! Inbound messages, applied set-based: all the messages of a delivery for one business
//! number in two statements, whatever their number — one that looks up replays, contacts and
//! conversations, one that stores the messages, queues media downloads, moves the
//! conversations and notifies. Only customers seen for the first time or whose details
//! changed take the row-by-row path (`wa._upsert_contact`, `wa._conversation_for`). A
//! delivery of one message, the usual case, is written by a simpler statement with the same
//! effect (tests/ingest.rs compares one batched delivery with the same messages one by one).
//!
//! Row by row, every message cost about seven statements, and PostgreSQL pays for each
//! statement's executor start-up (constraints, triggers, indexes) whatever its row count.

use crate::plans::{self, FLOAT8, FLOAT8_ARRAY, JSONB, JSONB_ARRAY, TEXT, TEXT_ARRAY, UUID};
use pgrx::datum::{DatumWithOid, IntoDatum};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// One inbound message as the webhook gave it.
pub struct Message {
    pub phone: String,
    pub wamid: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    /// The message type, already a valid type name.
    pub kind: String,
    pub content: Value,
    pub timestamp: Option<i64>,
    pub context_wamid: Option<String>,
    pub preview: String,
    /// An image, audio, video, document or sticker with a media id: the worker downloads it.
    pub media: bool,
}

/// What the lookup found for one message.
struct Found {
    replay: bool,
    contact: Option<String>,
    /// The contact exists and this message tells nothing new about it.
    settled: bool,
    conversation: Option<String>,
}

// Every lookup is a LATERAL probe of a unique key with LIMIT 1: the plan is kept and generic,
// and this shape stays an index probe per message whatever sizes the planner guesses. Without
// the LIMIT the planner flattens a lateral subquery into an ordinary join and may hash it over
// all of the tenant's contacts; an EXISTS in the select list became a hashed subplan over all
// of the tenant's messages.
pub(crate) const LOOKUP: &str = "
    SELECT r.replay IS NOT NULL, c.contact_id::text,
           c.contact_id IS NOT NULL
             AND NOT ((c.wa_id IS NULL AND k.wa_id IS NOT NULL)
                      OR (c.user_id IS NULL AND k.user_id IS NOT NULL)
                      OR (k.name IS NOT NULL AND c.profile_name IS DISTINCT FROM k.name)
                      OR (k.username IS NOT NULL AND c.username IS DISTINCT FROM k.username)),
           v.conversation_id::text
      FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY
           AS k(wamid, wa_id, user_id, name, username, i)
      LEFT JOIN LATERAL (
          SELECT true AS replay FROM wa.messages m
           WHERE m.tenant_id = $1 AND m.wamid = k.wamid LIMIT 1) r ON true
      -- As wa._upsert_contact looks: by BSUID first, then (only if not found) by phone number.
      LEFT JOIN LATERAL (
          SELECT c.contact_id, c.wa_id, c.user_id, c.profile_name, c.username
            FROM wa.contacts c WHERE c.tenant_id = $1 AND c.user_id = k.user_id LIMIT 1) cu ON true
      LEFT JOIN LATERAL (
          SELECT c.contact_id, c.wa_id, c.user_id, c.profile_name, c.username
            FROM wa.contacts c
           WHERE cu.contact_id IS NULL AND c.tenant_id = $1 AND c.wa_id = k.wa_id LIMIT 1) cw ON true
      -- At most one of cu and cw is found, so column by column the found one's.
      CROSS JOIN LATERAL (
          SELECT COALESCE(cu.contact_id, cw.contact_id) AS contact_id,
                 COALESCE(cu.wa_id, cw.wa_id) AS wa_id,
                 COALESCE(cu.user_id, cw.user_id) AS user_id,
                 COALESCE(cu.profile_name, cw.profile_name) AS profile_name,
                 COALESCE(cu.username, cw.username) AS username) c
      LEFT JOIN LATERAL (
          SELECT v.conversation_id FROM wa.conversations v
           WHERE v.tenant_id = $1 AND v.phone_number_id = $2 AND v.contact_id = c.contact_id
           LIMIT 1) v ON true
     ORDER BY k.i";

/// The end of both write statements: the conversations move (reopened, unread count, last
/// message, service window) from `latest`, one row per conversation, and every stored message
/// is notified on the tenant's own channel (`wa.tenants.events_channel`, returned with the
/// payloads for `crate::notify`). `$key` names the
/// conversations to update, so that the plan fetches just those.
macro_rules! move_and_notify {
    ($key:literal) => {
        concat!(
            "
    moved AS (
        UPDATE wa.conversations v
           SET status = 'open',
               closed_at = NULL,
               last_message_preview = CASE WHEN v.last_message_at IS NULL
                                             OR l.created_at >= v.last_message_at
                                           THEN l.preview ELSE v.last_message_preview END,
               last_message_at = GREATEST(v.last_message_at, l.created_at),
               last_inbound_at = GREATEST(v.last_inbound_at, l.created_at),
               window_expires_at = GREATEST(v.window_expires_at, l.window_ends_at),
               unread_count = v.unread_count + l.n,
               updated_at = pg_catalog.now()
          FROM latest l
         WHERE v.tenant_id = $1 AND v.conversation_id = ",
            $key,
            "
           AND v.conversation_id = l.conversation_id)
    -- The tenant's channel and one notification per stored message (made by crate::notify).
    SELECT (SELECT t.events_channel FROM wa.tenants t WHERE t.tenant_id OPERATOR(pg_catalog.=) $1),
           ARRAY(SELECT pg_catalog.json_build_object(
                            'kind', 'message.received', 'tenant_id', $1,
                            'conversation_id', ins.conversation_id,
                            'message_id', ins.message_id)::pg_catalog.text
                   FROM ins)"
        )
    };
}

/// The CTE queueing media downloads (Meta's media URLs expire within minutes: the worker
/// fetches the file right away).
macro_rules! media_cte {
    () => {
        "
    media AS (
        INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, payload)
        SELECT $1, 'media_download', ins.message_id, $2, ins.content -> ins.type ->> 'id'
          FROM ins
         WHERE ins.type IN ('image', 'audio', 'video', 'document', 'sticker')
           AND ins.content -> ins.type ->> 'id' IS NOT NULL),"
    };
}

/// The write statement over arrays; `$media` is `media_cte!()`, or nothing when the delivery
/// has no media (every CTE that modifies a table costs its set-up on each execution).
macro_rules! write_sql {
    ($media:expr) => {
        concat!(
            "
    WITH k AS (
        SELECT * FROM unnest($3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::float8[],
                             $8::text[], $9::text[]) WITH ORDINALITY
               AS k(conversation_id, wamid, type, content, ts, context_wamid, preview, i)),
    ins AS (
        INSERT INTO wa.messages (tenant_id, conversation_id, direction, type, content, status,
                                 wamid, context_wamid, created_at)
        SELECT $1, k.conversation_id, 'inbound', k.type, k.content, 'received', k.wamid,
               k.context_wamid, COALESCE(pg_catalog.to_timestamp(k.ts), pg_catalog.now())
          FROM k
        ON CONFLICT (tenant_id, wamid) DO NOTHING
        RETURNING message_id, conversation_id, wamid, type, content, created_at),",
            $media,
            "
    -- Per conversation: how many arrived, and the latest (the last listed among equal times).
    latest AS (
        SELECT DISTINCT ON (ins.conversation_id)
               ins.conversation_id, ins.created_at, k.preview,
               ins.created_at OPERATOR(pg_catalog.+) interval '24 hours' AS window_ends_at,
               count(*) OVER (PARTITION BY ins.conversation_id) AS n
          FROM ins JOIN k ON k.wamid = ins.wamid
         ORDER BY ins.conversation_id, ins.created_at DESC, k.i DESC),",
            move_and_notify!("ANY ($3::uuid[])")
        )
    };
}

/// The write statement for exactly one message, most deliveries: the same effect with scalar
/// parameters and nothing to aggregate.
macro_rules! write_one_sql {
    ($media:expr) => {
        concat!(
            "
    WITH ins AS (
        INSERT INTO wa.messages (tenant_id, conversation_id, direction, type, content, status,
                                 wamid, context_wamid, created_at)
        VALUES ($1, $3::uuid, 'inbound', $5, $6, 'received', $4, $8,
                COALESCE(pg_catalog.to_timestamp($7), pg_catalog.now()))
        ON CONFLICT (tenant_id, wamid) DO NOTHING
        RETURNING message_id, conversation_id, type, content, created_at),",
            $media,
            "
    latest AS (SELECT ins.conversation_id, ins.created_at, $9::text AS preview,
                      ins.created_at OPERATOR(pg_catalog.+) interval '24 hours' AS window_ends_at,
                      1 AS n FROM ins),",
            move_and_notify!("$3::uuid")
        )
    };
}

pub(crate) const WRITE: &str = write_sql!("");
pub(crate) const WRITE_WITH_MEDIA: &str = write_sql!(media_cte!());
pub(crate) const WRITE_ONE: &str = write_one_sql!("");
pub(crate) const WRITE_ONE_WITH_MEDIA: &str = write_one_sql!(media_cte!());

/// One array parameter: `f` of every message.
fn column<'a, T>(msgs: &[&Message], f: impl Fn(&Message) -> T) -> DatumWithOid<'a>
where
    Vec<T>: IntoDatum,
{
    msgs.iter().map(|m| f(m)).collect::<Vec<T>>().into()
}

/// Raises (rolling back the caller's subtransaction) on an SPI failure, which is a bug rather
/// than bad input: the caller then applies the parts one by one and keeps the reason.
fn spi<T>(r: Result<T, pgrx::spi::SpiError>) -> T {
    r.unwrap_or_else(|e| pgrx::error!("applying inbound messages: {e}"))
}

fn lookup(tenant: pgrx::Uuid, phone: &str, msgs: &[&Message]) -> Vec<Found> {
    let args = [
        tenant.into(),
        phone.into(),
        column(msgs, |m| m.wamid.clone()),
        column(msgs, |m| m.wa_id.clone()),
        column(msgs, |m| m.user_id.clone()),
        column(msgs, |m| m.name.clone()),
        column(msgs, |m| m.username.clone()),
    ];
    let types = [
        UUID, TEXT, TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY,
    ];
    let _generic = plans::GenericPlans::enter();
    spi(plans::with_plan(
        LOOKUP,
        &types,
        &args,
        |client, plan, args| {
            client
                .update(plan, None, args)?
                .map(|row| {
                    Ok(Found {
                        replay: row.get::<bool>(1)?.unwrap_or(false),
                        contact: row.get::<String>(2)?,
                        settled: row.get::<bool>(3)?.unwrap_or(false),
                        conversation: row.get::<String>(4)?,
                    })
                })
                .collect()
        },
    ))
}

/// The contact and conversation of each new message: from the lookup where it settled them,
/// otherwise row by row, once per distinct customer of the delivery.
fn resolve(tenant: pgrx::Uuid, phone: &str, msgs: &[&Message], found: &[Found]) -> Vec<String> {
    type Customer<'m> = (
        Option<&'m str>,
        Option<&'m str>,
        Option<&'m str>,
        Option<&'m str>,
    );
    let mut contacts: HashMap<Customer<'_>, String> = HashMap::new();
    let mut conversations: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(msgs.len());
    for (m, f) in msgs.iter().zip(found) {
        let contact = match (&f.contact, f.settled) {
            (Some(c), true) => c.clone(),
            _ => {
                let key = (
                    m.wa_id.as_deref(),
                    m.user_id.as_deref(),
                    m.name.as_deref(),
                    m.username.as_deref(),
                );
                match contacts.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let c = spi(plans::get_one::<pgrx::Uuid>(
                            "SELECT wa._upsert_contact($1, $2, $3, $4, $5)",
                            &[UUID, TEXT, TEXT, TEXT, TEXT],
                            &[
                                tenant.into(),
                                m.wa_id.clone().into(),
                                m.user_id.clone().into(),
                                m.name.clone().into(),
                                m.username.clone().into(),
                            ],
                        ))
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| pgrx::error!("a contact was not stored"));
                        contacts.insert(key, c.clone());
                        c
                    }
                }
            }
        };
        let conversation = match &f.conversation {
            Some(v) if f.contact.as_deref() == Some(contact.as_str()) => v.clone(),
            _ => match conversations.get(&contact) {
                Some(v) => v.clone(),
                None => {
                    let v = spi(plans::get_one::<pgrx::Uuid>(
                        "SELECT wa._conversation_for($1, $2, $3::uuid)",
                        &[UUID, TEXT, TEXT],
                        &[tenant.into(), phone.into(), contact.as_str().into()],
                    ))
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| pgrx::error!("a conversation was not stored"));
                    conversations.insert(contact.clone(), v.clone());
                    v
                }
            },
        };
        out.push(conversation);
    }
    out
}

/// Runs a write statement and makes the notifications it returns.
fn write(sql: &'static str, types: &[pgrx::PgOid], args: &[DatumWithOid<'_>]) {
    let (channel, payloads) = spi(plans::with_plan(sql, types, args, |client, plan, args| {
        let row = client.update(plan, None, args)?.first();
        Ok((
            row.get::<String>(1)?,
            row.get::<Vec<String>>(2)?.unwrap_or_default(),
        ))
    }));
    if let Some(channel) = channel {
        crate::notify::send(&channel, &payloads);
    }
}

/// Applies the inbound messages of one business number of tenant `tenant`. A message whose
/// `wamid` is already stored (a replay, or listed twice) changes nothing. Raises on a
/// PostgreSQL error; the caller's subtransaction decides what survives.
pub fn apply(tenant: pgrx::Uuid, phone: &str, msgs: &[&Message]) {
    let mut seen = HashSet::new();
    let msgs: Vec<&Message> = msgs
        .iter()
        .copied()
        .filter(|m| seen.insert(m.wamid.as_str()))
        .collect();
    let found = lookup(tenant, phone, &msgs);
    if found.len() != msgs.len() {
        pgrx::error!(
            "inbound lookup returned {} rows for {} messages",
            found.len(),
            msgs.len()
        );
    }
    let (msgs, found): (Vec<&Message>, Vec<Found>) = msgs
        .into_iter()
        .zip(found)
        .filter(|(_, f)| !f.replay)
        .unzip();
    if msgs.is_empty() {
        return;
    }
    let conversations = resolve(tenant, phone, &msgs, &found);
    let media = msgs.iter().any(|m| m.media);
    let _generic = plans::GenericPlans::enter();
    if let ([m], [conversation]) = (msgs.as_slice(), conversations.as_slice()) {
        let args = [
            tenant.into(),
            phone.into(),
            conversation.as_str().into(),
            m.wamid.as_str().into(),
            m.kind.as_str().into(),
            pgrx::JsonB(m.content.clone()).into(),
            m.timestamp.map(|t| t as f64).into(),
            m.context_wamid.clone().into(),
            m.preview.as_str().into(),
        ];
        let types = [UUID, TEXT, TEXT, TEXT, TEXT, JSONB, FLOAT8, TEXT, TEXT];
        let sql = if media {
            WRITE_ONE_WITH_MEDIA
        } else {
            WRITE_ONE
        };
        return write(sql, &types, &args);
    }
    let args = [
        tenant.into(),
        phone.into(),
        conversations.into(),
        column(&msgs, |m| m.wamid.clone()),
        column(&msgs, |m| m.kind.clone()),
        column(&msgs, |m| pgrx::JsonB(m.content.clone())),
        column(&msgs, |m| m.timestamp.map(|t| t as f64)),
        column(&msgs, |m| m.context_wamid.clone()),
        column(&msgs, |m| m.preview.clone()),
    ];
    let types = [
        UUID,
        TEXT,
        TEXT_ARRAY,
        TEXT_ARRAY,
        TEXT_ARRAY,
        JSONB_ARRAY,
        FLOAT8_ARRAY,
        TEXT_ARRAY,
        TEXT_ARRAY,
    ];
    let sql = if media { WRITE_WITH_MEDIA } else { WRITE };
    write(sql, &types, &args);
}
