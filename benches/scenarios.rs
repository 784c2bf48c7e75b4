//! Scenario benchmark: the pacing issue's acceptance scenarios at a realistic window.
//!
//! Each scenario starts a fresh in-process mock upstream (`keyrelay::mock`) with three
//! organizations `key-a`, `key-b`, `key-c` (30 RPM each for `llama-3.1-8b-instant`, unless the
//! scenario says otherwise) and keyrelay in front of it with the same limits, the same window and
//! the default 250 ms safety margin, so every scenario begins with empty windows. Scenarios run one
//! after the other and print their figures next to the targets with PASS/FAIL:
//! 1. `burst`: 150 requests at once (through the official openai-python SDK when
//!    `KEYRELAY_SDK_PYTHON` is set, else reqwest);
//! 2. `overload`: 1.5× capacity for three windows, `[queue] max_wait` a quarter window;
//! 3. `tokens`: ~1000-token prompts with TPM binding, and one request over the TPM cap;
//! 4. `fairness`: two clients backlogged, one sending 10× more, shares over the half window after
//!    the first;
//! 5. `disconnect`: queued clients abandoning their requests, then the next client.
//!
//! Run: `cargo bench --bench scenarios` (60 s windows, several minutes),
//! `KEYRELAY_BENCH_QUICK=1 cargo bench --bench scenarios` (5 s windows). Overrides:
//! `KEYRELAY_SCENARIO_WINDOW=10s`, `KEYRELAY_SCENARIOS=burst,fairness`,
//! `KEYRELAY_SDK_PYTHON=target/sdk-venv/bin/python`; `KEYRELAY_BENCH_JSON=path` also writes the
//! figures as JSON. Exits non-zero if a scenario fails. Without `--bench` (e.g.
//! `cargo test --all-targets`) it does nothing.
// A benchmark reports on stdout; that is its whole point.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::error::Error;
use std::process::Command;
use std::time::Duration;

use keyrelay::mock::{MockConfig, MockLimits, MockServer};
use keyrelay::{AppState, Config};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

type BoxError = Box<dyn Error + Send + Sync>;

const MODEL: &str = "llama-3.1-8b-instant";
const KEYS: [&str; 3] = ["key-a", "key-b", "key-c"];
/// Requests per window of each organization.
const RPM: u64 = 30;
/// keyrelay's default safety margin, configured explicitly.
const MARGIN: Duration = Duration::from_millis(250);
const SCENARIOS: [&str; 5] = ["burst", "overload", "tokens", "fairness", "disconnect"];
const QUEUE_MS_HEADER: &str = "x-keyrelay-queue-ms";

/// What to run, from the environment.
struct Settings {
    mode: &'static str,
    window: Duration,
    selected: Vec<&'static str>,
    json: Option<String>,
    sdk_python: Option<String>,
}

