//! The order waiters are served in: priority first, then fair share between clients (start-time
//! fair queuing: each client's next request is tagged after its previous one, so one client's
//! burst of a thousand requests queues behind another client's single request), then arrival.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use tokio::sync::oneshot;

use super::{Demand, Grant};

/// Who a request belongs to, for fair share.
pub type ClientId = u64;

/// A waiter's place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct WaitKey {
    priority: Reverse<i32>,
    start_tag: u64,
    seq: u64,
}

/// A request waiting for capacity.
pub(super) struct Waiter {
    pub(super) demand: Demand,
    pub(super) grant: oneshot::Sender<Grant>,
}

/// Waiters in service order.
#[derive(Default)]
pub(super) struct Queue {
    waiters: BTreeMap<WaitKey, Waiter>,
    finish_tags: HashMap<ClientId, u64>,
    virtual_time: u64,
    seq: u64,
}

/// Past this many remembered clients, those whose tags are behind the virtual clock (so would be
/// reset anyway) are forgotten.
const REMEMBERED_CLIENTS: usize = 4096;

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(super) fn push(&mut self, demand: Demand, grant: oneshot::Sender<Grant>) -> WaitKey {
        let finish = self.finish_tags.entry(demand.client).or_insert(0);
        let start_tag = (*finish).max(self.virtual_time);
        *finish = start_tag + 1;
        self.seq += 1;
        let key = WaitKey { priority: Reverse(demand.priority), start_tag, seq: self.seq };
        self.waiters.insert(key, Waiter { demand, grant });
        key
    }

    pub(super) fn first(&self) -> Option<&Waiter> {
        self.waiters.first_key_value().map(|(_, waiter)| waiter)
    }

    pub(super) fn pop_first(&mut self) -> Option<Waiter> {
        let (key, waiter) = self.waiters.pop_first()?;
        self.virtual_time = self.virtual_time.max(key.start_tag);
        if self.finish_tags.len() > REMEMBERED_CLIENTS {
            let now = self.virtual_time;
            self.finish_tags.retain(|_, finish| *finish > now);
        }
        Some(waiter)
    }

    pub(super) fn remove(&mut self, key: WaitKey) -> Option<Waiter> {
        self.waiters.remove(&key)
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        std::mem::take(&mut self.waiters).into_values()
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::limits::Cost;

    fn demand(client: ClientId, priority: i32) -> Demand {
        Demand {
            client,
            priority,
            cost: Cost { requests: 1, tokens: 1, audio_seconds: 0 },
            prompt_estimate: 0,
            output_budget: 0,
            deadline: Instant::now(),
        }
    }

    fn serve_all(queue: &mut Queue) -> Vec<ClientId> {
        std::iter::from_fn(|| queue.pop_first().map(|w| w.demand.client)).collect()
    }

    #[test]
    fn a_burst_does_not_starve_a_single_request() {
        let mut queue = Queue::default();
        for _ in 0..100 {
            queue.push(demand(1, 0), oneshot::channel().0);
        }
        queue.push(demand(2, 0), oneshot::channel().0);
        let order = serve_all(&mut queue);
        let position = order.iter().position(|&c| c == 2).unwrap();
        assert!(position <= 1, "client 2 served at {position}");
    }

    #[test]
    fn backlogged_clients_alternate_and_priority_goes_first() {
        let mut queue = Queue::default();
        for _ in 0..4 {
            queue.push(demand(1, 0), oneshot::channel().0);
        }
        for _ in 0..4 {
            queue.push(demand(2, 0), oneshot::channel().0);
        }
        queue.push(demand(3, 5), oneshot::channel().0);
        assert_eq!(serve_all(&mut queue), [3, 1, 2, 1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn a_returning_client_does_not_bank_credit() {
        let mut queue = Queue::default();
        for _ in 0..3 {
            queue.push(demand(1, 0), oneshot::channel().0);
        }
        serve_all(&mut queue);
        for _ in 0..3 {
            queue.push(demand(1, 0), oneshot::channel().0);
        }
        queue.push(demand(2, 0), oneshot::channel().0);
        let order = serve_all(&mut queue);
        assert!(order.iter().position(|&c| c == 2).unwrap() <= 1, "{order:?}");
    }
}
