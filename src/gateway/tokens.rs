//! `AuthService`: gateway tokens by delegation and by exchange, API keys, and the JWKS of the
//! internal tokens.
//!
//! - `MintAccessToken` (JWT callers): only narrows (see [`super::caller::delegate`]).
//! - `ExchangeOidcToken` (public): an ID token from a trusted issuer
//!   (`authentication.trust.oidc`) becomes a gateway token with the grants that issuer's
//!   config gives (`grants:`), expiring no later than the ID token.
//! - `ExchangeApiKey` (public): an API key of the managed store becomes a gateway token with
//!   the grants the key carries as scopes (below), expiring no later than the key.
//! - `CreateApiKey` / `RevokeApiKey` (readwrite) and `ListApiKeys` (read) act on the API key
//!   store of one authentication policy (`gateway.api_key_policy`, default the first policy
//!   with `api_key`); they need access to the default namespace. The secret of a created key
//!   is in that response only; listings never show secrets or hashes.
//! - `GetJwks` (public): the internal-token signing keys (`internal_token`), never the
//!   gateway's HS256 secret; an empty set without `internal_token`.
//! - `RevokeToken` / `ListRevocations`: the token revocation list, in [`super::revocations`].
//!   No token is signed here for a subject the list refuses new tokens for.
//!
//! **Gateway grants of API keys** are scopes of the form `gateway:read` or
//! `gateway:readwrite`, optionally narrowed to a namespace with `@`: `gateway:readwrite@acme`.
//! A key without one exchanges for nothing (PERMISSION_DENIED).
//!
//! **What a created key may carry** ([`issue_key`], the one place this is decided): never a
//! subject, role or scope its creator could not act as.
//!
//! - Subject: the creator's own subject (the default), or a sub-identity of it,
//!   `<creator>/<name>` (`ops/ci`): a key never names someone else.
//! - Gateway scopes: within the creator's own grants and token scope.
//! - Other scopes (those policies and `require.scopes` read on the Check path): only those
//!   listed in `gateway.api_key_scopes` (default: none), which the operator writes and a caller
//!   cannot change.
//! - Roles: none (keys with roles are written into the store by the operator).
//! - Lifetime: a JWT caller's keys expire no later than its token.
//!
//! Exchanges need the gateway to be in JWT mode (they sign with `GATEWAY_JWT_SECRET`); a
//! refused credential is UNAUTHENTICATED with the usual generic message.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::access::{Rpc, namespace_target};
use super::caller::{
    Audience, Caller, Claims, DelegationError, Grant, GrantKind, Method, Scope, ScopeClaims,
    delegate,
};
use super::config::GatewayConfig;
use super::pb::{self, AccessToken, MintAccessTokenRequest};
use super::{Gateway, GatewayError, caller_of};
use crate::authn::api_key::{ApiKeyRecord, ApiKeyStore, NewApiKey};
use crate::authn::config::Authentication;
use crate::authz::security::Security;
use crate::invalid::Invalid;
use crate::jose::clock::now_u64 as now;
use crate::namespaces::DEFAULT_NAMESPACE;

/// The default lifetime of an exchanged token.
const DEFAULT_TTL: u64 = 300;

/// The longest sub-identity name (after `<creator>/`).
const MAX_KEY_NAME: usize = 128;

/// The API key store the gateway manages.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    /// The authentication policy it belongs to.
    pub policy: String,
    pub store: Arc<ApiKeyStore>,
    /// The policy's accepted prefixes; new keys get the first.
    pub prefixes: Vec<String>,
    /// Non-gateway scopes a key created through the gateway may carry
    /// (`gateway.api_key_scopes`).
    pub issuable_scopes: Vec<String>,
}

