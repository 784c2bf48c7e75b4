//! A lane: one (provider, model). It owns every account's budget for the model and the queue of
//! requests waiting for one, under one short lock (never held across an `.await`).
//!
//! Capacity is handed out only by [`LaneState::dispatch`], which serves waiters in queue order and
//! stops at the first that does not fit, so a newcomer never overtakes a waiter. It runs when a
//! request arrives, when a reservation settles or is refunded, when the provider reports new
//! limits, and, for capacity that comes back with time (windows sliding, cooldowns ending), from
//! the lane's timer task at the instant the first waiter will fit.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, sleep_until};

use super::budget::Budget;
use super::queue::{Queue, WaitKey};
use super::reservation::Reservation;
use super::{Demand, Grant, Headroom, Refusal, Saved};
use crate::limits::{Cost, Dimension, HeaderReport};
use crate::pool::Provider;
use crate::store::{Charges, to_ages, to_unix, unix_ms};
use crate::tokens::Correction;

/// One (provider, model) and its waiters.
pub struct Lane {
    provider_name: String,
    model: String,
    max_depth: usize,
    state: Mutex<LaneState>,
    timer: Notify,
}

pub(super) struct LaneState {
    /// The provider as of the last (re)configuration; budgets are in its account order.
    provider: Arc<Provider>,
    /// Bumped by every reconfiguration, so reservations know whether their index still holds.
    pub(super) generation: u64,
    pub(super) budgets: Vec<Budget>,
    queue: Queue,
    pub(super) correction: Correction,
    next_wake: Option<Instant>,
    next_account: usize,
}

/// The longest cooldown a 429 can impose (a daily limit's wait is at most a day).
const MAX_COOLDOWN: Duration = Duration::from_secs(2 * 86_400);

/// Grants to deliver once the lock is released (a refused grant drops its reservation, which
/// takes the lock again).
pub(super) type Deliveries = Vec<(oneshot::Sender<Grant>, Grant)>;

impl Lane {
    pub(super) fn new(provider: Arc<Provider>, model: &str, max_depth: usize) -> Arc<Self> {
        let budgets = provider
            .accounts()
            .iter()
            .map(|account| Budget::new(account.limits_for(model), provider.windows))
            .collect();
        let state = LaneState {
            provider: Arc::clone(&provider),
            generation: 0,
            budgets,
            queue: Queue::default(),
            correction: Correction::default(),
            next_wake: None,
            next_account: 0,
        };
        let lane = Arc::new(Self {
            provider_name: provider.name.clone(),
            model: model.to_owned(),
            max_depth,
            state: Mutex::new(state),
            timer: Notify::new(),
        });
        tokio::spawn(Arc::clone(&lane).run_timer());
        lane
    }

    /// The provider this lane sends to now.
    pub fn provider(&self) -> Arc<Provider> {
        Arc::clone(&self.lock().provider)
    }

    /// The provider's name (fixed for the lane's life).
    pub fn provider_name(&self) -> &str {
        &self.provider_name
    }

    /// Applies a reloaded provider: accounts are matched by name (keeping their windows,
    /// cooldowns and learned limits), added accounts start empty, removed ones are dropped;
    /// waiters stay queued and are re-checked against the new accounts.
    pub fn reconfigure(self: &Arc<Self>, provider: Arc<Provider>) {
        self.update(|state, _| {
            let mut old: Vec<Option<Budget>> =
                std::mem::take(&mut state.budgets).into_iter().map(Some).collect();
            state.budgets = provider
                .accounts()
                .iter()
                .map(|account| {
                    let limits = account.limits_for(&self.model);
                    let kept = state
                        .provider
                        .accounts()
                        .iter()
                        .position(|a| a.name == account.name)
                        .and_then(|i| old.get_mut(i).and_then(Option::take));
                    match kept {
                        Some(mut budget) => {
                            budget.configure(limits);
                            budget
                        }
                        None => Budget::new(limits, provider.windows),
                    }
                })
                .collect();
            state.provider = Arc::clone(&provider);
            state.generation += 1;
        });
    }

