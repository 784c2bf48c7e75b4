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
pub mod telemetry;
pub mod tokens;

use std::future::Future;

use tokio::net::TcpListener;

pub use app::{AppState, router};
pub use config::Config;

/// Serves keyrelay on `listener` until `shutdown` resolves, then drains in-flight requests.
///
/// The caller binds, so tests pass a listener on `127.0.0.1:0`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(config).map_err(std::io::Error::other)?;
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
