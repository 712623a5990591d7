//! The policy's result -> a typed [`Decision`], validated once, with OPA-Envoy's rules.
//!
//! A decision is either a boolean or an object with a required boolean `allowed`. As in
//! OPA-Envoy, the keys that only matter for an allow (`request_headers_to_remove`,
//! `response_headers_to_add`, `query_parameters_to_set`, `query_parameters_to_remove`) are read
//! and validated only on an allow, and the deny-only keys (`body`, `http_status`) only on a
//! deny; `headers` and `dynamic_metadata` are read on both. A malformed decision is an error,
//! which the Check answers with a gRPC error like OPA-Envoy does.

use envoy_types::pb::envoy::r#type::v3::StatusCode;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use regorus::Value;

/// Why a policy result is not a usable decision. The text follows OPA-Envoy's messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("undefined decision")]
    Undefined,
    #[error("illegal value for policy evaluation result: {0}")]
    IllegalType(&'static str),
    #[error("unable to determine evaluation result due to missing \"allowed\" key")]
    MissingAllowed,
    #[error("type assertion error, expected {field} to be of type '{expected}' but got '{got}'")]
    FieldType {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("invalid value for header '{0}': expected a string or an array of strings")]
    HeaderValue(String),
    #[error("invalid value for query parameter '{0}': expected a string or an array of strings")]
    QueryValue(String),
    #[error("invalid HTTP status code {0}")]
    HttpStatus(String),
    #[error("dynamic_metadata: {0}")]
    Metadata(String),
    #[error("internal_token: {0}")]
    InternalToken(String),
}

/// A validated decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `true`/`false`: OK or PERMISSION_DENIED with no HTTP response.
    Bool(bool),
    Allow(Allow),
    Deny(Deny),
}

/// An object decision with `allowed: true`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Allow {
    pub headers: Vec<(String, String)>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<(String, String)>,
    pub query_parameters_to_set: Vec<(String, String)>,
    pub query_parameters_to_remove: Vec<String>,
    pub dynamic_metadata: Option<Struct>,
    /// Portcullis: the `internal_token` key (DESIGN §6).
    pub internal_token: TokenAsk,
}

/// What an allow says about the internal token.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TokenAsk {
    /// No `internal_token` key: minted when `internal_token.enabled`.
    #[default]
    Unspecified,
    /// `internal_token: false`: not minted for this request.
    Refused,
    /// `internal_token: true` or an object.
    Requested(Box<crate::token::TokenRequest>),
}

/// An object decision with `allowed: false`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deny {
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub http_status: StatusCode,
    pub dynamic_metadata: Option<Struct>,
}

impl Decision {
    /// Whether the request may pass.
    pub fn allowed(&self) -> bool {
        match self {
            Decision::Bool(b) => *b,
            Decision::Allow(_) => true,
            Decision::Deny(_) => false,
        }
    }
}

/// The keys of a decision object, built once so that reading a decision allocates nothing.
#[derive(Clone, Copy)]
enum Key {
    Allowed,
    Headers,
    DynamicMetadata,
    RequestHeadersToRemove,
    ResponseHeadersToAdd,
    QueryParametersToSet,
    QueryParametersToRemove,
    InternalToken,
    Body,
    HttpStatus,
}

static KEYS: std::sync::LazyLock<[Value; 10]> = std::sync::LazyLock::new(|| {
    [
        "allowed",
        "headers",
        "dynamic_metadata",
        "request_headers_to_remove",
        "response_headers_to_add",
        "query_parameters_to_set",
        "query_parameters_to_remove",
        "internal_token",
        "body",
        "http_status",
    ]
    .map(Value::from)
});

