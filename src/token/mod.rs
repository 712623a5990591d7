//! The internal token (DESIGN §6): a short-lived JWT minted on allow, signed with Portcullis'
//! own key, whose scope is never wider than the caller's.
//!
//! # Claims
//!
//! `iss` (config), `sub` (the identity's subject), `aud` (the decision's, else the config's,
//! else the destination principal; with none of them no token is minted), `scope` (requested ∩ held, space-separated; all held scopes
//! when none are requested), `ns`/`agent`/`session`/`channel` and `grants` (Talon-style), `act`
//! (`{"sub": <source principal>}`), `jti` (a random UUID), `iat`, `exp`, plus the decision's
//! extra `claims` (reserved names are dropped).
//!
//! `exp` is `iat + ttl` where `ttl` is the decision's `ttl_seconds` or the config's, capped by
//! `max_ttl_seconds` and by the caller's own expiry.
//!
//! Grants: when the caller holds grants (e.g. from a trusted OIDC issuer), a requested grant is
//! kept only if one of them covers it (same or wider kind; each field it sets equal, a namespace
//! also covering `ns:child…`), else it is lowered to `read` if that is covered, else dropped;
//! without a requested grant the caller's own grants are carried. When the caller holds none,
//! the decision's grant is used as the policy states it.
//!
//! # Cache
//!
//! A token is reused for a request that would produce the same claims (subject, scope,
//! audience, scope claims, grants, actor, extra claims, signing key) until half its lifetime has
//! passed, only while its `exp` is not later than the new request's cap, and never once it is
//! revoked (`authentication.revocation`).
//!
//! # Revocation
//!
//! No token is minted for a subject the revocation list refuses new tokens for (a subject
//! entry whose `issued_before` lies ahead): such a token would be refused wherever it is
//! presented back.

pub(crate) mod config;
pub(crate) mod keys;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

use self::config::{InternalToken, SigningAlg};
use self::keys::{KeyRing, SigningKey};
use crate::authn::audit::{AuditEvent, AuditLog};
use crate::authn::config::{Grant, GrantKind};
use crate::authn::identity::Identity;
use crate::authn::metrics::AuthnMetrics;
use crate::authn::revocation::{Presented, Revocations};

/// Claims the decision's `claims` may not set.
const RESERVED: &[&str] = &[
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "act", "ns", "agent", "session",
    "channel", "grants",
];

/// What a decision asks for (`internal_token: true` is the default request).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenRequest {
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub namespace: Option<String>,
    pub agent: Option<String>,
    pub session: Option<String>,
    pub channel: Option<String>,
    pub grant: Option<GrantKind>,
    pub claims: Map<String, Json>,
}

/// The request's context.
#[derive(Debug, Clone, Copy)]
pub struct MintContext<'a> {
    pub identity: &'a Identity,
    pub source_principal: &'a str,
    pub destination_principal: &'a str,
    pub decision_id: &'a str,
    /// The namespace whose policy decided, when it is not the default one: its policy authors
    /// may only mint tokens within it (`ns` defaults to it; another namespace is refused).
    pub namespace: Option<&'a str>,
}

/// A token to set on the request.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub jti: String,
    pub exp: i64,
    pub reused: bool,
}

/// Why no token could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("the caller's credential expires before a token could be valid")]
    CallerExpired,
    #[error("no signing key")]
    NoKey,
    #[error("the decision asks for a token outside the namespace that decided")]
    OutsideNamespace,
    #[error(
        "no audience: set internal_token.audience, or give one in the decision; without either \
         the destination principal is used, and this request has none"
    )]
    NoAudience,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the subject's tokens are revoked (authentication.revocation)")]
    Revoked,
}

impl MintError {
    /// The reason label of `portcullis_token_mint_failures_total`.
    pub fn label(&self) -> crate::telemetry::MintFailure {
        use crate::telemetry::MintFailure;
        match self {
            MintError::CallerExpired => MintFailure::CallerExpired,
            MintError::NoKey => MintFailure::NoKey,
            MintError::OutsideNamespace => MintFailure::OutsideNamespace,
            MintError::NoAudience => MintFailure::NoAudience,
            MintError::Sign(_) => MintFailure::SignError,
            MintError::Revoked => MintFailure::Revoked,
        }
    }
}