impl Settings {
    /// `None` without `--bench` (`cargo test --all-targets`): nothing heavy runs there.
    fn from_env() -> Result<Option<Self>, BoxError> {
        if !std::env::args().any(|a| a == "--bench") {
            return Ok(None);
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let quick = var("KEYRELAY_BENCH_QUICK").is_some_and(|v| v != "0");
        let (mode, mut window) = if quick {
            ("quick", Duration::from_secs(5))
        } else {
            ("full", Duration::from_secs(60))
        };
        if let Some(text) = var("KEYRELAY_SCENARIO_WINDOW") {
            window = keyrelay::duration::parse(&text)
                .map_err(|e| format!("KEYRELAY_SCENARIO_WINDOW={text:?}: {e}"))?;
        }
        if window < Duration::from_secs(1) {
            return Err("KEYRELAY_SCENARIO_WINDOW must be at least 1s".into());
        }
        let selected = match var("KEYRELAY_SCENARIOS") {
            None => SCENARIOS.to_vec(),
            Some(list) => {
                let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
                if let Some(bad) = wanted.iter().find(|w| !SCENARIOS.contains(w)) {
                    return Err(format!(
                        "KEYRELAY_SCENARIOS: unknown scenario {bad:?} (known: {})",
                        SCENARIOS.join(",")
                    )
                    .into());
                }
                SCENARIOS.into_iter().filter(|s| wanted.contains(s)).collect()
            }
        };
        Ok(Some(Self {
            mode,
            window,
            selected,
            json: var("KEYRELAY_BENCH_JSON"),
            sdk_python: var("KEYRELAY_SDK_PYTHON"),
        }))
    }
}

/// A fresh mock and keyrelay in front of it; both stop when dropped.
struct Stack {
    mock: MockServer,
    state: AppState,
    url: String,
    /// Taken just before the mock started: `received_at_ms` counts from (just after) here.
    mock_t0: Instant,
    _stop: oneshot::Sender<()>,
}

impl Stack {
    async fn start(
        window: Duration,
        limits: MockLimits,
        max_wait: Duration,
    ) -> Result<Self, BoxError> {
        let mock_t0 = Instant::now();
        let mock = MockServer::start(MockConfig {
            minute: window,
            ..MockConfig::orgs_with_limits(&KEYS, limits)
        })
        .await?;
        let mut text = format!(
            "[store]\nenabled = false\n[queue]\nmax_wait = \"{}ms\"\n\n[[providers]]\nkind = \"groq\"\nbase_url = \"{}\"\n\
             minute_window = \"{}ms\"\nsafety_margin = \"{}ms\"\n[providers.limits.\"{MODEL}\"]\n",
            max_wait.as_millis(),
            mock.base_url(),
            window.as_millis(),
            MARGIN.as_millis()
        );
        for (name, value) in [("rpm", limits.rpm), ("tpm", limits.tpm)] {
            if let Some(value) = value {
                text.push_str(&format!("{name} = {value}\n"));
            }
        }
        for key in KEYS {
            text.push_str(&format!(
                "[[providers.accounts]]\nname = \"acct-{key}\"\nkeys = [\"{key}\"]\n"
            ));
        }
        let config = Config::from_toml(&text, "scenarios.toml", &HashMap::new())?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let state = AppState::new(config)?;
        let app = keyrelay::router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { mock, state, url, mock_t0, _stop: stop })
    }

    /// Upstream calls and how many of them the mock answered 429.
    fn upstream(&self) -> (u64, u64) {
        let stats = self.mock.stats();
        (stats.total, stats.by_status.get(&429).copied().unwrap_or(0))
    }

    fn depth(&self) -> usize {
        self.state.scheduler().depth()
    }

    /// `at` on the mock's `received_at_ms` clock.
    fn mock_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.mock_t0).as_millis()).unwrap_or(u64::MAX)
    }

    /// Polls the queue depth until it is 0 or `limit` passed; returns the depth and the time.
    async fn drain(&self, limit: Duration) -> (usize, Duration) {
        let started = Instant::now();
        while self.depth() > 0 && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (self.depth(), started.elapsed())
    }
}

/// One answer as a client saw it; status 0 is a transport error or a lost task.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    sent: Instant,
    done: Instant,
    queue_ms: Option<u64>,
}

impl Answer {
    fn took(&self) -> Duration {
        self.done.saturating_duration_since(self.sent)
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: String,
) -> reqwest::Result<(u16, HeaderMap)> {
    let response = client
        .post(format!("{url}/chat/completions"))
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth)
        .body(body)
        .send()
        .await?;
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    response.bytes().await?;
    Ok((status, headers))
}

fn spawn_one(client: &reqwest::Client, url: &str, auth: &str, body: String) -> JoinHandle<Answer> {
    let (client, url, auth) = (client.clone(), url.to_owned(), auth.to_owned());
    tokio::spawn(async move {
        let sent = Instant::now();
        let (status, queue_ms) = match post(&client, &url, &auth, body).await {
            Ok((status, headers)) => {
                let queue_ms = headers
                    .get(QUEUE_MS_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                (status, queue_ms)
            }
            Err(_) => (0, None),
        };
        Answer { status, sent, done: Instant::now(), queue_ms }
    })
}

/// `count` chat completions at once as client `auth`.
fn spawn_burst(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &str,
    count: usize,
) -> Vec<JoinHandle<Answer>> {
    (0..count).map(|_| spawn_one(client, url, auth, body.to_owned())).collect()
}

async fn join(tasks: Vec<JoinHandle<Answer>>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap_or_else(|_| {
            let now = Instant::now();
            Answer { status: 0, sent: now, done: now, queue_ms: None }
        }));
    }
    answers
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

