//! [`Decision`] -> `CheckResponse`, exactly as OPA-Envoy builds it.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, QueryParameter};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc::Status;

use super::decision::Decision;
use super::input::InputError;
use crate::telemetry::labels::CheckReason;

/// gRPC status codes used in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAUTHENTICATED: i32 = 16;

impl Decision {
    /// Builds the Check response. With `dry_run`, a denial becomes an empty OK response (the
    /// decision log keeps the truth). Every response carries `dynamic_metadata.decision_id`.
    pub fn into_response(self, decision_id: &str, dry_run: bool) -> CheckResponse {
        let allowed = self.allowed();
        let mut resp = CheckResponse {
            status: Some(status(if allowed { OK } else { PERMISSION_DENIED }, "")),
            ..Default::default()
        };
        match self {
            Decision::Bool(_) => {}
            Decision::Allow(a) => {
                resp.dynamic_metadata = a.dynamic_metadata;
                resp.http_response = Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: header_options(a.headers),
                    headers_to_remove: a.request_headers_to_remove,
                    response_headers_to_add: header_options(a.response_headers_to_add),
                    query_parameters_to_set: a
                        .query_parameters_to_set
                        .into_iter()
                        .map(|(key, value)| QueryParameter { key, value })
                        .collect(),
                    query_parameters_to_remove: a.query_parameters_to_remove,
                    ..Default::default()
                }));
            }
            Decision::Deny(d) => {
                resp.dynamic_metadata = d.dynamic_metadata;
                resp.http_response = Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: d.http_status as i32,
                    }),
                    headers: header_options(d.headers),
                    body: d.body,
                }));
            }
        }
        if dry_run && !allowed {
            resp.status = Some(status(OK, ""));
            resp.http_response = Some(HttpResponse::OkResponse(OkHttpResponse::default()));
        }
        with_decision_id(resp, decision_id)
    }
}

/// The answer to a request that cannot be turned into an input document: denied with HTTP 400
/// and the body `request_parse_error: …`. As in OPA-Envoy this holds in dry-run mode too (the
/// request never reached a policy). OPA-Envoy sends no `decision_id` here; Portcullis adds it so
/// that every answer can be found in the logs.
pub fn parse_error(err: &InputError, decision_id: &str) -> CheckResponse {
    let message = format!("{}: {err}", CheckReason::RequestParseError);
    let resp = CheckResponse {
        status: Some(status(PERMISSION_DENIED, &message)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: StatusCode::BadRequest as i32,
            }),
            headers: Vec::new(),
            body: message,
        })),
        ..Default::default()
    };
    with_decision_id(resp, decision_id)
}

/// The answer to a request that authentication refused (DESIGN §5): HTTP 401 or 403 with the
/// `www-authenticate` challenges and a body `{"error": code}` that never says what was wrong.
/// In dry-run mode it becomes an empty OK, like any denial.
pub fn authn_denied(
    denial: &crate::authn::Denial,
    decision_id: &str,
    dry_run: bool,
) -> CheckResponse {
    if dry_run {
        return with_decision_id(
            CheckResponse {
                status: Some(status(OK, "")),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
                ..Default::default()
            },
            decision_id,
        );
    }
    let (grpc, http) = match denial.status() {
        401 => (UNAUTHENTICATED, StatusCode::Unauthorized),
        429 => (RESOURCE_EXHAUSTED, StatusCode::TooManyRequests),
        _ => (PERMISSION_DENIED, StatusCode::Forbidden),
    };
    let mut headers: Vec<(String, String)> = denial
        .www_authenticate
        .iter()
        .map(|c| ("www-authenticate".to_string(), c.clone()))
        .collect();
    headers.push(("content-type".into(), "application/json".into()));
    let resp = CheckResponse {
        status: Some(status(grpc, denial.code.as_str())),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http as i32 }),
            headers: header_options(headers),
            body: serde_json::json!({ "error": denial.code }).to_string(),
        })),
        ..Default::default()
    };
    with_decision_id(resp, decision_id)
}

