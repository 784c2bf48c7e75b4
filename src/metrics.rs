//! Prometheus metrics: one owned registry in the app state (no globals), `keyrelay_` prefix, base
//! units, and bounded labels only (model names from a capped set, account and key aliases from
//! config, status codes, reasons). Never a key.
//!
//! Counters and histograms are updated on the request path; gauges describing state (queue depth,
//! key states) are read from the scheduler and pool when `/metrics` is scraped.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::pool::Pool;
use crate::scheduler::Scheduler;

/// The OpenMetrics content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Distinct model names kept as label values; others are reported as `other`.
const MAX_MODEL_LABELS: usize = 64;

/// Labels of a client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The OpenAI route (`/v1/chat/completions`…; `other` for the rest).
    pub route: &'static str,
    /// Model (bounded).
    pub model: String,
    /// Client name (`anonymous` when keyrelay runs without client keys).
    pub client: String,
    /// HTTP status.
    pub status: u16,
}

/// Labels of token counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Client name.
    pub client: String,
    /// Model (bounded).
    pub model: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

/// Labels of a client quota rejection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// Client name.
    pub client: String,
    /// `rpm`, `rpd`, `tpm`, `tpd` or `concurrency`.
    pub dimension: &'static str,
}

/// Labels of what keyrelay knows about an account's limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeadroomLabels {
    /// Provider name.
    pub provider: String,
    /// Account name.
    pub account: String,
    /// Model (bounded).
    pub model: String,
    /// `rpm`, `rpd`, `tpm` or `tpd`.
    pub dimension: &'static str,
}

/// Labels naming a model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model (bounded).
    pub model: String,
}

/// Labels of a queue shed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// Model (bounded).
    pub model: String,
    /// `deadline`, `queue_full`, `no_usable_key` or `too_large`.
    pub reason: &'static str,
}

/// Labels of an upstream answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Provider name.
    pub provider: String,
    /// Account name.
    pub account: String,
    /// Key alias.
    pub key: String,
    /// HTTP status, or 0 when no answer came (connect error, timeout).
    pub status: u16,
}

/// Labels of an upstream rate-limit event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// Account name.
    pub account: String,
    /// Model (bounded).
    pub model: String,
    /// `rpm`, `rpd`, `tpm`, `tpd` or `unknown`.
    pub dimension: &'static str,
}

/// Labels of a retry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// `rate_limited`, `key_disabled` or `transient`.
    pub reason: &'static str,
}

/// Labels of a lane gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    /// Provider name.
    pub provider: String,
    /// Model (bounded).
    pub model: String,
}

/// Labels of a key-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// Provider name.
    pub provider: String,
    /// Account name.
    pub account: String,
    /// Key alias.
    pub key: String,
    /// `active` or `disabled`.
    pub state: &'static str,
}

