//! Gateway JWTs: their claims, HS256 signing and verifying, the caller a token stands for, and
//! delegation ([`delegate`]: a token only ever narrows).

use serde::{Deserialize, Serialize};

use super::caller::{AuthError, Caller, Method};
use super::scope::{Grant, MAX_GRANTS, Scope};
use crate::jose::claims::{self, Expect};
use crate::jose::{Alg, Jws, KeyMaterial, Rules, Signer};

/// Leeway on `exp`, for clock differences between the minting and the verifying host.
pub const EXP_LEEWAY_SECONDS: u64 = 5;
/// The longest gateway token read.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The claims of a gateway JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The token's id, by which it can be revoked; [`sign`] sets a random one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(flatten)]
    pub scope: ScopeClaims,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<Grant>>,
}

/// The scope claims at the top level of a token (`ns`, `agent`, `session`, `channel`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl From<&ScopeClaims> for Scope {
    fn from(c: &ScopeClaims) -> Self {
        Scope {
            namespace: c.ns.clone(),
            agent: c.agent.clone(),
            session: c.session.clone(),
            channel: c.channel.clone(),
        }
    }
}

impl From<&Scope> for ScopeClaims {
    fn from(s: &Scope) -> Self {
        ScopeClaims {
            ns: s.namespace.clone(),
            agent: s.agent.clone(),
            session: s.session.clone(),
            channel: s.channel.clone(),
        }
    }
}

/// `aud`: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Signs gateway claims with HS256, with a random `jti` (a UUID) unless the claims have one,
/// so that every token Portcullis signs can be revoked by its id.
pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, String> {
    let with_id;
    let claims = if claims.jti.is_some() {
        claims
    } else {
        with_id = Claims {
            jti: Some(uuid::Uuid::new_v4().to_string()),
            ..claims.clone()
        };
        &with_id
    };
    Signer::hmac(Alg::HS256, secret)
        .and_then(|s| s.jwt(None, claims))
        .map_err(|e| e.to_string())
}

/// Verifies an HS256 gateway JWT under [`Rules::STRICT`]: the header, the signature, `exp`
/// (required), `nbf`/`iat` not in the future, `aud`, then the claims' shape.
pub fn verify(token: &str, secret: &[u8], audience: &str, now: u64) -> Result<Claims, AuthError> {
    let invalid = |m: String| AuthError::InvalidToken(m);
    let jws =
        Jws::parse(token, &[Alg::HS256], MAX_TOKEN_BYTES).map_err(|e| invalid(e.to_string()))?;
    if !jws.verify_any([&KeyMaterial::Secret(secret.to_vec())], Rules::STRICT) {
        return Err(invalid("signature does not verify".into()));
    }
    let payload = jws.payload().map_err(|e| invalid(e.to_string()))?;
    let audiences = [audience.to_string()];
    claims::check(
        &payload,
        &Expect {
            issuer: None,
            audiences: &audiences,
            leeway: EXP_LEEWAY_SECONDS as i64,
        },
        i64::try_from(now).unwrap_or(i64::MAX),
    )
    .map_err(|e| invalid(e.to_string()))?;
    serde_json::from_value(serde_json::Value::Object(payload))
        .map_err(|e| invalid(format!("claims: {e}")))
}

/// A caller from verified claims; empty or malformed scope values make the token invalid.
pub fn caller_from_claims(claims: Claims) -> Result<Caller, AuthError> {
    let invalid = |m: String| AuthError::InvalidToken(m);
    if claims.sub.is_empty() {
        return Err(invalid("sub is empty".into()));
    }
    let scope = Scope::from(&claims.scope);
    scope.validate().map_err(invalid)?;
    let grants = claims.grants.unwrap_or_default();
    if grants.len() > MAX_GRANTS {
        return Err(invalid(format!("more than {MAX_GRANTS} grants")));
    }
    for g in &grants {
        g.scope()
            .validate()
            .map_err(|m| invalid(format!("grant: {m}")))?;
    }
    Ok(Caller {
        method: Method::Jwt,
        subject: claims.sub,
        scope,
        grants,
        expires_at: Some(claims.exp),
        token_id: claims.jti,
    })
}

/// Why a delegation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    /// Only JWT callers delegate.
    #[error("MintAccessToken needs a JWT caller and GATEWAY_JWT_SECRET")]
    NotJwt,
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    /// The request would widen the caller's access.
    #[error("{0}")]
    Widens(String),
}

/// Claims for a token narrower than `parent`'s: the scope and grants are inherited where the
/// request leaves them out and must lie within the parent's otherwise; `exp` is
/// `now + ttl` capped by `max_ttl` and by the parent's own `exp`.
pub fn delegate(
    parent: &Caller,
    requested: &Scope,
    grants: &[Grant],
    ttl: u64,
    max_ttl: u64,
    audience: &str,
    now: u64,
) -> Result<Claims, DelegationError> {
    let (Method::Jwt, Some(parent_exp)) = (parent.method, parent.expires_at) else {
        return Err(DelegationError::NotJwt);
    };
    requested.validate().map_err(DelegationError::Invalid)?;
    let pick =
        |asked: &Option<String>, held: &Option<String>| asked.clone().or_else(|| held.clone());
    let scope = Scope {
        namespace: pick(&requested.namespace, &parent.scope.namespace),
        agent: pick(&requested.agent, &parent.scope.agent),
        session: pick(&requested.session, &parent.scope.session),
        channel: pick(&requested.channel, &parent.scope.channel),
    };
    if !within(&parent.scope, &scope) {
        return Err(DelegationError::Widens(
            "the requested scope is outside the caller's".into(),
        ));
    }
    let grants = if grants.is_empty() {
        parent.grants.clone()
    } else {
        if grants.len() > MAX_GRANTS {
            return Err(DelegationError::Invalid(format!(
                "more than {MAX_GRANTS} grants"
            )));
        }
        for g in grants {
            g.scope().validate().map_err(DelegationError::Invalid)?;
            let covered = parent
                .grants
                .iter()
                .any(|p| g.kind <= p.kind && within(&p.scope(), &g.scope()));
            if !covered {
                return Err(DelegationError::Widens(
                    "a requested grant is not within the caller's grants".into(),
                ));
            }
        }
        grants.to_vec()
    };
    let ttl = if ttl == 0 { 300 } else { ttl }.min(max_ttl);
    let exp = now.saturating_add(ttl).min(parent_exp);
    Ok(Claims {
        sub: parent.subject.clone(),
        aud: Audience::One(audience.to_string()),
        exp,
        iat: Some(now),
        jti: None,
        scope: ScopeClaims::from(&scope),
        grants: Some(grants),
    })
}

/// Whether restriction `inner` is at least as narrow as `outer` on every field.
fn within(outer: &Scope, inner: &Scope) -> bool {
    outer.contains(inner)
}
