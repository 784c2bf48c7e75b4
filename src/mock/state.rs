//! Shared state of a running mock: keys → organizations, per-(organization, model) limiters,
//! faults and the recorder. Owns the request lifecycle around the handlers: authentication,
//! admission (faults, then limits) and the token true-up through a [`Ticket`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tokio::time::Instant;

use super::config::{Faults, KeyState, MockConfig, TokenAccounting};
use super::errors::{MockError, RateLimited};
use super::limiter::{Cost, ModelLimiter, RateSnapshot};
use super::stats::Recorder;

/// Locks a mutex, ignoring poisoning (the protected data stays consistent between statements).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct KeyEntry {
    org: usize,
    state: Mutex<KeyState>,
}

#[derive(Debug)]
struct OrgState {
    id: String,
    /// One lock per served model; never held across an `.await`.
    models: HashMap<String, Mutex<ModelLimiter>>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct MockState {
    pub(crate) config: MockConfig,
    pub(crate) started: Instant,
    keys: HashMap<String, KeyEntry>,
    orgs: Vec<OrgState>,
    faults: Mutex<Faults>,
    pub(crate) recorder: Mutex<Recorder>,
}

/// An authenticated, active key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller {
    org: usize,
}

impl MockState {
    /// Builds the state; rejects duplicate keys.
    pub(crate) fn new(config: MockConfig) -> Result<Self, String> {
        let now = Instant::now();
        let mut keys = HashMap::new();
        let mut orgs = Vec::with_capacity(config.orgs.len());
        for (index, org) in config.orgs.iter().enumerate() {
            for key in &org.keys {
                let entry = KeyEntry { org: index, state: Mutex::new(key.state) };
                if keys.insert(key.key.clone(), entry).is_some() {
                    return Err(format!("mock key `{}` is listed twice", key.key));
                }
            }
            let models = config
                .models
                .iter()
                .map(|model| {
                    let limits = org.limits.get(model).unwrap_or(&org.default_limits);
                    let limiter =
                        ModelLimiter::new(limits, config.minute, config.day, config.algorithm, now);
                    (model.clone(), Mutex::new(limiter))
                })
                .collect();
            orgs.push(OrgState { id: org.id.clone(), models });
        }
        let faults = Mutex::new(config.faults.clone());
        let recorder = Mutex::new(Recorder::default());
        Ok(Self { config, started: now, keys, orgs, faults, recorder })
    }

    /// The bearer token of a request.
    pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
        let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
        Some(token.trim())
    }

    /// Organization id of a key, if the key is known.
    pub(crate) fn org_of(&self, key: &str) -> Option<&str> {
        let entry = self.keys.get(key)?;
        self.orgs.get(entry.org).map(|org| org.id.as_str())
    }

    /// Checks the bearer key and its state.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, MockError> {
        let key = Self::bearer(headers).ok_or(MockError::InvalidApiKey)?;
        let entry = self.keys.get(key).ok_or(MockError::InvalidApiKey)?;
        match *lock(&entry.state) {
            KeyState::Active => Ok(Caller { org: entry.org }),
            KeyState::Revoked => Err(MockError::InvalidApiKey),
            KeyState::OutOfQuota => Err(MockError::InsufficientQuota),
            KeyState::Restricted => Err(MockError::Restricted),
        }
    }

    /// Changes a key's state; returns false for an unknown key.
    pub(crate) fn set_key_state(&self, key: &str, state: KeyState) -> bool {
        match self.keys.get(key) {
            Some(entry) => {
                *lock(&entry.state) = state;
                true
            }
            None => false,
        }
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = faults;
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Whether the model is served.
    pub(crate) fn serves(&self, model: &str) -> bool {
        self.config.models.iter().any(|m| m == model)
    }

    /// The next injected error status, if any (`fail_next` first, then `error_rate`).
    fn take_fault(&self) -> Option<u16> {
        let mut faults = lock(&self.faults);
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            return Some(faults.error_status);
        }
        (faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate)
            .then_some(faults.error_status)
    }

    /// Whether the next stream must be aborted (`stream_reset_next` first, then the rate).
    pub(crate) fn take_stream_reset(&self) -> Option<u32> {
        let mut faults = lock(&self.faults);
        let after = faults.stream_reset_after_chunks;
        if faults.stream_reset_next > 0 {
            faults.stream_reset_next -= 1;
            return Some(after);
        }
        (faults.stream_reset_rate > 0.0 && fastrand::f64() < faults.stream_reset_rate)
            .then_some(after)
    }

    /// Faults, then limits (RPM, RPD, TPM, TPD); charges `cost` on success.
    pub(crate) fn admit(
        self: &Arc<Self>,
        caller: Caller,
        model: &str,
        cost: Cost,
    ) -> Result<Ticket, MockError> {
        let org = self.orgs.get(caller.org).ok_or(MockError::InvalidApiKey)?;
        let limiter =
            org.models.get(model).ok_or_else(|| MockError::ModelNotFound(model.to_owned()))?;
        let now = Instant::now();
        if let Some(status) = self.take_fault() {
            let rate = lock(limiter).snapshot(now);
            return Err(MockError::Injected { status, rate });
        }
        let (verdict, rate) = {
            let mut limiter = lock(limiter);
            let verdict = limiter.try_charge(cost, now);
            (verdict, limiter.snapshot(now))
        };
        let charge_id = verdict.map_err(|refusal| {
            if refusal.wait.is_some() {
                lock(&self.recorder).rate_limited(refusal.dimension.abbr());
            }
            let (model, org) = (model.to_owned(), org.id.clone());
            MockError::RateLimited(Box::new(RateLimited { model, org, refusal, rate }))
        })?;
        lock(&self.recorder).charge_tokens(&org.id, cost.tokens);
        Ok(Ticket {
            state: Arc::clone(self),
            org: caller.org,
            model: model.to_owned(),
            charge_id,
            reserved: cost.tokens,
            actual: cost.tokens,
            settled: false,
            rate,
        })
    }

    fn refund(&self, org: usize, model: &str, charge_id: u64, amount: u64) {
        let Some(org) = self.orgs.get(org) else { return };
        if let Some(limiter) = org.models.get(model) {
            lock(limiter).refund_tokens(charge_id, amount, Instant::now());
        }
        lock(&self.recorder).refund_tokens(&org.id, amount);
    }
}

/// An admitted request's charge. With [`TokenAccounting::Actual`] the token charge is trued-up
/// to [`Ticket::set_actual`] when the ticket is settled or dropped (e.g. a client disconnect).
#[derive(Debug)]
pub(crate) struct Ticket {
    state: Arc<MockState>,
    org: usize,
    model: String,
    charge_id: u64,
    reserved: u64,
    actual: u64,
    settled: bool,
    /// Header view right after the charge.
    pub(crate) rate: RateSnapshot,
}

impl Ticket {
    /// Tokens actually used so far (prompt + generated).
    pub(crate) fn set_actual(&mut self, tokens: u64) {
        self.actual = tokens;
    }

    /// Applies the true-up now (idempotent).
    pub(crate) fn settle(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        if self.state.config.token_accounting == TokenAccounting::Actual {
            let refund = self.reserved.saturating_sub(self.actual);
            if refund > 0 {
                self.state.refund(self.org, &self.model, self.charge_id, refund);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.settle();
    }
}
