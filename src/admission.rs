//! Client quotas: each client's requests and tokens per minute and per day (over all models and
//! per model) and its concurrent requests, counted in the same sliding windows as upstream
//! budgets. A request reserves its estimated cost all or nothing (a refused request consumes no
//! quota), and its [`Ticket`] settles the tokens with the real usage when the answer is done.
//!
//! Over quota, a `reject` client gets a 429 at once; a `queue` client waits until the quota
//! allows it, woken when its windows free up or one of its requests finishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::config::{ClientConfig, Quota, QuotaPolicy};
use crate::duration;
use crate::limits::{ChargeId, Cost, Dimension, REQUESTS, SlidingWindow, TOKENS, Windows};
use crate::scheduler::{ClientId, Usage};

/// A configured client and its quota state.
pub struct ClientState {
    /// The client's name (fixed for its life; a reload matches clients by name).
    pub name: String,
    config: RwLock<Arc<ClientConfig>>,
    /// Fair-share identity.
    pub id: ClientId,
    windows: Windows,
    usage: Mutex<QuotaUsage>,
    finished: Notify,
}

impl std::fmt::Debug for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientState").field("name", &self.name).finish_non_exhaustive()
    }
}

struct QuotaUsage {
    all: [SlidingWindow; Dimension::COUNT],
    models: HashMap<String, [SlidingWindow; Dimension::COUNT]>,
    in_flight: u32,
    /// Requests in flight per model.
    model_in_flight: HashMap<String, u32>,
}

/// Which quota a request went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDimension {
    /// A rate dimension.
    Rate(Dimension),
    /// Concurrent requests.
    Concurrency,
}

impl QuotaDimension {
    /// A bounded label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate(dimension) => dimension.as_str(),
            Self::Concurrency => "concurrency",
        }
    }

    /// How the dimension reads in a message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Rate(Dimension::Rpm) => "requests per minute",
            Self::Rate(Dimension::Rpd) => "requests per day",
            Self::Rate(Dimension::Tpm) => "tokens per minute",
            Self::Rate(Dimension::Tpd) => "tokens per day",
            Self::Rate(Dimension::Ash) => "audio seconds per hour",
            Self::Rate(Dimension::Asd) => "audio seconds per day",
            Self::Concurrency => "concurrent requests",
        }
    }
}

/// A request over its client's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The limit hit.
    pub dimension: QuotaDimension,
    /// The model whose own quota it is, if it is a per-model quota.
    pub model: Option<String>,
    /// The quota.
    pub limit: u64,
    /// Used inside the window now.
    pub used: u64,
    /// What the request asked for.
    pub requested: u64,
    /// When it would fit; `None` if it never can (larger than the quota), or, for concurrency,
    /// when unknown.
    pub wait: Option<Duration>,
}

/// One quota's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUse {
    /// The model of a per-model quota.
    pub model: Option<String>,
    /// The dimension.
    pub dimension: QuotaDimension,
    /// The quota.
    pub limit: u64,
    /// Used now (in the window, or in flight).
    pub used: u64,
}

/// Quota a request holds until its answer is done.
pub struct Ticket {
    client: Arc<ClientState>,
    model: String,
    all: [ChargeId; Dimension::COUNT],
    per_model: Option<[ChargeId; Dimension::COUNT]>,
    cost: Cost,
}

