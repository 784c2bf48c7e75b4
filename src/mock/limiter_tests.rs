//! Unit tests of the limiter with an explicit clock.

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn limiter(limits: MockLimits, algorithm: Algorithm, now: Instant) -> ModelLimiter {
    ModelLimiter::new(&limits, 10 * SEC, 100 * SEC, algorithm, now)
}

fn req(tokens: u64) -> Cost {
    Cost { requests: 1, tokens }
}

#[test]
fn sliding_window_refuses_then_recovers() {
    let t0 = Instant::now();
    let limits = MockLimits { rpm: Some(3), ..MockLimits::UNLIMITED };
    let mut l = limiter(limits, Algorithm::SlidingWindow, t0);
    assert_eq!(l.try_charge(req(0), t0), Ok(0));
    assert_eq!(l.try_charge(req(0), t0 + SEC), Ok(1));
    assert_eq!(l.try_charge(req(0), t0 + 2 * SEC), Ok(2));
    let refusal = l.try_charge(req(0), t0 + 4 * SEC);
    let expected =
        Refusal { dimension: Dimension::Rpm, limit: 3, used: 3, requested: 1, wait: Some(6 * SEC) };
    assert_eq!(refusal, Err(expected));
    assert!(l.try_charge(req(0), t0 + 10 * SEC).is_ok());
    assert!(l.try_charge(req(0), t0 + 10 * SEC).is_err());
}

#[test]
fn bucket_refills_continuously() {
    let t0 = Instant::now();
    let limits = MockLimits { rpm: Some(10), ..MockLimits::UNLIMITED };
    let mut l = limiter(limits, Algorithm::Bucket, t0);
    for _ in 0..10 {
        assert!(l.try_charge(req(0), t0).is_ok());
    }
    let refusal = l.try_charge(req(0), t0).err();
    assert_eq!(refusal.and_then(|r| r.wait), Some(SEC));
    assert!(l.try_charge(req(0), t0 + SEC).is_ok());
    assert!(l.try_charge(req(0), t0 + SEC).is_err());
    assert!(l.try_charge(req(0), t0 + 3 * SEC).is_ok());
    assert!(l.try_charge(req(0), t0 + 3 * SEC).is_ok());
    assert!(l.try_charge(req(0), t0 + 3 * SEC).is_err());
}

#[test]
fn order_and_all_or_nothing() {
    let t0 = Instant::now();
    let mut l = limiter(MockLimits::new(5, 2, 100, 1000), Algorithm::SlidingWindow, t0);
    assert!(l.try_charge(req(60), t0).is_ok());
    let refusal = l.try_charge(req(60), t0).err();
    assert_eq!(refusal.as_ref().map(|r| r.dimension), Some(Dimension::Tpm));
    assert_eq!(refusal.map(|r| (r.used, r.requested)), Some((60, 60)));
    assert!(l.try_charge(req(40), t0).is_ok());
    // RPD (2) is exhausted now; it is checked before TPM.
    let refusal = l.try_charge(req(500), t0).err();
    assert_eq!(refusal.map(|r| r.dimension), Some(Dimension::Rpd));
}

#[test]
fn too_large_for_tpm_never_fits() {
    let t0 = Instant::now();
    let limits = MockLimits { tpm: Some(100), ..MockLimits::UNLIMITED };
    let mut l = limiter(limits, Algorithm::Bucket, t0);
    let refusal = l.try_charge(req(101), t0).err();
    assert_eq!(refusal.map(|r| (r.dimension, r.wait)), Some((Dimension::Tpm, None)));
}

#[test]
fn refund_and_snapshot() {
    for algorithm in [Algorithm::SlidingWindow, Algorithm::Bucket] {
        let t0 = Instant::now();
        let mut l = limiter(MockLimits::new(10, 100, 1000, 10_000), algorithm, t0);
        let id = l.try_charge(req(600), t0);
        assert_eq!(id, Ok(0));
        let snap = l.snapshot(t0);
        let tokens = snap.tokens.map(|s| (s.limit, s.remaining));
        assert_eq!(tokens, Some((1000, 400)), "{algorithm:?}");
        assert_eq!(snap.requests.map(|s| s.remaining), Some(99));
        l.refund_tokens(0, 500, t0);
        let snap = l.snapshot(t0);
        assert_eq!(snap.tokens.map(|s| s.remaining), Some(900), "{algorithm:?}");
        // Sliding: the remaining charge leaves with its window; bucket: 100 tokens refill in 1 s.
        let reset = if algorithm == Algorithm::Bucket { SEC } else { 10 * SEC };
        assert_eq!(snap.tokens.map(|s| s.reset), Some(reset), "{algorithm:?}");
    }
}
