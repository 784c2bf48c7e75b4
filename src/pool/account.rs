//! One account (organization): its keys and its per-model cooldowns.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::AccountConfig;
use crate::secret::ApiKey;

/// An organization whose keys share one set of limits.
#[derive(Debug)]
pub struct Account {
    /// Name from config, used in logs and metrics.
    pub name: String,
    keys: Vec<Key>,
    next_key: AtomicUsize,
    /// Model → the instant its limit is expected back.
    cooling: Mutex<HashMap<String, Instant>>,
}

/// One upstream key and its state.
#[derive(Debug)]
pub struct Key {
    /// Printable name; the key itself is never printed.
    pub alias: String,
    /// The secret.
    pub secret: ApiKey,
    disabled: AtomicBool,
    reason: Mutex<Option<DisableReason>>,
}

/// Why a key was taken out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableReason {
    /// 401 / `invalid_api_key`: revoked or mistyped.
    InvalidKey,
    /// 403 or `organization_restricted`.
    Forbidden,
    /// `insufficient_quota`: out of credit or over a spend limit.
    OutOfQuota,
}

impl DisableReason {
    /// A bounded label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidKey => "invalid_key",
            Self::Forbidden => "forbidden",
            Self::OutOfQuota => "out_of_quota",
        }
    }
}

impl Account {
    pub(super) fn new(config: &AccountConfig) -> Self {
        let keys = config
            .keys
            .iter()
            .map(|k| Key {
                alias: k.alias.clone(),
                secret: k.key.clone(),
                disabled: AtomicBool::new(false),
                reason: Mutex::new(None),
            })
            .collect();
        Self {
            name: config.name.clone(),
            keys,
            next_key: AtomicUsize::new(0),
            cooling: Mutex::new(HashMap::new()),
        }
    }

    /// How long this account still cools for `model`, if it does.
    pub fn cooling_for(&self, model: &str, now: Instant) -> Option<Duration> {
        let cooling = self.cooling.lock().unwrap_or_else(|e| e.into_inner());
        cooling
            .get(model)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Marks the account as limited for `model` until `until` (a later mark extends, never shortens).
    pub fn cool(&self, model: &str, until: Instant) {
        let mut cooling = self.cooling.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cooling.entry(model.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    pub(super) fn has_enabled_key(&self) -> bool {
        self.keys.iter().any(Key::is_enabled)
    }

    /// The next enabled key in rotation.
    pub(super) fn next_enabled_key(&self) -> Option<usize> {
        let count = self.keys.len();
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        (0..count).map(|offset| (start + offset) % count).find(|&i| self.keys[i].is_enabled())
    }

    pub(super) fn key(&self, index: usize) -> &Key {
        &self.keys[index]
    }

    /// The account's keys.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

impl Key {
    /// Whether the key may be used.
    pub fn is_enabled(&self) -> bool {
        !self.disabled.load(Ordering::Acquire)
    }

    /// Takes the key out of rotation until restart or re-enable; returns false if it already was.
    pub fn disable(&self, reason: DisableReason) -> bool {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        !self.disabled.swap(true, Ordering::AcqRel)
    }

    /// Why the key is disabled, if it is.
    pub fn disabled_reason(&self) -> Option<DisableReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}
