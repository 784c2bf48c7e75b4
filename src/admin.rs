//! The admin API (`/admin/*`, JSON), enabled only when `[admin] token` is set, on the main
//! listener and on `server.admin_listen` if configured; and the operator router that second
//! listener serves (`/metrics`, `/healthz`, `/readyz`, `/admin/*`).
//!
//! Every answer names keys by alias and clients by name: no upstream or client key ever appears.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ProxyError;
use crate::routes;

/// `/admin/*`, behind the admin token.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/accounts", get(accounts))
        .route("/admin/clients", get(clients))
        .route("/admin/queue", get(queue))
        .route("/admin/usage", get(usage))
        .route("/admin/keys/{alias}/disable", post(disable_key))
        .route("/admin/keys/{alias}/enable", post(enable_key))
        .route("/admin/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
}

/// What the separate operator listener serves.
pub fn operator_router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/metrics", get(routes::metrics))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz));
    if state.config().admin_token_sha256.is_some() {
        router = router.merge(routes(&state));
    }
    router.fallback(routes::not_found).with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| -> [u8; 32] { Sha256::digest(token.trim().as_bytes()).into() });
    let expected = state.config().admin_token_sha256;
    match (presented, expected) {
        (Some(presented), Some(expected)) if bool::from(presented.ct_eq(&expected)) => {
            next.run(request).await
        }
        _ => ProxyError::Unauthorized.into_response(),
    }
}

#[derive(Serialize)]
struct KeyView {
    alias: String,
    state: &'static str,
    reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct ModelView {
    cooling_ms: Option<u64>,
    /// dimension → { limit, remaining }
    limits: BTreeMap<&'static str, LimitView>,
}

#[derive(Serialize)]
struct LimitView {
    limit: u64,
    remaining: u64,
}

#[derive(Serialize)]
struct AccountView {
    name: String,
    keys: Vec<KeyView>,
    models: BTreeMap<String, ModelView>,
}

#[derive(Serialize)]
struct ProviderView {
    name: String,
    base_url: String,
    accounts: Vec<AccountView>,
}

/// Upstream accounts and keys with their state, learned limits and headroom per model.
async fn accounts(State(state): State<AppState>) -> Json<serde_json::Value> {
    let headroom = state.scheduler().headroom();
    let cooling = state.scheduler().cooling();
    let providers: Vec<ProviderView> = state
        .pool()
        .providers()
        .iter()
        .map(|provider| ProviderView {
            name: provider.name.clone(),
            base_url: provider.base_url.clone(),
            accounts: provider
                .accounts()
                .iter()
                .map(|account| {
                    let mut models: BTreeMap<String, ModelView> = BTreeMap::new();
                    for h in headroom
                        .iter()
                        .filter(|h| h.provider == provider.name && h.account == account.name)
                    {
                        let view = LimitView { limit: h.limit, remaining: h.remaining };
                        models
                            .entry(h.model.clone())
                            .or_default()
                            .limits
                            .insert(h.dimension.as_str(), view);
                    }
                    for (_, model, _, left) in cooling
                        .iter()
                        .filter(|(p, _, a, _)| *p == provider.name && *a == account.name)
                    {
                        models.entry(model.clone()).or_default().cooling_ms =
                            Some(left.as_millis() as u64);
                    }
                    let keys = account
                        .keys()
                        .iter()
                        .map(|key| KeyView {
                            alias: key.alias.clone(),
                            state: if key.is_enabled() { "active" } else { "disabled" },
                            reason: key.disabled_reason().map(|r| r.as_str()),
                        })
                        .collect();
                    AccountView { name: account.name.clone(), keys, models }
                })
                .collect(),
        })
        .collect();
    Json(serde_json::json!({ "providers": providers }))
}

#[derive(Serialize)]
struct QuotaView {
    model: Option<String>,
    dimension: &'static str,
    limit: u64,
    used: u64,
}

/// Clients with their usage against their quotas.
async fn clients(State(state): State<AppState>) -> Json<serde_json::Value> {
    let clients: Vec<serde_json::Value> = state
        .clients()
        .all()
        .iter()
        .map(|client| {
            let config = client.config();
            let (in_flight, quotas) = client.usage_view();
            let quotas: Vec<QuotaView> = quotas
                .into_iter()
                .map(|q| QuotaView {
                    model: q.model,
                    dimension: q.dimension.as_str(),
                    limit: q.limit,
                    used: q.used,
                })
                .collect();
            serde_json::json!({
                "name": client.name,
                "priority": config.priority,
                "policy": format!("{:?}", config.policy).to_lowercase(),
                "models": config.models,
                "in_flight": in_flight,
                "quotas": quotas,
            })
        })
        .collect();
    Json(serde_json::json!({ "open": state.clients().is_open(), "clients": clients }))
}

/// Requests waiting per (provider, model).
async fn queue(State(state): State<AppState>) -> Json<serde_json::Value> {
    let lanes: Vec<serde_json::Value> = state
        .scheduler()
        .depths()
        .into_iter()
        .map(|(provider, model, depth)| serde_json::json!({ "provider": provider, "model": model, "depth": depth }))
        .collect();
    Json(serde_json::json!({ "total": state.scheduler().depth(), "lanes": lanes }))
}

#[derive(Deserialize)]
struct UsageQuery {
    days: Option<u64>,
}

/// Totals per day, client and model from the ledger (what `keyrelay usage` prints).
async fn usage(State(state): State<AppState>, Query(query): Query<UsageQuery>) -> Response {
    let Some(store) = state.store() else {
        return (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": {"message": "keyrelay runs without a state file", "type": "invalid_request_error", "param": null, "code": "no_state_file"}}))).into_response();
    };
    state.flush().await;
    let days = query.days.unwrap_or(30).saturating_mul(86_400_000);
    let since = crate::store::unix_ms().saturating_sub(days);
    match store.records(since) {
        Ok(records) => Json(serde_json::json!({ "rows": crate::store::usage_report(&records) }))
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "Could not read the ledger");
            ProxyError::Internal.into_response()
        }
    }
}

