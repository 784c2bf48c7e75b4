//! Durations written the way providers write them.
//!
//! Groq and OpenAI report resets and waits as Go `time.Duration` strings (`2m59.56s`, `817.5ms`,
//! `6m0s`, `1h2m3s`, `6.780999999s`); the config file uses the same grammar (`250ms`, `60s`, `24h`)
//! so there is one parser for both.

use std::time::Duration;

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration")]
    Empty,
    /// A number without a unit, or a unit not in `d h m s ms us µs ns`.
    #[error(
        "`{0}` is not a duration: write a number with a unit, like `500ms`, `2s`, `1m30s` or `24h`"
    )]
    Malformed(String),
}

/// Parses a sequence of `<decimal><unit>` terms (`d`, `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`).
///
/// A bare `0` is accepted, as Go prints it. Negative values are rejected.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(malformed)?;
        if number_len == 0 {
            return Err(malformed());
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| malformed())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "d" => 86_400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(malformed()),
        };
        rest = &rest[unit_len..];
        total += value * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| malformed())
}

/// Formats a duration in the same grammar, to the millisecond (`1m30s`, `250ms`, `2h0m5s`).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, rem) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rem) = (rem / 60_000, rem % 60_000);
    let (seconds, millis) = (rem / 1000, rem % 1000);
    let seconds =
        if millis == 0 { format!("{seconds}s") } else { format!("{seconds}.{millis:03}s") };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_providers_send() {
        let cases = [
            ("2m59.56s", 179_560),
            ("817.5ms", 817),
            ("6m0s", 360_000),
            ("1h2m3s", 3_723_000),
            ("410ms", 410),
            ("269.999999ms", 269),
            ("6.780999999s", 6_780),
            ("21m55.872s", 1_315_872),
            ("15h7m12s", 54_432_000),
            ("8h", 28_800_000),
            ("0", 0),
            ("1500us", 1),
            ("2s", 2_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse(text).map(|d| d.as_millis()), Ok(millis), "{text}");
        }
    }

    #[test]
    fn minutes_are_not_confused_with_milliseconds() {
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse("1m1ms"), Ok(Duration::from_millis(60_001)));
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "10", "s", "1x", "-1s", "1.2.3s", "abc"] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn format_round_trips() {
        for millis in [0, 5, 999, 1000, 1500, 61_000, 3_723_004, 86_400_000] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse(&format(duration)), Ok(duration), "{millis}");
        }
    }
}
