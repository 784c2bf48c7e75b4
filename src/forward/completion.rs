//! What happens once a request's answer is complete (its last byte sent, or the body dropped):
//! the client's quota ticket is settled, duration and tokens are counted, the access line is
//! logged, and a ledger record is queued for the state file.

use std::time::Duration;

use tokio::time::Instant;

use crate::admission::Ticket;
use crate::app::AppState;
use crate::metrics::{ModelLabels, TokenLabels};
use crate::scheduler::Usage;
use crate::store::{LedgerRecord, unix_ms};

/// A request on its way to completion, and the quota it holds until then.
pub(crate) struct Completion {
    state: AppState,
    started: Instant,
    request_id: String,
    ticket: Option<Ticket>,
    record: LedgerRecord,
    sent_upstream: bool,
}

impl Completion {
    pub(crate) fn new(
        state: &AppState,
        request_id: &str,
        model: &str,
        client: &str,
        started: Instant,
    ) -> Self {
        let record = LedgerRecord {
            time_ms: 0,
            client: client.to_owned(),
            model: model.to_owned(),
            key: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            status: 0,
            queue_ms: 0,
            upstream_ms: 0,
        };
        Self {
            state: state.clone(),
            started,
            request_id: request_id.to_owned(),
            ticket: None,
            record,
            sent_upstream: false,
        }
    }

    /// Holds the client's quota ticket until the answer is done.
    pub(crate) fn hold(&mut self, ticket: Ticket) {
        self.ticket = Some(ticket);
    }

    /// Time spent waiting for quota and capacity so far.
    pub(crate) fn queued(&mut self, queued: Duration) {
        self.record.queue_ms = millis(queued);
    }

    /// The attempt that was sent, and how long its response head took.
    pub(crate) fn sent_through(&mut self, key: &str, upstream: Duration) {
        self.sent_upstream = true;
        self.record.key = Some(key.to_owned());
        self.record.upstream_ms = millis(upstream);
    }

    /// The status the client gets (and the final queue time, when known).
    pub(crate) fn answered(&mut self, status: u16, queued: Duration) {
        self.record.status = status;
        if !queued.is_zero() {
            self.record.queue_ms = millis(queued);
        }
    }

    /// `usage` as reported; `None` for an answer that reported none (a relayed body keeps its
    /// estimate, an error answer used no tokens).
    pub(crate) fn done(mut self, usage: Option<Usage>, relayed: bool) {
        if let Some(ticket) = self.ticket.take() {
            match usage {
                Some(usage) => ticket.settle(usage),
                None if relayed => drop(ticket),
                // keyrelay answered itself (a shed, a refusal): the request took no quota.
                None if !self.sent_upstream => ticket.refund(),
                None => ticket.refund_tokens(),
            }
        }
        let metrics = self.state.metrics();
        let model = self.record.model.clone();
        let labels = ModelLabels { model: model.clone() };
        metrics
            .request_duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(usage) = usage {
            self.record.prompt_tokens = usage.prompt_tokens;
            self.record.completion_tokens = usage.completion_tokens;
            for (kind, count) in
                [("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)]
            {
                let labels =
                    TokenLabels { client: self.record.client.clone(), model: model.clone(), kind };
                metrics.tokens.get_or_create(&labels).inc_by(count);
            }
        }
        let record = &self.record;
        tracing::info!(
            target: "keyrelay::access",
            request_id = %self.request_id,
            client = %record.client,
            model = %record.model,
            status = record.status,
            key = record.key.as_deref().unwrap_or("-"),
            queue_ms = record.queue_ms,
            upstream_ms = record.upstream_ms,
            prompt_tokens = record.prompt_tokens,
            completion_tokens = record.completion_tokens,
            duration_ms = millis(self.started.elapsed()),
            "Request done"
        );
        if let Some(store) = self.state.store() {
            self.record.time_ms = unix_ms();
            store.record(self.record.clone());
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
