//! HTTP handlers: thin functions that read the request and hand it to the core.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::app::AppState;
use crate::error::ProxyError;
use crate::forward::{self, ProxyRequest};
use crate::openai::RequestPeek;

/// Every OpenAI path: read the body once (bounded), peek at it, forward it.
pub async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    match read(&state, request).await {
        Ok(request) => forward::forward(&state, request).await,
        Err(error) => {
            tracing::info!(target: "keyrelay::access", status = error.status().as_u16(), kind = error.kind(), "Request refused");
            let mut response = error.into_response();
            forward::set_queue_ms(&mut response, std::time::Duration::ZERO);
            response
        }
    }
}

async fn read(state: &AppState, request: Request) -> Result<ProxyRequest, ProxyError> {
    let (parts, body) = request.into_parts();
    let client =
        state.clients().authenticate(&parts.headers).map_err(|_| ProxyError::Unauthorized)?;
    let limit = state.config().server.max_body_bytes;
    let body = read_body(body, limit).await?;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let peek = RequestPeek::from_body(content_type, &body)?;
    if let Some(client) = &client {
        let config = client.config();
        match &peek.model {
            Some(model) if !client.allows(model) => {
                let client = client.name.clone();
                return Err(ProxyError::ModelNotAllowed { client, model: model.clone() });
            }
            // Without a model the client's model rules could not be applied.
            None if !body.is_empty()
                && (config.models.is_some() || !config.model_quotas.is_empty()) =>
            {
                return Err(ProxyError::ModelRequired { client: client.name.clone() });
            }
            _ => {}
        }
    }
    let path = parts.uri.path();
    let suffix = path.strip_prefix("/openai").unwrap_or(path);
    let suffix = suffix.strip_prefix("/v1").unwrap_or(suffix);
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{suffix}?{query}"),
        None => suffix.to_owned(),
    };
    Ok(ProxyRequest {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
        peek,
        client,
    })
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ProxyError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large { ProxyError::BodyTooLarge { limit } } else { ProxyError::BodyUnreadable }
    })
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: at least one upstream key is usable.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.pool().providers().iter().any(|p| p.has_usable_key()) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no usable upstream key").into_response()
    }
}

/// Prometheus scrape endpoint.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(&state.pool(), state.scheduler());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// Anything outside the OpenAI surface.
pub async fn not_found(request: Request) -> Response {
    ProxyError::NotFound { path: request.uri().path().to_owned() }.into_response()
}