impl TryFrom<&Value> for Decision {
    type Error = DecisionError;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let obj = match value {
            Value::Bool(b) => return Ok(Decision::Bool(*b)),
            Value::Undefined => return Err(DecisionError::Undefined),
            Value::Object(obj) => obj,
            other => return Err(DecisionError::IllegalType(type_name(other))),
        };
        let get = |key: Key| obj.get(&KEYS[key as usize]);
        let allowed = match get(Key::Allowed) {
            None => return Err(DecisionError::MissingAllowed),
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(DecisionError::FieldType {
                    field: "allowed",
                    expected: "boolean",
                    got: type_name(other),
                });
            }
        };
        let headers = match get(Key::Headers) {
            Some(v) => headers(v, "headers")?,
            None => Vec::new(),
        };
        let dynamic_metadata = match get(Key::DynamicMetadata) {
            Some(v) => Some(to_struct(v)?),
            None => None,
        };
        if allowed {
            Ok(Decision::Allow(Allow {
                headers,
                request_headers_to_remove: string_list(
                    get(Key::RequestHeadersToRemove),
                    "request_headers_to_remove",
                )?,
                response_headers_to_add: match get(Key::ResponseHeadersToAdd) {
                    Some(v) => self::headers(v, "response_headers_to_add")?,
                    None => Vec::new(),
                },
                query_parameters_to_set: match get(Key::QueryParametersToSet) {
                    Some(v) => query_params(v)?,
                    None => Vec::new(),
                },
                query_parameters_to_remove: string_list(
                    get(Key::QueryParametersToRemove),
                    "query_parameters_to_remove",
                )?,
                dynamic_metadata,
                internal_token: match get(Key::InternalToken) {
                    None => TokenAsk::Unspecified,
                    Some(v) => token_ask(v)?,
                },
            }))
        } else {
            let body = match get(Key::Body) {
                None => String::new(),
                Some(Value::String(s)) => s.to_string(),
                Some(other) => {
                    return Err(DecisionError::FieldType {
                        field: "body",
                        expected: "string",
                        got: type_name(other),
                    });
                }
            };
            let http_status = match get(Key::HttpStatus) {
                None => StatusCode::Forbidden,
                Some(v) => http_status(v)?,
            };
            Ok(Decision::Deny(Deny {
                headers,
                body,
                http_status,
                dynamic_metadata,
            }))
        }
    }
}

/// `internal_token`: a boolean or `{scopes, audience, ttl_seconds, namespace, agent, session,
/// channel, grant, claims}`.
fn token_ask(v: &Value) -> Result<TokenAsk, DecisionError> {
    let err = |m: String| DecisionError::InternalToken(m);
    let obj = match v {
        Value::Bool(true) => return Ok(TokenAsk::Requested(Box::default())),
        Value::Bool(false) => return Ok(TokenAsk::Refused),
        Value::Object(obj) => obj,
        other => {
            return Err(err(format!(
                "expected a boolean or an object, got {}",
                type_name(other)
            )));
        }
    };
    let mut req = crate::token::TokenRequest::default();
    for (k, val) in obj.iter() {
        let Value::String(key) = k else {
            return Err(err("keys must be strings".into()));
        };
        let string = || match val {
            Value::String(s) => Ok(s.to_string()),
            other => Err(err(format!(
                "{key}: expected a string, got {}",
                type_name(other)
            ))),
        };
        match key.as_ref() {
            "scopes" => req.scopes = Some(string_list(Some(val), "internal_token.scopes")?),
            "audience" => req.audience = Some(string()?),
            "namespace" => req.namespace = Some(string()?),
            "agent" => req.agent = Some(string()?),
            "session" => req.session = Some(string()?),
            "channel" => req.channel = Some(string()?),
            "grant" => {
                let g = string()?;
                req.grant =
                    Some(crate::authn::config::GrantKind::parse(&g).ok_or_else(|| {
                        err(format!("grant: expected read or readwrite, got {g:?}"))
                    })?);
            }
            "ttl_seconds" => {
                req.ttl_seconds = Some(
                    val.as_u64()
                        .map_err(|_| err("ttl_seconds: expected a non-negative integer".into()))?,
                );
            }
            "claims" => {
                let Ok(serde_json::Value::Object(map)) = serde_json::to_value(val) else {
                    return Err(err("claims: expected an object".into()));
                };
                req.claims = map;
            }
            other => return Err(err(format!("unknown key {other:?}"))),
        }
    }
    Ok(TokenAsk::Requested(Box::new(req)))
}

