//! The gateway's command line: `portcullis auth …` mints gateway tokens locally; `decide`,
//! `policy`, `data`, `logs`, `keys`, `status` and `token revoke|revocations` call a running
//! gateway.
//!
//! - [`auth`]     `auth root-token|namespace-token|agent-token|session-token|channel-token`
//! - [`authn`]    `authn test|failures|validate-key|hash-key|hash-password`: offline tools for
//!   the authentication layer
//! - [`commands`] the gateway client commands
//! - [`connect`]  flags shared by the client commands, the transport (gRPC or gRPC-Web) and
//!   the caller's credentials (flags, else the saved login)
//! - [`login`]    `auth login|logout|whoami`: OpenID Connect login for a gateway token, saved
//! - [`output`]   JSON (default when stdout is not a terminal) or readable tables
//! - `secret`     secrets from flags, files, standard input or a prompt that does not echo
//!
//! Exit codes: 0 success, 1 denied or failed (an RPC error, a `decide` that is not an allow),
//! 2 usage (a bad flag or argument).

pub mod auth;
pub mod authn;
pub mod commands;
pub(crate) mod connect;
pub mod login;
pub(crate) mod output;
pub(crate) mod secret;

/// A command that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad flag or argument.
    #[error("{0}")]
    Usage(String),
    /// The call failed (unreachable, refused, an error answer).
    #[error("{0}")]
    Failed(String),
    /// The answer was printed and is a denial.
    #[error("denied")]
    Denied,
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) | CliError::Denied => 1,
        }
    }
}

/// Runs a command's future and turns its outcome into an exit code, printing errors.
pub async fn finish(fut: impl std::future::Future<Output = Result<(), CliError>>) -> i32 {
    match fut.await {
        Ok(()) => 0,
        Err(CliError::Denied) => 1,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
