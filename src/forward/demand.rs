//! What a request asks of the scheduler: its cost, who it belongs to, its priority and how long
//! it may wait, read from the body peek and the request headers.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use http::{HeaderMap, header};
use tokio::time::Instant;

use crate::admission::ClientState;
use crate::config::QueueConfig;
use crate::duration;
use crate::limits::Cost;
use crate::openai::RequestPeek;
use crate::pool::Provider;
use crate::scheduler::{ClientId, Demand};

/// Client-chosen priority: an integer (higher first) or `low` / `normal` / `high`.
pub const PRIORITY_HEADER: &str = "x-keyrelay-priority";
/// Client-chosen wait limit: seconds (`12.5`) or a duration (`1m30s`).
pub const MAX_WAIT_HEADER: &str = "x-keyrelay-max-wait";
/// The OpenAI SDKs' read timeout in seconds; past it they give up and re-send.
const SDK_TIMEOUT_HEADER: &str = "x-stainless-read-timeout";

/// Paths whose answers are generated tokens, so the output budget counts against token limits.
const GENERATING: [&str; 3] = ["/chat/completions", "/completions", "/responses"];

/// Builds the demand of a request arriving now.
pub fn demand(
    provider: &Provider,
    queue: &QueueConfig,
    client: Option<&ClientState>,
    path: &str,
    headers: &HeaderMap,
    peek: &RequestPeek,
    request_deadline: Instant,
) -> Demand {
    let generates = GENERATING.iter().any(|suffix| path.ends_with(suffix));
    let output_budget = if generates {
        u64::from(peek.n.max(1))
            .saturating_mul(peek.max_output_tokens.unwrap_or(provider.default_max_tokens))
    } else {
        0
    };
    let configured_wait = client.and_then(|c| c.config().max_wait).unwrap_or(queue.max_wait);
    Demand {
        client: client.map_or_else(|| client_id(headers), |c| c.id),
        // A configured client may lower its own priority per request, never raise it.
        priority: match (priority(headers), client.map(|c| c.config().priority)) {
            (Some(asked), Some(configured)) => asked.min(configured),
            (asked, configured) => asked.or(configured).unwrap_or(0),
        },
        cost: Cost { requests: 1, tokens: 0, audio_seconds: peek.audio_seconds },
        prompt_estimate: peek.prompt_tokens,
        output_budget,
        deadline: (Instant::now() + max_wait(configured_wait, headers)).min(request_deadline),
    }
}

/// Fair-share identity: the client's credential (hashed; never stored or logged), so each
/// application or team using its own key gets its own share.
fn client_id(headers: &HeaderMap) -> ClientId {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).hash(&mut hasher);
    hasher.finish()
}

/// The request's own priority, if it names a valid one.
fn priority(headers: &HeaderMap) -> Option<i32> {
    let text = headers.get(PRIORITY_HEADER)?.to_str().ok()?;
    match text.trim().to_ascii_lowercase().as_str() {
        "low" => Some(-10),
        "normal" => Some(0),
        "high" => Some(10),
        number => number.parse::<i32>().ok().map(|p| p.clamp(-100, 100)),
    }
}

/// The smallest of the configured wait, the client's own wish, and the SDK's read timeout minus
/// a margin (so the SDK never times out and re-sends while keyrelay still holds its request).
fn max_wait(configured: Duration, headers: &HeaderMap) -> Duration {
    let seconds = |name: &str| {
        let text = headers.get(name)?.to_str().ok()?.trim();
        text.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .or_else(|| duration::parse(text).ok())
    };
    let sdk = seconds(SDK_TIMEOUT_HEADER).map(|timeout| {
        let margin = (timeout / 10).max(Duration::from_secs(2));
        timeout.saturating_sub(margin)
    });
    [Some(configured), seconds(MAX_WAIT_HEADER), sdk]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn wait_is_the_smallest_of_config_client_and_sdk_timeout() {
        let minute = Duration::from_secs(60);
        assert_eq!(max_wait(minute, &HeaderMap::new()), minute);
        assert_eq!(
            max_wait(minute, &headers(&[("x-keyrelay-max-wait", "2.5")])),
            Duration::from_millis(2500)
        );
        assert_eq!(max_wait(minute, &headers(&[("x-keyrelay-max-wait", "1m30s")])), minute);
        assert_eq!(
            max_wait(minute, &headers(&[("x-stainless-read-timeout", "20")])),
            Duration::from_secs(18)
        );
        assert_eq!(max_wait(minute, &headers(&[("x-stainless-read-timeout", "600")])), minute);
        assert_eq!(max_wait(minute, &headers(&[("x-keyrelay-max-wait", "soon")])), minute);
    }

    #[test]
    fn priority_names_and_numbers() {
        assert_eq!(priority(&HeaderMap::new()), None);
        assert_eq!(priority(&headers(&[("x-keyrelay-priority", "HIGH")])), Some(10));
        assert_eq!(priority(&headers(&[("x-keyrelay-priority", "-3")])), Some(-3));
        assert_eq!(priority(&headers(&[("x-keyrelay-priority", "9999")])), Some(100));
        assert_eq!(priority(&headers(&[("x-keyrelay-priority", "urgent!")])), None);
    }

    #[test]
    fn clients_are_told_apart_by_their_credential() {
        let a = client_id(&headers(&[("authorization", "Bearer app-a")]));
        let b = client_id(&headers(&[("authorization", "Bearer app-b")]));
        assert_ne!(a, b);
        assert_eq!(a, client_id(&headers(&[("authorization", "Bearer app-a")])));
    }
}