/// The JSON type name of a value, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

/// Items of an array or a set (Rego often produces sets, e.g. `{"x" | ...}`).
fn items(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(a) => Some(a.iter().collect()),
        Value::Set(s) => Some(s.iter().collect()),
        _ => None,
    }
}

fn string_list(v: Option<&Value>, field: &'static str) -> Result<Vec<String>, DecisionError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let list = items(v).ok_or(DecisionError::FieldType {
        field,
        expected: "[]string",
        got: type_name(v),
    })?;
    list.into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.to_string()),
            other => Err(DecisionError::FieldType {
                field,
                expected: "string",
                got: type_name(other),
            }),
        })
        .collect()
}

/// `headers`: an object of string or string-array values, or an array of such objects.
fn headers(v: &Value, field: &'static str) -> Result<Vec<(String, String)>, DecisionError> {
    let mut out = Vec::new();
    match v {
        Value::Object(_) => header_object(v, &mut out)?,
        Value::Array(_) => {
            for item in items(v).unwrap_or_default() {
                if !matches!(item, Value::Object(_)) {
                    return Err(DecisionError::FieldType {
                        field,
                        expected: "object",
                        got: type_name(item),
                    });
                }
                header_object(item, &mut out)?;
            }
        }
        other => {
            return Err(DecisionError::FieldType {
                field,
                expected: "object",
                got: type_name(other),
            });
        }
    }
    Ok(out)
}

fn header_object(v: &Value, out: &mut Vec<(String, String)>) -> Result<(), DecisionError> {
    let Value::Object(obj) = v else {
        return Ok(());
    };
    string_pairs(obj, out, DecisionError::HeaderValue)
}

fn query_params(v: &Value) -> Result<Vec<(String, String)>, DecisionError> {
    let Value::Object(obj) = v else {
        return Err(DecisionError::FieldType {
            field: "query_parameters_to_set",
            expected: "object",
            got: type_name(v),
        });
    };
    let mut out = Vec::new();
    string_pairs(obj, &mut out, DecisionError::QueryValue)?;
    Ok(out)
}

/// `{key: "v"}` or `{key: ["v1", "v2"]}` -> (key, value) pairs in key order; `bad` names the
/// offending key otherwise.
fn string_pairs(
    obj: &regorus::value::Object,
    out: &mut Vec<(String, String)>,
    bad: fn(String) -> DecisionError,
) -> Result<(), DecisionError> {
    for (k, val) in obj.iter_sorted() {
        let Value::String(key) = k else {
            return Err(bad(k.to_string()));
        };
        match val {
            Value::String(s) => out.push((key.to_string(), s.to_string())),
            Value::Array(_) | Value::Set(_) => {
                for item in items(val).unwrap_or_default() {
                    let Value::String(s) = item else {
                        return Err(bad(key.to_string()));
                    };
                    out.push((key.to_string(), s.to_string()));
                }
            }
            _ => return Err(bad(key.to_string())),
        }
    }
    Ok(())
}

/// `http_status` must be an integer naming a status in Envoy's `StatusCode` enum.
fn http_status(v: &Value) -> Result<StatusCode, DecisionError> {
    let Value::Number(_) = v else {
        return Err(DecisionError::FieldType {
            field: "http_status",
            expected: "number",
            got: type_name(v),
        });
    };
    let code = v
        .as_i64()
        .ok()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| DecisionError::HttpStatus(v.to_string()))?;
    match StatusCode::try_from(code) {
        Ok(StatusCode::Empty) | Err(_) => Err(DecisionError::HttpStatus(code.to_string())),
        Ok(status) => Ok(status),
    }
}

/// An object value -> `google.protobuf.Struct`.
pub fn to_struct(v: &Value) -> Result<Struct, DecisionError> {
    let Value::Object(obj) = v else {
        return Err(DecisionError::FieldType {
            field: "dynamic_metadata",
            expected: "object",
            got: type_name(v),
        });
    };
    let mut fields = std::collections::HashMap::with_capacity(obj.len());
    for (k, val) in obj.iter() {
        let Value::String(key) = k else {
            return Err(DecisionError::Metadata(format!(
                "object keys must be strings, got {}",
                type_name(k)
            )));
        };
        fields.insert(key.to_string(), to_pb_value(val, 0)?);
    }
    Ok(Struct { fields })
}