struct Cached {
    token: String,
    jti: String,
    iat: i64,
    exp: i64,
}

/// Mints internal tokens.
pub struct Minter {
    config: InternalToken,
    keys: ArcSwap<KeyRing>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    audit: AuditLog,
    metrics: Arc<AuthnMetrics>,
    revocations: Option<Arc<Revocations>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// Loads or generates the keys.
    pub fn new(
        config: InternalToken,
        audit: AuditLog,
        metrics: Arc<AuthnMetrics>,
    ) -> Result<Self, String> {
        let ring = KeyRing::load(config.keys.dir.as_deref(), config.keys.algorithm)
            .map_err(|e| format!("internal_token.keys: {e}"))?;
        Ok(Self::with_keys(config, ring, audit, metrics))
    }

    pub fn with_keys(
        config: InternalToken,
        ring: KeyRing,
        audit: AuditLog,
        metrics: Arc<AuthnMetrics>,
    ) -> Self {
        Self {
            config,
            keys: ArcSwap::from_pointee(ring),
            cache: Mutex::new(HashMap::new()),
            audit,
            metrics,
            revocations: None,
        }
    }

    /// Mints nothing the deny-list would refuse, and never reuses a revoked token.
    pub fn with_revocations(mut self, revocations: Option<Arc<Revocations>>) -> Self {
        self.revocations = revocations;
        self
    }

    pub fn metrics(&self) -> &Arc<AuthnMetrics> {
        &self.metrics
    }

    pub fn config(&self) -> &InternalToken {
        &self.config
    }

    /// The published key set (`/.well-known/jwks.json`, the gateway's `GetJwks`).
    pub fn jwks(&self) -> Json {
        self.keys.load().jwks()
    }

