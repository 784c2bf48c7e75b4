//! The mock upstream's configuration: organizations, their keys and per-model limits, the
//! limiting algorithm, token accounting and injected faults. Loadable from TOML; every field has
//! a default so `MockConfig { orgs, ..Default::default() }` works.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::duration::deserialize_duration;

/// Models served when the config does not list any.
pub const DEFAULT_MODELS: [&str; 3] =
    ["llama-3.1-8b-instant", "llama-3.3-70b-versatile", "whisper-large-v3"];

/// Everything the mock upstream needs to know.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Organizations; limits are shared by all keys of one organization.
    pub orgs: Vec<MockOrg>,
    /// Served model ids; any other model gets a 404 `model_not_found`.
    pub models: Vec<String>,
    /// How usage leaves a window.
    pub algorithm: Algorithm,
    /// Length of a "minute" (RPM, TPM windows); tests shorten it.
    #[serde(deserialize_with = "deserialize_duration")]
    pub minute: Duration,
    /// Length of a "day" (RPD, TPD windows).
    #[serde(deserialize_with = "deserialize_duration")]
    pub day: Duration,
    /// Whether the token reservation is trued-up to actual usage after the answer.
    pub token_accounting: TokenAccounting,
    /// Output budget reserved when a request sets neither `max_completion_tokens` nor `max_tokens`.
    pub default_max_tokens: u64,
    /// Tokens generated per answer (per choice), capped by the request's max tokens.
    pub completion_tokens: u64,
    /// Delay between SSE chunks.
    #[serde(deserialize_with = "deserialize_duration")]
    pub stream_chunk_interval: Duration,
    /// Injected failures and delays; can be changed at run time with `MockServer::set_faults`.
    pub faults: Faults,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            orgs: Vec::new(),
            models: DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect(),
            algorithm: Algorithm::default(),
            minute: Duration::from_secs(60),
            day: Duration::from_secs(86_400),
            token_accounting: TokenAccounting::default(),
            default_max_tokens: 1024,
            completion_tokens: 16,
            stream_chunk_interval: Duration::ZERO,
            faults: Faults::default(),
        }
    }
}

/// How a limit's usage is forgotten over time.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Usage = sum of the charges made during the last window.
    #[default]
    SlidingWindow,
    /// A bucket of `limit` capacity refilling continuously at `limit / window`.
    Bucket,
}

/// What stays charged against token limits once an answer is produced.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenAccounting {
    /// Prompt + reserved output at admission, trued-up to prompt + generated tokens afterwards.
    #[default]
    Actual,
    /// Prompt + reserved output stays charged.
    Reserved,
}

/// One organization: a set of keys sharing per-model limits.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockOrg {
    /// Organization id as printed in 429/413 bodies, e.g. `org_a`.
    pub id: String,
    /// API keys of this organization.
    pub keys: Vec<MockKey>,
    /// Per-model limits; a model absent here gets `default_limits`.
    pub limits: HashMap<String, MockLimits>,
    /// Limits of every model not listed in `limits`.
    pub default_limits: MockLimits,
}

/// An API key and its state. In TOML either `"key"` or `{ key = "…", state = "revoked" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockKey {
    /// The bearer token.
    pub key: String,
    /// How the mock treats requests made with it.
    pub state: KeyState,
}

impl MockKey {
    /// An active key.
    pub fn active(key: &str) -> Self {
        Self { key: key.to_owned(), state: KeyState::Active }
    }
}

impl<'de> Deserialize<'de> for MockKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            key: String,
            #[serde(default)]
            state: KeyState,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bare(String),
            Table(Table),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Bare(key) => Self { key, state: KeyState::Active },
            Raw::Table(t) => Self { key: t.key, state: t.state },
        })
    }
}

/// State of an API key.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Works normally.
    #[default]
    Active,
    /// 401 `invalid_api_key`.
    Revoked,
    /// 429 `insufficient_quota` (OpenAI body, no `retry-after`).
    OutOfQuota,
    /// 403 `organization_restricted`.
    Restricted,
}

/// Limits of one model in one organization; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MockLimits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
}

impl MockLimits {
    /// No limit at all.
    pub const UNLIMITED: Self = Self { rpm: None, rpd: None, tpm: None, tpd: None };

    /// Limits with every dimension set.
    pub const fn new(rpm: u64, rpd: u64, tpm: u64, tpd: u64) -> Self {
        Self { rpm: Some(rpm), rpd: Some(rpd), tpm: Some(tpm), tpd: Some(tpd) }
    }
}