fn to_pb_value(v: &Value, depth: usize) -> Result<PbValue, DecisionError> {
    if depth > crate::grpc::json::MAX_DEPTH {
        return Err(DecisionError::Metadata("nested too deeply".into()));
    }
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(_) => Kind::NumberValue(
            v.as_f64()
                .map_err(|_| DecisionError::Metadata("number out of range".into()))?,
        ),
        Value::String(s) => Kind::StringValue(s.to_string()),
        Value::Array(_) | Value::Set(_) => Kind::ListValue(ListValue {
            values: items(v)
                .unwrap_or_default()
                .into_iter()
                .map(|i| to_pb_value(i, depth + 1))
                .collect::<Result<_, _>>()?,
        }),
        Value::Object(obj) => {
            let mut fields = std::collections::HashMap::with_capacity(obj.len());
            for (k, val) in obj.iter() {
                let Value::String(key) = k else {
                    return Err(DecisionError::Metadata(format!(
                        "object keys must be strings, got {}",
                        type_name(k)
                    )));
                };
                fields.insert(key.to_string(), to_pb_value(val, depth + 1)?);
            }
            Kind::StructValue(Struct { fields })
        }
        Value::Undefined => return Err(DecisionError::Metadata("undefined value".into())),
    };
    Ok(PbValue { kind: Some(kind) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(json: &str) -> Result<Decision, DecisionError> {
        Decision::try_from(&Value::from_json_str(json).unwrap())
    }

    #[test]
    fn booleans() {
        assert_eq!(d("true").unwrap(), Decision::Bool(true));
        assert_eq!(d("false").unwrap(), Decision::Bool(false));
        assert_eq!(
            Decision::try_from(&Value::Undefined).unwrap_err(),
            DecisionError::Undefined
        );
    }

    #[test]
    fn wrong_top_level_types() {
        assert_eq!(d("1").unwrap_err(), DecisionError::IllegalType("number"));
        assert_eq!(
            d("\"x\"").unwrap_err(),
            DecisionError::IllegalType("string")
        );
        assert_eq!(
            d("[true]").unwrap_err(),
            DecisionError::IllegalType("array")
        );
        assert_eq!(d("{}").unwrap_err(), DecisionError::MissingAllowed);
        assert!(matches!(
            d(r#"{"allowed": "yes"}"#).unwrap_err(),
            DecisionError::FieldType {
                field: "allowed",
                ..
            }
        ));
    }

    #[test]
    fn allow_with_every_key() {
        let dec = d(r#"{"allowed": true,
            "headers": {"x-a": "1", "x-b": ["2", "3"]},
            "request_headers_to_remove": ["authorization"],
            "response_headers_to_add": [{"x-c": "4"}, {"x-d": "5"}],
            "query_parameters_to_set": {"q": "v", "r": ["1", "2"]},
            "query_parameters_to_remove": ["secret"],
            "dynamic_metadata": {"k": {"n": 1, "l": [true, null]}},
            "body": 17, "http_status": 999}"#)
        .unwrap();
        let Decision::Allow(a) = dec else {
            panic!("expected allow")
        };
        assert_eq!(
            a.headers,
            vec![
                ("x-a".into(), "1".into()),
                ("x-b".into(), "2".into()),
                ("x-b".into(), "3".into())
            ]
        );
        assert_eq!(a.request_headers_to_remove, vec!["authorization"]);
        assert_eq!(
            a.response_headers_to_add,
            vec![("x-c".into(), "4".into()), ("x-d".into(), "5".into())]
        );
        assert_eq!(
            a.query_parameters_to_set,
            vec![
                ("q".into(), "v".into()),
                ("r".into(), "1".into()),
                ("r".into(), "2".into())
            ]
        );
        assert_eq!(a.query_parameters_to_remove, vec!["secret"]);
        let md = a.dynamic_metadata.unwrap();
        assert!(md.fields.contains_key("k"));
    }

    #[test]
    fn deny_defaults_to_403_and_validates_status() {
        let Decision::Deny(deny) = d(r#"{"allowed": false}"#).unwrap() else {
            panic!("expected deny")
        };
        assert_eq!(deny.http_status, StatusCode::Forbidden);
        assert_eq!(deny.body, "");
        let Decision::Deny(deny) =
            d(r#"{"allowed": false, "http_status": 401, "body": "no"}"#).unwrap()
        else {
            panic!("expected deny")
        };
        assert_eq!(deny.http_status, StatusCode::Unauthorized);
        assert_eq!(deny.body, "no");
        assert_eq!(
            d(r#"{"allowed": false, "http_status": 299}"#).unwrap_err(),
            DecisionError::HttpStatus("299".into())
        );
        assert!(d(r#"{"allowed": false, "http_status": 0}"#).is_err());
        assert!(d(r#"{"allowed": false, "http_status": 403.5}"#).is_err());
        assert!(d(r#"{"allowed": false, "http_status": "403"}"#).is_err());
        assert!(d(r#"{"allowed": false, "body": 1}"#).is_err());
    }

    #[test]
    fn malformed_keys_are_errors_only_for_their_outcome() {
        // Allow-only keys are not read on a deny, as in OPA-Envoy.
        assert!(d(r#"{"allowed": false, "request_headers_to_remove": 1}"#).is_ok());
        assert!(d(r#"{"allowed": true, "request_headers_to_remove": 1}"#).is_err());
        assert!(d(r#"{"allowed": true, "request_headers_to_remove": [1]}"#).is_err());
        assert!(d(r#"{"allowed": true, "query_parameters_to_set": []}"#).is_err());
        assert!(d(r#"{"allowed": true, "query_parameters_to_set": {"a": 1}}"#).is_err());
        // Headers and metadata are read on both.
        assert!(d(r#"{"allowed": false, "headers": "x"}"#).is_err());
        assert!(d(r#"{"allowed": true, "headers": {"a": 1}}"#).is_err());
        assert!(d(r#"{"allowed": true, "headers": [1]}"#).is_err());
        assert!(d(r#"{"allowed": false, "dynamic_metadata": []}"#).is_err());
        // internal_token is allow-only.
        assert!(d(r#"{"allowed": false, "internal_token": 1}"#).is_ok());
        assert!(d(r#"{"allowed": true, "internal_token": 1}"#).is_err());
        assert!(d(r#"{"allowed": true, "internal_token": {"grant": "all"}}"#).is_err());
        assert!(d(r#"{"allowed": true, "internal_token": {"nope": 1}}"#).is_err());
    }

    #[test]
    fn internal_token_forms() {
        let Decision::Allow(a) = d(r#"{"allowed": true, "internal_token": true}"#).unwrap() else {
            panic!("expected allow")
        };
        assert_eq!(a.internal_token, TokenAsk::Requested(Box::default()));
        let Decision::Allow(a) = d(r#"{"allowed": true, "internal_token": false}"#).unwrap() else {
            panic!("expected allow")
        };
        assert_eq!(a.internal_token, TokenAsk::Refused);
        let Decision::Allow(a) = d(r#"{"allowed": true, "internal_token": {"scopes": ["a"],
            "audience": "orders", "ttl_seconds": 30, "namespace": "acme", "grant": "read",
            "claims": {"tenant": "t"}}}"#)
        .unwrap() else {
            panic!("expected allow")
        };
        let TokenAsk::Requested(r) = a.internal_token else {
            panic!("expected a request")
        };
        assert_eq!(r.scopes, Some(vec!["a".to_string()]));
        assert_eq!(r.audience.as_deref(), Some("orders"));
        assert_eq!(r.ttl_seconds, Some(30));
        assert_eq!(r.grant, Some(crate::authn::config::GrantKind::Read));
        assert_eq!(r.claims.get("tenant"), Some(&serde_json::json!("t")));
    }
}
