//! The usage ledger: one record per request, and the totals `keyrelay usage` prints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One finished request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// When it finished (unix ms).
    pub time_ms: u64,
    /// Client name (`anonymous` in open mode).
    pub client: String,
    /// Model asked for.
    pub model: String,
    /// Alias of the upstream key that answered, if any did.
    pub key: Option<String>,
    /// Tokens the provider reported.
    pub prompt_tokens: u64,
    /// Tokens the provider reported.
    pub completion_tokens: u64,
    /// HTTP status the client got.
    pub status: u16,
    /// Time spent waiting for quota and capacity.
    pub queue_ms: u64,
    /// Time from sending upstream to its response head.
    pub upstream_ms: u64,
}

/// Totals of one (day, client, model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Client name.
    pub client: String,
    /// Model.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Totals per day, client and model, in that order.
pub fn usage_report(records: &[LedgerRecord]) -> Vec<UsageRow> {
    let mut rows: BTreeMap<(String, String, String), UsageRow> = BTreeMap::new();
    for record in records {
        let day = utc_day(record.time_ms);
        let row = rows
            .entry((day.clone(), record.client.clone(), record.model.clone()))
            .or_insert_with(|| UsageRow {
                day,
                client: record.client.clone(),
                model: record.model.clone(),
                ..UsageRow::default()
            });
        row.requests += 1;
        row.errors += u64::from(record.status >= 400);
        row.prompt_tokens += record.prompt_tokens;
        row.completion_tokens += record.completion_tokens;
    }
    rows.into_values().collect()
}

/// `YYYY-MM-DD` of a unix time in ms (proleptic Gregorian, UTC).
fn utc_day(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_796_428_800_000), "2026-12-05");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn totals_group_by_day_client_and_model() {
        let record = |time_ms, client: &str, status, tokens| LedgerRecord {
            time_ms,
            client: client.into(),
            model: "m".into(),
            key: Some("k".into()),
            prompt_tokens: tokens,
            completion_tokens: 1,
            status,
            queue_ms: 0,
            upstream_ms: 5,
        };
        let rows = usage_report(&[
            record(1_000, "a", 200, 10),
            record(2_000, "a", 429, 0),
            record(3_000, "b", 200, 7),
            record(90_000_000, "a", 200, 1),
        ]);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].client.as_str(), rows[0].requests, rows[0].errors, rows[0].prompt_tokens),
            ("a", 2, 1, 10)
        );
        assert_eq!(rows[2].day, "1970-01-02");
    }
}
