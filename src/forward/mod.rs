//! Forwarding: wait for capacity from the scheduler, send with that account's key, classify the
//! answer, and either relay it or rotate / back off and try again while nothing has been sent to
//! the client.
//!
//! ```text
//! lane.acquire ─► send ─► 2xx ─────────────► relay chunk by chunk, settle with real usage
//!      ▲                ├► 429 ─────────────► cool account for model, learn limit ─┐
//!      │                ├► dead key ────────► disable key ─────────────────────────┤
//!      │                ├► 5xx/498/timeout ─► backoff (bounded) ───────────────────┤
//!      └────────────────┴──────────────────────────────────────────────────────────┘
//!                       └► other ───────────► relay as is
//! ```

mod backoff;
pub mod classify;
mod completion;
pub mod demand;
mod headers;
mod relay;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::time::{Instant, timeout_at};

use crate::admission::ClientState;
use crate::app::AppState;
use crate::error::{ProxyError, Shed};
use crate::limits::{Cost, Dimension, read_headers};
use crate::metrics::{
    Metrics, ModelLabels, QuotaLabels, RateLimitLabels, RequestLabels, RetryLabels, ShedLabels,
    UpstreamLabels,
};
use crate::openai::RequestPeek;
use crate::pool::{Account, Key, Provider};
use crate::scheduler::{Lane, Refusal, Reservation};
use classify::Verdict;
pub(crate) use completion::Completion;
use relay::Relay;
use usage::UsageTap;

/// How much of an error answer is read to classify it; the rest is streamed on if relayed.
const ERROR_PREFIX_LIMIT: usize = 64 * 1024;

/// Time the request spent waiting for capacity, on every answer.
pub const QUEUE_MS_HEADER: &str = "x-keyrelay-queue-ms";

/// A client request, read and peeked, ready to forward.
#[derive(Debug)]
pub struct ProxyRequest {
    /// HTTP method.
    pub method: Method,
    /// Path and query after the client's `/v1` prefix (`/chat/completions?x=1`).
    pub path_and_query: String,
    /// The client's headers.
    pub headers: HeaderMap,
    /// The original body bytes, forwarded as they are.
    pub body: Bytes,
    /// What was read from the body.
    pub peek: RequestPeek,
    /// The authenticated client (`None` in open mode).
    pub client: Option<Arc<ClientState>>,
}

/// Builds the shared upstream HTTP client (pooled connections, HTTP/2 where offered).
pub fn client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Why an attempt did not produce the client's answer.
enum Failure {
    /// A transient error answer (5xx, 498), relayed unchanged if retries run out.
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Unreachable,
    Timeout,
}

/// What one attempt through one key led to.
enum Attempt {
    /// The client's answer.
    Done(Response),
    /// The key or its account is out of play now; another may serve at once.
    Rotate,
    /// A transient failure: back off, then try again.
    Failed(Failure),
}

/// Forwards `request` and returns the client's answer, with the time it queued in
/// `x-keyrelay-queue-ms`.
pub async fn forward(state: &AppState, request: ProxyRequest) -> Response {
    let started = Instant::now();
    let metrics = state.metrics();
    let model = metrics.model_label(request.peek.model.as_deref().unwrap_or("none"));
    let client = request.client.as_ref().map_or(ANONYMOUS, |c| c.name.as_str()).to_owned();
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    let route = Metrics::route_label(path);
    let request_id =
        request.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    let mut completion = Some(Completion::new(state, request_id, &model, &client, started));
    let mut queued = Duration::ZERO;
    let outcome = forward_with_retries(state, &request, &model, &mut queued, &mut completion).await;
    let mut response = match outcome {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ProxyError::NoCapacity { .. } | ProxyError::TooLarge { .. }) {
                let labels = ShedLabels { model: model.clone(), reason: error.kind() };
                metrics.shed.get_or_create(&labels).inc();
            }
            if let ProxyError::QuotaExceeded { exceeded, .. } = &error {
                let labels =
                    QuotaLabels { client: client.clone(), dimension: exceeded.dimension.as_str() };
                metrics.quota_rejections.get_or_create(&labels).inc();
            }
            error.into_response()
        }
    };
    set_queue_ms(&mut response, queued);
    if let Some(client) = &request.client {
        client.rate_limit_headers(response.headers_mut());
    }
    let status = response.status().as_u16();
    if let Some(completion) = completion.as_mut() {
        completion.answered(status, queued);
    }
    metrics
        .requests
        .get_or_create(&RequestLabels { route, model: model.clone(), client, status })
        .inc();
    let labels = ModelLabels { model };
    metrics.time_to_first_byte.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    if queued > QUEUED {
        metrics.queued.get_or_create(&labels).inc();
    }
    // An answer not relayed as a stream is complete once its head is out.
    if let Some(completion) = completion {
        completion.done(None, false);
    }
    response
}

