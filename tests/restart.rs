//! Durable state across restarts of the real binary: client daily counters and the usage ledger
//! survive a graceful stop (SIGTERM) fully, and `kill -9` loses at most the last flush interval.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{chat_body, client, post_chat, temp_dir};
use keyrelay::mock::{MockConfig, MockLimits, MockServer};

const MODEL: &str = "llama-3.1-8b-instant";

struct Keyrelay {
    child: Child,
    addr: String,
}

impl Drop for Keyrelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, mock: &MockServer) -> PathBuf {
    let path = dir.join("keyrelay.toml");
    let text = format!(
        r#"
[store]
path = "{state}"
flush_interval = "200ms"

[[providers]]
kind = "groq"
base_url = "{base}"
[[providers.accounts]]
name = "a"
keys = ["key-a"]

[[clients]]
name = "daily"
key = "daily-client-key"
policy = "reject"
[clients.quota]
rpd = 5
"#,
        state = dir.join("state.redb").display(),
        base = mock.base_url(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &Path) -> Keyrelay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyrelay"))
        .args(["--config"])
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYRELAY_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("keyrelay did not start");
    Keyrelay { child, addr }
}

async fn call(keyrelay: &Keyrelay) -> u16 {
    let base = format!("http://{}/v1", keyrelay.addr);
    post_chat(&base, "daily-client-key", chat_body(MODEL, false)).await.status().as_u16()
}

fn signal(keyrelay: &mut Keyrelay, name: &str) -> Option<i32> {
    let pid = keyrelay.child.id().to_string();
    assert!(Command::new("kill").args([name, &pid]).status().unwrap().success());
    keyrelay.child.wait().unwrap().code()
}

async fn mock() -> MockServer {
    MockServer::start(MockConfig::orgs_with_limits(&["key-a"], MockLimits::UNLIMITED))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_graceful_restart_keeps_daily_counters_and_the_ledger() {
    let mock = mock().await;
    let dir = temp_dir("restart-graceful");
    let config = write_config(&dir, &mock);

    let mut first = start(&config);
    for _ in 0..3 {
        assert_eq!(call(&first).await, 200);
    }
    assert_eq!(signal(&mut first, "-TERM"), Some(0), "SIGTERM is a clean exit");

    let mut second = start(&config);
    assert_eq!(call(&second).await, 200);
    assert_eq!(call(&second).await, 200);
    assert_eq!(call(&second).await, 429, "the daily quota of 5 counted the first run's 3");
    assert_eq!(signal(&mut second, "-TERM"), Some(0));

    let output = Command::new(env!("CARGO_BIN_EXE_keyrelay"))
        .args(["usage", "--json", "--state"])
        .arg(dir.join("state.redb"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).lines().next().unwrap())
            .unwrap();
    assert_eq!(row["client"], "daily");
    assert_eq!(row["model"], MODEL);
    assert!(row["requests"].as_u64().unwrap() >= 5, "{row}");
    assert!(row["completion_tokens"].as_u64().unwrap() > 0, "{row}");
}

#[tokio::test]
async fn kill_9_loses_at_most_the_last_flush_interval() {
    let mock = mock().await;
    let dir = temp_dir("restart-kill");
    let config = write_config(&dir, &mock);

    let mut first = start(&config);
    for _ in 0..4 {
        assert_eq!(call(&first).await, 200);
    }
    // Longer than the 200 ms flush interval: everything above is on disk.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(signal(&mut first, "-KILL"), None, "killed by the signal");

    let mut second = start(&config);
    assert_eq!(call(&second).await, 200);
    assert_eq!(call(&second).await, 429, "4 + 1 = the daily quota of 5");
    signal(&mut second, "-KILL");
    // `keyrelay usage` repairs a file left by a crash before reading it.
    let output = Command::new(env!("CARGO_BIN_EXE_keyrelay"))
        .args(["usage", "--state"])
        .arg(dir.join("state.redb"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("daily"));
}

#[tokio::test]
async fn disabled_keys_learned_limits_and_account_days_survive_a_restart() {
    use keyrelay::mock::KeyState;
    let mut mock_config = MockConfig::orgs_with_limits(&["key-a", "key-b"], MockLimits::UNLIMITED);
    mock_config.orgs[0].default_limits =
        MockLimits { rpm: Some(1), rpd: Some(100), ..MockLimits::UNLIMITED };
    let mock = MockServer::start(mock_config).await.unwrap();
    mock.set_key_state("key-b", KeyState::Revoked);
    let dir = temp_dir("restart-state");
    let text = format!(
        "[store]\npath = \"{}\"\n[[providers]]\nkind = \"groq\"\nbase_url = \"{}\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"key-a\"]\n[[providers.accounts]]\nname = \"b\"\nkeys = [\"key-b\"]\n",
        dir.join("state.redb").display(),
        mock.base_url()
    );
    let quick = [("x-keyrelay-max-wait", "0.2")];
    {
        let proxy = common::Proxy::start(&text).await;
        for _ in 0..3 {
            common::chat_with(&proxy.url(), chat_body(MODEL, false), &quick).await;
        }
        let limits = proxy.state.scheduler().headroom();
        assert!(
            limits.iter().any(|h| h.account == "a" && h.limit == 1),
            "RPM 1 was learned: {limits:?}"
        );
        proxy.stop().await;
    }
    let proxy = common::Proxy::start(&text).await;
    let pool = proxy.state.pool();
    let key_b = &pool.providers()[0].accounts()[1].keys()[0];
    assert!(!key_b.is_enabled(), "the revoked key stays disabled across the restart");
    // The day's requests of account a are back (held until its lane is first used)…
    let saved = keyrelay::store::State::capture(&proxy.state);
    let day: u64 = saved
        .account_windows
        .iter()
        .filter(|((_, account, _, d), _)| account == "a" && d.as_str() == "rpd")
        .flat_map(|(_, charges)| charges.iter().map(|(_, amount)| amount))
        .sum();
    assert_eq!(day, 1, "{saved:?}");
    // …and applied with the learned RPM when the lane is first used.
    common::chat_with(&proxy.url(), chat_body(MODEL, false), &quick).await;
    let headroom = proxy.state.scheduler().headroom();
    let rpm = headroom.iter().find(|h| h.account == "a" && h.dimension.as_str() == "rpm");
    assert_eq!(rpm.map(|h| h.limit), Some(1), "{headroom:?}");
    let rpd = headroom.iter().find(|h| h.account == "a" && h.dimension.as_str() == "rpd").unwrap();
    assert!(rpd.remaining < 100, "the earlier requests still count: {rpd:?}");
    assert_eq!(
        mock.stats().by_key.get("key-b").map(|s| s.values().sum::<u64>()),
        Some(1),
        "key b was never tried again"
    );
    proxy.stop().await;
    // A new key under the same alias is not the revoked one: it starts enabled.
    let replaced = common::Proxy::start(&text.replace("\"key-b\"", "\"key-b-new\"")).await;
    let pool = replaced.state.pool();
    assert!(pool.providers()[0].accounts()[1].keys()[0].is_enabled());
}

#[tokio::test]
async fn a_graceful_stop_lets_in_flight_streams_finish() {
    let mock = MockServer::start(MockConfig {
        completion_tokens: 12,
        stream_chunk_interval: Duration::from_millis(100),
        ..MockConfig::orgs_with_limits(&["key-a"], MockLimits::UNLIMITED)
    })
    .await
    .unwrap();
    let dir = temp_dir("graceful-stop");
    let config = write_config(&dir, &mock);
    let mut keyrelay = start(&config);
    let url = format!("http://{}/v1/chat/completions", keyrelay.addr);
    let streams: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let response = client()
                    .post(url)
                    .header("authorization", "Bearer daily-client-key")
                    .header("content-type", "application/json")
                    .body(chat_body(MODEL, true))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap())
            })
        })
        .collect();
    // The streams are under way (about 1.2 s each) when the stop is asked for.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = keyrelay.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for stream in streams {
        let (status, body) = stream.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.trim_end().ends_with("data: [DONE]"), "a stream was cut: {body}");
    }
    assert_eq!(keyrelay.child.wait().unwrap().code(), Some(0));
}
