use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn problems(result: Result<Config, ConfigError>) -> Vec<Problem> {
    match result {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn zero_config_makes_one_account_per_key() {
    let config = Config::load(None, &env(&[("GROQ_API_KEYS", "gsk_a, gsk_b,gsk_c")])).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    let groq = &config.providers[0];
    assert_eq!(groq.kind, ProviderKind::Groq);
    assert_eq!(groq.base_url.as_str(), "https://api.groq.com/openai/v1");
    let names: Vec<_> = groq.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["groq-1", "groq-2", "groq-3"]);
    assert_eq!(groq.accounts[1].keys[0].alias, "groq-2");
}

#[test]
fn zero_config_honours_base_url_and_listen_overrides() {
    let config = Config::load(
        None,
        &env(&[
            ("OPENAI_API_KEYS", "sk-x"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
            ("KEYRELAY_LISTEN", "0.0.0.0:9999"),
            ("KEYRELAY_ALLOW_OPEN", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9999");
    assert_eq!(config.providers[0].kind, ProviderKind::OpenAi);
    assert_eq!(config.providers[0].base_url.as_str(), "http://127.0.0.1:9/v1");
}

#[test]
fn no_keys_anywhere_says_how_to_fix_it() {
    let problems = problems(Config::load(None, &HashMap::new()));
    assert_eq!(problems[0].path, "providers");
    assert!(problems[0].message.contains("GROQ_API_KEYS"));
}

#[test]
fn example_file_is_valid_and_groups_keys_into_accounts() {
    let vars = env(&[
        ("GROQ_KEY_A1", "gsk_1"),
        ("GROQ_KEY_A2", "gsk_2"),
        ("GROQ_KEY_B", "gsk_3"),
        ("BATCH_JOBS_KEY", "batch"),
    ]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keyrelay.example.toml");
    let config = Config::load(Some(&path), &vars).unwrap();
    let groq = &config.providers[0];
    assert_eq!(groq.accounts.len(), 2);
    let aliases: Vec<_> = groq.accounts[0].keys.iter().map(|k| k.alias.as_str()).collect();
    assert_eq!(aliases, ["team-a-1", "team-a-backup"]);
    let llama = &groq.limits["llama-3.1-8b-instant"];
    assert_eq!(llama.rpm.map(NonZeroU64::get), Some(30));
    assert_eq!(config.retry.base_delay, Duration::from_millis(250));
    let names: Vec<_> = config.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["batch-jobs", "web-app"]);
    assert_eq!(config.clients[0].policy, QuotaPolicy::Queue);
    assert_eq!(config.clients[0].quota.concurrency, Some(16));
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let text = r#"
        [server]
        listen = "localhost"
        request_timeout = "soon"
        [[providers]]
        kind = "groq"
        base_url = "ftp://x"
        [[providers]]
        kind = "openai"
        models = ["gpt*4"]
        [[providers.accounts]]
        name = "a"
        keys = ["${MISSING_KEY:-}"]
        [providers.accounts.limits.m]
        rpm = 0
    "#;
    let problems = problems(Config::from_toml(text, "test.toml", &HashMap::new()));
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "server.listen",
        "server.request_timeout",
        "providers[0].base_url",
        "providers[1].models[0]",
        "providers[1].accounts[0].keys[0]",
        "providers[1].accounts[0].limits.m.rpm",
    ] {
        assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
    }
}

#[test]
fn missing_variables_name_the_variable_and_unknown_fields_the_field() {
    let text = "[[providers]]\nkind = \"groq\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"${GROQ_KEY_Z}\"]";
    let problems = problems(Config::from_toml(text, "t.toml", &HashMap::new()));
    assert_eq!(problems[0].path, "providers[0].accounts[0].keys[0]");
    assert!(problems[0].message.contains("GROQ_KEY_Z"));

    let err = Config::from_toml("[server]\nlisten_on = 1", "t.toml", &HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("listen_on"), "{err}");
}

#[test]
fn keys_never_appear_in_debug_or_errors() {
    let secret = "gsk_super_secret_value_123";
    let config = Config::load(None, &env(&[("GROQ_API_KEYS", secret)])).unwrap();
    assert!(!format!("{config:?}").contains(secret));

    let text = format!(
        "[[providers]]\nkind = \"groq\"\nbase_url = 3\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"{secret}\"]"
    );
    let err = Config::from_toml(&text, "t.toml", &HashMap::new()).unwrap_err();
    assert!(!err.to_string().contains(secret), "{err}");
    let err = Config::from_toml(&format!("x = \"{secret}"), "t.toml", &HashMap::new()).unwrap_err();
    assert!(!err.to_string().contains(secret), "{err}");
}

#[test]
fn a_network_address_without_client_keys_needs_an_explicit_opt_in() {
    let vars = env(&[("GROQ_API_KEYS", "k"), ("KEYRELAY_LISTEN", "0.0.0.0:8080")]);
    let problems = problems(Config::load(None, &vars));
    assert_eq!(problems[0].path, "server.listen");
    assert!(problems[0].message.contains("KEYRELAY_ALLOW_OPEN"));
    let text = "[[providers]]\nkind = \"groq\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"k\"]\n[[clients]]\nname = \"c\"\nkey = \"ck\"\n[server]\nlisten = \"0.0.0.0:8080\"";
    let with_clients = Config::from_toml(text, "t.toml", &HashMap::new()).unwrap();
    assert_eq!(with_clients.clients.len(), 1);
}

#[test]
fn client_problems_are_reported_with_their_paths() {
    let text = r#"
        [[providers]]
        kind = "groq"
        [[providers.accounts]]
        name = "a"
        keys = ["k"]
        [[clients]]
        name = "one"
        key = "s3cr3t-client-key"
        policy = "maybe"
        [clients.quota]
        rpm = 0
        [[clients]]
        name = "one"
        key = "s3cr3t-client-key"
        [[clients]]
        name = "three"
        key_sha256 = "zz"
    "#;
    let problems = problems(Config::from_toml(text, "t.toml", &HashMap::new()));
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "clients[0].policy",
        "clients[0].quota.rpm",
        "clients[1].name",
        "clients[1].key",
        "clients[2].key_sha256",
    ] {
        assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
    }
    assert!(!format!("{problems:?}").contains("s3cr3t"), "a client key leaked into an error");
}
