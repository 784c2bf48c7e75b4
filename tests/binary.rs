//! Black-box tests of the built `keyrelay` binary: zero-config start, `check`, and no key in logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{chat_body, chat_with, client};
use keyrelay::mock::{KeyState, MockConfig, MockLimits, MockServer};

const SECRETS: [&str; 3] =
    ["gsk_test_secret_alpha_0001", "gsk_test_secret_bravo_0002", "gsk_test_secret_charlie_03"];

/// Requests here must not wait long for a rate-limited account.
const QUICK: &[(&str, &str)] = &[("x-keyrelay-max-wait", "0.5")];

/// The binary with its stderr captured; killed on drop.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keyrelay() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyrelay"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYRELAY_STATE_PATH", "off");
    command
}

fn start(envs: &[(&str, &str)]) -> Running {
    let mut child = keyrelay()
        .envs(envs.iter().copied())
        .env("KEYRELAY_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            } else if let Some(rest) = line.split("\"address\":\"").nth(1) {
                let _ = tx.send(rest.split('"').next().unwrap_or_default().to_owned());
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("keyrelay did not start");
    Running { child, log, addr }
}

#[tokio::test]
async fn zero_config_binary_serves_and_never_logs_a_key() {
    let mut mock_config = MockConfig::orgs_with_limits(&SECRETS, MockLimits::UNLIMITED);
    mock_config.orgs[1].default_limits = MockLimits { rpm: Some(1), ..MockLimits::UNLIMITED };
    mock_config.minute = Duration::from_secs(30);
    let mock = MockServer::start(mock_config).await.unwrap();
    mock.set_key_state(SECRETS[0], KeyState::Revoked);
    let keys = SECRETS.join(",");
    let running = start(&[
        ("GROQ_API_KEYS", &keys),
        ("GROQ_BASE_URL", &mock.base_url()),
        ("RUST_LOG", "trace"),
    ]);
    let url = format!("http://{}/v1", running.addr);

    let mut bodies = String::new();
    for stream in [false, false, true, false, true] {
        let (status, _, json) =
            chat_with(&url, chat_body("llama-3.1-8b-instant", stream), QUICK).await;
        assert!(status == 200 || status == 429, "{status} {json}");
        bodies.push_str(&json.to_string());
    }
    let models = client().get(format!("{url}/models")).send().await.unwrap();
    bodies.push_str(&models.text().await.unwrap());
    assert!(mock_saw_every_key(&mock), "the scenario exercised every key");
    // All keys disabled or cooling now? Force the "no key" error path too.
    mock.set_key_state(SECRETS[2], KeyState::OutOfQuota);
    for _ in 0..3 {
        let (_, _, json) = chat_with(&url, chat_body("llama-3.1-8b-instant", false), QUICK).await;
        bodies.push_str(&json.to_string());
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = running.log.lock().unwrap().clone();
    assert!(log.contains("Upstream key disabled"), "the scenario logged key events:\n{log}");
    assert!(log.contains("Upstream rate limit"), "the scenario logged rate-limit events:\n{log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "a key leaked into the log:\n{log}");
        assert!(!bodies.contains(secret), "a key leaked into a response: {bodies}");
    }
}

fn mock_saw_every_key(mock: &MockServer) -> bool {
    let stats = mock.stats();
    SECRETS.iter().all(|key| stats.by_key.contains_key(*key))
}

#[test]
fn check_reports_every_problem_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("keyrelay-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"nowhere\"\n[[providers]]\nkind = \"groq\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"${KEYRELAY_TEST_UNSET_KEY}\"]\n",
    )
    .unwrap();
    let output = keyrelay().args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KEYRELAY_TEST_UNSET_KEY"), "{stderr}");
    assert!(stderr.contains("providers[0].accounts[0].keys[0]"), "{stderr}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/keyrelay.example.toml");
    let output = keyrelay()
        .args(["check", "--config", example])
        .envs([
            ("GROQ_KEY_A1", "x1"),
            ("GROQ_KEY_A2", "x2"),
            ("GROQ_KEY_B", "x3"),
            ("BATCH_JOBS_KEY", "b"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_keys_at_all_explains_how_to_start() {
    let output = keyrelay().output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GROQ_API_KEYS"));
}

#[tokio::test]
async fn health_subcommand_reports_a_running_keyrelay() {
    let mock = MockServer::start(MockConfig::orgs_with_limits(&["k"], MockLimits::UNLIMITED))
        .await
        .unwrap();
    let running = start(&[("GROQ_API_KEYS", "k"), ("GROQ_BASE_URL", &mock.base_url())]);
    let url = format!("http://{}", running.addr);
    let ok = keyrelay().args(["health", "--url", &url]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = keyrelay().args(["health", "--url", &dead]).output().unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
}

#[tokio::test]
async fn json_logs_have_one_access_line_per_request_with_its_request_id() {
    let mock =
        MockServer::start(MockConfig::orgs_with_limits(&["gsk_log_secret"], MockLimits::UNLIMITED))
            .await
            .unwrap();
    let running = start(&[
        ("GROQ_API_KEYS", "gsk_log_secret"),
        ("GROQ_BASE_URL", &mock.base_url()),
        ("KEYRELAY_LOG_FORMAT", "json"),
    ]);
    let response = client()
        .post(format!("http://{}/v1/chat/completions", running.addr))
        .header("content-type", "application/json")
        .header("x-request-id", "req-test-42")
        .body(chat_body("llama-3.1-8b-instant", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-test-42", "the request id comes back");
    let _ = response.bytes().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = running.log.lock().unwrap().clone();
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "keyrelay::access")
        .collect();
    assert_eq!(access.len(), 1, "{log}");
    let line = &access[0];
    assert_eq!(line["request_id"], "req-test-42");
    assert_eq!(line["status"], 200);
    assert_eq!(line["client"], "anonymous");
    assert_eq!(line["model"], "llama-3.1-8b-instant");
    assert_eq!(line["key"], "groq-1");
    assert!(line["completion_tokens"].as_u64().unwrap() > 0);
    assert!(line.get("queue_ms").is_some() && line.get("upstream_ms").is_some());
    assert!(!log.contains("gsk_log_secret"));
}
