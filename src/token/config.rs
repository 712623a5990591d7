//! The `internal_token:` config section (DESIGN §6).

use crate::invalid::Invalid;
use std::path::PathBuf;

use serde::Deserialize;

/// `internal_token:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalToken {
    /// Mint on every allow (otherwise only when the decision asks).
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Default audience when the decision names none (else the destination principal).
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// The longest lifetime a decision may ask for.
    #[serde(default = "default_max_ttl")]
    pub max_ttl_seconds: u64,
    #[serde(default)]
    pub keys: KeysConfig,
    /// Remove the caller's `authorization` header when a token is set.
    #[serde(default)]
    pub remove_authorization: bool,
    /// Most tokens kept for reuse.
    #[serde(default = "default_cache")]
    pub cache_size: usize,
    /// Where verifiers fetch the keys, as `/.well-known/openid-configuration` advertises it
    /// (an absolute http(s) URL). Unset: the HTTP API's own `/.well-known/jwks.json` at the
    /// host the discovery document was asked from.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

impl Default for InternalToken {
    fn default() -> Self {
        Self {
            enabled: false,
            header: default_header(),
            issuer: default_issuer(),
            audience: None,
            ttl_seconds: default_ttl(),
            max_ttl_seconds: default_max_ttl(),
            keys: KeysConfig::default(),
            remove_authorization: false,
            cache_size: default_cache(),
            jwks_uri: None,
        }
    }
}

/// `internal_token.keys`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// A directory of PKCS#8 PEM private keys (`<kid>.pem`, Ed25519 or P-256); the most
    /// recently modified signs. Absent or empty: one key is generated in memory.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// For generated keys: `EdDSA` (default) or `ES256`.
    #[serde(default)]
    pub algorithm: SigningAlg,
}

/// The internal token's signature algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    #[default]
    EdDSA,
    ES256,
}

impl SigningAlg {
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::ES256 => "ES256",
        }
    }
}

fn default_header() -> String {
    "x-internal-token".into()
}
fn default_issuer() -> String {
    "https://portcullis.local".into()
}
fn default_ttl() -> u64 {
    60
}
fn default_max_ttl() -> u64 {
    300
}
fn default_cache() -> usize {
    10_000
}

impl InternalToken {
    /// Static checks; `Err(Invalid::new(key, message))`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |k: &str| k.to_string();
        if self.ttl_seconds == 0 {
            return Err(Invalid::new(at("ttl_seconds"), "must be greater than 0"));
        }
        if self.max_ttl_seconds < self.ttl_seconds {
            return Err(Invalid::new(
                at("max_ttl_seconds"),
                "must be at least ttl_seconds",
            ));
        }
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err()
            || self.header.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(Invalid::new(
                at("header"),
                "must be a lowercase HTTP header name",
            ));
        }
        if self.issuer.is_empty() {
            return Err(Invalid::new(at("issuer"), "must not be empty"));
        }
        if let Some(uri) = &self.jwks_uri {
            let absolute = reqwest::Url::parse(uri)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !absolute {
                return Err(Invalid::new(
                    at("jwks_uri"),
                    "must be an absolute http(s) URL, e.g. https://auth.example.com/.well-known/jwks.json",
                ));
            }
        }
        Ok(())
    }
}
