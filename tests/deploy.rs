//! The deployment kit (`Dockerfile`, `deploy/`) against the real thing: the dashboard only uses
//! metrics keyrelay exports, promtool and a real Prometheus server read keyrelay's `/metrics` and
//! every dashboard query evaluates, the deploy configs load, the image's health check works, and
//! the Docker build is the command CI runs, from a build context that holds what it needs.
//!
//! Tests needing `prometheus` / `promtool` (Debian package `prometheus`) skip when they are not on
//! PATH, unless `KEYRELAY_REQUIRE_PROMETHEUS=1` (set by `.ci/run`). YAML files are checked when
//! `python3` has PyYAML, and skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Proxy, chat_body, chat_with, client};
use keyrelay::Config;
use keyrelay::mock::{KeyState, MockConfig, MockServer, groq_free_tier_limits};
use serde_json::Value;
use tokio::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MODEL: &str = "llama-3.1-8b-instant";
/// The build command the issue fixes for the image (and CI).
const BUILD: &str = "cargo build --release --locked --bin keyrelay --bin keyrelay-mock";
/// The compose demo's mock: `--minute 10s`.
const MOCK_MINUTE: Duration = Duration::from_secs(10);

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .map_err(|e| format!("cannot read {relative}: {e}"))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// keyrelay on the compose demo's config, in process

/// The environment the image sets (its `ENV` lines).
fn image_env() -> HashMap<String, String> {
    let docker = Dockerfile::read();
    docker
        .all("ENV")
        .into_iter()
        .filter_map(|args| args.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// The compose demo's environment for `deploy/keyrelay.toml` (the image's, and the mock's demo
/// keys), with the mock at `base_url`.
fn demo_env(base_url: &str) -> HashMap<String, String> {
    let mut env = image_env();
    env.extend([
        ("GROQ_BASE_URL".to_owned(), base_url.to_owned()),
        ("GROQ_KEY_A".to_owned(), "mock-key-a".to_owned()),
        ("GROQ_KEY_B".to_owned(), "mock-key-b".to_owned()),
        ("GROQ_KEY_C".to_owned(), "mock-key-c".to_owned()),
    ]);
    env
}

/// Client keys added to the demo config in these tests: the key `common::chat` sends, and a
/// client whose token quota no request fits.
const CLIENTS: &str = r#"
[[clients]]
name = "demo-app"
key = "client-key-not-for-upstream"

[[clients]]
name = "tiny"
key = "tiny-client-key"
policy = "reject"
quota = { tpm = 1 }
"#;

/// The mock as compose runs it (demo orgs, a 10 s minute) and keyrelay on `deploy/keyrelay.toml`
/// (plus [`CLIENTS`]) in front of it. Orgs a and c allow 1 RPM for [`MODEL`] (keyrelay was told
/// 30), so the mock's 429s surprise keyrelay; key b is revoked; the first request gets a 503.
async fn demo() -> (MockServer, Proxy) {
    let mut mock = MockConfig::demo();
    mock.minute = MOCK_MINUTE;
    for org in [0, 2] {
        mock.orgs[org].limits.get_mut(MODEL).unwrap().rpm = Some(1);
    }
    mock.faults.fail_next = 1;
    let mock = MockServer::start(mock).await.unwrap();
    mock.set_key_state("mock-key-b", KeyState::Revoked);
    let text = format!("{}{CLIENTS}", read("deploy/keyrelay.toml"));
    let mut env = demo_env(&mock.base_url());
    // No state file in the working tree (in the image it lands in /var/lib/keyrelay).
    env.insert("KEYRELAY_STATE_PATH".to_owned(), "off".to_owned());
    let config = Config::from_toml(&text, "deploy/keyrelay.toml", &env);
    let proxy = Proxy::start_with(config.unwrap()).await;
    (mock, proxy)
}

/// Requests that make every metric family have samples: a retried 503, a revoked key, upstream
/// 429s, a wait in the queue and a shed at its deadline, a client over its quota.
async fn drive(proxy: &Proxy) {
    let quick = [("x-keyrelay-max-wait", "0.3")];
    let mut statuses = Vec::new();
    for stream in [false, true, false, false] {
        let (status, _, _) = chat_with(&proxy.url(), chat_body(MODEL, stream), &quick).await;
        statuses.push(status);
    }
    assert!(statuses.contains(&200) && statuses.contains(&429), "statuses: {statuses:?}");
    let response = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .header("authorization", "Bearer tiny-client-key")
        .header("content-type", "application/json")
        .body(chat_body(MODEL, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429, "a request over the tiny client's quota");
}

async fn scrape(addr: SocketAddr) -> String {
    let response = client().get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Family name → type, from the scrape's `# TYPE` lines.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// The family and the type a sample name belongs to (`_bucket`/`_sum`/`_count`: histogram,
/// `_total`: counter, `_info`: info), given the scrape's families.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<(String, String)> {
    if let Some(kind) = types.get(name) {
        return Some((name.to_owned(), kind.clone()));
    }
    let suffixes = [
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
        ("_total", "counter"),
        ("_info", "info"),
    ];
    suffixes.iter().find_map(|(suffix, kind)| {
        let family = name.strip_suffix(suffix)?;
        (types.get(family)? == kind).then(|| (family.to_owned(), (*kind).to_owned()))
    })
}

// ---------------------------------------------------------------------------------------------
// The dashboard

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/keyrelay.json")).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// (panel title, PromQL) of every query.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"].as_array().into_iter().flatten().map(move |target| {
                (title.clone(), target["expr"].as_str().unwrap_or_default().to_owned())
            })
        })
        .collect()
}

