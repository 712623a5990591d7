//! Authentication before Rego (DESIGN §5).
//!
//! # Which policies apply: the restrictive cascade
//!
//! Every auth policy whose `match` holds for a request applies, and **all of them must be
//! satisfied** (a conjunction). This is at least as strict as the strictest matching policy, so
//! adding or overlapping a policy can never weaken what another one demands:
//!
//! - if any matching policy is `required`, a request without a credential is refused
//!   (`missing_token`); it reaches Rego anonymously (`input.identity: null`) only when every
//!   matching policy is optional;
//! - a presented credential must be accepted by every matching policy that has a method for it;
//!   a credential that some matching policy rejects is refused, even when that policy is optional
//!   (an invalid credential is never downgraded to anonymous);
//! - every matching policy's `require` (roles `any_of` / `all_of`, scopes) applies to the
//!   identity: the union of all requirements;
//! - `input.identity` is the identity established by the first matching policy, in config order.
//!
//! When no policy matches, authentication does not run and `input.identity` is absent.
//!
//! # Layout
//!
//! - [`config`]   the `authentication:` section
//! - `build`      the layer built from it (key sources, key stores, users files)
//! - [`request`]  what is read from a CheckRequest; policy matching
//! - [`jwt`], [`jwks`], [`oidc`]  JWT verification, key sources, trusted OIDC issuers
//! - [`api_key`]  the API key store
//! - [`basic`]    Basic authentication with argon2id or bcrypt (JSON or htpasswd) and lockout
//! - [`oauth`]    OAuth 2.0 token introspection (RFC 7662)
//! - [`hmac`]     webhook signatures (GitHub, Stripe, Slack, or a template)
//! - [`custom`]   an external validator service
//! - [`x509`]     the client certificate Envoy forwards
//! - `callout`    bounded outbound calls and the answer cache they share
//! - `limit`      slots for costly work (verifications, call-outs) behind a bounded queue
//! - `secret`     secrets from the environment or owner-only files
//! - [`revocation`] the token deny-list (by `jti`, by subject), shared through a file
//! - [`identity`] `input.identity`
//! - [`audit`]    the audit log (JSON lines)
//! - [`metrics`]  counters

pub mod api_key;
pub mod audit;
pub mod basic;
mod build;
pub(crate) mod callout;
pub(crate) mod config;
pub mod custom;
pub(crate) mod file;
pub mod hmac;
pub(crate) mod identity;
pub(crate) mod jwks;
pub(crate) mod jwt;
pub(crate) mod limit;
pub(crate) mod metrics;
pub mod oauth;
pub(crate) mod oidc;
pub(crate) mod request;
pub mod revocation;
pub(crate) mod secret;
pub mod x509;

use std::sync::Arc;

use self::api_key::ApiKeyStore;
use self::audit::{AuditEvent, AuditLog, thumbprint};
use self::basic::BasicAuth;
pub use self::build::{BuildError, build_verifier};
use self::config::{ApiKeyConfig, Match, Method, Require};
use self::custom::CustomMethod;
use self::hmac::HmacMethod;
use self::identity::Identity;
use self::jwt::JwtVerifier;
use self::metrics::AuthnMetrics;
use self::oauth::OAuthMethod;
use self::oidc::OidcIssuer;
use self::request::{RequestView, path_forms};
use self::revocation::{Presented, Revocations};
use self::x509::X509Method;
use crate::telemetry::labels::Refusal;

/// Where credentials travel in a request, as the authentication config names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Header names, lowercase.
    pub headers: Vec<String>,
    pub query_params: Vec<String>,
    pub cookies: Vec<String>,
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query_params.is_empty() && self.cookies.is_empty()
    }
}

/// What authentication decided.
#[derive(Debug)]
pub enum AuthnOutcome {
    /// No policy matched: `input.identity` is absent.
    NotApplicable,
    /// Only optional policies matched and no credential was presented: `input.identity` is null.
    Anonymous,
    Authenticated(Arc<Identity>),
    Denied(Denial),
}

/// A refusal: 401, 403 or 429 (by [`Refusal::http_status`]) with a code and
/// `www-authenticate` challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: Refusal,
    pub www_authenticate: Vec<String>,
}

