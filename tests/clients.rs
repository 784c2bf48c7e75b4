//! Client keys and quotas end to end: authentication, allowed models, each quota dimension with
//! shortened windows, the client's own rate-limit headers, both policies, isolation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Proxy, chat_body, client, groq_config_with, post_chat};
use keyrelay::mock::{MockConfig, MockLimits, MockServer};
use tokio::time::Instant;

const MODEL: &str = "llama-3.1-8b-instant";

/// keyrelay in front of an unlimited mock, with `clients` (TOML) and 2-second quota minutes.
async fn with_clients(clients: &str) -> (MockServer, Proxy) {
    let mock = MockServer::start(MockConfig {
        completion_tokens: 10,
        stream_chunk_interval: Duration::from_millis(100),
        ..MockConfig::orgs_with_limits(&["key-a"], MockLimits::UNLIMITED)
    })
    .await
    .unwrap();
    let top = format!("[quotas]\nminute_window = \"2s\"\nday_window = \"1h\"\n{clients}");
    let proxy =
        Proxy::start(&groq_config_with(&mock.base_url(), &[("a", &["key-a"])], &top, "")).await;
    (mock, proxy)
}

async fn call(
    proxy: &Proxy,
    key: &str,
    body: String,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = post_chat(&proxy.url(), key, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let json = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
    (status, headers, json)
}

const TWO_CLIENTS: &str = r#"
[[clients]]
name = "batch"
key = "batch-secret-key"
policy = "reject"
models = ["llama-*"]
[clients.quota]
rpm = 2

[[clients]]
name = "web"
key = "web-secret-key"
policy = "reject"
[clients.quota]
rpm = 100
"#;

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_401_and_reaches_nothing() {
    let (mock, proxy) = with_clients(TWO_CLIENTS).await;
    for key in ["", "not-a-client-key"] {
        let (status, _, json) = call(&proxy, key, chat_body(MODEL, false)).await;
        assert_eq!(status, 401);
        assert_eq!(json["error"]["code"], "invalid_api_key");
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }
    assert_eq!(mock.stats().total, 0);
}

#[tokio::test]
async fn a_model_outside_the_clients_list_is_a_403() {
    let (mock, proxy) = with_clients(TWO_CLIENTS).await;
    let (status, _, json) =
        call(&proxy, "batch-secret-key", chat_body("whisper-large-v3", false)).await;
    assert_eq!(status, 403);
    assert_eq!(json["error"]["code"], "model_not_allowed");
    assert!(json["error"]["message"].as_str().unwrap().contains("`batch`"));
    // Without a model the list cannot be checked, however the body is dressed up.
    let (status, _, json) =
        call(&proxy, "batch-secret-key", "  {\"messages\":[]}".to_owned()).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["code"], "model_required");
    assert_eq!(mock.stats().total, 0);
}

#[tokio::test]
async fn requests_per_minute_reject_with_the_limit_named_and_clients_are_isolated() {
    let (mock, proxy) = with_clients(TWO_CLIENTS).await;
    for remaining in ["1", "0"] {
        let (status, headers, _) = call(&proxy, "batch-secret-key", chat_body(MODEL, false)).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-limit-requests"], "2");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
        assert!(headers.get("x-ratelimit-reset-requests").is_some());
    }
    let (status, headers, json) = call(&proxy, "batch-secret-key", chat_body(MODEL, false)).await;
    assert_eq!(status, 429);
    assert_eq!(json["error"]["code"], "rate_limit_exceeded");
    assert_eq!(json["error"]["type"], "requests");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("requests per minute: limit 2, used 2, requested 1"), "{message}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after));
    assert!(headers.get("x-should-retry").is_none(), "a short wait is worth retrying");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(mock.stats().total, 2, "the refused request reached nothing");
    // Another client is not affected.
    let (status, _, _) = call(&proxy, "web-secret-key", chat_body(MODEL, false)).await;
    assert_eq!(status, 200);
    // The refusal consumed nothing: after the window, two more fit.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..2 {
        assert_eq!(call(&proxy, "batch-secret-key", chat_body(MODEL, false)).await.0, 200);
    }
}

#[tokio::test]
async fn daily_token_quotas_settle_with_real_usage_and_long_waits_are_final() {
    let clients = r#"
[[clients]]
name = "tokens"
key = "tokens-secret-key"
policy = "reject"
[clients.quota]
tpd = 200
"#;
    let (_mock, proxy) = with_clients(clients).await;
    let body = |max: u32| {
        format!(
            r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max}}}"#
        )
    };
    // Each reserves ~10 + 100 but settles to ~10 prompt + 10 completion: far more than two fit.
    for _ in 0..5 {
        let (status, headers, json) = call(&proxy, "tokens-secret-key", body(100)).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "200");
    }
    let (status, headers, json) = call(&proxy, "tokens-secret-key", body(190)).await;
    assert_eq!(status, 429, "{json}");
    assert_eq!(json["error"]["type"], "tokens");
    assert!(json["error"]["message"].as_str().unwrap().contains("tokens per day: limit 200"));
    assert_eq!(
        headers["x-should-retry"], "false",
        "the day window frees in an hour: SDKs must not retry"
    );
    let (status, _, json) = call(&proxy, "tokens-secret-key", body(500)).await;
    assert_eq!(status, 429);
    assert!(json["error"]["message"].as_str().unwrap().contains("can never fit"));
}

#[tokio::test]
async fn concurrency_caps_requests_in_flight() {
    let clients = r#"
[[clients]]
name = "one-at-a-time"
key = "single-secret-key"
policy = "reject"
[clients.quota]
concurrency = 1
"#;
    let (_mock, proxy) = with_clients(clients).await;
    let url = proxy.url();
    // A stream of 10 chunks 100 ms apart holds the one slot for about a second.
    let holder = tokio::spawn(async move {
        let response = client()
            .post(format!("{url}/chat/completions"))
            .header("authorization", "Bearer single-secret-key")
            .header("content-type", "application/json")
            .body(chat_body(MODEL, true))
            .send()
            .await
            .unwrap();
        response.bytes().await.unwrap().len()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, json) = call(&proxy, "single-secret-key", chat_body(MODEL, false)).await;
    assert_eq!(status, 429, "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("concurrent requests: limit 1"));
    assert!(holder.await.unwrap() > 0);
    let (status, _, _) = call(&proxy, "single-secret-key", chat_body(MODEL, false)).await;
    assert_eq!(status, 200, "the slot is free once the stream ended");
}

#[tokio::test]
async fn a_queue_client_waits_for_its_quota_instead_of_failing() {
    let clients = r#"
[[clients]]
name = "patient"
key = "patient-secret-key"
policy = "queue"
max_wait = "5s"
[clients.quota]
rpm = 1
"#;
    let (_mock, proxy) = with_clients(clients).await;
    let started = Instant::now();
    assert_eq!(call(&proxy, "patient-secret-key", chat_body(MODEL, false)).await.0, 200);
    let (status, headers, _) = call(&proxy, "patient-secret-key", chat_body(MODEL, false)).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited for the next window");
    let queued: u64 = headers["x-keyrelay-queue-ms"].to_str().unwrap().parse().unwrap();
    assert!(queued >= 1500, "queue time {queued} ms");
}