/// From `started` to the last answer.
fn span(answers: &[Answer], started: Instant) -> Duration {
    answers.iter().map(|a| a.done).max().unwrap_or(started).saturating_duration_since(started)
}

fn chat_body(content: &str, max_tokens: u64) -> String {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    })
    .to_string()
}

/// One limited dimension of an organization for [`minimum_span`].
struct Dim {
    limit: u64,
    /// Charged when a request is admitted.
    admit: u64,
    /// Left charged once the answer is settled (stamped at admission, for one window).
    settled: u64,
}

/// The earliest the last of `count` requests, all ready at once, can be admitted by `orgs`
/// organizations under the mock's sliding windows (`src/mock/limiter.rs`, `state.rs`): a request
/// is admitted when `admit` fits on every dimension and leaves `settled` charged, so an org admits
/// `k` requests per window, all at the start of it, where `k - 1` is the most settled charges that
/// still leave room for one more admission. `None` if a request can never be admitted.
fn minimum_span(count: usize, orgs: usize, window: Duration, dims: &[Dim]) -> Option<Duration> {
    let mut per_org = u64::MAX;
    for dim in dims {
        let room = dim.limit.checked_sub(dim.admit)?;
        if let Some(full) = room.checked_div(dim.settled) {
            per_org = per_org.min(full + 1);
        }
    }
    let per_window = per_org.saturating_mul(orgs as u64).max(1);
    let windows = (count.saturating_sub(1) as u64) / per_window;
    Some(window * u32::try_from(windows).ok()?)
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A scenario's printed rows and its JSON figures.
#[derive(Default)]
struct Report {
    rows: Vec<(String, String, String, Option<bool>)>,
    figures: Map<String, Value>,
}

impl Report {
    fn check(&mut self, metric: &str, value: String, target: &str, pass: bool) {
        self.rows.push((metric.to_owned(), value, target.to_owned(), Some(pass)));
    }

    fn info(&mut self, metric: &str, value: String) {
        self.rows.push((metric.to_owned(), value, String::new(), None));
    }

    fn figure(&mut self, key: &str, value: impl Into<Value>) {
        self.figures.insert(key.to_owned(), value.into());
    }

    fn error(error: &BoxError) -> Self {
        let mut report = Self::default();
        report.check("run", format!("error: {error}"), "completes", false);
        report
    }

    fn passed(&self) -> bool {
        self.rows.iter().all(|row| row.3 != Some(false))
    }

    fn print(&self) {
        println!("  {:<44}{:<54}{:<24}", "metric", "value", "target");
        for (metric, value, target, pass) in &self.rows {
            let verdict = match pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "",
            };
            println!("  {metric:<44}{value:<54}{target:<24}{verdict}");
        }
    }

    fn to_json(&self, title: &str, elapsed: Duration) -> Value {
        let checks: Vec<Value> = self
            .rows
            .iter()
            .map(|(metric, value, target, pass)| {
                json!({"metric": metric, "value": value, "target": target, "pass": pass})
            })
            .collect();
        json!({
            "title": title,
            "pass": self.passed(),
            "elapsed_s": elapsed.as_secs_f64(),
            "checks": checks,
            "figures": self.figures,
        })
    }
}

fn rpm_limits() -> MockLimits {
    MockLimits { rpm: Some(RPM), ..MockLimits::UNLIMITED }
}

/// Requests all organizations together admit per window at 30 RPM.
fn capacity() -> u64 {
    RPM * KEYS.len() as u64
}

/// What the SDK burst script printed.
struct SdkBurst {
    ok: u64,
    status_429: u64,
    other_errors: u64,
    elapsed: Duration,
}

/// Runs `tests/sdk/burst.py` with `python`.
async fn sdk_burst(python: &str, url: &str, count: usize) -> Result<SdkBurst, BoxError> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/burst.py");
    let (python, url) = (python.to_owned(), url.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).args([script, &url, MODEL, &count.to_string()]).output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let parsed: Option<Value> = line.and_then(|l| serde_json::from_str(l).ok());
    let (Some(v), true) = (parsed, output.status.success()) else {
        return Err(format!("burst.py failed ({}): {stdout}\n{stderr}", output.status).into());
    };
    let number = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let elapsed = v.get("elapsed_s").and_then(Value::as_f64).unwrap_or(f64::NAN);
    if !stderr.trim().is_empty() {
        println!("  burst.py stderr: {}", stderr.trim());
    }
    Ok(SdkBurst {
        ok: number("ok"),
        status_429: number("status_429"),
        other_errors: number("other_errors"),
        elapsed: Duration::try_from_secs_f64(elapsed)?,
    })
}