/// The client label while keyrelay runs without client keys.
const ANONYMOUS: &str = "anonymous";

/// A request that waited longer than this for capacity counts as queued.
const QUEUED: Duration = Duration::from_millis(1);

/// Sets the queue-time header.
pub fn set_queue_ms(response: &mut Response, queued: Duration) {
    let millis = u64::try_from(queued.as_millis()).unwrap_or(u64::MAX);
    response.headers_mut().insert(QUEUE_MS_HEADER, HeaderValue::from(millis));
}

async fn forward_with_retries(
    state: &AppState,
    request: &ProxyRequest,
    model_label: &str,
    queued: &mut Duration,
    completion: &mut Option<Completion>,
) -> Result<Response, ProxyError> {
    let model = request.peek.model.as_deref();
    let pool = state.pool();
    let provider = pool.route(model);
    let lane = state.scheduler().lane(provider, model.unwrap_or_default());
    let retry = &state.config().retry;
    let deadline = Instant::now() + state.config().server.request_timeout;
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    let demand = demand::demand(
        provider,
        &state.config().queue,
        request.client.as_deref(),
        path,
        &request.headers,
        &request.peek,
        deadline,
    );
    let (body, drops_usage_events) =
        usage::ask_for_stream_usage(provider.kind, path, &request.peek, &request.body);
    let upstream = Upstream {
        state,
        provider,
        lane: &lane,
        request,
        model_label,
        headers: headers::upstream_request(&request.headers),
        body,
        drops_usage_events,
        deadline,
    };
    if let Some(client) = &request.client {
        let tokens = demand.prompt_estimate.saturating_add(demand.output_budget);
        let cost = Cost { requests: 1, tokens, audio_seconds: demand.cost.audio_seconds };
        let waiting = Instant::now();
        let admitted = client.admit(model.unwrap_or_default(), cost, demand.deadline).await;
        *queued += waiting.elapsed();
        let ticket = admitted.map_err(|exceeded| ProxyError::QuotaExceeded {
            client: client.name.clone(),
            exceeded,
        })?;
        if let Some(completion) = completion.as_mut() {
            completion.hold(ticket);
        }
    }
    // Rotation is bounded too, so an upstream that rejects every key without a wait still ends.
    let max_attempts = provider.key_count() as u32 + retry.max_retries + 1;
    let (mut attempts, mut retries) = (0u32, 0u32);
    loop {
        attempts += 1;
        let waiting = Instant::now();
        let granted = lane.acquire(demand).await;
        *queued += waiting.elapsed();
        let reservation = granted.map_err(|refusal| refused(refusal, model))?;
        let labels = ModelLabels { model: model_label.to_owned() };
        state.metrics().queue_wait.get_or_create(&labels).observe(waiting.elapsed().as_secs_f64());
        if let Some(completion) = completion.as_mut() {
            completion.queued(*queued);
        }
        let failure = match upstream.attempt(reservation, completion).await {
            Attempt::Done(response) => return Ok(response),
            Attempt::Rotate if attempts < max_attempts => continue,
            Attempt::Rotate => {
                let model = model.map(str::to_owned);
                let wait = lane.expected_wait(&demand);
                return Err(ProxyError::NoCapacity { model, wait, shed: Shed::Deadline });
            }
            Attempt::Failed(failure) => failure,
        };
        retries += 1;
        let pause = backoff::delay(retry, retries);
        if retries > retry.max_retries
            || attempts >= max_attempts
            || Instant::now() + pause >= deadline
        {
            return match failure {
                Failure::Answer { status, headers, body } => {
                    Ok(answer_response(status, headers, body, stream::empty().boxed()))
                }
                Failure::Unreachable => Err(ProxyError::UpstreamUnreachable { attempts }),
                Failure::Timeout => Err(ProxyError::UpstreamTimeout { attempts }),
            };
        }
        state.metrics().retries.get_or_create(&RetryLabels { reason: "transient" }).inc();
        tracing::debug!(provider = %provider.name, retry = retries, pause_ms = pause.as_millis() as u64, "Transient upstream failure; backing off");
        tokio::time::sleep(pause).await;
    }
}

