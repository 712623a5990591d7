//! Building the authentication layer from its config: key sources, key stores, users files.

use std::sync::Arc;
use std::time::Duration;

use super::api_key::ApiKeyStore;
use super::audit::AuditLog;
use super::basic::{self, BasicAuth};
use super::config::{self, AuthPolicy, Authentication, Method};
use super::custom::CustomMethod;
use super::hmac::HmacMethod;
use super::jwks::{KeySource, RemoteJwks};
use super::jwt::JwtVerifier;
use super::limit::Slots;
use super::metrics::AuthnMetrics;
use super::oauth::OAuthMethod;
use super::oidc::OidcIssuer;
use super::x509::X509Method;
use super::{ApiKeyMethod, Authenticator, JwtMethod, Policy};
use crate::env::Env;

/// A building error, naming the policy.
#[derive(Debug, thiserror::Error)]
#[error("authentication.policies {policy:?}: {message}")]
pub struct BuildError {
    pub policy: String,
    pub message: String,
}

impl Authenticator {
    /// Builds the layer: opens key files, key stores and users files (errors name the policy).
    pub fn build(
        config: &Authentication,
        audit: AuditLog,
        env: &dyn Env,
    ) -> Result<Self, BuildError> {
        let permits = Arc::new(basic::slots());
        let metrics = Arc::new(AuthnMetrics::default());
        let mut policies = Vec::new();
        for (index, p) in config.policies.iter().enumerate() {
            policies.push(
                build_policy(index, p, env, &permits, &metrics, &audit).map_err(|message| {
                    BuildError {
                        policy: p.name.clone(),
                        message,
                    }
                })?,
            );
        }
        metrics.set_policies(
            config
                .policies
                .iter()
                .map(|p| (p.name.clone(), p.methods.clone()))
                .collect(),
        );
        let oidc = config
            .trust
            .oidc
            .iter()
            .map(|t| OidcIssuer::new(t.clone(), metrics.clone()))
            .collect::<Result<_, _>>()
            .map_err(|message| BuildError {
                policy: "trust.oidc".into(),
                message,
            })?;
        Ok(Self {
            policies,
            oidc,
            audit,
            metrics,
            revocations: None,
        })
    }
}

fn build_policy(
    index: usize,
    p: &AuthPolicy,
    env: &dyn Env,
    permits: &Arc<Slots>,
    metrics: &Arc<AuthnMetrics>,
    audit: &AuditLog,
) -> Result<Policy, String> {
    let jwt = if p.methods.contains(&Method::Jwt) {
        Some(match &p.jwt {
            Some(c) => JwtMethod {
                header: c.header.to_ascii_lowercase(),
                scheme: c.scheme.clone(),
                verifier: Some(Arc::new(build_verifier(c, env, metrics)?)),
            },
            None => JwtMethod {
                header: "authorization".into(),
                scheme: "Bearer".into(),
                verifier: None,
            },
        })
    } else {
        None
    };
    let api_key = match (&p.api_key, p.methods.contains(&Method::ApiKey)) {
        (Some(c), true) => Some(ApiKeyMethod {
            config: c.clone(),
            store: Arc::new(
                ApiKeyStore::open(&c.store)
                    .map_err(|e| format!("api_key.store: {e}"))?
                    .with_audit(audit.clone(), &p.name),
            ),
        }),
        _ => None,
    };
    let basic = match (&p.basic, p.methods.contains(&Method::Basic)) {
        (Some(c), true) => Some(Arc::new(
            BasicAuth::open(
                c.realm.clone(),
                &c.users,
                c.lockout.clone(),
                permits.clone(),
            )
            .map_err(|e| format!("basic.users: {e}"))?,
        )),
        _ => None,
    };
    let oauth = match (&p.oauth, p.methods.contains(&Method::OAuth)) {
        (Some(c), true) => Some(Arc::new(
            OAuthMethod::new(c, env).map_err(|e| format!("oauth: {e}"))?,
        )),
        _ => None,
    };
    let hmac = match (&p.hmac, p.methods.contains(&Method::Hmac)) {
        (Some(c), true) => Some(Arc::new(
            HmacMethod::new(c, env).map_err(|e| format!("hmac: {e}"))?,
        )),
        _ => None,
    };
    let custom = match (&p.custom, p.methods.contains(&Method::Custom)) {
        (Some(c), true) => Some(Arc::new(
            CustomMethod::new(c).map_err(|e| format!("custom: {e}"))?,
        )),
        _ => None,
    };
    let x509 = match (&p.x509, p.methods.contains(&Method::X509)) {
        (Some(c), true) => Some(Arc::new(
            X509Method::new(c).map_err(|e| format!("x509.trusted_ca_file: {e}"))?,
        )),
        _ => None,
    };
    Ok(Policy {
        index,
        name: p.name.clone(),
        matcher: p.matcher.clone(),
        methods: p.methods.clone(),
        required: p.required,
        require: p.require.clone(),
        jwt,
        api_key,
        basic,
        oauth,
        hmac,
        custom,
        x509,
    })
}

/// A verifier from a policy's `jwt` block.
pub fn build_verifier(
    c: &config::JwtConfig,
    env: &dyn Env,
    metrics: &Arc<AuthnMetrics>,
) -> Result<JwtVerifier, String> {
    let keys = if let Some(var) = &c.secret_env {
        let secret = env.get(var).filter(|s| !s.is_empty()).ok_or_else(|| {
            format!("jwt.secret_env: environment variable {var} is unset or empty")
        })?;
        if secret.len() < 32 {
            return Err(format!(
                "jwt.secret_env: the secret in {var} must have at least 32 bytes"
            ));
        }
        KeySource::Secret(secret.into_bytes())
    } else if let Some(path) = &c.jwks_file {
        KeySource::file(path).map_err(|e| format!("jwt.jwks_file: {e}"))?
    } else if let Some(uri) = &c.jwks_uri {
        KeySource::Remote(
            RemoteJwks::new(
                uri.clone(),
                Duration::from_secs(c.jwks_cache_ttl_seconds),
                Duration::from_secs(c.jwks_refresh_cooldown_seconds),
                Duration::from_millis(c.jwks_fetch_timeout_ms),
            )?
            .with_metrics(metrics.clone()),
        )
    } else {
        return Err("jwt: no key source".into());
    };
    Ok(JwtVerifier {
        issuer: c.issuer.clone(),
        audiences: c.audiences.clone(),
        algorithms: c.algorithms.clone(),
        keys,
        skew: i64::try_from(c.clock_skew_seconds).unwrap_or(30),
        claims: c.claims.clone(),
        max_token_bytes: c.max_token_bytes,
        email_rule: None,
        grants: Vec::new(),
        cache: Default::default(),
        accept_high_s: c.accept_high_s,
    })
}
