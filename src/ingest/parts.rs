//! From parsed changes to the parts we apply, and applying each with the SQL functions in
//! `sql/ingest.sql`.

use super::inbound;
use crate::plans;
use pgrx::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use whatsapp_client::webhook::{Change, ChangeValue, MessagesValue};

/// One thing to apply, with where it came from in the delivery.
pub struct Planned {
    pub at: String,
    pub part: Part,
}

impl Planned {
    /// An inbound media message: applying it queues a download for the worker.
    pub fn has_media(&self) -> bool {
        matches!(&self.part, Part::Inbound(m) if m.media)
    }
}

pub enum Part {
    Inbound(inbound::Message),
    Status(Status),
    Account {
        waba: Option<String>,
        event: String,
        detail: Value,
    },
    Template {
        waba: Option<String>,
        template_id: String,
        name: Option<String>,
        language: Option<String>,
        status: Option<String>,
        quality: Option<String>,
        category: Option<String>,
        reason: Option<String>,
    },
    Number {
        waba: Option<String>,
        display: String,
        event: Option<String>,
        limit: Option<String>,
        verified_name: Option<String>,
        name_status: Option<String>,
    },
    /// Recorded in the tenant's account events only (capabilities, preferences, errors).
    Note {
        waba: Option<String>,
        phone: Option<String>,
        kind: String,
        detail: Value,
    },
    /// A field we do not model: kept in the raw log, counted as an event.
    Ignored,
}

/// A status of an outbound message, applied with the other statuses of its number
/// (`apply_statuses`).
pub struct Status {
    pub phone: String,
    wamid: String,
    status: String,
    timestamp: Option<i64>,
    callback: Option<String>,
    /// The status object (pricing, conversation and errors are read from it).
    raw: Value,
}

