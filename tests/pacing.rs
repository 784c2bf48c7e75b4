//! Proactive pacing and the wait queue against the mock, with shortened windows: no client-visible
//! 429 while capacity exists, goodput under overload, token-bound pacing, fairness, cancellation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Proxy, chat_body, chat_with, groq_config_with, post_chat};
use keyrelay::mock::{MockConfig, MockLimits, MockServer};
use tokio::time::Instant;

const MODEL: &str = "llama-3.1-8b-instant";
const KEYS: [&str; 3] = ["key-a", "key-b", "key-c"];

/// The mock with one org per key, each with `limits` and a "minute" of `window`, and keyrelay in
/// front with the same limits configured and the same window.
async fn paced(limits: MockLimits, window: Duration, extra: &str) -> (MockServer, Proxy) {
    let mock = MockServer::start(MockConfig {
        minute: window,
        ..MockConfig::orgs_with_limits(&KEYS, limits)
    })
    .await
    .unwrap();
    let mut provider = format!(
        "minute_window = \"{}ms\"\nsafety_margin = \"25ms\"\n[providers.limits.\"{MODEL}\"]\n",
        window.as_millis()
    );
    for (name, value) in
        [("rpm", limits.rpm), ("rpd", limits.rpd), ("tpm", limits.tpm), ("tpd", limits.tpd)]
    {
        if let Some(value) = value {
            provider.push_str(&format!("{name} = {value}\n"));
        }
    }
    let accounts: Vec<(String, [&str; 1])> =
        KEYS.iter().map(|k| (format!("acct-{k}"), [*k])).collect();
    let accounts: Vec<(&str, &[&str])> =
        accounts.iter().map(|(n, k)| (n.as_str(), &k[..])).collect();
    let proxy =
        Proxy::start(&groq_config_with(&mock.base_url(), &accounts, extra, &provider)).await;
    (mock, proxy)
}

fn upstream_429s(mock: &MockServer) -> u64 {
    mock.stats().by_status.get(&429).copied().unwrap_or(0)
}

