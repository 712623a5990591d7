//! A `CheckResponse` as protobuf-JSON, for people and scripts to read.
//!
//! Field names are the protobuf-JSON (camelCase) ones. As protobuf-JSON does, empty strings,
//! empty lists and unset messages are left out, with these exceptions that make the output
//! easier to match on: `status.code` is always there when `status` is, a header's `key` and
//! `value` are always there, and so is the `code` of a denied response's HTTP status. Enums are
//! numbers where a number is what people look for (gRPC code, HTTP status code) and names
//! elsewhere (`appendAction`). `google.protobuf.Struct`s become plain JSON; an integral number
//! that a double holds exactly is written without a fraction.

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, QueryParameter, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
};
use envoy_types::pb::google::rpc::Status;
use serde_json::{Map, Value as Json, json};

/// `resp` as protobuf-JSON (see the module documentation for the exact shape).
pub fn response_json(resp: &CheckResponse) -> Json {
    let mut out = Map::new();
    if let Some(status) = &resp.status {
        out.insert("status".into(), status_json(status));
    }
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            out.insert("okResponse".into(), ok_json(ok));
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            out.insert("deniedResponse".into(), denied_json(denied));
        }
        Some(HttpResponse::ErrorResponse(error)) => {
            out.insert("errorResponse".into(), denied_json(error));
        }
        None => {}
    }
    if let Some(md) = &resp.dynamic_metadata {
        out.insert("dynamicMetadata".into(), struct_json(md));
    }
    Json::Object(out)
}

fn status_json(status: &Status) -> Json {
    let mut out = Map::new();
    out.insert("code".into(), json!(status.code));
    if !status.message.is_empty() {
        out.insert("message".into(), json!(status.message));
    }
    if !status.details.is_empty() {
        let details = status
            .details
            .iter()
            .map(|any| {
                json!({
                    "@type": any.type_url,
                    "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
                })
            })
            .collect();
        out.insert("details".into(), Json::Array(details));
    }
    Json::Object(out)
}

#[allow(deprecated)] // OkHttpResponse.dynamic_metadata is deprecated but still on the wire.
fn ok_json(ok: &OkHttpResponse) -> Json {
    let mut out = Map::new();
    insert_list(
        &mut out,
        "headers",
        ok.headers.iter().map(header_option_json),
    );
    insert_list(
        &mut out,
        "headersToRemove",
        ok.headers_to_remove.iter().map(|h| json!(h)),
    );
    if let Some(md) = &ok.dynamic_metadata {
        out.insert("dynamicMetadata".into(), struct_json(md));
    }
    insert_list(
        &mut out,
        "responseHeadersToAdd",
        ok.response_headers_to_add.iter().map(header_option_json),
    );
    insert_list(
        &mut out,
        "queryParametersToSet",
        ok.query_parameters_to_set.iter().map(query_parameter_json),
    );
    insert_list(
        &mut out,
        "queryParametersToRemove",
        ok.query_parameters_to_remove.iter().map(|q| json!(q)),
    );
    Json::Object(out)
}

fn denied_json(denied: &DeniedHttpResponse) -> Json {
    let mut out = Map::new();
    if let Some(status) = &denied.status {
        out.insert("status".into(), json!({ "code": status.code }));
    }
    insert_list(
        &mut out,
        "headers",
        denied.headers.iter().map(header_option_json),
    );
    if !denied.body.is_empty() {
        out.insert("body".into(), json!(denied.body));
    }
    Json::Object(out)
}

fn insert_list(out: &mut Map<String, Json>, key: &str, items: impl Iterator<Item = Json>) {
    let items: Vec<Json> = items.collect();
    if !items.is_empty() {
        out.insert(key.into(), Json::Array(items));
    }
}

fn header_option_json(opt: &HeaderValueOption) -> Json {
    let mut out = Map::new();
    if let Some(h) = &opt.header {
        let mut header = Map::new();
        header.insert("key".into(), json!(h.key));
        header.insert("value".into(), json!(h.value));
        if !h.raw_value.is_empty() {
            header.insert(
                "rawValue".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(&h.raw_value)),
            );
        }
        out.insert("header".into(), Json::Object(header));
    }
    #[allow(deprecated)]
    if let Some(append) = &opt.append {
        out.insert("append".into(), json!(append.value));
    }
    if opt.append_action != 0 {
        let action = HeaderAppendAction::try_from(opt.append_action)
            .map(|a| json!(a.as_str_name()))
            .unwrap_or_else(|_| json!(opt.append_action));
        out.insert("appendAction".into(), action);
    }
    if opt.keep_empty_value {
        out.insert("keepEmptyValue".into(), json!(true));
    }
    Json::Object(out)
}