impl ApiKeys {
    /// The store of `gateway.api_key_policy`, else of the first authentication policy with
    /// `api_key`; `None` when no policy has one. A named policy without `api_key` is an error
    /// (keyed below `gateway`).
    pub fn from_sections(
        gateway: &GatewayConfig,
        authentication: Option<&Authentication>,
        security: Option<&Security>,
    ) -> Result<Option<Self>, Invalid> {
        let invalid = |m: String| Invalid::new("api_key_policy", m);
        let named = gateway.api_key_policy.as_ref();
        let policies = authentication
            .map(|a| a.policies.as_slice())
            .unwrap_or_default();
        let policy = match named {
            Some(name) => policies
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| invalid(format!("no authentication policy named {name:?}")))?,
            None => match policies.iter().find(|p| p.api_key.is_some()) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let Some(api_key) = &policy.api_key else {
            return Err(invalid(format!(
                "authentication policy {:?} has no api_key",
                policy.name
            )));
        };
        let store = security
            .and_then(|s| s.authn.as_ref())
            .and_then(|a| a.api_key_store(&policy.name))
            .ok_or_else(|| {
                invalid(format!(
                    "the API key store of {:?} is not open",
                    policy.name
                ))
            })?;
        Ok(Some(Self {
            policy: policy.name.clone(),
            store,
            prefixes: api_key.prefix.0.clone(),
            issuable_scopes: gateway.api_key_scopes.clone(),
        }))
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Gateway);

fn scope_of(s: Option<&pb::Scope>) -> Scope {
    let given = |v: &str| (!v.is_empty()).then(|| v.to_string());
    s.map(|s| Scope {
        namespace: given(&s.namespace),
        agent: given(&s.agent),
        session: given(&s.session),
        channel: given(&s.channel),
    })
    .unwrap_or_default()
}

/// A protobuf grant; an empty string field is "not restricted" on the wire (proto3 has no
/// absent strings), and the kind must be given.
fn grant_of(g: &pb::Grant) -> Result<Grant, GatewayError> {
    let given = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let kind = match pb::GrantKind::try_from(g.kind) {
        Ok(pb::GrantKind::Read) => GrantKind::Read,
        Ok(pb::GrantKind::Readwrite) => GrantKind::Readwrite,
        _ => return Err(GatewayError::Invalid("a grant needs a kind".into())),
    };
    Ok(Grant {
        kind,
        namespace: given(&g.namespace),
        agent: given(&g.agent),
        session: given(&g.session),
        channel: given(&g.channel),
    })
}

/// A grant as protobuf.
pub fn grant_to_pb(g: &Grant) -> pb::Grant {
    pb::Grant {
        kind: match g.kind {
            GrantKind::Read => pb::GrantKind::Read,
            GrantKind::Readwrite => pb::GrantKind::Readwrite,
        } as i32,
        namespace: g.namespace.clone().unwrap_or_default(),
        agent: g.agent.clone().unwrap_or_default(),
        session: g.session.clone().unwrap_or_default(),
        channel: g.channel.clone().unwrap_or_default(),
    }
}

/// `gateway:read`, `gateway:readwrite`, `gateway:readwrite@acme` → a grant; other scopes
/// → `None`; a malformed gateway scope → `Err`.
pub fn grant_of_scope(scope: &str) -> Option<Result<Grant, String>> {
    let rest = scope.strip_prefix("gateway:")?;
    let (kind, ns) = match rest.split_once('@') {
        Some((k, ns)) => (k, Some(ns.to_string())),
        None => (rest, None),
    };
    let Some(kind) = GrantKind::parse(kind) else {
        return Some(Err(format!(
            "{scope:?}: expected gateway:read or gateway:readwrite"
        )));
    };
    let grant = Grant {
        namespace: ns,
        ..Grant::all(kind)
    };
    Some(
        grant
            .scope()
            .validate()
            .map(|()| grant)
            .map_err(|e| format!("{scope:?}: {e}")),
    )
}

/// The gateway grants an API key carries.
fn key_grants(record: &ApiKeyRecord) -> Result<Vec<Grant>, String> {
    record
        .scopes
        .iter()
        .filter_map(|s| grant_of_scope(s))
        .collect()
}

/// Key management acts on the sidecar as a whole: it needs access to the default namespace.
fn authorize_keys<T>(request: &Request<T>, rpc: Rpc) -> Result<Caller, GatewayError> {
    let caller = caller_of(request)?;
    rpc.authorize(&caller, &namespace_target(DEFAULT_NAMESPACE))?;
    Ok(caller)
}

fn api_keys(gw: &Gateway) -> Result<&ApiKeys, GatewayError> {
    gw.api_keys().ok_or(GatewayError::Precondition(
        "no API key store: configure an authentication policy with api_key \
         (gateway.api_key_policy names which)",
    ))
}

fn unix(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Signs a gateway token for an exchanged credential.
fn issue(
    gw: &Gateway,
    subject: &str,
    scope: Scope,
    grants: Vec<Grant>,
    ttl: u64,
    credential_exp: Option<i64>,
) -> Result<AccessToken, GatewayError> {
    scope.validate().map_err(GatewayError::Invalid)?;
    let auth = gw.authenticator();
    let now = now();
    let ttl = if ttl == 0 { DEFAULT_TTL } else { ttl }.min(gw.max_token_ttl());
    let mut exp = now.saturating_add(ttl);
    if let Some(cap) = credential_exp {
        exp = exp.min(u64::try_from(cap).unwrap_or(0));
    }
    if exp <= now {
        return Err(GatewayError::Unauthenticated);
    }
    let claims = Claims {
        sub: subject.to_string(),
        aud: Audience::One(auth.audience().to_string()),
        exp,
        iat: Some(now),
        jti: None,
        scope: ScopeClaims::from(&scope),
        grants: Some(grants),
    };
    access_token(gw, &claims)
}

fn access_token(gw: &Gateway, claims: &Claims) -> Result<AccessToken, GatewayError> {
    if let Some(r) = gw.authenticator().revocations()
        && r.refuses_new(&claims.sub, crate::jose::clock::now())
    {
        tracing::info!(authn.subject = %claims.sub, reason = crate::authn::REVOKED, "no gateway token issued");
        return Err(GatewayError::Unauthenticated);
    }
    let token = gw
        .authenticator()
        .sign(claims)
        .ok_or(GatewayError::Delegation(DelegationError::NotJwt))?
        .map_err(GatewayError::Internal)?;
    let scope = Scope::from(&claims.scope);
    Ok(AccessToken {
        token,
        expires_at: unix(claims.exp),
        scope: Some(pb::Scope {
            namespace: scope.namespace.unwrap_or_default(),
            agent: scope.agent.unwrap_or_default(),
            session: scope.session.unwrap_or_default(),
            channel: scope.channel.unwrap_or_default(),
        }),
        grants: claims
            .grants
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(grant_to_pb)
            .collect(),
    })
}

fn key_to_pb(r: &ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: r.id.clone(),
        subject: r.subject.clone(),
        scopes: r.scopes.clone(),
        expires_at: r.expires_at.unwrap_or(0),
        revoked: r.revoked,
        created_at: r.created_at.unwrap_or(0),
        last_used_at: r.last_used_at.unwrap_or(0),
    }
}

/// The key `caller` may create from `req`: the one place that decides (see the module docs).
pub fn issue_key(
    caller: &Caller,
    req: pb::CreateApiKeyRequest,
    keys: &ApiKeys,
    now: i64,
) -> Result<NewApiKey, GatewayError> {
    let subject = if req.subject.is_empty() {
        caller.subject.clone()
    } else {
        let own = req.subject == caller.subject;
        let name = req
            .subject
            .strip_prefix(caller.subject.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        let sub_identity = name.is_some_and(|n| {
            !n.is_empty() && n.len() <= MAX_KEY_NAME && !n.chars().any(char::is_control)
        });
        if !own && !sub_identity {
            return Err(GatewayError::Delegation(DelegationError::Widens(format!(
                "a key's subject is its creator's ({:?}) or a sub-identity of it ({:?}/<name>)",
                caller.subject, caller.subject
            ))));
        }
        req.subject
    };
    for scope in &req.scopes {
        match grant_of_scope(scope) {
            Some(grant) => {
                let g = grant.map_err(GatewayError::Invalid)?;
                let within = caller.scope.contains(&g.scope())
                    && caller
                        .grants
                        .iter()
                        .any(|p| g.kind <= p.kind && p.scope().contains(&g.scope()));
                if !within {
                    return Err(GatewayError::Delegation(DelegationError::Widens(
                        "a gateway scope of the key is wider than the caller's grants".into(),
                    )));
                }
            }
            None if keys.issuable_scopes.iter().any(|s| s == scope) => {}
            None => {
                return Err(GatewayError::Delegation(DelegationError::Widens(format!(
                    "scope {:?} is not in gateway.api_key_scopes",
                    scope.chars().take(64).collect::<String>()
                ))));
            }
        }
    }
    let mut expires_at = (req.ttl_seconds > 0)
        .then(|| now.saturating_add(i64::try_from(req.ttl_seconds).unwrap_or(i64::MAX)));
    if caller.method == Method::Jwt
        && let Some(exp) = caller.expires_at
    {
        let cap = unix(exp);
        expires_at = Some(expires_at.map_or(cap, |e| e.min(cap)));
    }
    Ok(NewApiKey {
        subject,
        scopes: req.scopes,
        roles: Vec::new(),
        expires_at,
        prefix: keys.prefixes.first().cloned().unwrap_or_default(),
    })
}

/// Refuses exchanges outside JWT mode before any credential is looked at.
fn require_jwt(gw: &Gateway) -> Result<(), GatewayError> {
    match gw.authenticator().mode() {
        super::AuthMode::Jwt(_) => Ok(()),
        _ => Err(GatewayError::Precondition(
            "exchanges issue gateway JWTs: set GATEWAY_JWT_SECRET",
        )),
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for Service {
    async fn mint_access_token(
        &self,
        request: Request<MintAccessTokenRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let grants = req
            .grants
            .iter()
            .map(grant_of)
            .collect::<Result<Vec<_>, _>>()?;
        let auth = self.0.authenticator();
        let claims = delegate(
            &caller,
            &scope_of(req.scope.as_ref()),
            &grants,
            req.ttl_seconds,
            self.0.max_token_ttl(),
            auth.audience(),
            now(),
        )
        .map_err(GatewayError::from)?;
        let token = access_token(&self.0, &claims)?;
        tracing::info!(
            authn.subject = %caller.subject,
            token.ns = token.scope.as_ref().map_or("", |s| s.namespace.as_str()),
            token.exp = claims.exp,
            "gateway token minted by delegation"
        );
        Ok(Response::new(token))
    }

    async fn exchange_oidc_token(
        &self,
        request: Request<pb::ExchangeOidcTokenRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        require_jwt(&self.0)?;
        let req = request.into_inner();
        let authn =
            self.0
                .security()
                .and_then(|s| s.authn.as_ref())
                .ok_or(GatewayError::Precondition(
                    "no trusted OIDC issuers: configure authentication.trust.oidc",
                ))?;
        let identity = authn
            .verify_trusted_oidc(&req.id_token, crate::jose::clock::now())
            .await
            .map_err(|reason| {
                tracing::info!(reason = %reason, "OIDC exchange refused");
                GatewayError::Unauthenticated
            })?;
        let grants: Vec<Grant> = identity.grants.clone();
        if grants.is_empty() {
            return Err(GatewayError::Denied(super::access::Denied {
                rpc: Rpc::ExchangeOidcToken,
            })
            .into());
        }
        for g in &grants {
            g.scope()
                .validate()
                .map_err(|e| GatewayError::Internal(format!("trust.oidc grant: {e}")))?;
        }
        let token = issue(
            &self.0,
            &identity.subject,
            scope_of(req.scope.as_ref()),
            grants,
            req.ttl_seconds,
            identity.expires_at,
        )?;
        tracing::info!(authn.subject = %identity.subject, authn.method = "oidc", "gateway token issued for an ID token");
        Ok(Response::new(token))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = authorize_keys(&request, Rpc::CreateApiKey)?;
        let keys = api_keys(&self.0)?.clone();
        let new = issue_key(
            &caller,
            request.into_inner(),
            &keys,
            crate::jose::clock::now(),
        )?;
        let subject = new.subject.clone();
        let created = tokio::task::spawn_blocking(move || keys.store.create(new))
            .await
            .map_err(|e| GatewayError::Internal(format!("key store task: {e}")))?
            .map_err(GatewayError::Internal)?;
        tracing::info!(
            api_key.id = %created.record.id,
            api_key.subject = %subject,
            authn.subject = %caller.subject,
            "API key created through the gateway"
        );
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(key_to_pb(&created.record)),
            secret: created.secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        authorize_keys(&request, Rpc::ListApiKeys)?;
        let keys = api_keys(&self.0)?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.store.list().iter().map(key_to_pb).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = authorize_keys(&request, Rpc::RevokeApiKey)?;
        let keys = api_keys(&self.0)?.clone();
        let id = request.into_inner().id;
        let key_id = id.clone();
        let revoked = tokio::task::spawn_blocking(move || keys.store.revoke(&key_id))
            .await
            .map_err(|e| GatewayError::Internal(format!("key store task: {e}")))?
            .map_err(GatewayError::Internal)?;
        if !revoked {
            return Err(Status::not_found(format!("API key {id:?} not found")));
        }
        tracing::info!(api_key.id = %id, authn.subject = %caller.subject, "API key revoked through the gateway");
        Ok(Response::new(pb::RevokeApiKeyResponse { revoked }))
    }

    async fn exchange_api_key(
        &self,
        request: Request<pb::ExchangeApiKeyRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        require_jwt(&self.0)?;
        let keys = api_keys(&self.0)?;
        let req = request.into_inner();
        let prefixed =
            keys.prefixes.is_empty() || keys.prefixes.iter().any(|p| req.api_key.starts_with(p));
        let record = if prefixed {
            keys.store
                .authenticate(&req.api_key, crate::jose::clock::now())
                .map_err(|reason| {
                    tracing::info!(reason = %reason, "API key exchange refused");
                    GatewayError::Unauthenticated
                })?
        } else {
            tracing::info!("API key exchange refused: wrong prefix");
            return Err(GatewayError::Unauthenticated.into());
        };
        let grants = key_grants(&record).map_err(GatewayError::Internal)?;
        if grants.is_empty() {
            return Err(GatewayError::Denied(super::access::Denied {
                rpc: Rpc::ExchangeApiKey,
            })
            .into());
        }
        let token = issue(
            &self.0,
            &record.subject,
            scope_of(req.scope.as_ref()),
            grants,
            req.ttl_seconds,
            record.expires_at,
        )?;
        tracing::info!(api_key.id = %record.id, authn.subject = %record.subject, "gateway token issued for an API key");
        Ok(Response::new(token))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        Ok(Response::new(
            super::revocations::revoke(&self.0, request).await?,
        ))
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        Ok(Response::new(super::revocations::list(&self.0, &request)?))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let jwks = self
            .0
            .security()
            .and_then(|s| s.minter.as_ref())
            .map(|m| m.jwks())
            .unwrap_or_else(|| serde_json::json!({"keys": []}));
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: jwks.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_scopes_of_keys() {
        assert_eq!(
            grant_of_scope("gateway:read"),
            Some(Ok(Grant::all(GrantKind::Read)))
        );
        assert_eq!(
            grant_of_scope("gateway:readwrite@acme:team"),
            Some(Ok(Grant {
                namespace: Some("acme:team".into()),
                ..Grant::all(GrantKind::Readwrite)
            }))
        );
        assert_eq!(grant_of_scope("orders:read"), None);
        for bad in ["gateway:admin", "gateway:read@", "gateway:read@a::b"] {
            assert!(matches!(grant_of_scope(bad), Some(Err(_))), "{bad}");
        }
    }
}
