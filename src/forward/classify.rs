//! What an upstream answer means for the key that got it, decided in one place (PROTOCOL.md §G.3).

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::duration;
use crate::limits::{Dimension, read_limit_from_body};
use crate::pool::DisableReason;

/// Error codes that mean the whole account is blocked.
const ACCOUNT_BLOCKED: [&str; 3] =
    ["organization_restricted", "account_deactivated", "access_terminated"];

/// Cooldown used when a 429 says nothing about when to come back.
const FALLBACK_COOLDOWN: Duration = Duration::from_secs(1);

/// What to do after an upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: relay it.
    Success,
    /// The account hit a limit for this model: cool it for `wait`, try another account.
    RateLimited {
        /// How long until the limit is expected back.
        wait: Duration,
        /// Which limit was hit and its size, when the body says.
        limit: Option<(Dimension, u64)>,
        /// Which limit was hit, when the body names it (even without its size).
        dimension: Option<Dimension>,
    },
    /// The key can never work again: disable it, try another key.
    KeyDead(DisableReason),
    /// 5xx, 498: back off and try again.
    Transient,
    /// Anything else, including a request larger than the account's TPM (413): the client's answer.
    Final,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorFields>,
}

#[derive(Deserialize, Default)]
struct ErrorFields {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// Classifies a non-streamed look at an answer: status, headers and (for errors) the body prefix.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
    if status.is_success() {
        return Verdict::Success;
    }
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let fields = parsed.as_ref().and_then(|b| b.error.as_ref());
    let code = fields.and_then(|f| f.code.as_ref()).and_then(|c| c.as_str()).unwrap_or_default();
    let kind = fields.and_then(|f| f.kind.as_deref()).unwrap_or_default();
    let message = fields.and_then(|f| f.message.as_deref()).unwrap_or_default();

    if code == "insufficient_quota" || kind == "insufficient_quota" {
        return Verdict::KeyDead(DisableReason::OutOfQuota);
    }
    if ACCOUNT_BLOCKED.contains(&code) {
        return Verdict::KeyDead(DisableReason::Forbidden);
    }
    // A header the request carried (its organization or project) does not match the key: the
    // request's fault, not the key's.
    if code.starts_with("mismatched_") {
        return Verdict::Final;
    }
    if code == "invalid_api_key" || status == StatusCode::UNAUTHORIZED {
        return Verdict::KeyDead(DisableReason::InvalidKey);
    }
    // Any other 403 (a model the organization may not use, a CDN refusing the request) is about
    // this request; disabling the key on it would let one client switch off every key.
    match status.as_u16() {
        429 => Verdict::RateLimited {
            wait: cooldown(headers, message),
            limit: read_limit_from_body(message),
            dimension: Dimension::named_in(message),
        },
        498 | 500..=599 => Verdict::Transient,
        _ => Verdict::Final,
    }
}

/// How long a 429'd account should rest: the body's precise "try again in", else `retry-after-ms`,
/// else `retry-after`, else the longest reset among exhausted dimensions.
fn cooldown(headers: &HeaderMap, message: &str) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_body = message.split("try again in ").nth(1).and_then(|rest| {
        let token = rest.split(|c: char| c.is_whitespace() || c == ',').next()?;
        duration::parse(token.trim_end_matches('.')).ok()
    });
    let from_ms = || {
        let ms: f64 = header("retry-after-ms")?.parse().ok()?;
        Duration::try_from_secs_f64(ms / 1000.0).ok()
    };
    let from_seconds = || Duration::try_from_secs_f64(header("retry-after")?.parse().ok()?).ok();
    let from_resets = || {
        ["requests", "tokens"]
            .into_iter()
            .filter(|dim| header(&format!("x-ratelimit-remaining-{dim}")) == Some("0"))
            .filter_map(|dim| duration::parse(header(&format!("x-ratelimit-reset-{dim}"))?).ok())
            .max()
    };
    from_body
        .or_else(from_ms)
        .or_else(from_seconds)
        .or_else(from_resets)
        .filter(|wait| !wait.is_zero())
        .unwrap_or(FALLBACK_COOLDOWN)
}

#[cfg(test)]
mod tests;