/// The `keyrelay_[a-z_]+` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("keyrelay_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The expression as Grafana sends it, its macros replaced.
fn grafana_expand(expr: &str) -> String {
    let expanded = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    assert!(!expanded.contains('$'), "unexpanded variable in {expr}");
    expanded
}

#[tokio::test]
async fn every_metric_the_dashboard_uses_is_exported() {
    let (_mock, proxy) = demo().await;
    let idle = families(&scrape(proxy.addr).await);
    drive(&proxy).await;
    let text = scrape(proxy.addr).await;
    let types = families(&text);

    let dashboard = dashboard();
    let queries = queries(&dashboard);
    assert!(queries.len() >= 20, "the dashboard has {} queries", queries.len());
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "panel {title:?}: no keyrelay metric in {expr}");
        for name in names {
            let Some((family, kind)) = family_of(&name, &types) else {
                panic!("panel {title:?} uses {name}, which keyrelay does not export:\n{text}");
            };
            let sampled = text.lines().any(|line| {
                line.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with(['{', ' ']))
            });
            assert!(sampled, "no sample of {name} ({kind} {family}) after the scripted requests");
            used.insert(family);
        }
    }
    // The issue's panels, by the families they need.
    for family in [
        "keyrelay_requests",
        "keyrelay_request_duration_seconds",
        "keyrelay_time_to_first_byte_seconds",
        "keyrelay_queue_depth",
        "keyrelay_queue_wait_seconds",
        "keyrelay_tokens",
        "keyrelay_key_state",
        "keyrelay_upstream_remaining",
        "keyrelay_upstream_limit",
        "keyrelay_queued_requests",
        "keyrelay_upstream_rate_limits",
        "keyrelay_queue_shed",
        "keyrelay_retries",
        "keyrelay_build",
        "keyrelay_client_quota_rejections",
    ] {
        assert!(used.contains(family), "no panel uses {family}");
    }
    let unused: Vec<_> = types.keys().filter(|f| !used.contains(*f)).collect();
    let missing_idle: Vec<_> = used.iter().filter(|f| !idle.contains_key(*f)).collect();
    eprintln!("families no panel uses: {unused:?}");
    eprintln!(
        "families without a # TYPE line before any traffic (no samples yet): {missing_idle:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// promtool and Prometheus

/// A Prometheus tool on PATH; `None` (skip) unless `KEYRELAY_REQUIRE_PROMETHEUS=1`.
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|file| file.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("KEYRELAY_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "{name} is not on PATH and KEYRELAY_REQUIRE_PROMETHEUS=1: install Debian's \
             `prometheus` package (.ci/run does)"
        );
        eprintln!("skipped: {name} not on PATH (apt-get install prometheus)");
    }
    found
}