/// Every metric keyrelay exports.
pub struct Metrics {
    registry: Registry,
    models: Mutex<HashSet<String>>,
    /// `keyrelay_requests_total`
    pub requests: Family<RequestLabels, Counter>,
    /// `keyrelay_request_duration_seconds`: until the last byte of the answer.
    pub request_duration: Family<ModelLabels, Histogram>,
    /// `keyrelay_time_to_first_byte_seconds`: until the response head is sent.
    pub time_to_first_byte: Family<ModelLabels, Histogram>,
    /// `keyrelay_tokens_total`: usage the providers reported.
    pub tokens: Family<TokenLabels, Counter>,
    /// `keyrelay_client_quota_rejections_total`
    pub quota_rejections: Family<QuotaLabels, Counter>,
    /// `keyrelay_queued_requests_total`: requests that had to wait for capacity (each one a 429 a
    /// plain proxy would have passed on).
    pub queued: Family<ModelLabels, Counter>,
    /// `keyrelay_queue_wait_seconds`
    pub queue_wait: Family<ModelLabels, Histogram>,
    /// `keyrelay_queue_shed_total`
    pub shed: Family<ShedLabels, Counter>,
    /// `keyrelay_upstream_responses_total`
    pub upstream_responses: Family<UpstreamLabels, Counter>,
    /// `keyrelay_upstream_latency_seconds`: send until response head, per attempt.
    pub upstream_latency: Family<ModelLabels, Histogram>,
    /// `keyrelay_upstream_rate_limits_total`
    pub rate_limits: Family<RateLimitLabels, Counter>,
    /// `keyrelay_retries_total`
    pub retries: Family<RetryLabels, Counter>,
    queue_depth: Family<LaneLabels, Gauge>,
    key_state: Family<KeyLabels, Gauge>,
    upstream_limit: Family<HeadroomLabels, Gauge>,
    upstream_remaining: Family<HeadroomLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// Registers every metric in a fresh registry; `models` are the configured model names,
    /// always kept as label values.
    pub fn new(models: impl IntoIterator<Item = String>) -> Self {
        let mut registry = Registry::with_prefix("keyrelay");
        let metrics = Self {
            models: Mutex::new(models.into_iter().collect()),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            time_to_first_byte: Family::new_with_constructor(latency_histogram),
            tokens: Family::default(),
            quota_rejections: Family::default(),
            queued: Family::default(),
            upstream_limit: Family::default(),
            upstream_remaining: Family::default(),
            queue_wait: Family::new_with_constructor(latency_histogram),
            shed: Family::default(),
            upstream_responses: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            rate_limits: Family::default(),
            retries: Family::default(),
            queue_depth: Family::default(),
            key_state: Family::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Client requests answered", metrics.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request to the last byte of the answer",
            metrics.request_duration.clone(),
        );
        registry.register(
            "time_to_first_byte_seconds",
            "Time from request to response head",
            metrics.time_to_first_byte.clone(),
        );
        registry.register(
            "tokens",
            "Tokens providers reported, by client and model",
            metrics.tokens.clone(),
        );
        registry.register(
            "client_quota_rejections",
            "Requests refused for being over a client quota",
            metrics.quota_rejections.clone(),
        );
        registry.register(
            "queued_requests",
            "Requests that waited for capacity instead of failing",
            metrics.queued.clone(),
        );
        registry.register(
            "upstream_limit",
            "Known limit per account, model and dimension",
            metrics.upstream_limit.clone(),
        );
        registry.register(
            "upstream_remaining",
            "Headroom keyrelay sees per account, model and dimension",
            metrics.upstream_remaining.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time requests waited for upstream capacity",
            metrics.queue_wait.clone(),
        );
        registry.register("queue_shed", "Requests refused by the scheduler", metrics.shed.clone());
        registry.register(
            "queue_depth",
            "Requests waiting for capacity",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "upstream_responses",
            "Upstream answers per key",
            metrics.upstream_responses.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from sending upstream to its response head",
            metrics.upstream_latency.clone(),
        );
        registry.register(
            "upstream_rate_limits",
            "Upstream 429s by dimension",
            metrics.rate_limits.clone(),
        );
        registry.register(
            "retries",
            "Upstream attempts repeated, by reason",
            metrics.retries.clone(),
        );
        registry.register("key_state", "1 for each key's current state", metrics.key_state.clone());
        registry.register(
            "build",
            "keyrelay build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self { registry, ..metrics }
    }

    /// Keeps `models` (a reloaded config's names) as label values.
    pub fn add_models(&self, models: impl IntoIterator<Item = String>) {
        self.models.lock().unwrap_or_else(|e| e.into_inner()).extend(models);
    }

    /// The route label of a path after `/v1`.
    pub fn route_label(path: &str) -> &'static str {
        const ROUTES: [&str; 13] = [
            "/chat/completions",
            "/completions",
            "/embeddings",
            "/audio/transcriptions",
            "/audio/translations",
            "/audio/speech",
            "/models",
            "/files",
            "/batches",
            "/responses",
            "/moderations",
            "/images/generations",
            "/rerank",
        ];
        ROUTES
            .iter()
            .find(|r| {
                path.strip_prefix(**r).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map_or("other", |r| r)
    }

    /// `model` as a label value: configured and early-seen names as they are, the rest `other`.
    pub fn model_label(&self, model: &str) -> String {
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if models.contains(model) {
            return model.to_owned();
        }
        if models.len() < MAX_MODEL_LABELS {
            models.insert(model.to_owned());
            return model.to_owned();
        }
        "other".to_owned()
    }

    /// The OpenMetrics text of every metric, with state gauges read now.
    pub fn render(&self, pool: &Pool, scheduler: &Scheduler) -> String {
        self.queue_depth.clear();
        for (provider, model, depth) in scheduler.depths() {
            let labels = LaneLabels { provider, model: self.model_label(&model) };
            self.queue_depth.get_or_create(&labels).inc_by(depth as i64);
        }
        self.upstream_limit.clear();
        self.upstream_remaining.clear();
        for known in scheduler.headroom() {
            let labels = HeadroomLabels {
                model: self.model_label(&known.model),
                provider: known.provider,
                account: known.account,
                dimension: known.dimension.as_str(),
            };
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            self.upstream_limit.get_or_create(&labels).set(gauge(known.limit));
            self.upstream_remaining.get_or_create(&labels).set(gauge(known.remaining));
        }
        for provider in pool.providers() {
            for account in provider.accounts() {
                for key in account.keys() {
                    for (state, on) in
                        [("active", key.is_enabled()), ("disabled", !key.is_enabled())]
                    {
                        let labels = KeyLabels {
                            provider: provider.name.clone(),
                            account: account.name.clone(),
                            key: key.alias.clone(),
                            state,
                        };
                        self.key_state.get_or_create(&labels).set(i64::from(on));
                    }
                }
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_bounded_labels() {
        assert_eq!(Metrics::route_label("/chat/completions"), "/chat/completions");
        assert_eq!(Metrics::route_label("/models/llama"), "/models");
        assert_eq!(Metrics::route_label("/modelsx"), "other");
        assert_eq!(Metrics::route_label("/anything/else"), "other");
    }
}
