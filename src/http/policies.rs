//! OPA's Policy API on the default namespace: `GET /v1/policies`, and `GET`, `PUT`, `DELETE
//! /v1/policies/{id}`.
//!
//! The modules are the store's: the PATH files (their id is the file path) and the modules
//! written at run time (here or through the gateway's `PutPolicy`); modules of bundles are not
//! listed. A `PUT` goes through the same overlay as `PutPolicy`: the text replaces a file
//! module of the same id or adds a module, the whole set compiles before it serves, and a
//! module that does not parse or compile is refused with OPA's 400 `invalid_parameter` and one
//! detailed error (`rego_parse_error`, `rego_compile_error`, `rego_unsafe_var_error`) with its
//! location. Each policy is `{"id", "raw", "ast"}`; regorus has no OPA AST in JSON, so `ast`
//! holds the package only: `{"package": {"path": [{"type": "var", "value": "data"},
//! {"type": "string", "value": "envoy"}, ...]}}`.

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::Api;
use super::error::{ApiError, MSG_COMPILE_MODULE, detail};
use super::params::{Params, Timers, ok_json, read_body};
use crate::policy::overlay::ModuleInfo;

/// The largest module a `PUT` accepts (as the gateway's `PutPolicy`).
pub const MAX_MODULE_BYTES: usize = 1024 * 1024;

/// The policy id: the URL path after `/v1/policies/`, unescaped (it may hold slashes).
fn policy_id(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix("/v1/policies/").unwrap_or_default();
    let id = super::params::unescape_segment(raw)
        .ok_or_else(|| ApiError::bad_request(format!("bad policy id: {raw}")))?;
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a policy id has 1 to 256 characters and no control characters",
        ));
    }
    Ok(id)
}

/// OPA's minimal AST: the package's path as terms.
fn ast(m: &ModuleInfo) -> Json {
    let mut path = vec![json!({"type": "var", "value": "data"})];
    for part in m.package().split('.').filter(|p| !p.is_empty()) {
        path.push(json!({"type": "string", "value": part}));
    }
    json!({"package": {"path": path}})
}

fn policy(m: &ModuleInfo) -> Json {
    json!({"id": m.id, "raw": m.text, "ast": ast(m)})
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        super::error::Code::ResourceNotFound,
        format!("storage_not_found_error: policy id {id:?}"),
    )
}

/// `GET /v1/policies`.
pub async fn list(State(app): State<Api>, uri: Uri) -> Response {
    let params = Params::from_uri(&uri);
    let store = app.store.clone();
    let infos = match tokio::task::spawn_blocking(move || store.module_infos()).await {
        Ok(i) => i,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let result: Vec<Json> = infos.iter().map(policy).collect();
    ok_json(&json!({ "result": result }), params.pretty())
}

/// `GET /v1/policies/{id}`.
pub async fn get(State(app): State<Api>, uri: Uri) -> Response {
    let params = Params::from_uri(&uri);
    let id = match policy_id(&uri) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let store = app.store.clone();
    let infos = match tokio::task::spawn_blocking(move || store.module_infos()).await {
        Ok(i) => i,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    match infos.iter().find(|m| m.id == id) {
        Some(m) => ok_json(&json!({ "result": policy(m) }), params.pretty()),
        None => not_found(&id).into_response(),
    }
}

/// Whether a module's text has nothing but blank lines and comments (OPA's `empty module`).
fn is_empty_module(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

/// Parses a module alone, so that a syntax error is a `rego_parse_error` with its location.
fn parse_module(id: &str, text: &str, rego_v0: bool) -> Result<(), ApiError> {
    let fail = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(MSG_COMPILE_MODULE)
            .with_errors(vec![detail("rego_parse_error", &e.to_string())])
    };
    let source = regorus::unstable::Source::from_contents(id.to_string(), text.to_string())
        .map_err(|e| fail(&e))?;
    let mut parser = regorus::unstable::Parser::new(&source).map_err(|e| fail(&e))?;
    if !rego_v0 {
        parser.enable_rego_v1().map_err(|e| fail(&e))?;
    }
    parser.parse().map(|_| ()).map_err(|e| fail(&e))
}

/// `PUT /v1/policies/{id}` with the module's text as the body.
pub async fn put(State(app): State<Api>, uri: Uri, body: axum::body::Body) -> Response {
    if let Err(e) = app.rest.protection.check_write(app.loopback, app.tls) {
        return e.into_response();
    }
    let mut timers = Timers::start();
    let params = Params::from_uri(&uri);
    let id = match policy_id(&uri) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body, MAX_MODULE_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::bad_request(format!(
                "a module holds at most {MAX_MODULE_BYTES} bytes"
            ))
            .into_response();
        }
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return ApiError::bad_request("the module is not valid UTF-8").into_response();
    };
    if is_empty_module(&text) {
        return ApiError::bad_request("empty module").into_response();
    }
    let rego_v0 = app.store.options().rego_v0;
    if let Err(e) = timers.time("rego_module_parse", || parse_module(&id, &text, rego_v0)) {
        return e.into_response();
    }
    let store = app.store.clone();
    let written_id = id.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || store.put_module(&written_id, &text)).await;
    let compile_ns = started.elapsed().as_nanos() as u64;
    match result {
        Err(e) => ApiError::internal(format!("policy write task: {e}")).into_response(),
        Ok(Err(e)) => ApiError::write(e).into_response(),
        Ok(Ok(revision)) => {
            tracing::info!(revision, "policy written through the REST API");
            answer(&params, timers, compile_ns)
        }
    }
}

fn answer(params: &Params, timers: Timers, compile_ns: u64) -> Response {
    if params.flag("metrics") {
        let mut metrics = timers.to_json();
        metrics["timer_rego_module_compile_ns"] = Json::from(compile_ns);
        ok_json(&json!({ "metrics": metrics }), params.pretty())
    } else {
        ok_json(&json!({}), params.pretty())
    }
}

/// `DELETE /v1/policies/{id}`: removes a module written at run time (a file module cannot be
/// deleted; remove the file instead).
pub async fn delete(State(app): State<Api>, uri: Uri) -> Response {
    if let Err(e) = app.rest.protection.check_write(app.loopback, app.tls) {
        return e.into_response();
    }
    let timers = Timers::start();
    let params = Params::from_uri(&uri);
    let id = match policy_id(&uri) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let store = app.store.clone();
    let deleted_id = id.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || store.delete_module(&deleted_id)).await;
    let compile_ns = started.elapsed().as_nanos() as u64;
    match result {
        Err(e) => ApiError::internal(format!("policy write task: {e}")).into_response(),
        Ok(Err(crate::policy::overlay::WriteError::NotFound(_))) => not_found(&id).into_response(),
        Ok(Err(crate::policy::overlay::WriteError::Policy(e))) => {
            // The rest of the policies need the deleted module: OPA's invalid_operation.
            let text = e.to_string();
            let mut err = ApiError::bad_request(MSG_COMPILE_MODULE)
                .with_errors(vec![detail(super::error::compile_code(&text), &text)]);
            err.code = super::error::Code::InvalidOperation;
            err.into_response()
        }
        Ok(Err(e)) => ApiError::write(e).into_response(),
        Ok(Ok(revision)) => {
            tracing::info!(revision, "policy deleted through the REST API");
            answer(&params, timers, compile_ns)
        }
    }
}
