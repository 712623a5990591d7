//! The one place where domain errors become `tonic::Status`.
//!
//! On the Check path, OPA-Envoy answers an evaluation error, an undefined decision or a
//! malformed decision with a gRPC error whose code is UNKNOWN and whose message starts with a
//! reason code (`envoyauth_eval_error: …`, `envoyauth_result_error: …`), so that Envoy's
//! `status_on_error` / `failure_mode_allow` decide what happens. Portcullis does the same.

use tonic::{Code, Status};

use crate::authz::decision::DecisionError;
use crate::policy::EvalError;

/// A Check that ends in a gRPC error.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Eval(EvalError),
    #[error("{0}")]
    Decision(DecisionError),
}

impl CheckError {
    /// The reason code, as OPA-Envoy names it, for messages, logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CheckError::Eval(e @ (EvalError::Timeout(_) | EvalError::Limit(_))) => e.reason(),
            CheckError::Eval(_) => "envoyauth_eval_error",
            CheckError::Decision(DecisionError::Undefined) => "envoyauth_eval_error",
            CheckError::Decision(_) => "envoyauth_result_error",
        }
    }
}

impl From<CheckError> for Status {
    fn from(e: CheckError) -> Self {
        Status::new(Code::Unknown, format!("{}: {e}", e.reason()))
    }
}

/// Gateway errors: UNAUTHENTICATED and PERMISSION_DENIED carry generic messages only; a
/// policy that does not compile is INVALID_ARGUMENT with its `file:line:col` message.
impl From<crate::gateway::GatewayError> for Status {
    fn from(e: crate::gateway::GatewayError) -> Self {
        use crate::gateway::GatewayError as G;
        use crate::gateway::caller::DelegationError as D;
        use crate::namespaces::NamespaceError as N;
        use crate::policy::overlay::WriteError as W;
        match e {
            G::Unauthenticated => Status::unauthenticated(crate::gateway::layer::UNAUTHENTICATED),
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
            G::Invalid(m) => Status::invalid_argument(m),
            G::Precondition(m) => Status::failed_precondition(m),
            G::Internal(m) => {
                tracing::error!(error = %m, "gateway call failed");
                Status::internal("internal error")
            }
        }
    }
}
