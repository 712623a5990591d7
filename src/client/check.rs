//! `portcullis authorize`: send one Check and print the response as JSON.
//!
//! Exit codes: `0` the request is allowed (gRPC status OK, or no status, which Envoy takes as
//! OK), `1` it is denied, `2` a usage error (bad flag, bad case file), and `1` when the server
//! cannot be reached or the RPC fails (then one line on stderr and nothing on stdout).

use std::io::Write as _;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use super::transport::{Target, describe_status, fmt_duration, is_timeout};
use super::{DEFAULT_ADDR, RequestArgs, RequestError, parse_duration, response_json};

/// The longest `--timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Flags of `authorize`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Server address: HOST:PORT, http://HOST:PORT, grpc://HOST:PORT or unix:///PATH.
    #[arg(long, default_value = DEFAULT_ADDR, value_name = "ADDR")]
    pub addr: String,
    /// The request to send.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Connect timeout, and then the time allowed for the answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// A `authorize` that could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
    /// A bad request description (case file or `-H`).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The server cannot be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address as given.
        addr: String,
        /// Why, e.g. `connection refused`.
        reason: String,
    },
    /// The server answered the RPC with an error.
    #[error("Check RPC to {addr} failed: {reason}")]
    Rpc {
        /// The address as given.
        addr: String,
        /// The gRPC status in one line.
        reason: String,
    },
    /// No answer in time.
    #[error("no answer from {addr} within {}", fmt_duration(*timeout))]
    Timeout {
        /// The address as given.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The answer cannot be written.
    #[error("cannot write the response: {0}")]
    Output(std::io::Error),
}

impl CheckError {
    /// The process exit code for this error: `2` for usage errors, `1` otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CheckError::Usage(_) | CheckError::Request(_) => 2,
            _ => 1,
        }
    }
}

/// Sends `request` to `addr` and returns the response. `timeout` bounds the connection and
/// then the answer.
pub async fn check_once(
    addr: &str,
    request: CheckRequest,
    timeout: Duration,
) -> Result<CheckResponse, CheckError> {
    let target = Target::parse(addr).map_err(CheckError::Usage)?;
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(CheckError::Usage(format!(
            "--timeout must be more than 0 and at most {}",
            fmt_duration(MAX_TIMEOUT)
        )));
    }
    let channel = target
        .connect(timeout)
        .await
        .map_err(|reason| CheckError::Connect {
            addr: target.display.clone(),
            reason,
        })?;
    let mut client = AuthorizationClient::new(channel);
    let mut req = tonic::Request::new(request);
    req.set_timeout(timeout);
    match tokio::time::timeout(timeout, client.check(req)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) if is_timeout(&status) => Err(CheckError::Timeout {
            addr: target.display,
            timeout,
        }),
        Ok(Err(status)) => Err(CheckError::Rpc {
            addr: target.display,
            reason: describe_status(&status),
        }),
        Err(_) => Err(CheckError::Timeout {
            addr: target.display,
            timeout,
        }),
    }
}

/// Whether Envoy would let the request through: status OK, or no status at all.
pub fn is_allowed(resp: &CheckResponse) -> bool {
    resp.status.as_ref().is_none_or(|s| s.code == 0)
}

/// `authorize`: sends one Check, prints the response JSON (pretty) on stdout, and returns the exit
/// code: `0` allowed, `1` denied. Errors carry their own exit code ([`CheckError::exit_code`]);
/// the caller prints them as `error: {err}` on stderr.
pub async fn run(args: CheckArgs) -> Result<i32, CheckError> {
    let spec = args.request.to_spec()?;
    let resp = check_once(&args.addr, spec.to_check_request(), args.timeout).await?;
    let text = serde_json::to_string_pretty(&response_json(&resp))
        .map_err(|e| CheckError::Output(std::io::Error::other(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(CheckError::Output)?;
    Ok(if is_allowed(&resp) { 0 } else { 1 })
}

/// `authorize` as a whole: [`run`], with an error printed as `error: ...` on stderr. Returns the
/// process exit code.
pub async fn main(args: CheckArgs) -> i32 {
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{RequestSpec, floor};
    use std::time::Instant;

    async fn start_floor() -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(floor::serve(listener, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        addr
    }

    #[tokio::test]
    async fn check_against_floor_is_allowed() {
        let (addr, _stop) = start_floor().await;
        for form in [
            addr.clone(),
            format!("http://{addr}"),
            format!("grpc://{addr}"),
        ] {
            let resp = check_once(
                &form,
                RequestSpec::default().to_check_request(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            assert!(is_allowed(&resp));
            assert_eq!(
                response_json(&resp),
                serde_json::json!({"status": {"code": 0}})
            );
        }
    }

    #[tokio::test]
    async fn run_returns_exit_code_zero_when_allowed() {
        let (addr, _stop) = start_floor().await;
        let args = CheckArgs {
            addr,
            request: RequestArgs {
                headers: vec!["authorization: Bearer x".into()],
                ..Default::default()
            },
            timeout: Duration::from_secs(5),
        };
        assert_eq!(run(args).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn run_returns_exit_code_one_when_denied() {
        use crate::client::test_support::{ScriptedService, serve_scripted};
        let (addr, _stop) = serve_scripted(ScriptedService::deny()).await;
        let args = CheckArgs {
            addr: format!("grpc://{addr}"),
            request: RequestArgs::default(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(run(args).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn grpc_errors_are_reported_in_one_line() {
        use crate::client::test_support::{ScriptedService, serve_scripted};
        let (addr, _stop) = serve_scripted(ScriptedService::new(|_| {
            Err(tonic::Status::unavailable("policy not loaded"))
        }))
        .await;
        let err = check_once(&addr, CheckRequest::default(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Check RPC to {addr} failed: Unavailable: policy not loaded")
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn refused_connection_is_a_clear_error() {
        let addr = closed_port();
        let started = Instant::now();
        let err = check_once(
            &addr,
            RequestSpec::default().to_check_request(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(
            err.to_string(),
            format!("cannot connect to {addr}: connection refused")
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn usage_errors_exit_two() {
        let args = CheckArgs {
            addr: "127.0.0.1:1".into(),
            request: RequestArgs {
                headers: vec!["no colon".into()],
                ..Default::default()
            },
            timeout: Duration::from_secs(1),
        };
        let err = run(args).await.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let err = check_once("nohost", CheckRequest::default(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        // Accepts TCP (the kernel completes the handshake) but never speaks HTTP/2.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let started = Instant::now();
        let err = check_once(&addr, CheckRequest::default(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(
            matches!(err, CheckError::Timeout { .. } | CheckError::Connect { .. }),
            "{err}"
        );
        drop(listener);
    }

    #[test]
    fn missing_status_counts_as_allowed() {
        assert!(is_allowed(&CheckResponse::default()));
        let denied = CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status {
                code: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!is_allowed(&denied));
    }
}
