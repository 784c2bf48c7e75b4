//! The core proxy against the Groq-emulating mock: pass-through, streaming, rotation, retries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    Proxy, chat, chat_body, chat_with, client, groq_config, groq_config_with, mock_and_proxy,
    mock_count,
};
use futures_util::StreamExt;
use keyrelay::mock::{Faults, KeyState, MockConfig, MockLimits, MockServer};
use tokio::time::Instant;

const MODEL: &str = "llama-3.1-8b-instant";

fn unlimited() -> MockConfig {
    MockConfig::orgs_with_limits(&["key-a", "key-b"], MockLimits::UNLIMITED)
}

#[tokio::test]
async fn chat_completion_passes_through_with_the_upstream_key_and_original_bytes() {
    let (mock, proxy) = mock_and_proxy(&["key-a"], unlimited()).await;
    let body = chat_body(MODEL, false);
    let response = client()
        .post(format!("{}/chat/completions?trace=1", proxy.url()))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key-not-for-upstream")
        .header("x-keyrelay-priority", "high")
        .header("x-custom", "kept")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-request-id").is_some());
    assert!(response.headers().get("x-ratelimit-remaining-tokens").is_none());
    let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(json["object"], "chat.completion");
    assert!(json["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.key.as_deref(), Some("key-a"));
    assert_eq!(seen.path, "/openai/v1/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("trace=1"));
    assert_eq!(&seen.body[..], body.as_bytes());
    let header = |name: &str| seen.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(header("x-custom"), Some("kept"));
    assert_eq!(header("x-keyrelay-priority"), None);
    assert_eq!(header("authorization"), Some("Bearer key-a"));
}

#[tokio::test]
async fn models_list_and_groq_sdk_prefix_work() {
    let (_mock, proxy) = mock_and_proxy(&["key-a"], unlimited()).await;
    for url in
        [format!("{}/models", proxy.url()), format!("http://{}/openai/v1/models", proxy.addr)]
    {
        let response = client().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let json: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(json["data"].as_array().unwrap().iter().any(|m| m["id"] == MODEL));
    }
}

#[tokio::test]
async fn multipart_transcription_is_forwarded() {
    let (mock, proxy) = mock_and_proxy(&["key-a"], unlimited()).await;
    let boundary = "kr-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes());
    body.extend_from_slice(&[0u8, 1, 2, 3, 255, 13, 10]);
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-large-v3\r\n--{boundary}--\r\n").as_bytes());
    let response = client()
        .post(format!("{}/audio/transcriptions", proxy.url()))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(json["text"].as_str().unwrap().contains("transcription"));
    assert_eq!(&mock.requests()[0].body[..], &body[..]);
}

#[tokio::test]
async fn stream_chunks_reach_the_client_before_the_upstream_finishes() {
    let chunks = 8u64;
    let interval = Duration::from_millis(150);
    let mock_config =
        MockConfig { completion_tokens: chunks, stream_chunk_interval: interval, ..unlimited() };
    let (_mock, proxy) = mock_and_proxy(&["key-a"], mock_config).await;
    let response = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .header("content-type", "application/json")
        .body(chat_body(MODEL, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = Instant::now();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    // The mock sleeps `interval` between its chunks, so if the first chunk was relayed before the
    // upstream produced the rest, reading the rest must take at least the remaining sleeps.
    let remaining = interval * (chunks as u32 - 2);
    assert!(first_at.elapsed() >= remaining, "first chunk arrived only after the stream ended");
    let text = String::from_utf8(rest).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(text.contains("\"x_groq\""));
}

#[tokio::test]
async fn a_rate_limited_account_is_skipped_and_the_request_answered_via_another() {
    let mut mock_config =
        MockConfig::orgs_with_limits(&["key-a", "key-b", "key-c"], MockLimits::UNLIMITED);
    mock_config.orgs[0].default_limits = MockLimits { rpm: Some(1), ..MockLimits::UNLIMITED };
    mock_config.minute = Duration::from_secs(30);
    let (mock, proxy) = mock_and_proxy(&["key-a", "key-b", "key-c"], mock_config).await;
    // Spend account A's minute directly at the upstream; keyrelay does not know.
    let direct = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("authorization", "Bearer key-a")
        .header("content-type", "application/json")
        .body(chat_body(MODEL, false))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);

    // Rotation reaches A within three requests; each is answered, A's refusal included.
    for _ in 0..3 {
        let (status, _, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
        assert_eq!(status, 200, "{json}");
    }
    assert_eq!(mock_count(&mock, "key-a", 429), 1, "account A was tried once and refused");
    // A is known to be cooling now: it is not tried again.
    for _ in 0..4 {
        let (status, _, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
        assert_eq!(status, 200, "{json}");
    }
    assert_eq!(mock_count(&mock, "key-a", 429), 1);
    assert_eq!(mock_count(&mock, "key-b", 200) + mock_count(&mock, "key-c", 200), 7);
}

#[tokio::test]
async fn all_accounts_cooling_gives_an_honest_retry_after() {
    let limits = MockLimits { rpm: Some(1), ..MockLimits::UNLIMITED };
    let mock_config = MockConfig {
        minute: Duration::from_secs(20),
        ..MockConfig::orgs_with_limits(&["key-a"], limits)
    };
    let mock = MockServer::start(mock_config).await.unwrap();
    let config =
        groq_config_with(&mock.base_url(), &[("a", &["key-a"])], "", "minute_window = \"20s\"");
    let proxy = Proxy::start(&config).await;
    let (first, _, _) = chat(&proxy.url(), chat_body(MODEL, false)).await;
    assert_eq!(first, 200);
    // keyrelay does not know the limit yet: the upstream's 429 teaches it, and the request then
    // waits for the account (here: at most one second) before keyrelay answers 429 itself.
    let started = Instant::now();
    let wait_one_second = [("x-keyrelay-max-wait", "1")];
    let (status, headers, json) =
        chat_with(&proxy.url(), chat_body(MODEL, false), &wait_one_second).await;
    assert_eq!(status, 429, "{json}");
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited before answering");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // The mock's window is 20 s and its slot was taken just now: the wait is close to 20 s.
    assert!((15..=21).contains(&retry_after), "retry-after {retry_after}");
    let retry_after_ms: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after_ms.div_ceil(1000), retry_after);
    assert!(headers.get("x-should-retry").is_none());
    assert!(headers.get("x-keyrelay-queue-ms").is_some());
    assert_eq!(json["error"]["code"], "rate_limit_exceeded");
    assert!(json["error"].get("param").is_some());
    assert_eq!(mock_count(&mock, "key-a", 429), 1);
    // While cooling, keyrelay answers without calling the upstream.
    let (status, _, _) = chat_with(&proxy.url(), chat_body(MODEL, false), &wait_one_second).await;
    assert_eq!(status, 429);
    assert_eq!(mock.stats().total, 2);
}

#[tokio::test]
async fn a_revoked_key_is_tried_once_then_never_again() {
    let mock_config = unlimited();
    let (mock, proxy) = mock_and_proxy(&["key-a", "key-b"], mock_config).await;
    mock.set_key_state("key-a", KeyState::Revoked);
    for _ in 0..6 {
        let (status, _, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
        assert_eq!(status, 200, "{json}");
    }
    assert_eq!(mock_count(&mock, "key-a", 401), 1);
    assert_eq!(mock_count(&mock, "key-b", 200), 6);
}

#[tokio::test]
async fn out_of_quota_and_restricted_keys_are_disabled_and_then_the_answer_is_final() {
    let (mock, proxy) = mock_and_proxy(&["key-a", "key-b"], unlimited()).await;
    mock.set_key_state("key-a", KeyState::OutOfQuota);
    mock.set_key_state("key-b", KeyState::Restricted);
    let (status, headers, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
    assert_eq!(status, 429, "{json}");
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(json["error"]["code"], "no_usable_upstream_key");
    let ready = client().get(format!("http://{}/readyz", proxy.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let (status, _, _) = chat(&proxy.url(), chat_body(MODEL, false)).await;
    assert_eq!(status, 429);
    assert_eq!(mock.stats().total, 2, "each dead key was tried exactly once");
}

#[tokio::test]
async fn transient_server_errors_are_retried() {
    let faults = Faults { fail_next: 2, ..Faults::default() };
    let (mock, proxy) = mock_and_proxy(&["key-a"], MockConfig { faults, ..unlimited() }).await;
    let (status, _, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(mock_count(&mock, "key-a", 503), 2);
    assert_eq!(mock_count(&mock, "key-a", 200), 1);
}

#[tokio::test]
async fn persistent_server_errors_reach_the_client_after_bounded_retries() {
    let faults = Faults { fail_next: 100, error_status: 502, ..Faults::default() };
    let (mock, proxy) = mock_and_proxy(&["key-a"], MockConfig { faults, ..unlimited() }).await;
    let (status, _, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
    assert_eq!(status, 502);
    assert!(json["error"]["message"].is_string(), "the upstream's own error body: {json}");
    assert_eq!(mock_count(&mock, "key-a", 502), 4, "one try and the three default retries");
}

#[tokio::test]
async fn a_stream_reset_mid_way_ends_with_an_sse_error_event() {
    let faults = Faults { stream_reset_next: 1, stream_reset_after_chunks: 2, ..Faults::default() };
    let (_mock, proxy) = mock_and_proxy(&["key-a"], MockConfig { faults, ..unlimited() }).await;
    let response = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .header("content-type", "application/json")
        .body(chat_body(MODEL, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    let last = events.last().unwrap().trim();
    let error: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "upstream_stream_error");
    assert!(events.len() >= 3, "the chunks before the reset were relayed: {text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn a_request_too_large_for_the_account_is_returned_unchanged() {
    let limits = MockLimits { tpm: Some(100), ..MockLimits::UNLIMITED };
    let (mock, proxy) = mock_and_proxy(
        &["key-a", "key-b"],
        MockConfig::orgs_with_limits(&["key-a", "key-b"], limits),
    )
    .await;
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":500}}"#
    );
    let (status, _, json) = chat(&proxy.url(), body).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"]["code"], "rate_limit_exceeded");
    assert!(json["error"]["message"].as_str().unwrap().contains("Request too large"));
    assert_eq!(mock.stats().total, 1);
}

#[tokio::test]
async fn bad_input_gets_openai_errors() {
    let (mock, proxy) = mock_and_proxy(&["key-a"], unlimited()).await;
    let config =
        groq_config(&mock.base_url(), &[("a", &["key-a"])], "[server]\nmax_body_bytes = 1000");
    let small = Proxy::start(&config).await;
    let big = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let cases = [
        (small.url(), big, 413, "request_too_large"),
        (proxy.url(), "{\"model\": ".to_owned(), 400, "invalid_json"),
    ];
    for (url, body, expected, code) in cases {
        let (status, _, json) = chat(&url, body).await;
        assert_eq!(status, expected);
        assert_eq!(json["error"]["code"], code);
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }
    let response = client().get(format!("http://{}/v2/whatever", proxy.addr)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "unknown_url");
    assert_eq!(mock.stats().total, 0, "nothing reached the upstream");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_after_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/openai/v1", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::start(&groq_config(&url, &[("a", &["key-a"])], "")).await;
    let (status, _, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
    assert_eq!(status, 502);
    assert_eq!(json["error"]["code"], "upstream_unreachable");
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let faults = Faults { first_byte_delay: Duration::from_secs(5), ..Faults::default() };
    let mock = MockServer::start(MockConfig { faults, ..unlimited() }).await.unwrap();
    let config = groq_config(
        &mock.base_url(),
        &[("a", &["key-a"])],
        "[server]\nrequest_timeout = \"300ms\"",
    );
    let proxy = Proxy::start(&config).await;
    let (status, _, json) = chat(&proxy.url(), chat_body(MODEL, false)).await;
    assert_eq!(status, 504);
    assert_eq!(json["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn openai_style_streams_are_asked_for_usage_without_the_client_seeing_it() {
    let mock = MockServer::start(unlimited()).await.unwrap();
    let config = groq_config(&mock.base_url(), &[("a", &["key-a"])], "")
        .replace("kind = \"groq\"", "kind = \"openai\"\nmodels = [\"*\"]");
    let proxy = Proxy::start(&config).await;
    let stream = |body: String| async {
        let response = client()
            .post(format!("{}/chat/completions", proxy.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap()
    };
    let text = stream(chat_body(MODEL, true)).await;
    let sent: serde_json::Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "keyrelay asked for usage");
    assert!(!text.contains("\"choices\":[]"), "the client did not ask for the usage chunk: {text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));

    let asked = r#"{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let text = stream(asked.to_owned()).await;
    assert!(text.contains("\"choices\":[]"), "a client that asked gets its usage chunk");
    assert_eq!(&mock.requests()[1].body[..], asked.as_bytes(), "its body is forwarded untouched");
}
