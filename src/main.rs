//! The `keyrelay` binary: parse the command line, load config, serve until a signal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyrelay::config::{Config, env};
use keyrelay::telemetry::{self, LogFormat};

/// An OpenAI-compatible proxy that paces, queues and rotates LLM API keys.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file (default: zero-config from GROQ_API_KEYS / OPENAI_API_KEYS).
    #[arg(long, global = true, env = env::KEYRELAY_CONFIG)]
    config: Option<PathBuf>,
    /// Serve a non-loopback address even without client keys (same as KEYRELAY_ALLOW_OPEN=1).
    #[arg(long, global = true)]
    allow_open: bool,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "KEYRELAY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the proxy (the default).
    Serve,
    /// Validate the configuration, report every problem, and exit.
    Check,
    /// Print request and token totals per day, client and model from the state file's ledger
    /// (keyrelay must not be running on that file).
    Usage {
        /// The state file (default: the config's `[store] path`, or KEYRELAY_STATE_PATH).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Days back to include.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running keyrelay (at the configured listen address, or `--url`) whether it is alive:
    /// exit 0 if `/healthz` answers 200 (for container health checks).
    Health {
        /// Base URL of the running keyrelay (default: `http://` + the configured listen address).
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let cli_env: Vec<(String, String)> = if cli.allow_open {
        vec![(env::KEYRELAY_ALLOW_OPEN.to_owned(), "1".to_owned())]
    } else {
        Vec::new()
    };
    vars.extend(cli_env.iter().cloned());
    if let Some(Command::Health { url }) = &cli.command {
        return health(url.clone(), &vars);
    }
    if let Some(Command::Usage { state: Some(path), days, json }) = &cli.command {
        return usage(path, *days, *json);
    }
    let config = match Config::load(cli.config.as_deref(), &vars) {
        Ok(config) => Config { cli_env, ..config },
        Err(error) => {
            eprintln!("keyrelay: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => {
            let keys: usize =
                config.providers.iter().flat_map(|p| &p.accounts).map(|a| a.keys.len()).sum();
            eprintln!(
                "keyrelay: configuration is valid ({} provider(s), {keys} key(s))",
                config.providers.len()
            );
            ExitCode::SUCCESS
        }
        Command::Health { .. } => ExitCode::SUCCESS,
        Command::Usage { days, json, .. } => match &config.store.path {
            Some(path) => usage(path, days, json),
            None => {
                eprintln!(
                    "keyrelay: the state file is off ([store] enabled = false or KEYRELAY_STATE_PATH=off): no ledger to read"
                );
                ExitCode::from(2)
            }
        },
        Command::Serve => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("keyrelay: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: Config) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let shutdown = keyrelay::shutdown::signal();
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        for provider in &config.providers {
            let keys: usize = provider.accounts.iter().map(|a| a.keys.len()).sum();
            tracing::info!(provider = %provider.name, base_url = %provider.base_url, accounts = provider.accounts.len(), keys, "Upstream provider ready");
        }
        if config.clients.is_empty() {
            tracing::warn!("No [[clients]] configured: keyrelay runs open, and anyone who can reach it uses the upstream keys");
        } else {
            tracing::info!(clients = config.clients.len(), "Client keys required");
        }
        keyrelay::serve(listener, config, shutdown).await
    })
}

/// `keyrelay health`: needs no upstream keys, only where keyrelay listens.
fn health(url: Option<String>, vars: &HashMap<String, String>) -> ExitCode {
    let listen = vars.get(env::KEYRELAY_LISTEN).map_or("127.0.0.1:8080", String::as_str);
    let base = url.unwrap_or_else(|| format!("http://{}", listen.replace("0.0.0.0", "127.0.0.1")));
    let check = async {
        let client =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build()?;
        client.get(format!("{}/healthz", base.trim_end_matches('/'))).send().await
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(check).map_err(|e| e.without_url().to_string()));
    match answer {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("keyrelay: unhealthy ({})", response.status());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("keyrelay: unhealthy ({error})");
            ExitCode::FAILURE
        }
    }
}

/// `keyrelay usage`: totals per day, client and model from the ledger.
fn usage(path: &std::path::Path, days: u64, json: bool) -> ExitCode {
    use std::io::Write;
    let since = keyrelay::store::unix_ms().saturating_sub(days * 86_400_000);
    let records = match keyrelay::store::read_file_records(path, since) {
        Ok(records) => records,
        Err(error) => {
            eprintln!("keyrelay: {error}");
            return ExitCode::FAILURE;
        }
    };
    let rows = keyrelay::store::usage_report(&records);
    let mut out = std::io::stdout().lock();
    let written = if json {
        rows.iter()
            .try_for_each(|row| writeln!(out, "{}", serde_json::to_string(row).unwrap_or_default()))
    } else {
        writeln!(
            out,
            "{:<10}  {:<20}  {:<32}  {:>9}  {:>7}  {:>12}  {:>12}",
            "day", "client", "model", "requests", "errors", "prompt_tok", "completion_tok"
        )
        .and_then(|()| {
            rows.iter().try_for_each(|r| {
                writeln!(
                    out,
                    "{:<10}  {:<20}  {:<32}  {:>9}  {:>7}  {:>12}  {:>12}",
                    r.day,
                    r.client,
                    r.model,
                    r.requests,
                    r.errors,
                    r.prompt_tokens,
                    r.completion_tokens
                )
            })
        })
    };
    if written.is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
