//! Scheduling: which account a request goes through and when.
//!
//! Each (provider, model) is a [`Lane`] holding every account's budget for that model and the
//! requests waiting for one. A request asks its lane for a [`Reservation`]; it gets one at once if
//! an account has room for its cost and nobody is queued ahead of it, or waits in a fair queue
//! (priority, then fair share between clients, then arrival) until capacity appears, its deadline
//! passes, or its client goes away.

mod budget;
mod lane;
mod queue;
mod reservation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

pub use lane::{AccountRef, Lane};
pub use queue::ClientId;
pub use reservation::{Reservation, Usage};

use crate::config::QueueConfig;
use crate::limits::{Cost, Dimension};
use crate::pool::Provider;
use crate::store::{Charges, State};

/// Past this many lanes, requests for further unknown models share one lane per provider, so a
/// client sending random model names cannot grow memory without bound.
const MAX_LANES: usize = 4096;

/// What a request asks of a lane.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    /// Fair-share identity.
    pub client: ClientId,
    /// Higher is served first.
    pub priority: i32,
    /// Requests and any tokens not derived from the estimate below (filled in by the lane).
    pub cost: Cost,
    /// Raw prompt token estimate (the lane applies its correction).
    pub prompt_estimate: u64,
    /// `n` × the output budget.
    pub output_budget: u64,
    /// When to give up waiting.
    pub deadline: Instant,
}

/// One piece of a lane's state saved across restarts.
pub enum Saved {
    /// A daily window's charges (unix ms, amount).
    Window(Dimension, Charges),
    /// A limit learned from the provider.
    Limit(Dimension, u64),
}

/// One known limit of one account for one model, and what is left of it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headroom {
    /// Provider name.
    pub provider: String,
    /// Model of the lane.
    pub model: String,
    /// Account name.
    pub account: String,
    /// The dimension.
    pub dimension: Dimension,
    /// Its limit.
    pub limit: u64,
    /// What is left inside the window now.
    pub remaining: u64,
}

/// Why a lane did not grant capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The cost exceeds `limit` on `dimension` for every account: waiting never helps.
    TooLarge {
        /// The binding dimension.
        dimension: Dimension,
        /// Its largest limit among the accounts.
        limit: u64,
        /// What the request needs of it.
        needed: u64,
    },
    /// Every key is disabled.
    NoUsableKey,
    /// Too many requests are waiting already.
    QueueFull {
        /// When capacity is expected.
        retry_after: Option<Duration>,
    },
    /// The request's wait limit passed.
    Deadline {
        /// When capacity is expected.
        retry_after: Option<Duration>,
    },
}

/// The result a waiter receives.
pub(crate) type Grant = Result<Reservation, Refusal>;

