//! `/metrics` after a scripted run, read with the Prometheus project's own OpenMetrics parser:
//! names, types, labels, and counts that match what the mock upstream saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{chat_body, chat_with, mock_and_proxy, sample_sum, scrape, sdk_python};
use keyrelay::mock::{KeyState, MockConfig, MockLimits};

const MODEL: &str = "llama-3.1-8b-instant";
const KEYS: [&str; 2] = ["gsk_metrics_secret_a", "gsk_metrics_secret_b"];

#[tokio::test]
async fn metrics_match_what_happened_upstream() {
    let Some(python) = sdk_python() else { return };
    let mut mock_config = MockConfig::orgs_with_limits(&KEYS, MockLimits::UNLIMITED);
    mock_config.orgs[0].default_limits = MockLimits { rpm: Some(2), ..MockLimits::UNLIMITED };
    mock_config.minute = Duration::from_secs(30);
    let (mock, proxy) = mock_and_proxy(&KEYS, mock_config).await;
    mock.set_key_state(KEYS[1], KeyState::Revoked);

    let quick = [("x-keyrelay-max-wait", "0.3")];
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _, _) = chat_with(&proxy.url(), chat_body(MODEL, false), &quick).await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 429], "two fit the upstream's RPM, the third is shed");

    let (text, samples) = scrape(&python, proxy.addr).await;
    for key in KEYS {
        assert!(!text.contains(key), "a key leaked into /metrics");
    }
    let model = [("model", MODEL)];
    assert_eq!(
        sample_sum(&samples, "keyrelay_requests_total", &[("model", MODEL), ("status", "200")]),
        2.0
    );
    assert_eq!(
        sample_sum(&samples, "keyrelay_requests_total", &[("model", MODEL), ("status", "429")]),
        1.0
    );
    assert_eq!(
        sample_sum(&samples, "keyrelay_queue_shed_total", &[("reason", "queue_timeout")]),
        1.0
    );
    assert_eq!(
        sample_sum(&samples, "keyrelay_upstream_rate_limits_total", &[("dimension", "rpm")]),
        1.0
    );
    assert_eq!(sample_sum(&samples, "keyrelay_retries_total", &[("reason", "key_disabled")]), 1.0);
    let chat_route = [("route", "/chat/completions"), ("client", "anonymous"), ("status", "200")];
    assert_eq!(sample_sum(&samples, "keyrelay_requests_total", &chat_route), 2.0);
    assert_eq!(sample_sum(&samples, "keyrelay_request_duration_seconds_count", &model), 3.0);
    assert_eq!(sample_sum(&samples, "keyrelay_time_to_first_byte_seconds_count", &model), 3.0);
    assert_eq!(sample_sum(&samples, "keyrelay_queued_requests_total", &model), 1.0);
    let completion = [("model", MODEL), ("client", "anonymous"), ("kind", "completion")];
    assert_eq!(sample_sum(&samples, "keyrelay_tokens_total", &completion), 32.0, "16 per answer");
    assert!(sample_sum(&samples, "keyrelay_tokens_total", &[("kind", "prompt")]) > 0.0);
    // The RPM limit nobody configured was learned from the upstream's 429 body.
    let rpm = [("account", "acct-1"), ("model", MODEL), ("dimension", "rpm")];
    assert_eq!(sample_sum(&samples, "keyrelay_upstream_limit", &rpm), 2.0);
    assert_eq!(sample_sum(&samples, "keyrelay_upstream_remaining", &rpm), 0.0);
    assert!(sample_sum(&samples, "keyrelay_queue_wait_seconds_count", &model) >= 3.0);

    // Every upstream answer keyrelay counted is one the mock counted, per key and status.
    let stats = mock.stats();
    for (index, key) in KEYS.iter().enumerate() {
        let alias = format!("acct-{}", index + 1);
        for (status, count) in &stats.by_key[*key] {
            let labels = [("key", alias.as_str()), ("status", &status.to_string())];
            let seen = sample_sum(&samples, "keyrelay_upstream_responses_total", &labels);
            assert_eq!(seen, *count as f64, "key #{index} status {status}");
        }
    }
    let disabled = [("key", "acct-2"), ("state", "disabled")];
    assert_eq!(sample_sum(&samples, "keyrelay_key_state", &disabled), 1.0);
    let active = [("key", "acct-1"), ("state", "active")];
    assert_eq!(sample_sum(&samples, "keyrelay_key_state", &active), 1.0);
    assert_eq!(sample_sum(&samples, "keyrelay_queue_depth", &model), 0.0);
    let depth = samples.iter().find(|s| s.name == "keyrelay_queue_depth").unwrap();
    assert_eq!(depth.kind, "gauge");
    let build = samples.iter().find(|s| s.family == "keyrelay_build").unwrap();
    assert_eq!(build.kind, "info");
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
}