/// Replaces NUL characters, which jsonb cannot store, in every string of a JSON value.
fn without_nul(value: &Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), without_nul(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// Message types become a CHECKed identifier: lower case letters and '_' only.
fn type_name(kind: &str) -> String {
    let t: String = kind
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphabetic() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

fn at(change: &Change<'_>, part: &str) -> String {
    format!(
        "entry[{}].changes[{}]{}",
        change.entry_index, change.change_index, part
    )
}

/// Turns one change into parts to apply; what cannot be read goes to `errors`.
pub fn plan(change: &Change<'_>, has_nul: bool, out: &mut Vec<Planned>, errors: &mut Vec<Value>) {
    let clean = |v: &Value| if has_nul { without_nul(v) } else { v.clone() };
    let entry_waba = change.entry_id.as_deref().map(str::to_owned);
    match &change.value {
        ChangeValue::Messages(value) => plan_messages(change, value, &clean, out, errors),
        ChangeValue::UserPreferences(value) => {
            for (i, pref) in value.user_preferences.iter().enumerate() {
                match pref {
                    Ok(p) => out.push(Planned {
                        at: at(change, &format!(".user_preferences[{i}]")),
                        part: Part::Note {
                            waba: entry_waba.clone(),
                            phone: owned(value.phone_number_id),
                            kind: "user_preferences".into(),
                            detail: clean(p.raw),
                        },
                    }),
                    Err(e) => errors.push(json!({
                        "at": at(change, &format!(".user_preferences[{}]", e.index)),
                        "reason": e.reason,
                    })),
                }
            }
        }
        ChangeValue::AccountUpdate(update) => match update.event {
            Some(event) => out.push(Planned {
                at: at(change, ""),
                part: Part::Account {
                    waba: update
                        .waba_id_or_entry(change.entry_id.as_deref())
                        .map(|w| w.into_owned()),
                    event: event.to_string(),
                    detail: clean(update.raw),
                },
            }),
            None => errors.push(json!({ "at": at(change, ""), "reason": "account_update has no event" })),
        },
        ChangeValue::TemplateStatus(t) => plan_template(
            change,
            t.template_id.as_deref(),
            out,
            errors,
            |template_id| {
                Part::Template {
                    waba: entry_waba,
                    template_id,
                    name: owned(t.template_name),
                    language: owned(t.language),
                    status: owned(t.event),
                    quality: None,
                    category: owned(t.category),
                    reason: owned(t.reason),
                }
            },
        ),
        ChangeValue::TemplateQuality(t) => plan_template(
            change,
            t.template_id.as_deref(),
            out,
            errors,
            |template_id| {
                Part::Template {
                    waba: entry_waba,
                    template_id,
                    name: owned(t.template_name),
                    language: owned(t.language),
                    status: None,
                    quality: owned(t.new_quality_score),
                    category: None,
                    reason: None,
                }
            },
        ),
        ChangeValue::TemplateCategory(t) => plan_template(
            change,
            t.template_id.as_deref(),
            out,
            errors,
            |template_id| {
                Part::Template {
                    waba: entry_waba,
                    template_id,
                    name: owned(t.template_name),
                    language: owned(t.language),
                    status: None,
                    quality: None,
                    category: owned(t.new_category),
                    reason: None,
                }
            },
        ),
        ChangeValue::PhoneNumberQuality(q) => match &q.display_phone_number {
            Some(display) => out.push(Planned {
                at: at(change, ""),
                part: Part::Number {
                    waba: entry_waba,
                    display: display.to_string(),
                    event: owned(q.event),
                    limit: owned(q.current_limit),
                    verified_name: None,
                    name_status: None,
                },
            }),
            None => errors.push(json!({ "at": at(change, ""), "reason": "phone_number_quality_update has no display_phone_number" })),
        },
        ChangeValue::PhoneNumberName(n) => match &n.display_phone_number {
            Some(display) => out.push(Planned {
                at: at(change, ""),
                part: Part::Number {
                    waba: entry_waba,
                    display: display.to_string(),
                    event: None,
                    limit: None,
                    verified_name: owned(n.requested_verified_name),
                    name_status: owned(n.decision),
                },
            }),
            None => errors.push(json!({ "at": at(change, ""), "reason": "phone_number_name_update has no display_phone_number" })),
        },
        ChangeValue::BusinessCapability(b) => out.push(Planned {
            at: at(change, ""),
            part: Part::Note {
                waba: entry_waba,
                phone: None,
                kind: "business_capability_update".into(),
                detail: clean(b.raw),
            },
        }),
        ChangeValue::Unknown { .. } => out.push(Planned { at: at(change, ""), part: Part::Ignored }),
        ChangeValue::Invalid { reason, .. } => {
            errors.push(json!({ "at": at(change, ""), "reason": reason }))
        }
    }
}

fn plan_template(
    change: &Change<'_>,
    template_id: Option<&str>,
    out: &mut Vec<Planned>,
    errors: &mut Vec<Value>,
    part: impl FnOnce(String) -> Part,
) {
    match template_id {
        Some(id) if !id.is_empty() => out.push(Planned {
            at: at(change, ""),
            part: part(id.to_string()),
        }),
        _ => errors.push(
            json!({ "at": at(change, ""), "reason": "template update has no message_template_id" }),
        ),
    }
}

fn plan_messages(
    change: &Change<'_>,
    value: &MessagesValue<'_>,
    clean: &dyn Fn(&Value) -> Value,
    out: &mut Vec<Planned>,
    errors: &mut Vec<Value>,
) {
    let Some(phone) = value.phone_number_id else {
        errors.push(json!({ "at": at(change, ".metadata"), "reason": "messages value has no metadata.phone_number_id" }));
        return;
    };
    for (i, message) in value.messages.iter().enumerate() {
        match message {
            Ok(m) => {
                let contact = value.contact(m.from_user_id, m.from);
                out.push(Planned {
                    at: at(change, &format!(".messages[{i}]")),
                    part: Part::Inbound(inbound::Message {
                        phone: phone.to_string(),
                        wamid: m.id.to_string(),
                        wa_id: owned(m.from).or_else(|| contact.and_then(|c| owned(c.wa_id))),
                        user_id: owned(m.from_user_id)
                            .or_else(|| contact.and_then(|c| owned(c.user_id))),
                        name: contact.and_then(|c| owned(c.name)),
                        username: contact.and_then(|c| owned(c.username)),
                        kind: type_name(m.kind),
                        content: clean(m.raw),
                        timestamp: m.timestamp,
                        context_wamid: m.context.as_ref().and_then(|c| owned(c.id)),
                        preview: m.preview().replace('\0', "\u{FFFD}"),
                        media: m.media_id().is_some(),
                    }),
                });
            }
            Err(e) => errors.push(json!({
                "at": at(change, &format!(".messages[{}]", e.index)),
                "reason": e.reason,
            })),
        }
    }
    for (i, status) in value.statuses.iter().enumerate() {
        match status {
            Ok(s) => {
                out.push(Planned {
                    at: at(change, &format!(".statuses[{i}]")),
                    part: Part::Status(Status {
                        phone: phone.to_string(),
                        wamid: s.id.to_string(),
                        status: s.status.as_str().to_string(),
                        timestamp: s.timestamp,
                        callback: owned(s.biz_opaque_callback_data),
                        raw: clean(s.raw),
                    }),
                });
            }
            Err(e) => errors.push(json!({
                "at": at(change, &format!(".statuses[{}]", e.index)),
                "reason": e.reason,
            })),
        }
    }
    for e in value.contacts.iter().filter_map(|c| c.as_ref().err()) {
        errors.push(
            json!({ "at": at(change, &format!(".contacts[{}]", e.index)), "reason": e.reason }),
        );
    }
    if !value.errors.is_empty() {
        out.push(Planned {
            at: at(change, ".errors"),
            part: Part::Note {
                waba: change.entry_id.as_deref().map(str::to_owned),
                phone: Some(phone.to_string()),
                kind: "webhook_errors".into(),
                detail: clean(value.raw.get("errors").unwrap_or(&Value::Null)),
            },
        });
    }
}

/// How every reason for a part no tenant can take yet begins: such parts are parked, not
/// failed (see `super::park`).
pub const UNROUTED: &str = "no tenant is connected to";

/// Tenant lookups, cached for one delivery (a batch usually names one number many times).
#[derive(Default)]
pub struct Router {
    cache: HashMap<(&'static str, String), Option<pgrx::Uuid>>,
    /// The WABAs and numbers the delivery named that no tenant is connected to.
    pub missing: std::collections::BTreeSet<(&'static str, String)>,
}

impl Router {
    fn tenant(&mut self, kind: &'static str, id: &str) -> Result<Option<pgrx::Uuid>, String> {
        if let Some(t) = self.cache.get(&(kind, id.to_string())) {
            return Ok(*t);
        }
        let t = plans::get_one::<pgrx::Uuid>(
            "SELECT tenant_id FROM wa.routes WHERE kind = $1 AND external_id = $2",
            &[plans::TEXT, plans::TEXT],
            &[kind.into(), id.into()],
        )
        .map_err(|e| e.to_string())?;
        self.cache.insert((kind, id.to_string()), t);
        if t.is_none() {
            self.missing.insert((kind, id.to_string()));
        }
        Ok(t)
    }

    pub fn require(&mut self, kind: &'static str, id: &str) -> Result<pgrx::Uuid, String> {
        self.tenant(kind, id)?.ok_or_else(|| {
            let what = if kind == "waba" {
                "WABA"
            } else {
                "phone number id"
            };
            format!("{UNROUTED} {what} {id}")
        })
    }

    /// The tenant of a WABA, or else of a phone number.
    fn either(&mut self, waba: Option<&str>, phone: Option<&str>) -> Result<pgrx::Uuid, String> {
        if let Some(w) = waba
            && let Some(t) = self.tenant("waba", w)?
        {
            return Ok(t);
        }
        if let Some(p) = phone
            && let Some(t) = self.tenant("phone_number", p)?
        {
            return Ok(t);
        }
        Err(format!(
            "{UNROUTED} WABA {} or phone number id {}",
            waba.unwrap_or("-"),
            phone.unwrap_or("-")
        ))
    }
}

fn spi<T>(r: Result<T, pgrx::spi::SpiError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// Applies the statuses of one business number (`wa._apply_statuses`, set-based); returns
/// one outcome per status. The number's current tenant, if any: the function falls back to
/// its former tenants (released routes) for a message that is not the current tenant's.
pub fn apply_statuses(
    router: &mut Router,
    phone: &str,
    statuses: &[&Status],
) -> Result<Vec<Result<(), String>>, String> {
    fn column<T>(
        statuses: &[&Status],
        f: impl Fn(&Status) -> T,
    ) -> pgrx::datum::DatumWithOid<'static>
    where
        Vec<T>: IntoDatum,
    {
        statuses.iter().map(|s| f(s)).collect::<Vec<T>>().into()
    }
    let tenant = router.tenant("phone_number", phone)?;
    let unrouted = spi(plans::get_one::<Vec<i32>>(
        "SELECT wa._apply_statuses($1, $2, $3, $4, $5, $6, $7)",
        &[
            plans::UUID,
            plans::TEXT,
            plans::TEXT_ARRAY,
            plans::TEXT_ARRAY,
            plans::FLOAT8_ARRAY,
            plans::TEXT_ARRAY,
            plans::JSONB_ARRAY,
        ],
        &[
            tenant.into(),
            phone.into(),
            column(statuses, |s| s.wamid.clone()),
            column(statuses, |s| s.status.clone()),
            column(statuses, |s| s.timestamp.map(|t| t as f64)),
            column(statuses, |s| s.callback.clone()),
            column(statuses, |s| pgrx::JsonB(s.raw.clone())),
        ],
    ))?;
    let mut outcomes: Vec<Result<(), String>> = vec![Ok(()); statuses.len()];
    for i in unrouted.unwrap_or_default() {
        let slot = usize::try_from(i - 1)
            .ok()
            .and_then(|i| outcomes.get_mut(i))
            .ok_or_else(|| format!("wa._apply_statuses returned position {i}"))?;
        *slot = Err(format!("{UNROUTED} phone number id {phone}"));
        router.missing.insert(("phone_number", phone.to_string()));
    }
    Ok(outcomes)
}

/// Applies one part. A PostgreSQL error inside raises (the caller's subtransaction catches
/// it); an expected problem (unknown tenant) is returned as the part's reason.
pub fn apply(planned: &Planned, router: &mut Router) -> Result<(), String> {
    match &planned.part {
        Part::Inbound(m) => {
            let tenant = router.require("phone_number", &m.phone)?;
            inbound::apply(tenant, &m.phone, &[m]);
            Ok(())
        }
        Part::Status(status) => apply_statuses(router, &status.phone, &[status])?.remove(0),
        Part::Account {
            waba,
            event,
            detail,
        } => {
            let waba = waba.as_deref().ok_or("account_update names no WABA")?;
            let tenant = router.require("waba", waba)?;
            spi(Spi::get_one_with_args::<String>(
                "SELECT wa._apply_account_update($1, $2, $3, $4)",
                &[
                    tenant.into(),
                    waba.into(),
                    event.as_str().into(),
                    pgrx::JsonB(detail.clone()).into(),
                ],
            ))?;
            Ok(())
        }
        Part::Template {
            waba,
            template_id,
            name,
            language,
            status,
            quality,
            category,
            reason,
        } => {
            let waba_id = waba
                .as_deref()
                .ok_or("template update names no WABA (entry.id)")?;
            let tenant = router.require("waba", waba_id)?;
            spi(Spi::run_with_args(
                "SELECT wa._apply_template_update($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    tenant.into(),
                    waba_id.into(),
                    template_id.as_str().into(),
                    name.clone().into(),
                    language.clone().into(),
                    status.clone().into(),
                    quality.clone().into(),
                    category.clone().into(),
                    reason.clone().into(),
                ],
            ))
        }
        Part::Number {
            waba,
            display,
            event,
            limit,
            verified_name,
            name_status,
        } => {
            let waba_id = waba
                .as_deref()
                .ok_or("phone number update names no WABA (entry.id)")?;
            let tenant = router.require("waba", waba_id)?;
            let updated = spi(Spi::get_one_with_args::<i32>(
                "SELECT wa._apply_number_update($1, $2, $3, $4, $5, $6, $7)",
                &[
                    tenant.into(),
                    waba_id.into(),
                    display.as_str().into(),
                    event.clone().into(),
                    limit.clone().into(),
                    verified_name.clone().into(),
                    name_status.clone().into(),
                ],
            ))?;
            if updated == Some(0) {
                return Err(format!(
                    "no phone number {display} is known in WABA {waba_id}"
                ));
            }
            Ok(())
        }
        Part::Note {
            waba,
            phone,
            kind,
            detail,
        } => {
            let tenant = router.either(waba.as_deref(), phone.as_deref())?;
            spi(Spi::run_with_args(
                "INSERT INTO wa.account_events (tenant_id, kind, detail) VALUES ($1, $2, $3)",
                &[
                    tenant.into(),
                    kind.as_str().into(),
                    pgrx::JsonB(detail.clone()).into(),
                ],
            ))
        }
        Part::Ignored => Ok(()),
    }
}