    /// `/.well-known/openid-configuration`: the issuer and where its keys are.
    pub fn openid_configuration(&self, jwks_uri: &str) -> Json {
        json!({
            "issuer": self.config.issuer,
            "jwks_uri": jwks_uri,
            "id_token_signing_alg_values_supported": ["EdDSA", "ES256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "jti", "scope", "act", "ns", "agent", "session", "channel", "grants"],
        })
    }

    /// Adds a newly generated key that signs from now on; older keys stay published. Returns
    /// its `kid`.
    pub fn rotate(&self, alg: SigningAlg) -> Result<String, String> {
        let key = SigningKey::generate(alg)?;
        let kid = key.kid.clone();
        let ring = self.keys.load().with_new_key(key);
        self.keys.store(Arc::new(ring));
        Ok(kid)
    }

    /// A token for this request (from the cache when an equivalent one is fresh enough).
    pub fn mint(&self, req: &TokenRequest, ctx: MintContext<'_>) -> Result<Minted, MintError> {
        self.mint_at(req, ctx, crate::jose::clock::now())
    }

    /// [`Minter::mint`] at the time `now`; a failure is counted by reason.
    pub fn mint_at(
        &self,
        req: &TokenRequest,
        ctx: MintContext<'_>,
        now: i64,
    ) -> Result<Minted, MintError> {
        let result = self.sign_at(req, ctx, now);
        if let Err(e) = &result {
            self.metrics.mint_failed(e.label());
        }
        result
    }

    fn sign_at(
        &self,
        req: &TokenRequest,
        ctx: MintContext<'_>,
        now: i64,
    ) -> Result<Minted, MintError> {
        let bounded;
        let req = match ctx.namespace {
            None => req,
            Some(ns) => {
                match &req.namespace {
                    Some(asked) if !crate::namespaces::covers(ns, asked) => {
                        return Err(MintError::OutsideNamespace);
                    }
                    _ => {}
                }
                bounded = TokenRequest {
                    namespace: req.namespace.clone().or_else(|| Some(ns.to_string())),
                    ..req.clone()
                };
                &bounded
            }
        };
        let id = ctx.identity;
        if let Some(r) = &self.revocations
            && r.refuses_new(&id.subject, now)
        {
            return Err(MintError::Revoked);
        }
        let ring = self.keys.load();
        let key = ring.current().ok_or(MintError::NoKey)?;
        let ttl = req
            .ttl_seconds
            .unwrap_or(self.config.ttl_seconds)
            .min(self.config.max_ttl_seconds)
            .max(1);
        let mut exp = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        if let Some(cap) = id.expires_at {
            exp = exp.min(cap);
        }
        if exp <= now {
            return Err(MintError::CallerExpired);
        }
        let mut claims = Map::new();
        claims.insert("iss".into(), Json::from(self.config.issuer.as_str()));
        claims.insert("sub".into(), Json::from(id.subject.as_str()));
        let audience = req
            .audience
            .clone()
            .or_else(|| self.config.audience.clone())
            .or_else(|| {
                (!ctx.destination_principal.is_empty())
                    .then(|| ctx.destination_principal.to_string())
            });
        // A token for anyone is a token any upstream would take: never mint one without `aud`.
        let Some(aud) = audience.as_deref().filter(|a| !a.is_empty()) else {
            return Err(MintError::NoAudience);
        };
        claims.insert("aud".into(), Json::from(aud));
        let scope = narrow_scopes(&id.scopes, req.scopes.as_deref()).join(" ");
        claims.insert("scope".into(), Json::from(scope.as_str()));
        for (name, v) in [
            ("ns", &req.namespace),
            ("agent", &req.agent),
            ("session", &req.session),
            ("channel", &req.channel),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                claims.insert(name.into(), Json::from(v.as_str()));
            }
        }
        let grants = narrow_grants(&id.grants, req);
        if !grants.is_empty() {
            claims.insert(
                "grants".into(),
                serde_json::to_value(&grants).unwrap_or(Json::Null),
            );
        }
        if !ctx.source_principal.is_empty() {
            claims.insert("act".into(), json!({"sub": ctx.source_principal}));
        }
        for (k, v) in &req.claims {
            if RESERVED.contains(&k.as_str()) {
                tracing::debug!(decision.id = %ctx.decision_id, claim = %k, "reserved claim in internal_token.claims ignored");
            } else {
                claims.insert(k.clone(), v.clone());
            }
        }
        let cache_key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(key.kid.as_bytes());
            h.update([0]);
            h.update(serde_json::to_vec(&claims).unwrap_or_default());
            h.finalize().into()
        };
        if let Ok(cache) = self.cache.lock()
            && let Some(c) = cache.get(&cache_key)
            && now < c.iat + (c.exp - c.iat) / 2
            && c.exp <= exp
            && !self.revocations.as_ref().is_some_and(|r| {
                let token = Presented {
                    jti: Some(&c.jti),
                    subject: &id.subject,
                    issued_at: Some(c.iat),
                };
                r.refuses(&token, now)
            })
        {
            self.metrics.reused();
            return Ok(Minted {
                token: c.token.clone(),
                jti: c.jti.clone(),
                exp: c.exp,
                reused: true,
            });
        }
        let jti = uuid::Uuid::new_v4().to_string();
        claims.insert("jti".into(), Json::from(jti.as_str()));
        claims.insert("iat".into(), Json::from(now));
        claims.insert("exp".into(), Json::from(exp));
        let token = key.sign(&Json::Object(claims)).map_err(MintError::Sign)?;
        self.metrics.minted();
        let mut event = AuditEvent::new("token_minted", ctx.decision_id)
            .with("subject", id.subject.as_str())
            .with("method", id.method.as_str())
            .with("result", "minted")
            .with("jti", jti.as_str())
            .with("exp", exp)
            .with("scope", scope.as_str())
            .with("kid", key.kid.as_str())
            .with("credential_sha256", id.thumbprint.as_str());
        if let Some(aud) = &audience {
            event = event.with("audience", aud.as_str());
        }
        self.audit.record(event);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.config.cache_size {
                cache.retain(|_, c| now < c.iat + (c.exp - c.iat) / 2);
                if cache.len() >= self.config.cache_size {
                    cache.clear();
                }
            }
            if self.config.cache_size > 0 {
                cache.insert(
                    cache_key,
                    Cached {
                        token: token.clone(),
                        jti: jti.clone(),
                        iat: now,
                        exp,
                    },
                );
            }
        }
        Ok(Minted {
            token,
            jti,
            exp,
            reused: false,
        })
    }
}