/// Every lane, created on first use.
pub struct Scheduler {
    config: QueueConfig,
    /// Provider name → model → lane (nested, so a lookup needs no allocation).
    lanes: RwLock<HashMap<String, HashMap<String, Arc<Lane>>>>,
    /// State saved before a restart, applied when its lane is first created.
    restored: Mutex<State>,
    /// The pool of the running configuration: a lane is always created with its provider, even
    /// by a request that started before a reload.
    current: RwLock<Option<Arc<crate::pool::Pool>>>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            lanes: RwLock::new(HashMap::new()),
            restored: Mutex::new(State::default()),
            current: RwLock::new(None),
        }
    }

    /// The lane of `model` at `provider`.
    pub fn lane(&self, provider: &Arc<Provider>, model: &str) -> Arc<Lane> {
        let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) =
            lanes.get(provider.name.as_str()).and_then(|by_model| by_model.get(model))
        {
            return Arc::clone(lane);
        }
        drop(lanes);
        let mut lanes = self.lanes.write().unwrap_or_else(|e| e.into_inner());
        let total: usize = lanes.values().map(HashMap::len).sum();
        let model = if total >= MAX_LANES { "" } else { model };
        let current = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        let provider = current
            .as_ref()
            .and_then(|pool| pool.providers().iter().find(|p| p.name == provider.name).cloned())
            .unwrap_or_else(|| Arc::clone(provider));
        let by_model = lanes.entry(provider.name.clone()).or_default();
        let lane = by_model.entry(model.to_owned()).or_insert_with_key(|model| {
            let lane = Lane::new(provider, model, self.config.max_depth);
            self.apply_restored(&lane);
            lane
        });
        Arc::clone(lane)
    }

    /// Keeps what the state file held for lanes, until each lane is first used.
    pub fn restore(&self, saved: &State) {
        let mut restored = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        restored.account_windows = saved.account_windows.clone();
        restored.learned_limits = saved.learned_limits.clone();
    }

    fn apply_restored(&self, lane: &Arc<Lane>) {
        let restored = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        let (provider, model) = (&lane.provider().name, lane.model());
        let mine = |(p, _, m, _): &(String, String, String, Dimension)| p == provider && m == model;
        let windows = restored.account_windows.iter().filter(|(k, _)| mine(k));
        let limits = restored.learned_limits.iter().filter(|(k, _)| mine(k));
        lane.restore(
            windows.map(|((_, account, _, d), charges)| (account.as_str(), *d, charges)),
            limits.map(|((_, account, _, d), limit)| (account.as_str(), *d, *limit)),
        );
    }

    /// Daily windows and learned limits of every lane, for the state file; lanes not used since
    /// the restart keep what was restored.
    pub fn export(&self, state: &mut State) {
        let restored = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        state.account_windows = restored.account_windows.clone();
        state.learned_limits = restored.learned_limits.clone();
        drop(restored);
        let lanes = self.all();
        for lane in lanes {
            let (provider, model) = (lane.provider().name.clone(), lane.model().to_owned());
            state.account_windows.retain(|(p, _, m, _), _| *p != provider || *m != model);
            state.learned_limits.retain(|(p, _, m, _), _| *p != provider || *m != model);
            lane.export(|account, saved| match saved {
                Saved::Window(dimension, charges) => {
                    let key = (provider.clone(), account.to_owned(), model.clone(), dimension);
                    state.account_windows.insert(key, charges);
                }
                Saved::Limit(dimension, limit) => {
                    let key = (provider.clone(), account.to_owned(), model.clone(), dimension);
                    state.learned_limits.insert(key, limit);
                }
            });
        }
    }

    /// Points every lane of a reloaded provider at its new accounts (lanes of providers no longer
    /// configured keep serving the requests they hold).
    pub fn reconfigure(&self, pool: &Arc<crate::pool::Pool>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(pool));
        let lanes = self.all();
        for lane in lanes {
            if let Some(provider) = pool.providers().iter().find(|p| p.name == lane.provider_name())
            {
                lane.reconfigure(Arc::clone(provider));
            }
        }
    }

    /// Every lane of `provider` re-checks its waiters (after keys were disabled or enabled).
    pub fn poke(&self, provider: &Provider) {
        let lanes: Vec<Arc<Lane>> = self
            .lanes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(provider.name.as_str())
            .map(|by_model| by_model.values().cloned().collect())
            .unwrap_or_default();
        for lane in lanes {
            lane.poke();
        }
    }

    /// Requests waiting per lane: (provider, model, depth).
    pub fn depths(&self) -> Vec<(String, String, usize)> {
        self.all()
            .iter()
            .map(|lane| (lane.provider_name().to_owned(), lane.model().to_owned(), lane.depth()))
            .collect()
    }

    /// What keyrelay knows of every lane's accounts: each known limit and what is left of it.
    pub fn headroom(&self) -> Vec<Headroom> {
        self.all().iter().flat_map(|lane| lane.headroom()).collect()
    }

    /// Accounts cooling after a 429 now: (provider, model, account, time left).
    pub fn cooling(&self) -> Vec<(String, String, String, Duration)> {
        self.all().iter().flat_map(|lane| lane.cooling()).collect()
    }

    /// Requests waiting in every lane.
    pub fn depth(&self) -> usize {
        self.all().iter().map(|lane| lane.depth()).sum()
    }

    /// Every lane, outside the registry's lock.
    fn all(&self) -> Vec<Arc<Lane>> {
        let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
        lanes.values().flat_map(|by_model| by_model.values().cloned()).collect()
    }
}

#[cfg(test)]
mod tests;
