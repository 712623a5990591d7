//! What a gateway call can fail with, and the one place it becomes a `tonic::Status`.

use tonic::Status;

use super::access::Denied;
use super::caller::DelegationError;
use crate::authn::revocation::RevocationError;
use crate::namespaces::NamespaceError;
use crate::policy::overlay::WriteError;

/// A gateway call that failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No caller in the request (the auth layer did not run): never expected.
    #[error("authentication required")]
    Unauthenticated,
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Delegation(#[from] DelegationError),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    /// The gateway is not set up for this call (mode, missing store or trust).
    #[error("{0}")]
    Precondition(&'static str),
    /// Something failed on our side; the message is logged, the caller sees a generic one.
    #[error("{0}")]
    Internal(String),
}

/// Gateway errors: UNAUTHENTICATED and PERMISSION_DENIED carry generic messages only; a
/// policy that does not compile is INVALID_ARGUMENT with its `file:line:col` message.
impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        use super::caller::DelegationError as D;
        use crate::authn::revocation::RevocationError as R;
        use crate::namespaces::NamespaceError as N;
        use crate::policy::overlay::WriteError as W;
        use GatewayError as G;
        match e {
            G::Unauthenticated => Status::unauthenticated(super::layer::UNAUTHENTICATED),
            G::Denied(_) => Status::permission_denied("permission denied"),
            G::Namespace(e @ N::InvalidName { .. }) => Status::invalid_argument(e.to_string()),
            G::Namespace(e @ N::Unknown(_)) => Status::not_found(e.to_string()),
            G::Namespace(e @ (N::Limit | N::TreeLimit(_))) => {
                Status::resource_exhausted(e.to_string())
            }
            G::Namespace(e @ N::Load { .. }) => {
                tracing::error!(error = %e, "namespace cannot be loaded");
                Status::internal("namespace cannot be loaded")
            }
            G::Write(e @ W::NotFound(_)) => Status::not_found(e.to_string()),
            G::Write(e @ W::FileOnly(_)) => Status::failed_precondition(e.to_string()),
            G::Write(e @ W::Limit(_)) => Status::resource_exhausted(e.to_string()),
            G::Write(e @ (W::Invalid(_) | W::Policy(_))) => Status::invalid_argument(e.to_string()),
            G::Delegation(e @ D::NotJwt) => Status::failed_precondition(e.to_string()),
            G::Delegation(e @ D::Invalid(_)) => Status::invalid_argument(e.to_string()),
            G::Delegation(D::Widens(_)) => Status::permission_denied("permission denied"),
            G::Revocation(R::Invalid(m)) => Status::invalid_argument(m),
            G::Revocation(e @ R::Full(_)) => Status::resource_exhausted(e.to_string()),
            G::Revocation(R::File(m)) => {
                tracing::error!(error = %m, "revocation list cannot be written");
                Status::internal("internal error")
            }
            G::Invalid(m) => Status::invalid_argument(m),
            G::Precondition(m) => Status::failed_precondition(m),
            G::Internal(m) => {
                tracing::error!(error = %m, "gateway call failed");
                Status::internal("internal error")
            }
        }
    }
}