/// Requested ∩ held, in the held order; all held scopes when none are requested.
pub fn narrow_scopes(held: &[String], requested: Option<&[String]>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in held {
        if requested.is_none_or(|r| r.contains(s)) && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

fn field_covers(held: &Option<String>, wanted: &Option<String>, prefix: bool) -> bool {
    match (held, wanted) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(h), Some(w)) => w == h || (prefix && w.starts_with(&format!("{h}:"))),
    }
}

fn covers(held: &Grant, wanted: &Grant) -> bool {
    held.kind >= wanted.kind
        && field_covers(&held.namespace, &wanted.namespace, true)
        && field_covers(&held.agent, &wanted.agent, false)
        && field_covers(&held.session, &wanted.session, false)
        && field_covers(&held.channel, &wanted.channel, false)
}

/// The grants of the token (see the module docs).
pub fn narrow_grants(held: &[Grant], req: &TokenRequest) -> Vec<Grant> {
    let Some(kind) = req.grant else {
        return held.to_vec();
    };
    let wanted = Grant {
        kind,
        namespace: req.namespace.clone(),
        agent: req.agent.clone(),
        session: req.session.clone(),
        channel: req.channel.clone(),
    };
    if held.is_empty() || held.iter().any(|h| covers(h, &wanted)) {
        return vec![wanted];
    }
    let read = Grant {
        kind: GrantKind::Read,
        ..wanted
    };
    if held.iter().any(|h| covers(h, &read)) {
        return vec![read];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::config::Method;

    fn identity() -> Identity {
        let mut id = Identity::new(Method::Jwt, "alice".into(), "t".into());
        id.scopes = vec!["orders:read".into(), "orders:write".into()];
        id.expires_at = Some(1_000_100);
        id
    }

    fn minter(cache: usize) -> Minter {
        let cfg = InternalToken {
            cache_size: cache,
            ..Default::default()
        };
        Minter::new(cfg, AuditLog::memory(), Arc::default()).unwrap()
    }

    fn ctx(id: &Identity) -> MintContext<'_> {
        MintContext {
            identity: id,
            source_principal: "spiffe://c/ns/a/sa/caller",
            destination_principal: "spiffe://c/ns/b/sa/orders",
            decision_id: "d",
            namespace: None,
        }
    }

    #[test]
    fn failures_are_counted_by_reason() {
        let m = minter(0);
        let prometheus = crate::telemetry::Metrics::default();
        m.metrics().connect(prometheus.clone());
        let mut id = identity();
        let c = ctx(&id);
        m.mint_at(&TokenRequest::default(), c, 1_000_000).unwrap();
        let mut other_ns = ctx(&id);
        other_ns.namespace = Some("acme");
        let outside = TokenRequest {
            namespace: Some("payments".into()),
            ..Default::default()
        };
        assert!(m.mint_at(&outside, other_ns, 1_000_000).is_err());
        assert!(m.mint_at(&outside, other_ns, 1_000_000).is_err());
        id.expires_at = Some(999_999);
        assert_eq!(
            m.mint_at(&TokenRequest::default(), ctx(&id), 1_000_000)
                .unwrap_err(),
            MintError::CallerExpired
        );
        let text = prometheus.encode();
        for line in [
            "portcullis_tokens_minted_total 1",
            "portcullis_token_mint_failures_total{reason=\"outside_namespace\"} 2",
            "portcullis_token_mint_failures_total{reason=\"caller_expired\"} 1",
            "portcullis_token_mint_failures_total{reason=\"no_audience\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(
            m.metrics()
                .token_mint_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }

    #[test]
    fn a_namespace_mints_within_itself_only() {
        let m = minter(0);
        let id = identity();
        let mut c = ctx(&id);
        c.namespace = Some("acme");
        let own = m.mint_at(&TokenRequest::default(), c, 1_000_000).unwrap();
        assert_eq!(claims(&own.token)["ns"], "acme");
        let child = TokenRequest {
            namespace: Some("acme:team".into()),
            grant: Some(GrantKind::Readwrite),
            ..Default::default()
        };
        assert_eq!(
            claims(&m.mint_at(&child, c, 1_000_000).unwrap().token)["ns"],
            "acme:team"
        );
        let other = TokenRequest {
            namespace: Some("payments".into()),
            ..Default::default()
        };
        assert!(matches!(
            m.mint_at(&other, c, 1_000_000),
            Err(MintError::OutsideNamespace)
        ));
    }

    fn claims(token: &str) -> Json {
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn scope_is_the_intersection_and_exp_is_capped() {
        let m = minter(0);
        let id = identity();
        let req = TokenRequest {
            scopes: Some(vec!["orders:read".into(), "admin".into()]),
            ttl_seconds: Some(100_000),
            ..Default::default()
        };
        let t = m.mint_at(&req, ctx(&id), 1_000_000).unwrap();
        let c = claims(&t.token);
        assert_eq!(c["scope"], "orders:read");
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["aud"], "spiffe://c/ns/b/sa/orders");
        assert_eq!(c["act"]["sub"], "spiffe://c/ns/a/sa/caller");
        // capped by the caller's expiry (and by max_ttl_seconds = 300)
        assert_eq!(c["exp"], 1_000_100);
        let t2 = m
            .mint_at(&TokenRequest::default(), ctx(&id), 1_000_000)
            .unwrap();
        assert_eq!(claims(&t2.token)["scope"], "orders:read orders:write");
        assert_ne!(t.jti, t2.jti);
        assert!(matches!(
            m.mint_at(&req, ctx(&id), 1_000_100),
            Err(MintError::CallerExpired)
        ));
    }

    #[test]
    fn cache_reuses_until_half_life() {
        let m = minter(100);
        let mut id = identity();
        id.expires_at = None;
        let req = TokenRequest::default();
        let a = m.mint_at(&req, ctx(&id), 1000).unwrap();
        let b = m.mint_at(&req, ctx(&id), 1029).unwrap();
        assert!(b.reused);
        assert_eq!(a.token, b.token);
        let c = m.mint_at(&req, ctx(&id), 1030).unwrap();
        assert!(!c.reused);
        let other = TokenRequest {
            audience: Some("x".into()),
            ..Default::default()
        };
        assert!(!m.mint_at(&other, ctx(&id), 1031).unwrap().reused);
    }

    #[test]
    fn grants_never_widen() {
        let held = vec![Grant {
            kind: GrantKind::Read,
            namespace: Some("acme".into()),
            agent: None,
            session: None,
            channel: None,
        }];
        let req = |kind, ns: &str| TokenRequest {
            grant: Some(kind),
            namespace: Some(ns.into()),
            ..Default::default()
        };
        assert_eq!(
            narrow_grants(&held, &req(GrantKind::Readwrite, "acme:team"))[0].kind,
            GrantKind::Read
        );
        assert!(narrow_grants(&held, &req(GrantKind::Read, "acme2")).is_empty());
        assert_eq!(
            narrow_grants(&[], &req(GrantKind::Readwrite, "x"))[0].kind,
            GrantKind::Readwrite
        );
    }

    #[test]
    fn reserved_claims_are_not_overridden() {
        let m = minter(0);
        let id = identity();
        let mut extra = Map::new();
        extra.insert("sub".into(), Json::from("mallory"));
        extra.insert("tenant".into(), Json::from("t1"));
        let t = m
            .mint_at(
                &TokenRequest {
                    claims: extra,
                    ..Default::default()
                },
                ctx(&id),
                1_000_000,
            )
            .unwrap();
        let c = claims(&t.token);
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["tenant"], "t1");
    }
}