/// Injected failures and delays.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Fraction (0..=1) of inference requests answered with `error_status`, at random.
    pub error_rate: f64,
    /// Status of injected errors.
    pub error_status: u16,
    /// The next N inference requests get `error_status` (deterministic; decremented).
    pub fail_next: u32,
    /// Fraction (0..=1) of streams whose connection is aborted mid-stream.
    pub stream_reset_rate: f64,
    /// The next N streams are aborted mid-stream (deterministic; decremented).
    pub stream_reset_next: u32,
    /// SSE chunks sent before an abort.
    pub stream_reset_after_chunks: u32,
    /// Delay before the response head.
    #[serde(deserialize_with = "deserialize_duration")]
    pub first_byte_delay: Duration,
    /// Fixed extra latency on every answer (before the request is processed).
    #[serde(deserialize_with = "deserialize_duration")]
    pub latency: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            error_status: 503,
            fail_next: 0,
            stream_reset_rate: 0.0,
            stream_reset_next: 0,
            stream_reset_after_chunks: 2,
            first_byte_delay: Duration::ZERO,
            latency: Duration::ZERO,
        }
    }
}

/// Why a mock config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MockConfigError {
    /// The file could not be read.
    #[error("cannot read mock config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown fields.
    #[error("invalid mock config: {0}")]
    Toml(#[from] toml::de::Error),
}

impl MockConfig {
    /// Convenience: one org per key (org id `org_<key>`), each with the same limits for every
    /// model.
    pub fn orgs_with_limits(keys: &[&str], limits: MockLimits) -> MockConfig {
        let orgs = keys
            .iter()
            .map(|key| MockOrg {
                id: format!("org_{key}"),
                keys: vec![MockKey::active(key)],
                limits: HashMap::new(),
                default_limits: limits,
            })
            .collect();
        MockConfig { orgs, ..Default::default() }
    }

    /// The `keyrelay-mock` default: orgs `org_a`, `org_b`, `org_c` with keys `mock-key-a`,
    /// `mock-key-b`, `mock-key-c` and Groq free-tier-like limits ([`groq_free_tier_limits`]).
    pub fn demo() -> MockConfig {
        let orgs = ["a", "b", "c"]
            .iter()
            .map(|suffix| MockOrg {
                id: format!("org_{suffix}"),
                keys: vec![MockKey::active(&format!("mock-key-{suffix}"))],
                limits: groq_free_tier_limits(),
                default_limits: MockLimits::UNLIMITED,
            })
            .collect();
        MockConfig { orgs, ..Default::default() }
    }

    /// Parses a TOML document.
    pub fn from_toml_str(text: &str) -> Result<MockConfig, MockConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<MockConfig, MockConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| MockConfigError::Io { path: path.display().to_string(), source })?;
        Self::from_toml_str(&text)
    }
}

/// Groq free-tier-like limits of the default models (Aug 2026 snapshot of Groq's docs).
pub fn groq_free_tier_limits() -> HashMap<String, MockLimits> {
    let audio = MockLimits { rpm: Some(20), rpd: Some(2000), tpm: None, tpd: None };
    HashMap::from([
        ("llama-3.1-8b-instant".to_owned(), MockLimits::new(30, 14_400, 6000, 500_000)),
        ("llama-3.3-70b-versatile".to_owned(), MockLimits::new(30, 1000, 12_000, 100_000)),
        ("whisper-large-v3".to_owned(), audio),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml() -> Result<(), MockConfigError> {
        let config = MockConfig::from_toml_str(
            r#"
            minute = "2s"
            algorithm = "bucket"
            token_accounting = "reserved"
            [faults]
            fail_next = 2
            latency = "50ms"
            [[orgs]]
            id = "org_x"
            keys = ["k1", { key = "k2", state = "out_of_quota" }]
            default_limits = { rpm = 5 }
            [orgs.limits."llama-3.1-8b-instant"]
            tpm = 100
            "#,
        )?;
        assert_eq!(config.minute, Duration::from_secs(2));
        assert_eq!(config.day, Duration::from_secs(86_400));
        assert_eq!(config.algorithm, Algorithm::Bucket);
        assert_eq!(config.token_accounting, TokenAccounting::Reserved);
        assert_eq!(config.faults.fail_next, 2);
        assert_eq!(config.faults.error_status, 503);
        assert_eq!(config.faults.latency, Duration::from_millis(50));
        let org = &config.orgs[0];
        assert_eq!(org.keys[1].state, KeyState::OutOfQuota);
        assert_eq!(org.default_limits.rpm, Some(5));
        assert_eq!(org.limits["llama-3.1-8b-instant"].tpm, Some(100));
        assert_eq!(config.models.len(), 3);
        Ok(())
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(MockConfig::from_toml_str("minutes = \"2s\"").is_err());
        assert!(MockConfig::from_toml_str("[[orgs]]\nidd = \"x\"").is_err());
    }
}