    /// The model this lane paces.
    pub fn model(&self) -> &str {
        &self.model
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until an account can take `demand`, or refuses it.
    pub async fn acquire(self: &Arc<Self>, demand: Demand) -> Result<Reservation, Refusal> {
        let deadline = demand.deadline;
        let (sender, mut receiver) = oneshot::channel();
        let (key, cost) = {
            let mut state = self.lock();
            let now = Instant::now();
            let cost = state.cost_of(&demand);
            state.refuse_hopeless(cost)?;
            if state.queue.len() >= self.max_depth {
                let retry_after = state.next_capacity(cost, now);
                return Err(Refusal::QueueFull { retry_after });
            }
            let key = state.queue.push(Demand { cost, ..demand }, sender);
            let deliveries = state.dispatch(self, now);
            drop(state);
            deliver(deliveries);
            (key, cost)
        };
        let mut waiting = Waiting { lane: self, key: Some(key) };
        self.timer.notify_one();
        tokio::select! {
            grant = &mut receiver => {
                waiting.key = None;
                grant.unwrap_or(Err(Refusal::NoUsableKey))
            }
            () = sleep_until(deadline) => {
                if waiting.leave() {
                    let retry_after = self.lock().next_capacity(cost, Instant::now());
                    Err(Refusal::Deadline { retry_after })
                } else {
                    // Granted in the instant the deadline passed (dispatch popped it and is
                    // about to deliver): use it.
                    receiver.await.unwrap_or(Err(Refusal::Deadline { retry_after: None }))
                }
            }
        }
    }

    /// Runs `change` on the lane's state, then serves whoever now fits.
    pub(super) fn update(self: &Arc<Self>, change: impl FnOnce(&mut LaneState, Instant)) {
        let mut state = self.lock();
        let now = Instant::now();
        change(&mut state, now);
        let deliveries = state.dispatch(self, now);
        drop(state);
        deliver(deliveries);
        self.timer.notify_one();
    }

    /// The provider reported its view of an account's limits.
    pub fn sync(self: &Arc<Self>, account: &AccountRef, reports: &[HeaderReport]) {
        if reports.is_empty() {
            return;
        }
        self.update(|state, now| {
            if let Some(budget) = state.budget(account) {
                budget.sync(reports, now);
            }
        });
    }

    /// A 429: the account rests for `wait` (plus the safety margin, so the retry cannot arrive a
    /// hair before the provider's own reset); `limit` is what the body said about the limit hit.
    pub fn rate_limited(
        self: &Arc<Self>,
        account: &AccountRef,
        wait: Duration,
        limit: Option<(Dimension, u64)>,
    ) {
        self.update(|state, now| {
            let margin = state.provider.windows.margin;
            let Some(budget) = state.budget(account) else { return };
            // An absurd wait from a provider is capped, not a panic.
            budget.cool(now + wait.min(MAX_COOLDOWN) + margin);
            if let Some((dimension, limit)) = limit {
                budget.learn(dimension, limit);
            }
        });
    }

    /// When capacity for `demand` is expected, if ever.
    pub fn expected_wait(&self, demand: &Demand) -> Option<Duration> {
        let mut state = self.lock();
        let cost = state.cost_of(demand);
        state.next_capacity(cost, Instant::now())
    }

    /// Serves or refuses waiters after keys changed state.
    pub fn poke(self: &Arc<Self>) {
        self.update(|_, _| {});
    }

    /// Known limits of each account for this model (in account order).
    pub fn limits(&self) -> Vec<[Option<u64>; Dimension::COUNT]> {
        self.lock().budgets.iter().map(Budget::limits).collect()
    }

    /// Each account's known limits and what is left of them now.
    pub fn headroom(&self) -> Vec<Headroom> {
        let mut state = self.lock();
        let provider = Arc::clone(&state.provider);
        let now = Instant::now();
        let mut out = Vec::new();
        for (index, budget) in state.budgets.iter_mut().enumerate() {
            for (dimension, limit, remaining) in budget.headroom_by_dimension(now) {
                out.push(Headroom {
                    provider: self.provider_name.clone(),
                    model: self.model.clone(),
                    account: provider.accounts()[index].name.clone(),
                    dimension,
                    limit,
                    remaining,
                });
            }
        }
        out
    }

    /// Applies state saved before a restart: daily windows and learned limits per account name.
    pub(super) fn restore<'a>(
        &self,
        windows: impl Iterator<Item = (&'a str, Dimension, &'a Charges)>,
        limits: impl Iterator<Item = (&'a str, Dimension, u64)>,
    ) {
        let mut state = self.lock();
        let (now, unix_now) = (Instant::now(), unix_ms());
        let provider = Arc::clone(&state.provider);
        let index_of = |name: &str| provider.accounts().iter().position(|a| a.name == name);
        for (account, dimension, charges) in windows {
            if let Some(index) = index_of(account) {
                state.budgets[index].import(dimension, &to_ages(charges, unix_now), now);
            }
        }
        for (account, dimension, limit) in limits {
            if let Some(index) = index_of(account) {
                state.budgets[index].learn(dimension, limit);
            }
        }
    }

    /// Hands each account's saved state (daily windows, learned limits) to `save`.
    pub(super) fn export(&self, mut save: impl FnMut(&str, Saved)) {
        let mut state = self.lock();
        let provider = Arc::clone(&state.provider);
        let (now, unix_now) = (Instant::now(), unix_ms());
        for (index, budget) in state.budgets.iter_mut().enumerate() {
            let account = &provider.accounts()[index].name;
            for (dimension, limit) in budget.learned() {
                save(account, Saved::Limit(dimension, limit));
            }
            for (dimension, entries) in budget.daily_windows(now) {
                save(account, Saved::Window(dimension, to_unix(&entries, unix_now)));
            }
        }
    }

    /// Accounts of this lane cooling now, with the time left.
    pub(super) fn cooling(&self) -> Vec<(String, String, String, Duration)> {
        let state = self.lock();
        let now = Instant::now();
        state
            .budgets
            .iter()
            .enumerate()
            .filter_map(|(index, budget)| {
                let left = budget.cooling_left(now)?;
                let account = state.provider.accounts()[index].name.clone();
                Some((self.provider_name.clone(), self.model.clone(), account, left))
            })
            .collect()
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// Wakes the lane when capacity returns with time.
    async fn run_timer(self: Arc<Self>) {
        loop {
            let next_wake = self.lock().next_wake;
            match next_wake {
                Some(at) => {
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = self.timer.notified() => continue,
                    }
                }
                None => {
                    self.timer.notified().await;
                    continue;
                }
            }
            let mut state = self.lock();
            let deliveries = state.dispatch(&self, Instant::now());
            drop(state);
            deliver(deliveries);
        }
    }
}

fn deliver(deliveries: Deliveries) {
    for (sender, grant) in deliveries {
        // The waiter left between dispatch and delivery: give its capacity back.
        if let Err(Ok(reservation)) = sender.send(grant) {
            reservation.refund();
        }
    }
}

/// Removes a waiter from the queue if its request goes away (deadline or client disconnect).
struct Waiting<'a> {
    lane: &'a Arc<Lane>,
    key: Option<WaitKey>,
}

