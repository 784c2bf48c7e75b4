//! Rate-limit bookkeeping: the dimensions providers limit, and the sliding window each
//! (account, model, dimension) is counted in.
//!
//! What keyrelay counts itself is counted as strictly as a sliding window: never more than the
//! limit inside any window-long interval. That is safe whatever the provider really runs (fixed
//! window, sliding window or refilling bucket), which providers do not document.

mod headers;
mod window;

use std::time::Duration;

pub use headers::{HeaderReport, REQUESTS, TOKENS, read_headers, read_limit_from_body};
pub use window::{ChargeId, SlidingWindow};

/// A rate-limit dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests per minute.
    Rpm,
    /// Requests per day.
    Rpd,
    /// Tokens per minute.
    Tpm,
    /// Tokens per day.
    Tpd,
    /// Audio seconds per hour.
    Ash,
    /// Audio seconds per day.
    Asd,
}

impl Dimension {
    /// How many dimensions there are (the length of per-dimension arrays).
    pub const COUNT: usize = 6;

    /// Every dimension, in the order providers check them.
    pub const ALL: [Dimension; Self::COUNT] =
        [Self::Rpm, Self::Rpd, Self::Tpm, Self::Tpd, Self::Ash, Self::Asd];

    /// Index into per-dimension arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A bounded label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Rpd => "rpd",
            Self::Tpm => "tpm",
            Self::Tpd => "tpd",
            Self::Ash => "ash",
            Self::Asd => "asd",
        }
    }

    /// Whether the dimension counts tokens (else requests).
    pub fn counts_tokens(self) -> bool {
        matches!(self, Self::Tpm | Self::Tpd)
    }

    /// Whether the dimension counts seconds of audio.
    pub fn counts_audio(self) -> bool {
        matches!(self, Self::Ash | Self::Asd)
    }

    /// Whether the dimension's window is the day.
    pub fn is_daily(self) -> bool {
        matches!(self, Self::Rpd | Self::Tpd | Self::Asd)
    }

    /// The dimension named as `(RPM)`, `(TPD)`… in a provider's 429 message.
    pub fn named_in(message: &str) -> Option<Dimension> {
        [
            ("(RPM)", Self::Rpm),
            ("(RPD)", Self::Rpd),
            ("(TPM)", Self::Tpm),
            ("(TPD)", Self::Tpd),
            ("(ASH)", Self::Ash),
            ("(ASD)", Self::Asd),
        ]
        .into_iter()
        .find_map(|(tag, dimension)| message.contains(tag).then_some(dimension))
    }
}

/// What a request costs in each dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Requests (1, or 0 for a request that is not paced).
    pub requests: u64,
    /// Prompt estimate plus the output budget.
    pub tokens: u64,
    /// Seconds of audio uploaded (transcriptions, translations).
    pub audio_seconds: u64,
}

impl Cost {
    /// The amount charged to `dimension`.
    pub fn of(self, dimension: Dimension) -> u64 {
        if dimension.counts_tokens() {
            self.tokens
        } else if dimension.counts_audio() {
            self.audio_seconds
        } else {
            self.requests
        }
    }
}

/// The two window lengths of a provider, configurable so tests can shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Length of a "minute".
    pub minute: Duration,
    /// Length of a "day".
    pub day: Duration,
    /// Added to every window: what the provider counts arrives a little after keyrelay counts it,
    /// so a slot is reused only once the provider has surely forgotten it.
    pub margin: Duration,
}

impl Windows {
    /// The window of `dimension`, margin included (an "hour" is 60 "minutes", so shortened
    /// windows stay consistent).
    pub fn of(self, dimension: Dimension) -> Duration {
        let window = match dimension {
            Dimension::Ash => self.minute * 60,
            d if d.is_daily() => self.day,
            _ => self.minute,
        };
        window + self.margin
    }
}
