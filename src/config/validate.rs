//! Raw config → [`Config`]: defaults applied, every problem collected with its path and a fix.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::raw::{RawAccount, RawClient, RawConfig, RawKey, RawLimits, RawProvider, RawQuota};
use super::{
    AccountConfig, ClientConfig, Config, ConfigError, KeyConfig, ModelLimits, Problem,
    ProviderConfig, ProviderKind, QueueConfig, Quota, QuotaPolicy, RetryConfig, ServerConfig,
    StoreConfig, env,
};
use crate::duration;
use crate::limits::Windows;
use crate::secret::ApiKey;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_STATE_PATH: &str = "keyrelay-state.redb";

/// Collects problems while building the validated config.
struct Validator {
    problems: Vec<Problem>,
    aliases: HashSet<String>,
    accounts: HashSet<String>,
}

pub(super) fn validate(
    mut raw: RawConfig,
    env_vars: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let taken: Vec<String> =
        raw.providers.iter().map(|p| p.name.clone().unwrap_or_else(|| p.kind.clone())).collect();
    raw.providers.extend(env::providers(env_vars, &taken));

    let mut v =
        Validator { problems: Vec::new(), aliases: HashSet::new(), accounts: HashSet::new() };
    let listen_text = env_vars
        .get(env::KEYRELAY_LISTEN)
        .filter(|l| !l.is_empty())
        .cloned()
        .or(raw.server.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = listen_text.parse().unwrap_or_else(|_| {
        v.problem(
            "server.listen",
            format!("`{listen_text}` is not an IP address and port, like `127.0.0.1:8080` or `0.0.0.0:8080`"),
        );
        ([127, 0, 0, 1], 8080).into()
    });
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        v.problem("server.max_body_bytes", "must be at least 1 (the default is 10485760, 10 MiB)");
    }
    let allow_open = raw.server.allow_open.unwrap_or(false)
        || env_vars
            .get(env::KEYRELAY_ALLOW_OPEN)
            .is_some_and(|v| matches!(v.as_str(), "1" | "true"));
    let server = ServerConfig {
        listen,
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        request_timeout: v.duration("server.request_timeout", raw.server.request_timeout, "5m"),
        allow_open,
        shutdown_grace: v.duration("server.shutdown_grace", raw.server.shutdown_grace, "30s"),
        admin_listen: raw.server.admin_listen.and_then(|text| {
            text.parse()
                .map_err(|_| {
                    v.problem(
                        "server.admin_listen",
                        format!("`{text}` is not an IP address and port, like `127.0.0.1:9091`"),
                    );
                })
                .ok()
        }),
    };
    let admin_token_sha256 = match raw.admin.token.as_deref().map(str::trim) {
        Some(token) if token.len() >= 16 => Some(Sha256::digest(token.as_bytes()).into()),
        Some("") | None => None,
        Some(_) => {
            v.problem("admin.token", "the admin token must be at least 16 characters: generate one with `openssl rand -hex 24`");
            None
        }
    };
    let state_path = env_vars
        .get(env::KEYRELAY_STATE_PATH)
        .filter(|p| !p.is_empty())
        .cloned()
        .or(raw.store.path);
    let store = StoreConfig {
        path: match (raw.store.enabled, state_path.as_deref()) {
            (Some(false), _) | (_, Some("off")) => None,
            (_, Some(path)) => Some(PathBuf::from(path)),
            (_, None) => Some(PathBuf::from(DEFAULT_STATE_PATH)),
        },
        flush_interval: v.duration("store.flush_interval", raw.store.flush_interval, "1s"),
        ledger_retention: v.duration("store.ledger_retention", raw.store.ledger_retention, "30d"),
    };
    if store.flush_interval.is_zero() {
        v.problem("store.flush_interval", "must be longer than zero, like \"1s\"");
    }
    let clients = v.clients(raw.clients);
    let quota_windows = Windows {
        minute: v.duration("quotas.minute_window", raw.quotas.minute_window, "60s"),
        day: v.duration("quotas.day_window", raw.quotas.day_window, "24h"),
        margin: Duration::ZERO,
    };
    if clients.is_empty() && !listen.ip().is_loopback() && !allow_open {
        v.problem(
            "server.listen",
            format!("{listen} is reachable from other machines and no [[clients]] are configured, so anyone who can connect would use your upstream keys: add [[clients]] with keys, or opt in with allow_open = true (or KEYRELAY_ALLOW_OPEN=1, or --allow-open)"),
        );
    }
    let retry = RetryConfig {
        max_retries: raw.retry.max_retries.unwrap_or(3),
        base_delay: v.duration("retry.base_delay", raw.retry.base_delay, "250ms"),
        max_delay: v.duration("retry.max_delay", raw.retry.max_delay, "8s"),
    };
    let queue = QueueConfig {
        max_wait: v.duration("queue.max_wait", raw.queue.max_wait, "120s"),
        max_depth: raw.queue.max_depth.unwrap_or(10_000),
    };
    if queue.max_depth == 0 {
        v.problem("queue.max_depth", "must be at least 1 (the default is 10000)");
    }
    if retry.base_delay > retry.max_delay {
        v.problem("retry.base_delay", "must not be larger than retry.max_delay");
    }

    if raw.providers.is_empty() {
        v.problem(
            "providers",
            "no upstream keys: set GROQ_API_KEYS=key1,key2 (or OPENAI_API_KEYS), or add [[providers]] to a config file given with --config",
        );
    }
    let mut names = HashSet::new();
    let mut providers = Vec::new();
    for (index, raw_provider) in raw.providers.into_iter().enumerate() {
        let Some(provider) = v.provider(&format!("providers[{index}]"), raw_provider) else {
            continue;
        };
        if names.insert(provider.name.clone()) {
            providers.push(provider);
        } else {
            v.problem(
                &format!("providers[{index}].name"),
                format!("two providers are named `{}`: give each a unique `name`", provider.name),
            );
        }
    }

    if v.problems.is_empty() {
        Ok(Config {
            server,
            retry,
            queue,
            providers,
            clients,
            quota_windows,
            store,
            admin_token_sha256,
            source: None,
            cli_env: Vec::new(),
        })
    } else {
        Err(ConfigError::Invalid(v.problems))
    }
}

