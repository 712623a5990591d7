//! Who is calling: credentials → [`Caller`]. Gateway JWTs and delegation are in
//! [`super::claims`], scopes and grants in [`super::scope`].
//!
//! | mode | credential | caller gets |
//! |---|---|---|
//! | `jwt` | `authorization: Bearer <HS256 JWT>` | the token's scope claims and grants |
//! | `token` | `authorization: Bearer <GATEWAY_TOKEN>` | the fixed grant below |
//! | `password` | `authorization: Basic base64(any-user:<GATEWAY_PASSWORD>)` | the fixed grant below |
//! | `client_cert` | a client certificate that `gateway.tls.client_ca_file` verifies | the fixed grant below; subject: its SPIFFE ID, else first DNS SAN, else subject DN |
//! | `open` | none | the fixed grant below |
//!
//! The fixed grant of static-token, password, client-certificate and open callers is `readwrite` on every
//! namespace with no delegation: they cannot mint tokens (only JWT callers can, and only
//! narrower ones). In `jwt` mode nothing but a valid JWT is accepted: a Basic password or an
//! opaque bearer never stands in for the secret, whatever its value. Secrets are compared in
//! constant time.
//!
//! Gateway JWT claims: `sub`, `aud` (string or array; must hold the configured audience),
//! `exp` (required), the scope claims `ns`, `agent`, `session`, `channel`, and `grants`
//! `[{kind: read|readwrite, namespace?, agent?, session?, channel?}]`. A missing `grants`
//! claim grants nothing. Empty strings in scope claims or grants make the token invalid
//! (never "unrestricted"); so do unknown keys in a grant.
//!
//! With a revocation list (`authentication.revocation`), a JWT that verifies is refused when
//! the list names its `jti`, or its `sub` with an `iat` at or before the entry's time.

use std::sync::Arc;

use base64::Engine as _;
use subtle::ConstantTimeEq;

pub use super::claims::{
    Audience, Claims, DelegationError, EXP_LEEWAY_SECONDS, MAX_TOKEN_BYTES, ScopeClaims,
    caller_from_claims, delegate, sign, verify,
};
use super::config::AuthMode;
pub use super::scope::{Grant, GrantKind, MAX_GRANTS, MAX_SCOPE_VALUE, Scope};
use crate::authn::revocation::{Presented, Revocations};
use crate::jose::clock::now_u64 as now;

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Jwt,
    Token,
    Password,
    ClientCert,
    Open,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Jwt => "jwt",
            Method::Token => "token",
            Method::Password => "password",
            Method::ClientCert => "client_cert",
            Method::Open => "open",
        }
    }
}

/// An authenticated caller. Inserted into each request's extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub method: Method,
    pub subject: String,
    /// The token's own scope claims: nothing outside them, whatever the grants say.
    pub scope: Scope,
    pub grants: Vec<Grant>,
    /// `exp` of the token (JWT callers).
    pub expires_at: Option<u64>,
    /// `jti` of the token (JWT callers whose token has one).
    pub token_id: Option<String>,
}

impl Caller {
    /// The fixed caller of static-token, password and open modes.
    fn fixed(method: Method) -> Self {
        Self {
            method,
            subject: format!("gateway-{}", method.name()),
            scope: Scope::default(),
            grants: vec![Grant::all(GrantKind::Readwrite)],
            expires_at: None,
            token_id: None,
        }
    }

    /// Whether the caller may act on `target` with `needed`: the target is inside the
    /// token's scope and inside one grant of at least that kind.
    pub fn allows(&self, needed: GrantKind, target: &Scope) -> bool {
        self.scope.contains(target)
            && self
                .grants
                .iter()
                .any(|g| g.kind >= needed && g.scope().contains(target))
    }
}

/// Why a credential was refused. Never shown to the caller (who sees a generic message);
/// logged without the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("credentials of the wrong kind for this gateway's mode")]
    WrongKind,
    #[error("credentials do not match")]
    Mismatch,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token verified and is on the revocation list.
    #[error("{}", crate::authn::REVOKED)]
    Revoked {
        /// SHA-256 (hex) of the token, for the log line.
        credential_sha256: String,
    },
}