impl Denial {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        self.code.http_status()
    }
}

struct JwtMethod {
    header: String,
    scheme: String,
    verifier: Option<Arc<JwtVerifier>>,
}

/// A method's refusal: the answer's code and the reason, for logs and audit events only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: Refusal,
    pub reason: String,
}

struct ApiKeyMethod {
    config: ApiKeyConfig,
    store: Arc<ApiKeyStore>,
}

struct Policy {
    /// The position in config order (for per-policy metrics).
    index: usize,
    name: String,
    matcher: Match,
    methods: Vec<Method>,
    required: bool,
    require: Require,
    jwt: Option<JwtMethod>,
    api_key: Option<ApiKeyMethod>,
    basic: Option<Arc<BasicAuth>>,
    oauth: Option<Arc<OAuthMethod>>,
    hmac: Option<Arc<HmacMethod>>,
    custom: Option<Arc<CustomMethod>>,
    x509: Option<Arc<X509Method>>,
}

/// The authentication layer, built once from the config.
pub struct Authenticator {
    policies: Vec<Policy>,
    oidc: Vec<OidcIssuer>,
    audit: AuditLog,
    metrics: Arc<AuthnMetrics>,
    /// The token deny-list (`authentication.revocation`), consulted after every JWT verifies.
    revocations: Option<Arc<Revocations>>,
}

/// The reason logged and audited when a token that verified is on the deny-list.
pub const REVOKED: &str = "revoked";

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "policies",
                &self.policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// One policy's verdict.
enum PolicyResult {
    Identity(Arc<Identity>),
    NoCredential,
    Failed {
        method: Method,
        code: Refusal,
        reason: String,
        thumbprint: String,
    },
}