impl Validator {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn duration(&mut self, path: &str, text: Option<String>, default: &str) -> Duration {
        let text = text.unwrap_or_else(|| default.to_owned());
        duration::parse(&text).unwrap_or_else(|e| {
            self.problem(path, e.to_string());
            Duration::ZERO
        })
    }

    fn provider(&mut self, path: &str, raw: RawProvider) -> Option<ProviderConfig> {
        let kind = match raw.kind.as_str() {
            "groq" => ProviderKind::Groq,
            "openai" => ProviderKind::OpenAi,
            other => {
                self.problem(&format!("{path}.kind"), format!("unknown kind `{other}`: use `groq` or `openai` (any OpenAI-compatible API works as `openai`)"));
                return None;
            }
        };
        let url_text = raw.base_url.unwrap_or_else(|| kind.default_base_url().to_owned());
        let base_url = match reqwest::Url::parse(&url_text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            _ => {
                self.problem(
                    &format!("{path}.base_url"),
                    format!(
                        "`{url_text}` is not an http(s) URL, like `https://api.groq.com/openai/v1`"
                    ),
                );
                None
            }
        };
        let models = raw.models.unwrap_or_else(|| kind.default_models());
        for (index, pattern) in models.iter().enumerate() {
            if pattern.is_empty() || pattern.strip_suffix('*').unwrap_or(pattern).contains('*') {
                self.problem(&format!("{path}.models[{index}]"), format!("`{pattern}` is not a model pattern: write an exact model name or a prefix ending in `*`"));
            }
        }
        if raw.accounts.is_empty() {
            self.problem(
                &format!("{path}.accounts"),
                "a provider needs at least one [[providers.accounts]] with keys",
            );
        }
        let provider = ProviderConfig {
            name: raw.name.unwrap_or(raw.kind),
            kind,
            base_url: base_url?,
            models,
            connect_timeout: self.duration(
                &format!("{path}.connect_timeout"),
                raw.connect_timeout,
                "5s",
            ),
            response_timeout: self.duration(
                &format!("{path}.response_timeout"),
                raw.response_timeout,
                "2m",
            ),
            windows: Windows {
                minute: self.duration(&format!("{path}.minute_window"), raw.minute_window, "60s"),
                day: self.duration(&format!("{path}.day_window"), raw.day_window, "24h"),
                margin: self.duration(&format!("{path}.safety_margin"), raw.safety_margin, "250ms"),
            },
            default_max_tokens: raw.default_max_tokens.unwrap_or(1024),
            limits: self.limits(&format!("{path}.limits"), raw.limits),
            accounts: raw
                .accounts
                .into_iter()
                .enumerate()
                .map(|(i, account)| self.account(&format!("{path}.accounts[{i}]"), account))
                .collect(),
        };
        Some(provider)
    }

