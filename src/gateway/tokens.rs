//! `AuthService`: delegation (`MintAccessToken`) and, once the authentication module lands,
//! API keys, OIDC and API-key exchange, and the internal-token JWKS.
//!
//! `MintAccessToken` works in JWT mode only and only narrows (see [`super::caller::delegate`]).
//! The other RPCs answer UNIMPLEMENTED in this build, after the usual scope check: they need
//! the API key store, the OIDC trust and the signing keys of `crate::authn` / `crate::token`,
//! which this build does not have. They never pretend to succeed.

use tonic::{Request, Response, Status};

use super::access::{Rpc, namespace_target};
use super::caller::{Grant, GrantKind, Scope, delegate, now};
use super::pb::{self, AccessToken, MintAccessTokenRequest};
use super::{Gateway, GatewayError, caller_of};
use crate::namespaces::DEFAULT_NAMESPACE;

const NEEDS_AUTHN: &str = "this build of portcullis has no API key store, OIDC trust or \
                           internal-token keys (the authentication module); this RPC is not \
                           available yet";

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

/// Key management acts on the sidecar as a whole: it needs access to the default namespace.
fn authorize_keys<T>(request: &Request<T>, rpc: Rpc) -> Result<(), GatewayError> {
    let caller = caller_of(request)?;
    rpc.authorize(&caller, &namespace_target(DEFAULT_NAMESPACE))?;
    Ok(())
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
        let token = auth
            .sign(&claims)
            .ok_or(GatewayError::Delegation(
                super::caller::DelegationError::NotJwt,
            ))?
            .map_err(GatewayError::Internal)?;
        let scope = Scope::from(&claims.scope);
        tracing::info!(
            authn.subject = %caller.subject,
            token.ns = scope.namespace.as_deref().unwrap_or(""),
            token.exp = claims.exp,
            "gateway token minted by delegation"
        );
        Ok(Response::new(AccessToken {
            token,
            expires_at: i64::try_from(claims.exp).unwrap_or(i64::MAX),
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
        }))
    }

    async fn exchange_oidc_token(
        &self,
        _request: Request<pb::ExchangeOidcTokenRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        Err(GatewayError::Unimplemented(NEEDS_AUTHN).into())
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        authorize_keys(&request, Rpc::CreateApiKey)?;
        Err(GatewayError::Unimplemented(NEEDS_AUTHN).into())
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        authorize_keys(&request, Rpc::ListApiKeys)?;
        Err(GatewayError::Unimplemented(NEEDS_AUTHN).into())
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        authorize_keys(&request, Rpc::RevokeApiKey)?;
        Err(GatewayError::Unimplemented(NEEDS_AUTHN).into())
    }

    async fn exchange_api_key(
        &self,
        _request: Request<pb::ExchangeApiKeyRequest>,
    ) -> Result<Response<AccessToken>, Status> {
        Err(GatewayError::Unimplemented(NEEDS_AUTHN).into())
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Err(GatewayError::Unimplemented(NEEDS_AUTHN).into())
    }
}
