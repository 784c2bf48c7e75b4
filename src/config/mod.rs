//! Configuration: the TOML file and the environment, validated once at start-up into typed values.
//!
//! Flow: file → `${VAR}` interpolation → [`raw`] serde types → validation (every problem is
//! collected with its field path and a fix) → [`Config`]. Zero-config providers come from the
//! environment ([`env`]).

pub mod env;
mod interpolate;
mod raw;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::limits::{Dimension, Windows};
use crate::secret::ApiKey;

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The client-facing listener.
    pub server: ServerConfig,
    /// Retries of transient upstream failures.
    pub retry: RetryConfig,
    /// The wait queue for requests no account can take yet.
    pub queue: QueueConfig,
    /// Upstream providers, in routing-priority order.
    pub providers: Vec<ProviderConfig>,
    /// Client keys and their quotas; empty means open mode (no client authentication).
    pub clients: Vec<ClientConfig>,
    /// Window lengths of client quotas (`[quotas]`; shortened in tests).
    pub quota_windows: Windows,
    /// The state file.
    pub store: StoreConfig,
    /// SHA-256 of the admin token; `None` disables the admin API.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// The file this configuration was read from, which a reload reads again.
    pub source: Option<PathBuf>,
    /// Environment entries the command line set (`--allow-open`), applied again on reload.
    pub cli_env: Vec<(String, String)>,
}

/// `[store]`
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The state file; `None` keeps state in memory only.
    pub path: Option<PathBuf>,
    /// How often changed state and ledger records are written.
    pub flush_interval: Duration,
    /// How long ledger records are kept.
    pub ledger_retention: Duration,
}

/// `[[clients]]`
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name used in logs, metrics and quota messages.
    pub name: String,
    /// SHA-256 of the client's key (the key itself is not kept).
    pub key_sha256: [u8; 32],
    /// Queue priority (higher first); a request's `x-keyrelay-priority` overrides it.
    pub priority: i32,
    /// What happens when a quota is hit.
    pub policy: QuotaPolicy,
    /// Longest wait for this client's quota or upstream capacity (default: `queue.max_wait`).
    pub max_wait: Option<Duration>,
    /// Allowed model patterns (exact names or prefixes ending in `*`); `None` allows all.
    pub models: Option<Vec<String>>,
    /// Quotas over all models.
    pub quota: Quota,
    /// Quotas per model, on top of `quota`.
    pub model_quotas: BTreeMap<String, Quota>,
}

/// What to do with a request over its client's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPolicy {
    /// Wait until the quota allows it (up to the client's wait limit).
    Queue,
    /// Answer 429 at once.
    Reject,
}

/// A client's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Requests per minute, per day, tokens per minute, per day (indexed by `Dimension::index`).
    pub limits: [Option<u64>; Dimension::COUNT],
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Deadline for a request to get an upstream answer, retries included (not the stream).
    pub request_timeout: Duration,
    /// Serve a non-loopback address without client keys (anyone who can connect uses the keys).
    pub allow_open: bool,
    /// After a shutdown signal, how long in-flight and queued requests may take to finish.
    pub shutdown_grace: Duration,
    /// A second listener for operators (`/metrics`, `/healthz`, `/readyz`, `/admin/*`), besides
    /// the main one.
    pub admin_listen: Option<SocketAddr>,
}

/// `[retry]`
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Retries of transient failures (5xx, 498, connect errors, timeouts) per request.
    pub max_retries: u32,
    /// First backoff ceiling; doubles each retry (full jitter).
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
}

/// `[queue]`
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Longest a request waits for capacity before a 429 (clients may ask for less).
    pub max_wait: Duration,
    /// Most requests waiting per (provider, model); more are shed at once with a 429.
    pub max_depth: usize,
}

/// Which header semantics a provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// `x-ratelimit-*-requests` is per day, `-tokens` per minute.
    Groq,
    /// `x-ratelimit-*-requests` is per minute, `-tokens` per minute.
    OpenAi,
}

impl ProviderKind {
    /// The provider's public API base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Groq => "https://api.groq.com/openai/v1",
            Self::OpenAi => "https://api.openai.com/v1",
        }
    }

    /// Models this kind serves when the config does not say.
    fn default_models(self) -> Vec<String> {
        let patterns: &[&str] = match self {
            Self::Groq => &["*"],
            Self::OpenAi => &[
                "gpt-*",
                "o1*",
                "o3*",
                "o4*",
                "chatgpt-*",
                "text-embedding-*",
                "whisper-1",
                "tts-*",
                "dall-e-*",
                "omni-moderation-*",
                "text-moderation-*",
                "davinci-*",
                "babbage-*",
                "computer-use-*",
                "codex-*",
            ],
        };
        patterns.iter().map(|p| (*p).to_owned()).collect()
    }
}

