//! Prompt token estimates, before a request is sent.
//!
//! Providers admit a request against their token limits on an estimate of its prompt plus its
//! output budget, so keyrelay must estimate the prompt too. The count comes from a real BPE
//! tokenizer (`o200k_base`); the models behind an OpenAI-compatible API use other tokenizers, so
//! each (provider, model) lane corrects the count by the ratio it observes between its estimates
//! and the `usage.prompt_tokens` the provider reports ([`Correction`]).

use tiktoken_rs::CoreBPE;

/// Tokens each chat message adds for its role and framing (OpenAI cookbook's estimate).
pub const PER_MESSAGE: u64 = 4;
/// Tokens that prime every chat answer.
pub const PER_REQUEST: u64 = 2;

/// Strings longer than this are estimated at 4 bytes per token instead of tokenized, so a huge
/// prompt costs no more than a few milliseconds on the request path.
const TOKENIZE_LIMIT: usize = 256 * 1024;

fn tokenizer() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Loads the tokenizer's tables now rather than on the first request.
pub fn warm_up() {
    let _ = tokenizer().count_ordinary("warm up");
}

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.len() > TOKENIZE_LIMIT {
        return (text.len() as u64).div_ceil(4);
    }
    tokenizer().count_ordinary(text) as u64
}

/// A per-lane correction factor: reported prompt tokens ÷ estimated prompt tokens, smoothed.
#[derive(Debug, Clone, Copy)]
pub struct Correction {
    ratio: f64,
    samples: u32,
}

impl Default for Correction {
    fn default() -> Self {
        Self { ratio: 1.0, samples: 0 }
    }
}

impl Correction {
    /// The estimate corrected by what the provider has reported so far (never below the raw
    /// count's half or above twice it, so one odd answer cannot derail pacing).
    pub fn apply(&self, estimate: u64) -> u64 {
        (estimate as f64 * self.ratio).ceil() as u64
    }

    /// Learns from one answer: the raw estimate made before sending and the reported count.
    pub fn observe(&mut self, estimate: u64, reported: u64) {
        if estimate == 0 || reported == 0 {
            return;
        }
        let sample = (reported as f64 / estimate as f64).clamp(0.5, 2.0);
        // The first answers teach fast; later ones move the ratio by a fixed 10 %.
        self.samples = self.samples.saturating_add(1);
        let weight = (1.0 / f64::from(self.samples)).max(0.1);
        self.ratio += (sample - self.ratio) * weight;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_a_real_tokenizer() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello"), 1);
        let sentence = "The quick brown fox jumps over the lazy dog.";
        assert!((8..=12).contains(&count(sentence)), "{}", count(sentence));
    }

    #[test]
    fn correction_converges_to_the_reported_ratio() {
        let mut correction = Correction::default();
        assert_eq!(correction.apply(100), 100);
        for _ in 0..50 {
            correction.observe(100, 120);
        }
        assert!((119..=121).contains(&correction.apply(100)), "{}", correction.apply(100));
        correction.observe(100, 100_000);
        assert!(correction.apply(100) < 140, "one outlier moves it by at most 10 %");
    }
}
