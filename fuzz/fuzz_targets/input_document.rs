//! The input document from a CheckRequest as it arrives on the wire: the bytes are decoded as
//! a protobuf `CheckRequest` (what Envoy sends), then mapped; and, so that the parsers see
//! shaped values more often, the bytes are also split into a path, a content type and a body.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use libfuzzer_sys::fuzz_target;
use portcullis::authz::input::{self, InputOptions};
use prost::Message;

const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ",
    "application/grpc",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let options = InputOptions::default();
    if let Ok(request) = CheckRequest::decode(data) {
        let _ = input::build(&request, &options);
    }
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (path, body) = text.split_once('\n').unwrap_or((&text, ""));
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        "content-type".to_string(),
        CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()].to_string(),
    );
    let raw = selector & 0x80 != 0;
    let http = HttpRequest {
        path: path.to_string(),
        headers,
        body: if raw { String::new() } else { body.to_string() },
        raw_body: if raw {
            body.as_bytes().to_vec()
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let _ = input::build(&request, &options);
});
