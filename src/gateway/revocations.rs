//! `AuthService.RevokeToken` and `ListRevocations`: the token revocation list
//! (`authentication.revocation`; see [`crate::authn::revocation`] for what an entry refuses).
//!
//! Who may do what:
//!
//! - Revoke a `jti` or a subject: readwrite on the root scope (no namespace, agent, session or
//!   channel restriction, and a readwrite grant that covers everything: a root token, or the
//!   fixed caller of the static-token, password, client-certificate and open modes). These are
//!   anyone's tokens, and an entry refuses them on every path, so no narrower caller may add one.
//! - Revoke `current`: the gateway JWT the call is made with, by its own `jti` and `exp`. Any JWT
//!   caller may end its own token, whatever its grants: the token proves itself.
//! - List: read on the root scope (the list names subjects and token ids of every namespace).
//!
//! Each revocation is logged and audited (`token_revoked`: the `jti` or subject, `expires_at`,
//! `revoked_by`); only token ids are written anywhere, never a token.

use tonic::Request;

use super::access::Rpc;
use super::caller::{Method, Scope};
use super::pb::{self, revoke_token_request::Target};
use super::{Gateway, GatewayError, caller_of};
use crate::authn::audit::AuditEvent;
use crate::authn::revocation::{NewRevocation, Revocation, Revocations};
use crate::jose::clock::now;

fn revocations(gw: &Gateway) -> Result<&std::sync::Arc<Revocations>, GatewayError> {
    gw.authenticator()
        .revocations()
        .ok_or(GatewayError::Precondition(
            "no revocation list: configure authentication.revocation.file",
        ))
}

fn given(t: i64) -> Option<i64> {
    (t != 0).then_some(t)
}

fn to_pb(r: Revocation) -> pb::Revocation {
    pb::Revocation {
        jti: r.jti.unwrap_or_default(),
        subject: r.subject.unwrap_or_default(),
        issued_before: r.issued_before.unwrap_or(0),
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        revoked_by: r.revoked_by,
    }
}

/// `RevokeToken`.
pub(super) async fn revoke(
    gw: &Gateway,
    request: Request<pb::RevokeTokenRequest>,
) -> Result<pb::RevokeTokenResponse, GatewayError> {
    let caller = caller_of(&request)?;
    let list = revocations(gw)?.clone();
    let root = |caller| Rpc::RevokeToken.authorize(caller, &Scope::default());
    let new = match request.into_inner().target {
        Some(Target::Current(true)) => match (caller.method, &caller.token_id, caller.expires_at) {
            (Method::Jwt, Some(jti), Some(exp)) => NewRevocation::Jti {
                jti: jti.clone(),
                expires_at: i64::try_from(exp).unwrap_or(i64::MAX),
            },
            _ => {
                return Err(GatewayError::Precondition(
                    "current revokes the gateway JWT of this call, and it has no jti",
                ));
            }
        },
        Some(Target::Jti(j)) => {
            root(&caller)?;
            NewRevocation::Jti {
                jti: j.jti,
                expires_at: j.expires_at,
            }
        }
        Some(Target::Subject(s)) => {
            root(&caller)?;
            NewRevocation::Subject {
                subject: s.subject,
                issued_before: given(s.issued_before),
                expires_at: given(s.expires_at),
            }
        }
        Some(Target::Current(false)) | None => {
            return Err(GatewayError::Invalid(
                "name what to revoke: jti, subject or current".into(),
            ));
        }
    };
    let by = caller.subject.clone();
    let entry = tokio::task::spawn_blocking(move || list.revoke(new, &by, now()))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))??;
    tracing::info!(
        authn.subject = %caller.subject,
        revocation.jti = entry.jti.as_deref().unwrap_or(""),
        revocation.subject = entry.subject.as_deref().unwrap_or(""),
        revocation.expires_at = entry.expires_at,
        "token revoked"
    );
    if let Some(s) = gw.security() {
        let mut event = AuditEvent::new("token_revoked", "")
            .with("revoked_by", entry.revoked_by.as_str())
            .with("expires_at", entry.expires_at);
        if let Some(j) = &entry.jti {
            event = event.with("jti", j.as_str());
        }
        if let (Some(sub), Some(before)) = (&entry.subject, entry.issued_before) {
            event = event
                .with("subject", sub.as_str())
                .with("issued_before", before);
        }
        s.audit.record(event);
    }
    Ok(pb::RevokeTokenResponse {
        revocation: Some(to_pb(entry)),
    })
}

/// `ListRevocations`.
pub(super) fn list(
    gw: &Gateway,
    request: &Request<pb::ListRevocationsRequest>,
) -> Result<pb::ListRevocationsResponse, GatewayError> {
    let caller = caller_of(request)?;
    Rpc::ListRevocations.authorize(&caller, &Scope::default())?;
    Ok(pb::ListRevocationsResponse {
        revocations: revocations(gw)?
            .list(now())
            .into_iter()
            .map(to_pb)
            .collect(),
    })
}
