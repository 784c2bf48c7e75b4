//! Load benchmark: keyrelay's overhead over calling the upstream directly.
//!
//! Starts the in-process mock upstream (`keyrelay::mock`, unlimited) and keyrelay in front of it,
//! then runs the same workload **direct** (client → mock) and **through keyrelay** (client →
//! keyrelay → mock) in alternating rounds after a warm-up, and prints throughput, p50/p99 latency,
//! their ratios (proxy/direct) and the added latency for two scenarios:
//! 1. small non-streaming chat completions (`max_tokens` 16, 16 completion tokens);
//! 2. long streaming completions (256 SSE chunks, 1 ms apart): time to first byte and total time.
//!
//! Any non-200 answer, transport error or stream not ending with `data: [DONE]` fails the run.
//!
//! Run: `cargo bench --bench load` (full size), `KEYRELAY_BENCH_QUICK=1 cargo bench --bench load`
//! (a few seconds). Overrides: `KEYRELAY_BENCH_REQUESTS`, `KEYRELAY_BENCH_CONCURRENCY`,
//! `KEYRELAY_BENCH_STREAMS`, `KEYRELAY_BENCH_STREAM_CONCURRENCY`, `KEYRELAY_BENCH_STREAM_TOKENS`,
//! `KEYRELAY_BENCH_ROUNDS`; `KEYRELAY_BENCH_JSON=path` also writes the figures as JSON. Without
//! `--bench` (e.g. `cargo test --all-targets`) it runs a tiny smoke workload.
// A benchmark reports on stdout; that is its whole point.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use keyrelay::Config;
use keyrelay::mock::{MockConfig, MockLimits, MockServer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

type BoxError = Box<dyn Error + Send + Sync>;

const KEYS: [&str; 2] = ["key-a", "key-b"];
const DIRECT_AUTH: [&str; 2] = ["Bearer key-a", "Bearer key-b"];
const PROXY_AUTH: &str = "Bearer bench-client";
const MODEL: &str = "llama-3.1-8b-instant";
const SMALL_TOKENS: u64 = 16;
const CHUNK_INTERVAL: Duration = Duration::from_millis(1);

/// Workload sizes, from the mode and the environment.
struct Settings {
    mode: &'static str,
    requests: usize,
    concurrency: usize,
    streams: usize,
    stream_concurrency: usize,
    stream_tokens: u64,
    rounds: usize,
    json: Option<String>,
}

impl Settings {
    fn from_env() -> Result<Self, BoxError> {
        let quick = std::env::var("KEYRELAY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let bench = std::env::args().any(|a| a == "--bench");
        // (mode, requests, concurrency, streams, stream concurrency, stream tokens, rounds)
        let (mode, requests, concurrency, streams, stream_concurrency, stream_tokens, rounds) =
            if quick {
                ("quick", 2_000, 64, 128, 64, 256, 2)
            } else if bench {
                ("full", 20_000, 64, 500, 64, 256, 4)
            } else {
                ("smoke", 200, 16, 16, 8, 32, 1)
            };
        let s = Self {
            mode,
            requests: env_number("KEYRELAY_BENCH_REQUESTS", requests)?,
            concurrency: env_number("KEYRELAY_BENCH_CONCURRENCY", concurrency)?,
            streams: env_number("KEYRELAY_BENCH_STREAMS", streams)?,
            stream_concurrency: env_number(
                "KEYRELAY_BENCH_STREAM_CONCURRENCY",
                stream_concurrency,
            )?,
            stream_tokens: env_number("KEYRELAY_BENCH_STREAM_TOKENS", stream_tokens)?,
            rounds: env_number("KEYRELAY_BENCH_ROUNDS", rounds)?,
            json: std::env::var("KEYRELAY_BENCH_JSON").ok().filter(|p| !p.is_empty()),
        };
        let sizes = [s.requests, s.concurrency, s.streams, s.stream_concurrency, s.rounds];
        if sizes.contains(&0) || s.stream_tokens == 0 {
            return Err("KEYRELAY_BENCH_* sizes must be at least 1".into());
        }
        Ok(s)
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

/// Direct or through keyrelay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Direct,
    Proxy,
}

/// Where one side sends its requests, with its own client.
struct Target {
    side: Side,
    url: String,
    client: reqwest::Client,
}

impl Target {
    fn new(side: Side, base: &str, pool: usize) -> Result<Self, BoxError> {
        let client =
            reqwest::Client::builder().pool_max_idle_per_host(pool).tcp_nodelay(true).build()?;
        Ok(Self { side, url: format!("{base}/chat/completions"), client })
    }

    fn auth(&self, i: usize) -> &'static str {
        match self.side {
            Side::Direct => DIRECT_AUTH[i % DIRECT_AUTH.len()],
            Side::Proxy => PROXY_AUTH,
        }
    }
}

/// Everything measured for one side of one scenario.
#[derive(Default)]
struct Outcome {
    /// Full request latency (send → last body byte).
    latency: Vec<Duration>,
    /// Send → first body byte.
    ttfb: Vec<Duration>,
    non_200: u64,
    errors: u64,
    missing_done: u64,
    /// Wall time of the measured rounds.
    elapsed: Duration,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.latency.extend(other.latency);
        self.ttfb.extend(other.ttfb);
        self.non_200 += other.non_200;
        self.errors += other.errors;
        self.missing_done += other.missing_done;
        self.elapsed += other.elapsed;
    }

    fn failures(&self) -> u64 {
        self.non_200 + self.errors + self.missing_done
    }

    fn count(&self) -> usize {
        self.latency.len() + usize::try_from(self.errors).unwrap_or(usize::MAX)
    }

    fn throughput(&self) -> f64 {
        self.count() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn finish(&mut self) {
        self.latency.sort_unstable();
        self.ttfb.sort_unstable();
    }
}

/// Nearest-rank percentile in milliseconds of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// One request: status, time to first body byte, total time, whether the body ended in `[DONE]`.
async fn one(
    target: &Target,
    body: Bytes,
    i: usize,
) -> reqwest::Result<(u16, Duration, Duration, bool)> {
    let start = Instant::now();
    let mut response = target
        .client
        .post(&target.url)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, target.auth(i))
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let mut ttfb = None;
    let mut tail: Vec<u8> = Vec::with_capacity(128);
    while let Some(chunk) = response.chunk().await? {
        if ttfb.is_none() {
            ttfb = Some(start.elapsed());
        }
        tail.extend_from_slice(&chunk);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
    }
    let total = start.elapsed();
    let done = tail.trim_ascii_end().ends_with(b"data: [DONE]");
    Ok((status, ttfb.unwrap_or(total), total, done))
}

/// Sends `n` requests with `concurrency` workers and measures each.
async fn run(
    target: &Arc<Target>,
    body: &Bytes,
    n: usize,
    concurrency: usize,
    streaming: bool,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (target, body, next) = (Arc::clone(target), body.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut out = Outcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    match one(&target, body.clone(), i).await {
                        Ok((status, ttfb, total, done)) => {
                            out.latency.push(total);
                            out.ttfb.push(ttfb);
                            if status != 200 {
                                out.non_200 += 1;
                            } else if streaming && !done {
                                out.missing_done += 1;
                            }
                        }
                        Err(_) => out.errors += 1,
                    }
                }
                out
            })
        })
        .collect();
    let mut total = Outcome::default();
    for worker in workers {
        match worker.await {
            Ok(out) => total.merge(out),
            Err(_) => total.errors += 1,
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// One scenario's workload.
struct Scenario {
    key: &'static str,
    title: String,
    streaming: bool,
    body: Bytes,
    requests: usize,
    concurrency: usize,
    warmup: usize,
    mock: MockConfig,
}

/// Results of one scenario.
struct Measured {
    direct: Outcome,
    proxy: Outcome,
    warmup_failures: u64,
    upstream_seen: u64,
    upstream_expected: u64,
}

/// keyrelay on `127.0.0.1:0` in front of `base_url`; stops when the sender is dropped.
async fn start_proxy(base_url: &str) -> Result<(String, oneshot::Sender<()>), BoxError> {
    let mut text = format!(
        "[store]\nenabled = false\n[retry]\nmax_retries = 0\n\n[[providers]]\nkind = \"groq\"\nbase_url = \"{base_url}\"\n"
    );
    for (i, key) in KEYS.iter().enumerate() {
        text.push_str(&format!(
            "[[providers.accounts]]\nname = \"acct-{i}\"\nkeys = [\"{key}\"]\n"
        ));
    }
    let config = Config::from_toml(&text, "bench.toml", &HashMap::new())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(keyrelay::serve(listener, config, async {
        let _ = stopped.await;
    }));
    Ok((format!("http://{addr}/v1"), stop))
}

async fn measure(s: &Scenario, rounds: usize) -> Result<Measured, BoxError> {
    let mock = MockServer::start(s.mock.clone()).await?;
    let (proxy_url, stop) = start_proxy(&mock.base_url()).await?;
    let pool = s.concurrency * 2;
    let direct = Arc::new(Target::new(Side::Direct, &mock.base_url(), pool)?);
    let proxy = Arc::new(Target::new(Side::Proxy, &proxy_url, pool)?);

    // Warm-up: open every connection (client pools and keyrelay's upstream pool), fault in code.
    let mut warmup_failures = 0;
    for target in [&direct, &proxy] {
        warmup_failures +=
            run(target, &s.body, s.warmup, s.concurrency, s.streaming).await.failures();
    }

    // Alternating rounds; the order flips each round so neither side always goes first.
    let (mut d, mut p) = (Outcome::default(), Outcome::default());
    for round in 0..rounds {
        let n = s.requests / rounds + usize::from(round < s.requests % rounds);
        let order = if round % 2 == 0 { [&direct, &proxy] } else { [&proxy, &direct] };
        for target in order {
            let out = run(target, &s.body, n, s.concurrency, s.streaming).await;
            match target.side {
                Side::Direct => d.merge(out),
                Side::Proxy => p.merge(out),
            }
        }
    }
    d.finish();
    p.finish();
    let upstream_seen = mock.stats().total;
    drop(stop);
    mock.shutdown().await;
    Ok(Measured {
        direct: d,
        proxy: p,
        warmup_failures,
        upstream_seen,
        upstream_expected: 2 * (s.warmup + s.requests) as u64,
    })
}

fn side_json(o: &Outcome, streaming: bool) -> Value {
    let mut v = json!({
        "count": o.count(),
        "elapsed_s": o.elapsed.as_secs_f64(),
        "throughput_per_s": o.throughput(),
        "p50_ms": pct(&o.latency, 50.0),
        "p99_ms": pct(&o.latency, 99.0),
        "non_200": o.non_200,
        "errors": o.errors,
    });
    if streaming {
        v["ttfb_p50_ms"] = json!(pct(&o.ttfb, 50.0));
        v["ttfb_p99_ms"] = json!(pct(&o.ttfb, 99.0));
        v["missing_done"] = json!(o.missing_done);
    }
    v
}

/// Prints the scenario's table and returns its JSON.
fn report(s: &Scenario, m: &Measured) -> Value {
    let (d, p) = (&m.direct, &m.proxy);
    println!("\n{}", s.title);
    println!(
        "  {:<24}{:>10}{:>10}{:>14}{:>12}",
        "metric", "direct", "keyrelay", "proxy/direct", "added"
    );
    let (dt, pt) = (d.throughput(), p.throughput());
    let unit = if s.streaming { "throughput (streams/s)" } else { "throughput (req/s)" };
    println!("  {unit:<24}{dt:>10.0}{pt:>10.0}{:>13.2}x{:>12}", pt / dt, "-");
    let mut rows: Vec<(&str, &[Duration], &[Duration], f64)> = Vec::new();
    if s.streaming {
        rows.push(("first byte p50 (ms)", &d.ttfb, &p.ttfb, 50.0));
        rows.push(("first byte p99 (ms)", &d.ttfb, &p.ttfb, 99.0));
        rows.push(("stream total p50 (ms)", &d.latency, &p.latency, 50.0));
        rows.push(("stream total p99 (ms)", &d.latency, &p.latency, 99.0));
    } else {
        rows.push(("latency p50 (ms)", &d.latency, &p.latency, 50.0));
        rows.push(("latency p99 (ms)", &d.latency, &p.latency, 99.0));
    }
    let mut added = serde_json::Map::new();
    let mut ratio = serde_json::Map::new();
    ratio.insert("throughput".into(), json!(pt / dt));
    for (name, ds, ps, q) in rows {
        let (dv, pv) = (pct(ds, q), pct(ps, q));
        println!("  {name:<24}{dv:>10.2}{pv:>10.2}{:>13.2}x{:>+9.2} ms", pv / dv, pv - dv);
        let key = name.split(" (").next().unwrap_or(name).replace(' ', "_");
        added.insert(format!("{key}_ms"), json!(pv - dv));
        ratio.insert(key, json!(pv / dv));
    }
    let bad = |o: &Outcome| {
        if s.streaming {
            format!("{}/{}/{}", o.non_200, o.errors, o.missing_done)
        } else {
            format!("{}/{}", o.non_200, o.errors)
        }
    };
    let label = if s.streaming { "non-200/err/no [DONE]" } else { "non-200/errors" };
    println!("  {label:<24}{:>10}{:>10}", bad(d), bad(p));
    println!(
        "  upstream requests seen {} (expected {}), warm-up failures {}",
        m.upstream_seen, m.upstream_expected, m.warmup_failures
    );
    json!({
        "title": s.title,
        "requests": s.requests,
        "concurrency": s.concurrency,
        "warmup": s.warmup,
        "direct": side_json(d, s.streaming),
        "proxy": side_json(p, s.streaming),
        "ratio_proxy_over_direct": ratio,
        "added_ms": added,
        "warmup_failures": m.warmup_failures,
        "upstream_seen": m.upstream_seen,
        "upstream_expected": m.upstream_expected,
    })
}

fn chat_body(stream: bool, max_tokens: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"Say hello"}}],"stream":{stream},"max_tokens":{max_tokens}}}"#
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let s = Settings::from_env()?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "keyrelay load bench ({} mode, {profile} build): {cores} CPU core(s) shared by the load client, \
         keyrelay and the mock upstream, all in one process ({workers} tokio workers); \
         figures include that contention.",
        s.mode
    );
    println!(
        "Mock and keyrelay unlimited, keyrelay retries off; {} alternating rounds per side \
         (order flips each round) after an unmeasured warm-up.",
        s.rounds
    );

    let unlimited = |tokens: u64, interval: Duration| MockConfig {
        completion_tokens: tokens,
        stream_chunk_interval: interval,
        ..MockConfig::orgs_with_limits(&KEYS, MockLimits::UNLIMITED)
    };
    let scenarios = [
        Scenario {
            key: "small",
            title: format!(
                "[1] non-streaming chat, max_tokens {SMALL_TOKENS}: {} requests @ concurrency {}",
                s.requests, s.concurrency
            ),
            streaming: false,
            body: chat_body(false, SMALL_TOKENS),
            requests: s.requests,
            concurrency: s.concurrency,
            warmup: (s.requests / 20).max(2 * s.concurrency),
            mock: unlimited(SMALL_TOKENS, Duration::ZERO),
        },
        Scenario {
            key: "stream",
            title: format!(
                "[2] streaming chat, {} chunks {} ms apart: {} streams @ concurrency {}",
                s.stream_tokens,
                CHUNK_INTERVAL.as_millis(),
                s.streams,
                s.stream_concurrency
            ),
            streaming: true,
            body: chat_body(true, s.stream_tokens),
            requests: s.streams,
            concurrency: s.stream_concurrency,
            warmup: s.stream_concurrency,
            mock: unlimited(s.stream_tokens, CHUNK_INTERVAL),
        },
    ];

    let mut results = serde_json::Map::new();
    let mut failures = 0;
    for scenario in &scenarios {
        let m = measure(scenario, s.rounds).await?;
        failures += m.direct.failures() + m.proxy.failures() + m.warmup_failures;
        if m.upstream_seen != m.upstream_expected {
            failures += 1;
        }
        results.insert(scenario.key.into(), report(scenario, &m));
    }
    let elapsed = started.elapsed();
    println!("\ntotal time {:.1} s", elapsed.as_secs_f64());

    if let Some(path) = &s.json {
        let doc = json!({
            "mode": s.mode,
            "profile": profile,
            "cores": cores,
            "tokio_workers": workers,
            "rounds": s.rounds,
            "elapsed_s": elapsed.as_secs_f64(),
            "ok": failures == 0,
            "scenarios": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        println!("wrote {path}");
    }
    if failures > 0 {
        return Err(format!(
            "FAILED: {failures} failed request(s) or upstream count mismatch (see table above)"
        )
        .into());
    }
    Ok(())
}