/// Checks credentials against the mode.
#[derive(Clone)]
pub struct Authenticator {
    mode: AuthMode,
    audience: String,
    revocations: Option<Arc<Revocations>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode.name())
            .field("audience", &self.audience)
            .finish()
    }
}

impl Authenticator {
    pub fn new(mode: AuthMode, audience: impl Into<String>) -> Self {
        Self {
            mode,
            audience: audience.into(),
            revocations: None,
        }
    }

    /// Refuses JWTs that `revocations` names.
    pub fn with_revocations(mut self, revocations: Option<Arc<Revocations>>) -> Self {
        self.revocations = revocations;
        self
    }

    /// The revocation list, when there is one.
    pub fn revocations(&self) -> Option<&Arc<Revocations>> {
        self.revocations.as_ref()
    }

    pub fn mode(&self) -> &AuthMode {
        &self.mode
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The caller from an `authorization` header value (`None`: no header).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthError> {
        self.authenticate_peer(authorization, None)
    }

    /// The caller from an `authorization` header value and the client certificate the TLS
    /// handshake verified (`None`: none).
    pub fn authenticate_peer(
        &self,
        authorization: Option<&[u8]>,
        client: Option<&crate::tls::ClientIdentity>,
    ) -> Result<Caller, AuthError> {
        match (&self.mode, client) {
            (AuthMode::Open, _) => return Ok(Caller::fixed(Method::Open)),
            (AuthMode::ClientCert, Some(id)) if !id.name().is_empty() => {
                let mut caller = Caller::fixed(Method::ClientCert);
                caller.subject = id.name().to_string();
                return Ok(caller);
            }
            (AuthMode::ClientCert, _) => return Err(AuthError::Missing),
            _ => {}
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::WrongKind)?;
        let (scheme, value) = header.trim().split_once(' ').ok_or(AuthError::WrongKind)?;
        let value = value.trim();
        match &self.mode {
            AuthMode::Jwt(secret) if scheme.eq_ignore_ascii_case("bearer") => {
                let at = now();
                let claims = verify(value, secret, &self.audience, at)?;
                if let Some(r) = &self.revocations {
                    let token = Presented {
                        jti: claims.jti.as_deref(),
                        subject: &claims.sub,
                        issued_at: claims.iat.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                    };
                    if r.refuses(&token, i64::try_from(at).unwrap_or(i64::MAX)) {
                        return Err(AuthError::Revoked {
                            credential_sha256: crate::authn::audit::thumbprint(value.as_bytes()),
                        });
                    }
                }
                caller_from_claims(claims)
            }
            AuthMode::Token(token) if scheme.eq_ignore_ascii_case("bearer") => {
                if ct_eq(value.as_bytes(), token.as_bytes()) {
                    Ok(Caller::fixed(Method::Token))
                } else {
                    Err(AuthError::Mismatch)
                }
            }
            AuthMode::Password(password) if scheme.eq_ignore_ascii_case("basic") => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|_| AuthError::WrongKind)?;
                let pos = decoded
                    .iter()
                    .position(|b| *b == b':')
                    .ok_or(AuthError::WrongKind)?;
                if ct_eq(&decoded[pos + 1..], password.as_bytes()) {
                    Ok(Caller::fixed(Method::Password))
                } else {
                    Err(AuthError::Mismatch)
                }
            }
            _ => Err(AuthError::WrongKind),
        }
    }

    /// Signs claims with the JWT secret (`None` outside JWT mode).
    pub fn sign(&self, claims: &Claims) -> Option<Result<String, String>> {
        match &self.mode {
            AuthMode::Jwt(secret) => Some(sign(claims, secret)),
            _ => None,
        }
    }
}

