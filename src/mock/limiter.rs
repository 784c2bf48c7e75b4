//! Rate-limit bookkeeping of one (organization, model): four optional windows (RPM, RPD, TPM,
//! TPD), each a sliding window or a continuously refilling bucket, checked all-or-nothing.
//! Pure data with an explicit `now`; the caller holds the lock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::config::{Algorithm, MockLimits};

/// A rate-limit dimension, in the order Groq checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dimension {
    Rpm,
    Rpd,
    Tpm,
    Tpd,
}

impl Dimension {
    pub(crate) const ALL: [Dimension; 4] = [Self::Rpm, Self::Rpd, Self::Tpm, Self::Tpd];

    /// `"RPM"`, `"RPD"`, `"TPM"`, `"TPD"`.
    pub(crate) fn abbr(self) -> &'static str {
        match self {
            Self::Rpm => "RPM",
            Self::Rpd => "RPD",
            Self::Tpm => "TPM",
            Self::Tpd => "TPD",
        }
    }

    /// The name used in Groq's messages, e.g. `requests per minute (RPM)`.
    pub(crate) fn long_name(self) -> &'static str {
        match self {
            Self::Rpm => "requests per minute (RPM)",
            Self::Rpd => "requests per day (RPD)",
            Self::Tpm => "tokens per minute (TPM)",
            Self::Tpd => "tokens per day (TPD)",
        }
    }

    /// Groq's `error.type`: `requests` or `tokens`.
    pub(crate) fn kind(self) -> &'static str {
        if self.is_tokens() { "tokens" } else { "requests" }
    }

    fn is_tokens(self) -> bool {
        matches!(self, Self::Tpm | Self::Tpd)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one request costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) requests: u64,
    pub(crate) tokens: u64,
}

impl Cost {
    fn of(self, dim: Dimension) -> u64 {
        if dim.is_tokens() { self.tokens } else { self.requests }
    }
}

/// Why a request was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) dimension: Dimension,
    pub(crate) limit: u64,
    pub(crate) used: u64,
    pub(crate) requested: u64,
    /// `None`: the request can never fit (Groq's 413 for TPM).
    pub(crate) wait: Option<Duration>,
}

/// State of one dimension as reported in `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DimensionState {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Time until the dimension is back to its full limit.
    pub(crate) reset: Duration,
}

/// Groq's header view: `-requests` headers describe RPD, `-tokens` headers describe TPM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RateSnapshot {
    pub(crate) requests: Option<DimensionState>,
    pub(crate) tokens: Option<DimensionState>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    at: Instant,
    amount: u64,
}

#[derive(Debug)]
enum Usage {
    /// Charges of the last `period`, oldest first, ids increasing.
    Sliding { entries: VecDeque<Entry>, used: u64 },
    /// GCRA form of a continuously refilling bucket: the instant it is full again.
    Bucket { full_at: Instant },
}

/// One limited dimension.
#[derive(Debug)]
struct Window {
    limit: u64,
    period_ns: u128,
    usage: Usage,
}

impl Window {
    fn new(limit: u64, period: Duration, algorithm: Algorithm, now: Instant) -> Self {
        let usage = match algorithm {
            Algorithm::SlidingWindow => Usage::Sliding { entries: VecDeque::new(), used: 0 },
            Algorithm::Bucket => Usage::Bucket { full_at: now },
        };
        Self { limit, period_ns: period.as_nanos().max(1), usage }
    }

    fn period(&self) -> Duration {
        nanos(self.period_ns)
    }

    /// Bucket: time it takes to refill `amount`.
    fn refill_ns(&self, amount: u64) -> u128 {
        (u128::from(amount) * self.period_ns).div_ceil(u128::from(self.limit.max(1)))
    }

    fn prune(&mut self, now: Instant) {
        let period = self.period();
        if let Usage::Sliding { entries, used } = &mut self.usage {
            while entries.front().is_some_and(|e| e.at + period <= now) {
                if let Some(e) = entries.pop_front() {
                    *used -= e.amount;
                }
            }
        }
    }

    fn used(&mut self, now: Instant) -> u64 {
        self.prune(now);
        match &self.usage {
            Usage::Sliding { used, .. } => *used,
            Usage::Bucket { full_at } => {
                let debt = full_at.saturating_duration_since(now).as_nanos();
                let used = (debt * u128::from(self.limit)).div_ceil(self.period_ns);
                u64::try_from(used).unwrap_or(u64::MAX).min(self.limit)
            }
        }
    }

