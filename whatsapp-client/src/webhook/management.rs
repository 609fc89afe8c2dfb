//! Account-level webhooks: account updates, template status/quality/category, phone number
//! quality and name, business capabilities. Every field is optional; unknown fields stay in
//! `raw`.

use serde_json::Value;
use std::borrow::Cow;

use super::json::{arr, id, int, obj, s};

/// `account_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountUpdate<'a> {
    pub raw: &'a Value,
    /// `PARTNER_ADDED`, `PARTNER_REMOVED`, `PARTNER_APP_INSTALLED`, `PARTNER_APP_UNINSTALLED`,
    /// `ACCOUNT_VIOLATION`, `ACCOUNT_RESTRICTION`, `DISABLED_UPDATE`, `ACCOUNT_DELETED`,
    /// `ACCOUNT_OFFBOARDED`, `ACCOUNT_RECONNECTED`, `AUTH_INTL_PRICE_ELIGIBILITY_UPDATE`, …
    pub event: Option<&'a str>,
    /// `waba_info.waba_id`: the customer's WABA. For `PARTNER_*` events `entry.id` is the
    /// partner's own id, so this, not `entry.id`, identifies the tenant's account.
    pub waba_id: Option<Cow<'a, str>>,
    /// `waba_info.owner_business_id`
    pub owner_business_id: Option<Cow<'a, str>>,
    /// `waba_info.partner_app_id`
    pub partner_app_id: Option<Cow<'a, str>>,
    pub phone_number: Option<Cow<'a, str>>,
    /// `ban_info.waba_ban_state` (e.g. `DISABLE`, `REINSTATE`, `SCHEDULE_FOR_DISABLE`)
    pub ban_state: Option<&'a str>,
    /// `ban_info.waba_ban_date`
    pub ban_date: Option<&'a str>,
    /// `violation_info.violation_type`
    pub violation_type: Option<&'a str>,
    /// `restriction_info[]` (Meta has also sent a single object under `restrictions`).
    pub restrictions: Vec<Restriction<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Restriction<'a> {
    /// e.g. `RESTRICTED_BIZ_INITIATED_MESSAGING`, `RESTRICTED_ADD_PHONE_NUMBER_ACTION`
    pub restriction_type: Option<&'a str>,
    pub expiration: Option<Cow<'a, str>>,
}

impl<'a> AccountUpdate<'a> {
    pub(crate) fn parse(v: &'a Value) -> AccountUpdate<'a> {
        let waba_info = obj(v, "waba_info");
        let ban_info = obj(v, "ban_info");
        let restriction = |r: &'a Value| Restriction {
            restriction_type: s(r, "restriction_type"),
            expiration: id(r, "expiration"),
        };
        let mut restrictions: Vec<Restriction<'a>> =
            arr(v, "restriction_info").iter().map(restriction).collect();
        if let Some(r) = obj(v, "restriction_info").or_else(|| obj(v, "restrictions")) {
            restrictions.push(restriction(r));
        }
        restrictions.extend(arr(v, "restrictions").iter().map(restriction));
        AccountUpdate {
            raw: v,
            event: s(v, "event"),
            waba_id: waba_info.and_then(|w| id(w, "waba_id")),
            owner_business_id: waba_info.and_then(|w| id(w, "owner_business_id")),
            partner_app_id: waba_info.and_then(|w| id(w, "partner_app_id")),
            phone_number: id(v, "phone_number"),
            ban_state: ban_info.and_then(|b| s(b, "waba_ban_state")),
            ban_date: ban_info.and_then(|b| s(b, "waba_ban_date")),
            violation_type: obj(v, "violation_info").and_then(|i| s(i, "violation_type")),
            restrictions,
        }
    }

    /// The WABA this event is about: `waba_info.waba_id`, or — only for events that are not
    /// `PARTNER_*` (whose `entry.id` is the partner's id) — the entry id.
    pub fn waba_id_or_entry(&self, entry_id: Option<&'a str>) -> Option<Cow<'a, str>> {
        if let Some(w) = &self.waba_id {
            return Some(w.clone());
        }
        if self.event.is_some_and(|e| e.starts_with("PARTNER_")) {
            return None;
        }
        entry_id.map(Cow::Borrowed)
    }
}

/// `message_template_status_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateStatusUpdate<'a> {
    pub raw: &'a Value,
    /// `APPROVED`, `REJECTED`, `PENDING`, `PAUSED`, `DISABLED`, `FLAGGED`, …
    pub event: Option<&'a str>,
    pub template_id: Option<Cow<'a, str>>,
    pub template_name: Option<&'a str>,
    pub language: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub category: Option<&'a str>,
    /// `other_info.title` (e.g. `FIRST_PAUSE`)
    pub other_title: Option<&'a str>,
    pub other_description: Option<&'a str>,
}

impl<'a> TemplateStatusUpdate<'a> {
    pub(crate) fn parse(v: &'a Value) -> Self {
        let other = obj(v, "other_info");
        TemplateStatusUpdate {
            raw: v,
            event: s(v, "event"),
            template_id: id(v, "message_template_id"),
            template_name: s(v, "message_template_name"),
            language: s(v, "message_template_language"),
            reason: s(v, "reason"),
            category: s(v, "message_template_category"),
            other_title: other.and_then(|o| s(o, "title")),
            other_description: other.and_then(|o| s(o, "description")),
        }
    }
}

