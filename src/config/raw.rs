//! The config file as written: serde types with `deny_unknown_fields`, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) retry: RawRetry,
    pub(super) queue: RawQueue,
    pub(super) providers: Vec<RawProvider>,
    pub(super) clients: Vec<RawClient>,
    pub(super) quotas: RawQuotaWindows,
    pub(super) store: RawStore,
    pub(super) admin: RawAdmin,
}

/// `[admin]`: the admin API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) token: Option<String>,
}

/// `[store]`: the state file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    pub(super) enabled: Option<bool>,
    pub(super) path: Option<String>,
    pub(super) flush_interval: Option<String>,
    pub(super) ledger_retention: Option<String>,
}

/// `[quotas]`: window lengths of client quotas.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawQuotaWindows {
    pub(super) minute_window: Option<String>,
    pub(super) day_window: Option<String>,
}

/// `[[clients]]`: an application or team with its own key and quotas.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub(super) name: String,
    pub(super) key: Option<String>,
    pub(super) key_sha256: Option<String>,
    pub(super) priority: Option<i32>,
    pub(super) policy: Option<String>,
    pub(super) max_wait: Option<String>,
    pub(super) models: Option<Vec<String>>,
    #[serde(default)]
    pub(super) quota: RawQuota,
    #[serde(default)]
    pub(super) model_quotas: BTreeMap<String, RawQuota>,
}

/// A client's quotas; absent dimensions are unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuota {
    pub(super) rpm: Option<u64>,
    pub(super) rpd: Option<u64>,
    pub(super) tpm: Option<u64>,
    pub(super) tpd: Option<u64>,
    pub(super) ash: Option<u64>,
    pub(super) asd: Option<u64>,
    pub(super) concurrency: Option<u32>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) request_timeout: Option<String>,
    pub(super) allow_open: Option<bool>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) admin_listen: Option<String>,
}

/// `[retry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetry {
    pub(super) max_retries: Option<u32>,
    pub(super) base_delay: Option<String>,
    pub(super) max_delay: Option<String>,
}

/// `[queue]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawQueue {
    pub(super) max_wait: Option<String>,
    pub(super) max_depth: Option<usize>,
}

/// `[[providers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) kind: String,
    pub(super) name: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) models: Option<Vec<String>>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) minute_window: Option<String>,
    pub(super) day_window: Option<String>,
    pub(super) safety_margin: Option<String>,
    pub(super) default_max_tokens: Option<u64>,
    #[serde(default)]
    pub(super) limits: BTreeMap<String, RawLimits>,
    #[serde(default)]
    pub(super) accounts: Vec<RawAccount>,
}

/// `[[providers.accounts]]`: one organization whose keys share limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) name: String,
    pub(super) keys: Vec<RawKey>,
    #[serde(default)]
    pub(super) limits: BTreeMap<String, RawLimits>,
}

/// A key, bare or with the alias used in logs and metrics.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawKey {
    Bare(String),
    Aliased { alias: String, key: String },
}

/// Per-model limits; absent means unknown (learned from headers, or unlimited).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) rpm: Option<u64>,
    pub(super) rpd: Option<u64>,
    pub(super) tpm: Option<u64>,
    pub(super) tpd: Option<u64>,
    pub(super) ash: Option<u64>,
    pub(super) asd: Option<u64>,
}
