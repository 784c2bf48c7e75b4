//! The admin API: token auth, the views of accounts, clients, queue and usage, enabling and
//! disabling keys, and that no key ever appears in an answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Proxy, chat_body, client, groq_config_with, mock_count, post_chat};
use keyrelay::mock::{KeyState, MockConfig, MockLimits, MockServer};

const MODEL: &str = "llama-3.1-8b-instant";
const TOKEN: &str = "admin-token-0123456789abcdef";
const UPSTREAM_KEYS: [&str; 2] = ["gsk_admin_secret_one", "gsk_admin_secret_two"];

async fn setup(extra: &str) -> (MockServer, Proxy) {
    let mock =
        MockServer::start(MockConfig::orgs_with_limits(&UPSTREAM_KEYS, MockLimits::UNLIMITED))
            .await
            .unwrap();
    let top = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[[clients]]\nname = \"team\"\nkey = \"team-client-secret\"\n[clients.quota]\nrpm = 50\nconcurrency = 4\n{extra}"
    );
    let provider = format!("[providers.limits.\"{MODEL}\"]\nrpm = 100\n");
    let config = groq_config_with(
        &mock.base_url(),
        &[("one", &[UPSTREAM_KEYS[0]]), ("two", &[UPSTREAM_KEYS[1]])],
        &top,
        &provider,
    );
    (mock, Proxy::start(&config).await)
}

async fn admin(proxy: &Proxy, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request =
        client().request(method.parse().unwrap(), format!("http://{}{path}", proxy.addr));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn chat(proxy: &Proxy) -> u16 {
    post_chat(&proxy.url(), "team-client-secret", chat_body(MODEL, false)).await.status().as_u16()
}

#[tokio::test]
async fn without_the_token_the_admin_api_answers_401() {
    let (_mock, proxy) = setup("").await;
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let (status, body) = admin(&proxy, "GET", "/admin/accounts", token).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("invalid_api_key"));
    }
    let (status, _) = admin(&proxy, "POST", "/admin/keys/one/disable", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let mock = MockServer::start(MockConfig::orgs_with_limits(&["k"], MockLimits::UNLIMITED))
        .await
        .unwrap();
    let proxy = Proxy::start(&groq_config_with(&mock.base_url(), &[("a", &["k"])], "", "")).await;
    let (status, _) = admin(&proxy, "GET", "/admin/accounts", Some(TOKEN)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn views_show_state_and_never_a_key() {
    let (mock, proxy) = setup("").await;
    mock.set_key_state(UPSTREAM_KEYS[1], KeyState::Revoked);
    for _ in 0..4 {
        assert_eq!(chat(&proxy).await, 200);
    }
    let mut answers = String::new();
    let (status, body) = admin(&proxy, "GET", "/admin/accounts", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let accounts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let two = &accounts["providers"][0]["accounts"][1];
    assert_eq!(two["name"], "two");
    assert_eq!(two["keys"][0]["state"], "disabled");
    assert_eq!(two["keys"][0]["reason"], "invalid_key");
    let one = &accounts["providers"][0]["accounts"][0];
    assert_eq!(one["models"][MODEL]["limits"]["rpm"]["limit"], 100);
    assert!(one["models"][MODEL]["limits"]["rpm"]["remaining"].as_u64().unwrap() <= 97);
    answers.push_str(&body);

    let (status, body) = admin(&proxy, "GET", "/admin/clients", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let clients: serde_json::Value = serde_json::from_str(&body).unwrap();
    let team = &clients["clients"][0];
    assert_eq!(team["name"], "team");
    let rpm = team["quotas"].as_array().unwrap().iter().find(|q| q["dimension"] == "rpm").unwrap();
    assert_eq!((rpm["limit"].as_u64(), rpm["used"].as_u64()), (Some(50), Some(4)));
    answers.push_str(&body);

    let (status, body) = admin(&proxy, "GET", "/admin/queue", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["total"], 0);
    answers.push_str(&body);

    let (status, body) = admin(&proxy, "GET", "/admin/usage?days=1", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let usage: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(usage["rows"][0]["client"], "team");
    assert_eq!(usage["rows"][0]["requests"], 4);
    answers.push_str(&body);

    for secret in UPSTREAM_KEYS.iter().chain(&["team-client-secret", TOKEN]) {
        assert!(!answers.contains(secret), "a key appeared in an admin answer");
    }
}

#[tokio::test]
async fn an_operator_can_take_a_key_out_of_rotation_and_back() {
    let (mock, proxy) = setup("").await;
    let (status, body) = admin(&proxy, "POST", "/admin/keys/one/disable", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"disabled\""));
    for _ in 0..4 {
        assert_eq!(chat(&proxy).await, 200);
    }
    assert_eq!(mock_count(&mock, UPSTREAM_KEYS[0], 200), 0, "the disabled key was not used");
    let (status, _) = admin(&proxy, "POST", "/admin/keys/one/enable", Some(TOKEN)).await;
    assert_eq!(status, 200);
    for _ in 0..4 {
        assert_eq!(chat(&proxy).await, 200);
    }
    assert!(mock_count(&mock, UPSTREAM_KEYS[0], 200) > 0, "back in rotation");
    let (status, _) = admin(&proxy, "POST", "/admin/keys/nope/disable", Some(TOKEN)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_separate_operator_listener_serves_metrics_health_and_admin() {
    let mock = MockServer::start(MockConfig::orgs_with_limits(&["k"], MockLimits::UNLIMITED))
        .await
        .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let operator = free.local_addr().unwrap();
    drop(free);
    let text = format!(
        "[server]\nadmin_listen = \"{operator}\"\n[admin]\ntoken = \"{TOKEN}\"\n[store]\nenabled = false\n[[providers]]\nkind = \"groq\"\nbase_url = \"{}\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"k\"]\n",
        mock.base_url()
    );
    let config =
        keyrelay::Config::from_toml(&text, "t.toml", &std::collections::HashMap::new()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(keyrelay::serve(listener, config, async {
        let _ = stopped.await;
    }));
    let get = |path: &'static str, token: bool| async move {
        for _ in 0..50 {
            let mut request = client().get(format!("http://{operator}{path}"));
            if token {
                request = request.header("authorization", format!("Bearer {TOKEN}"));
            }
            if let Ok(response) = request.send().await {
                return (response.status().as_u16(), response.text().await.unwrap());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the operator listener never answered");
    };
    assert_eq!(get("/healthz", false).await.0, 200);
    let (status, metrics) = get("/metrics", false).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("keyrelay_build_info"));
    assert_eq!(get("/admin/queue", true).await.0, 200);
    assert_eq!(get("/admin/queue", false).await.0, 401);
    assert_eq!(get("/v1/models", false).await.0, 404, "no proxying on the operator listener");
    let _ = stop.send(());
    let _ = server.await;
}
