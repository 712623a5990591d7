//! What a gateway call can fail with; turned into a `tonic::Status` in `crate::grpc::status`.

use super::access::Denied;
use super::caller::DelegationError;
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