async fn burst(s: &Settings, client: &reqwest::Client) -> Result<Report, BoxError> {
    let window = s.window;
    let n = 150;
    let max_wait = window * 3;
    println!(
        "  {n} requests at once; 3 accounts x {RPM} RPM; max_wait {} (3 windows)",
        secs(max_wait)
    );
    let stack = Stack::start(window, rpm_limits(), max_wait).await?;
    let dims = [Dim { limit: RPM, admit: 1, settled: 1 }];
    let minimum = minimum_span(n, KEYS.len(), window, &dims).ok_or("never admitted")?;
    let mut r = Report::default();
    let (client_name, got) = match &s.sdk_python {
        Some(python) => {
            let got = sdk_burst(python, &stack.url, n).await?;
            ("openai-python SDK (AsyncOpenAI, max_retries=0)", got)
        }
        None => {
            let started = Instant::now();
            let body = chat_body("Say hello", 32);
            let answers = join(spawn_burst(client, &stack.url, "Bearer burst", &body, n)).await;
            let ok = count(&answers, 200) as u64;
            let status_429 = count(&answers, 429) as u64;
            let other_errors = n as u64 - ok - status_429;
            ("reqwest", SdkBurst { ok, status_429, other_errors, elapsed: span(&answers, started) })
        }
    };
    let (upstream, upstream_429) = stack.upstream();
    let ratio = got.elapsed.as_secs_f64() / minimum.as_secs_f64();
    r.info("client", client_name.to_owned());
    r.check("succeeded", format!("{}/{n}", got.ok), &format!("{n}/{n}"), got.ok == n as u64);
    r.check("client-visible 429s", got.status_429.to_string(), "0", got.status_429 == 0);
    r.info("other client errors", got.other_errors.to_string());
    r.check(
        "upstream calls answered 429",
        format!("{:.1}% ({upstream_429} of {upstream})", pct(upstream_429, upstream)),
        "<= 2%",
        upstream_429 * 50 <= upstream,
    );
    r.check(
        "total time vs theoretical minimum",
        format!("{} = {ratio:.3}x min {}", secs(got.elapsed), secs(minimum)),
        "<= 1.10x min",
        ratio <= 1.10,
    );
    r.info("queue depth after", stack.depth().to_string());
    r.figure("client", client_name);
    r.figure("requests", n);
    r.figure("ok", got.ok);
    r.figure("client_429", got.status_429);
    r.figure("other_errors", got.other_errors);
    r.figure("upstream_calls", upstream);
    r.figure("upstream_429", upstream_429);
    r.figure("upstream_429_pct", pct(upstream_429, upstream));
    r.figure("elapsed_s", got.elapsed.as_secs_f64());
    r.figure("minimum_s", minimum.as_secs_f64());
    r.figure("ratio_to_minimum", ratio);
    Ok(r)
}