impl Waiting<'_> {
    /// Leaves the queue; false if the waiter was already served.
    fn leave(&mut self) -> bool {
        let Some(key) = self.key.take() else { return false };
        let removed = self.lane.lock().queue.remove(key).is_some();
        // The waiter may have been what held the others back (a large request at the head).
        self.lane.poke();
        removed
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// An account as a reservation knows it: its provider at grant time, its index there, and the
/// lane's generation then (a reload may reorder accounts).
#[derive(Debug, Clone)]
pub struct AccountRef {
    /// The provider the account belonged to when the capacity was granted.
    pub provider: Arc<Provider>,
    /// Index of the account in that provider.
    pub index: usize,
    generation: u64,
}

impl LaneState {
    /// The budget of `account`, found by name if the lane was reconfigured since; `None` if the
    /// account is gone.
    pub(super) fn budget(&mut self, account: &AccountRef) -> Option<&mut Budget> {
        let index = if account.generation == self.generation {
            account.index
        } else {
            let name = &account.provider.accounts().get(account.index)?.name;
            self.provider.accounts().iter().position(|a| a.name == *name)?
        };
        self.budgets.get_mut(index)
    }

    /// The cost of a demand with this lane's token correction applied.
    fn cost_of(&self, demand: &Demand) -> Cost {
        if demand.cost.tokens == 0 && demand.prompt_estimate == 0 && demand.output_budget == 0 {
            return demand.cost;
        }
        Cost {
            tokens: self
                .correction
                .apply(demand.prompt_estimate)
                .saturating_add(demand.output_budget),
            ..demand.cost
        }
    }

    /// Refuses at once what waiting cannot help: no usable key, or a cost above every account's
    /// limit.
    fn refuse_hopeless(&self, cost: Cost) -> Result<(), Refusal> {
        let mut usable = self.usable_accounts().peekable();
        if usable.peek().is_none() {
            return Err(Refusal::NoUsableKey);
        }
        let mut smallest: Option<(Dimension, u64)> = None;
        for index in usable {
            match self.budgets[index].never_fits(cost) {
                None => return Ok(()),
                Some(found) => {
                    smallest =
                        Some(smallest.map_or(found, |s| if found.1 > s.1 { found } else { s }))
                }
            }
        }
        let (dimension, limit) = smallest.unwrap_or((Dimension::Tpm, 0));
        Err(Refusal::TooLarge { dimension, limit, needed: cost.of(dimension) })
    }

    fn usable_accounts(&self) -> impl Iterator<Item = usize> + '_ {
        self.provider
            .accounts()
            .iter()
            .enumerate()
            .filter(|(_, a)| a.has_enabled_key())
            .map(|(i, _)| i)
    }

    /// When capacity for `cost` is expected, if ever.
    pub(super) fn next_capacity(&mut self, cost: Cost, now: Instant) -> Option<Duration> {
        let usable: Vec<usize> = self.usable_accounts().collect();
        usable.into_iter().filter_map(|i| self.budgets[i].wait_for(cost, now)).min()
    }

    /// The account with the most headroom that can take `cost` now (ties rotate).
    fn pick(&mut self, cost: Cost, now: Instant) -> Option<usize> {
        let provider = Arc::clone(&self.provider);
        let count = self.budgets.len();
        self.next_account = (self.next_account + 1) % count.max(1);
        let start = self.next_account;
        let mut best: Option<(f64, usize)> = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            if !provider.accounts()[index].has_enabled_key() {
                continue;
            }
            let budget = &mut self.budgets[index];
            if budget.cooling(now) || budget.wait_for(cost, now) != Some(Duration::ZERO) {
                continue;
            }
            let headroom = budget.headroom(cost, now);
            if best.is_none_or(|(h, _)| headroom > h) {
                best = Some((headroom, index));
            }
        }
        best.map(|(_, index)| index)
    }

    /// Serves waiters in order while the first one fits; remembers when to look again.
    pub(super) fn dispatch(&mut self, lane: &Arc<Lane>, now: Instant) -> Deliveries {
        let mut deliveries = Vec::new();
        let provider = Arc::clone(&self.provider);
        if self.usable_accounts().next().is_none() {
            deliveries.extend(self.queue.drain().map(|w| (w.grant, Err(Refusal::NoUsableKey))));
            self.next_wake = None;
            return deliveries;
        }
        self.next_wake = None;
        while let Some(waiter) = self.queue.first() {
            if waiter.grant.is_closed() {
                self.queue.pop_first();
                continue;
            }
            let cost = waiter.demand.cost;
            let Some(account) = self.pick(cost, now) else {
                if let Some(wait) = self.next_capacity(cost, now) {
                    self.next_wake = Some(now + wait);
                    break;
                }
                // It can never fit any more (a limit learned or reloaded below its cost, or its
                // accounts' keys disabled): answer it now instead of holding up those behind it.
                let refusal = self
                    .refuse_hopeless(cost)
                    .err()
                    .unwrap_or(Refusal::Deadline { retry_after: None });
                if let Some(waiter) = self.queue.pop_first() {
                    deliveries.push((waiter.grant, Err(refusal)));
                }
                continue;
            };
            let Some(key) = provider.accounts()[account].next_enabled_key() else { break };
            let Some(waiter) = self.queue.pop_first() else { break };
            let charges = self.budgets[account].charge(cost, now);
            let account = AccountRef {
                provider: Arc::clone(&provider),
                index: account,
                generation: self.generation,
            };
            let reservation = Reservation::new(
                Arc::clone(lane),
                account,
                key,
                charges,
                cost,
                waiter.demand.prompt_estimate,
            );
            deliveries.push((waiter.grant, Ok(reservation)));
        }
        deliveries
    }
}
