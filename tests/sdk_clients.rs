//! Real SDK clients through keyrelay to the mock.
//!
//! `scripts/test.sh` installs the SDKs into a virtual environment and sets
//! `KEYRELAY_SDK_PYTHON`; with `KEYRELAY_REQUIRE_SDK=1` (set there and in CI) a missing SDK fails
//! the test instead of skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{mock_and_proxy, sdk_python};
use keyrelay::mock::{MockConfig, MockLimits};

#[tokio::test]
async fn official_openai_python_sdk_works_through_keyrelay() {
    let Some(python) = sdk_python() else { return };
    let mock = MockConfig::orgs_with_limits(&["key-a", "key-b"], MockLimits::UNLIMITED);
    let (mock, proxy) = mock_and_proxy(&["key-a", "key-b"], mock).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_python.py");
    let url = proxy.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).args([script, &url, "llama-3.1-8b-instant"]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("openai-python ok"), "{stdout}");
    assert_eq!(mock.stats().by_status.get(&200).copied(), Some(3));
}