    /// Time until `cost` fits: `Some(ZERO)` now, `None` never.
    fn wait_for(&mut self, cost: u64, now: Instant) -> Option<Duration> {
        if cost > self.limit {
            return None;
        }
        let used = self.used(now);
        if used + cost <= self.limit {
            return Some(Duration::ZERO);
        }
        match &self.usage {
            Usage::Sliding { entries, .. } => {
                let need = used + cost - self.limit;
                let mut freed = 0;
                let period = self.period();
                entries.iter().find_map(|e| {
                    freed += e.amount;
                    (freed >= need).then(|| (e.at + period).saturating_duration_since(now))
                })
            }
            Usage::Bucket { full_at } => {
                let debt = full_at.saturating_duration_since(now).as_nanos();
                let wait = (debt + self.refill_ns(cost)).saturating_sub(self.period_ns);
                Some(nanos(wait))
            }
        }
    }

    fn charge(&mut self, id: u64, amount: u64, now: Instant) {
        if amount == 0 {
            return;
        }
        let refill = nanos(self.refill_ns(amount));
        match &mut self.usage {
            Usage::Sliding { entries, used } => {
                entries.push_back(Entry { id, at: now, amount });
                *used += amount;
            }
            Usage::Bucket { full_at } => *full_at = (*full_at).max(now) + refill,
        }
    }

    fn refund(&mut self, id: u64, amount: u64, now: Instant) {
        let refill = nanos(self.refill_ns(amount));
        match &mut self.usage {
            Usage::Sliding { entries, used } => {
                if let Ok(i) = entries.binary_search_by_key(&id, |e| e.id)
                    && let Some(entry) = entries.get_mut(i)
                {
                    let back = amount.min(entry.amount);
                    entry.amount -= back;
                    *used -= back;
                }
            }
            Usage::Bucket { full_at } => {
                *full_at = full_at.checked_sub(refill).unwrap_or(now).max(now);
            }
        }
    }

    fn state(&mut self, now: Instant) -> DimensionState {
        let remaining = self.limit - self.used(now);
        let reset = match &self.usage {
            Usage::Sliding { entries, .. } => {
                entries.iter().rev().find(|e| e.amount > 0).map_or(Duration::ZERO, |e| {
                    (e.at + self.period()).saturating_duration_since(now)
                })
            }
            Usage::Bucket { full_at } => full_at.saturating_duration_since(now),
        };
        DimensionState { limit: self.limit, remaining, reset }
    }
}

fn nanos(ns: u128) -> Duration {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 1e9, so it fits a u32.
    Duration::new(secs, u32::try_from(ns % 1_000_000_000).unwrap_or(0))
}

/// The limits of one (organization, model).
#[derive(Debug)]
pub(crate) struct ModelLimiter {
    windows: [Option<Window>; 4],
    next_id: u64,
}

impl ModelLimiter {
    pub(crate) fn new(
        limits: &MockLimits,
        minute: Duration,
        day: Duration,
        algorithm: Algorithm,
        now: Instant,
    ) -> Self {
        let window =
            |limit: Option<u64>, period| limit.map(|l| Window::new(l, period, algorithm, now));
        Self {
            windows: [
                window(limits.rpm, minute),
                window(limits.rpd, day),
                window(limits.tpm, minute),
                window(limits.tpd, day),
            ],
            next_id: 0,
        }
    }

    /// Checks RPM, RPD, TPM, TPD in order and charges all of them, or none. Returns the charge id
    /// for [`ModelLimiter::refund_tokens`].
    pub(crate) fn try_charge(&mut self, cost: Cost, now: Instant) -> Result<u64, Refusal> {
        for dimension in Dimension::ALL {
            let Some(window) = &mut self.windows[dimension.index()] else {
                continue;
            };
            let requested = cost.of(dimension);
            let wait = match window.wait_for(requested, now) {
                Some(Duration::ZERO) => continue,
                Some(wait) => Some(wait),
                None if dimension == Dimension::Tpm => None,
                // Only a TPM overflow is a 413 at Groq; elsewhere say "wait a whole window".
                None => Some(window.period()),
            };
            let used = window.used(now);
            let limit = window.limit;
            return Err(Refusal { dimension, limit, used, requested, wait });
        }
        let id = self.next_id;
        self.next_id += 1;
        for dimension in Dimension::ALL {
            if let Some(window) = &mut self.windows[dimension.index()] {
                window.charge(id, cost.of(dimension), now);
            }
        }
        Ok(id)
    }

    /// Gives back `amount` tokens of charge `id` (token accounting true-up).
    pub(crate) fn refund_tokens(&mut self, id: u64, amount: u64, now: Instant) {
        if amount == 0 {
            return;
        }
        for dimension in [Dimension::Tpm, Dimension::Tpd] {
            if let Some(window) = &mut self.windows[dimension.index()] {
                window.refund(id, amount, now);
            }
        }
    }

    /// RPD and TPM state for the response headers.
    pub(crate) fn snapshot(&mut self, now: Instant) -> RateSnapshot {
        let [_, rpd, tpm, _] = &mut self.windows;
        RateSnapshot {
            requests: rpd.as_mut().map(|w| w.state(now)),
            tokens: tpm.as_mut().map(|w| w.state(now)),
        }
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