/// `[[providers]]`
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Header semantics.
    pub kind: ProviderKind,
    /// Base URL that `/v1/...` paths are appended to.
    pub base_url: reqwest::Url,
    /// Model patterns routed here: exact names, or a prefix followed by `*`.
    pub models: Vec<String>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for the response head (not the whole stream).
    pub response_timeout: Duration,
    /// Window lengths of the provider's per-minute and per-day limits, and the safety margin.
    pub windows: Windows,
    /// Output budget assumed for a request that sets no `max_tokens`/`max_completion_tokens`.
    pub default_max_tokens: u64,
    /// Default per-model limits for every account.
    pub limits: BTreeMap<String, ModelLimits>,
    /// Organizations and their keys.
    pub accounts: Vec<AccountConfig>,
}

/// `[[providers.accounts]]`: one organization; its keys share its limits.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// The account's keys.
    pub keys: Vec<KeyConfig>,
    /// Per-model limits overriding the provider's.
    pub limits: BTreeMap<String, ModelLimits>,
}

/// One upstream key and its printable alias.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Name used in logs and metrics instead of the key.
    pub alias: String,
    /// The secret.
    pub key: ApiKey,
}

/// Known limits of one model for one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelLimits {
    /// Requests per minute.
    pub rpm: Option<NonZeroU64>,
    /// Requests per day.
    pub rpd: Option<NonZeroU64>,
    /// Tokens per minute.
    pub tpm: Option<NonZeroU64>,
    /// Tokens per day.
    pub tpd: Option<NonZeroU64>,
    /// Audio seconds per hour.
    pub ash: Option<NonZeroU64>,
    /// Audio seconds per day.
    pub asd: Option<NonZeroU64>,
}

/// One thing wrong with the configuration, at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field (`providers[0].accounts[1].keys[0]`).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: &str, message: impl Into<String>) -> Self {
        Self { path: path.to_owned(), message: message.into() }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Syntax {
        /// The file (and line/column where known).
        path: String,
        /// What the parser said, without echoing the line (which may hold a key).
        message: String,
    },
    /// The configuration is well-formed but wrong.
    #[error("{}", render(.0))]
    Invalid(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    let mut out = format!("{} problem(s) in the configuration:", problems.len());
    for problem in problems {
        out.push_str(&format!("\n  - {}: {}", problem.path, problem.message));
    }
    out
}

impl Config {
    /// Loads the file (if any) and the environment's zero-config providers, and validates both.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw = match path {
            Some(path) => read_file(path, env)?,
            None => raw::RawConfig::default(),
        };
        let mut config = validate::validate(raw, env)?;
        config.source = path.map(Path::to_owned);
        Ok(config)
    }

    /// Model names the config mentions (limits and exact routing patterns), for metric labels.
    pub fn model_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for provider in &self.providers {
            names.extend(provider.limits.keys().cloned());
            names.extend(provider.models.iter().filter(|m| !m.ends_with('*')).cloned());
            for account in &provider.accounts {
                names.extend(account.limits.keys().cloned());
            }
        }
        names
    }

    /// Parses config text (as if read from `origin`); used by `load` and by tests.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        validate::validate(parse(text, origin, env)?, env)
    }
}

fn read_file(path: &Path, env: &HashMap<String, String>) -> Result<raw::RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(&text, &path.display().to_string(), env)
}

fn parse(
    text: &str,
    origin: &str,
    env: &HashMap<String, String>,
) -> Result<raw::RawConfig, ConfigError> {
    let syntax = |span: Option<std::ops::Range<usize>>, message: String| {
        let location = span.map(|span| line_and_column(text, span.start)).unwrap_or_default();
        ConfigError::Syntax { path: format!("{origin}{location}"), message }
    };
    let mut document: toml::Value = toml::from_str(text)
        .map_err(|e: toml::de::Error| syntax(e.span(), e.message().to_owned()))?;
    let mut problems = Vec::new();
    interpolate::interpolate(&mut document, env, "", &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    serde_path_to_error::deserialize(document).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Syntax {
            path: format!("{origin}: field `{field}`"),
            message: e.into_inner().message().to_owned(),
        }
    })
}

fn line_and_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(":{line}:{column}")
}

#[cfg(test)]
mod tests;
