use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

const GROQ_TPM_429: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01` service tier `on_demand` on tokens per minute (TPM): Limit 12000, Used 6144, Requested 5938. Please try again in 410ms. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing","type":"tokens","code":"rate_limit_exceeded"}}"#;

#[test]
fn groq_429_cools_for_the_body_wait_and_names_the_dimension() {
    let verdict = classify(status(429), &headers(&[("retry-after", "1")]), GROQ_TPM_429.as_bytes());
    assert_eq!(
        verdict,
        Verdict::RateLimited {
            wait: Duration::from_millis(410),
            limit: Some((Dimension::Tpm, 12000)),
            dimension: Some(Dimension::Tpm),
        }
    );
}

#[test]
fn daily_limits_cool_for_minutes_to_hours() {
    let body = r#"{"error":{"message":"Rate limit reached for model `m` in organization `o` on tokens per day (TPD): Limit 100000, Used 97050, Requested 3619. Please try again in 9m38.016s. Visit https://console.groq.com/docs/rate-limits for more information.","type":"tokens","code":"rate_limit_exceeded"}}"#;
    let verdict = classify(status(429), &HeaderMap::new(), body.as_bytes());
    assert_eq!(
        verdict,
        Verdict::RateLimited {
            wait: Duration::from_millis(578_016),
            limit: Some((Dimension::Tpd, 100_000)),
            dimension: Some(Dimension::Tpd),
        }
    );
}

#[test]
fn header_fallbacks_in_order() {
    let wait = |h: &[(&'static str, &'static str)]| match classify(status(429), &headers(h), b"") {
        Verdict::RateLimited { wait, .. } => wait,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        wait(&[("retry-after-ms", "1500"), ("retry-after", "9")]),
        Duration::from_millis(1500)
    );
    assert_eq!(wait(&[("retry-after", "2")]), Duration::from_secs(2));
    assert_eq!(
        wait(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2m59.56s"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("x-ratelimit-reset-tokens", "7.66s"),
        ]),
        Duration::from_millis(179_560)
    );
    assert_eq!(wait(&[]), FALLBACK_COOLDOWN);
}

#[test]
fn dead_keys_are_recognised_by_status_and_code() {
    let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    assert_eq!(
        classify(status(429), &HeaderMap::new(), quota.as_bytes()),
        Verdict::KeyDead(DisableReason::OutOfQuota)
    );
    let invalid = r#"{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    assert_eq!(
        classify(status(401), &HeaderMap::new(), invalid.as_bytes()),
        Verdict::KeyDead(DisableReason::InvalidKey)
    );
    let restricted = r#"{"error":{"message":"Organization has been restricted.","type":"invalid_request_error","code":"organization_restricted"}}"#;
    assert_eq!(
        classify(status(400), &HeaderMap::new(), restricted.as_bytes()),
        Verdict::KeyDead(DisableReason::Forbidden)
    );
    assert_eq!(
        classify(status(403), &HeaderMap::new(), restricted.as_bytes()),
        Verdict::KeyDead(DisableReason::Forbidden)
    );
    assert_eq!(classify(status(403), &HeaderMap::new(), b"error code: 1010"), Verdict::Final);
    let model_denied = r#"{"error":{"message":"You do not have access to this model","type":"invalid_request_error","code":"model_permission_denied"}}"#;
    assert_eq!(classify(status(403), &HeaderMap::new(), model_denied.as_bytes()), Verdict::Final);
    let mismatched = r#"{"error":{"message":"OpenAI-Organization header should match organization for API key","type":"invalid_request_error","code":"mismatched_organization"}}"#;
    assert_eq!(classify(status(401), &HeaderMap::new(), mismatched.as_bytes()), Verdict::Final);
}

#[test]
fn request_larger_than_tpm_is_final() {
    let body = r#"{"error":{"message":"Request too large for model `m` in organization `o` on tokens per minute (TPM): Limit 12000, Requested 14137, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}"#;
    assert_eq!(classify(status(413), &HeaderMap::new(), body.as_bytes()), Verdict::Final);
}

#[test]
fn server_errors_and_flex_capacity_are_transient_others_final() {
    for code in [498, 500, 502, 503, 504] {
        assert_eq!(classify(status(code), &HeaderMap::new(), b"{}"), Verdict::Transient, "{code}");
    }
    for code in [400, 404, 409, 422] {
        assert_eq!(classify(status(code), &HeaderMap::new(), b"{}"), Verdict::Final, "{code}");
    }
    assert_eq!(classify(status(200), &HeaderMap::new(), b""), Verdict::Success);
}
