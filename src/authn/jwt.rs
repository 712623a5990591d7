//! JWT (JWS compact) verification for authentication, on [`crate::jose`] under its strict
//! rules.
//!
//! Checks, in order: size; exactly three non-empty base64url segments without padding; a JSON
//! object header without duplicate members whose `alg` is on the allow-list (`none` never is)
//! and that has no `crit`; a `kid`, when present, that is a non-empty string of at most 256
//! bytes; a signature that verifies with a key of the algorithm's type (an HMAC secret only for
//! HS*, and only a configured one; RSA keys of at least 2048 bits; low-S ECDSA unless
//! `accept_high_s`); then the claims, a JSON object without duplicate members: `exp` required
//! and numeric, `nbf` and `iat` numeric and not in the future, all with `clock_skew_seconds` of
//! leeway; `iss` equal to the configured issuer; `aud` (a string or an array of strings) naming
//! a configured audience; a non-empty subject. Header parameters that point at keys (`jwk`,
//! `jku`, `x5u`, `x5c`) are never read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::config::{ClaimsMap, Grant, Method};
use super::identity::Identity;
use super::jwks::{KeySet, KeySource, Keys};
use crate::jose::claims::{self, Expect};
use crate::jose::{Alg, Jws, JwsError, KeyMaterial, Rules};
use crate::telemetry::labels::Refusal;

/// Why a token was refused. The `Display` text is for logs only; the caller gets [`code`].
///
/// [`code`]: JwtError::code
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("header: {0}")]
    Header(String),
    #[error("signature: {0}")]
    Signature(&'static str),
    #[error("claims: {0}")]
    Claims(String),
}

impl From<JwsError> for JwtError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Malformed(m) => JwtError::Malformed(m),
            JwsError::Signature(m) => JwtError::Signature(m),
            JwsError::Header(m) => JwtError::Header(m),
            JwsError::Payload(m) | JwsError::Sign(m) => JwtError::Claims(m),
        }
    }
}

impl From<claims::ClaimError> for JwtError {
    fn from(e: claims::ClaimError) -> Self {
        JwtError::Claims(e.to_string())
    }
}

impl JwtError {
    /// `invalid_signature` or `invalid_token`.
    pub fn code(&self) -> Refusal {
        match self {
            JwtError::Signature(_) => Refusal::InvalidSignature,
            _ => Refusal::InvalidToken,
        }
    }
}

/// Email rules of a trusted OIDC issuer.
#[derive(Debug, Clone, Default)]
pub struct EmailRule {
    pub domains: Vec<String>,
    pub emails: Vec<String>,
}

/// One verifier: an issuer's rules and keys.
#[derive(Debug)]
pub struct JwtVerifier {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub(crate) algorithms: Vec<Alg>,
    pub keys: KeySource,
    pub skew: i64,
    pub claims: ClaimsMap,
    pub max_token_bytes: usize,
    pub email_rule: Option<EmailRule>,
    pub grants: Vec<Grant>,
    pub cache: VerifiedCache,
    /// Accept high-S ECDSA signatures (see `jwt.accept_high_s`).
    pub accept_high_s: bool,
}

/// Tokens that verified, by SHA-256, so that a caller sending the same token again costs a hash
/// and a look-up instead of a signature verification. An entry is used only while the key set
/// it was verified with is still the current one (a rotation or reload invalidates it), for at
/// most [`VerifiedCache::MAX_AGE`] seconds, and with `exp`/`nbf` checked again at every use.
#[derive(Debug, Default)]
pub struct VerifiedCache {
    map: Mutex<HashMap<[u8; 32], CachedToken>>,
}

#[derive(Debug)]
struct CachedToken {
    set: Option<Arc<KeySet>>,
    exp: i64,
    nbf: Option<i64>,
    cached_at: i64,
    identity: Arc<Identity>,
}