/// The client's answer when the scheduler refuses a request.
fn refused(refusal: Refusal, model: Option<&str>) -> ProxyError {
    let model = model.map(str::to_owned);
    match refusal {
        Refusal::TooLarge { dimension, limit, needed } => {
            ProxyError::TooLarge { model, dimension, limit, needed }
        }
        Refusal::NoUsableKey => {
            ProxyError::NoCapacity { model, wait: None, shed: Shed::NoUsableKey }
        }
        Refusal::QueueFull { retry_after } => {
            ProxyError::NoCapacity { model, wait: retry_after, shed: Shed::QueueFull }
        }
        Refusal::Deadline { retry_after } => {
            ProxyError::NoCapacity { model, wait: retry_after, shed: Shed::Deadline }
        }
    }
}

/// One request on its way upstream: everything an attempt needs.
struct Upstream<'a> {
    state: &'a AppState,
    provider: &'a Arc<Provider>,
    lane: &'a Arc<Lane>,
    request: &'a ProxyRequest,
    model_label: &'a str,
    headers: HeaderMap,
    /// The body as sent upstream (the client's bytes, unless stream usage was asked for).
    body: Bytes,
    drops_usage_events: bool,
    deadline: Instant,
}

impl Upstream<'_> {
    /// Sends the request once through the reserved key and decides what its answer means.
    async fn attempt(
        &self,
        reservation: Reservation,
        completion: &mut Option<Completion>,
    ) -> Attempt {
        // The reservation's provider, not the routed one: a reload may have replaced it since.
        let provider = Arc::clone(reservation.provider());
        let account = &provider.accounts()[reservation.account()];
        let key = account.key(reservation.key());
        let url = format!("{}{}", provider.base_url, self.request.path_and_query);
        let send = self
            .state
            .client()
            .request(self.request.method.clone(), url)
            .headers(self.headers.clone())
            .header(header::AUTHORIZATION, key.secret.authorization().clone())
            .body(self.body.clone())
            .send();
        let sent = Instant::now();
        let head_deadline = self.deadline.min(sent + provider.response_timeout);
        let outcome = timeout_at(head_deadline, send).await;
        self.record_upstream(account, key, &outcome, sent);
        if let Some(completion) = completion.as_mut() {
            completion.sent_through(&key.alias, sent.elapsed());
        }
        let answer = match outcome {
            // The provider may have counted a request that timed out: the estimate stands.
            Err(_) => return Attempt::Failed(Failure::Timeout),
            Ok(Err(error)) if error.is_timeout() => return Attempt::Failed(Failure::Timeout),
            Ok(Err(error)) => {
                tracing::debug!(provider = %provider.name, account = %account.name, error = %error.without_url(), "Upstream request failed");
                reservation.refund();
                return Attempt::Failed(Failure::Unreachable);
            }
            Ok(Ok(answer)) => answer,
        };
        reservation.answered();
        let reports = read_headers(provider.kind, answer.headers());
        self.lane.sync(reservation.account_ref(), &reports);
        if answer.status().is_success() {
            let drops = self.drops_usage_events;
            if let Some(completion) = completion.as_mut() {
                completion.answered(answer.status().as_u16(), Duration::ZERO);
            }
            let tap = UsageTap::new(reservation, completion.take());
            return Attempt::Done(relay(answer, self.request.peek.stream, tap, drops));
        }
        let (status, headers, prefix, rest) = read_prefix(answer, self.deadline).await;
        match classify::classify(status, &headers, &prefix) {
            Verdict::RateLimited { wait, limit, dimension } => {
                self.lane.rate_limited(reservation.account_ref(), wait, limit);
                reservation.refund();
                let metrics = self.state.metrics();
                let labels = RateLimitLabels {
                    account: account.name.clone(),
                    model: self.model_label.to_owned(),
                    dimension: dimension.map_or("unknown", Dimension::as_str),
                };
                metrics.rate_limits.get_or_create(&labels).inc();
                metrics.retries.get_or_create(&RetryLabels { reason: "rate_limited" }).inc();
                tracing::info!(provider = %provider.name, account = %account.name, key = %key.alias, model = self.lane.model(), dimension = dimension.map(|d| d.as_str()), wait_ms = wait.as_millis() as u64, "Upstream rate limit; account cooling, rotating");
                Attempt::Rotate
            }
            Verdict::KeyDead(reason) => {
                reservation.refund();
                let labels = RetryLabels { reason: "key_disabled" };
                self.state.metrics().retries.get_or_create(&labels).inc();
                if key.disable(reason) {
                    tracing::warn!(provider = %provider.name, account = %account.name, key = %key.alias, reason = reason.as_str(), status = status.as_u16(), "Upstream key disabled");
                    self.state.scheduler().poke(&provider);
                }
                Attempt::Rotate
            }
            Verdict::Transient => {
                reservation.refund();
                Attempt::Failed(Failure::Answer { status, headers, body: prefix })
            }
            Verdict::Success | Verdict::Final => {
                reservation.refund_tokens();
                Attempt::Done(answer_response(status, headers, prefix, rest))
            }
        }
    }
}