    fn clients(&mut self, raw: Vec<RawClient>) -> Vec<ClientConfig> {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut clients = Vec::new();
        for (index, client) in raw.into_iter().enumerate() {
            let path = format!("clients[{index}]");
            if client.name.trim().is_empty() || !names.insert(client.name.clone()) {
                self.problem(
                    &format!("{path}.name"),
                    "each client needs a unique, non-empty name (it labels logs and metrics)",
                );
            }
            let key_sha256 = match (&client.key, &client.key_sha256) {
                (Some(key), None) if !key.trim().is_empty() => Some(Sha256::digest(key.trim().as_bytes()).into()),
                (None, Some(hex)) => decode_sha256(hex).or_else(|| {
                    self.problem(&format!("{path}.key_sha256"), "must be 64 hexadecimal characters: the output of `printf %s \"$KEY\" | sha256sum`");
                    None
                }),
                _ => {
                    self.problem(&format!("{path}.key"), "give exactly one of key = \"${CLIENT_KEY}\" or key_sha256 = \"<hex>\" (a non-empty key)");
                    None
                }
            };
            if let Some(hash) = key_sha256
                && !hashes.insert(hash)
            {
                self.problem(
                    &format!("{path}.key"),
                    "two clients have the same key: give each client its own",
                );
            }
            let policy = match client.policy.as_deref() {
                None | Some("queue") => QuotaPolicy::Queue,
                Some("reject") => QuotaPolicy::Reject,
                Some(other) => {
                    self.problem(&format!("{path}.policy"), format!("unknown policy `{other}`: use `queue` (wait for the quota) or `reject` (429 at once)"));
                    QuotaPolicy::Queue
                }
            };
            for (i, pattern) in client.models.iter().flatten().enumerate() {
                if pattern.is_empty() || pattern.strip_suffix('*').unwrap_or(pattern).contains('*')
                {
                    self.problem(&format!("{path}.models[{i}]"), format!("`{pattern}` is not a model pattern: write an exact model name or a prefix ending in `*`"));
                }
            }
            let max_wait = client
                .max_wait
                .map(|text| self.duration(&format!("{path}.max_wait"), Some(text), "0s"));
            let quota = self.quota(&format!("{path}.quota"), client.quota);
            let model_quotas = client
                .model_quotas
                .into_iter()
                .map(|(model, quota)| {
                    let quota = self.quota(&format!("{path}.model_quotas.{model}"), quota);
                    (model, quota)
                })
                .collect();
            if let Some(key_sha256) = key_sha256 {
                clients.push(ClientConfig {
                    name: client.name,
                    key_sha256,
                    priority: client.priority.unwrap_or(0).clamp(-100, 100),
                    policy,
                    max_wait,
                    models: client.models,
                    quota,
                    model_quotas,
                });
            }
        }
        clients
    }

    fn quota(&mut self, path: &str, raw: RawQuota) -> Quota {
        let mut limit = |name: &str, value: Option<u64>| {
            if value == Some(0) {
                self.problem(
                    &format!("{path}.{name}"),
                    "a quota must be at least 1; leave it out for no limit",
                );
            }
            value.filter(|v| *v > 0)
        };
        let limits = [
            limit("rpm", raw.rpm),
            limit("rpd", raw.rpd),
            limit("tpm", raw.tpm),
            limit("tpd", raw.tpd),
            limit("ash", raw.ash),
            limit("asd", raw.asd),
        ];
        if raw.concurrency == Some(0) {
            self.problem(
                &format!("{path}.concurrency"),
                "must be at least 1; leave it out for no limit",
            );
        }
        Quota { limits, concurrency: raw.concurrency.filter(|c| *c > 0) }
    }

    fn account(&mut self, path: &str, raw: RawAccount) -> AccountConfig {
        if !self.accounts.insert(raw.name.clone()) {
            self.problem(&format!("{path}.name"), format!("account name `{}` is used twice: names label metrics and logs, so make each unique", raw.name));
        }
        if raw.keys.is_empty() {
            self.problem(
                &format!("{path}.keys"),
                "an account needs at least one key, like keys = [\"${GROQ_KEY_1}\"]",
            );
        }
        let single = raw.keys.len() == 1;
        let keys = raw
            .keys
            .into_iter()
            .enumerate()
            .filter_map(|(index, key)| {
                let key_path = format!("{path}.keys[{index}]");
                let (alias, secret) = match key {
                    RawKey::Bare(secret) if single => (raw.name.clone(), secret),
                    RawKey::Bare(secret) => (format!("{}-{}", raw.name, index + 1), secret),
                    RawKey::Aliased { alias, key } => (alias, key),
                };
                if !self.aliases.insert(alias.clone()) {
                    self.problem(
                        &key_path,
                        format!("key alias `{alias}` is used twice: give each key a unique alias"),
                    );
                }
                match ApiKey::new(&secret) {
                    Ok(key) => Some(KeyConfig { alias, key }),
                    Err(e) => {
                        self.problem(&key_path, e.to_string());
                        None
                    }
                }
            })
            .collect();
        AccountConfig {
            keys,
            limits: self.limits(&format!("{path}.limits"), raw.limits),
            name: raw.name,
        }
    }

    fn limits(
        &mut self,
        path: &str,
        raw: BTreeMap<String, RawLimits>,
    ) -> BTreeMap<String, ModelLimits> {
        raw.into_iter()
            .map(|(model, limits)| {
                let mut field = |name: &str, value: Option<u64>| {
                    value.and_then(|v| {
                        let nonzero = NonZeroU64::new(v);
                        if nonzero.is_none() {
                            self.problem(&format!("{path}.{model}.{name}"), "a limit must be at least 1; leave it out if the provider sets none");
                        }
                        nonzero
                    })
                };
                let limits = ModelLimits {
                    rpm: field("rpm", limits.rpm),
                    rpd: field("rpd", limits.rpd),
                    tpm: field("tpm", limits.tpm),
                    tpd: field("tpd", limits.tpd),
                    ash: field("ash", limits.ash),
                    asd: field("asd", limits.asd),
                };
                (model, limits)
            })
            .collect()
    }
}

/// 64 hex characters → 32 bytes.
fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}
