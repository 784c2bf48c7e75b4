//! Live reload: clients, keys and limits change without dropping in-flight or queued requests
//! and without losing counters; an invalid config is refused and the running one stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{Proxy, chat_body, client, post_chat, temp_dir};
use keyrelay::mock::{MockConfig, MockKey, MockLimits, MockOrg, MockServer};
use tokio::time::Instant;

const MODEL: &str = "llama-3.1-8b-instant";
const TOKEN: &str = "reload-admin-token-0123456789";

fn config_text(dir: &Path, base_url: &str, keys: &[&str], clients: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let mut text = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[store]\npath = \"{}\"\n[[providers]]\nkind = \"groq\"\nbase_url = \"{base_url}\"\n[[providers.accounts]]\nname = \"one\"\nkeys = [{}]\n",
        dir.join("state.redb").display(),
        keys.join(", ")
    );
    for name in clients {
        text.push_str(&format!("[[clients]]\nname = \"{name}\"\nkey = \"{name}-secret-key\"\n[clients.quota]\nrpd = 100000\n"));
    }
    text
}

async fn mock() -> MockServer {
    let org = MockOrg {
        id: "org_one".into(),
        keys: vec![MockKey::active("k1"), MockKey::active("k2")],
        limits: HashMap::new(),
        default_limits: MockLimits::UNLIMITED,
    };
    MockServer::start(MockConfig {
        orgs: vec![org],
        stream_chunk_interval: Duration::from_millis(20),
        completion_tokens: 8,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

async fn chat(proxy: &Proxy, client_name: &str, stream: bool) -> u16 {
    let key = format!("{client_name}-secret-key");
    let response = post_chat(&proxy.url(), &key, chat_body(MODEL, stream)).await;
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    if stream && status == 200 {
        assert!(String::from_utf8_lossy(&body).trim_end().ends_with("[DONE]"), "a stream was cut");
    }
    status
}

async fn reload(proxy: &Proxy) -> (u16, serde_json::Value) {
    let response = client()
        .post(format!("http://{}/admin/reload", proxy.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap())
}

#[tokio::test]
async fn reload_under_load_adds_a_client_removes_a_key_and_fails_nothing() {
    let mock = mock().await;
    let dir = temp_dir("reload");
    let path = dir.join("keyrelay.toml");
    std::fs::write(&path, config_text(&dir, &mock.base_url(), &["k1", "k2"], &["alpha"])).unwrap();
    let config = keyrelay::Config::load(Some(&path), &HashMap::new()).unwrap();
    let proxy = Proxy::start_with(config).await;
    assert_eq!(chat(&proxy, "beta", false).await, 401, "beta does not exist yet");

    // Load: 8 workers sending streams and plain calls for the whole test.
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let url = proxy.url();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while Instant::now() < stop_at {
                    let body = chat_body(MODEL, worker % 2 == 0);
                    let response = post_chat(&url, "alpha-secret-key", body).await;
                    let status = response.status().as_u16();
                    let _ = response.bytes().await.unwrap();
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&path, config_text(&dir, &mock.base_url(), &["k1"], &["alpha", "beta"]))
        .unwrap();
    let (status, body) = reload(&proxy).await;
    assert_eq!(status, 200, "{body}");
    let reloaded_at = mock.requests().len();

    let mut total = 0;
    for worker in workers {
        let statuses = worker.await.unwrap();
        total += statuses.len();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "a request failed across the reload: {statuses:?}"
        );
    }
    assert!(total > 20, "the load ran: {total} requests");
    assert_eq!(chat(&proxy, "beta", true).await, 200, "the added client works");
    // Requests that started after the reload never use the removed key (a few in flight at the
    // moment of the reload may still finish with it).
    let after: Vec<_> = mock.requests().into_iter().skip(reloaded_at + 8).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|r| r.key.as_deref() == Some("k1")),
        "the removed key was used after the reload"
    );
    // The client's counters survived: its daily quota still counts the earlier requests.
    let clients = client()
        .get(format!("http://{}/admin/clients", proxy.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let clients: serde_json::Value = serde_json::from_str(&clients).unwrap();
    let alpha =
        clients["clients"].as_array().unwrap().iter().find(|c| c["name"] == "alpha").unwrap();
    assert!(alpha["quotas"][0]["used"].as_u64().unwrap() as usize >= total, "{alpha}");
}

#[tokio::test]
async fn an_invalid_config_is_refused_with_its_problems_and_the_running_one_stays() {
    let mock = mock().await;
    let dir = temp_dir("reload-invalid");
    let path = dir.join("keyrelay.toml");
    std::fs::write(&path, config_text(&dir, &mock.base_url(), &["k1"], &["alpha"])).unwrap();
    let proxy =
        Proxy::start_with(keyrelay::Config::load(Some(&path), &HashMap::new()).unwrap()).await;
    let broken = config_text(&dir, &mock.base_url(), &["k1"], &["alpha"])
        .replace("[store]", "[queue]\nmax_depth = 0\n[store]")
        .replace("kind = \"groq\"", "kind = \"grok\"");
    std::fs::write(&path, broken).unwrap();
    let (status, body) = reload(&proxy).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("queue.max_depth") && message.contains("providers[0].kind"),
        "{message}"
    );
    assert_eq!(body["error"]["code"], "invalid_config");
    assert_eq!(chat(&proxy, "alpha", false).await, 200, "the running configuration stays");
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let mock = mock().await;
    let dir = temp_dir("reload-sighup");
    let path = dir.join("keyrelay.toml");
    std::fs::write(&path, config_text(&dir, &mock.base_url(), &["k1"], &["alpha"])).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyrelay"))
        .arg("--config")
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYRELAY_LISTEN", "127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx
                    .send(("addr", rest.split_whitespace().next().unwrap_or_default().to_owned()));
            }
            if line.contains("Configuration reloaded") {
                let _ = tx.send(("reloaded", String::new()));
            }
        }
    });
    let addr = loop {
        let (kind, value) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        if kind == "addr" {
            break value;
        }
    };
    let call = |name: &'static str| {
        let addr = addr.clone();
        async move {
            let (base, key) = (format!("http://{addr}/v1"), format!("{name}-secret-key"));
            post_chat(&base, &key, chat_body(MODEL, false)).await.status().as_u16()
        }
    };
    assert_eq!(call("beta").await, 401);
    std::fs::write(&path, config_text(&dir, &mock.base_url(), &["k1"], &["alpha", "beta"]))
        .unwrap();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    loop {
        let (kind, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if kind == "reloaded" {
            break;
        }
    }
    assert_eq!(call("beta").await, 200);
    assert_eq!(call("alpha").await, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn queued_requests_survive_a_reload() {
    let mock = mock().await;
    let dir = temp_dir("reload-queued");
    let path = dir.join("keyrelay.toml");
    let paced = |clients: &[&str]| {
        config_text(&dir, &mock.base_url(), &["k1", "k2"], clients).replace(
            "[[providers.accounts]]",
            &format!("minute_window = \"1s\"\nsafety_margin = \"10ms\"\n[providers.limits.\"{MODEL}\"]\nrpm = 2\n[[providers.accounts]]"),
        )
    };
    std::fs::write(&path, paced(&["alpha"])).unwrap();
    let proxy =
        Proxy::start_with(keyrelay::Config::load(Some(&path), &HashMap::new()).unwrap()).await;
    let url = proxy.url();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                post_chat(&url, "alpha-secret-key", chat_body(MODEL, false)).await.status().as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.state.scheduler().depth(), 4, "four wait for the next windows");
    std::fs::write(&path, paced(&["alpha", "beta"])).unwrap();
    assert_eq!(reload(&proxy).await.0, 200);
    for request in requests {
        assert_eq!(request.await.unwrap(), 200, "a queued request was dropped by the reload");
    }
    assert_eq!(
        mock.stats().by_status.get(&429).copied().unwrap_or(0),
        0,
        "the reload kept the pacing"
    );
}