async fn overload(s: &Settings, client: &reqwest::Client) -> Result<Report, BoxError> {
    let window = s.window;
    let max_wait = window / 4;
    let windows = 3u32;
    let per_window = capacity() * 3 / 2;
    let total = per_window * u64::from(windows);
    let interval = window / u32::try_from(per_window)?;
    println!(
        "  {total} requests evenly over {windows} windows (1.5x the {} per window capacity); \
         max_wait {}",
        capacity(),
        secs(max_wait)
    );
    let stack = Stack::start(window, rpm_limits(), max_wait).await?;
    let body = chat_body("Say hello", 32);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..u32::try_from(total)? {
        tokio::time::sleep_until(started + interval * i).await;
        tasks.push(spawn_one(client, &stack.url, "Bearer overload", body.clone()));
    }
    let answers = join(tasks).await;
    let ok = count(&answers, 200);
    let shed: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    let other = answers.len() - ok - shed.len();
    let deadline_ms = u64::try_from(max_wait.as_millis())?;
    let early = shed.iter().filter(|a| a.queue_ms.is_none_or(|q| q + 5 < deadline_ms)).count();
    let bound = max_wait + Duration::from_secs(1);
    let late = shed.iter().filter(|a| a.took() > bound).count();
    let max_took = answers.iter().map(Answer::took).max().unwrap_or_default();

    let test_span = window * windows;
    let span_ms = u64::try_from(test_span.as_millis())?;
    let requests = stack.mock.requests();
    let chats: Vec<_> = requests.iter().filter(|r| r.path.ends_with("/chat/completions")).collect();
    let first_at = chats.first().map(|r| r.received_at_ms).unwrap_or_default();
    let served =
        chats.iter().filter(|r| r.status == 200 && r.received_at_ms < first_at + span_ms).count();
    let span_capacity = capacity() * u64::from(windows);
    let goodput = pct(served as u64, span_capacity);
    let (upstream, upstream_429) = stack.upstream();

    let mut r = Report::default();
    r.info("offered", format!("{total} over {}", secs(test_span)));
    r.check(
        "goodput (upstream 200s in span / capacity)",
        format!("{goodput:.1}% ({served} of {span_capacity})"),
        ">= 95%",
        goodput >= 95.0,
    );
    r.check(
        "answers 200 / 429 / other",
        format!("{ok} / {} / {other}", shed.len()),
        "other = 0",
        other == 0,
    );
    r.check(
        "429s shed early / late",
        format!("{early} / {late} (deadline {})", secs(max_wait)),
        "0 / 0 (at deadline)",
        early == 0 && late == 0,
    );
    r.check("max time any request took", secs(max_took), "<= max_wait + 1 s", max_took <= bound);
    r.info(
        "upstream calls answered 429",
        format!("{:.1}% ({upstream_429} of {upstream})", pct(upstream_429, upstream)),
    );
    r.info("queue depth after", stack.depth().to_string());
    r.figure("offered", total);
    r.figure("max_wait_s", max_wait.as_secs_f64());
    r.figure("served_in_span", served);
    r.figure("span_capacity", span_capacity);
    r.figure("goodput_pct", goodput);
    r.figure("status_200", ok);
    r.figure("status_429", shed.len());
    r.figure("other", other);
    r.figure("shed_early", early);
    r.figure("shed_late", late);
    r.figure("max_took_s", max_took.as_secs_f64());
    r.figure("upstream_calls", upstream);
    r.figure("upstream_429", upstream_429);
    Ok(r)
}

/// ASCII prose of exactly `chars` characters.
fn prose(chars: usize) -> String {
    let sentence = "The proxy paces every request so that no client ever sees a rate limit. ";
    sentence.chars().cycle().take(chars).collect()
}

