//! Durations as text: parsing `"2s"`, `"500ms"`, `"1h30m"` for the mock's TOML config (a serde
//! helper), and formatting waits the way Groq prints them (Go's `time.Duration.String()`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration such as `"2s"`, `"500ms"`, `"1m"`, `"24h"` or `"1h2m3.5s"` (the grammar of
/// [`crate::duration::parse`]); a bare number is read as seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return secs_to_duration(secs, text);
    }
    crate::duration::parse(text).map_err(|e| e.to_string())
}

fn secs_to_duration(secs: f64, text: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration `{text}`: {e}"))
}

/// Serde helper: `#[serde(deserialize_with = "deserialize_duration")]` accepts a string such as
/// `"2s"` (see [`parse_duration`]) or a number of seconds.
pub(crate) fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Text(text) => parse_duration(&text).map_err(de::Error::custom),
        Raw::Secs(secs) => secs_to_duration(secs, &secs.to_string()).map_err(de::Error::custom),
    }
}

/// Formats a duration like Go's `time.Duration.String()`: `0s`, `410ms`, `6.780999s`, `2m59.56s`,
/// `1h2m3s`. Sub-millisecond durations are rounded up to `1ms` so the text stays ASCII (Go would
/// print `µs`, which is not a valid header byte).
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000 {
        return "1ms".to_owned();
    }
    if nanos < NANOS_PER_SEC {
        return format!("{}ms", fixed_point(nanos, 1_000_000));
    }
    let total_secs = nanos / NANOS_PER_SEC;
    let (hours, minutes) = (total_secs / 3600, (total_secs / 60) % 60);
    let secs = fixed_point(nanos % (60 * NANOS_PER_SEC), NANOS_PER_SEC);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{secs}s");
    out
}

/// `value / unit` as a decimal with trailing zeros of the fraction trimmed.
fn fixed_point(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Rounds a duration up to whole microseconds, so a client waiting the printed time is never
/// early.
pub(crate) fn ceil_micros(duration: Duration) -> Duration {
    let micros = duration.as_nanos().div_ceil(1_000);
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// `retry-after` value: whole seconds rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_nanos().div_ceil(NANOS_PER_SEC);
    u64::try_from(secs).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(410), "410ms"),
            (Duration::from_micros(817_500), "817.5ms"),
            (Duration::from_nanos(6_780_999_999), "6.780999999s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(179_560), "2m59.56s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_micros(5), "1ms"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_go_duration(duration), text);
        }
    }

    #[test]
    fn parses_units() {
        let cases = [
            ("2s", Duration::from_secs(2)),
            ("500ms", Duration::from_millis(500)),
            ("1m", Duration::from_secs(60)),
            ("24h", Duration::from_secs(86_400)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("1.5", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
