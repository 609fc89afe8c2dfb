//! The tenants' business tokens, decrypted on the main thread for the HTTP threads, and what
//! happens when one cannot be.
//!
//! A key file that cannot be used, or a stored token that does not open with the keys in it
//! (a wrong file deployed, an old key removed before `wa.rotate_key()`), is the operator's
//! problem, not the tenant's: nothing is sent for the rows concerned, they stay queued, no
//! tenant changes state, and the problem is reported once (server log, `worker_status()`),
//! with the key id and never a secret. Sending resumes by itself when the key file changes
//! (`SELECT pg_reload_conf()` after fixing it, or the file replaced), and every 30 seconds the
//! worker tries again anyway.

use super::sql;
use crate::error::WaError;
use crate::keys;
use pgrx::prelude::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use whatsapp_client::api::Secret;
use whatsapp_client::crypto::{CryptoError, Keyring, envelope_key_id};

/// How long tenants whose token does not open wait before the worker tries again on its own.
const RETRY_BLOCKED: Duration = Duration::from_secs(30);

pub enum TokenError {
    /// No token is stored for the tenant (it is not connected).
    Missing,
    /// The stored token does not open with the configured keys.
    Key { key_id: String, reason: String },
}

#[derive(Default)]
pub struct Tokens {
    /// Decrypted tokens by tenant, with the credential version they were read at.
    cache: HashMap<String, (String, Arc<Secret>)>,
    /// Tenants whose token does not open with the current keys, by key id.
    blocked: HashMap<String, String>,
    blocked_since: Option<Instant>,
    /// The keyring the blocks were found with: a changed key file lifts them.
    keyring: Option<Arc<Keyring>>,
    /// A key file that cannot be used at all.
    key_file_problem: Option<String>,
    /// Since when (seconds since the epoch) something is held back for keys.
    since: Option<u64>,
    reported: HashSet<String>,
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn describe(e: &WaError) -> String {
    match e {
        WaError::KeyFile {
            message, detail, ..
        } => format!("{message}: {detail}"),
        WaError::NotReady { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl Tokens {
    /// Forgets every token and block (SIGHUP: settings or the key file may have changed).
    pub fn clear(&mut self) {
        self.cache.clear();
        self.blocked.clear();
        self.blocked_since = None;
        self.keyring = None;
        self.reported.clear();
    }

    pub fn forget(&mut self, tenant: &str) {
        self.cache.remove(tenant);
    }

    /// Whether the key file can be used now. A changed key file, or enough time, lifts the
    /// blocks on tenants whose token did not open. Returns a problem to report, once.
    pub fn check_keyring(&mut self) -> Result<Option<String>, Option<String>> {
        match keys::keyring() {
            Ok(ring) => {
                self.key_file_problem = None;
                let changed = self
                    .keyring
                    .as_ref()
                    .is_some_and(|k| !Arc::ptr_eq(k, &ring));
                let stale = self
                    .blocked_since
                    .is_some_and(|t| t.elapsed() >= RETRY_BLOCKED);
                if changed || stale {
                    self.blocked.clear();
                    self.blocked_since = None;
                    self.reported.clear();
                }
                self.keyring = Some(ring);
                if self.blocked.is_empty() {
                    self.since = None;
                }
                Ok(None)
            }
            Err(e) => {
                let message = describe(&e);
                self.keyring = None;
                self.since.get_or_insert_with(epoch_now);
                let fresh = self.reported.insert(message.clone());
                self.key_file_problem = Some(message.clone());
                Err(fresh.then(|| {
                    format!("{message}; nothing is sent until the key file is fixed and reloaded")
                }))
            }
        }
    }

    /// Tenants not to claim for now.
    pub fn blocked(&self) -> Vec<String> {
        self.blocked.keys().cloned().collect()
    }

    /// The token of `tenant` at credential version `version`, decrypted if not cached.
    /// Needs a transaction (it reads `wa.credentials`).
    pub fn get(&mut self, tenant: &str, version: &str) -> Result<Arc<Secret>, TokenError> {
        if let Some((v, t)) = self.cache.get(tenant)
            && v == version
        {
            return Ok(t.clone());
        }
        let token = decrypt(tenant)?;
        let token = Arc::new(Secret::new(token.as_str()));
        self.cache
            .insert(tenant.to_string(), (version.to_string(), token.clone()));
        Ok(token)
    }

    /// Records that `tenant`'s token does not open; returns the line to log, once.
    pub fn block(&mut self, tenant: &str, key_id: &str, reason: &str) -> Option<String> {
        self.blocked.insert(tenant.to_string(), key_id.to_string());
        self.blocked_since.get_or_insert_with(Instant::now);
        self.since.get_or_insert_with(epoch_now);
        let line = format!(
            "cannot decrypt the business token of tenant {tenant} with key \"{key_id}\" of wa.key_file: {reason}; its messages stay queued until the key file is fixed and reloaded"
        );
        self.reported.insert(line.clone()).then_some(line)
    }

    /// What `worker_status()->'paused'` shows: null when nothing is held back for keys.
    pub fn pause(&self) -> Option<Value> {
        let since = self.since;
        if let Some(message) = &self.key_file_problem {
            return Some(json!({
                "reason": "key_file",
                "message": message,
                "since_epoch": since,
            }));
        }
        if self.blocked.is_empty() {
            return None;
        }
        let mut key_ids: Vec<&str> = self.blocked.values().map(String::as_str).collect();
        key_ids.sort_unstable();
        key_ids.dedup();
        Some(json!({
            "reason": "undecryptable_tokens",
            "message": "stored tokens do not open with the keys of wa.key_file",
            "key_ids": key_ids,
            "tenants": self.blocked.len(),
            "since_epoch": since,
        }))
    }
}

fn decrypt(tenant: &str) -> Result<zeroize::Zeroizing<String>, TokenError> {
    let row = Spi::connect(|client| {
        let rows = client.select(sql::TOKEN, Some(1), &[tenant.into()])?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            row.get::<Vec<u8>>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
        )))
    })
    .map_err(|e| TokenError::Key {
        key_id: String::new(),
        reason: format!("the stored token could not be read: {e}"),
    })?;
    let Some((envelope, stored_key_id)) = row else {
        return Err(TokenError::Missing);
    };
    let key_id = envelope_key_id(&envelope)
        .map(str::to_owned)
        .unwrap_or(stored_key_id);
    let ring = keys::keyring().map_err(|e| TokenError::Key {
        key_id: key_id.clone(),
        reason: describe(&e),
    })?;
    let plain = ring
        .decrypt(&keys::credential_aad(tenant, "business_token"), &envelope)
        .map_err(|e| TokenError::Key {
            key_id: key_id.clone(),
            reason: match e {
                CryptoError::UnknownKeyId(_) => "that key id is not in the key file".into(),
                other => other.to_string(),
            },
        })?;
    String::from_utf8(plain.to_vec())
        .map(zeroize::Zeroizing::new)
        .map_err(|_| TokenError::Key {
            key_id,
            reason: "the decrypted token is not text".into(),
        })
}
