//! One account (organization): its keys and its configured per-model limits.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::config::{AccountConfig, ModelLimits};
use crate::limits::Dimension;
use crate::secret::ApiKey;

/// An organization whose keys share one set of limits.
#[derive(Debug)]
pub struct Account {
    /// Name from config, used in logs and metrics.
    pub name: String,
    keys: Vec<Key>,
    next_key: AtomicUsize,
    /// Model → configured limits (the provider's defaults overridden by the account's own).
    limits: BTreeMap<String, ModelLimits>,
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
    /// Taken out of rotation through the admin API.
    Operator,
}

impl DisableReason {
    /// The reason a label names.
    pub fn parse(label: &str) -> Option<Self> {
        [Self::InvalidKey, Self::Forbidden, Self::OutOfQuota, Self::Operator]
            .into_iter()
            .find(|r| r.as_str() == label)
    }

    /// A bounded label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidKey => "invalid_key",
            Self::Forbidden => "forbidden",
            Self::OutOfQuota => "out_of_quota",
            Self::Operator => "operator",
        }
    }
}

impl Account {
    pub(super) fn new(
        config: &AccountConfig,
        provider_limits: &BTreeMap<String, ModelLimits>,
    ) -> Self {
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
            limits: merge(provider_limits, &config.limits),
        }
    }

    /// Configured limits for `model`, indexed by [`Dimension::index`].
    pub fn limits_for(&self, model: &str) -> [Option<u64>; Dimension::COUNT] {
        let limits = self.limits.get(model).copied().unwrap_or_default();
        Dimension::ALL.map(|d| {
            match d {
                Dimension::Rpm => limits.rpm,
                Dimension::Rpd => limits.rpd,
                Dimension::Tpm => limits.tpm,
                Dimension::Tpd => limits.tpd,
                Dimension::Ash => limits.ash,
                Dimension::Asd => limits.asd,
            }
            .map(NonZeroU64::get)
        })
    }

    /// Whether any of the account's keys may be used.
    pub fn has_enabled_key(&self) -> bool {
        self.keys.iter().any(Key::is_enabled)
    }

    /// The next enabled key in rotation.
    pub fn next_enabled_key(&self) -> Option<usize> {
        let count = self.keys.len();
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        (0..count).map(|offset| (start + offset) % count).find(|&i| self.keys[i].is_enabled())
    }

    /// The key at `index`.
    pub fn key(&self, index: usize) -> &Key {
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

    /// Puts a disabled key back into rotation (an operator's call); returns false if it was active.
    pub fn enable(&self) -> bool {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.disabled.swap(false, Ordering::AcqRel)
    }

    /// Why the key is disabled, if it is.
    pub fn disabled_reason(&self) -> Option<DisableReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Provider-wide limits with an account's own overriding them dimension by dimension.
fn merge(
    provider: &BTreeMap<String, ModelLimits>,
    account: &BTreeMap<String, ModelLimits>,
) -> BTreeMap<String, ModelLimits> {
    let mut merged = provider.clone();
    for (model, own) in account {
        let base = merged.entry(model.clone()).or_default();
        *base = ModelLimits {
            rpm: own.rpm.or(base.rpm),
            rpd: own.rpd.or(base.rpd),
            tpm: own.tpm.or(base.tpm),
            tpd: own.tpd.or(base.tpd),
            ash: own.ash.or(base.ash),
            asd: own.asd.or(base.asd),
        };
    }
    merged
}
