//! The `bundles` and `keys` config sections (OPA's keys); the config loader
//! (`crate::config`) validates them together with `services`.

use serde::Deserialize;

/// `bundles.<name>`: one bundle downloaded from a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// The `services` entry to download from; may be left out when exactly one is configured.
    #[serde(default)]
    pub service: Option<String>,
    /// The path under the service URL; default `bundles/<name>`.
    #[serde(default)]
    pub resource: Option<String>,
    /// Keep the last activated bundle on disk and activate it at the next start, before the
    /// first download.
    #[serde(default)]
    pub persist: bool,
    #[serde(default)]
    pub polling: Polling,
    /// Require a valid `.signatures.json`, checked with `keys`.
    #[serde(default)]
    pub signing: Option<Signing>,
    /// Only `periodic` (the default) is supported.
    #[serde(default)]
    pub trigger: Option<String>,
    /// The largest archive accepted (default 64 MiB).
    #[serde(default)]
    pub size_limit_bytes: Option<u64>,
}

impl BundleConfig {
    /// The resource path, OPA's default when unset.
    pub fn resource_for(&self, name: &str) -> String {
        self.resource
            .clone()
            .unwrap_or_else(|| format!("bundles/{name}"))
    }
}

/// `bundles.<name>.polling`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Polling {
    #[serde(default = "default_min_delay")]
    pub min_delay_seconds: u64,
    #[serde(default = "default_max_delay")]
    pub max_delay_seconds: u64,
    /// Long polling is not supported; setting it is an error rather than ignored.
    #[serde(default)]
    pub long_polling_timeout_seconds: Option<u64>,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            min_delay_seconds: default_min_delay(),
            max_delay_seconds: default_max_delay(),
            long_polling_timeout_seconds: None,
        }
    }
}

fn default_min_delay() -> u64 {
    60
}
fn default_max_delay() -> u64 {
    120
}

/// `bundles.<name>.signing`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    #[serde(default)]
    pub keyid: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
}

/// `keys.<id>`: a bundle verification key, as OPA configures it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// `RS256` (default), `RS384`, `RS512`, `PS256`.., `ES256`, `ES384`, `EdDSA`, `HS256`..
    #[serde(default = "default_key_algorithm")]
    pub algorithm: String,
    /// PEM public key (or the secret for HS*).
    #[serde(default)]
    pub key: Option<String>,
    /// Accepted for compatibility with OPA's config (used by `opa build`, not at run time).
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = self.algorithm.starts_with("HS");
        f.debug_struct("KeyConfig")
            .field("algorithm", &self.algorithm)
            .field(
                "key",
                &self
                    .key
                    .as_ref()
                    .map(|k| if secret { "<redacted>" } else { k.as_str() }),
            )
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

fn default_key_algorithm() -> String {
    "RS256".into()
}
