//! The upstream key pool: providers, their accounts (organizations) with configured limits, and
//! keys with their state (enabled, or disabled with a reason).
//!
//! [`Pool::route`] answers which provider serves a model; which account and key a request uses,
//! and when, is the scheduler's job (it keeps per-model budgets and cooldowns in its lanes).

mod account;

use std::sync::Arc;
use std::time::Duration;

pub use account::{Account, DisableReason, Key};

use crate::config::{Config, ProviderConfig, ProviderKind};
use crate::limits::Windows;

/// Every provider keyrelay forwards to.
#[derive(Debug)]
pub struct Pool {
    providers: Vec<Arc<Provider>>,
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
    /// Window lengths of the provider's limits.
    pub windows: Windows,
    /// Output budget assumed when a request sets none.
    pub default_max_tokens: u64,
    models: Vec<String>,
    accounts: Vec<Account>,
}

impl Pool {
    /// Builds the pool from validated config.
    pub fn new(config: &Config) -> Self {
        Self { providers: config.providers.iter().map(|p| Arc::new(Provider::new(p))).collect() }
    }

    /// The provider for `model`: the most specific matching pattern wins, ties go to the first
    /// declared; requests without a model go to the first provider.
    pub fn route(&self, model: Option<&str>) -> &Arc<Provider> {
        let first = &self.providers[0];
        let Some(model) = model else { return first };
        self.providers
            .iter()
            .filter_map(|p| p.match_len(model).map(|len| (len, p)))
            .fold(None, |best: Option<(usize, &Arc<Provider>)>, (len, p)| match best {
                Some((best_len, _)) if best_len >= len => best,
                _ => Some((len, p)),
            })
            .map_or(first, |(_, p)| p)
    }

    /// Carries key states over from `old` (keys matched by provider, account and alias), so a
    /// reload does not bring a revoked key back.
    pub fn keep_key_states(&self, old: &Pool) {
        for provider in &self.providers {
            let Some(before) = old.providers.iter().find(|p| p.name == provider.name) else {
                continue;
            };
            for account in provider.accounts() {
                let Some(was) = before.accounts().iter().find(|a| a.name == account.name) else {
                    continue;
                };
                for key in account.keys() {
                    let reason = was
                        .keys()
                        .iter()
                        // A key replaced under the same alias starts fresh.
                        .find(|k| {
                            k.alias == key.alias
                                && k.secret.fingerprint() == key.secret.fingerprint()
                        })
                        .and_then(Key::disabled_reason);
                    if let Some(reason) = reason {
                        key.disable(reason);
                    }
                }
            }
        }
    }

    /// Every provider, in config order.
    pub fn providers(&self) -> &[Arc<Provider>] {
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
            windows: config.windows,
            default_max_tokens: config.default_max_tokens,
            models: config.models.clone(),
            accounts: config.accounts.iter().map(|a| Account::new(a, &config.limits)).collect(),
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