impl ClientState {
    /// A client's state with empty windows.
    pub fn new(config: ClientConfig, windows: Windows) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        ("client", &config.name).hash(&mut hasher);
        let usage = QuotaUsage {
            all: empty(windows),
            models: HashMap::new(),
            in_flight: 0,
            model_in_flight: HashMap::new(),
        };
        Self {
            id: hasher.finish(),
            name: config.name.clone(),
            config: RwLock::new(Arc::new(config)),
            windows,
            usage: Mutex::new(usage),
            finished: Notify::new(),
        }
    }

    /// The client's current configuration (replaced by a reload; usage carries over).
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies a reloaded configuration of the same client.
    pub fn reconfigure(&self, config: ClientConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        self.finished.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, QuotaUsage> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the client may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.config().models.as_ref().is_none_or(|patterns| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => p == model,
            })
        })
    }

    /// Reserves `cost` against every quota, or says which one it exceeds (taking nothing).
    pub fn try_admit(
        self: &Arc<Self>,
        model: &str,
        cost: Cost,
        now: Instant,
    ) -> Result<Ticket, Exceeded> {
        let config = self.config();
        let mut usage = self.lock();
        let model_quota = config.model_quotas.get(model);
        let in_model = usage.model_in_flight.get(model).copied().unwrap_or(0);
        let caps = [
            (config.quota.concurrency, usage.in_flight, None),
            (model_quota.and_then(|q| q.concurrency), in_model, Some(model.to_owned())),
        ];
        for (limit, used, scope) in caps {
            if let Some(limit) = limit
                && used >= limit
            {
                return Err(Exceeded {
                    dimension: QuotaDimension::Concurrency,
                    model: scope,
                    limit: u64::from(limit),
                    used: u64::from(used),
                    requested: 1,
                    wait: None,
                });
            }
        }
        check(&config.quota, &mut usage.all, cost, now, None)?;
        if let Some(quota) = model_quota {
            let windows =
                usage.models.entry(model.to_owned()).or_insert_with(|| empty(self.windows));
            check(quota, windows, cost, now, Some(model))?;
        }
        let all = Dimension::ALL.map(|d| usage.all[d.index()].charge(cost.of(d), now));
        let per_model = model_quota.and_then(|_| {
            let windows = usage.models.get_mut(model)?;
            Some(Dimension::ALL.map(|d| windows[d.index()].charge(cost.of(d), now)))
        });
        usage.in_flight += 1;
        *usage.model_in_flight.entry(model.to_owned()).or_insert(0) += 1;
        Ok(Ticket { client: Arc::clone(self), model: model.to_owned(), all, per_model, cost })
    }

    /// Admits `cost`, waiting (policy `queue`) until `deadline` for the quota to allow it.
    pub async fn admit(
        self: &Arc<Self>,
        model: &str,
        cost: Cost,
        deadline: Instant,
    ) -> Result<Ticket, Exceeded> {
        loop {
            // Registered before looking, so a request finishing in between is not missed.
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let now = Instant::now();
            let exceeded = match self.try_admit(model, cost, now) {
                Ok(ticket) => return Ok(ticket),
                Err(exceeded) => exceeded,
            };
            let never =
                exceeded.wait.is_none() && exceeded.dimension != QuotaDimension::Concurrency;
            let until = exceeded.wait.map_or(deadline, |wait| now + wait);
            if self.config().policy == QuotaPolicy::Reject || never || until > deadline {
                return Err(exceeded);
            }
            // Woken by the window freeing up, or by one of the client's requests finishing.
            tokio::select! {
                () = sleep_until(until) => {}
                () = finished => {}
            }
        }
    }

    /// Requests in flight, and the standing of every quota over all models and per model, for the
    /// admin API.
    pub fn usage_view(&self) -> (u32, Vec<QuotaUse>) {
        let config = self.config();
        let mut usage = self.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        let quotas = std::iter::once((None, &config.quota))
            .chain(config.model_quotas.iter().map(|(m, q)| (Some(m.clone()), q)));
        for (model, quota) in quotas {
            for dimension in Dimension::ALL {
                let Some(limit) = quota.limits[dimension.index()] else { continue };
                let used = match &model {
                    None => usage.all[dimension.index()].used(now),
                    Some(m) => {
                        usage.models.get_mut(m).map_or(0, |w| w[dimension.index()].used(now))
                    }
                };
                out.push(QuotaUse {
                    model: model.clone(),
                    dimension: QuotaDimension::Rate(dimension),
                    limit,
                    used,
                });
            }
            if let Some(limit) = quota.concurrency {
                let in_flight = match &model {
                    None => u64::from(usage.in_flight),
                    Some(m) => u64::from(usage.model_in_flight.get(m).copied().unwrap_or(0)),
                };
                let limit = u64::from(limit);
                out.push(QuotaUse {
                    model: model.clone(),
                    dimension: QuotaDimension::Concurrency,
                    limit,
                    used: in_flight,
                });
            }
        }
        (usage.in_flight, out)
    }

    /// The client's daily windows (over all models, and per model), for the state file.
    pub fn export(&self, mut save: impl FnMut(Option<&str>, Dimension, Vec<(Duration, u64)>)) {
        let mut usage = self.lock();
        let now = Instant::now();
        for dimension in Dimension::ALL.into_iter().filter(|d| d.is_daily()) {
            let entries = usage.all[dimension.index()].export(now);
            if !entries.is_empty() {
                save(None, dimension, entries);
            }
            for (model, windows) in &mut usage.models {
                let entries = windows[dimension.index()].export(now);
                if !entries.is_empty() {
                    save(Some(model), dimension, entries);
                }
            }
        }
    }

    /// Restores a daily window saved before a restart.
    pub fn import(&self, model: Option<&str>, dimension: Dimension, entries: &[(Duration, u64)]) {
        let mut usage = self.lock();
        let now = Instant::now();
        let windows = match model {
            None => &mut usage.all,
            Some(model) => {
                usage.models.entry(model.to_owned()).or_insert_with(|| empty(self.windows))
            }
        };
        windows[dimension.index()].import(entries, now);
    }

    /// The client's standing in OpenAI's header format: the per-minute quota where set, else the
    /// per-day one, for requests and for tokens.
    pub fn rate_limit_headers(&self, headers: &mut HeaderMap) {
        let config = self.config();
        let mut usage = self.lock();
        let now = Instant::now();
        for (family, minute, day) in
            [(REQUESTS, Dimension::Rpm, Dimension::Rpd), (TOKENS, Dimension::Tpm, Dimension::Tpd)]
        {
            let Some((dimension, limit)) = [minute, day]
                .into_iter()
                .find_map(|d| config.quota.limits[d.index()].map(|limit| (d, limit)))
            else {
                continue;
            };
            let window = &mut usage.all[dimension.index()];
            let remaining = limit.saturating_sub(window.used(now));
            let reset = window.time_until_fits(limit, limit, now).unwrap_or_default();
            let [limit_name, remaining_name, reset_name] = family;
            headers.insert(limit_name, HeaderValue::from(limit));
            headers.insert(remaining_name, HeaderValue::from(remaining));
            if let Ok(reset) = HeaderValue::try_from(duration::format(reset)) {
                headers.insert(reset_name, reset);
            }
        }
    }
}

