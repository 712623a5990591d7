//! `parsed_body` and `truncated_body`, by OPA-Envoy's rules:
//!
//! 1. `x-envoy-auth-partial-body: true` -> `null`, truncated (whatever the content type).
//! 2. No `content-type` header, or one that names no supported type -> `null`.
//! 3. The content type is matched by substring, in this order: `application/json`,
//!    `application/grpc`, `application/x-www-form-urlencoded`, `multipart/form-data`.
//! 4. JSON, form and multipart bodies come from `body`, or from `raw_body` when `body` is
//!    empty; with neither, `null`. A `content-length` header larger than that body means
//!    `null`, truncated (`-1` never does); a `content-length` that is not an integer is an
//!    error. Parse failures are errors.
//! 5. gRPC bodies need a descriptor set and `raw_body` (else `null`), see [`super::proto`].

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use regorus::Value;

use super::goutil::quote;
use super::{InputError, InputOptions, json, multipart, path, proto};

/// `(parsed_body, truncated_body)`.
pub(super) fn parse(
    http: Option<&HttpRequest>,
    segments: &[&[u8]],
    opts: &InputOptions,
) -> Result<(Value, bool), InputError> {
    let Some(http) = http else {
        return Ok((Value::Null, false));
    };
    let headers = &http.headers;
    if header(headers, "x-envoy-auth-partial-body") == Some("true") {
        return Ok((Value::Null, true));
    }
    let Some(content_type) = header(headers, "content-type") else {
        return Ok((Value::Null, false));
    };

    if content_type.contains("application/json") {
        let Some(payload) = payload(http) else {
            return Ok((Value::Null, false));
        };
        if truncated(headers, payload)? {
            return Ok((Value::Null, true));
        }
        Ok((json::parse(payload)?, false))
    } else if content_type.contains("application/grpc") {
        let Some(descriptors) = &opts.proto_descriptors else {
            return Ok((Value::Null, false));
        };
        // Envoy sends gRPC bodies in `raw_body` only with `pack_as_bytes`.
        if http.raw_body.is_empty() {
            return Ok((Value::Null, false));
        }
        // `/package.Service/Method`
        let [service, method] = segments else {
            return Err(InputError::new("invalid parsed path"));
        };
        Ok(
            match proto::grpc_body(descriptors, &http.raw_body, service, method)? {
                proto::GrpcBody::Parsed(v) => (v, false),
                proto::GrpcBody::Unknown => (Value::Null, false),
                proto::GrpcBody::Truncated => (Value::Null, true),
            },
        )
    } else if content_type.contains("application/x-www-form-urlencoded") {
        let Some(payload) = payload(http) else {
            return Ok((Value::Null, false));
        };
        if truncated(headers, payload)? {
            return Ok((Value::Null, true));
        }
        Ok((path::parse_query(payload)?, false))
    } else if content_type.contains("multipart/form-data") {
        let Some(payload) = payload(http) else {
            return Ok((Value::Null, false));
        };
        if truncated(headers, payload)? {
            return Ok((Value::Null, true));
        }
        Ok((
            multipart::parse(content_type, payload)?.unwrap_or(Value::Null),
            false,
        ))
    } else {
        Ok((Value::Null, false))
    }
}

fn header<'a>(headers: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    headers.get(name).map(String::as_str)
}

/// `body`, else `raw_body`, else nothing.
fn payload(http: &HttpRequest) -> Option<&[u8]> {
    if !http.body.is_empty() {
        Some(http.body.as_bytes())
    } else if !http.raw_body.is_empty() {
        Some(&http.raw_body)
    } else {
        None
    }
}

/// Whether `content-length` announces more bytes than Envoy sent. The header is parsed like
/// Go's `strconv.ParseInt(s, 10, 64)`; a value that does not parse is an error.
fn truncated(headers: &HashMap<String, String>, payload: &[u8]) -> Result<bool, InputError> {
    let Some(value) = header(headers, "content-length") else {
        return Ok(false);
    };
    let length: i64 = value.parse().map_err(|e: std::num::ParseIntError| {
        let reason = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        InputError::new(format!(
            "strconv.ParseInt: parsing {}: {reason}",
            quote(value.as_bytes())
        ))
    })?;
    let sent = i64::try_from(payload.len()).unwrap_or(i64::MAX);
    Ok(length != -1 && length > sent)
}
