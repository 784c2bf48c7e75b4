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

/// Bytes of one request tokenized at most; the rest is estimated at 4 bytes per token, so a huge
/// prompt (many strings or one) costs no more than a few milliseconds on the request path.
pub const REQUEST_BUDGET: usize = 256 * 1024;

thread_local! {
    /// What is left of the current request's budget (see [`with_budget`]).
    static BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(REQUEST_BUDGET) };
}

/// Runs `f` (which counts one request's strings) with a fresh tokenizing budget.
pub fn with_budget<T>(f: impl FnOnce() -> T) -> T {
    let previous = BUDGET.replace(REQUEST_BUDGET);
    let out = f();
    BUDGET.set(previous);
    out
}

fn tokenizer() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Loads the tokenizer's tables now rather than on the first request.
pub fn warm_up() {
    let _ = tokenizer().count_ordinary("warm up");
}

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    let left = BUDGET.get();
    BUDGET.set(left.saturating_sub(text.len()));
    if text.len() > left {
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
    fn past_the_request_budget_strings_are_estimated_not_tokenized() {
        let word = "tokenize ".repeat(1000);
        let (first, rest) = with_budget(|| {
            let first = count(&word);
            for _ in 0..(REQUEST_BUDGET / word.len()) {
                count(&word);
            }
            (first, count(&word))
        });
        assert!(first < 2000, "tokenized: {first}");
        assert_eq!(rest, (word.len() as u64).div_ceil(4), "estimated past the budget");
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