/// Runs `command` with `stdin`; fails (killing it) if it takes longer than `limit`.
fn run_bounded(mut command: Command, stdin: &str, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let started = std::time::SystemTime::now();
    while child.try_wait().unwrap().is_none() {
        let late = started.elapsed().unwrap_or_default() > limit;
        if late {
            let _ = child.kill();
        }
        assert!(!late, "{command:?} did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn promtool_check_metrics(promtool: &Path, text: &str) -> (bool, String) {
    let mut command = Command::new(promtool);
    command.args(["check", "metrics"]);
    let output = run_bounded(command, text, Duration::from_secs(20));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said.trim().to_owned())
}

/// The scrape in the Prometheus text format (what keyrelay would serve for `text/plain`): no
/// `# EOF`, counters' HELP/TYPE under their `_total` name, the info family as a gauge.
fn to_prometheus_text(openmetrics: &str) -> String {
    let types = families(openmetrics);
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        let Some(prefix) = meta else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, rest) = line[prefix.len()..].split_once(' ').unwrap();
        let (name, rest) = match types.get(name).map(String::as_str) {
            Some("counter") => (format!("{name}_total"), rest.to_owned()),
            Some("info") if prefix == "# TYPE " => (format!("{name}_info"), "gauge".to_owned()),
            Some("info") => (format!("{name}_info"), rest.to_owned()),
            _ => (name.to_owned(), rest.to_owned()),
        };
        out.push_str(&format!("{prefix}{name} {rest}\n"));
    }
    out
}

#[tokio::test]
async fn promtool_checks_the_scrape() {
    let Some(promtool) = prometheus_tool("promtool") else { return };
    let (_mock, proxy) = demo().await;
    drive(&proxy).await;
    let text = scrape(proxy.addr).await;

    // As served: OpenMetrics. promtool's `check metrics` reads the Prometheus text format, so the
    // only complaints allowed are about OpenMetrics' own syntax.
    let (accepted, said) = promtool_check_metrics(&promtool, &text);
    eprintln!(
        "promtool check metrics (OpenMetrics scrape as served): {}",
        if accepted { "accepted" } else { said.as_str() }
    );
    if !accepted {
        let openmetrics_only = said.lines().all(|line| {
            line.contains(r#"unknown metric type "info""#) || line.ends_with(" no help text")
        });
        assert!(openmetrics_only, "promtool rejected the scrape:\n{said}\n\n{text}");
    }

    // The same metrics in the Prometheus text format: no lint problem at all.
    let text_format = to_prometheus_text(&text);
    let (accepted, said) = promtool_check_metrics(&promtool, &text_format);
    assert!(accepted && said.is_empty(), "promtool check metrics:\n{said}\n\n{text_format}");
}

/// A scratch directory under the target dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("deploy-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Percent-encodes a query parameter value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /api/v1/query`: the HTTP status and the JSON answer.
async fn prometheus_query(api: &str, expr: &str) -> Option<(u16, Value)> {
    let url = format!("{api}/api/v1/query?query={}", encode(expr));
    let response = client().get(url).timeout(Duration::from_secs(5)).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, serde_json::from_str(&response.text().await.ok()?).ok()?))
}

