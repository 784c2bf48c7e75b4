//! A Groq-emulating upstream for tests, benchmarks and offline use.
//!
//! [`MockServer`] serves the OpenAI-compatible API under `/openai/v1` and `/v1` with Groq's
//! semantics: limits per (organization, model) on RPM, RPD, TPM and TPD (sliding window or
//! refilling bucket, [`Algorithm`]), Groq's `x-ratelimit-*` headers (`-requests` = RPD,
//! `-tokens` = TPM), Groq's 429 and 413 bodies, SSE streaming with `x_groq.usage`, key states
//! ([`KeyState`]) and injected [`Faults`]. `GET /mock/stats` and `GET /mock/requests` expose
//! what it saw.
//!
//! Module map: `config` (what to emulate), `router` (routes and the recording middleware),
//! `chat`/`stream`/`embeddings`/`audio` (handlers), `state` (authentication, admission,
//! true-up), `limiter` (the windows), `errors` (every error body), `stats`, `duration`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use keyrelay::mock::{MockConfig, MockLimits, MockServer};
//! let limits = MockLimits { rpm: Some(30), ..MockLimits::UNLIMITED };
//! let server = MockServer::start(MockConfig::orgs_with_limits(&["key-1"], limits)).await?;
//! let _url = server.base_url(); // http://127.0.0.1:PORT/openai/v1
//! # Ok(()) }
//! ```

mod audio;
mod chat;
mod config;
mod duration;
mod embeddings;
mod errors;
mod limiter;
mod router;
mod state;
mod stats;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    Algorithm, DEFAULT_MODELS, Faults, KeyState, MockConfig, MockConfigError, MockKey, MockLimits,
    MockOrg, TokenAccounting, groq_free_tier_limits,
};
pub use duration::{format_go_duration, parse_duration};
pub use stats::{MockStats, RECORDED_BODY_BYTES, RECORDED_REQUESTS, RecordedRequest};

use state::{MockState, lock};

/// A running mock upstream. Stops accepting connections when dropped (in-flight answers finish).
#[derive(Debug)]
pub struct MockServer {
    state: Arc<MockState>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a mock on `127.0.0.1:0`.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::start_on(listener, config).await
    }

    /// Starts a mock on a listener the caller bound. Fails with `InvalidInput` if a key is listed
    /// twice.
    pub async fn start_on(listener: TcpListener, config: MockConfig) -> io::Result<MockServer> {
        let state =
            MockState::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let state = Arc::new(state);
        let addr = listener.local_addr()?;
        let app = router::router(Arc::clone(&state));
        let listener = listener.tap_io(|tcp| {
            // Small SSE frames must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        let (shutdown, signal) = oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = signal.await;
        });
        let task = tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(%error, "Mock upstream stopped with an error");
            }
        });
        Ok(MockServer { state, addr, shutdown: Some(shutdown), task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/openai/v1`, Groq's base URL shape.
    pub fn base_url(&self) -> String {
        format!("http://{}/openai/v1", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        lock(&self.state.recorder).stats()
    }

    /// The last [`RECORDED_REQUESTS`] requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorder).requests()
    }

    /// Replaces the faults (takes effect for the next request).
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// Changes the state of a configured key; an unknown key is ignored (and logged).
    pub fn set_key_state(&self, key: &str, state: KeyState) {
        if !self.state.set_key_state(key, state) {
            tracing::warn!(?state, "Mock key state not changed: unknown key");
        }
    }

    /// Stops accepting connections and waits until the open ones are finished.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
