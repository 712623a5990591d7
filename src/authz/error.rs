//! How a Check ends in a gRPC error.
//!
//! OPA-Envoy answers an evaluation error, an undefined decision or a
//! malformed decision with a gRPC error whose code is UNKNOWN and whose message starts with a
//! reason code (`envoyauth_eval_error: …`, `envoyauth_result_error: …`), so that Envoy's
//! `status_on_error` / `failure_mode_allow` decide what happens. Portcullis does the same.

use tonic::{Code, Status};

use super::decision::DecisionError;
use crate::policy::EvalError;
use crate::telemetry::labels::CheckReason;

/// A Check that ends in a gRPC error.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Eval(EvalError),
    #[error("{0}")]
    Decision(DecisionError),
}

impl CheckError {
    /// The reason, as OPA-Envoy names it, for messages, logs and metrics.
    pub fn reason(&self) -> CheckReason {
        match self {
            CheckError::Eval(e) => e.reason(),
            CheckError::Decision(DecisionError::Undefined) => CheckReason::EnvoyauthEvalError,
            CheckError::Decision(_) => CheckReason::EnvoyauthResultError,
        }
    }
}

impl From<CheckError> for Status {
    fn from(e: CheckError) -> Self {
        Status::new(Code::Unknown, format!("{}: {e}", e.reason()))
    }
}