async fn tokens(s: &Settings, client: &reqwest::Client) -> Result<Report, BoxError> {
    let window = s.window;
    let (rpm, tpm, max_tokens, n) = (1000, 6000, 500, 45);
    let max_wait = window * 3;
    let limits = MockLimits { rpm: Some(rpm), tpm: Some(tpm), ..MockLimits::UNLIMITED };
    // The mock's prompt estimate is 4 + ceil(chars / 4) per message + 2: 3976 chars = 1000.
    let content = prose(3976);
    let prompt = 4 + (content.len() as u64).div_ceil(4) + 2;
    let completion = MockConfig::default().completion_tokens.min(max_tokens);
    let dims = [
        Dim { limit: rpm, admit: 1, settled: 1 },
        Dim { limit: tpm, admit: prompt + max_tokens, settled: prompt + completion },
    ];
    let minimum = minimum_span(n, KEYS.len(), window, &dims).ok_or("never admitted")?;
    println!(
        "  {n} requests at once, prompt {prompt} tokens (mock estimate), max_tokens {max_tokens}, \
         {completion} generated; 3 accounts x {tpm} TPM / {rpm} RPM; admission needs {} tokens, \
         settles to {}; max_wait {}",
        prompt + max_tokens,
        prompt + completion,
        secs(max_wait)
    );
    let stack = Stack::start(window, limits, max_wait).await?;
    let started = Instant::now();
    let body = chat_body(&content, max_tokens);
    let answers = join(spawn_burst(client, &stack.url, "Bearer tokens", &body, n)).await;
    let elapsed = span(&answers, started);
    let ok = count(&answers, 200);
    let (upstream, upstream_429) = stack.upstream();
    let ratio = elapsed.as_secs_f64() / minimum.as_secs_f64();

    let too_big = chat_body("hi", 7000);
    let sent = Instant::now();
    let (status, headers) = post(client, &stack.url, "Bearer tokens", too_big).await?;
    let refused_in = sent.elapsed();
    let should_retry = headers.get("x-should-retry").and_then(|v| v.to_str().ok()).unwrap_or("-");
    let sent_upstream = stack.upstream().0 - upstream;

    let mut r = Report::default();
    r.check("succeeded", format!("{ok}/{n}"), &format!("{n}/{n}"), ok == n);
    r.check(
        "upstream calls answered 429",
        format!("{:.1}% ({upstream_429} of {upstream})", pct(upstream_429, upstream)),
        "<= 2%",
        upstream_429 * 50 <= upstream,
    );
    r.check(
        "total time vs theoretical minimum",
        format!("{} = {ratio:.3}x min {}", secs(elapsed), secs(minimum)),
        "<= 1.10x min",
        ratio <= 1.10,
    );
    r.check(
        "over-TPM request (max_tokens 7000)",
        format!(
            "{status} in {} ms, x-should-retry {should_retry}, {sent_upstream} sent upstream",
            refused_in.as_millis()
        ),
        "413 at once, false, 0",
        status == 413
            && should_retry == "false"
            && refused_in < Duration::from_millis(500)
            && sent_upstream == 0,
    );
    r.info("queue depth after", stack.depth().to_string());
    r.figure("requests", n);
    r.figure("prompt_tokens", prompt);
    r.figure("max_tokens", max_tokens);
    r.figure("ok", ok);
    r.figure("upstream_calls", upstream);
    r.figure("upstream_429", upstream_429);
    r.figure("elapsed_s", elapsed.as_secs_f64());
    r.figure("minimum_s", minimum.as_secs_f64());
    r.figure("ratio_to_minimum", ratio);
    r.figure("oversized_status", status);
    r.figure("oversized_should_retry", should_retry);
    r.figure("oversized_ms", refused_in.as_secs_f64() * 1000.0);
    r.figure("oversized_sent_upstream", sent_upstream);
    Ok(r)
}

