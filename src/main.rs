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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let vars: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &vars) {
        Ok(config) => config,
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
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        let address = listener.local_addr()?;
        for provider in &config.providers {
            let keys: usize = provider.accounts.iter().map(|a| a.keys.len()).sum();
            tracing::info!(provider = %provider.name, base_url = %provider.base_url, accounts = provider.accounts.len(), keys, "Upstream provider ready");
        }
        tracing::info!(%address, "keyrelay listening; point OpenAI clients at http://{address}/v1");
        keyrelay::serve(listener, config, keyrelay::shutdown::signal()).await
    })
}