/// Fires `count` chat completions at once as `client`; returns (status, finished at) per request.
fn burst(
    url: &str,
    count: usize,
    client_name: &str,
    body: String,
) -> Vec<tokio::task::JoinHandle<(u16, Instant)>> {
    (0..count)
        .map(|_| {
            let (url, body) = (url.to_owned(), body.clone());
            let key = client_name.to_owned();
            tokio::spawn(async move {
                let response = post_chat(&url, &key, body).await;
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                (status, Instant::now())
            })
        })
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<(u16, Instant)>>) -> Vec<(u16, Instant)> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test]
async fn a_burst_of_150_is_served_without_a_single_client_visible_429() {
    let window = Duration::from_secs(2);
    let (mock, proxy) =
        paced(MockLimits { rpm: Some(30), ..MockLimits::UNLIMITED }, window, "").await;
    let started = Instant::now();
    let results = join(burst(&proxy.url(), 150, "batch-job", chat_body(MODEL, false))).await;
    let elapsed = started.elapsed();
    let ok = results.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(ok, 150, "statuses: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    let upstream = mock.stats().total;
    eprintln!(
        "burst: 150/150 ok in {elapsed:?} (minimum {window:?}), upstream calls {upstream}, upstream 429s {}",
        upstream_429s(&mock)
    );
    assert!(
        upstream_429s(&mock) * 50 <= upstream,
        "{} of {upstream} upstream calls were 429",
        upstream_429s(&mock)
    );
    // 90 go in the first window and 60 once it slides: one window is the theoretical minimum.
    assert!(elapsed >= window, "faster than the limits allow: {elapsed:?}");
    assert!(elapsed < window * 2, "pacing stalled: {elapsed:?}");
    assert_eq!(proxy.state.scheduler().depth(), 0);
}

#[tokio::test]
async fn sustained_overload_keeps_goodput_and_sheds_only_at_deadlines() {
    let window = Duration::from_secs(2);
    let limits = MockLimits { rpm: Some(30), ..MockLimits::UNLIMITED };
    let max_wait = Duration::from_millis(1500);
    let (mock, proxy) = paced(limits, window, "[queue]\nmax_wait = \"1500ms\"").await;
    // Capacity is 3 × 30 per 2 s window = 45 requests/s; offer 1.5× that for three windows.
    let windows = 3;
    let rate = 45.0 * 1.5;
    let total = (rate * window.as_secs_f64() * f64::from(windows)) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for index in 0..total {
        tokio::time::sleep_until(started + interval * index as u32).await;
        let url = proxy.url();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (status, headers, _) = chat_with(&url, chat_body(MODEL, false), &[]).await;
            let queue_ms: u64 = headers["x-keyrelay-queue-ms"].to_str().unwrap().parse().unwrap();
            (status, sent.elapsed(), queue_ms)
        }));
    }
    let mut results = Vec::with_capacity(total);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    for (status, took, queue_ms) in &results {
        match status {
            200 => {}
            429 => {
                // Shed at its deadline, not before and not long after.
                assert!(
                    *queue_ms >= max_wait.as_millis() as u64 - 5,
                    "shed early after {queue_ms} ms"
                );
                assert!(*took < max_wait + Duration::from_secs(1), "shed late after {took:?}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let test_span = window * windows;
    let first_at = mock.requests().first().map(|r| r.received_at_ms).unwrap_or_default();
    let served_in_span = mock
        .requests()
        .iter()
        .filter(|r| r.status == 200 && r.received_at_ms < first_at + test_span.as_millis() as u64)
        .count();
    let capacity = 90 * windows as usize;
    let shed = results.iter().filter(|r| r.0 == 429).count();
    eprintln!(
        "overload: {total} offered, {served_in_span} served in {test_span:?} of capacity {capacity}, {shed} shed at deadline, upstream 429s {}",
        upstream_429s(&mock)
    );
    assert!(served_in_span * 100 >= capacity * 95, "goodput {served_in_span} of {capacity}");
    assert!(
        upstream_429s(&mock) * 50 <= mock.stats().total,
        "upstream 429s: {}",
        upstream_429s(&mock)
    );
    assert_eq!(proxy.state.scheduler().depth(), 0);
}

#[tokio::test]
async fn token_bound_traffic_is_paced_and_oversized_requests_refused_at_once() {
    let window = Duration::from_secs(2);
    let limits = MockLimits { rpm: Some(1000), tpm: Some(3000), ..MockLimits::UNLIMITED };
    let (mock, proxy) = paced(limits, window, "").await;
    // About 260 prompt tokens + 300 of output budget: five fit per account per window before
    // usage settles them down to ~280.
    let prompt = "lorem ipsum dolor sit amet ".repeat(40);
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"{prompt}"}}],"max_tokens":300}}"#
    );
    let started = Instant::now();
    let results = join(burst(&proxy.url(), 60, "tokens", body)).await;
    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    eprintln!(
        "tokens: 60/60 ok in {:?}, upstream calls {}, upstream 429s {}",
        started.elapsed(),
        mock.stats().total,
        upstream_429s(&mock)
    );
    assert!(
        upstream_429s(&mock) * 50 <= mock.stats().total,
        "upstream 429s: {}",
        upstream_429s(&mock)
    );
    // Each request needs ~576 tokens free at admission and leaves ~292 once settled: 9 per
    // account per window, so 27 + 27 + 6 over two window slides is the minimum.
    assert!(started.elapsed() < window * 3, "took {:?}", started.elapsed());

    let too_big = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":5000}}"#
    );
    let before = mock.stats().total;
    let quick = Instant::now();
    let (status, headers, json) = chat_with(&proxy.url(), too_big, &[]).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(headers["x-should-retry"], "false");
    assert!(quick.elapsed() < Duration::from_millis(500), "refused at once, not after waiting");
    assert_eq!(mock.stats().total, before, "never sent upstream");
}

