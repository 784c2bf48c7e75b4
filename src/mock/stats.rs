//! What the mock saw: counters ([`MockStats`]) and the last requests ([`RecordedRequest`]),
//! kept by a [`Recorder`] behind one short-held lock.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::Serialize;

/// How many requests `MockServer::requests` keeps.
pub const RECORDED_REQUESTS: usize = 10_000;
/// How much of each request body is kept.
pub const RECORDED_BODY_BYTES: usize = 64 * 1024;

/// Counters since the server started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MockStats {
    /// Requests answered (API routes only, not `/mock/*`).
    pub total: u64,
    /// Status → count.
    pub by_status: BTreeMap<u16, u64>,
    /// Bearer key → status → count (requests without a key are not listed).
    pub by_key: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Organization id → status → count (known keys only).
    pub by_org: BTreeMap<String, BTreeMap<u16, u64>>,
    /// `"RPM"`/`"RPD"`/`"TPM"`/`"TPD"` → number of 429s caused by that dimension.
    pub rate_limited_by_dimension: BTreeMap<String, u64>,
    /// Organization id → tokens charged (after the true-up).
    pub tokens_by_org: BTreeMap<String, u64>,
}

/// One request as the mock received it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query, e.g. `/openai/v1/chat/completions`.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// The bearer token, if any.
    pub key: Option<String>,
    /// All request headers (values decoded lossily).
    #[serde(serialize_with = "serialize_pairs")]
    pub headers: Vec<(String, String)>,
    /// The first 64 KiB of the body.
    #[serde(serialize_with = "serialize_body")]
    pub body: Bytes,
    /// Status of the answer.
    pub status: u16,
    /// Arrival time in milliseconds since the server started.
    pub received_at_ms: u64,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn serialize_pairs<S: serde::Serializer>(
    pairs: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(pairs.iter().map(|(n, v)| [n, v]))
}

fn serialize_body<S: serde::Serializer>(body: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(body))
}

/// Counters plus a ring of the last [`RECORDED_REQUESTS`] requests.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    stats: MockStats,
    requests: VecDeque<RecordedRequest>,
}

impl Recorder {
    /// Counts and stores one answered request.
    pub(crate) fn record(&mut self, request: RecordedRequest, org: Option<&str>) {
        let status = request.status;
        self.stats.total += 1;
        *self.stats.by_status.entry(status).or_default() += 1;
        if let Some(key) = &request.key {
            let per_key = self.stats.by_key.entry(key.clone()).or_default();
            *per_key.entry(status).or_default() += 1;
        }
        if let Some(org) = org {
            let per_org = self.stats.by_org.entry(org.to_owned()).or_default();
            *per_org.entry(status).or_default() += 1;
        }
        if self.requests.len() == RECORDED_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }

    /// Counts a 429 caused by `dimension` (`"RPM"` …).
    pub(crate) fn rate_limited(&mut self, dimension: &str) {
        *self.stats.rate_limited_by_dimension.entry(dimension.to_owned()).or_default() += 1;
    }

    /// Adds charged tokens.
    pub(crate) fn charge_tokens(&mut self, org: &str, tokens: u64) {
        if tokens > 0 {
            *self.stats.tokens_by_org.entry(org.to_owned()).or_default() += tokens;
        }
    }

    /// Takes back tokens refunded by the true-up.
    pub(crate) fn refund_tokens(&mut self, org: &str, tokens: u64) {
        if let Some(total) = self.stats.tokens_by_org.get_mut(org) {
            *total = total.saturating_sub(tokens);
        }
    }

    pub(crate) fn stats(&self) -> MockStats {
        self.stats.clone()
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.iter().cloned().collect()
    }
}
