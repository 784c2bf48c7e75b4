//! The application: shared state and the router with its tower stack.
//!
//! Layers, outermost first (a `ServiceBuilder` reads in execution order):
//! 1. catch panics → OpenAI-shaped 500, so nothing escapes as a dropped connection;
//! 2. set `x-request-id` (kept if the client sent one) and propagate it to the answer;
//! 3. mark `authorization` sensitive, so keys never reach logs;
//! 4. trace span per request (method, path, request id).

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use http::{HeaderName, Request, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Clients;
use std::collections::HashMap;

use crate::config::{Config, ConfigError};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::routes;
use crate::scheduler::Scheduler;
use crate::store::{State, Store, StoreError};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything request handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// What a reload replaces; requests take a snapshot of it.
    live: RwLock<Live>,
    scheduler: Scheduler,
    metrics: Metrics,
    client: reqwest::Client,
    store: Option<Store>,
}

#[derive(Clone)]
struct Live {
    config: Arc<Config>,
    pool: Arc<Pool>,
    clients: Arc<Clients>,
}

/// Why keyrelay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The upstream HTTP client could not be built.
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The state file could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppState {
    /// Builds the state from validated config, restoring what the state file holds, and (inside
    /// a tokio runtime) starts the task that flushes state back to it.
    pub fn new(config: Config) -> Result<Self, StartupError> {
        let connect_timeout = config
            .providers
            .iter()
            .map(|p| p.connect_timeout)
            .max()
            .unwrap_or(std::time::Duration::from_secs(5));
        let client = crate::forward::client(connect_timeout)?;
        let pool = Pool::new(&config);
        let scheduler = Scheduler::new(config.queue.clone());
        let metrics = Metrics::new(config.model_names());
        let clients = Clients::new(&config);
        let store = config.store.path.as_deref().map(Store::open).transpose()?;
        let saved = store.as_ref().map(Store::load).transpose()?;
        crate::tokens::warm_up();
        let live =
            Live { config: Arc::new(config), pool: Arc::new(pool), clients: Arc::new(clients) };
        scheduler.reconfigure(&live.pool);
        let inner = Inner { live: RwLock::new(live), scheduler, metrics, client, store };
        let state = Self { inner: Arc::new(inner) };
        if let Some(saved) = saved {
            saved.restore(&state);
        }
        if state.inner.store.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(flush_periodically(Arc::downgrade(&state.inner)));
        }
        Ok(state)
    }

    /// Applies a new configuration without dropping in-flight or queued requests and without
    /// losing counters: clients, accounts, keys and limits are matched by name. Returns the
    /// settings that only a restart applies, if any changed.
    ///
    /// Refused if it would leave a non-loopback listener open: the address bound at start is
    /// what counts, since a new `listen` only applies at the next restart.
    pub fn reload(&self, mut config: Config) -> Result<Vec<&'static str>, ConfigError> {
        let old = self.live().clone();
        config.cli_env.clone_from(&old.config.cli_env);
        let bound = old.config.server.listen;
        if config.clients.is_empty() && !config.server.allow_open && !bound.ip().is_loopback() {
            return Err(ConfigError::Invalid(vec![crate::config::Problem::new(
                "clients",
                format!(
                    "keyrelay listens on {bound}, reachable from other machines: a config without [[clients]] needs allow_open = true (or KEYRELAY_ALLOW_OPEN=1)"
                ),
            )]));
        }
        let mut restart_only = Vec::new();
        let (before, after) = (&old.config, &config);
        if before.server.listen != after.server.listen {
            restart_only.push("server.listen");
        }
        if before.server.admin_listen != after.server.admin_listen {
            restart_only.push("server.admin_listen");
        }
        if before.store.path != after.store.path {
            restart_only.push("store.path");
        }
        if before.quota_windows != after.quota_windows {
            restart_only.push("quotas");
        }
        let pool = Pool::new(&config);
        pool.keep_key_states(&old.pool);
        let clients = old.clients.reconfigured(&config);
        self.inner.metrics.add_models(config.model_names());
        let live =
            Live { config: Arc::new(config), pool: Arc::new(pool), clients: Arc::new(clients) };
        let pool = Arc::clone(&live.pool);
        *self.inner.live.write().unwrap_or_else(|e| e.into_inner()) = live;
        // After the swap, so a lane created meanwhile by a request holding the old pool is
        // re-pointed too.
        self.inner.scheduler.reconfigure(&pool);
        for setting in &restart_only {
            tracing::warn!(
                setting,
                "Changed in the reloaded config; takes effect at the next restart"
            );
        }
        tracing::info!("Configuration reloaded");
        Ok(restart_only)
    }

    /// Reads the config file again (with the process environment) and applies it; an invalid
    /// file is refused with its problems and the running configuration stays.
    pub fn reload_from_source(&self) -> Result<Vec<&'static str>, ConfigError> {
        let current = self.config();
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        vars.extend(current.cli_env.iter().cloned());
        let config = Config::load(current.source.as_deref(), &vars)?;
        self.reload(config)
    }

    /// The state file, if keyrelay keeps one.
    pub fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
    }

    /// Writes what changed to the state file now (off the async workers).
    pub async fn flush(&self) {
        let state = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let store = state.store()?;
            let retention = state.config().store.ledger_retention;
            Some(store.flush_with(|| State::capture(&state), retention))
        })
        .await;
        if let Ok(Some(Err(error))) = written {
            tracing::error!(%error, "Could not write the state file");
        }
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live().config)
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.inner.live.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The upstream key pool.
    pub fn pool(&self) -> Arc<Pool> {
        Arc::clone(&self.live().pool)
    }

    /// The lanes and their wait queues.
    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    /// Client keys and quotas.
    pub fn clients(&self) -> Arc<Clients> {
        Arc::clone(&self.live().clients)
    }

    /// The metrics registry and handles.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The shared upstream HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }
}

/// Flushes every `store.flush_interval` until the app is dropped.
async fn flush_periodically(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(interval) =
            inner.upgrade().map(|i| AppState { inner: i }.config().store.flush_interval)
        else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        AppState { inner }.flush().await;
    }
}

/// Random 128-bit request ids, hex-encoded.
#[derive(Clone, Copy, Default)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The router with every route and layer.
pub fn router(state: AppState) -> Router {
    let stack = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(|_| ProxyError::Internal.into_response()))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }));
    let mut router = Router::new();
    if state.config().admin_token_sha256.is_some() {
        router = router.merge(crate::admin::routes(&state));
    }
    router
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/v1/{*rest}", any(routes::proxy))
        .route("/openai/v1/{*rest}", any(routes::proxy))
        .fallback(routes::not_found)
        .layer(stack)
        .with_state(state)
}
