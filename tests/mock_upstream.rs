//! Integration tests of the Groq-emulating mock upstream (`keyrelay::mock`), over real HTTP on
//! loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use keyrelay::mock::{
    Algorithm, Faults, KeyState, MockConfig, MockKey, MockLimits, MockOrg, MockServer,
    TokenAccounting, parse_duration,
};
use serde_json::{Value, json};
use tokio::time::Instant;

const MODEL: &str = "llama-3.1-8b-instant";
const UPGRADE: &str =
    "Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing";

/// Fails the test if it runs longer than 10 s.
async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), test).await.expect("test timed out")
}

thread_local! {
    /// Building a client loads TLS roots (slow in debug builds); each test has its own thread.
    static CLIENT: reqwest::Client = reqwest::Client::builder().no_proxy().build().unwrap();
}

fn client() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

fn limits(rpm: Option<u64>, rpd: Option<u64>, tpm: Option<u64>, tpd: Option<u64>) -> MockLimits {
    MockLimits { rpm, rpd, tpm, tpd }
}

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

/// `Hello world!` = 12 chars → 4 + 3 + 2 = 9 prompt tokens.
fn chat_body(extra: Value) -> Value {
    let mut body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello world!"}]});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

async fn post(server: &MockServer, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.base_url()))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn chat(server: &MockServer, key: &str, extra: Value) -> reqwest::Response {
    post(server, "/chat/completions", key, &chat_body(extra)).await
}

async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn header_u64(response: &reqwest::Response, name: &str) -> u64 {
    header(response, name).unwrap().parse().unwrap()
}

/// The "Please try again in X." duration of a Groq 429 message.
fn try_again_in(message: &str) -> Duration {
    let tail = message.split("Please try again in ").nth(1).unwrap();
    parse_duration(tail.split(". ").next().unwrap()).unwrap()
}

/// SSE `data:` payloads of a full body.
fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn non_streaming_chat_reports_usage_and_groq_headers() {
    bounded(async {
        let server =
            start(MockConfig::orgs_with_limits(&["k1"], MockLimits::new(30, 1000, 6000, 100_000)))
                .await;
        let response = chat(&server, "k1", json!({"max_completion_tokens": 100})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header_u64(&response, "x-ratelimit-limit-requests"), 1000);
        assert_eq!(header_u64(&response, "x-ratelimit-remaining-requests"), 999);
        assert_eq!(header_u64(&response, "x-ratelimit-limit-tokens"), 6000);
        // Reserved at admission: 9 prompt + 100 max.
        assert_eq!(header_u64(&response, "x-ratelimit-remaining-tokens"), 6000 - 109);
        for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
            assert!(parse_duration(header(&response, name).unwrap()).unwrap() > Duration::ZERO);
        }
        assert_eq!(header(&response, "x-groq-region"), Some("mock"));
        assert!(header(&response, "retry-after").is_none());
        let request_id = header(&response, "x-request-id").unwrap().to_owned();
        assert!(request_id.starts_with("req_"));
        let body = json_of(response).await;
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], MODEL);
        assert_eq!(body["x_groq"]["id"], request_id.as_str());
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        let usage = &body["usage"];
        assert_eq!(
            (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()),
            (Some(9), Some(16))
        );
        assert_eq!(usage["total_tokens"], 25);
        for field in ["queue_time", "prompt_time", "completion_time", "total_time"] {
            assert!(usage[field].is_f64(), "{field}");
        }
        // Trued-up to the actual usage.
        assert_eq!(server.stats().tokens_by_org["org_k1"], 25);
    })
    .await;
}