/// Constant-time comparison (the length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const AUD: &str = "portcullis-gateway";

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).unwrap()
    }

    fn jwt_caller(json: serde_json::Value) -> Result<Caller, AuthError> {
        let token = sign(&claims(json), SECRET).unwrap();
        let auth = Authenticator::new(AuthMode::Jwt(SECRET.to_vec()), AUD);
        auth.authenticate(Some(format!("Bearer {token}").as_bytes()))
    }

    fn ns(n: &str) -> Scope {
        Scope {
            namespace: Some(n.into()),
            ..Default::default()
        }
    }

    #[test]
    fn namespace_scope_covers_children_never_siblings() {
        let c = jwt_caller(serde_json::json!({
            "sub": "a", "aud": AUD, "exp": now() + 60, "ns": "acme",
            "grants": [{"kind": "readwrite"}]
        }))
        .unwrap();
        assert!(c.allows(GrantKind::Readwrite, &ns("acme")));
        assert!(c.allows(GrantKind::Readwrite, &ns("acme:payments")));
        assert!(!c.allows(GrantKind::Read, &ns("acme2")));
        assert!(!c.allows(GrantKind::Read, &Scope::default()));
    }

    #[test]
    fn agent_token_cannot_act_at_namespace_level() {
        let c = jwt_caller(serde_json::json!({
            "sub": "a", "aud": [AUD, "other"], "exp": now() + 60, "ns": "acme", "agent": "bot",
            "grants": [{"kind": "readwrite"}]
        }))
        .unwrap();
        assert!(!c.allows(GrantKind::Readwrite, &ns("acme")));
        let mut own = ns("acme");
        own.agent = Some("bot".into());
        assert!(c.allows(GrantKind::Readwrite, &own));
        own.agent = Some("other".into());
        assert!(!c.allows(GrantKind::Read, &own));
    }

    #[test]
    fn read_grant_never_passes_a_write() {
        let c = jwt_caller(serde_json::json!({
            "sub": "a", "aud": AUD, "exp": now() + 60,
            "grants": [{"kind": "read"}, {"kind": "readwrite", "namespace": "scratch"}]
        }))
        .unwrap();
        assert!(c.allows(GrantKind::Read, &ns("acme")));
        assert!(!c.allows(GrantKind::Readwrite, &ns("acme")));
        assert!(c.allows(GrantKind::Readwrite, &ns("scratch:x")));
    }

    #[test]
    fn bad_tokens_are_refused() {
        for bad in [
            serde_json::json!({"sub": "a", "aud": AUD, "exp": now() + 60, "ns": ""}),
            serde_json::json!({"sub": "a", "aud": AUD, "exp": now() + 60, "agent": ""}),
            serde_json::json!({"sub": "a", "aud": AUD, "exp": now() + 60,
                "grants": [{"kind": "read", "namespace": ""}]}),
            serde_json::json!({"sub": "a", "aud": AUD, "exp": now() + 60,
                "grants": [{"kind": "read", "nmespace": "x"}]}),
            serde_json::json!({"sub": "a", "aud": AUD, "exp": now() + 60,
                "grants": [{"kind": "admin"}]}),
            serde_json::json!({"sub": "a", "aud": AUD, "exp": now() - 3600}),
            serde_json::json!({"sub": "a", "aud": "someone-else", "exp": now() + 60}),
            serde_json::json!({"sub": "", "aud": AUD, "exp": now() + 60}),
            serde_json::json!({"sub": "a", "aud": AUD, "exp": now() + 60, "ns": "a::b"}),
        ] {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &bad,
                &jsonwebtoken::EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            let auth = Authenticator::new(AuthMode::Jwt(SECRET.to_vec()), AUD);
            assert!(
                auth.authenticate(Some(format!("Bearer {token}").as_bytes()))
                    .is_err(),
                "{bad}"
            );
        }
        // Signed with another key; no `exp`; alg none.
        let other = sign(
            &claims(serde_json::json!({"sub": "a", "aud": AUD, "exp": now() + 60})),
            b"another-secret-another-secret-xx",
        )
        .unwrap();
        let auth = Authenticator::new(AuthMode::Jwt(SECRET.to_vec()), AUD);
        assert!(
            auth.authenticate(Some(format!("Bearer {other}").as_bytes()))
                .is_err()
        );
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(&format!(
                r#"{{"sub":"a","aud":"{AUD}","exp":{}}}"#,
                now() + 60
            ))
        );
        assert!(
            auth.authenticate(Some(format!("Bearer {none}").as_bytes()))
                .is_err()
        );
    }

    #[test]
    fn other_credentials_never_stand_in_for_the_secret() {
        let auth = Authenticator::new(AuthMode::Jwt(SECRET.to_vec()), AUD);
        let basic = base64::engine::general_purpose::STANDARD
            .encode([b"root:".as_slice(), SECRET].concat());
        assert_eq!(
            auth.authenticate(Some(format!("Basic {basic}").as_bytes())),
            Err(AuthError::WrongKind)
        );
        let raw = format!("Bearer {}", String::from_utf8_lossy(SECRET));
        assert!(auth.authenticate(Some(raw.as_bytes())).is_err());
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
    }

    #[test]
    fn static_token_and_password_get_the_fixed_grant() {
        let t = Authenticator::new(AuthMode::Token("tok".into()), AUD);
        let c = t.authenticate(Some(b"Bearer tok")).unwrap();
        assert_eq!(c.method, Method::Token);
        assert_eq!(c.grants, vec![Grant::all(GrantKind::Readwrite)]);
        assert!(t.authenticate(Some(b"Bearer tok2")).is_err());
        assert!(t.authenticate(Some(b"Basic dG9r")).is_err());
        let p = Authenticator::new(AuthMode::Password("pw".into()), AUD);
        let ok = base64::engine::general_purpose::STANDARD.encode("anyone:pw");
        assert_eq!(
            p.authenticate(Some(format!("Basic {ok}").as_bytes()))
                .unwrap()
                .method,
            Method::Password
        );
        let bad = base64::engine::general_purpose::STANDARD.encode("anyone:pw2");
        assert!(
            p.authenticate(Some(format!("Basic {bad}").as_bytes()))
                .is_err()
        );
        assert!(p.authenticate(Some(b"Bearer pw")).is_err());
        assert!(
            t.sign(&claims(serde_json::json!({"aud": AUD, "exp": 1})))
                .is_none()
        );
    }

    #[test]
    fn delegation_only_narrows() {
        let parent = jwt_caller(serde_json::json!({
            "sub": "op", "aud": AUD, "exp": now() + 600, "ns": "acme",
            "grants": [{"kind": "read"}, {"kind": "readwrite", "namespace": "acme:dev"}]
        }))
        .unwrap();
        let t = now();
        // Inherits; exp capped by the parent's.
        let c = delegate(&parent, &Scope::default(), &[], 10_000, 86_400, AUD, t).unwrap();
        assert_eq!(c.scope.ns.as_deref(), Some("acme"));
        assert_eq!(c.exp, parent.expires_at.unwrap());
        // A sub-namespace with a subset of grants.
        let g = Grant {
            namespace: Some("acme:dev:x".into()),
            ..Grant::all(GrantKind::Readwrite)
        };
        let c = delegate(
            &parent,
            &ns("acme:dev"),
            std::slice::from_ref(&g),
            60,
            86_400,
            AUD,
            t,
        )
        .unwrap();
        assert_eq!(c.exp, t + 60);
        assert_eq!(c.grants, Some(vec![g]));
        // Widening: a sibling namespace, a readwrite grant outside acme:dev, an unrestricted one.
        assert!(matches!(
            delegate(&parent, &ns("acme2"), &[], 60, 86_400, AUD, t),
            Err(DelegationError::Widens(_))
        ));
        assert!(matches!(
            delegate(
                &parent,
                &ns("acme:prod"),
                &[Grant::all(GrantKind::Readwrite)],
                60,
                86_400,
                AUD,
                t
            ),
            Err(DelegationError::Widens(_))
        ));
        let fixed = Caller::fixed(Method::Password);
        assert_eq!(
            delegate(&fixed, &Scope::default(), &[], 60, 86_400, AUD, t),
            Err(DelegationError::NotJwt)
        );
        let empty = Scope {
            agent: Some(String::new()),
            ..Default::default()
        };
        assert!(matches!(
            delegate(&parent, &empty, &[], 60, 86_400, AUD, t),
            Err(DelegationError::Invalid(_))
        ));
    }
}
