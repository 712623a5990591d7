//! OPA's `--authentication` and `--authorization` for the HTTP API, and the rule that keeps
//! REST writes off unless they are protected.
//!
//! - `--authentication=token`: a `Authorization: Bearer <token>` header (at most 8 KiB, one
//!   token without spaces) makes the token `input.identity` of the authorization policy.
//!   Portcullis does not check the token itself; the policy does.
//! - `--authentication=tls`: every client of a TLS listener must present a certificate that
//!   chains to `--tls-ca-cert-file` (the handshake fails otherwise), and its subject is
//!   `input.identity`, written as OPA writes it ([`crate::tls::opa_subject`]: `CN=my-client`,
//!   `CN=a,OU=b,O=c`). A listener given as `http://` has no certificates, so no identity (see
//!   [`super::tls`]).
//! - `--authorization=basic`: every call on the listener is first decided by
//!   `data.system.authz.allow` (or the config's `default_authorization_decision`) with OPA's
//!   input `{"method", "path", "params", "headers", "identity", "body"}`: `path` is the URL path
//!   split on `/` after its leading slash and unescaped (`/` is `[""]`), `params` and `headers`
//!   map names to lists of values (headers under Go's canonical names, `X-Api-Key`), `body` is
//!   the parsed JSON body of `POST /`, `POST /v0/data/...` and `POST /v1/data/...` only.
//!   `true` (or `{"allowed": true}`) lets the call through; anything else answers 401
//!   `unauthorized` (`{"allowed": false, "reason": "..."}` answers the reason); an undefined
//!   decision is OPA's 500 `authorization policy missing or undefined`.
//! - Writes (`PUT`/`PATCH`/`DELETE` of data, `PUT`/`DELETE` of policies) are refused with 403
//!   unless `--authorization=basic` is on, and on a listener whose address is not loopback also
//!   unless callers are identified: `--authentication=token`, or `--authentication=tls` on a TLS
//!   listener. A policy that cannot tell callers apart must not be the only thing between the
//!   network and the policies.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};

use super::error::{ApiError, Code};
use super::params::Params;
use super::{Api, MAX_BODY};
use crate::policy::DataRef;

/// `--authentication`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Authentication {
    /// No caller identity.
    #[default]
    Off,
    /// A bearer token is the caller's identity (`input.identity`).
    Token,
    /// A verified client certificate's subject is the caller's identity (needs
    /// `--tls-cert-file`, `--tls-private-key-file` and `--tls-ca-cert-file`).
    Tls,
}

/// `--authorization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Authorization {
    /// Every call is answered; REST writes are refused.
    #[default]
    Off,
    /// `data.system.authz.allow` decides every call.
    Basic,
}

/// How the HTTP API is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protection {
    pub authentication: Authentication,
    pub authorization: Authorization,
}

impl Protection {
    /// Refuses a REST write unless it is protected (see the module docs); `tls` is whether the
    /// listener serves TLS (where `--authentication=tls` identifies every caller).
    pub fn check_write(&self, loopback: bool, tls: bool) -> Result<(), ApiError> {
        let refuse = |message: &str| {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                Code::Unauthorized,
                message,
            ))
        };
        if self.authorization != Authorization::Basic {
            return refuse(
                "writes through the REST API are off: start with --authorization=basic (and a \
                 system.authz policy) to allow them",
            );
        }
        let identified = match self.authentication {
            Authentication::Token => true,
            Authentication::Tls => tls,
            Authentication::Off => false,
        };
        if !loopback && !identified {
            return refuse(
                "writes through the REST API on a non-loopback address need callers identified \
                 (--authentication=token, or --authentication=tls on an HTTPS listener) as well \
                 as --authorization=basic",
            );
        }
        Ok(())
    }
}

/// The longest `Authorization` header read as a bearer token, as in OPA.
const MAX_AUTHORIZATION: usize = 8192;

/// The bearer token of `Authorization: Bearer <token>`, when there is exactly one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    if value.is_empty() || value.len() > MAX_AUTHORIZATION {
        return None;
    }
    let rest = value.strip_prefix("Bearer")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let token = rest.trim_start();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then(|| token.to_string())
}

/// Go's canonical header name: `x-api-key` is `X-Api-Key`.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// Whether OPA's authorizer reads this call's body into `input.body`.
fn expects_body(method: &str, path: &[String]) -> bool {
    method == "POST"
        && match path {
            [only] => only.is_empty(),
            [version, data, ..] => (version == "v0" || version == "v1") && data == "data",
            [] => false,
        }
}

/// The URL path as OPA's authorizer splits it; a bad escape is an error.
fn split_path(path: &str) -> Result<Vec<String>, String> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/')
        .map(|s| super::params::unescape_segment(s).ok_or_else(|| format!("bad path: {path}")))
        .collect()
}