#[tokio::test]
async fn streaming_sends_token_chunks_then_final_usage_then_done() {
    bounded(async {
        let config = MockConfig {
            completion_tokens: 3,
            ..MockConfig::orgs_with_limits(&["k1"], MockLimits::UNLIMITED)
        };
        let server = start(config).await;
        let extra = json!({"stream": true, "stream_options": {"include_usage": true}});
        let response = chat(&server, "k1", extra).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
        let events = sse_events(&response.text().await.unwrap());
        assert_eq!(events.len(), 6, "{events:?}");
        assert_eq!(events[5], "[DONE]");
        let chunks: Vec<Value> =
            events[..5].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(chunks[0]["x_groq"]["id"].as_str().unwrap().starts_with("req_"));
        for chunk in &chunks[..3] {
            assert!(chunk["choices"][0]["delta"]["content"].is_string());
            assert!(chunk["choices"][0]["finish_reason"].is_null());
            assert!(chunk["usage"].is_null());
        }
        let last = &chunks[3];
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["x_groq"]["usage"]["completion_tokens"], 3);
        assert_eq!(last["x_groq"]["usage"]["prompt_tokens"], 9);
        assert_eq!(last["x_groq"]["id"], chunks[0]["x_groq"]["id"]);
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"]["total_tokens"], 12);
        assert_eq!(server.stats().tokens_by_org["org_k1"], 12);

        // Without include_usage: no usage chunk and no `usage` field.
        let response = chat(&server, "k1", json!({"stream": true})).await;
        let events = sse_events(&response.text().await.unwrap());
        assert_eq!(events.len(), 5);
        let last: Value = serde_json::from_str(&events[3]).unwrap();
        assert!(last.get("usage").is_none());
        assert_eq!(last["x_groq"]["usage"]["total_tokens"], 12);
    })
    .await;
}

#[tokio::test]
async fn stream_chunks_are_flushed_one_by_one() {
    bounded(async {
        let config = MockConfig {
            completion_tokens: 4,
            stream_chunk_interval: Duration::from_millis(150),
            ..MockConfig::orgs_with_limits(&["k1"], MockLimits::UNLIMITED)
        };
        let server = start(config).await;
        let mut response = chat(&server, "k1", json!({"stream": true})).await;
        let started = Instant::now();
        let first = response.chunk().await.unwrap().unwrap();
        let first_at = started.elapsed();
        assert!(String::from_utf8_lossy(&first).starts_with("data: {"));
        while response.chunk().await.unwrap().is_some() {}
        let total = started.elapsed();
        // 4 tokens + final + [DONE] with 150 ms between them.
        assert!(total >= Duration::from_millis(700), "{total:?}");
        assert!(first_at < Duration::from_millis(300), "first chunk after {first_at:?}");
    })
    .await;
}

#[tokio::test]
async fn rpm_exhaustion_gives_groq_429() {
    bounded(async {
        let server = start(MockConfig::orgs_with_limits(&["k1"], limits(Some(2), None, None, None))).await;
        for _ in 0..2 {
            assert_eq!(chat(&server, "k1", json!({})).await.status(), 200);
        }
        let response = chat(&server, "k1", json!({})).await;
        assert_eq!(response.status(), 429);
        let retry_after = header_u64(&response, "retry-after");
        let body = json_of(response).await;
        let error = body["error"].as_object().unwrap();
        assert_eq!(error["type"], "requests");
        assert_eq!(error["code"], "rate_limit_exceeded");
        assert!(!error.contains_key("param"));
        let message = error["message"].as_str().unwrap();
        let expected = "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_k1` \
service tier `on_demand` on requests per minute (RPM): Limit 2, Used 2, Requested 1. Please try again in ";
        assert!(message.starts_with(expected), "{message}");
        assert!(message.ends_with(&format!(". {UPGRADE}")), "{message}");
        let wait = try_again_in(message);
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60), "{wait:?}");
        assert_eq!(retry_after, wait.as_secs_f64().ceil() as u64);
        assert_eq!(server.stats().rate_limited_by_dimension["RPM"], 1);
    })
    .await;
}

#[tokio::test]
async fn request_larger_than_tpm_gives_413() {
    bounded(async {
        let server = start(MockConfig::orgs_with_limits(&["k1"], limits(None, None, Some(100), None))).await;
        let response = chat(&server, "k1", json!({"max_tokens": 200})).await;
        assert_eq!(response.status(), 413);
        assert!(header(&response, "retry-after").is_none());
        let body = json_of(response).await;
        let expected = format!(
            "Request too large for model `{MODEL}` in organization `org_k1` service tier `on_demand` on tokens per \
minute (TPM): Limit 100, Requested 209, please reduce your message size and try again. {UPGRADE}"
        );
        assert_eq!(body["error"]["message"], expected.as_str());
        assert_eq!(body["error"]["type"], "tokens");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        // Nothing was charged: a fitting request still has the whole budget.
        let response = chat(&server, "k1", json!({"max_tokens": 91})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header_u64(&response, "x-ratelimit-remaining-tokens"), 0);
    })
    .await;
}

