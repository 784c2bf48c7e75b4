use std::collections::HashMap;

use tokio::time::advance;

use super::*;
use crate::config::Config;

fn client(quota: &str, extra: &str) -> Arc<ClientState> {
    let text = format!(
        "[[providers]]\nkind = \"groq\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"k\"]\n[[clients]]\nname = \"c\"\nkey = \"ck\"\n{extra}\n[clients.quota]\n{quota}\n"
    );
    let config = Config::from_toml(&text, "t.toml", &HashMap::new()).unwrap();
    Arc::new(ClientState::new(config.clients[0].clone(), config.quota_windows))
}

const ONE: Cost = Cost { requests: 1, tokens: 10, audio_seconds: 0 };

#[tokio::test(start_paused = true)]
async fn a_rejected_request_names_the_limit_and_consumes_nothing() {
    let client = client("rpm = 2", "policy = \"reject\"");
    let now = Instant::now();
    let _a = client.try_admit("m", ONE, now).unwrap();
    advance(Duration::from_secs(10)).await;
    let _b = client.try_admit("m", ONE, Instant::now()).unwrap();
    let exceeded = client.try_admit("m", ONE, Instant::now()).err().unwrap();
    assert_eq!(
        exceeded,
        Exceeded {
            dimension: QuotaDimension::Rate(Dimension::Rpm),
            model: None,
            limit: 2,
            used: 2,
            requested: 1,
            wait: Some(Duration::from_secs(50)),
        }
    );
    let refused = client.admit("m", ONE, Instant::now() + Duration::from_secs(3600)).await;
    assert!(refused.is_err(), "reject policy never waits");
    advance(Duration::from_secs(50)).await;
    assert!(client.try_admit("m", ONE, Instant::now()).is_ok(), "the refusals took nothing");
}

#[tokio::test(start_paused = true)]
async fn tokens_reserve_the_estimate_and_settle_with_real_usage() {
    let client = client("tpm = 100", "");
    let big = Cost { requests: 1, tokens: 80, audio_seconds: 0 };
    let first = client.try_admit("m", big, Instant::now()).unwrap();
    assert!(client.try_admit("m", big, Instant::now()).is_err());
    first.settle(Usage { prompt_tokens: 5, completion_tokens: 5 });
    assert!(client.try_admit("m", big, Instant::now()).is_ok());
    let over = client
        .try_admit("m", Cost { requests: 1, tokens: 101, audio_seconds: 0 }, Instant::now())
        .err()
        .unwrap();
    assert_eq!(over.wait, None, "larger than the quota: never fits");
}

#[tokio::test(start_paused = true)]
async fn a_queue_client_waits_for_its_window() {
    let client = client("rpm = 1", "policy = \"queue\"");
    let started = Instant::now();
    let _first = client.admit("m", ONE, started + Duration::from_secs(600)).await.unwrap();
    let _second = client.admit("m", ONE, started + Duration::from_secs(600)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    let refused = client.admit("m", ONE, Instant::now() + Duration::from_secs(5)).await;
    assert!(refused.is_err(), "a wait past the deadline is refused at once");
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_capped_and_a_finished_request_lets_the_next_in() {
    let client = client("concurrency = 1", "");
    let held = client.try_admit("m", ONE, Instant::now()).unwrap();
    let exceeded = client.try_admit("m", ONE, Instant::now()).err().unwrap();
    assert_eq!(exceeded.dimension, QuotaDimension::Concurrency);
    let waiter = tokio::spawn({
        let client = Arc::clone(&client);
        async move { client.admit("m", ONE, Instant::now() + Duration::from_secs(30)).await.is_ok() }
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    drop(held);
    assert!(waiter.await.unwrap());
    assert_eq!(started.elapsed(), Duration::ZERO, "woken by the finish, not a timer");
}

#[tokio::test(start_paused = true)]
async fn per_model_quotas_apply_on_top_of_the_client_quota() {
    let client = client("rpm = 100", "[clients.model_quotas.big]\nrpm = 1");
    let _big = client.try_admit("big", ONE, Instant::now()).unwrap();
    let exceeded = client.try_admit("big", ONE, Instant::now()).err().unwrap();
    assert_eq!(exceeded.model.as_deref(), Some("big"));
    assert!(client.try_admit("small", ONE, Instant::now()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_per_model_concurrency_cap_counts_only_that_models_requests() {
    let client = client("concurrency = 10", "[clients.model_quotas.big]\nconcurrency = 1");
    let _others: Vec<_> =
        (0..3).map(|_| client.try_admit("small", ONE, Instant::now()).unwrap()).collect();
    let big = client.try_admit("big", ONE, Instant::now()).unwrap();
    let exceeded = client.try_admit("big", ONE, Instant::now()).err().unwrap();
    assert_eq!(
        (exceeded.dimension, exceeded.model.as_deref(), exceeded.used),
        (QuotaDimension::Concurrency, Some("big"), 1)
    );
    drop(big);
    assert!(client.try_admit("big", ONE, Instant::now()).is_ok());
}

#[test]
fn allowed_models_are_patterns() {
    let client = client("", "models = [\"llama-*\", \"whisper-large-v3\"]");
    assert!(client.allows("llama-3.1-8b-instant"));
    assert!(client.allows("whisper-large-v3"));
    assert!(!client.allows("gpt-4o"));
}
