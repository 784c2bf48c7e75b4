//! A sliding-window counter with settle-able charges and a term for usage keyrelay did not see.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Identifies one charge so it can be settled later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChargeId(u64);

#[derive(Debug, Clone, Copy)]
struct Charge {
    at: Instant,
    amount: u64,
    /// The larger of the estimate and the settled amount: what a provider may still be counting
    /// for this request while its own settlement lags behind keyrelay's.
    ceiling: u64,
    id: ChargeId,
}

/// Charges made in the last `window`, plus an external term: usage the provider reported that
/// keyrelay's own charges do not explain (other clients of the same organization, or a provider
/// that counts more than it reports in `usage`), held until the provider's reset.
#[derive(Debug)]
pub struct SlidingWindow {
    window: Duration,
    charges: VecDeque<Charge>,
    used: u64,
    ceiling: u64,
    external: u64,
    external_until: Option<Instant>,
    next_id: u64,
}

impl SlidingWindow {
    /// An empty window.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            charges: VecDeque::new(),
            used: 0,
            ceiling: 0,
            external: 0,
            external_until: None,
            next_id: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.charges.front() {
            if oldest.at + self.window > now {
                break;
            }
            self.used -= oldest.amount;
            self.ceiling -= oldest.ceiling;
            self.charges.pop_front();
        }
        if self.external_until.is_some_and(|until| until <= now) {
            self.external = 0;
            self.external_until = None;
        }
    }

    /// Usage inside the window at `now`.
    pub fn used(&mut self, now: Instant) -> u64 {
        self.expire(now);
        self.used + self.external
    }

    /// Records `amount` at `now`.
    pub fn charge(&mut self, amount: u64, now: Instant) -> ChargeId {
        self.expire(now);
        let id = ChargeId(self.next_id);
        self.next_id += 1;
        self.used += amount;
        self.ceiling += amount;
        self.charges.push_back(Charge { at: now, amount, ceiling: amount, id });
        id
    }

    /// Changes a charge's amount (settling an estimate with real usage). A charge that already
    /// left the window is no longer counted, so settling it changes nothing.
    pub fn settle(&mut self, id: ChargeId, amount: u64) {
        let Some(charge) = self.find(id) else { return };
        let previous = std::mem::replace(&mut charge.amount, amount);
        let previous_ceiling = charge.ceiling;
        charge.ceiling = charge.ceiling.max(amount);
        let ceiling = charge.ceiling;
        self.used = self.used - previous + amount;
        self.ceiling = self.ceiling - previous_ceiling + ceiling;
    }

    /// Moves a charge to `now`: the provider answered, so it has surely counted the request by
    /// now, and the slot must stay taken for a whole window from here, however long the request
    /// took to reach it.
    pub fn restamp(&mut self, id: ChargeId, now: Instant) {
        let Some(index) = self.charges.iter().rposition(|c| c.id == id) else { return };
        if let Some(mut charge) = self.charges.remove(index) {
            charge.at = charge.at.max(now);
            let position =
                self.charges.iter().rposition(|c| c.at <= charge.at).map_or(0, |i| i + 1);
            self.charges.insert(position, charge);
        }
    }

    /// Recent charges are at the back, and settling happens soon after charging.
    fn find(&mut self, id: ChargeId) -> Option<&mut Charge> {
        self.charges.iter_mut().rev().find(|c| c.id == id)
    }

    /// How long until `amount` more fits under `limit`; `None` if it never can.
    pub fn time_until_fits(&mut self, amount: u64, limit: u64, now: Instant) -> Option<Duration> {
        if amount > limit {
            return None;
        }
        self.expire(now);
        let over = (self.used + self.external + amount).saturating_sub(limit);
        if over == 0 {
            return Some(Duration::ZERO);
        }
        // Either enough of keyrelay's own charges expire, or the external term expires (all at
        // once, at the provider's reset) together with fewer of them.
        let own_only = self.wait_for_charges(over, now);
        let with_external = self.external_until.and_then(|until| {
            let rest = self.wait_for_charges(over.saturating_sub(self.external), now)?;
            Some(rest.max(until.saturating_duration_since(now)))
        });
        match (own_only, with_external) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long until at least `amount` of the current charges has expired.
    fn wait_for_charges(&self, amount: u64, now: Instant) -> Option<Duration> {
        let mut freed = 0;
        for charge in &self.charges {
            if freed >= amount {
                break;
            }
            freed += charge.amount;
            if freed >= amount {
                return Some((charge.at + self.window).saturating_duration_since(now));
            }
        }
        (freed >= amount).then_some(Duration::ZERO)
    }

    /// Re-syncs with the provider's view: it reports `provider_used` now, and that it is back to
    /// zero after `reset`. Only usage beyond what keyrelay itself may have caused (its charges at
    /// their estimates, since the provider settles later than keyrelay) is added; a provider
    /// reporting less than keyrelay counted does not loosen the window.
    pub fn sync(&mut self, provider_used: u64, reset: Duration, now: Instant) {
        self.expire(now);
        self.external = provider_used.saturating_sub(self.ceiling);
        self.external_until = (self.external > 0).then_some(now + reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn never_more_than_the_limit_inside_any_window() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(MINUTE);
        for second in 0..3 {
            window.charge(10, start + Duration::from_secs(second * 20));
        }
        let at = start + Duration::from_secs(45);
        assert_eq!(window.used(at), 30);
        assert_eq!(window.time_until_fits(5, 30, at), Some(Duration::from_secs(15)));
        assert_eq!(window.time_until_fits(15, 30, at), Some(Duration::from_secs(35)));
        assert_eq!(window.time_until_fits(31, 30, at), None);
        assert_eq!(window.used(start + Duration::from_secs(60)), 20);
    }

    #[test]
    fn settling_replaces_the_estimate() {
        let now = Instant::now();
        let mut window = SlidingWindow::new(MINUTE);
        let a = window.charge(100, now);
        let b = window.charge(50, now);
        window.settle(a, 30);
        assert_eq!(window.used(now), 80);
        window.settle(b, 0);
        assert_eq!(window.used(now), 30);
        window.settle(a, 30);
        assert_eq!(window.used(now + MINUTE), 0, "settling an expired charge is a no-op");
        window.settle(a, 99);
        assert_eq!(window.used(now + MINUTE), 0);
    }

    #[test]
    fn a_restamped_charge_holds_its_slot_a_window_from_the_answer() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(MINUTE);
        let slow = window.charge(1, start);
        window.charge(1, start + Duration::from_secs(1));
        window.restamp(slow, start + Duration::from_secs(5));
        window.settle(slow, 2);
        assert_eq!(window.used(start + Duration::from_secs(61)), 2, "only the fast one left");
        assert_eq!(window.used(start + Duration::from_secs(65)), 0);
    }

    #[test]
    fn provider_usage_beyond_ours_holds_until_its_reset() {
        let now = Instant::now();
        let mut window = SlidingWindow::new(MINUTE);
        window.charge(10, now);
        window.sync(25, Duration::from_secs(5), now);
        assert_eq!(window.used(now), 25);
        assert_eq!(window.time_until_fits(10, 30, now), Some(Duration::from_secs(5)));
        assert_eq!(window.used(now + Duration::from_secs(5)), 10);
        window.sync(3, Duration::from_secs(5), now);
        assert_eq!(window.used(now), 10, "a provider reporting less does not loosen the window");

        // A provider that has not yet settled what keyrelay settled is not foreign usage.
        let mut window = SlidingWindow::new(MINUTE);
        let id = window.charge(500, now);
        window.settle(id, 200);
        window.sync(500, Duration::from_secs(60), now);
        assert_eq!(window.used(now), 200);

        // When an own charge expires before the external term, waiting for it is enough.
        let mut window = SlidingWindow::new(MINUTE);
        window.charge(10, now);
        let later = now + Duration::from_secs(55);
        window.sync(15, Duration::from_secs(50), later);
        assert_eq!(window.time_until_fits(5, 15, later), Some(Duration::from_secs(5)));
        assert_eq!(window.time_until_fits(15, 15, later), Some(Duration::from_secs(50)));
    }
}
