//! Exponential backoff with full jitter: sleep a random time in `[0, min(max, base × 2^n))`.
//!
//! Full jitter spreads retries of many requests that failed together, so a recovering upstream is
//! not hit by a synchronized wave.

use std::time::Duration;

use crate::config::RetryConfig;

/// The sleep before retry number `retry` (1-based).
pub(super) fn delay(config: &RetryConfig, retry: u32) -> Duration {
    let ceiling = config
        .base_delay
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(config.max_delay);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_maximum() {
        let config = RetryConfig {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for _ in 0..200 {
            assert!(delay(&config, 1) < Duration::from_millis(100));
            assert!(delay(&config, 2) < Duration::from_millis(200));
            assert!(delay(&config, 3) < Duration::from_millis(350));
            assert!(delay(&config, 30) < Duration::from_millis(350));
        }
    }
}
