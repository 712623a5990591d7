//! The `bundles`, `keys` and `persistence_directory` keys, checked against `services`, and the
//! bundle downloaders they describe.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, ConfigError};
use crate::bundle::Limits;
use crate::policy::PolicyStore;
use crate::policy::download::{DownloadSpec, Downloader};

impl Config {
    pub(super) fn validate_bundles(&self, source: &str) -> Result<(), ConfigError> {
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

impl Config {
    /// One downloader per `bundles.<name>`, activating into `store`.
    pub fn bundle_downloaders(&self, store: Arc<PolicyStore>) -> Result<Vec<Downloader>, String> {
        let dir = self
            .persistence_directory
            .clone()
            .unwrap_or_else(|| PathBuf::from(".opa"));
        let mut out = Vec::new();
        for (name, bundle) in &self.bundles {
            let service = self
                .bundle_service(name)
                .map_err(|e| format!("bundles.{name}.service: {e}"))?
                .clone();
            let timeout =
                Duration::from_secs(service.response_header_timeout_seconds.unwrap_or(10));
            let client = crate::services::http_client(timeout)
                .map_err(|e| format!("bundles.{name}: cannot build the HTTP client: {e}"))?;
            let mut limits = Limits::default();
            if let Some(max) = bundle.size_limit_bytes {
                limits.max_archive_bytes = max;
            }
            let url = format!(
                "{}/{}",
                service.url.trim_end_matches('/'),
                bundle.resource_for(name).trim_start_matches('/')
            );
            out.push(Downloader::new(
                DownloadSpec {
                    name: name.clone(),
                    url,
                    service,
                    config: bundle.clone(),
                    verification: self.bundle_verification(name),
                    limits,
                    persist_file: bundle
                        .persist
                        .then(|| dir.join("bundles").join(name).join("bundle.tar.gz")),
                    client,
                },
                store.clone(),
            ));
        }
        Ok(out)
    }
}
