//! The `bundles`, `keys` and `persistence_directory` config keys (OPA's), re-exported from
//! [`crate::config`], and their validation.

use serde::Deserialize;

use crate::config::{Config, ConfigError};

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

impl Config {
    pub(crate) fn validate_bundles(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key,
            message,
        };
        for (id, key) in &self.keys {
            let alg = crate::bundle::signing::algorithm(&key.algorithm)
                .map_err(|e| invalid(format!("keys.{id}.algorithm"), e.to_string()))?;
            if let Some(text) = &key.key {
                crate::bundle::signing::verification_key(alg, text)
                    .map_err(|e| invalid(format!("keys.{id}.key"), e.to_string()))?;
            }
        }
        for (name, b) in &self.bundles {
            let at = |k: &str| format!("bundles.{name}.{k}");
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(invalid(
                    format!("bundles.{name}"),
                    "a bundle name must be non-empty, without '/' and not start with '.'".into(),
                ));
            }
            self.bundle_service(name)
                .map_err(|m| invalid(at("service"), m))?;
            if b.polling.min_delay_seconds == 0 {
                return Err(invalid(
                    at("polling.min_delay_seconds"),
                    "must be at least 1".into(),
                ));
            }
            if b.polling.max_delay_seconds < b.polling.min_delay_seconds {
                return Err(invalid(
                    at("polling.max_delay_seconds"),
                    "must not be less than min_delay_seconds".into(),
                ));
            }
            if b.polling.long_polling_timeout_seconds.is_some() {
                return Err(invalid(
                    at("polling.long_polling_timeout_seconds"),
                    "long polling is not supported; remove it to poll periodically".into(),
                ));
            }
            if let Some(trigger) = &b.trigger
                && trigger != "periodic"
            {
                return Err(invalid(
                    at("trigger"),
                    format!("only \"periodic\" is supported, got {trigger:?}"),
                ));
            }
            if b.size_limit_bytes == Some(0) {
                return Err(invalid(
                    at("size_limit_bytes"),
                    "must be greater than 0".into(),
                ));
            }
            if let Some(signing) = &b.signing {
                match &signing.keyid {
                    Some(id) => match self.keys.get(id) {
                        None => {
                            return Err(invalid(
                                at("signing.keyid"),
                                format!("no key {id:?} under keys"),
                            ));
                        }
                        Some(k) if k.key.is_none() => {
                            return Err(invalid(
                                format!("keys.{id}.key"),
                                "a verification key is required".into(),
                            ));
                        }
                        Some(_) => {}
                    },
                    None if self.keys.is_empty() => {
                        return Err(invalid(
                            at("signing"),
                            "signature verification needs at least one entry under keys".into(),
                        ));
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// The service a bundle downloads from: its `service`, or the only service configured.
    pub fn bundle_service(&self, bundle: &str) -> Result<&crate::services::Service, String> {
        let config = self
            .bundles
            .get(bundle)
            .ok_or_else(|| format!("no bundle {bundle:?}"))?;
        match &config.service {
            Some(name) => self
                .services
                .get(name)
                .ok_or_else(|| format!("no service {name:?} under services")),
            None => {
                let mut all = self.services.0.values();
                match (all.next(), all.next()) {
                    (Some(only), None) => Ok(only),
                    (None, _) => Err("no services are configured to download it from".into()),
                    _ => Err("several services are configured: name one".into()),
                }
            }
        }
    }

    /// How a bundle's signature is verified, when its config asks for it.
    pub fn bundle_verification(&self, bundle: &str) -> Option<crate::bundle::Verification> {
        let signing = self.bundles.get(bundle)?.signing.as_ref()?;
        Some(crate::bundle::Verification {
            keys: self.keys.clone(),
            key_id: signing.keyid.clone(),
            scope: signing.scope.clone(),
            exclude_files: signing.exclude_files.clone(),
        })
    }
}