impl VerifiedCache {
    /// Longest time an entry is used.
    pub const MAX_AGE: i64 = 60;
    /// Most entries kept.
    pub const MAX_ENTRIES: usize = 10_000;
}

fn same_set(a: &Option<Arc<KeySet>>, b: &Option<Arc<KeySet>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// A token whose signature and claims checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Json>,
    pub exp: i64,
}

/// The unverified `iss` of a token, used only to pick which verifier checks it.
pub fn peek_issuer(token: &str, max: usize) -> Option<String> {
    let payload = crate::jose::jws::unverified_payload(token, max)?;
    payload.get("iss")?.as_str().map(str::to_owned)
}

impl JwtVerifier {
    /// Verifies `token` and maps it to an identity, through the [`VerifiedCache`].
    pub async fn authenticate(&self, token: &str, now: i64) -> Result<Arc<Identity>, JwtError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let set = self.keys.current_set();
        if let Ok(map) = self.cache.map.lock()
            && let Some(c) = map.get(&digest)
            && same_set(&c.set, &set)
            && now < c.cached_at + VerifiedCache::MAX_AGE
            && now < c.exp.saturating_add(self.skew)
            && c.nbf.is_none_or(|nbf| nbf <= now.saturating_add(self.skew))
        {
            return Ok(c.identity.clone());
        }
        let verified = self.verify(token, now).await?;
        let nbf = verified
            .claims
            .get("nbf")
            .and_then(|v| claims::number(v, "nbf").ok());
        let exp = verified.exp;
        let identity = Arc::new(self.identity(verified, super::audit::hex(&digest))?);
        // The set the token verified with (re-read: a fetch may have replaced it).
        let set = self.keys.current_set();
        if let Ok(mut map) = self.cache.map.lock() {
            if map.len() >= VerifiedCache::MAX_ENTRIES {
                map.retain(|_, c| now < c.cached_at + VerifiedCache::MAX_AGE && now < c.exp);
                if map.len() >= VerifiedCache::MAX_ENTRIES {
                    map.clear();
                }
            }
            map.insert(
                digest,
                CachedToken {
                    set,
                    exp,
                    nbf,
                    cached_at: now,
                    identity: identity.clone(),
                },
            );
        }
        Ok(identity)
    }

    /// Verifies `token` at `now` (seconds since the epoch).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Verified, JwtError> {
        let jws = Jws::parse(token, &self.algorithms, self.max_token_bytes)?;
        let rules = Rules {
            low_s: !self.accept_high_s,
            ..Rules::STRICT
        };
        let kid = jws.kid.as_deref();
        let (secret, set);
        let candidates: Vec<&KeyMaterial> = match self.keys.keys(kid).await {
            Keys::Secret(key) => {
                secret = key;
                vec![&secret]
            }
            Keys::Set(s) => {
                set = s;
                set.candidates(kid, jws.alg)
            }
            Keys::Unavailable => return Err(JwtError::Signature("no key set available")),
        };
        if candidates.is_empty() {
            return Err(JwtError::Signature("no key for this kid and alg"));
        }
        if !jws.verify_any(candidates.iter().copied(), rules) {
            let lenient = Rules {
                low_s: false,
                ..rules
            };
            if rules.low_s && jws.verify_any(candidates.iter().copied(), lenient) {
                return Err(JwtError::Signature(
                    "high-S ECDSA signature refused (malleable); set accept_high_s for an \
                     issuer that does not normalize its signatures",
                ));
            }
            return Err(JwtError::Signature("signature does not verify"));
        }
        let claims = jws.payload()?;
        let exp = claims::check(
            &claims,
            &Expect {
                issuer: self.issuer.as_deref(),
                audiences: &self.audiences,
                leeway: self.skew,
            },
            now,
        )?;
        Ok(Verified { claims, exp })
    }

    /// The identity a verified token stands for.
    pub fn identity(&self, v: Verified, thumbprint: String) -> Result<Identity, JwtError> {
        let subject = lookup(&v.claims, &self.claims.user_id)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| JwtError::Claims(format!("{} missing or empty", self.claims.user_id)))?
            .to_string();
        let email = lookup(&v.claims, &self.claims.email)
            .and_then(Json::as_str)
            .map(str::to_owned);
        if let Some(rule) = &self.email_rule {
            check_email(rule, email.as_deref(), v.claims.get("email_verified"))?;
        }
        let mut id = Identity::new(Method::Jwt, subject, thumbprint);
        id.issuer = v
            .claims
            .get("iss")
            .and_then(Json::as_str)
            .map(str::to_owned);
        id.roles = string_list(lookup(&v.claims, &self.claims.roles));
        id.scopes = string_list(lookup(&v.claims, &self.claims.scopes));
        id.grants = self.grants.clone();
        id.email = email;
        id.expires_at = Some(v.exp);
        id.claims = v.claims;
        Ok(id)
    }
}