#[tokio::test]
async fn a_heavy_client_does_not_starve_a_light_one() {
    let window = Duration::from_secs(1);
    let mock = MockServer::start(MockConfig {
        minute: window,
        ..MockConfig::orgs_with_limits(
            &["key-a"],
            MockLimits { rpm: Some(10), ..MockLimits::UNLIMITED },
        )
    })
    .await
    .unwrap();
    let provider = format!(
        "minute_window = \"1s\"\nsafety_margin = \"25ms\"\n[providers.limits.\"{MODEL}\"]\nrpm = 10\n"
    );
    let config = groq_config_with(
        &mock.base_url(),
        &[("a", &["key-a"])],
        "[queue]\nmax_wait = \"20s\"",
        &provider,
    );
    let proxy = Proxy::start(&config).await;
    // Both clients backlogged: the heavy one sends 10× more, and first.
    let heavy = burst(&proxy.url(), 100, "heavy", chat_body(MODEL, false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let light_sent = Instant::now();
    let light = burst(&proxy.url(), 10, "light", chat_body(MODEL, false));
    let light = join(light).await;
    let light_done = light.iter().map(|(_, at)| *at).max().unwrap();
    assert!(light.iter().all(|(status, _)| *status == 200));
    // While the light client was backlogged, count who got the capacity.
    let mut heavy_served = 0;
    for task in heavy {
        if task.is_finished() {
            let (status, at) = task.await.unwrap();
            if status == 200 && at > light_sent && at <= light_done {
                heavy_served += 1;
            }
        } else {
            task.abort();
        }
    }
    let light_share = 10.0 / f64::from(10 + heavy_served);
    eprintln!(
        "fairness: light client got {:.0}% while backlogged ({heavy_served} heavy)",
        light_share * 100.0
    );
    assert!(
        light_share >= 0.4,
        "light client got {:.0}% ({heavy_served} heavy)",
        light_share * 100.0
    );
    // The aborted heavy requests leave the queue.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(proxy.state.scheduler().depth(), 0);
}

#[tokio::test]
async fn clients_leaving_the_queue_take_no_capacity_with_them() {
    let window = Duration::from_secs(1);
    let (mock, proxy) =
        paced(MockLimits { rpm: Some(2), ..MockLimits::UNLIMITED }, window, "").await;
    let first = join(burst(&proxy.url(), 6, "first", chat_body(MODEL, false))).await;
    assert!(first.iter().all(|(status, _)| *status == 200));
    let waiting = burst(&proxy.url(), 20, "impatient", chat_body(MODEL, false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.state.scheduler().depth(), 20);
    for task in &waiting {
        task.abort();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(proxy.state.scheduler().depth(), 0);
    // Once the window slides, the full capacity (6) is there for the next client at once.
    tokio::time::sleep(window).await;
    let started = Instant::now();
    let next = join(burst(&proxy.url(), 6, "next", chat_body(MODEL, false))).await;
    assert!(next.iter().all(|(status, _)| *status == 200));
    assert!(started.elapsed() < window / 2, "capacity was lost: {:?}", started.elapsed());
    assert_eq!(mock.stats().total, 12);
}

/// A multipart transcription request carrying a WAV header that declares `seconds` of audio.
fn transcription(seconds: u32) -> (String, Vec<u8>) {
    let data = seconds * 32_000;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    for field in [16u32, 0x0001_0001, 16_000, 32_000, 0x0010_0002] {
        wav.extend_from_slice(&field.to_le_bytes());
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    let boundary = "audio-boundary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-large-v3\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").into_bytes();
    body.extend_from_slice(&wav);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn audio_seconds_per_hour_are_paced_from_the_uploaded_file() {
    let mock = MockServer::start(MockConfig::orgs_with_limits(&["key-a"], MockLimits::UNLIMITED))
        .await
        .unwrap();
    // A "minute" of 100 ms makes the audio "hour" 6 s; 30 audio seconds per hour.
    let provider = "minute_window = \"100ms\"\nsafety_margin = \"0s\"\n[providers.limits.\"whisper-large-v3\"]\nash = 30\n";
    let proxy =
        Proxy::start(&groq_config_with(&mock.base_url(), &[("a", &["key-a"])], "", provider)).await;
    let send = |seconds: u32| {
        let url = proxy.url();
        async move {
            let (content_type, body) = transcription(seconds);
            let response = common::client()
                .post(format!("{url}/audio/transcriptions"))
                .header("content-type", content_type)
                .header("x-keyrelay-max-wait", "0.5")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after =
                response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (status, retry_after, response.text().await.unwrap())
        }
    };
    let (status, _, body) = send(20).await;
    assert_eq!(status, 200, "{body}");
    let (status, retry_after, body) = send(20).await;
    assert_eq!(status, 429, "20 + 20 audio seconds exceed the hour's 30: {body}");
    let retry_after: u64 = retry_after.unwrap().parse().unwrap();
    assert!(
        (5..=7).contains(&retry_after),
        "capacity returns when the 6 s hour slides: {retry_after}"
    );
    let (status, _, body) = send(40).await;
    assert_eq!(status, 413, "40 seconds never fit an hour of 30: {body}");
    assert!(body.contains("audio seconds per hour"), "{body}");
    assert_eq!(mock.stats().total, 1, "only the first upload reached the upstream");
}
