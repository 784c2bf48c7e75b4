use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::Config;

fn pool(toml: &str) -> Pool {
    Pool::new(&Config::from_toml(toml, "test.toml", &HashMap::new()).unwrap())
}

const TWO_PROVIDERS: &str = r#"
[[providers]]
kind = "groq"
[[providers.accounts]]
name = "g1"
keys = ["k1"]
[[providers]]
kind = "openai"
models = ["gpt-*", "gpt-4o-mini-special"]
[[providers.accounts]]
name = "o1"
keys = ["k2"]
"#;

const THREE_ACCOUNTS: &str = r#"
[[providers]]
kind = "groq"
[[providers.accounts]]
name = "a"
keys = ["ka1", "ka2"]
[[providers.accounts]]
name = "b"
keys = ["kb"]
[[providers.accounts]]
name = "c"
keys = ["kc"]
"#;

#[test]
fn the_most_specific_pattern_routes_a_model() {
    let pool = pool(TWO_PROVIDERS);
    assert_eq!(pool.route(Some("llama-3.1-8b-instant")).name, "groq");
    assert_eq!(pool.route(Some("gpt-4o")).name, "openai");
    assert_eq!(pool.route(Some("gpt-4o-mini-special")).name, "openai");
    assert_eq!(pool.route(None).name, "groq");
}

#[test]
fn acquire_rotates_over_accounts_and_skips_cooling_ones() {
    let pool = pool(THREE_ACCOUNTS);
    let provider = &pool.providers()[0];
    let now = Instant::now();
    let names: Vec<_> = (0..3)
        .map(|_| provider.account(provider.acquire("m", now).unwrap()).name.clone())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);

    provider.accounts()[0].cool("m", now + Duration::from_secs(5));
    provider.accounts()[1].cool("m", now + Duration::from_secs(2));
    for _ in 0..4 {
        assert_eq!(provider.account(provider.acquire("m", now).unwrap()).name, "c");
    }
    // Cooling is per model: another model still uses every account.
    let mut other: Vec<_> = (0..3)
        .map(|_| provider.account(provider.acquire("other", now).unwrap()).name.clone())
        .collect();
    other.sort();
    assert_eq!(other, ["a", "b", "c"]);

    provider.accounts()[2].cool("m", now + Duration::from_secs(9));
    assert_eq!(
        provider.acquire("m", now).unwrap_err(),
        Unavailable::Cooling(Duration::from_secs(2))
    );
    let later = now + Duration::from_secs(3);
    assert_eq!(provider.account(provider.acquire("m", later).unwrap()).name, "b");
}

#[test]
fn disabled_keys_are_skipped_and_all_disabled_is_permanent() {
    let pool = pool(THREE_ACCOUNTS);
    let provider = &pool.providers()[0];
    let now = Instant::now();
    let a = &provider.accounts()[0];
    assert!(a.keys()[0].disable(DisableReason::InvalidKey));
    assert!(!a.keys()[0].disable(DisableReason::InvalidKey), "second disable is not news");
    for _ in 0..6 {
        let lease = provider.acquire("m", now).unwrap();
        assert_ne!(provider.key(lease).alias, "a-1");
    }
    for account in provider.accounts() {
        for key in account.keys() {
            key.disable(DisableReason::OutOfQuota);
        }
    }
    assert!(!provider.has_usable_key());
    assert_eq!(provider.acquire("m", now).unwrap_err(), Unavailable::AllDisabled);
    // A disabled account's cooldown does not make the request look retryable.
    provider.accounts()[1].cool("m", now + Duration::from_secs(1));
    assert_eq!(provider.acquire("m", now).unwrap_err(), Unavailable::AllDisabled);
}

#[test]
fn a_cooldown_is_extended_never_shortened() {
    let pool = pool(THREE_ACCOUNTS);
    let account = &pool.providers()[0].accounts()[0];
    let now = Instant::now();
    account.cool("m", now + Duration::from_secs(10));
    account.cool("m", now + Duration::from_secs(1));
    assert_eq!(account.cooling_for("m", now), Some(Duration::from_secs(10)));
    assert_eq!(account.cooling_for("m", now + Duration::from_secs(11)), None);
}
