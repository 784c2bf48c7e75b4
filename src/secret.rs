//! Upstream API keys as a type that cannot leak.
//!
//! An [`ApiKey`] has no `Display`, its `Debug` prints a placeholder, and the only way to read it is
//! [`ApiKey::authorization`], which yields a header value marked sensitive (so hyper and
//! tower-http's sensitive-header layer never print it).

use http::HeaderValue;
use sha2::{Digest, Sha256};

/// A provider API key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    authorization: HeaderValue,
    fingerprint: String,
}

/// A key held characters that cannot appear in an HTTP header.
#[derive(Debug, thiserror::Error)]
#[error(
    "the key is empty or contains characters not allowed in an HTTP header (check for stray quotes or newlines)"
)]
pub struct InvalidKey;

impl ApiKey {
    /// Wraps a key read from config or the environment.
    pub fn new(key: &str) -> Result<Self, InvalidKey> {
        let key = key.trim();
        if key.is_empty() {
            return Err(InvalidKey);
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| InvalidKey)?;
        authorization.set_sensitive(true);
        let digest = Sha256::digest(key.as_bytes());
        let fingerprint = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { authorization, fingerprint })
    }

    /// The first 8 bytes of the key's SHA-256, in hex: tells a replaced key from the one that was
    /// disabled under the same alias, without revealing anything usable.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The `Authorization: Bearer …` value to send upstream.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("gsk_live_secret_value").unwrap();
        let printed = format!("{key:?} {:?}", key.authorization());
        assert!(!printed.contains("secret_value"), "{printed}");
        assert!(key.authorization().is_sensitive());
    }

    #[test]
    fn rejects_keys_that_cannot_be_sent() {
        assert!(ApiKey::new("").is_err());
        assert!(ApiKey::new("abc\ndef").is_err());
    }
}