fn empty(windows: Windows) -> [SlidingWindow; Dimension::COUNT] {
    Dimension::ALL.map(|d| SlidingWindow::new(windows.of(d)))
}

/// Whether `cost` fits every limit of `quota` now.
fn check(
    quota: &Quota,
    windows: &mut [SlidingWindow; Dimension::COUNT],
    cost: Cost,
    now: Instant,
    model: Option<&str>,
) -> Result<(), Exceeded> {
    for dimension in Dimension::ALL {
        let Some(limit) = quota.limits[dimension.index()] else { continue };
        let window = &mut windows[dimension.index()];
        let requested = cost.of(dimension);
        let wait = window.time_until_fits(requested, limit, now);
        if wait != Some(Duration::ZERO) {
            return Err(Exceeded {
                dimension: QuotaDimension::Rate(dimension),
                model: model.map(str::to_owned),
                limit,
                used: window.used(now),
                requested,
                wait,
            });
        }
    }
    Ok(())
}

impl Ticket {
    /// The answer is done: its tokens are what the provider reported.
    pub fn settle(self, usage: Usage) {
        self.settle_tokens(usage.prompt_tokens + usage.completion_tokens);
    }

    /// No tokens were used (an error answer).
    pub fn refund_tokens(self) {
        self.settle_tokens(0);
    }

    /// Nothing was used: keyrelay answered the request itself without sending it upstream.
    pub fn refund(self) {
        let mut usage = self.client.lock();
        for dimension in Dimension::ALL {
            usage.all[dimension.index()].settle(self.all[dimension.index()], 0);
        }
        if let (Some(charges), Some(windows)) = (self.per_model, usage.models.get_mut(&self.model))
        {
            for dimension in Dimension::ALL {
                windows[dimension.index()].settle(charges[dimension.index()], 0);
            }
        }
    }

    fn settle_tokens(&self, tokens: u64) {
        let used = Cost { tokens, ..self.cost };
        let mut usage = self.client.lock();
        for dimension in Dimension::ALL {
            usage.all[dimension.index()].settle(self.all[dimension.index()], used.of(dimension));
        }
        if let (Some(charges), Some(windows)) = (self.per_model, usage.models.get_mut(&self.model))
        {
            for dimension in Dimension::ALL {
                windows[dimension.index()].settle(charges[dimension.index()], used.of(dimension));
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut usage = self.client.lock();
        usage.in_flight -= 1;
        if let Some(count) = usage.model_in_flight.get_mut(&self.model) {
            *count -= 1;
            if *count == 0 {
                usage.model_in_flight.remove(&self.model);
            }
        }
        drop(usage);
        self.client.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
