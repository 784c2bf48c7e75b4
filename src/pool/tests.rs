use std::collections::HashMap;

use super::*;
use crate::config::Config;
use crate::limits::Dimension;

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

#[test]
fn the_most_specific_pattern_routes_a_model() {
    let pool = pool(TWO_PROVIDERS);
    assert_eq!(pool.route(Some("llama-3.1-8b-instant")).name, "groq");
    assert_eq!(pool.route(Some("gpt-4o")).name, "openai");
    assert_eq!(pool.route(Some("gpt-4o-mini-special")).name, "openai");
    assert_eq!(pool.route(None).name, "groq");
}

#[test]
fn account_limits_override_provider_limits_per_dimension() {
    let pool = pool(
        r#"
        [[providers]]
        kind = "groq"
        [providers.limits.m]
        rpm = 30
        tpm = 6000
        [[providers.accounts]]
        name = "a"
        keys = ["ka"]
        [providers.accounts.limits.m]
        tpm = 9000
        tpd = 100
        [[providers.accounts]]
        name = "b"
        keys = ["kb"]
        "#,
    );
    let accounts = pool.providers()[0].accounts();
    assert_eq!(accounts[0].limits_for("m"), [Some(30), None, Some(9000), Some(100), None, None]);
    assert_eq!(accounts[1].limits_for("m"), [Some(30), None, Some(6000), None, None, None]);
    assert_eq!(accounts[1].limits_for("other"), [None; Dimension::COUNT]);
}

#[test]
fn disabled_keys_are_skipped_in_rotation() {
    let pool = pool(
        "[[providers]]\nkind = \"groq\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"k1\", \"k2\"]",
    );
    let provider = &pool.providers()[0];
    let account = &provider.accounts()[0];
    assert!(account.keys()[0].disable(DisableReason::InvalidKey));
    assert!(!account.keys()[0].disable(DisableReason::InvalidKey), "second disable is not news");
    for _ in 0..4 {
        assert_eq!(account.next_enabled_key(), Some(1));
    }
    account.keys()[1].disable(DisableReason::OutOfQuota);
    assert_eq!(account.next_enabled_key(), None);
    assert!(!provider.has_usable_key());
}

#[test]
fn every_disable_reason_survives_its_label() {
    for reason in [
        DisableReason::InvalidKey,
        DisableReason::Forbidden,
        DisableReason::OutOfQuota,
        DisableReason::Operator,
    ] {
        assert_eq!(DisableReason::parse(reason.as_str()), Some(reason));
    }
}