impl Upstream<'_> {
    /// Counts an upstream answer (status 0 when none came) and its latency.
    fn record_upstream<T>(
        &self,
        account: &Account,
        key: &Key,
        outcome: &Result<reqwest::Result<reqwest::Response>, T>,
        sent: Instant,
    ) {
        let metrics = self.state.metrics();
        let status = match outcome {
            Ok(Ok(answer)) => answer.status().as_u16(),
            _ => 0,
        };
        let labels = UpstreamLabels {
            provider: self.provider.name.clone(),
            account: account.name.clone(),
            key: key.alias.clone(),
            status,
        };
        metrics.upstream_responses.get_or_create(&labels).inc();
        let labels = ModelLabels { model: self.model_label.to_owned() };
        metrics.upstream_latency.get_or_create(&labels).observe(sent.elapsed().as_secs_f64());
    }
}

/// Reads up to [`ERROR_PREFIX_LIMIT`] of an answer body (for classification) within `deadline`.
async fn read_prefix(
    answer: reqwest::Response,
    deadline: Instant,
) -> (StatusCode, HeaderMap, Bytes, BoxStream<'static, reqwest::Result<Bytes>>) {
    let status = answer.status();
    let headers = answer.headers().clone();
    let mut body = answer.bytes_stream().boxed();
    let mut prefix = BytesMut::new();
    while prefix.len() < ERROR_PREFIX_LIMIT {
        match timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => prefix.extend_from_slice(&chunk),
            Ok(None) => return (status, headers, prefix.freeze(), stream::empty().boxed()),
            // A body that fails or stalls is classified on what arrived; nothing more follows.
            Ok(Some(Err(_))) | Err(_) => {
                return (status, headers, prefix.freeze(), stream::empty().boxed());
            }
        }
    }
    (status, headers, prefix.freeze(), body)
}

/// A successful answer, relayed as it streams; its usage settles the reservation at the end.
fn relay(
    answer: reqwest::Response,
    requested_stream: bool,
    tap: UsageTap,
    drop_usage_events: bool,
) -> Response {
    let sse = requested_stream
        || answer
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    let status = answer.status();
    let headers = headers::client_response(answer.headers().clone(), sse);
    let tap = tap.sse(sse);
    let relay = Relay::new(answer.bytes_stream().boxed(), sse, tap, drop_usage_events && sse);
    let body = Body::from_stream(relay);
    build(status, headers, body)
}

/// An upstream error answer relayed unchanged: the prefix read for classification, then the rest.
fn answer_response(
    status: StatusCode,
    headers: HeaderMap,
    prefix: Bytes,
    rest: BoxStream<'static, reqwest::Result<Bytes>>,
) -> Response {
    let headers = headers::client_response(headers, false);
    let body = stream::once(async move { Ok(prefix) }).chain(rest).map_err(std::io::Error::other);
    build(status, headers, Body::from_stream(body))
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
