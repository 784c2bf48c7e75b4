//! What the store keeps, as typed maps, and its encoding as key → JSON entries.
//!
//! Key parts are joined with the ASCII unit separator, since names (models such as
//! `openai/gpt-oss-120b`) may contain any printable character.

use std::collections::BTreeMap;

use crate::limits::Dimension;

const SEP: char = '\u{1f}';

/// A window's charges as (unix ms, amount).
pub type Charges = Vec<(u64, u64)>;

/// Everything that survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// (client, per-model quota's model or none, dimension) → daily window.
    pub client_windows: BTreeMap<(String, Option<String>, Dimension), Charges>,
    /// (provider, account, model, dimension) → daily window.
    pub account_windows: BTreeMap<(String, String, String, Dimension), Charges>,
    /// (provider, account, model, dimension) → limit learned from the provider.
    pub learned_limits: BTreeMap<(String, String, String, Dimension), u64>,
    /// (provider, account, key alias) → why the key was disabled, and which key it was.
    pub disabled_keys: BTreeMap<(String, String, String), DisabledKey>,
}

/// A disabled key as saved: the reason, and the key's fingerprint, so a key replaced under the
/// same alias starts fresh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DisabledKey {
    /// `DisableReason` label.
    pub reason: String,
    /// `ApiKey::fingerprint`.
    pub fingerprint: String,
}

impl State {
    /// Captures what must survive a restart from the running app.
    pub fn capture(app: &crate::AppState) -> Self {
        let mut state = Self::default();
        let unix_now = super::unix_ms();
        for client in app.clients().all() {
            client.export(|model, dimension, entries| {
                let key = (client.name.clone(), model.map(str::to_owned), dimension);
                state.client_windows.insert(key, super::to_unix(&entries, unix_now));
            });
        }
        app.scheduler().export(&mut state);
        for provider in app.pool().providers() {
            for account in provider.accounts() {
                for key in account.keys() {
                    if let Some(reason) = key.disabled_reason() {
                        let id = (provider.name.clone(), account.name.clone(), key.alias.clone());
                        let saved = DisabledKey {
                            reason: reason.as_str().to_owned(),
                            fingerprint: key.secret.fingerprint().to_owned(),
                        };
                        state.disabled_keys.insert(id, saved);
                    }
                }
            }
        }
        state
    }

    /// Puts saved state back into a freshly started app (matching clients, accounts and keys by
    /// name; whatever no longer exists in the config is dropped).
    pub fn restore(&self, app: &crate::AppState) {
        let unix_now = super::unix_ms();
        for client in app.clients().all() {
            for ((name, model, dimension), charges) in &self.client_windows {
                if *name == client.name {
                    client.import(model.as_deref(), *dimension, &super::to_ages(charges, unix_now));
                }
            }
        }
        app.scheduler().restore(self);
        let pool = app.pool();
        for ((provider_name, account_name, alias), saved) in &self.disabled_keys {
            let reason = crate::pool::DisableReason::parse(&saved.reason);
            let key = pool
                .providers()
                .iter()
                .filter(|p| p.name == *provider_name)
                .flat_map(|p| p.accounts())
                .filter(|a| a.name == *account_name)
                .flat_map(|a| a.keys())
                .find(|k| k.alias == *alias && k.secret.fingerprint() == saved.fingerprint);
            if let (Some(key), Some(reason)) = (key, reason) {
                key.disable(reason);
            }
        }
    }
}

fn dimension(text: &str) -> Option<Dimension> {
    Dimension::ALL.into_iter().find(|d| d.as_str() == text)
}

impl State {
    pub(super) fn to_entries(&self) -> BTreeMap<String, Vec<u8>> {
        let json = |value: &dyn erased::Json| value.to_json();
        let mut out = BTreeMap::new();
        for ((client, model, dim), charges) in &self.client_windows {
            let key = match model {
                Some(model) => {
                    format!("client{SEP}{client}{SEP}model{SEP}{model}{SEP}{}", dim.as_str())
                }
                None => format!("client{SEP}{client}{SEP}all{SEP}{}", dim.as_str()),
            };
            out.insert(key, json(charges));
        }
        for ((provider, account, model, dim), charges) in &self.account_windows {
            out.insert(
                format!("account{SEP}{provider}{SEP}{account}{SEP}{model}{SEP}{}", dim.as_str()),
                json(charges),
            );
        }
        for ((provider, account, model, dim), limit) in &self.learned_limits {
            out.insert(
                format!("limit{SEP}{provider}{SEP}{account}{SEP}{model}{SEP}{}", dim.as_str()),
                json(limit),
            );
        }
        for ((provider, account, alias), reason) in &self.disabled_keys {
            out.insert(format!("disabled{SEP}{provider}{SEP}{account}{SEP}{alias}"), json(reason));
        }
        out
    }

    /// Whether this version writes `key` (and so may remove it).
    pub(super) fn owns_key(key: &str) -> bool {
        ["client", "account", "limit", "disabled"]
            .iter()
            .any(|prefix| key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(SEP)))
    }

    pub(super) fn from_entries(entries: BTreeMap<String, Vec<u8>>) -> Self {
        let mut state = Self::default();
        for (key, value) in entries {
            let parts: Vec<&str> = key.split(SEP).collect();
            let owned = |i: usize| parts.get(i).map(|s| (*s).to_owned()).unwrap_or_default();
            match parts.as_slice() {
                ["client", _, "all", dim] => {
                    if let (Some(d), Ok(charges)) = (dimension(dim), serde_json::from_slice(&value))
                    {
                        state.client_windows.insert((owned(1), None, d), charges);
                    }
                }
                ["client", _, "model", _, dim] => {
                    if let (Some(d), Ok(charges)) = (dimension(dim), serde_json::from_slice(&value))
                    {
                        state.client_windows.insert((owned(1), Some(owned(3)), d), charges);
                    }
                }
                ["account", _, _, _, dim] => {
                    if let (Some(d), Ok(charges)) = (dimension(dim), serde_json::from_slice(&value))
                    {
                        state.account_windows.insert((owned(1), owned(2), owned(3), d), charges);
                    }
                }
                ["limit", _, _, _, dim] => {
                    if let (Some(d), Ok(limit)) = (dimension(dim), serde_json::from_slice(&value)) {
                        state.learned_limits.insert((owned(1), owned(2), owned(3), d), limit);
                    }
                }
                ["disabled", _, _, _] => {
                    if let Ok(saved) = serde_json::from_slice(&value) {
                        state.disabled_keys.insert((owned(1), owned(2), owned(3)), saved);
                    }
                }
                // Entries of a newer or older keyrelay are left alone.
                _ => {}
            }
        }
        state
    }
}

/// JSON encoding of the few value types stored, behind one object-safe call.
mod erased {
    pub(super) trait Json {
        fn to_json(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}
