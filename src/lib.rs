//! keyrelay: an OpenAI-compatible proxy that paces, queues and rotates upstream API keys so clients
//! never see a 429 while capacity exists.
//!
//! A request's path through the crate (see `ARCHITECTURE.md` for the whole map):
//!
//! ```text
//! app (router + tower layers) ─► routes::proxy (read body once, openai::RequestPeek)
//!   ─► forward (pool::Pool::route → Provider::acquire → send → forward::classify)
//!   ─► relay the answer chunk by chunk, or rotate / back off and try again
//! ```

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod config;
pub mod duration;
pub mod error;
pub mod forward;
pub mod limits;
pub mod metrics;
pub mod mock;
pub mod openai;
pub mod pool;
pub mod routes;
pub mod scheduler;
pub mod secret;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tokens;

use std::future::Future;

use tokio::net::TcpListener;

pub use app::{AppState, router};
pub use config::Config;

/// Serves keyrelay on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// and queued requests finish for up to `server.shutdown_grace`, and writes the state file.
///
/// The caller binds, so tests pass a listener on `127.0.0.1:0`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.server.shutdown_grace;
    let state = AppState::new(config).map_err(std::io::Error::other)?;
    let address = listener.local_addr()?;
    if let Some(admin_listen) = state.config().server.admin_listen {
        let admin = TcpListener::bind(admin_listen).await?;
        tracing::info!(address = %admin.local_addr()?, "Operator listener (metrics, health, admin)");
        let router = admin::operator_router(state.clone());
        tokio::spawn(async move { axum::serve(admin, router).await });
    }
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(state.clone()));
    tracing::info!(%address, "keyrelay listening; point OpenAI clients at http://{address}/v1");
    let (stopping, mut stop_requested) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping.send(true);
    });
    let grace_over = async move {
        let _ = stop_requested.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = server => result,
        () = grace_over => {
            tracing::warn!(grace_s = grace.as_secs_f64(), "Shutdown grace period over; closing the requests still open");
            Ok(())
        }
    };
    state.flush().await;
    tracing::info!("keyrelay stopped");
    result
}

/// SIGHUP reads the config file (and environment) again and applies it.
#[cfg(unix)]
async fn reload_on_sighup(state: AppState) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
    while hangups.recv().await.is_some() {
        let reloading = state.clone();
        let result = tokio::task::spawn_blocking(move || reloading.reload_from_source()).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "Reload refused; the running configuration stays");
            }
            Err(_) => tracing::error!("Reload failed"),
        }
    }
}
