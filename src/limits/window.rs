//! A sliding-window counter with settle-able charges and a term for usage keyrelay did not see.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How long a charge stays individually settleable before it may be merged (longer than any
/// stream is expected to run, so settling and restamping still find it).
const SEAL_AFTER: Duration = Duration::from_secs(600);

/// The id merged buckets carry; no settle ever names it.
const MERGED: ChargeId = ChargeId(u64::MAX);

/// Charge ids are unique in the process, so a reservation never settles a charge of another
/// window (say, of an account removed and added again by reloads).
static NEXT_CHARGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Identifies one charge so it can be settled later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChargeId(u64);

#[derive(Debug, Clone, Copy)]
struct Charge {
    /// When it counts from (for a merged bucket: its newest charge).
    at: Instant,
    /// For a merged bucket, its oldest charge (bounds the bucket to one granule).
    first: Instant,
    amount: u64,
    /// The larger of the estimate and the settled amount: what a provider may still be counting
    /// for this request while its own settlement lags behind keyrelay's.
    ceiling: u64,
    id: ChargeId,
}

/// Charges made in the last `window`, plus an external term: usage the provider reported that
/// keyrelay's own charges do not explain (other clients of the same organization, or a provider
/// that counts more than it reports in `usage`), held until the provider's reset.
///
/// Charges older than [`SEAL_AFTER`] can no longer be settled or restamped; in long (daily)
/// windows they are merged into buckets of 1/1440 of the window, each counted until its newest
/// charge expires (so merging never frees capacity early), which bounds a day window's memory to
/// about 1,440 buckets plus the last minutes' charges.
#[derive(Debug)]
pub struct SlidingWindow {
    window: Duration,
    granule: Duration,
    /// Merged, sealed charges, oldest first; all older than every entry of `charges`.
    buckets: VecDeque<Charge>,
    charges: VecDeque<Charge>,
    used: u64,
    ceiling: u64,
    external: u64,
    external_until: Option<Instant>,
}

impl SlidingWindow {
    /// An empty window.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            granule: (window / 1440).max(Duration::from_secs(1)),
            buckets: VecDeque::new(),
            charges: VecDeque::new(),
            used: 0,
            ceiling: 0,
            external: 0,
            external_until: None,
        }
    }

    fn expire(&mut self, now: Instant) {
        for deque in [&mut self.buckets, &mut self.charges] {
            while let Some(oldest) = deque.front() {
                if oldest.at + self.window > now {
                    break;
                }
                self.used -= oldest.amount;
                self.ceiling -= oldest.ceiling;
                deque.pop_front();
            }
        }
        self.seal(now);
        if self.external_until.is_some_and(|until| until <= now) {
            self.external = 0;
            self.external_until = None;
        }
    }

    /// Merges charges too old to be settled into buckets (only where the window outlives them).
    fn seal(&mut self, now: Instant) {
        if self.window <= SEAL_AFTER {
            return;
        }
        while let Some(oldest) = self.charges.front().copied() {
            if oldest.at + SEAL_AFTER > now {
                break;
            }
            self.charges.pop_front();
            self.merge(oldest);
        }
    }

    fn merge(&mut self, charge: Charge) {
        let charge = Charge { id: MERGED, ..charge };
        match self.buckets.back_mut() {
            Some(bucket) if charge.at.saturating_duration_since(bucket.first) < self.granule => {
                bucket.at = bucket.at.max(charge.at);
                bucket.amount += charge.amount;
                bucket.ceiling += charge.ceiling;
            }
            _ => self.buckets.push_back(charge),
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
        let id = ChargeId(NEXT_CHARGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        self.used += amount;
        self.ceiling += amount;
        self.charges.push_back(Charge { at: now, first: now, amount, ceiling: amount, id });
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
        for charge in self.buckets.iter().chain(&self.charges) {
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

    /// What the window holds, as (age, amount) pairs in one-granule buckets, for persisting.
    pub fn export(&mut self, now: Instant) -> Vec<(Duration, u64)> {
        self.expire(now);
        let mut out: Vec<(Duration, u64)> = Vec::new();
        for charge in self.buckets.iter().chain(&self.charges) {
            let age = now.saturating_duration_since(charge.at);
            match out.last_mut() {
                // Ages fall as charges get newer; a merged bucket keeps the youngest age.
                Some(last) if last.0.saturating_sub(age) < self.granule => {
                    *last = (age, last.1 + charge.amount);
                }
                _ => out.push((age, charge.amount)),
            }
        }
        out.retain(|(_, amount)| *amount > 0);
        out
    }

    /// Restores what [`export`](Self::export) saved (at start-up, before any charge).
    pub fn import(&mut self, entries: &[(Duration, u64)], now: Instant) {
        let mut entries: Vec<&(Duration, u64)> =
            entries.iter().filter(|(age, _)| *age < self.window).collect();
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        for (age, amount) in entries {
            let at = now.checked_sub(*age).unwrap_or(now);
            self.used += amount;
            self.ceiling += amount;
            self.merge(Charge { at, first: at, amount: *amount, ceiling: *amount, id: MERGED });
        }
    }

    /// Re-syncs with the provider's view: it reports `provider_used` now, and that it is back to
    /// zero after `reset`. Only usage beyond what keyrelay itself may have caused (its charges at
    /// their estimates, since the provider settles later than keyrelay) is added; a provider
    /// reporting less than keyrelay counted does not loosen the window.
    pub fn sync(&mut self, provider_used: u64, reset: Duration, now: Instant) {
        self.expire(now);
        self.external = provider_used.saturating_sub(self.ceiling);
        self.external_until = (self.external > 0).then(|| now + reset.min(self.window));
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
    fn a_day_window_merges_old_charges_into_bounded_buckets() {
        let day = Duration::from_secs(86_400);
        let start = Instant::now();
        let mut window = SlidingWindow::new(day);
        for second in 0..7200 {
            window.charge(1, start + Duration::from_secs(second));
        }
        let now = start + Duration::from_secs(7200);
        assert_eq!(window.used(now), 7200);
        assert!(window.buckets.len() <= 110 + 1, "{} buckets", window.buckets.len());
        assert!(window.charges.len() <= 601, "{} recent charges", window.charges.len());
        // A bucket is counted until its newest charge leaves the window, never earlier.
        assert_eq!(window.used(start + day + Duration::from_secs(30)), 7200);
        assert_eq!(window.used(start + day + Duration::from_secs(60)), 7200 - 60);
        assert_eq!(window.used(start + day + Duration::from_secs(7200)), 0);
    }

    #[test]
    fn export_and_import_keep_usage_and_expiry() {
        let day = Duration::from_secs(86_400);
        let start = Instant::now();
        let mut window = SlidingWindow::new(day);
        for minute in 0..10 {
            window.charge(5, start + Duration::from_secs(minute * 60));
        }
        let now = start + Duration::from_secs(600);
        let saved = window.export(now);
        let mut restored = SlidingWindow::new(day);
        restored.import(&saved, now);
        assert_eq!(restored.used(now), 50);
        // Nothing is forgotten earlier than in the original.
        for later in [day - Duration::from_secs(1), day + Duration::from_secs(300)] {
            assert!(restored.used(start + later) >= window.used(start + later));
        }
        assert_eq!(restored.used(start + day + Duration::from_secs(600)), 0);
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
