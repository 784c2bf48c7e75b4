//! Client authentication: the bearer key of a request → its configured client.
//!
//! Keys are kept only as SHA-256 digests; a presented key is hashed and compared with every
//! client's digest in constant time (no early exit), so timing reveals nothing about which bytes
//! matched. With no clients configured keyrelay runs open and every request is anonymous.

use std::sync::Arc;

use http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admission::ClientState;
use crate::config::Config;

/// Every configured client.
#[derive(Debug)]
pub struct Clients {
    clients: Vec<Arc<ClientState>>,
}

/// No valid client key was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized;

impl Clients {
    /// Clients from validated config.
    pub fn new(config: &Config) -> Self {
        let clients = config
            .clients
            .iter()
            .map(|c| Arc::new(ClientState::new(c.clone(), config.quota_windows)))
            .collect();
        Self { clients }
    }

    /// The clients of a reloaded `config`: a client whose name is kept keeps its state (usage,
    /// requests in flight) with its new settings; new names start fresh.
    pub fn reconfigured(&self, config: &Config) -> Self {
        let clients = config
            .clients
            .iter()
            .map(|c| match self.clients.iter().find(|old| old.name == c.name) {
                Some(old) => {
                    old.reconfigure(c.clone());
                    Arc::clone(old)
                }
                None => Arc::new(ClientState::new(c.clone(), config.quota_windows)),
            })
            .collect();
        Self { clients }
    }

    /// True when no clients are configured: requests need no key.
    pub fn is_open(&self) -> bool {
        self.clients.is_empty()
    }

    /// Every client.
    pub fn all(&self) -> &[Arc<ClientState>] {
        &self.clients
    }

    /// The client whose key the request carries (`Authorization: Bearer …` or `api-key`);
    /// `None` in open mode.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<ClientState>>, Unauthorized> {
        if self.is_open() {
            return Ok(None);
        }
        let presented = presented_key(headers).ok_or(Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Arc<ClientState>> = None;
        for client in &self.clients {
            if bool::from(client.config().key_sha256.ct_eq(&digest)) {
                found = Some(client);
            }
        }
        found.cloned().map(Some).ok_or(Unauthorized)
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn clients() -> Clients {
        let text = r#"
            [[providers]]
            kind = "groq"
            [[providers.accounts]]
            name = "a"
            keys = ["k"]
            [[clients]]
            name = "alpha"
            key = "client-alpha-key"
            [[clients]]
            name = "beta"
            key_sha256 = "5b1bc1c6b5b80b7a3fbd2e1d01bb2b5afcc79e3b1cf9b1b23d87d9ab1b40f8a1"
        "#;
        Clients::new(&Config::from_toml(text, "t.toml", &HashMap::new()).unwrap())
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        headers
    }

    #[test]
    fn the_right_key_finds_its_client_and_others_are_refused() {
        let clients = clients();
        let alpha = clients.authenticate(&bearer("client-alpha-key")).unwrap().unwrap();
        assert_eq!(alpha.name, "alpha");
        assert!(matches!(clients.authenticate(&bearer("client-alpha-kez")), Err(Unauthorized)));
        assert!(matches!(clients.authenticate(&HeaderMap::new()), Err(Unauthorized)));
        let mut azure = HeaderMap::new();
        azure.insert("api-key", "client-alpha-key".parse().unwrap());
        assert!(clients.authenticate(&azure).unwrap().is_some());
    }

    #[test]
    fn open_mode_needs_no_key() {
        let text =
            "[[providers]]\nkind = \"groq\"\n[[providers.accounts]]\nname = \"a\"\nkeys = [\"k\"]";
        let clients = Clients::new(&Config::from_toml(text, "t.toml", &HashMap::new()).unwrap());
        assert!(clients.is_open());
        assert!(matches!(clients.authenticate(&HeaderMap::new()), Ok(None)));
    }
}