fn query_parameter_json(q: &QueryParameter) -> Json {
    json!({ "key": q.key, "value": q.value })
}

pub use crate::grpc::json::{struct_json, value_json};

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::google::protobuf::{BoolValue, ListValue};
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    fn hvo(key: &str, value: &str) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
                raw_value: vec![],
            }),
            ..Default::default()
        }
    }

    fn sv(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    #[allow(deprecated)]
    fn ok_response_shape() {
        let mut with_action = hvo("x-b", "2");
        with_action.append_action = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        with_action.append = Some(BoolValue { value: false });
        let resp = CheckResponse {
            status: Some(Status {
                code: 0,
                message: String::new(),
                details: vec![],
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![hvo("x-a", "1"), with_action],
                headers_to_remove: vec!["authorization".into()],
                dynamic_metadata: None,
                response_headers_to_add: vec![hvo("x-resp", "r")],
                query_parameters_to_set: vec![QueryParameter {
                    key: "q".into(),
                    value: "v".into(),
                }],
                query_parameters_to_remove: vec!["debug".into()],
            })),
            dynamic_metadata: Some(Struct {
                fields: [
                    ("b".to_string(), sv(Kind::NumberValue(2.0))),
                    ("a".to_string(), sv(Kind::NumberValue(1.5))),
                    (
                        "l".to_string(),
                        sv(Kind::ListValue(ListValue {
                            values: vec![sv(Kind::BoolValue(true)), sv(Kind::NullValue(0))],
                        })),
                    ),
                ]
                .into_iter()
                .collect(),
            }),
        };
        assert_eq!(
            response_json(&resp),
            json!({
                "status": {"code": 0},
                "okResponse": {
                    "headers": [
                        {"header": {"key": "x-a", "value": "1"}},
                        {"header": {"key": "x-b", "value": "2"}, "append": false,
                         "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}
                    ],
                    "headersToRemove": ["authorization"],
                    "responseHeadersToAdd": [{"header": {"key": "x-resp", "value": "r"}}],
                    "queryParametersToSet": [{"key": "q", "value": "v"}],
                    "queryParametersToRemove": ["debug"]
                },
                "dynamicMetadata": {"a": 1.5, "b": 2, "l": [true, null]}
            })
        );
    }

    #[test]
    fn denied_response_shape() {
        let resp = CheckResponse {
            status: Some(Status {
                code: 7,
                message: "denied by policy".into(),
                details: vec![],
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![hvo("www-authenticate", "Bearer")],
                body: "unauthorized".into(),
            })),
            dynamic_metadata: None,
        };
        assert_eq!(
            response_json(&resp),
            json!({
                "status": {"code": 7, "message": "denied by policy"},
                "deniedResponse": {
                    "status": {"code": 401},
                    "headers": [{"header": {"key": "www-authenticate", "value": "Bearer"}}],
                    "body": "unauthorized"
                }
            })
        );
    }

    #[test]
    fn empty_and_error_responses() {
        assert_eq!(response_json(&CheckResponse::default()), json!({}));
        let resp = CheckResponse {
            status: Some(Status {
                code: 13,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::ErrorResponse(DeniedHttpResponse::default())),
            dynamic_metadata: None,
        };
        assert_eq!(
            response_json(&resp),
            json!({"status": {"code": 13}, "errorResponse": {}})
        );
    }

    #[test]
    fn numbers_render_like_protobuf_json() {
        assert_eq!(value_json(&sv(Kind::NumberValue(3.0))), json!(3));
        assert_eq!(value_json(&sv(Kind::NumberValue(-0.5))), json!(-0.5));
        assert_eq!(value_json(&sv(Kind::NumberValue(1e300))), json!(1e300));
        assert_eq!(value_json(&sv(Kind::NumberValue(f64::NAN))), json!("NaN"));
        assert_eq!(
            value_json(&sv(Kind::NumberValue(f64::NEG_INFINITY))),
            json!("-Infinity")
        );
    }

    #[test]
    fn output_is_deterministic() {
        let md = Struct {
            fields: (0..50)
                .map(|i| (format!("k{i}"), sv(Kind::NumberValue(f64::from(i)))))
                .collect(),
        };
        let a = serde_json::to_string(&struct_json(&md)).unwrap();
        let b = serde_json::to_string(&struct_json(&md.clone())).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with(r#"{"k0":0,"k1":1,"k10":10"#), "{a}");
    }
}