/// Runs the authorization policy before every call (see the module docs).
pub async fn authorize(State(app): State<Api>, req: Request, next: Next) -> Response {
    if app.rest.protection.authorization != Authorization::Basic {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_ascii_uppercase();
    let path = match split_path(parts.uri.path()) {
        Ok(p) => p,
        Err(m) => return ApiError::bad_request(m).into_response(),
    };
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if let Json::Array(values) = headers
            .entry(canonical(name.as_str()))
            .or_insert_with(|| Json::Array(Vec::new()))
        {
            values.push(Json::String(value));
        }
    }
    let mut input = json!({
        "method": method,
        "path": path,
        "params": Params::from_uri(&parts.uri).to_json(),
        "headers": headers,
    });
    let (bytes, body) = if expects_body(&method, &path) {
        match super::params::read_body(body, MAX_BODY).await {
            Ok(b) => (Some(b.clone()), axum::body::Body::from(b)),
            Err(e) => return e.into_response(),
        }
    } else {
        (None, body)
    };
    if let Some(b) = bytes.as_ref().filter(|b| !b.is_empty()) {
        match serde_json::from_slice::<Json>(b) {
            Ok(body) => input["body"] = body,
            Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
        }
    }
    match app.rest.protection.authentication {
        Authentication::Token => {
            if let Some(token) = bearer(&parts.headers) {
                input["identity"] = Json::String(token);
            }
        }
        Authentication::Tls => {
            let client = parts
                .extensions
                .get::<axum::extract::ConnectInfo<crate::tls::TlsPeer>>()
                .and_then(|c| c.0.client.as_ref());
            if let Some(client) = client {
                input["identity"] = Json::String(client.opa_subject.clone());
            }
        }
        Authentication::Off => {}
    }
    let reference = DataRef::parse(&app.rest.authorization_decision);
    let snapshot = app.store.snapshot();
    let decision = match snapshot.eval_ref(&reference, Some(regorus::Value::from(input)), false) {
        Ok(v) => v,
        Err(e) => return ApiError::eval(&e).into_response(),
    };
    if let Err(e) = verdict(&decision) {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// OPA's reading of the authorization decision.
fn verdict(decision: &regorus::Value) -> Result<(), ApiError> {
    let unauthorized = |m: &str| {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            Code::Unauthorized,
            m,
        ))
    };
    const REJECTED: &str = "request rejected by administrative policy";
    match serde_json::to_value(decision) {
        _ if *decision == regorus::Value::Undefined => Err(ApiError::internal(
            "authorization policy missing or undefined",
        )),
        Ok(Json::Bool(true)) => Ok(()),
        Ok(Json::Object(m)) => match m.get("allowed") {
            Some(Json::Bool(true)) => Ok(()),
            Some(_) => match m.get("reason") {
                Some(Json::String(reason)) => unauthorized(reason),
                _ => unauthorized(REJECTED),
            },
            None => Err(ApiError::internal("document missing or undefined")),
        },
        _ => unauthorized(REJECTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_like_opa() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                axum::http::header::AUTHORIZATION,
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
            m
        };
        assert_eq!(bearer(&h("Bearer abc")), Some("abc".into()));
        assert_eq!(bearer(&h("Bearer \t abc")), Some("abc".into()));
        assert_eq!(bearer(&h("Bearer a b")), None);
        assert_eq!(bearer(&h("Bearerabc")), None);
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h(&format!("Bearer {}", "a".repeat(9000)))), None);
    }

    #[test]
    fn paths_and_headers_look_as_in_opa() {
        assert_eq!(split_path("/").unwrap(), vec![""]);
        assert_eq!(
            split_path("/v1/data/a%2Fb").unwrap(),
            vec!["v1", "data", "a/b"]
        );
        assert!(split_path("/v1/%ff").is_err());
        assert_eq!(canonical("x-api-KEY"), "X-Api-Key");
        assert!(expects_body("POST", &["".into()]));
        assert!(expects_body(
            "POST",
            &["v1".into(), "data".into(), "x".into()]
        ));
        assert!(!expects_body("POST", &["v1".into(), "query".into()]));
        assert!(!expects_body("PUT", &["v1".into(), "data".into()]));
    }

    #[test]
    fn writes_need_protection() {
        let off = Protection::default();
        assert_eq!(off.check_write(true, true).unwrap_err().status, 403);
        let basic = Protection {
            authorization: Authorization::Basic,
            ..Default::default()
        };
        assert!(basic.check_write(true, false).is_ok());
        assert_eq!(basic.check_write(false, true).unwrap_err().status, 403);
        let both = Protection {
            authorization: Authorization::Basic,
            authentication: Authentication::Token,
        };
        assert!(both.check_write(false, false).is_ok());
        let tls = Protection {
            authorization: Authorization::Basic,
            authentication: Authentication::Tls,
        };
        assert!(tls.check_write(false, true).is_ok());
        // An http:// listener has no client certificates: nobody is identified there.
        assert_eq!(tls.check_write(false, false).unwrap_err().status, 403);
    }

    #[test]
    fn decisions_read_like_opa() {
        let v = |j: Json| regorus::Value::from(j);
        assert!(verdict(&v(json!(true))).is_ok());
        assert!(verdict(&v(json!({"allowed": true}))).is_ok());
        assert_eq!(verdict(&v(json!(false))).unwrap_err().status, 401);
        let e = verdict(&v(json!({"allowed": false, "reason": "no"}))).unwrap_err();
        assert_eq!((e.status.as_u16(), e.message.as_str()), (401, "no"));
        assert_eq!(verdict(&v(json!({"x": 1}))).unwrap_err().status, 500);
        assert_eq!(
            verdict(&regorus::Value::Undefined).unwrap_err().message,
            "authorization policy missing or undefined"
        );
    }
}
