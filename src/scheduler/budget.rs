//! One account's budget for one model: a sliding window per dimension, the limits known for it
//! (configured, or learned from headers and 429 bodies), and a cooldown after a 429.

use std::time::Duration;

use tokio::time::Instant;

use crate::limits::{ChargeId, Cost, Dimension, HeaderReport, SlidingWindow, Windows};

/// An account's standing for one model.
#[derive(Debug)]
pub(super) struct Budget {
    /// Effective limits: learned where the provider said, else configured.
    limits: [Option<u64>; Dimension::COUNT],
    /// What the provider said (headers, 429 bodies); kept across restarts.
    learned: [Option<u64>; Dimension::COUNT],
    windows: [SlidingWindow; Dimension::COUNT],
    cooling_until: Option<Instant>,
}

/// The charges one reservation made, one per dimension.
pub(super) type Charges = [ChargeId; Dimension::COUNT];

impl Budget {
    pub(super) fn new(limits: [Option<u64>; Dimension::COUNT], windows: Windows) -> Self {
        Self {
            limits,
            learned: [None; Dimension::COUNT],
            windows: Dimension::ALL.map(|d| SlidingWindow::new(windows.of(d))),
            cooling_until: None,
        }
    }

    /// New configured limits after a reload; what the provider taught stays in force.
    pub(super) fn configure(&mut self, configured: [Option<u64>; Dimension::COUNT]) {
        self.limits = Dimension::ALL.map(|d| self.learned[d.index()].or(configured[d.index()]));
    }

    /// How long until `cost` fits; `None` if it never can (larger than a limit).
    pub(super) fn wait_for(&mut self, cost: Cost, now: Instant) -> Option<Duration> {
        let mut wait =
            self.cooling_until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        for dimension in Dimension::ALL {
            if let Some(limit) = self.limits[dimension.index()] {
                let window = &mut self.windows[dimension.index()];
                wait = wait.max(window.time_until_fits(cost.of(dimension), limit, now)?);
            }
        }
        Some(wait)
    }

    /// The smallest share of a known limit left after `cost` (1.0 when no limit is known).
    pub(super) fn headroom(&mut self, cost: Cost, now: Instant) -> f64 {
        Dimension::ALL
            .into_iter()
            .filter_map(|dimension| {
                let limit = self.limits[dimension.index()]?;
                let used = self.windows[dimension.index()].used(now);
                let left = limit.saturating_sub(used + cost.of(dimension));
                Some(left as f64 / limit as f64)
            })
            .fold(1.0, f64::min)
    }

    /// The dimension and limit `cost` can never fit under, if any.
    pub(super) fn never_fits(&self, cost: Cost) -> Option<(Dimension, u64)> {
        Dimension::ALL.into_iter().find_map(|dimension| {
            let limit = self.limits[dimension.index()]?;
            (cost.of(dimension) > limit).then_some((dimension, limit))
        })
    }

    /// Charges every dimension, known limit or not, so usage is known once a limit is learned.
    pub(super) fn charge(&mut self, cost: Cost, now: Instant) -> Charges {
        Dimension::ALL.map(|d| self.windows[d.index()].charge(cost.of(d), now))
    }

    /// Replaces the estimate with what was really used.
    pub(super) fn settle(&mut self, charges: &Charges, used: Cost) {
        for dimension in Dimension::ALL {
            let index = dimension.index();
            self.windows[index].settle(charges[index], used.of(dimension));
        }
    }

    /// The provider has answered: its count of this request is at `now` at the latest.
    pub(super) fn restamp(&mut self, charges: &Charges, now: Instant) {
        for dimension in Dimension::ALL {
            self.windows[dimension.index()].restamp(charges[dimension.index()], now);
        }
    }

    pub(super) fn cool(&mut self, until: Instant) {
        self.cooling_until = Some(self.cooling_until.map_or(until, |u| u.max(until)));
    }

    /// How long the account still cools, if it does.
    pub(super) fn cooling_left(&self, now: Instant) -> Option<Duration> {
        self.cooling_until.map(|u| u.saturating_duration_since(now)).filter(|d| !d.is_zero())
    }

    pub(super) fn cooling(&self, now: Instant) -> bool {
        self.cooling_until.is_some_and(|until| until > now)
    }

    /// A limit named by the provider (a header or a 429 body) replaces what was known.
    pub(super) fn learn(&mut self, dimension: Dimension, limit: u64) {
        self.limits[dimension.index()] = Some(limit.max(1));
        self.learned[dimension.index()] = Some(limit.max(1));
    }

    /// Limits learned from the provider, for the state file.
    pub(super) fn learned(&self) -> Vec<(Dimension, u64)> {
        Dimension::ALL.into_iter().filter_map(|d| Some((d, self.learned[d.index()]?))).collect()
    }

    /// The daily windows as (age, amount) entries, for the state file.
    pub(super) fn daily_windows(&mut self, now: Instant) -> Vec<(Dimension, Vec<(Duration, u64)>)> {
        Dimension::ALL
            .into_iter()
            .filter(|d| d.is_daily())
            .map(|d| (d, self.windows[d.index()].export(now)))
            .filter(|(_, entries)| !entries.is_empty())
            .collect()
    }

    /// Restores a daily window saved before a restart.
    pub(super) fn import(
        &mut self,
        dimension: Dimension,
        entries: &[(Duration, u64)],
        now: Instant,
    ) {
        self.windows[dimension.index()].import(entries, now);
    }

    /// Re-syncs dimensions the provider reports in headers.
    pub(super) fn sync(&mut self, reports: &[HeaderReport], now: Instant) {
        for report in reports {
            let index = report.dimension.index();
            if let Some(limit) = report.limit {
                self.learn(report.dimension, limit);
            }
            if let (Some(limit), Some(remaining)) = (self.limits[index], report.remaining) {
                let reset = report.reset.unwrap_or(Duration::from_secs(60));
                self.windows[index].sync(limit.saturating_sub(remaining), reset, now);
            }
        }
    }

    /// (dimension, limit, remaining) for each dimension with a known limit.
    pub(super) fn headroom_by_dimension(&mut self, now: Instant) -> Vec<(Dimension, u64, u64)> {
        Dimension::ALL
            .into_iter()
            .filter_map(|dimension| {
                let limit = self.limits[dimension.index()]?;
                let used = self.windows[dimension.index()].used(now);
                Some((dimension, limit, limit.saturating_sub(used)))
            })
            .collect()
    }

    /// Known limits, for the admin view and tests.
    pub(super) fn limits(&self) -> [Option<u64>; Dimension::COUNT] {
        self.limits
    }
}