impl Authenticator {
    pub fn metrics(&self) -> &Arc<AuthnMetrics> {
        &self.metrics
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Consults `revocations` after every JWT verifies (also after a verified-token cache hit).
    pub fn with_revocations(mut self, revocations: Option<Arc<Revocations>>) -> Self {
        self.revocations = revocations;
        self
    }

    /// Whether the token behind `id` is on the deny-list at `now`.
    fn revoked(&self, id: &Identity, now: i64) -> bool {
        self.revocations
            .as_ref()
            .is_some_and(|r| r.refuses(&Presented::from_identity(id), now))
    }

    /// Verifies a token from a trusted OIDC issuer (`trust.oidc`), for the gateway's
    /// `ExchangeOidcToken`: the issuer's own rules and keys, as on the Check path. `Err` is the
    /// reason, for logs only.
    pub async fn verify_trusted_oidc(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Arc<Identity>, String> {
        const MAX: usize = 16 * 1024;
        if token.len() > MAX {
            return Err("token too large".into());
        }
        let issuer = jwt::peek_issuer(token, MAX).ok_or("no issuer")?;
        let trusted = self
            .oidc
            .iter()
            .find(|o| o.config.issuer == issuer)
            .ok_or("issuer is not trusted")?;
        let verifier = trusted
            .verifier()
            .await
            .ok_or("trusted issuer's keys unavailable")?;
        let id = verifier
            .authenticate(token, now)
            .await
            .map_err(|e| e.to_string())?;
        if self.revoked(&id, now) {
            return Err(REVOKED.into());
        }
        Ok(id)
    }

    /// The API key store of the named policy (for the gateway's key management).
    pub fn api_key_store(&self, policy: &str) -> Option<Arc<ApiKeyStore>> {
        self.policies
            .iter()
            .find(|p| p.name == policy)
            .and_then(|p| p.api_key.as_ref())
            .map(|m| m.store.clone())
    }

    /// Where credentials travel (headers, query parameters, cookies), to erase them from
    /// logged input documents.
    pub fn credential_locations(&self) -> Credentials {
        let mut c = Credentials::default();
        for p in &self.policies {
            if let Some(j) = &p.jwt {
                c.headers.push(j.header.clone());
            }
            if let Some(k) = &p.api_key {
                c.headers
                    .extend(k.config.header.iter().map(|h| h.to_ascii_lowercase()));
                c.query_params.extend(k.config.query_param.iter().cloned());
                c.cookies.extend(k.config.cookie.iter().cloned());
            }
            if p.basic.is_some() || p.methods.contains(&Method::Jwt) {
                c.headers.push("authorization".into());
            }
            if let Some(o) = &p.oauth {
                c.headers.push(o.header.clone());
            }
            if let Some(h) = &p.hmac {
                c.headers.push(h.header.clone());
            }
            if let Some(v) = &p.custom {
                c.headers.extend(v.headers.iter().cloned());
            }
        }
        for list in [&mut c.headers, &mut c.query_params, &mut c.cookies] {
            list.sort();
            list.dedup();
        }
        c
    }

    /// Runs the matching policies for one request.
    pub async fn authenticate(&self, req: &RequestView<'_>, decision_id: &str) -> AuthnOutcome {
        let paths = path_forms(req.path);
        let matched: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| p.matcher.matches(req, &paths))
            .collect();
        if matched.is_empty() {
            return AuthnOutcome::NotApplicable;
        }
        let now = crate::jose::clock::now();
        let mut identity: Option<Arc<Identity>> = None;
        for p in &matched {
            let started = std::time::Instant::now();
            let result = self.run_policy(p, req, now).await;
            let took = started.elapsed();
            match result {
                PolicyResult::Identity(id) => {
                    let required = check_require(&p.require, &id);
                    self.metrics
                        .policy_attempt(p.index, Some(id.method), required.err(), took);
                    if let Err(code) = required {
                        self.metrics.failure(Some(id.method), code);
                        self.refuse(
                            decision_id,
                            p,
                            Some(&id),
                            Some(id.method),
                            code,
                            "requirement not met",
                            &id.thumbprint,
                        );
                        return AuthnOutcome::Denied(Denial {
                            code,
                            www_authenticate: vec![format!("Bearer error=\"{code}\"")],
                        });
                    }
                    if identity.is_none() {
                        identity = Some(id);
                    }
                }
                PolicyResult::NoCredential => {
                    if p.required {
                        self.metrics.failure(None, Refusal::MissingToken);
                        self.metrics.policy_attempt(
                            p.index,
                            None,
                            Some(Refusal::MissingToken),
                            took,
                        );
                        self.refuse(
                            decision_id,
                            p,
                            None,
                            None,
                            Refusal::MissingToken,
                            "no credential",
                            "",
                        );
                        return AuthnOutcome::Denied(Denial {
                            code: Refusal::MissingToken,
                            www_authenticate: challenges(&matched, None),
                        });
                    }
                }
                PolicyResult::Failed {
                    method,
                    code,
                    reason,
                    thumbprint,
                } => {
                    self.metrics.failure(Some(method), code);
                    self.metrics
                        .policy_attempt(p.index, Some(method), Some(code), took);
                    self.refuse(
                        decision_id,
                        p,
                        None,
                        Some(method),
                        code,
                        &reason,
                        &thumbprint,
                    );
                    let www_authenticate = match code {
                        Refusal::TooManyRequests => Vec::new(),
                        _ => challenges(&matched, Some(code)),
                    };
                    return AuthnOutcome::Denied(Denial {
                        code,
                        www_authenticate,
                    });
                }
            }
        }
        match identity {
            Some(id) => {
                self.metrics.success(id.method);
                tracing::debug!(decision.id = %decision_id, authn.method = id.method.as_str(), authn.subject = %id.subject, "authenticated");
                AuthnOutcome::Authenticated(id)
            }
            None => {
                self.metrics.anonymous();
                AuthnOutcome::Anonymous
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        decision_id: &str,
        policy: &Policy,
        identity: Option<&Identity>,
        method: Option<Method>,
        code: Refusal,
        reason: &str,
        thumbprint: &str,
    ) {
        let method = method.map_or("none", Method::as_str);
        tracing::info!(
            decision.id = %decision_id,
            authn.policy = %policy.name,
            authn.method = method,
            authn.result = code.as_str(),
            authn.reason = %reason,
            credential.sha256 = thumbprint,
            "authentication refused"
        );
        let mut event = AuditEvent::new("authn_failure", decision_id)
            .with("policy", policy.name.as_str())
            .with("method", method)
            .with("result", code.as_str())
            .with("reason", reason);
        if !thumbprint.is_empty() {
            event = event.with("credential_sha256", thumbprint);
        }
        if let Some(id) = identity {
            event = event.with("subject", id.subject.as_str());
        }
        self.audit.record(event);
    }

    async fn run_policy(&self, p: &Policy, req: &RequestView<'_>, now: i64) -> PolicyResult {
        let mut failure: Option<PolicyResult> = None;
        for m in &p.methods {
            let result = match m {
                Method::Jwt => match &p.jwt {
                    Some(j) => self.try_jwt(j, req, now).await,
                    None => None,
                },
                Method::ApiKey => p.api_key.as_ref().and_then(|k| try_api_key(k, req, now)),
                Method::Basic => match &p.basic {
                    Some(b) => try_basic(b, req).await,
                    None => None,
                },
                Method::OAuth => match &p.oauth {
                    Some(o) => self.try_oauth(p.index, o, req, now).await,
                    None => None,
                },
                Method::Hmac => p.hmac.as_ref().and_then(|h| {
                    let print = req
                        .header(&h.header)
                        .map(|v| thumbprint(v.trim().as_bytes()));
                    h.verify(req, now).map(|r| match r {
                        Ok(id) => PolicyResult::Identity(Arc::new(id)),
                        Err(r) => failed(Method::Hmac, print.unwrap_or_default(), r),
                    })
                }),
                Method::Custom => match &p.custom {
                    Some(c) => self.try_custom(p.index, c, req, now).await,
                    None => None,
                },
                Method::X509 => p.x509.as_ref().and_then(|x| {
                    x.verify(req, now).map(|r| match r {
                        Ok(id) => PolicyResult::Identity(Arc::new(id)),
                        Err(r) => failed(Method::X509, thumbprint(x.forwarded(req).as_bytes()), r),
                    })
                }),
            };
            match result {
                Some(PolicyResult::Identity(id)) => return PolicyResult::Identity(id),
                Some(f @ PolicyResult::Failed { .. }) => {
                    failure.get_or_insert(f);
                }
                _ => {}
            }
        }
        failure.unwrap_or(PolicyResult::NoCredential)
    }

    async fn try_jwt(
        &self,
        j: &JwtMethod,
        req: &RequestView<'_>,
        now: i64,
    ) -> Option<PolicyResult> {
        let token = credential(req.header(&j.header)?, &j.scheme)?;
        let print = thumbprint(token.as_bytes());
        let fail = |code: Refusal, reason: String| PolicyResult::Failed {
            method: Method::Jwt,
            code,
            reason,
            thumbprint: print.clone(),
        };
        let max = j.verifier.as_ref().map_or(16 * 1024, |v| v.max_token_bytes);
        if token.len() > max {
            return Some(fail(Refusal::InvalidToken, "token too large".into()));
        }
        // A policy with a `jwt` block accepts exactly what its block accepts: its issuer, its
        // audiences, its keys. Only a policy without one accepts the trusted OIDC issuers' tokens,
        // each checked by that issuer's own rules and keys; a trusted issuer never stands in for
        // a policy's rules.
        let verifier = match &j.verifier {
            Some(v) => v.clone(),
            None => {
                let issuer = jwt::peek_issuer(token, max);
                let trusted = issuer
                    .as_deref()
                    .and_then(|iss| self.oidc.iter().find(|o| o.config.issuer == iss));
                match trusted {
                    Some(o) => match o.verifier().await {
                        Some(v) => v,
                        None => {
                            return Some(fail(
                                Refusal::InvalidSignature,
                                "trusted issuer's keys unavailable".into(),
                            ));
                        }
                    },
                    None => {
                        return Some(fail(Refusal::InvalidToken, "issuer is not trusted".into()));
                    }
                }
            }
        };
        // After the verified-token cache: a revocation holds for cached tokens at once.
        Some(match verifier.authenticate(token, now).await {
            Ok(id) if self.revoked(&id, now) => fail(Refusal::InvalidToken, REVOKED.into()),
            Ok(id) => PolicyResult::Identity(id),
            Err(e) => fail(e.code(), e.to_string()),
        })
    }
}

impl Authenticator {
    async fn try_oauth(
        &self,
        policy: usize,
        o: &OAuthMethod,
        req: &RequestView<'_>,
        now: i64,
    ) -> Option<PolicyResult> {
        let token = credential(req.header(&o.header)?, &o.scheme)?;
        let print = thumbprint(token.as_bytes());
        if token.len() > o.max_token_bytes() {
            return Some(failed(
                Method::OAuth,
                print,
                Refused {
                    code: Refusal::InvalidToken,
                    reason: "token too large".into(),
                },
            ));
        }
        let (answer, source) = o.authenticate(token, &print, now).await;
        self.metrics.policy_cache(policy, Method::OAuth, source);
        Some(match answer {
            Ok(id) => PolicyResult::Identity(id),
            Err(r) => failed(Method::OAuth, print, r),
        })
    }
}

impl Authenticator {
    async fn try_custom(
        &self,
        policy: usize,
        c: &CustomMethod,
        req: &RequestView<'_>,
        now: i64,
    ) -> Option<PolicyResult> {
        let presented = c.presented(req)?;
        let print = thumbprint(presented.as_bytes());
        let (answer, source) = c.authenticate(&presented, &print, now).await;
        self.metrics.policy_cache(policy, Method::Custom, source);
        Some(match answer {
            Ok(id) => PolicyResult::Identity(id),
            Err(r) => failed(Method::Custom, print, r),
        })
    }
}

fn failed(method: Method, thumbprint: String, r: Refused) -> PolicyResult {
    PolicyResult::Failed {
        method,
        code: r.code,
        reason: r.reason,
        thumbprint,
    }
}

/// The credential after `scheme ` in a header value (the whole value when `scheme` is empty).
fn credential<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let value = value.trim();
    if scheme.is_empty() {
        return (!value.is_empty()).then_some(value);
    }
    let (s, rest) = value.split_once(' ')?;
    if !s.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = rest.trim();
    (!rest.is_empty()).then_some(rest)
}

fn try_api_key(k: &ApiKeyMethod, req: &RequestView<'_>, now: i64) -> Option<PolicyResult> {
    let c = &k.config;
    let presented: String = c
        .header
        .as_deref()
        .and_then(|h| {
            let v = req.header(&h.to_ascii_lowercase())?;
            if h.eq_ignore_ascii_case("authorization") {
                credential(v, "Bearer").or_else(|| credential(v, "ApiKey"))
            } else {
                Some(v.trim())
            }
        })
        .map(str::to_owned)
        .or_else(|| c.query_param.as_deref().and_then(|q| req.query_param(q)))
        .or_else(|| {
            c.cookie
                .as_deref()
                .and_then(|n| req.cookie(n))
                .map(str::to_owned)
        })
        .filter(|k| !k.is_empty())?;
    let print = thumbprint(presented.as_bytes());
    let fail = |reason: String| {
        Some(PolicyResult::Failed {
            method: Method::ApiKey,
            code: Refusal::InvalidApiKey,
            reason,
            thumbprint: print.clone(),
        })
    };
    if !c.prefix.0.is_empty() && !c.prefix.0.iter().any(|p| presented.starts_with(p.as_str())) {
        return fail("key does not have an accepted prefix".into());
    }
    match k.store.authenticate(&presented, now) {
        Ok(record) => {
            let mut id = Identity::new(Method::ApiKey, record.subject, print.clone());
            id.scopes = record.scopes;
            id.roles = record.roles;
            id.api_key_id = Some(record.id);
            id.expires_at = record.expires_at;
            Some(PolicyResult::Identity(Arc::new(id)))
        }
        Err(e) => fail(e.to_string()),
    }
}

async fn try_basic(b: &BasicAuth, req: &RequestView<'_>) -> Option<PolicyResult> {
    let creds = credential(req.header("authorization")?, "Basic")?;
    let user = basic::decode(creds).map(|(u, _)| u).unwrap_or_default();
    // Never hash a password into a log: the thumbprint covers the user name only.
    let print = thumbprint(format!("basic:{user}").as_bytes());
    Some(match b.verify(creds).await {
        Ok(u) => {
            let mut id = Identity::new(Method::Basic, u.username, print);
            id.roles = u.roles;
            id.scopes = u.scopes;
            PolicyResult::Identity(Arc::new(id))
        }
        Err(e) => PolicyResult::Failed {
            method: Method::Basic,
            code: if e == basic::BasicError::Busy {
                Refusal::TooManyRequests
            } else {
                Refusal::InvalidToken
            },
            reason: e.to_string(),
            thumbprint: print,
        },
    })
}

/// `Err(code)` when the identity lacks a required role or scope.
fn check_require(r: &Require, id: &Identity) -> Result<(), Refusal> {
    if let Some(roles) = &r.roles {
        if !roles.any_of.is_empty() && !roles.any_of.iter().any(|x| id.has_role(x)) {
            return Err(Refusal::InsufficientRole);
        }
        if !roles.all_of.iter().all(|x| id.has_role(x)) {
            return Err(Refusal::InsufficientRole);
        }
    }
    if !r.scopes.iter().all(|s| id.has_scope(s)) {
        return Err(Refusal::InsufficientScope);
    }
    if r.mfa || !r.amr.is_empty() {
        // `amr` as the credential states it: an array of strings (RFC 8176), nothing else.
        let amr: Vec<&str> = match id.claims.get("amr") {
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        if (r.mfa && !amr.contains(&"mfa")) || !r.amr.iter().all(|m| amr.contains(&m.as_str())) {
            return Err(Refusal::InsufficientAuthentication);
        }
    }
    if !r.acr.is_empty() {
        let acr = id.claims.get("acr").and_then(serde_json::Value::as_str);
        if !acr.is_some_and(|a| r.acr.iter().any(|x| x == a)) {
            return Err(Refusal::InsufficientAuthentication);
        }
    }
    Ok(())
}

/// `www-authenticate` challenges for the methods of the matching policies.
fn challenges(policies: &[&Policy], error: Option<Refusal>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in policies {
        for m in &p.methods {
            let c = match m {
                // RFC 6750 §3.1 knows `invalid_token`, not which part was wrong.
                Method::Jwt | Method::OAuth => match error {
                    Some(Refusal::InvalidToken | Refusal::InvalidSignature) => {
                        "Bearer realm=\"portcullis\", error=\"invalid_token\"".to_string()
                    }
                    _ => "Bearer realm=\"portcullis\"".to_string(),
                },
                Method::ApiKey => "ApiKey realm=\"portcullis\"".to_string(),
                Method::Hmac => "Signature realm=\"portcullis\"".to_string(),
                Method::Custom => "Custom realm=\"portcullis\"".to_string(),
                Method::X509 => "ClientCertificate realm=\"portcullis\"".to_string(),
                Method::Basic => format!(
                    "Basic realm=\"{}\", charset=\"UTF-8\"",
                    p.basic
                        .as_ref()
                        .map_or("portcullis", |b| b.realm.as_str())
                        .replace('"', "")
                ),
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements() {
        let mut id = Identity::new(Method::Jwt, "u".into(), String::new());
        id.roles = vec!["reader".into()];
        id.scopes = vec!["a".into(), "b".into()];
        let r = |any: &[&str], all: &[&str], scopes: &[&str]| Require {
            roles: Some(config::RoleRequirement {
                any_of: any.iter().map(|s| s.to_string()).collect(),
                all_of: all.iter().map(|s| s.to_string()).collect(),
            }),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            check_require(&r(&["reader", "admin"], &[], &["a"]), &id),
            Ok(())
        );
        assert_eq!(
            check_require(&r(&["admin"], &[], &[]), &id),
            Err(Refusal::InsufficientRole)
        );
        assert_eq!(
            check_require(&r(&[], &["reader", "admin"], &[]), &id),
            Err(Refusal::InsufficientRole)
        );
        assert_eq!(
            check_require(&r(&[], &[], &["a", "c"]), &id),
            Err(Refusal::InsufficientScope)
        );
    }

    #[test]
    fn credentials_from_headers() {
        assert_eq!(credential("Bearer abc", "Bearer"), Some("abc"));
        assert_eq!(credential("bearer  abc ", "Bearer"), Some("abc"));
        assert_eq!(credential("Basic abc", "Bearer"), None);
        assert_eq!(credential("Bearer ", "Bearer"), None);
        assert_eq!(credential("abc", ""), Some("abc"));
    }
}