/// Reads the config file again and applies it, or answers 400 with every problem.
async fn reload(State(state): State<AppState>) -> Response {
    let reloading = state.clone();
    match tokio::task::spawn_blocking(move || reloading.reload_from_source()).await {
        Ok(Ok(restart_only)) => {
            Json(serde_json::json!({ "reloaded": true, "restart_only": restart_only }))
                .into_response()
        }
        Ok(Err(error)) => {
            let body = crate::openai::error_body(
                &error.to_string(),
                "invalid_request_error",
                None,
                Some("invalid_config"),
            );
            (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body)
                .into_response()
        }
        Err(_) => ProxyError::Internal.into_response(),
    }
}

async fn disable_key(State(state): State<AppState>, Path(alias): Path<String>) -> Response {
    set_key(&state, &alias, false)
}

async fn enable_key(State(state): State<AppState>, Path(alias): Path<String>) -> Response {
    set_key(&state, &alias, true)
}

/// An operator takes a key out of rotation or puts it back; waiting requests are re-checked.
fn set_key(state: &AppState, alias: &str, enable: bool) -> Response {
    for provider in state.pool().providers() {
        for key in provider.accounts().iter().flat_map(|a| a.keys()) {
            if key.alias == alias {
                if enable {
                    key.enable();
                } else {
                    key.disable(crate::pool::DisableReason::Operator);
                }
                tracing::warn!(key = %alias, enabled = enable, "Key state changed by an operator");
                state.scheduler().poke(provider);
                let state = if key.is_enabled() { "active" } else { "disabled" };
                return Json(serde_json::json!({ "alias": alias, "state": state })).into_response();
            }
        }
    }
    ProxyError::NotFound { path: format!("/admin/keys/{alias}") }.into_response()
}
