//! JWT (JWS compact) verification for authentication.
//!
//! Checks, in order: size; exactly three non-empty base64url segments without padding; a JSON
//! object header whose `alg` is on the allow-list (`none` never is) and that has no `crit`; a
//! `kid`, when present, that is a non-empty string of at most 256 bytes; a signature that
//! verifies with a key of the algorithm's type (an HMAC secret only for HS*, and only a
//! configured one); then the claims: `exp` required and numeric, `nbf` and `iat` numeric when
//! present, both compared with `clock_skew_seconds` of leeway; `iss` equal to the configured
//! issuer; `aud` (a string or an array of strings) naming a configured audience; a non-empty
//! subject. Header parameters that point at keys (`jwk`, `jku`, `x5u`, `x5c`) are never read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::config::{ClaimsMap, Grant, Method};
use super::identity::Identity;
use super::jwks::{KeySet, KeySource, Keys, MAX_KID_BYTES};
use crate::policy::builtins::jwt::{Alg, verify_signature};

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

impl JwtError {
    /// `invalid_signature` or `invalid_token`.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Signature(_) => "invalid_signature",
            _ => "invalid_token",
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

fn b64(segment: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed("a segment is not unpadded base64url"))
}

/// The three segments, split strictly.
pub fn split(token: &str, max: usize) -> Result<(&str, &str, &str), JwtError> {
    if token.len() > max {
        return Err(JwtError::Malformed("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three segments"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JwtError::Malformed("empty segment"));
    }
    Ok((h, p, s))
}

/// The unverified `iss` of a token, used only to pick which verifier checks it.
pub fn peek_issuer(token: &str, max: usize) -> Option<String> {
    let (_, p, _) = split(token, max).ok()?;
    let payload: Map<String, Json> = serde_json::from_slice(&b64(p).ok()?).ok()?;
    payload.get("iss")?.as_str().map(str::to_owned)
}

fn number(v: &Json, name: &str) -> Result<i64, JwtError> {
    match v {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or_else(|| JwtError::Claims(format!("{name} out of range"))),
        _ => Err(JwtError::Claims(format!("{name} is not a number"))),
    }
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
            .and_then(|v| number(v, "nbf").ok());
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
        let (h, p, s) = split(token, self.max_token_bytes)?;
        let header: Map<String, Json> = serde_json::from_slice(&b64(h)?)
            .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
        let alg_name = header
            .get("alg")
            .and_then(Json::as_str)
            .ok_or_else(|| JwtError::Header("alg missing or not a string".into()))?;
        let alg = Alg::from_name(alg_name)
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| JwtError::Header(format!("alg {alg_name:?} not allowed")))?;
        if header.contains_key("crit") {
            return Err(JwtError::Header("crit is not supported".into()));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Json::String(k)) if !k.is_empty() && k.len() <= MAX_KID_BYTES => Some(k.as_str()),
            Some(_) => {
                return Err(JwtError::Header(
                    "kid is empty, too long or not a string".into(),
                ));
            }
        };
        let signature = b64(s)?;
        let message = token
            .as_bytes()
            .get(..h.len() + 1 + p.len())
            .unwrap_or_default();
        let verified = match self.keys.keys(kid).await {
            Keys::Secret(key) => verify_signature(alg, &key, message, &signature),
            Keys::Set(set) => {
                let candidates = set.candidates(kid, alg);
                if candidates.is_empty() {
                    return Err(JwtError::Signature("no key for this kid and alg"));
                }
                candidates
                    .into_iter()
                    .any(|k| verify_signature(alg, k, message, &signature))
            }
            Keys::Unavailable => return Err(JwtError::Signature("no key set available")),
        };
        if !verified {
            return Err(JwtError::Signature("signature does not verify"));
        }
        let claims: Map<String, Json> = serde_json::from_slice(&b64(p)?)
            .map_err(|_| JwtError::Malformed("payload is not a JSON object"))?;
        let exp = number(
            claims
                .get("exp")
                .ok_or_else(|| JwtError::Claims("exp missing".into()))?,
            "exp",
        )?;
        if now >= exp.saturating_add(self.skew) {
            return Err(JwtError::Claims("expired".into()));
        }
        if let Some(nbf) = claims.get("nbf")
            && number(nbf, "nbf")? > now.saturating_add(self.skew)
        {
            return Err(JwtError::Claims("not valid yet (nbf)".into()));
        }
        if let Some(iat) = claims.get("iat") {
            number(iat, "iat")?;
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Json::as_str) != Some(issuer.as_str())
        {
            return Err(JwtError::Claims(
                "iss missing or not the configured issuer".into(),
            ));
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Json::String(a)) => self.audiences.contains(a),
                Some(Json::Array(list)) => {
                    if list.iter().any(|a| !a.is_string()) {
                        return Err(JwtError::Claims("aud has a non-string member".into()));
                    }
                    list.iter()
                        .filter_map(Json::as_str)
                        .any(|a| self.audiences.iter().any(|c| c == a))
                }
                _ => false,
            };
            if !ok {
                return Err(JwtError::Claims(
                    "aud missing or not a configured audience".into(),
                ));
            }
        }
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
