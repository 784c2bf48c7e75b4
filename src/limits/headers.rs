//! What a provider's answer says about an account's limits: the `x-ratelimit-*` headers (whose
//! meaning depends on the provider) and the `Limit N` in a 429 body.

use std::time::Duration;

use http::HeaderMap;

use super::Dimension;
use crate::config::ProviderKind;
use crate::duration;

/// One dimension as a provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderReport {
    /// The dimension the header family describes for this provider.
    pub dimension: Dimension,
    /// `x-ratelimit-limit-*`.
    pub limit: Option<u64>,
    /// `x-ratelimit-remaining-*`.
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset-*`: time until the dimension is back to its full limit.
    pub reset: Option<Duration>,
}

/// The `-requests` family: limit, remaining, reset.
pub const REQUESTS: [&str; 3] =
    ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"];
/// The `-tokens` family: limit, remaining, reset.
pub const TOKENS: [&str; 3] =
    ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"];

/// Reads the `-requests` and `-tokens` header families (Groq: per day and per minute; OpenAI:
/// both per minute).
pub fn read_headers(kind: ProviderKind, headers: &HeaderMap) -> Vec<HeaderReport> {
    let requests = match kind {
        ProviderKind::Groq => Dimension::Rpd,
        ProviderKind::OpenAi => Dimension::Rpm,
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    [(REQUESTS, requests), (TOKENS, Dimension::Tpm)]
        .into_iter()
        .filter_map(|([limit, remaining, reset], dimension)| {
            let number = |name: &str| text(name)?.parse().ok();
            let report = HeaderReport {
                dimension,
                limit: number(limit),
                remaining: number(remaining),
                reset: text(reset).and_then(|v| duration::parse(v).ok()),
            };
            (report.limit.is_some() || report.remaining.is_some()).then_some(report)
        })
        .collect()
}

/// The dimension and its limit from a rate-limit message: `… on requests per minute (RPM):
/// Limit 30, Used 30, Requested 1 …`.
pub fn read_limit_from_body(message: &str) -> Option<(Dimension, u64)> {
    let dimension = Dimension::named_in(message)?;
    let after = message.split("Limit ").nth(1)?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    Some((dimension, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    const GROQ: [(&str, &str); 6] = [
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-remaining-requests", "14370"),
        ("x-ratelimit-reset-requests", "2m59.56s"),
        ("x-ratelimit-limit-tokens", "18000"),
        ("x-ratelimit-remaining-tokens", "17997"),
        ("x-ratelimit-reset-tokens", "7.66s"),
    ];

    #[test]
    fn groq_requests_headers_are_per_day_and_openai_per_minute() {
        let groq = read_headers(ProviderKind::Groq, &headers(&GROQ));
        assert_eq!(
            groq,
            [
                HeaderReport {
                    dimension: Dimension::Rpd,
                    limit: Some(14400),
                    remaining: Some(14370),
                    reset: Some(Duration::from_millis(179_560)),
                },
                HeaderReport {
                    dimension: Dimension::Tpm,
                    limit: Some(18000),
                    remaining: Some(17997),
                    reset: Some(Duration::from_millis(7660)),
                },
            ]
        );
        let openai = read_headers(ProviderKind::OpenAi, &headers(&GROQ));
        assert_eq!(openai[0].dimension, Dimension::Rpm);
        assert!(read_headers(ProviderKind::Groq, &HeaderMap::new()).is_empty());
    }

    #[test]
    fn limits_are_read_from_429_bodies() {
        let rpm = "Rate limit reached for model `m` in organization `o` service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2s.";
        assert_eq!(read_limit_from_body(rpm), Some((Dimension::Rpm, 30)));
        let tpd = "… on tokens per day (TPD): Limit 100000, Used 97050, Requested 3619. Please try again in 9m38.016s.";
        assert_eq!(read_limit_from_body(tpd), Some((Dimension::Tpd, 100_000)));
        assert_eq!(read_limit_from_body("Too many requests"), None);
    }
}
