//! `keyrelay-mock`: runs the Groq-emulating mock upstream ([`keyrelay::mock`]) until Ctrl-C or
//! SIGTERM. Without `--config` it serves three orgs (`org_a`, `org_b`, `org_c`; keys
//! `mock-key-a`, `mock-key-b`, `mock-key-c`) with Groq free-tier-like limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use keyrelay::mock::{MockConfig, MockServer, parse_duration};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Groq-emulating mock upstream for keyrelay.
#[derive(Debug, Parser)]
#[command(name = "keyrelay-mock", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "KEYRELAY_MOCK_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// TOML file with a mock config (orgs, keys, limits, faults).
    #[arg(long, env = "KEYRELAY_MOCK_CONFIG")]
    config: Option<PathBuf>,
    /// Length of a "minute" window, e.g. `2s` (overrides the config file).
    #[arg(long, value_parser = parse_duration)]
    minute: Option<Duration>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "Mock upstream failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &args.config {
        Some(path) => MockConfig::load(path)?,
        None => MockConfig::demo(),
    };
    if let Some(minute) = args.minute {
        config.minute = minute;
    }
    let listener = TcpListener::bind(args.listen).await?;
    let server = MockServer::start_on(listener, config).await?;
    tracing::info!(listen = %server.addr(), base_url = %server.base_url(), "Mock upstream listening");
    shutdown_signal().await;
    tracing::info!("Mock upstream shutting down");
    // Open streams get a moment to finish; then the process exits anyway.
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
