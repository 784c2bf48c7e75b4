//! The upstream key pool: providers, their accounts (organizations) and keys, and what is known
//! about each: cooling for a model until an instant, or disabled with a reason.
//!
//! The pool answers two questions on the hot path: which provider serves a model
//! ([`Pool::route`]), and which key of that provider to use now ([`Provider::acquire`]). Locks are
//! per account, held for a few instructions, never across an `.await`.

mod account;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub use account::{Account, DisableReason, Key};

use crate::config::{Config, ProviderConfig, ProviderKind};

/// Every provider keyrelay forwards to.
#[derive(Debug)]
pub struct Pool {
    providers: Vec<Provider>,
}

/// One upstream API and the accounts that call it.
#[derive(Debug)]
pub struct Provider {
    /// Name from config, used in logs.
    pub name: String,
    /// Header semantics.
    pub kind: ProviderKind,
    /// Base URL without a trailing slash; client paths after `/v1` are appended.
    pub base_url: String,
    /// Time allowed for the response head.
    pub response_timeout: Duration,
    models: Vec<String>,
    accounts: Vec<Account>,
    next_account: AtomicUsize,
}

/// The key a request may use for one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    account: usize,
    key: usize,
}

/// Why no key can take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every usable account is cooling for this model; the earliest is back after this wait.
    Cooling(Duration),
    /// Every key is disabled: waiting will not help.
    AllDisabled,
}

impl Pool {
    /// Builds the pool from validated config.
    pub fn new(config: &Config) -> Self {
        Self { providers: config.providers.iter().map(Provider::new).collect() }
    }

    /// The provider for `model`: the most specific matching pattern wins, ties go to the first
    /// declared; requests without a model go to the first provider.
    pub fn route(&self, model: Option<&str>) -> &Provider {
        let first = &self.providers[0];
        let Some(model) = model else { return first };
        self.providers
            .iter()
            .filter_map(|p| p.match_len(model).map(|len| (len, p)))
            .fold(None, |best: Option<(usize, &Provider)>, (len, p)| match best {
                Some((best_len, _)) if best_len >= len => best,
                _ => Some((len, p)),
            })
            .map_or(first, |(_, p)| p)
    }

    /// Every provider, in config order.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }
}

impl Provider {
    fn new(config: &ProviderConfig) -> Self {
        Self {
            name: config.name.clone(),
            kind: config.kind,
            base_url: config.base_url.as_str().trim_end_matches('/').to_owned(),
            response_timeout: config.response_timeout,
            models: config.models.clone(),
            accounts: config.accounts.iter().map(Account::new).collect(),
            next_account: AtomicUsize::new(0),
        }
    }

    /// Length of the literal part of the best pattern matching `model`.
    fn match_len(&self, model: &str) -> Option<usize> {
        self.models
            .iter()
            .filter_map(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix).then_some(prefix.len()),
                None => (pattern == model).then_some(pattern.len() + 1),
            })
            .max()
    }

    /// Picks a key for `model`: accounts not cooling for it, in rotation, first enabled key.
    pub fn acquire(&self, model: &str, now: Instant) -> Result<Lease, Unavailable> {
        let count = self.accounts.len();
        let start = self.next_account.fetch_add(1, Ordering::Relaxed);
        let mut soonest: Option<Duration> = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let account = &self.accounts[index];
            match account.cooling_for(model, now) {
                _ if !account.has_enabled_key() => {}
                Some(wait) => soonest = Some(soonest.map_or(wait, |s| s.min(wait))),
                None => {
                    if let Some(key) = account.next_enabled_key() {
                        return Ok(Lease { account: index, key });
                    }
                }
            }
        }
        Err(soonest.map_or(Unavailable::AllDisabled, Unavailable::Cooling))
    }

    /// The account a lease points into.
    pub fn account(&self, lease: Lease) -> &Account {
        &self.accounts[lease.account]
    }

    /// The key a lease points to.
    pub fn key(&self, lease: Lease) -> &Key {
        self.accounts[lease.account].key(lease.key)
    }

    /// Every account of this provider.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// How many keys the provider has, enabled or not.
    pub fn key_count(&self) -> usize {
        self.accounts.iter().map(|a| a.keys().len()).sum()
    }

    /// Whether any key is still enabled.
    pub fn has_usable_key(&self) -> bool {
        self.accounts.iter().any(Account::has_enabled_key)
    }
}

#[cfg(test)]
mod tests;
