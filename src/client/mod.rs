//! Client-side tools: `portcullis authorize`, `portcullis bench check` and `portcullis bench floor`.
//!
//! - [`request`]: [`RequestSpec`], one HTTP request as Envoy describes it, from a case file or
//!   from flags, and the `CheckRequest` Envoy would send for it.
//! - [`response_json`]: a `CheckResponse` as protobuf-JSON.
//! - [`check`]: `portcullis authorize`: send one Check and print the response.
//! - [`bench`](mod@bench): closed-loop load against a Check server, one JSON line of results.
//! - [`floor`]: a no-op Check server, the floor a real server is compared with.
//!
//! Each command has a clap `Args` struct to embed in the binary's subcommand enum and an async
//! entry point; errors are typed and carry their exit code.

pub mod bench;
pub mod check;
pub(crate) mod eval_bench;
pub(crate) mod floor;
mod histogram;
pub mod request;
mod response;
pub(crate) mod transport;

#[cfg(test)]
pub(crate) mod test_support;

use std::path::PathBuf;
use std::time::Duration;

pub use request::{RequestError, RequestSpec};
pub use response::{response_json, struct_json, value_json};

/// The address the client commands talk to by default (OPA-Envoy's default gRPC address).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9191";

/// Flags that describe the request to send; shared by `authorize` and `bench check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RequestArgs {
    /// Request case file (YAML, or JSON when it ends in .json); the flags below override it.
    #[arg(long, value_name = "FILE")]
    pub case: Option<PathBuf>,
    /// HTTP method [default: GET].
    #[arg(long, short = 'X', value_name = "METHOD")]
    pub method: Option<String>,
    /// Request path with query string [default: /].
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Request header, repeatable: -H 'Authorization: Bearer ...'.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body (sent as request.http.body, as with Envoy's with_request_body).
    #[arg(long, value_name = "BODY")]
    pub body: Option<String>,
}

impl RequestArgs {
    /// The case file (if any) with the flags applied over it.
    pub fn to_spec(&self) -> Result<RequestSpec, RequestError> {
        let mut spec = match &self.case {
            Some(path) => RequestSpec::load(path)?,
            None => RequestSpec::default(),
        };
        spec.apply_cli(
            self.method.clone(),
            self.path.clone(),
            &self.headers,
            self.body.clone(),
        )?;
        Ok(spec)
    }
}

/// Parses a duration: a number with an optional unit `ns`, `us`, `ms`, `s` (default), `m` or
/// `h`: `10`, `2.5s`, `500ms`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (expected e.g. 10s, 500ms, 2m)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
            ));
        }
    };
    let seconds = value * seconds_per_unit;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "-1s", "1x", "1.2.3s", "abc", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn request_args_apply_over_case_file() {
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("c.yaml");
        std::fs::write(&case, "method: POST\npath: /file\nheaders: {a: '1'}\n").unwrap();
        let args = RequestArgs {
            case: Some(case),
            path: Some("/flag".into()),
            headers: vec!["b: 2".into()],
            ..Default::default()
        };
        let spec = args.to_spec().unwrap();
        assert_eq!(spec.method.as_deref(), Some("POST"));
        assert_eq!(spec.path.as_deref(), Some("/flag"));
        assert_eq!(spec.headers.len(), 2);
    }
}