/// `message_template_quality_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateQualityUpdate<'a> {
    pub raw: &'a Value,
    /// `GREEN`, `YELLOW`, `RED`, `UNKNOWN`
    pub previous_quality_score: Option<&'a str>,
    pub new_quality_score: Option<&'a str>,
    pub template_id: Option<Cow<'a, str>>,
    pub template_name: Option<&'a str>,
    pub language: Option<&'a str>,
}

impl<'a> TemplateQualityUpdate<'a> {
    pub(crate) fn parse(v: &'a Value) -> Self {
        TemplateQualityUpdate {
            raw: v,
            previous_quality_score: s(v, "previous_quality_score"),
            new_quality_score: s(v, "new_quality_score"),
            template_id: id(v, "message_template_id"),
            template_name: s(v, "message_template_name"),
            language: s(v, "message_template_language"),
        }
    }
}

/// `template_category_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateCategoryUpdate<'a> {
    pub raw: &'a Value,
    pub template_id: Option<Cow<'a, str>>,
    pub template_name: Option<&'a str>,
    pub language: Option<&'a str>,
    pub previous_category: Option<&'a str>,
    pub new_category: Option<&'a str>,
    pub correct_category: Option<&'a str>,
}

impl<'a> TemplateCategoryUpdate<'a> {
    pub(crate) fn parse(v: &'a Value) -> Self {
        TemplateCategoryUpdate {
            raw: v,
            template_id: id(v, "message_template_id"),
            template_name: s(v, "message_template_name"),
            language: s(v, "message_template_language"),
            previous_category: s(v, "previous_category").or_else(|| s(v, "old_category")),
            new_category: s(v, "new_category"),
            correct_category: s(v, "correct_category"),
        }
    }
}

/// `phone_number_quality_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneNumberQualityUpdate<'a> {
    pub raw: &'a Value,
    pub display_phone_number: Option<Cow<'a, str>>,
    /// `FLAGGED`, `UNFLAGGED`, `UPGRADE`, `DOWNGRADE`, `ONBOARDING`, `THROUGHPUT_UPGRADE`
    pub event: Option<&'a str>,
    /// `TIER_250`, `TIER_2K`, …, `TIER_UNLIMITED`
    pub current_limit: Option<&'a str>,
    pub old_limit: Option<&'a str>,
    pub max_daily_conversation_per_phone: Option<i64>,
    /// A tier name (`TIER_2K`) or a number, depending on the API version.
    pub max_daily_conversations_per_business: Option<Cow<'a, str>>,
}

impl<'a> PhoneNumberQualityUpdate<'a> {
    pub(crate) fn parse(v: &'a Value) -> Self {
        PhoneNumberQualityUpdate {
            raw: v,
            display_phone_number: id(v, "display_phone_number"),
            event: s(v, "event"),
            current_limit: s(v, "current_limit"),
            old_limit: s(v, "old_limit"),
            max_daily_conversation_per_phone: int(v, "max_daily_conversation_per_phone"),
            max_daily_conversations_per_business: id(v, "max_daily_conversations_per_business"),
        }
    }
}

/// `phone_number_name_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneNumberNameUpdate<'a> {
    pub raw: &'a Value,
    pub display_phone_number: Option<Cow<'a, str>>,
    /// `APPROVED`, `REJECTED`, `DEFERRED`
    pub decision: Option<&'a str>,
    pub requested_verified_name: Option<&'a str>,
    pub rejection_reason: Option<&'a str>,
}

impl<'a> PhoneNumberNameUpdate<'a> {
    pub(crate) fn parse(v: &'a Value) -> Self {
        PhoneNumberNameUpdate {
            raw: v,
            display_phone_number: id(v, "display_phone_number"),
            decision: s(v, "decision"),
            requested_verified_name: s(v, "requested_verified_name"),
            rejection_reason: s(v, "rejection_reason"),
        }
    }
}

/// `business_capability_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessCapabilityUpdate<'a> {
    pub raw: &'a Value,
    /// -1 means unlimited.
    pub max_daily_conversation_per_phone: Option<i64>,
    pub max_daily_conversations_per_business: Option<Cow<'a, str>>,
    pub max_phone_numbers_per_business: Option<i64>,
    pub max_phone_numbers_per_waba: Option<i64>,
}

impl<'a> BusinessCapabilityUpdate<'a> {
    pub(crate) fn parse(v: &'a Value) -> Self {
        BusinessCapabilityUpdate {
            raw: v,
            max_daily_conversation_per_phone: int(v, "max_daily_conversation_per_phone"),
            max_daily_conversations_per_business: id(v, "max_daily_conversations_per_business"),
            max_phone_numbers_per_business: int(v, "max_phone_numbers_per_business"),
            max_phone_numbers_per_waba: int(v, "max_phone_numbers_per_waba"),
        }
    }
}