fn check_email(
    rule: &EmailRule,
    email: Option<&str>,
    verified: Option<&Json>,
) -> Result<(), JwtError> {
    if rule.domains.is_empty() && rule.emails.is_empty() {
        return Ok(());
    }
    let email =
        email.ok_or_else(|| JwtError::Claims("email required by the trusted issuer".into()))?;
    if verified != Some(&Json::Bool(true)) {
        return Err(JwtError::Claims("email_verified is not true".into()));
    }
    let lower = email.to_ascii_lowercase();
    let by_email = rule.emails.iter().any(|e| e.eq_ignore_ascii_case(&lower));
    let by_domain = lower.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && rule.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    });
    if by_email || by_domain {
        Ok(())
    } else {
        Err(JwtError::Claims(
            "email not allowed by the trusted issuer".into(),
        ))
    }
}

/// A claim by dotted path (`realm_access.roles`); a claim whose own name has dots wins.
pub fn lookup<'a>(claims: &'a Map<String, Json>, path: &str) -> Option<&'a Json> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// An array of strings, or a space-separated string (OAuth `scope`).
pub fn string_list(v: Option<&Json>) -> Vec<String> {
    match v {
        Some(Json::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> JwtVerifier {
        JwtVerifier {
            issuer: Some("iss".into()),
            audiences: vec![],
            algorithms: vec![Alg::HS256],
            keys: KeySource::Secret(b"0123456789abcdef0123456789abcdef".to_vec()),
            skew: 0,
            claims: ClaimsMap::default(),
            max_token_bytes: 4096,
            email_rule: None,
            grants: vec![],
            cache: VerifiedCache::default(),
            accept_high_s: false,
        }
    }

    fn token(claims: Json) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn cached_tokens_still_expire_and_respect_nbf() {
        let v = verifier();
        let t = token(serde_json::json!({"iss": "iss", "sub": "a", "exp": 1000, "nbf": 100}));
        assert!(v.authenticate(&t, 500).await.is_ok());
        // Served from the cache, but exp and nbf are checked again.
        assert!(v.authenticate(&t, 501).await.is_ok());
        assert_eq!(
            v.authenticate(&t, 1000).await.unwrap_err(),
            JwtError::Claims("expired".into())
        );
        assert!(v.authenticate(&t, 99).await.is_err());
        // A different token (one byte changed) is never a cache hit.
        let mut bad = t.clone();
        bad.push('x');
        assert!(v.authenticate(&bad, 500).await.is_err());
    }

    #[test]
    fn lookup_and_lists() {
        let c: Map<String, Json> =
            serde_json::from_str(r#"{"a": {"b": ["x", "y"]}, "s": "p q", "a.b": 1}"#).unwrap();
        assert_eq!(string_list(lookup(&c, "s")), vec!["p", "q"]);
        assert_eq!(lookup(&c, "a.b"), Some(&Json::from(1)));
        assert_eq!(string_list(lookup(&c, "a.b.c")), Vec::<String>::new());
    }
}