#[tokio::test]
async fn rpd_headers_decrement_until_429() {
    bounded(async {
        let server =
            start(MockConfig::orgs_with_limits(&["k1"], limits(None, Some(3), None, None))).await;
        for remaining in [2, 1, 0] {
            let response = chat(&server, "k1", json!({})).await;
            assert_eq!(response.status(), 200);
            assert_eq!(header_u64(&response, "x-ratelimit-limit-requests"), 3);
            assert_eq!(header_u64(&response, "x-ratelimit-remaining-requests"), remaining);
            assert!(header(&response, "x-ratelimit-limit-tokens").is_none());
        }
        let response = chat(&server, "k1", json!({})).await;
        assert_eq!(response.status(), 429);
        assert_eq!(header_u64(&response, "x-ratelimit-remaining-requests"), 0);
        let reset =
            parse_duration(header(&response, "x-ratelimit-reset-requests").unwrap()).unwrap();
        assert!(reset > Duration::from_secs(86_000), "{reset:?}");
        let body = json_of(response).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("on requests per day (RPD): Limit 3, Used 3, Requested 1."),
            "{message}"
        );
        assert!(try_again_in(message) > Duration::from_secs(86_000));
        assert_eq!(body["error"]["type"], "requests");
    })
    .await;
}

#[tokio::test]
async fn tpm_headers_follow_reservation_and_true_up() {
    bounded(async {
        for (accounting, second_remaining) in [
            (TokenAccounting::Actual, 1000 - 25 - 109),
            (TokenAccounting::Reserved, 1000 - 2 * 109),
        ] {
            let config = MockConfig {
                token_accounting: accounting,
                minute: Duration::from_secs(30),
                ..MockConfig::orgs_with_limits(&["k1"], limits(None, None, Some(1000), None))
            };
            let server = start(config).await;
            let first = chat(&server, "k1", json!({"max_completion_tokens": 100})).await;
            assert_eq!(header_u64(&first, "x-ratelimit-remaining-tokens"), 891);
            let second = chat(&server, "k1", json!({"max_completion_tokens": 100})).await;
            assert_eq!(header_u64(&second, "x-ratelimit-limit-tokens"), 1000);
            assert_eq!(
                header_u64(&second, "x-ratelimit-remaining-tokens"),
                second_remaining,
                "{accounting:?}"
            );
            let reset =
                parse_duration(header(&second, "x-ratelimit-reset-tokens").unwrap()).unwrap();
            assert!(
                reset > Duration::from_secs(29) && reset <= Duration::from_secs(30),
                "{reset:?}"
            );
            assert!(header(&second, "x-ratelimit-limit-requests").is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn sliding_window_recovers_after_the_minute() {
    bounded(async {
        let config = MockConfig {
            minute: Duration::from_secs(1),
            ..MockConfig::orgs_with_limits(&["k1"], limits(Some(2), None, None, None))
        };
        let server = start(config).await;
        for _ in 0..2 {
            assert_eq!(chat(&server, "k1", json!({})).await.status(), 200);
        }
        let refused = chat(&server, "k1", json!({})).await;
        assert_eq!(refused.status(), 429);
        let wait = try_again_in(json_of(refused).await["error"]["message"].as_str().unwrap());
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
        assert_eq!(chat(&server, "k1", json!({})).await.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn bucket_refills_gradually() {
    bounded(async {
        let config = MockConfig {
            algorithm: Algorithm::Bucket,
            minute: Duration::from_secs(2),
            ..MockConfig::orgs_with_limits(&["k1"], limits(Some(4), None, None, None))
        };
        let server = start(config).await;
        let started = tokio::time::Instant::now();
        for _ in 0..4 {
            assert_eq!(chat(&server, "k1", json!({})).await.status(), 200);
        }
        let refused = chat(&server, "k1", json!({})).await;
        assert_eq!(refused.status(), 429);
        let elapsed = started.elapsed();
        let wait = try_again_in(json_of(refused).await["error"]["message"].as_str().unwrap());
        // One request refills every 500 ms, continuously since the first was charged.
        let earliest = Duration::from_millis(500).saturating_sub(elapsed);
        assert!(
            wait >= earliest && wait <= Duration::from_millis(500),
            "{wait:?} after {elapsed:?}"
        );
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
        assert_eq!(chat(&server, "k1", json!({})).await.status(), 200);
        // Only one request's worth came back, not the whole bucket.
        let refused = chat(&server, "k1", json!({})).await;
        assert_eq!(refused.status(), 429);
        let wait = try_again_in(json_of(refused).await["error"]["message"].as_str().unwrap());
        assert!(wait > Duration::from_millis(200), "{wait:?}");
    })
    .await;
}

#[tokio::test]
async fn key_states_map_to_groq_and_openai_errors() {
    bounded(async {
        let keys = [
            ("good", KeyState::Active),
            ("revoked", KeyState::Revoked),
            ("broke", KeyState::OutOfQuota),
            ("banned", KeyState::Restricted),
        ];
        let org = MockOrg {
            id: "org_x".to_owned(),
            keys: keys
                .iter()
                .map(|(key, state)| MockKey { key: (*key).to_owned(), state: *state })
                .collect(),
            ..MockOrg::default()
        };
        let server = start(MockConfig { orgs: vec![org], ..MockConfig::default() }).await;
        let cases = [
            ("good", 200, None),
            ("revoked", 401, Some("invalid_api_key")),
            ("unknown", 401, Some("invalid_api_key")),
            ("broke", 429, Some("insufficient_quota")),
            ("banned", 403, Some("organization_restricted")),
        ];
        for (key, status, code) in cases {
            let response = chat(&server, key, json!({})).await;
            assert_eq!(response.status(), status, "{key}");
            assert!(header(&response, "retry-after").is_none());
            let body = json_of(response).await;
            if let Some(code) = code {
                assert_eq!(body["error"]["code"], code, "{key}");
            }
        }
        let body = json_of(chat(&server, "broke", json!({})).await).await;
        assert_eq!(body["error"]["type"], "insufficient_quota");
        assert!(body["error"]["param"].is_null() && body["error"].get("param").is_some());
        let missing = client()
            .post(format!("{}/chat/completions", server.base_url()))
            .body(chat_body(json!({})).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 401);
        assert_eq!(json_of(missing).await["error"]["message"], "Invalid API Key");

        server.set_key_state("good", KeyState::Revoked);
        assert_eq!(chat(&server, "good", json!({})).await.status(), 401);
        server.set_key_state("good", KeyState::Active);
        assert_eq!(chat(&server, "good", json!({})).await.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn fail_next_injects_errors_that_charge_nothing() {
    bounded(async {
        let config = MockConfig {
            faults: Faults { fail_next: 2, ..Faults::default() },
            ..MockConfig::orgs_with_limits(&["k1"], limits(Some(1), None, None, None))
        };
        let server = start(config).await;
        for _ in 0..2 {
            let response = chat(&server, "k1", json!({})).await;
            assert_eq!(response.status(), 503);
            assert_eq!(json_of(response).await["error"]["type"], "internal_server_error");
        }
        assert_eq!(chat(&server, "k1", json!({})).await.status(), 200);
        server.set_faults(Faults { fail_next: 1, error_status: 500, ..Faults::default() });
        assert_eq!(chat(&server, "k1", json!({})).await.status(), 500);
        // The single RPM slot was taken by the one successful request.
        assert_eq!(chat(&server, "k1", json!({})).await.status(), 429);
        let stats = server.stats();
        assert_eq!(
            (stats.by_status[&503], stats.by_status[&500], stats.by_status[&200]),
            (2, 1, 1)
        );
    })
    .await;
}

#[tokio::test]
async fn stream_reset_aborts_the_body_mid_way() {
    bounded(async {
        let config = MockConfig {
            completion_tokens: 10,
            faults: Faults {
                stream_reset_next: 1,
                stream_reset_after_chunks: 2,
                ..Faults::default()
            },
            ..MockConfig::orgs_with_limits(&["k1"], MockLimits::UNLIMITED)
        };
        let server = start(config).await;
        let mut response = chat(&server, "k1", json!({"stream": true})).await;
        assert_eq!(response.status(), 200);
        let mut received = Vec::new();
        let outcome = loop {
            match response.chunk().await {
                Ok(Some(bytes)) => received.extend_from_slice(&bytes),
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        let error = outcome.expect_err("the stream ended cleanly");
        assert!(error.is_body() || error.is_decode() || error.is_request(), "{error:?}");
        let text = String::from_utf8_lossy(&received);
        assert_eq!(sse_events(&text).len(), 2, "{text}");
        assert!(!text.contains("[DONE]"));
        // Only the next stream was affected.
        let text = chat(&server, "k1", json!({"stream": true})).await.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        // The aborted stream was trued-up to the 2 tokens it produced: 9 + 2, then 9 + 10.
        assert_eq!(server.stats().tokens_by_org["org_k1"], 11 + 19);
    })
    .await;
}

#[tokio::test]
async fn stats_and_recorded_requests() {
    bounded(async {
        let server =
            start(MockConfig::orgs_with_limits(&["k1", "k2"], limits(Some(1), None, None, None)))
                .await;
        chat(&server, "k1", json!({})).await;
        chat(&server, "k1", json!({})).await;
        chat(&server, "k2", json!({})).await;
        chat(&server, "nope", json!({})).await;
        let listed = client()
            .get(format!("{}/models?limit=5", server.base_url()))
            .bearer_auth("k2")
            .header("x-test", "yes")
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);

        let stats = server.stats();
        assert_eq!(stats.total, 5);
        assert_eq!(stats.by_status[&200], 3);
        assert_eq!(stats.by_status[&429], 1);
        assert_eq!(stats.by_status[&401], 1);
        assert_eq!(stats.by_key["k1"][&200], 1);
        assert_eq!(stats.by_key["k1"][&429], 1);
        assert_eq!(stats.by_key["nope"][&401], 1);
        assert_eq!(stats.by_org["org_k2"][&200], 2);
        assert_eq!(stats.rate_limited_by_dimension["RPM"], 1);

        let requests = server.requests();
        assert_eq!(requests.len(), 5);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/openai/v1/chat/completions");
        assert_eq!(requests[0].key.as_deref(), Some("k1"));
        assert_eq!(serde_json::from_slice::<Value>(&requests[0].body).unwrap()["model"], MODEL);
        assert_eq!((requests[1].status, requests[3].status), (429, 401));
        let last = &requests[4];
        assert_eq!(
            (last.method.as_str(), last.path.as_str(), last.query.as_deref()),
            ("GET", "/openai/v1/models", Some("limit=5"))
        );
        assert_eq!(last.header("x-test"), Some("yes"));
        assert!(last.received_at_ms >= requests[0].received_at_ms);

        let url = format!("http://{}/mock/stats", server.addr());
        let over_http = json_of(client().get(url).send().await.unwrap()).await;
        assert_eq!(over_http["total"], 5);
        assert_eq!(over_http["by_key"]["k1"]["429"], 1);
        assert_eq!(over_http["tokens_by_org"]["org_k1"], 9 + 16);
        assert_eq!(server.stats().total, 5, "/mock routes are not counted");
    })
    .await;
}

fn multipart(boundary: &str, model: &str, file: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
Content-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    let rest = format!(
        "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n--{boundary}--\r\n"
    );
    body.extend_from_slice(rest.as_bytes());
    body
}

#[tokio::test]
async fn multipart_transcription_counts_one_request() {
    bounded(async {
        let whisper = limits(Some(1), Some(100), None, None);
        let org = MockOrg {
            id: "org_a".to_owned(),
            keys: vec![MockKey::active("k1")],
            limits: HashMap::from([("whisper-large-v3".to_owned(), whisper)]),
            default_limits: MockLimits::UNLIMITED,
        };
        let server = start(MockConfig { orgs: vec![org], ..MockConfig::default() }).await;
        let send = || async {
            client()
                .post(format!("{}/audio/transcriptions", server.base_url()))
                .bearer_auth("k1")
                .header("content-type", "multipart/form-data; boundary=b0undary")
                .body(multipart("b0undary", "whisper-large-v3", &[7u8; 1234]))
                .send()
                .await
                .unwrap()
        };
        let response = send().await;
        assert_eq!(response.status(), 200);
        assert_eq!(header_u64(&response, "x-ratelimit-remaining-requests"), 99);
        assert!(header(&response, "x-ratelimit-limit-tokens").is_none());
        assert_eq!(json_of(response).await["text"], "mock transcription of 1234 bytes");
        let refused = send().await;
        assert_eq!(refused.status(), 429);
        let message = json_of(refused).await["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("model `whisper-large-v3`")
                && message.contains("(RPM): Limit 1, Used 1"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn both_prefixes_models_and_request_errors() {
    bounded(async {
        let server = start(MockConfig::orgs_with_limits(&["k1"], MockLimits::UNLIMITED)).await;
        let root = format!("http://{}", server.addr());
        for prefix in ["/v1", "/openai/v1"] {
            let list = client().get(format!("{root}{prefix}/models")).bearer_auth("k1").send().await.unwrap();
            assert_eq!(list.status(), 200);
            let list = json_of(list).await;
            let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
            assert_eq!(ids, ["llama-3.1-8b-instant", "llama-3.3-70b-versatile", "whisper-large-v3"]);
            let chat = client().post(format!("{root}{prefix}/chat/completions")).bearer_auth("k1").body(chat_body(json!({})).to_string()).send().await.unwrap();
            assert_eq!(chat.status(), 200, "{prefix}");
        }
        let one = client().get(format!("{root}/v1/models/{MODEL}")).bearer_auth("k1").send().await.unwrap();
        assert_eq!(json_of(one).await["id"], MODEL);
        let missing = client().get(format!("{root}/v1/models/gpt-9")).bearer_auth("k1").send().await.unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(json_of(missing).await["error"]["code"], "model_not_found");

        let unknown = chat(&server, "k1", json!({"model": "x"})).await;
        assert_eq!(unknown.status(), 404);
        let expected = json!({"error": {"message": "The model `x` does not exist or you do not have access to it.", "type": "invalid_request_error", "code": "model_not_found"}});
        assert_eq!(json_of(unknown).await, expected);
        let malformed = client().post(format!("{}/chat/completions", server.base_url())).bearer_auth("k1").body("{not json").send().await.unwrap();
        assert_eq!(malformed.status(), 400);
        assert_eq!(json_of(malformed).await["error"]["type"], "invalid_request_error");
    })
    .await;
}

#[tokio::test]
async fn embeddings_cost_input_tokens() {
    bounded(async {
        let server =
            start(MockConfig::orgs_with_limits(&["k1"], limits(None, None, Some(100), None))).await;
        let body = json!({"model": MODEL, "input": ["abcdefgh", "abcd"]});
        let response = post(&server, "/embeddings", "k1", &body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header_u64(&response, "x-ratelimit-remaining-tokens"), 97);
        let body = json_of(response).await;
        assert_eq!(body["usage"]["prompt_tokens"], 3);
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 16);
    })
    .await;
}

#[tokio::test]
async fn config_from_toml_and_delays() {
    bounded(async {
        let config = MockConfig::from_toml_str(
            r#"
            minute = "2s"
            [faults]
            latency = "150ms"
            [[orgs]]
            id = "org_t"
            keys = ["tk"]
            limits = { "llama-3.1-8b-instant" = { rpm = 30, rpd = 14400, tpm = 6000, tpd = 500000 } }
            "#,
        )
        .unwrap();
        let server = start(config).await;
        let started = Instant::now();
        let response = chat(&server, "tk", json!({})).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(header_u64(&response, "x-ratelimit-limit-requests"), 14_400);
        let reset = parse_duration(header(&response, "x-ratelimit-reset-tokens").unwrap()).unwrap();
        assert!(reset <= Duration::from_secs(2), "{reset:?}");
        server.set_faults(Faults { first_byte_delay: Duration::from_millis(100), ..Faults::default() });
        let started = Instant::now();
        chat(&server, "tk", json!({})).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
    })
    .await;
}

#[tokio::test]
async fn demo_config_serves_free_tier_limits() {
    bounded(async {
        let server = start(MockConfig::demo()).await;
        let body = json!({"model": "llama-3.3-70b-versatile", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10});
        let response = post(&server, "/chat/completions", "mock-key-b", &body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header_u64(&response, "x-ratelimit-limit-requests"), 1000);
        assert_eq!(header_u64(&response, "x-ratelimit-limit-tokens"), 12_000);
        assert_eq!(server.stats().by_org["org_b"][&200], 1);
    })
    .await;
}