#[tokio::test]
async fn prometheus_scrapes_keyrelay_and_evaluates_every_dashboard_query() {
    let Some(prometheus) = prometheus_tool("prometheus") else { return };
    let promtool = prometheus_tool("promtool");
    let (_mock, proxy) = demo().await;
    drive(&proxy).await;

    let scratch = Scratch::new("prometheus");
    let config = scratch.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - \
             job_name: keyrelay\n    metrics_path: /metrics\n    static_configs:\n      - \
             targets: [\"{}\"]\n",
            proxy.addr
        ),
    )
    .unwrap();
    if let Some(promtool) = &promtool {
        for file in [config.clone(), Path::new(ROOT).join("deploy/prometheus.yml")] {
            let mut command = Command::new(promtool);
            command.arg("check").arg("config").arg(&file);
            let output = run_bounded(command, "", Duration::from_secs(20));
            assert!(
                output.status.success(),
                "promtool check config {}: {output:?}",
                file.display()
            );
        }
    }
    let port = free_port();
    let log = std::fs::File::create(scratch.0.join("prometheus.log")).unwrap();
    let _server = Killed(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", scratch.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = format!("http://127.0.0.1:{port}");

    // The scrape arrives: the build info series, with its version and the job's labels.
    let deadline = Instant::now() + Duration::from_secs(30);
    let build = loop {
        if let Some((200, answer)) = prometheus_query(&api, "keyrelay_build_info").await
            && let Some(first) = answer["data"]["result"].as_array().and_then(|r| r.first())
        {
            break first.clone();
        }
        let log = std::fs::read_to_string(scratch.0.join("prometheus.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "Prometheus had no keyrelay_build_info in 30 s:\n{log}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(build["metric"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(build["metric"]["job"], "keyrelay");
    let (_, up) = prometheus_query(&api, r#"up{job="keyrelay"}"#).await.unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    // Counters keyrelay exported reached Prometheus under their sample names.
    let (_, requests) = prometheus_query(&api, "sum(keyrelay_requests_total)").await.unwrap();
    let total: f64 = requests["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(total, 5.0, "{requests}");

    // Every dashboard query parses and evaluates.
    for (title, expr) in queries(&dashboard()) {
        let expr = grafana_expand(&expr);
        let (status, answer) = prometheus_query(&api, &expr).await.unwrap();
        assert!(
            status == 200 && answer["status"] == "success",
            "panel {title:?}: Prometheus answered {status} to {expr}: {answer}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The deploy configs

/// A YAML file (all its documents) as JSON, read by PyYAML; `None` when `python3` has no PyYAML.
fn yaml(relative: &str) -> Option<Vec<Value>> {
    let probe = Command::new("python3").args(["-c", "import yaml"]).output().ok()?;
    if !probe.status.success() {
        return None;
    }
    let script = "import json, sys, yaml\n\
                  print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(Path::new(ROOT).join(relative))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{relative} is not valid YAML: {stderr}");
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

/// Compose's `${VAR:-default}` with nothing set: the defaults.
fn compose_defaults(value: &str) -> String {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(inner) => inner.split_once(":-").map_or("", |(_, d)| d).to_owned(),
        None => value.to_owned(),
    }
}

#[test]
fn the_deploy_configs_load_with_the_image_environment() {
    let demo = read("deploy/keyrelay.toml");
    let config = Config::from_toml(&demo, "keyrelay.toml", &demo_env("http://m/v1")).unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    let [provider] = config.providers.as_slice() else { panic!("one provider") };
    let accounts: Vec<_> = provider.accounts.iter().map(|a| a.keys.len()).collect();
    assert_eq!(accounts, [1, 1, 1], "one key per mock org");
    assert_eq!(provider.windows.minute, MOCK_MINUTE);
    let mock = groq_free_tier_limits();
    assert_eq!(provider.limits.len(), mock.len());
    for (model, limits) in &mock {
        let ours = provider.limits.get(model).unwrap_or_else(|| panic!("no limits for {model}"));
        let ours = [ours.rpm, ours.rpd, ours.tpm, ours.tpd].map(|l| l.map(|n| n.get()));
        assert_eq!(ours, [limits.rpm, limits.rpd, limits.tpm, limits.tpd], "{model}");
    }
    // Without GROQ_BASE_URL it points at the compose service, at the mock's listen port.
    let mut env = demo_env("");
    env.remove("GROQ_BASE_URL");
    let config = Config::from_toml(&demo, "keyrelay.toml", &env).unwrap();
    assert_eq!(config.providers[0].base_url.as_str(), "http://keyrelay-mock:9090/openai/v1");
    // The image's KEYRELAY_ALLOW_OPEN is what lets it listen on 0.0.0.0 without client keys.
    env.remove("KEYRELAY_ALLOW_OPEN");
    let refused = Config::from_toml(&demo, "keyrelay.toml", &env).unwrap_err().to_string();
    assert!(refused.contains("server.listen"), "{refused}");

    // The image's default config: zero-config providers from the environment.
    let mut env = image_env();
    env.insert("GROQ_API_KEYS".to_owned(), "gsk_1,gsk_2".to_owned());
    let default = read("deploy/image/keyrelay.toml");
    let config = Config::from_toml(&default, "keyrelay.toml", &env).unwrap();
    assert_eq!(config.providers[0].accounts.len(), 2);
}

#[test]
fn compose_prometheus_grafana_and_kubernetes_files_fit_together() {
    let Some(compose) = yaml("deploy/docker-compose.yml") else {
        eprintln!("skipped: python3 has no PyYAML, YAML files not checked");
        return;
    };
    let services = &compose[0]["services"];
    for name in ["keyrelay", "keyrelay-mock", "prometheus", "grafana"] {
        assert!(services[name].is_object(), "no compose service {name}");
    }
    let docker = Dockerfile::read();
    let config_path = docker.env("KEYRELAY_CONFIG");
    let listen_port = docker.env("KEYRELAY_LISTEN").rsplit_once(':').unwrap().1.to_owned();

    // keyrelay: the demo config at the image's config path, keys from the environment.
    let keyrelay = &services["keyrelay"];
    let mounts: Vec<&str> =
        keyrelay["volumes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(mounts.contains(&format!("./keyrelay.toml:{config_path}:ro").as_str()), "{mounts:?}");
    let mut env = image_env();
    env.extend(
        keyrelay["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), compose_defaults(v.as_str().unwrap()))),
    );
    let config = Config::from_toml(&read("deploy/keyrelay.toml"), "keyrelay.toml", &env).unwrap();
    let provider = &config.providers[0];

    // The mock: the image's other binary, where keyrelay's base URL points, with the minute
    // keyrelay's windows assume.
    let entrypoint: Vec<&str> = services["keyrelay-mock"]["entrypoint"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(entrypoint, ["keyrelay-mock", "--listen", "0.0.0.0:9090", "--minute", "10s"]);
    assert_eq!(provider.base_url.host_str(), Some("keyrelay-mock"));
    assert_eq!(provider.base_url.port(), Some(9090));
    assert_eq!(keyrelay::duration::parse(entrypoint[4]).ok(), Some(provider.windows.minute));

    // Prometheus scrapes keyrelay's service at the image's port.
    let prometheus = &yaml("deploy/prometheus.yml").unwrap()[0];
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(job["static_configs"][0]["targets"][0], format!("keyrelay:{listen_port}"));

    // Grafana: the data source is compose's Prometheus, the dashboards directory is mounted where
    // the provider reads it, and the dashboard asks for a Prometheus data source.
    let datasource = &yaml("deploy/grafana/provisioning/datasources/prometheus.yml").unwrap()[0];
    assert_eq!(datasource["datasources"][0]["type"], "prometheus");
    assert_eq!(datasource["datasources"][0]["url"], "http://prometheus:9090");
    let provider_yaml = &yaml("deploy/grafana/provisioning/dashboards/keyrelay.yml").unwrap()[0];
    let path = provider_yaml["providers"][0]["options"]["path"].as_str().unwrap();
    let grafana_mounts: Vec<&str> = services["grafana"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(grafana_mounts.contains(&format!("./grafana/dashboards:{path}:ro").as_str()));
    assert!(grafana_mounts.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro"));
    let dashboard = dashboard();
    let variable = &dashboard["templating"]["list"][0];
    assert_eq!(
        (&variable["type"], &variable["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    for panel in panels(&dashboard).into_iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24);
    }

    // Kubernetes: the ConfigMap's config loads with the Secret's keys, is mounted at the image's
    // config path, and the app reaches the sidecar on loopback.
    let documents = yaml("deploy/kubernetes/keyrelay-sidecar.yaml").unwrap();
    let kind = |k: &str| documents.iter().find(|d| d["kind"] == k).unwrap().clone();
    let (secret, config_map, pod) = (kind("Secret"), kind("ConfigMap"), kind("Pod"));
    let secret_env: HashMap<String, String> = secret["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["envFrom"][0]["secretRef"]["name"], secret["metadata"]["name"]);
    let mut env = image_env();
    env.extend(sidecar["env"].as_array().unwrap().iter().map(|e| {
        (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap().to_owned())
    }));
    env.extend(secret_env);
    let (file, text) = config_map["data"].as_object().unwrap().iter().next().unwrap();
    let config = Config::from_toml(text.as_str().unwrap(), file, &env).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert!(config.server.listen.ip().is_loopback());
    let mount = sidecar["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "keyrelay-config")
        .unwrap();
    assert_eq!(format!("{}/{file}", mount["mountPath"].as_str().unwrap()), config_path);
    let app = &pod["spec"]["containers"][0];
    let base_url = app["env"].as_array().unwrap().iter().find(|e| e["name"] == "OPENAI_BASE_URL");
    assert_eq!(base_url.unwrap()["value"], format!("http://{}/v1", config.server.listen));
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile

/// The Dockerfile's instructions (continuations joined, comments dropped), by stage.
struct Dockerfile {
    /// (stage name, keyword, arguments)
    instructions: Vec<(String, String, String)>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let mut instructions = Vec::new();
        let mut stage = String::new();
        let mut pending = String::new();
        for line in read("Dockerfile").lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
                continue;
            }
            if let Some(continued) = trimmed.strip_suffix('\\') {
                pending.push_str(continued);
                pending.push(' ');
                continue;
            }
            pending.push_str(trimmed);
            let full = std::mem::take(&mut pending);
            let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
            let keyword = keyword.to_ascii_uppercase();
            let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
            if keyword == "FROM" {
                stage = args.rsplit_once(" AS ").map_or(String::new(), |(_, s)| s.to_owned());
            }
            instructions.push((stage.clone(), keyword, args));
        }
        Dockerfile { instructions }
    }

    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(_, k, _)| k == keyword)
            .map(|(_, _, a)| a.as_str())
            .collect()
    }

    fn one(&self, keyword: &str) -> &str {
        let all = self.all(keyword);
        assert_eq!(all.len(), 1, "{keyword}: {all:?}");
        all[0]
    }

    fn env(&self, name: &str) -> String {
        self.all("ENV")
            .into_iter()
            .filter_map(|args| args.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| format!("no ENV {name} in the Dockerfile"))
            .unwrap()
    }

    /// The `cargo build …` of the builder stage, as one command.
    fn build_command(&self) -> String {
        let runs: Vec<&str> = self
            .instructions
            .iter()
            .filter(|(stage, k, a)| stage == "builder" && k == "RUN" && a.contains("cargo build"))
            .map(|(_, _, a)| a.as_str())
            .collect();
        assert_eq!(runs.len(), 1, "one RUN cargo build in the builder: {runs:?}");
        let command = &runs[0][runs[0].find("cargo build").unwrap()..];
        let end = command.find(['&', ';', '|']).unwrap_or(command.len());
        command[..end].trim().to_owned()
    }
}

#[test]
fn the_docker_build_is_the_one_ci_runs() {
    let docker = Dockerfile::read();
    let build = docker.build_command();
    assert_eq!(build, BUILD);
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == build),
        ".ci/run does not run the Dockerfile's `{build}`"
    );

    // The runtime stage gets exactly the binaries built.
    let bins: BTreeSet<&str> =
        build.split(" --bin ").skip(1).map(|b| b.split_whitespace().next().unwrap()).collect();
    let copied: BTreeSet<&str> = docker
        .all("COPY")
        .into_iter()
        .filter(|a| a.starts_with("--from=builder "))
        .flat_map(|a| {
            let words: Vec<&str> = a.split_whitespace().collect();
            words[1..words.len() - 1].to_vec()
        })
        .map(|source| source.strip_prefix("/build/target/release/").unwrap())
        .collect();
    assert_eq!(copied, bins);

    // The builder's toolchain is at least the crate's rust-version.
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let toolchain = docker.one("ARG").strip_prefix("RUST_VERSION=").unwrap().to_owned();
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let msrv = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(version(&toolchain) >= version(msrv), "rust:{toolchain} is older than {msrv}");

    // The runtime contract the README and compose rely on.
    assert_eq!(docker.one("ENTRYPOINT"), r#"["keyrelay"]"#);
    assert!(docker.one("HEALTHCHECK").ends_with(r#"CMD ["keyrelay", "health"]"#));
    assert_eq!(docker.one("STOPSIGNAL"), "SIGTERM");
    assert_eq!(docker.one("EXPOSE"), "8080");
    assert_eq!(docker.env("KEYRELAY_LISTEN"), "0.0.0.0:8080");
    assert_eq!(docker.env("KEYRELAY_CONFIG"), "/etc/keyrelay/keyrelay.toml");
    assert_eq!(docker.env("KEYRELAY_ALLOW_OPEN"), "1");
    let user = docker.one("USER");
    assert!(!user.starts_with("0") && !user.starts_with("root"), "USER {user}");
    assert!(
        docker
            .all("RUN")
            .iter()
            .any(|r| r.contains("/var/lib/keyrelay") && r.contains("-o keyrelay"))
    );
}

/// `.dockerignore`, with Docker's semantics for the patterns it uses: `*`, `**`, `!` exceptions,
/// a pattern matching a directory excludes what is under it, the last match wins.
struct DockerIgnore(Vec<(bool, Vec<String>)>);

impl DockerIgnore {
    fn read() -> DockerIgnore {
        let patterns = read(".dockerignore")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (exclude, pattern) =
                    line.strip_prefix('!').map_or((true, line), |rest| (false, rest));
                let segments = pattern.trim_matches('/').split('/').map(str::to_owned).collect();
                (exclude, segments)
            })
            .collect();
        DockerIgnore(patterns)
    }

    fn excludes(&self, relative: &str) -> bool {
        let path: Vec<&str> = relative.split('/').collect();
        let mut excluded = false;
        for (exclude, pattern) in &self.0 {
            if (1..=path.len()).any(|n| glob_path(pattern, &path[..n])) {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn glob_path(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => {
            (0..=path.len()).any(|skip| glob_path(&pattern[1..], &path[skip..]))
        }
        (Some(p), Some(s)) => {
            glob_segment(p.as_bytes(), s.as_bytes()) && glob_path(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn glob_segment(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') => (0..=text.len()).any(|skip| glob_segment(&pattern[1..], &text[skip..])),
        Some(b'?') => !text.is_empty() && glob_segment(&pattern[1..], &text[1..]),
        Some(c) => text.first() == Some(c) && glob_segment(&pattern[1..], &text[1..]),
    }
}

/// Every file under `dir` (relative to the repository), recursively.
fn files_under(relative: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![relative.to_owned()];
    while let Some(current) = stack.pop() {
        let path = Path::new(ROOT).join(&current);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                stack.push(format!("{current}/{name}"));
            }
        } else {
            files.push(current);
        }
    }
    files
}

#[test]
fn the_build_context_holds_what_the_build_needs() {
    let ignore = DockerIgnore::read();
    for (path, excluded) in [
        ("target/release/keyrelay", true),
        (".git/HEAD", true),
        ("tests/deploy.rs", true),
        ("deploy/docker-compose.yml", true),
        ("deploy/image/keyrelay.toml", false),
        ("src/main.rs", false),
        ("Cargo.lock", false),
        ("x/node_modules/y.js", true),
        ("secrets.env", true),
    ] {
        assert_eq!(ignore.excludes(path), excluded, "{path}");
    }

    // The builder stage's context: its COPYs, minus .dockerignore, relative to its WORKDIR.
    let docker = Dockerfile::read();
    let scratch = Scratch::new("context");
    for (stage, keyword, args) in &docker.instructions {
        if keyword != "COPY" || args.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let (dest, sources) = words.split_last().unwrap();
        for source in sources {
            let files = files_under(source);
            assert!(!files.is_empty(), "COPY {source}: nothing there");
            for file in files.iter().filter(|f| !ignore.excludes(f)) {
                let inside = file.strip_prefix(source).unwrap().trim_start_matches('/');
                let target = match (inside.is_empty(), dest.ends_with('/')) {
                    (true, true) => Path::new(dest).join(Path::new(file).file_name().unwrap()),
                    (true, false) => PathBuf::from(dest),
                    (false, _) => Path::new(dest).join(inside),
                };
                if stage != "builder" {
                    continue;
                }
                let target = scratch.0.join(target.strip_prefix("./").unwrap_or(&target));
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::copy(Path::new(ROOT).join(file), target).unwrap();
            }
            assert!(
                files.iter().any(|f| !ignore.excludes(f)),
                "COPY {source}: .dockerignore leaves nothing"
            );
        }
    }
    // Cargo resolves the manifest, every declared target and the lock file there, offline.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    let host = rustc.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned();
    let mut fetch = Command::new(cargo);
    fetch.args(["fetch", "--locked", "--offline", "--target", &host]).current_dir(&scratch.0);
    let output = run_bounded(fetch, "", Duration::from_secs(60));
    assert!(
        output.status.success(),
        "the Docker build context is not enough for `{BUILD}`:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_image_health_check_answers_with_the_image_environment() {
    let docker = Dockerfile::read();
    let healthcheck = docker.one("HEALTHCHECK");
    let command: Vec<String> =
        serde_json::from_str(healthcheck.split_once("CMD ").unwrap().1).unwrap();
    assert_eq!(command[0], "keyrelay");
    let (_mock, proxy) = demo().await;
    let host = docker.env("KEYRELAY_LISTEN").rsplit_once(':').unwrap().0.to_owned();

    let check = |port: u16| {
        let mut run = Command::new(env!("CARGO_BIN_EXE_keyrelay"));
        run.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
        // The image's environment (its config file need not exist for a health check).
        for name in ["KEYRELAY_CONFIG", "KEYRELAY_ALLOW_OPEN"] {
            run.env(name, docker.env(name));
        }
        run.env("KEYRELAY_LISTEN", format!("{host}:{port}")).args(&command[1..]);
        tokio::task::spawn_blocking(move || run_bounded(run, "", Duration::from_secs(20)))
    };
    let healthy = check(proxy.addr.port()).await.unwrap();
    assert!(healthy.status.success(), "{healthy:?}");
    let unhealthy = check(free_port()).await.unwrap();
    assert!(!unhealthy.status.success(), "{unhealthy:?}");
}