async fn fairness(s: &Settings, client: &reqwest::Client) -> Result<Report, BoxError> {
    let window = s.window;
    // Per window: the light client offers 2/3 of capacity (more than its fair half), the heavy
    // one 10x that, for 1.5 windows. The first window's capacity goes out as they arrive, so it
    // frees up spread over time one window later: from then on both are backlogged and each
    // freed slot is the scheduler's choice. (A burst at one instant would free 90 slots within a
    // millisecond, and the order they reach the mock would not show who was served first.)
    let (light_rate, ratio) = (capacity() * 2 / 3, 10);
    let per_window = light_rate * (ratio + 1);
    let tick = window / u32::try_from(per_window)?;
    let send_for = window * 3 / 2;
    let ticks = u32::try_from(per_window * 3 / 2)?;
    let max_wait = window * 3;
    println!(
        "  light client sends {light_rate} per window, heavy client {} per window, evenly for {}; \
         shares counted over [1, 1.5) windows; equal priority; 3 accounts x {RPM} RPM; max_wait {}",
        light_rate * ratio,
        secs(send_for),
        secs(max_wait)
    );
    let stack = Stack::start(window, rpm_limits(), max_wait).await?;
    // The body says whose request the mock received.
    let heavy_body = chat_body("Say hello (heavy client)", 32);
    let light_body = chat_body("Say hello (light client)", 32);
    let (mut heavy, mut light) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..ticks {
        tokio::time::sleep_until(started + tick * i).await;
        if u64::from(i) % (ratio + 1) == ratio {
            light.push(spawn_one(client, &stack.url, "Bearer light-client", light_body.clone()));
        } else {
            heavy.push(spawn_one(client, &stack.url, "Bearer heavy-client", heavy_body.clone()));
        }
    }
    tokio::time::sleep_until(started + send_for).await;
    let pending = |tasks: &[JoinHandle<Answer>]| tasks.iter().filter(|t| !t.is_finished()).count();
    let (light_pending, heavy_pending) = (pending(&light), pending(&heavy));
    let (from_ms, to_ms) = (stack.mock_ms(started + window), stack.mock_ms(started + send_for));
    let requests = stack.mock.requests();
    let served: Vec<bool> = requests
        .iter()
        .filter(|r| r.status == 200 && r.path.ends_with("/chat/completions"))
        .filter(|r| (from_ms..to_ms).contains(&r.received_at_ms))
        .map(|r| String::from_utf8_lossy(&r.body).contains("light client"))
        .collect();
    let light_served = served.iter().filter(|l| **l).count() as u64;
    let heavy_served = served.len() as u64 - light_served;
    let both = light_served + heavy_served;
    let (light_share, heavy_share) = (pct(light_served, both), pct(heavy_served, both));
    let (light_n, heavy_n) = (light.len(), heavy.len());
    for task in light.iter().chain(&heavy) {
        task.abort();
    }
    let (depth, drained_in) = stack.drain(Duration::from_secs(5)).await;
    let light = join(light).await;
    let heavy = join(heavy).await;
    let (upstream, upstream_429) = stack.upstream();

    let mut r = Report::default();
    let answered = (count(&light, 200), count(&heavy, 200));
    r.info(
        "offered (light / heavy)",
        format!("{light_n} / {heavy_n}; answered 200: {} / {}", answered.0, answered.1),
    );
    r.check(
        "still queued at end of span (l / h)",
        format!("{light_pending} / {heavy_pending}"),
        "> 0 / > 0 (backlogged)",
        light_pending > 0 && heavy_pending > 0,
    );
    r.info(
        "served upstream in span",
        format!("{both}: light {light_served}, heavy {heavy_served}"),
    );
    r.check("light client's share", format!("{light_share:.1}%"), ">= 40%", light_share >= 40.0);
    r.check("heavy client's share", format!("{heavy_share:.1}%"), ">= 40%", heavy_share >= 40.0);
    r.info(
        "queue depth after aborting the rest",
        format!("{depth} after {} ms", drained_in.as_millis()),
    );
    r.info(
        "upstream calls answered 429",
        format!("{:.1}% ({upstream_429} of {upstream})", pct(upstream_429, upstream)),
    );
    r.figure("light_requests", light_n);
    r.figure("heavy_requests", heavy_n);
    r.figure("light_pending_at_span_end", light_pending);
    r.figure("heavy_pending_at_span_end", heavy_pending);
    r.figure("light_served_in_span", light_served);
    r.figure("heavy_served_in_span", heavy_served);
    r.figure("light_share_pct", light_share);
    r.figure("heavy_share_pct", heavy_share);
    r.figure("depth_after_abort", depth);
    r.figure("upstream_calls", upstream);
    r.figure("upstream_429", upstream_429);
    Ok(r)
}

