//! Shared test harness: keyrelay and the mock upstream on ephemeral loopback ports.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;

use keyrelay::Config;
use keyrelay::mock::{MockConfig, MockServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A keyrelay instance serving on `127.0.0.1:0`; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub state: keyrelay::AppState,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    /// Starts keyrelay with the config text (no environment); without a `[store]` table it gets
    /// a state file of its own in a fresh temporary folder.
    pub async fn start(config_toml: &str) -> Proxy {
        let text = if config_toml.contains("[store]") {
            config_toml.to_owned()
        } else {
            let path = temp_dir("proxy").join("state.redb");
            format!("{config_toml}\n[store]\npath = \"{}\"\n", path.display())
        };
        let config = Config::from_toml(&text, "test.toml", &HashMap::new()).unwrap();
        Self::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = keyrelay::AppState::new(config).unwrap();
        let app = keyrelay::router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Proxy { addr, state, stop, task }
    }

    /// Stops serving and waits until the app (and its state file) is released.
    pub async fn stop(self) {
        let Proxy { state, stop, task, .. } = self;
        state.flush().await;
        drop(state);
        let _ = stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// A fresh, empty folder under the system's temporary folder.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("keyrelay-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `[[providers]]` Groq config against `base_url` where each account is `(name, keys)`;
/// `extra` is top-level TOML (tables such as `[server]`).
pub fn groq_config(base_url: &str, accounts: &[(&str, &[&str])], extra: &str) -> String {
    groq_config_with(base_url, accounts, extra, "")
}

/// Like [`groq_config`], with `provider` lines added to the `[[providers]]` table (windows,
/// margin, limits).
pub fn groq_config_with(
    base_url: &str,
    accounts: &[(&str, &[&str])],
    extra: &str,
    provider: &str,
) -> String {
    let mut text = format!(
        "[retry]\nbase_delay = \"5ms\"\nmax_delay = \"20ms\"\n{extra}\n[[providers]]\nkind = \"groq\"\nbase_url = \"{base_url}\"\n{provider}\n"
    );
    for (name, keys) in accounts {
        let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        text.push_str(&format!(
            "[[providers.accounts]]\nname = \"{name}\"\nkeys = [{}]\n",
            keys.join(", ")
        ));
    }
    text
}

/// The mock with one org per key and the given config tweaks, and keyrelay in front of it with
/// one account per key.
pub async fn mock_and_proxy(keys: &[&str], mock: MockConfig) -> (MockServer, Proxy) {
    let mock = MockServer::start(mock).await.unwrap();
    let accounts: Vec<(String, Vec<&str>)> =
        keys.iter().enumerate().map(|(i, k)| (format!("acct-{}", i + 1), vec![*k])).collect();
    let accounts: Vec<(&str, &[&str])> =
        accounts.iter().map(|(n, k)| (n.as_str(), k.as_slice())).collect();
    let proxy = Proxy::start(&groq_config(&mock.base_url(), &accounts, "")).await;
    (mock, proxy)
}

thread_local! {
    /// Building a client loads TLS roots (slow in debug builds); each test runs on its own thread
    /// and runtime, so one client per thread is shared by its requests.
    static CLIENT: reqwest::Client = reqwest::Client::builder().build().unwrap();
}

pub fn client() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

pub fn chat_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello"}}],"stream":{stream},"max_tokens":32}}"#
    )
}

/// POSTs a chat completion body to `{base}/chat/completions` with `Bearer {key}`.
pub async fn post_chat(base: &str, key: &str, body: String) -> reqwest::Response {
    client()
        .post(format!("{base}/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// POSTs a chat completion and returns status, headers and body.
pub async fn chat(url: &str, body: String) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    chat_with(url, body, &[]).await
}

/// [`chat`] with extra request headers.
pub async fn chat_with(
    url: &str,
    body: String,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut request = client()
        .post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key-not-for-upstream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// Count of answers with `status` the mock gave to `key`.
pub fn mock_count(mock: &MockServer, key: &str, status: u16) -> u64 {
    mock.stats().by_key.get(key).and_then(|s| s.get(&status)).copied().unwrap_or(0)
}

/// The SDK virtual environment's python, if `scripts/test.sh` set it up. With
/// `KEYRELAY_REQUIRE_SDK=1` (set there and in CI) its absence fails the test instead of skipping.
pub fn sdk_python() -> Option<String> {
    let python = std::env::var("KEYRELAY_SDK_PYTHON").ok().filter(|p| !p.is_empty());
    if python.is_none() {
        assert!(
            std::env::var("KEYRELAY_REQUIRE_SDK").as_deref() != Ok("1"),
            "KEYRELAY_SDK_PYTHON is not set: run scripts/test.sh, which installs the SDKs"
        );
        eprintln!("skipped: KEYRELAY_SDK_PYTHON not set (scripts/test.sh sets it)");
    }
    python
}

/// One sample of a scrape, as the Prometheus project's parser read it.
#[derive(Debug, serde::Deserialize)]
pub struct Sample {
    pub family: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Scrapes `/metrics` and parses it with the Prometheus Python client's OpenMetrics parser.
pub async fn scrape(python: &str, addr: SocketAddr) -> (String, Vec<Sample>) {
    use std::io::Write;
    let response = client().get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/parse_metrics.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "parser rejected the scrape: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (text, samples)
}

/// The value of the sample `name` whose labels include every pair in `labels`, summed.
pub fn sample_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}
