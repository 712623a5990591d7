//! Why policies could not be loaded, and why an evaluation failed.

use std::path::PathBuf;
use std::time::Duration;

/// Why policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("{path}: invalid data: {message}")]
    Data { path: PathBuf, message: String },
    /// A parse or compile error; the message starts with `file:line:col`.
    #[error("{0}")]
    Compile(String),
    #[error("{0}")]
    Engine(String),
    /// A bundle could not be read, failed verification, or writes outside its roots.
    #[error("bundle {name}: {message}")]
    Bundle { name: String, message: String },
}

impl PolicyError {
    pub(super) fn bundle(name: &str, message: impl std::fmt::Display) -> Self {
        Self::Bundle {
            name: name.to_string(),
            message: message.to_string(),
        }
    }
}

/// Why one evaluation failed. Each maps to a gRPC error on the Check path.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("policy evaluation exceeded the time limit of {0:?}")]
    Timeout(Duration),
    /// A resource limit: the memory bound, or a guarded builtin's
    /// ([`builtins::guarded`]).
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Failed(String),
}

impl EvalError {
    /// The reason, for metrics and logs.
    pub fn reason(&self) -> crate::telemetry::labels::CheckReason {
        use crate::telemetry::labels::CheckReason;
        match self {
            EvalError::Timeout(_) => CheckReason::EvalTimeout,
            EvalError::Limit(_) => CheckReason::EvalLimit,
            EvalError::Failed(_) => CheckReason::EnvoyauthEvalError,
        }
    }
}
