//! Trusted OIDC issuers (`authentication.trust.oidc`), Talon-style: keys come from OIDC
//! discovery (`<issuer>/.well-known/openid-configuration` → `jwks_uri`), done on first use and
//! retried at most once per cooldown while it fails. The discovery document's `issuer` must be
//! the configured issuer exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde_json::Value as Json;

use super::config::OidcTrust;
use super::jwks::{KeySource, RemoteJwks, fetch_text};
use super::jwt::{EmailRule, JwtVerifier};
use super::metrics::AuthnMetrics;
use crate::jose::Alg;

/// How long discovery waits, and between failed attempts.
const DISCOVERY_TIMEOUT: Duration = Duration::from_millis(1500);
const DISCOVERY_COOLDOWN: Duration = Duration::from_secs(30);
const JWKS_COOLDOWN: Duration = Duration::from_secs(30);

/// One trusted issuer.
pub struct OidcIssuer {
    pub config: OidcTrust,
    client: reqwest::Client,
    verifier: ArcSwapOption<JwtVerifier>,
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
    metrics: Arc<AuthnMetrics>,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("issuer", &self.config.issuer)
            .finish()
    }
}

impl OidcIssuer {
    pub fn new(config: OidcTrust, metrics: Arc<AuthnMetrics>) -> Result<Self, String> {
        Ok(Self {
            config,
            metrics,
            client: crate::services::http_client(DISCOVERY_TIMEOUT).map_err(|e| e.to_string())?,
            verifier: ArcSwapOption::empty(),
            last_attempt: tokio::sync::Mutex::new(None),
            cooldown: DISCOVERY_COOLDOWN,
        })
    }

    /// The issuer's verifier, discovering it first if needed.
    pub async fn verifier(&self) -> Option<Arc<JwtVerifier>> {
        if let Some(v) = self.verifier.load_full() {
            return Some(v);
        }
        let mut last = self.last_attempt.lock().await;
        if let Some(v) = self.verifier.load_full() {
            return Some(v);
        }
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return None;
        }
        *last = Some(Instant::now());
        match self.discover().await {
            Ok(v) => {
                let v = Arc::new(v);
                self.verifier.store(Some(v.clone()));
                Some(v)
            }
            Err(e) => {
                tracing::warn!(oidc.issuer = %self.config.issuer, error = %e, "OIDC discovery failed");
                None
            }
        }
    }

    async fn discover(&self) -> Result<JwtVerifier, String> {
        let c = &self.config;
        let url = format!(
            "{}/.well-known/openid-configuration",
            c.issuer.trim_end_matches('/')
        );
        let text = fetch_text(&self.client, &url, 256 * 1024).await?;
        let doc: Json =
            serde_json::from_str(&text).map_err(|e| format!("discovery document: {e}"))?;
        if doc.get("issuer").and_then(Json::as_str) != Some(c.issuer.as_str()) {
            return Err("discovery document names another issuer".into());
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Json::as_str)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or("discovery document has no http(s) jwks_uri")?;
        let algorithms: Vec<Alg> = if c.algorithms.is_empty() {
            vec![Alg::RS256, Alg::ES256, Alg::EdDSA]
        } else {
            c.algorithms
                .iter()
                .copied()
                .filter(|a| !a.is_hmac())
                .collect()
        };
        let remote = RemoteJwks::new(
            jwks_uri.to_string(),
            Duration::from_secs(c.jwks_cache_ttl_seconds),
            JWKS_COOLDOWN,
            DISCOVERY_TIMEOUT,
        )?
        .with_metrics(self.metrics.clone());
        Ok(JwtVerifier {
            issuer: Some(c.issuer.clone()),
            audiences: c.audiences.clone(),
            algorithms,
            keys: KeySource::Remote(remote),
            skew: i64::try_from(c.clock_skew_seconds.min(600)).unwrap_or(30),
            claims: c.claims.clone(),
            max_token_bytes: 16 * 1024,
            email_rule: Some(EmailRule {
                domains: c.allowed_domains.clone(),
                emails: c.allowed_emails.clone(),
            }),
            grants: c.grants.clone(),
            cache: Default::default(),
            accept_high_s: c.accept_high_s,
        })
    }
}
