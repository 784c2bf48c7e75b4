//! Which headers cross the proxy in each direction.
//!
//! Hop-by-hop headers describe one connection and never cross. The client's credentials are
//! replaced by the upstream key. `accept-encoding` is dropped so answers arrive uncompressed and
//! their usage can be read on the way through. The upstream's `x-ratelimit-*` headers describe
//! one of keyrelay's accounts, not the client, so they are not passed back; the provider's
//! `x-request-id` comes back as `x-upstream-request-id`, since `x-request-id` is the client's.

use http::{HeaderMap, HeaderName, HeaderValue, header};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The headers to send upstream, given the client's.
pub(super) fn upstream_request(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    for name in
        [header::HOST, header::CONTENT_LENGTH, header::AUTHORIZATION, header::ACCEPT_ENCODING]
    {
        headers.remove(name);
    }
    // The client's own OpenAI organization and project would not match keyrelay's keys, and the
    // provider would answer 401 `mismatched_organization` for every key.
    for name in ["api-key", "openai-organization", "openai-project"] {
        headers.remove(name);
    }
    let ours: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with("x-keyrelay-")).cloned().collect();
    for name in ours {
        headers.remove(name);
    }
    if !headers.contains_key(header::USER_AGENT) {
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("keyrelay/", env!("CARGO_PKG_VERSION"))),
        );
    }
    headers
}

/// The headers to send back to the client, given the upstream's (consumed).
pub(super) fn client_response(mut upstream: HeaderMap, appends_to_body: bool) -> HeaderMap {
    strip_hop_by_hop(&mut upstream);
    if appends_to_body {
        upstream.remove(header::CONTENT_LENGTH);
    }
    let limits: Vec<HeaderName> =
        upstream.keys().filter(|name| name.as_str().starts_with("x-ratelimit-")).cloned().collect();
    for name in limits {
        upstream.remove(name);
    }
    // The client's request id is keyrelay's; the provider's stays visible for support tickets.
    if let Some(id) = upstream.remove("x-request-id") {
        upstream.insert("x-upstream-request-id", id);
    }
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn client_credentials_and_hop_by_hop_headers_do_not_go_upstream() {
        let sent = upstream_request(&map(&[
            ("authorization", "Bearer client-key"),
            ("api-key", "client-key"),
            ("openai-organization", "org-client"),
            ("openai-project", "proj-client"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "localhost:8080"),
            ("content-length", "12"),
            ("accept-encoding", "gzip"),
            ("x-keyrelay-priority", "high"),
            ("x-stainless-retry-count", "0"),
            ("content-type", "application/json"),
            ("user-agent", "OpenAI/Python 1.0"),
        ]));
        let names: Vec<_> = sent.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(sent["x-stainless-retry-count"], "0");
        assert_eq!(sent["content-type"], "application/json");
        assert_eq!(sent["user-agent"], "OpenAI/Python 1.0");
    }

    #[test]
    fn a_user_agent_is_always_sent() {
        assert!(
            upstream_request(&HeaderMap::new())[header::USER_AGENT]
                .to_str()
                .unwrap()
                .starts_with("keyrelay/")
        );
    }

    #[test]
    fn upstream_rate_limit_headers_do_not_reach_the_client() {
        let back = client_response(
            map(&[
                ("x-ratelimit-remaining-tokens", "5"),
                ("transfer-encoding", "chunked"),
                ("content-length", "10"),
                ("x-request-id", "req_1"),
            ]),
            true,
        );
        let names: Vec<_> = back.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-upstream-request-id"]);
    }
}
