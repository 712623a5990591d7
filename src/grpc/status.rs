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
            CheckError::Eval(EvalError::Timeout(_)) => "eval_timeout",
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
