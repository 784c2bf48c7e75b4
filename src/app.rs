//! The application: shared state and the router with its tower stack.
//!
//! Layers, outermost first (a `ServiceBuilder` reads in execution order):
//! 1. catch panics → OpenAI-shaped 500, so nothing escapes as a dropped connection;
//! 2. set `x-request-id` (kept if the client sent one) and propagate it to the answer;
//! 3. mark `authorization` sensitive, so keys never reach logs;
//! 4. trace span per request (method, path, request id).

use std::sync::Arc;

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
use crate::config::Config;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::routes;
use crate::scheduler::Scheduler;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything request handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    pool: Pool,
    scheduler: Scheduler,
    clients: Clients,
    metrics: Metrics,
    client: reqwest::Client,
}

impl AppState {
    /// Builds the state from validated config.
    pub fn new(config: Config) -> Result<Self, reqwest::Error> {
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
        crate::tokens::warm_up();
        Ok(Self { inner: Arc::new(Inner { config, pool, scheduler, clients, metrics, client }) })
    }

    /// The running configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The upstream key pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The lanes and their wait queues.
    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    /// Client keys and quotas.
    pub fn clients(&self) -> &Clients {
        &self.inner.clients
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
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/v1/{*rest}", any(routes::proxy))
        .route("/openai/v1/{*rest}", any(routes::proxy))
        .fallback(routes::not_found)
        .layer(stack)
        .with_state(state)
}
