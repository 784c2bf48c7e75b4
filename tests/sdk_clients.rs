//! Real SDK clients through keyrelay to the mock: the official `openai` Python and Node packages,
//! the `groq` Python package, LangChain's `ChatOpenAI`, and plain `curl`.
//!
//! `scripts/test.sh` installs the SDKs (under `target/`) and sets `KEYRELAY_SDK_PYTHON` and
//! `KEYRELAY_SDK_NODE_DIR`; with `KEYRELAY_REQUIRE_SDK=1` (set there and in CI) a missing SDK fails
//! the test instead of skipping it. The scripts live in `tests/sdk/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};

use common::{Proxy, mock_and_proxy, sdk_python};
use keyrelay::mock::{MockConfig, MockLimits, MockServer};

const MODEL: &str = "llama-3.1-8b-instant";

/// Whether a missing client must fail the test rather than skip it.
fn sdk_required() -> bool {
    std::env::var("KEYRELAY_REQUIRE_SDK").as_deref() == Ok("1")
}

/// The folder `scripts/test.sh` ran `npm ci` in (its `node_modules` holds the `openai` package),
/// if set up; `node` must be on `PATH`. Skips or fails like [`sdk_python`].
fn sdk_node_dir() -> Option<String> {
    let dir = std::env::var("KEYRELAY_SDK_NODE_DIR").ok().filter(|d| !d.is_empty());
    if dir.is_none() {
        assert!(
            !sdk_required(),
            "KEYRELAY_SDK_NODE_DIR is not set: run scripts/test.sh, which installs the SDKs"
        );
        eprintln!("skipped: KEYRELAY_SDK_NODE_DIR not set (scripts/test.sh sets it)");
    }
    dir
}

/// Whether `curl` is on `PATH`. Skips or fails like [`sdk_python`].
fn curl_available() -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!sdk_required(), "curl is not on PATH");
        eprintln!("skipped: curl not on PATH");
    }
    found
}

/// The mock (one unlimited org per key) and keyrelay in front of it.
async fn start() -> (MockServer, Proxy) {
    let mock = MockConfig::orgs_with_limits(&["key-a", "key-b"], MockLimits::UNLIMITED);
    mock_and_proxy(&["key-a", "key-b"], mock).await
}

fn script(name: &str) -> String {
    format!("{}/tests/sdk/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the command off the runtime (keyrelay and the mock serve on it meanwhile), asserts it
/// succeeded and printed `ok_line`, and returns its stdout.
async fn run(mut command: Command, ok_line: &str) -> String {
    let output: Output =
        tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(ok_line), "{stdout}\n{stderr}");
    stdout
}

fn ok_count(mock: &MockServer) -> Option<u64> {
    mock.stats().by_status.get(&200).copied()
}

#[tokio::test]
async fn official_openai_python_sdk_works_through_keyrelay() {
    let Some(python) = sdk_python() else { return };
    let (mock, proxy) = start().await;
    let mut command = Command::new(python);
    command.args([script("openai_python.py"), proxy.url(), MODEL.into()]);
    run(command, "openai-python ok").await;
    assert_eq!(ok_count(&mock), Some(3));
}

#[tokio::test]
async fn official_openai_node_sdk_works_through_keyrelay() {
    let Some(dir) = sdk_node_dir() else { return };
    let (mock, proxy) = start().await;
    let mut command = Command::new("node");
    command
        .args([script("openai_node.mjs"), proxy.url(), MODEL.into()])
        .env("KEYRELAY_SDK_NODE_DIR", dir);
    run(command, "openai-node ok").await;
    assert_eq!(ok_count(&mock), Some(2));
}

#[tokio::test]
async fn groq_python_sdk_works_through_keyrelay() {
    let Some(python) = sdk_python() else { return };
    let (mock, proxy) = start().await;
    // The Groq SDK appends `/openai/v1` to its base URL itself.
    let mut command = Command::new(python);
    command.args([script("groq_python.py"), format!("http://{}", proxy.addr), MODEL.into()]);
    run(command, "groq-python ok").await;
    assert_eq!(ok_count(&mock), Some(2));
}

#[tokio::test]
async fn langchain_chat_openai_works_through_keyrelay() {
    let Some(python) = sdk_python() else { return };
    let (mock, proxy) = start().await;
    let mut command = Command::new(python);
    command.args([script("langchain_python.py"), proxy.url(), MODEL.into()]);
    run(command, "langchain-python ok").await;
    assert_eq!(ok_count(&mock), Some(2));
}

#[tokio::test]
async fn plain_curl_works_through_keyrelay() {
    if !curl_available() {
        return;
    }
    let (mock, proxy) = start().await;
    let mut command = Command::new("bash");
    command.args([script("curl.sh"), proxy.url(), MODEL.into()]);
    run(command, "curl ok").await;
    assert_eq!(ok_count(&mock), Some(2));
}