async fn disconnect(s: &Settings, client: &reqwest::Client) -> Result<Report, BoxError> {
    let window = s.window;
    let cap = usize::try_from(capacity())?;
    let impatient_n = 60;
    let max_wait = window * 3;
    let hold = (window / 10).min(Duration::from_secs(1));
    println!(
        "  first client uses the window's {cap}; {impatient_n} more queue and are aborted after \
         {} ms; then the next client sends {cap}; max_wait {}",
        hold.as_millis(),
        secs(max_wait)
    );
    let stack = Stack::start(window, rpm_limits(), max_wait).await?;
    let body = chat_body("Say hello", 32);
    let first_sent = Instant::now();
    let first = join(spawn_burst(client, &stack.url, "Bearer first", &body, cap)).await;
    let first_ok = count(&first, 200);
    let impatient = spawn_burst(client, &stack.url, "Bearer impatient", &body, impatient_n);
    tokio::time::sleep(hold).await;
    let queued = stack.depth();
    for task in &impatient {
        task.abort();
    }
    let (depth, drained_in) = stack.drain(Duration::from_secs(5)).await;
    let next_sent = Instant::now();
    let next = join(spawn_burst(client, &stack.url, "Bearer next", &body, cap)).await;
    let next_ok = count(&next, 200);
    let next_wait = span(&next, next_sent);
    // The first client's charges leave the window one window after they were made.
    let allowed = (first_sent + window).saturating_duration_since(next_sent);
    let slack = window / 10;
    let (upstream, upstream_429) = stack.upstream();
    let expected_upstream = 2 * cap as u64;

    let mut r = Report::default();
    r.check(
        "first client succeeded",
        format!("{first_ok}/{cap}"),
        &format!("{cap}/{cap}"),
        first_ok == cap,
    );
    r.check(
        "queued before the abort",
        queued.to_string(),
        &impatient_n.to_string(),
        queued == impatient_n,
    );
    r.check(
        "queue depth after the abort",
        format!("{depth} after {} ms", drained_in.as_millis()),
        "0",
        depth == 0,
    );
    r.check(
        "next client succeeded",
        format!("{next_ok}/{cap}"),
        &format!("{cap}/{cap}"),
        next_ok == cap,
    );
    r.check(
        "next client's wait",
        format!("{} (window allowed at {})", secs(next_wait), secs(allowed)),
        &format!("<= allowed + {}", secs(slack)),
        next_wait <= allowed + slack,
    );
    r.check(
        "upstream calls (aborted never sent)",
        format!("{upstream} ({upstream_429} answered 429)"),
        &expected_upstream.to_string(),
        upstream == expected_upstream,
    );
    r.figure("queued_before_abort", queued);
    r.figure("depth_after_abort", depth);
    r.figure("drain_ms", drained_in.as_secs_f64() * 1000.0);
    r.figure("next_ok", next_ok);
    r.figure("next_wait_s", next_wait.as_secs_f64());
    r.figure("allowed_wait_s", allowed.as_secs_f64());
    r.figure("upstream_calls", upstream);
    r.figure("upstream_429", upstream_429);
    Ok(r)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let Some(s) = Settings::from_env()? else {
        println!("scenarios bench: nothing to do without --bench (cargo bench --bench scenarios)");
        return Ok(());
    };
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let client_name = if s.sdk_python.is_some() { "openai-python SDK" } else { "reqwest" };
    println!(
        "keyrelay scenario bench ({} mode, {profile} build, {cores} cores): window {}, \
         safety_margin {} ms, fresh mock + keyrelay per scenario; burst client: {client_name}",
        s.mode,
        secs(s.window),
        MARGIN.as_millis()
    );
    let client = reqwest::Client::builder().build()?;
    let mut results = Map::new();
    let mut failed = Vec::new();
    for name in &s.selected {
        let number = SCENARIOS.iter().position(|n| n == name).map_or(0, |i| i + 1);
        let title = format!("[{number}] {name}");
        println!("\n{title}");
        let scenario_started = Instant::now();
        let result = match *name {
            "burst" => burst(&s, &client).await,
            "overload" => overload(&s, &client).await,
            "tokens" => tokens(&s, &client).await,
            "fairness" => fairness(&s, &client).await,
            _ => disconnect(&s, &client).await,
        };
        let elapsed = scenario_started.elapsed();
        let report = result.unwrap_or_else(|e| Report::error(&e));
        report.print();
        let verdict = if report.passed() { "PASS" } else { "FAIL" };
        println!("  => {verdict} ({name} took {:.1} s)", elapsed.as_secs_f64());
        if !report.passed() {
            failed.push(*name);
        }
        results.insert((*name).to_owned(), report.to_json(&title, elapsed));
    }
    let elapsed = started.elapsed();
    println!(
        "\ntotal time {:.1} s; {} of {} scenarios passed",
        elapsed.as_secs_f64(),
        s.selected.len() - failed.len(),
        s.selected.len()
    );
    if let Some(path) = &s.json {
        let doc = json!({
            "mode": s.mode,
            "profile": profile,
            "cores": cores,
            "window_s": s.window.as_secs_f64(),
            "safety_margin_ms": MARGIN.as_millis() as u64,
            "burst_client": client_name,
            "elapsed_s": elapsed.as_secs_f64(),
            "ok": failed.is_empty(),
            "scenarios": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        println!("wrote {path}");
    }
    if !failed.is_empty() {
        return Err(format!("FAILED: {}", failed.join(", ")).into());
    }
    Ok(())
}
