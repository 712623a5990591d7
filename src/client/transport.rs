//! Addresses, channels and one-line descriptions of transport failures.

use std::error::Error as StdError;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A parsed server address.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address as the user wrote it, for messages.
    pub display: String,
    /// The URI tonic connects to (`http://H:P` or `unix:///path`).
    pub uri: String,
}

impl Target {
    /// Parses `H:P`, `:P` (loopback), `http://H:P`, `grpc://H:P`, `unix:///path` or
    /// `unix:path`. TLS (`https://`) is not supported.
    pub fn parse(addr: &str) -> Result<Self, String> {
        let addr = addr.trim();
        if addr.is_empty() {
            return Err("empty address".into());
        }
        let display = addr.to_string();
        if let Some(rest) = addr.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("address {addr:?} has no socket path"));
            }
            return Ok(Target {
                display,
                uri: format!("unix://{path}"),
            });
        }
        let authority = if let Some((scheme, rest)) = addr.split_once("://") {
            match scheme.to_ascii_lowercase().as_str() {
                "http" | "grpc" | "h2c" => rest,
                "https" | "grpcs" => {
                    return Err(format!(
                        "address {addr:?}: TLS is not supported; use a plaintext address"
                    ));
                }
                other => {
                    return Err(format!(
                        "address {addr:?}: unknown scheme {other:?} (use H:P, http://H:P, grpc://H:P or unix:///path)"
                    ));
                }
            }
        } else {
            addr
        };
        let authority = authority.trim_end_matches('/');
        let authority = if authority.starts_with(':') {
            format!("127.0.0.1{authority}")
        } else {
            authority.to_string()
        };
        let uri = format!("http://{authority}");
        let parsed: http::Uri = uri
            .parse()
            .map_err(|e| format!("address {addr:?} is not HOST:PORT: {e}"))?;
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(format!("address {addr:?} must not have a path"));
        }
        match parsed.port_u16() {
            Some(0) | None => Err(format!("address {addr:?} has no port (expected HOST:PORT)")),
            Some(_) => Ok(Target { display, uri }),
        }
    }

    /// An endpoint for this target with the given connect timeout.
    pub fn endpoint(&self, connect_timeout: Duration) -> Result<Endpoint, String> {
        Endpoint::from_shared(self.uri.clone())
            .map(|e| e.connect_timeout(connect_timeout).tcp_nodelay(true))
            .map_err(|e| format!("address {:?}: {}", self.display, describe(&e).text))
    }

    /// Opens one HTTP/2 connection. `Err` is the one-line reason.
    pub async fn connect(&self, connect_timeout: Duration) -> Result<Channel, String> {
        let endpoint = self.endpoint(connect_timeout)?;
        // The outer timeout also covers a name lookup that hangs.
        match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => {
                let reason = describe(&e);
                Err(if reason.timed_out {
                    format!("timed out after {}", fmt_duration(connect_timeout))
                } else {
                    reason.text
                })
            }
            Err(_) => Err(format!("timed out after {}", fmt_duration(connect_timeout))),
        }
    }
}

/// A one-line reason for a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The text, e.g. `connection refused`.
    pub text: String,
    /// Whether the root cause is a timeout.
    pub timed_out: bool,
}

/// The most telling one-line reason in an error chain: the innermost I/O error if there is
/// one, else the innermost message.
pub fn describe(err: &(dyn StdError + 'static)) -> Reason {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut last = err.to_string();
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        let text = e.to_string();
        if !text.is_empty() {
            last = text;
        }
        current = e.source();
    }
    let timed_out = last.contains("timed out") || last.contains("deadline");
    Reason {
        text: last,
        timed_out,
    }
}

fn io_reason(io: &std::io::Error) -> Reason {
    use std::io::ErrorKind as K;
    let text = match io.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset => "connection reset by peer".to_string(),
        K::ConnectionAborted => "connection aborted".to_string(),
        K::BrokenPipe => "broken pipe".to_string(),
        K::TimedOut => "timed out".to_string(),
        K::NotFound => "no such file or directory".to_string(),
        K::PermissionDenied => "permission denied".to_string(),
        K::AddrNotAvailable => "address not available".to_string(),
        _ => {
            return match io.get_ref() {
                Some(inner) => describe(inner),
                None => Reason {
                    text: io.to_string(),
                    timed_out: false,
                },
            };
        }
    };
    Reason {
        timed_out: io.kind() == K::TimedOut,
        text,
    }
}

/// Whether `status` is tonic's or the server's deadline (`grpc-timeout`) expiring.
pub fn is_timeout(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::DeadlineExceeded {
        return true;
    }
    let mut current = status.source();
    while let Some(e) = current {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = e.source();
    }
    // tonic's client-side `grpc-timeout` enforcement: CANCELLED "Timeout expired".
    status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired"
}

/// A gRPC failure in one line: `Unavailable: tcp connect error (connection refused)`.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    if let Some(source) = status.source() {
        let reason = describe(source).text;
        if !reason.is_empty() && !status.message().contains(&reason) {
            text.push_str(&format!(" ({reason})"));
        }
    }
    // An HTTP/1 server (the HTTP API, an app) answers a gRPC client with bytes HTTP/2 cannot
    // frame. Which error the pending call sees is a race inside the HTTP/2 client: the framing
    // error itself, or the connection closing under the call once the client gives up on it.
    let http1_reply = text.contains("h2 protocol error")
        || text.contains("frame with invalid size")
        || (status.code() == tonic::Code::Cancelled && text.contains("connection closed"));
    if http1_reply {
        text.push_str(
            "; is this the ext_authz gRPC port (plugins.envoy_ext_authz_grpc.addr, default \
             :9191)? The HTTP API (--addr, default localhost:8181) does not speak gRPC",
        );
    }
    text
}

/// `1.5s`, `250ms`, `30s`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        assert_eq!(
            Target::parse("127.0.0.1:9191").unwrap().uri,
            "http://127.0.0.1:9191"
        );
        assert_eq!(
            Target::parse("grpc://localhost:1").unwrap().uri,
            "http://localhost:1"
        );
        assert_eq!(Target::parse("http://h:2/").unwrap().uri, "http://h:2");
        assert_eq!(Target::parse(":9191").unwrap().uri, "http://127.0.0.1:9191");
        assert_eq!(Target::parse("[::1]:9").unwrap().uri, "http://[::1]:9");
        assert_eq!(
            Target::parse("unix:///tmp/a.sock").unwrap().uri,
            "unix:///tmp/a.sock"
        );
        assert_eq!(
            Target::parse("unix:/tmp/a.sock").unwrap().uri,
            "unix:///tmp/a.sock"
        );
        for bad in [
            "",
            "localhost",
            "https://h:1",
            "ftp://h:1",
            "h:0",
            "h:99999",
            "h:1/path",
            "unix://",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn io_errors_read_well() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(describe(&e).text, "connection refused");
        let wrapped = std::io::Error::other(std::io::Error::from(std::io::ErrorKind::TimedOut));
        // An io::Error of kind Other wrapping a timeout.
        let r = describe(&wrapped);
        assert_eq!(r.text, "timed out");
        assert!(r.timed_out);
    }

    #[test]
    fn durations_format() {
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }
}
