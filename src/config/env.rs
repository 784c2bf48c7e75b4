//! Zero-config start: providers built from `GROQ_API_KEYS` / `OPENAI_API_KEYS`.
//!
//! Each comma-separated key becomes its own account, because keys given this way are assumed to
//! come from different organizations; a config file is how keys are grouped into accounts.

use std::collections::HashMap;

use super::raw::{RawAccount, RawKey, RawProvider};

/// Environment variable names that scripts and containers depend on.
pub const GROQ_API_KEYS: &str = "GROQ_API_KEYS";
/// Base URL override for the Groq provider built from the environment.
pub const GROQ_BASE_URL: &str = "GROQ_BASE_URL";
/// OpenAI keys, comma-separated.
pub const OPENAI_API_KEYS: &str = "OPENAI_API_KEYS";
/// Base URL override for the OpenAI provider built from the environment.
pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
/// Listen address override (`127.0.0.1:8080` by default).
pub const KEYRELAY_LISTEN: &str = "KEYRELAY_LISTEN";
/// `1`/`true`: serve a non-loopback address without client keys (same as `--allow-open`).
pub const KEYRELAY_ALLOW_OPEN: &str = "KEYRELAY_ALLOW_OPEN";
/// Path of the state file (`off` runs without one); overrides `[store] path`.
pub const KEYRELAY_STATE_PATH: &str = "KEYRELAY_STATE_PATH";
/// Path of the TOML config file, same as `--config`.
pub const KEYRELAY_CONFIG: &str = "KEYRELAY_CONFIG";

/// Providers from the environment, skipping any whose name the config file already uses.
pub(super) fn providers(env: &HashMap<String, String>, taken: &[String]) -> Vec<RawProvider> {
    [("groq", GROQ_API_KEYS, GROQ_BASE_URL), ("openai", OPENAI_API_KEYS, OPENAI_BASE_URL)]
        .into_iter()
        .filter(|(name, _, _)| !taken.iter().any(|t| t == name))
        .filter_map(|(name, keys_var, url_var)| {
            let keys: Vec<&str> =
                env.get(keys_var)?.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                return None;
            }
            let accounts = keys
                .iter()
                .enumerate()
                .map(|(index, key)| RawAccount {
                    name: format!("{name}-{}", index + 1),
                    keys: vec![RawKey::Bare((*key).to_owned())],
                    limits: Default::default(),
                })
                .collect();
            Some(RawProvider {
                kind: name.to_owned(),
                name: Some(name.to_owned()),
                base_url: env.get(url_var).filter(|u| !u.is_empty()).cloned(),
                models: None,
                connect_timeout: None,
                response_timeout: None,
                minute_window: None,
                day_window: None,
                safety_margin: None,
                default_max_tokens: None,
                limits: Default::default(),
                accounts,
            })
        })
        .collect()
}