/// On an allow: sets `header` to `token` (overwriting any value the caller sent) or, without a
/// token, removes `header` so that a caller cannot pass one of its own; also removes `remove`.
pub fn set_internal_token(
    resp: &mut CheckResponse,
    header: &str,
    token: Option<&str>,
    remove: &[&str],
) {
    if resp.status.as_ref().is_some_and(|s| s.code != OK) {
        return;
    }
    let ok = match &mut resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        Some(HttpResponse::DeniedResponse(_) | HttpResponse::ErrorResponse(_)) => return,
        None => {
            resp.http_response = Some(HttpResponse::OkResponse(OkHttpResponse::default()));
            match &mut resp.http_response {
                Some(HttpResponse::OkResponse(ok)) => ok,
                _ => return,
            }
        }
    };
    ok.headers.retain(|h| {
        h.header
            .as_ref()
            .is_none_or(|h| !h.key.eq_ignore_ascii_case(header))
    });
    match token {
        Some(token) => {
            // Overwrite: older Envoys overwrite when `append` is unset, newer ones follow
            // `append_action` (setting both is rejected).
            ok.headers.push(HeaderValueOption {
                header: Some(HeaderValue {
                    key: header.to_string(),
                    value: token.to_string(),
                    ..Default::default()
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            });
        }
        None => {
            if !ok
                .headers_to_remove
                .iter()
                .any(|h| h.eq_ignore_ascii_case(header))
            {
                ok.headers_to_remove.push(header.to_string());
            }
        }
    }
    for r in remove {
        if !ok
            .headers_to_remove
            .iter()
            .any(|h| h.eq_ignore_ascii_case(r))
        {
            ok.headers_to_remove.push((*r).to_string());
        }
    }
}

fn status(code: i32, message: &str) -> Status {
    Status {
        code,
        message: message.to_string(),
        details: Vec::new(),
    }
}

fn header_options(headers: Vec<(String, String)>) -> Vec<HeaderValueOption> {
    headers
        .into_iter()
        .map(|(key, value)| HeaderValueOption {
            header: Some(HeaderValue {
                key,
                value,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

fn with_decision_id(mut resp: CheckResponse, decision_id: &str) -> CheckResponse {
    resp.dynamic_metadata
        .get_or_insert_with(Struct::default)
        .fields
        .insert(
            "decision_id".to_string(),
            PbValue {
                kind: Some(Kind::StringValue(decision_id.to_string())),
            },
        );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::Value;

    fn resp(json: &str, dry_run: bool) -> CheckResponse {
        Decision::try_from(&Value::from_json_str(json).unwrap())
            .unwrap()
            .into_response("id-1", dry_run)
    }

    fn decision_id(r: &CheckResponse) -> Option<String> {
        match r
            .dynamic_metadata
            .as_ref()?
            .fields
            .get("decision_id")?
            .kind
            .as_ref()?
        {
            Kind::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    #[test]
    fn boolean_has_no_http_response() {
        let r = resp("true", false);
        assert_eq!(r.status.as_ref().unwrap().code, OK);
        assert!(r.http_response.is_none());
        assert_eq!(decision_id(&r).as_deref(), Some("id-1"));
        let r = resp("false", false);
        assert_eq!(r.status.as_ref().unwrap().code, PERMISSION_DENIED);
        assert!(r.http_response.is_none());
    }

    #[test]
    fn object_allow_and_deny() {
        let r = resp(r#"{"allowed": true, "headers": {"x": "1"}}"#, false);
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("expected ok response")
        };
        assert_eq!(ok.headers[0].header.as_ref().unwrap().key, "x");
        let r = resp(
            r#"{"allowed": false, "body": "nope", "http_status": 401, "dynamic_metadata": {"a": "b"}}"#,
            false,
        );
        assert_eq!(r.status.as_ref().unwrap().code, PERMISSION_DENIED);
        assert_eq!(decision_id(&r).as_deref(), Some("id-1"));
        assert!(
            r.dynamic_metadata
                .as_ref()
                .unwrap()
                .fields
                .contains_key("a")
        );
        let Some(HttpResponse::DeniedResponse(denied)) = r.http_response else {
            panic!("expected denied response")
        };
        assert_eq!(denied.body, "nope");
        assert_eq!(denied.status.unwrap().code, 401);
    }

    #[test]
    fn dry_run_turns_denials_into_empty_ok() {
        let r = resp(r#"{"allowed": false, "body": "nope"}"#, true);
        assert_eq!(r.status.as_ref().unwrap().code, OK);
        assert_eq!(
            r.http_response,
            Some(HttpResponse::OkResponse(OkHttpResponse::default()))
        );
        let r = resp("false", true);
        assert_eq!(r.status.as_ref().unwrap().code, OK);
        // Allows are untouched.
        let r = resp(r#"{"allowed": true, "headers": {"x": "1"}}"#, true);
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("expected ok response")
        };
        assert_eq!(ok.headers.len(), 1);
    }

    #[test]
    fn parse_error_is_a_400_denial() {
        let r = parse_error(&InputError("bad escape".into()), "id-2");
        assert_eq!(r.status.as_ref().unwrap().code, PERMISSION_DENIED);
        assert_eq!(
            r.status.as_ref().unwrap().message,
            "request_parse_error: bad escape"
        );
        let Some(HttpResponse::DeniedResponse(denied)) = &r.http_response else {
            panic!("expected denied response")
        };
        assert_eq!(denied.status.as_ref().unwrap().code, 400);
        assert_eq!(denied.body, "request_parse_error: bad escape");
        assert_eq!(decision_id(&r).as_deref(), Some("id-2"));
    }
}
