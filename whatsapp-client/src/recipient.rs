//! Who a message goes to: a phone number (`wa_id`) or a business-scoped user id (BSUID).
//!
//! Since 2026 WhatsApp users may hide their phone number behind a username; Meta then identifies
//! them to a business only by a BSUID such as `US.13491208655302741918` (ISO 3166 alpha-2 country
//! code, a period, up to 128 alphanumerics) or, for linked business portfolios, a parent BSUID
//! such as `US.ENT.11815799212886844830`. The Cloud API takes a phone number in the envelope's
//! `to` field and a BSUID in its `recipient` field (documented in Meta's "Business-scoped user
//! IDs" guide: when both are present `to` wins, so we only ever send one of them).

use std::fmt;

/// The longest identifier part of a BSUID that Meta documents ("up to 128 alphanumerics").
const MAX_BSUID_ID_LEN: usize = 128;
/// E.164 numbers have at most 15 digits; the shortest real numbers have about 7.
const MIN_PHONE_DIGITS: usize = 5;
const MAX_PHONE_DIGITS: usize = 15;

/// A parsed, normalised message recipient.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// A phone number as digits only (the `wa_id` form, no `+`).
    Phone(String),
    /// A business-scoped user id (or parent BSUID), kept exactly as Meta sent it.
    Bsuid(String),
}

/// Why a string is not a usable recipient. Carries no part of the input beyond its length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("recipient is empty")]
    Empty,
    #[error(
        "recipient is neither a phone number (digits, optional leading '+') nor a business-scoped user id like US.13491208655302741918"
    )]
    Malformed,
    #[error(
        "phone number must have between {MIN_PHONE_DIGITS} and {MAX_PHONE_DIGITS} digits, got {0}"
    )]
    PhoneLength(usize),
}

impl Recipient {
    /// Parses a phone number or BSUID.
    ///
    /// Phone numbers: surrounding whitespace is trimmed, one leading `+` is dropped, and the
    /// separators people type (spaces, `-`, `(`, `)`) are removed; what remains must be 5–15
    /// ASCII digits. BSUIDs: two upper-case ASCII letters, `.`, optionally `ENT.`, then 1–128
    /// ASCII alphanumerics; they are case-sensitive and kept verbatim.
    pub fn parse(input: &str) -> Result<Recipient, RecipientError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(RecipientError::Empty);
        }
        if is_bsuid(s) {
            return Ok(Recipient::Bsuid(s.to_owned()));
        }
        let rest = s.strip_prefix('+').unwrap_or(s);
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '(' | ')' => {}
                _ => return Err(RecipientError::Malformed),
            }
        }
        if digits.is_empty() {
            return Err(RecipientError::Malformed);
        }
        if !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits.len()) {
            return Err(RecipientError::PhoneLength(digits.len()));
        }
        Ok(Recipient::Phone(digits))
    }

    /// The normalised identifier (digits for a phone number, the BSUID verbatim).
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Phone(s) | Recipient::Bsuid(s) => s,
        }
    }

    /// The envelope field the Cloud API reads this recipient from: `to` or `recipient`.
    pub fn json_field(&self) -> &'static str {
        match self {
            Recipient::Phone(_) => "to",
            Recipient::Bsuid(_) => "recipient",
        }
    }

    pub fn is_bsuid(&self) -> bool {
        matches!(self, Recipient::Bsuid(_))
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Phone(s) => write!(f, "Phone({s})"),
            Recipient::Bsuid(s) => write!(f, "Bsuid({s})"),
        }
    }
}

impl std::str::FromStr for Recipient {
    type Err = RecipientError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Recipient::parse(s)
    }
}

/// True for `CC.<id>` and `CC.ENT.<id>` where CC is two upper-case ASCII letters and `<id>` is
/// 1–128 ASCII alphanumerics.
pub fn is_bsuid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 4 || !b[0].is_ascii_uppercase() || !b[1].is_ascii_uppercase() || b[2] != b'.' {
        return false;
    }
    let rest = &s[3..];
    let id = rest.strip_prefix("ENT.").unwrap_or(rest);
    !id.is_empty() && id.len() <= MAX_BSUID_ID_LEN && id.bytes().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_normalised_to_digits() {
        for (input, want) in [
            ("16505551234", "16505551234"),
            ("+16505551234", "16505551234"),
            ("  +1 (650) 555-1234 ", "16505551234"),
            ("+44 20 7946 0958", "442079460958"),
        ] {
            assert_eq!(
                Recipient::parse(input),
                Ok(Recipient::Phone(want.into())),
                "{input}"
            );
        }
    }

    #[test]
    fn bsuids_are_kept_verbatim_and_go_to_the_recipient_field() {
        for s in [
            "US.13491208655302741918",
            "BR.abcDEF123",
            "US.ENT.11815799212886844830",
        ] {
            let r = Recipient::parse(s).unwrap();
            assert_eq!(r, Recipient::Bsuid(s.into()));
            assert_eq!(r.json_field(), "recipient");
            assert_eq!(r.as_str(), s);
        }
        assert_eq!(Recipient::parse("16505551234").unwrap().json_field(), "to");
    }

    #[test]
    fn malformed_recipients_are_rejected() {
        assert_eq!(Recipient::parse(""), Err(RecipientError::Empty));
        assert_eq!(Recipient::parse("   "), Err(RecipientError::Empty));
        for bad in [
            "abc",
            "+",
            "++16505551234",
            "us.1349120865",
            "U.123",
            "USA.123",
            "US.",
            "US.12 34",
            "US.12-34",
            "1650555.1234",
            "+1650555123x",
        ] {
            assert!(Recipient::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            Recipient::parse("1234"),
            Err(RecipientError::PhoneLength(4))
        );
        assert_eq!(
            Recipient::parse("1234567890123456"),
            Err(RecipientError::PhoneLength(16))
        );
        let long = format!("US.{}", "1".repeat(129));
        assert!(Recipient::parse(&long).is_err());
        let max = format!("US.{}", "1".repeat(128));
        assert!(Recipient::parse(&max).is_ok());
    }
}
