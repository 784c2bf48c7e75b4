use super::*;
use crate::limits::Dimension;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyrelay-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("state.redb")
}

fn sample() -> State {
    let mut state = State::default();
    state
        .client_windows
        .insert(("batch".into(), None, Dimension::Tpd), vec![(1_000, 50), (2_000, 7)]);
    state.client_windows.insert(
        ("batch".into(), Some("openai/gpt-oss-120b".into()), Dimension::Rpd),
        vec![(3_000, 1)],
    );
    state
        .account_windows
        .insert(("groq".into(), "team-a".into(), "llama".into(), Dimension::Rpd), vec![(4_000, 3)]);
    state
        .learned_limits
        .insert(("groq".into(), "team-a".into(), "llama".into(), Dimension::Rpm), 30);
    let disabled =
        DisabledKey { reason: "invalid_key".into(), fingerprint: "0011223344556677".into() };
    state.disabled_keys.insert(("groq".into(), "team-a".into(), "team-a-2".into()), disabled);
    state
}

#[test]
fn state_survives_a_reopen_and_only_changes_are_rewritten() {
    let path = temp_path("reopen");
    let saved = sample();
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        store.flush(&saved, Duration::from_secs(3600)).unwrap();
        let mut changed = saved.clone();
        changed.disabled_keys.clear();
        store.flush(&changed, Duration::from_secs(3600)).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.client_windows, saved.client_windows);
    assert_eq!(loaded.learned_limits, saved.learned_limits);
    assert!(loaded.disabled_keys.is_empty(), "a removed entry is removed from the file");
}

#[test]
fn ledger_records_are_kept_for_the_retention_period() {
    let path = temp_path("ledger");
    let store = Store::open(&path).unwrap();
    let now = unix_ms();
    let record = |time_ms| LedgerRecord {
        time_ms,
        client: "c".into(),
        model: "m".into(),
        key: None,
        prompt_tokens: 1,
        completion_tokens: 2,
        status: 200,
        queue_ms: 0,
        upstream_ms: 0,
    };
    store.record(record(now - 7_200_000));
    store.record(record(now - 1_000));
    store.record(record(now - 1_000));
    store.flush(&State::default(), Duration::from_secs(3600)).unwrap();
    let kept = store.records(0).unwrap();
    assert_eq!(kept.len(), 2, "the two-hour-old record is past the one-hour retention");
    drop(store);
    assert_eq!(read_file_records(&path, 0).unwrap().len(), 2);
}
