//! The capacity a request holds while it is upstream: an account, a key, and one charge per
//! dimension. Settled with the real usage when the answer is done; refunded when the provider did
//! not count the request; kept at the estimate if it is dropped (cancelled mid-stream), since the
//! provider probably counted it.

use std::sync::Arc;

use super::budget::Charges;
use super::lane::{AccountRef, Lane};
use crate::limits::Cost;
use crate::pool::Provider;

/// Token usage a provider reported for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens`.
    pub completion_tokens: u64,
}

/// Capacity granted to one attempt.
pub struct Reservation {
    lane: Arc<Lane>,
    account: AccountRef,
    key: usize,
    charges: Charges,
    cost: Cost,
    prompt_estimate: u64,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("model", &self.lane.model())
            .field("account", &self.account.index)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    pub(super) fn new(
        lane: Arc<Lane>,
        account: AccountRef,
        key: usize,
        charges: Charges,
        cost: Cost,
        prompt_estimate: u64,
    ) -> Self {
        Self { lane, account, key, charges, cost, prompt_estimate }
    }

    /// Index of the account in [`provider`](Self::provider).
    pub fn account(&self) -> usize {
        self.account.index
    }

    /// The account, for reporting what the provider said about it.
    pub fn account_ref(&self) -> &AccountRef {
        &self.account
    }

    /// The provider as it was when the capacity was granted (its accounts and keys).
    pub fn provider(&self) -> &Arc<Provider> {
        &self.account.provider
    }

    /// Index of the key in its account.
    pub fn key(&self) -> usize {
        self.key
    }

    /// The provider's answer arrived: the request's slots count from now, since the provider may
    /// have counted it any time up to now (see `SlidingWindow::restamp`).
    pub fn answered(&self) {
        let mut state = self.lane.lock();
        if let Some(budget) = state.budget(&self.account) {
            budget.restamp(&self.charges, tokio::time::Instant::now());
        }
    }

    /// The request is done: replace the estimate with `usage` and learn from the difference.
    pub fn settle(self, usage: Usage) {
        let used = Cost {
            audio_seconds: self.cost.audio_seconds,
            requests: self.cost.requests,
            tokens: usage.prompt_tokens + usage.completion_tokens,
        };
        self.lane.update(|state, _| {
            if let Some(budget) = state.budget(&self.account) {
                budget.settle(&self.charges, used);
            }
            state.correction.observe(self.prompt_estimate, usage.prompt_tokens);
        });
    }

    /// The provider did not count the request (429, 5xx, dead key): give everything back.
    pub fn refund(self) {
        self.settle_to(Cost::default());
    }

    /// The provider counted the request but no tokens (a rejected request).
    pub fn refund_tokens(self) {
        let requests = self.cost.requests;
        self.settle_to(Cost { requests, ..Cost::default() });
    }

    fn settle_to(self, used: Cost) {
        self.lane.update(|state, _| {
            if let Some(budget) = state.budget(&self.account) {
                budget.settle(&self.charges, used);
            }
        });
    }
}
