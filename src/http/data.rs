//! OPA's Data API on the default namespace: `GET`/`POST /v1/data/{path}`, `POST
//! /v0/data/{path}`, `POST /` (the default decision), and the writes `PUT`, `PATCH` (JSON
//! Patch `add`/`remove`/`replace`) and `DELETE /v1/data/{path}`.
//!
//! The path is the URL path after `/v1/data` split on `/`, each segment unescaped (`a%2Fb` is
//! the key `a/b`); a segment that is a Go integer indexes an array. Reads answer
//! `{"result": ...}` (no `result` when undefined) plus `warning` when a `POST` has no `input`,
//! `metrics` with `?metrics` and `provenance` with `?provenance`; `v0` and `POST /` answer the
//! bare value, or 404 `undefined_document` when it is undefined. Writes go through the store's
//! runtime overlay (the gateway's `PutData`), so they survive reloads of the files, compile
//! before they serve, and are refused under a bundle's roots; they answer 204 (200 with
//! `{"metrics"}` under `?metrics`), and are refused unless protected (see [`super::authz`]).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};

use super::error::{ApiError, Code};
use super::params::{Params, Timers, json_response, ok_json, read_body};
use super::patch::{Doc, MAX_PATCH_OPS, Op, StoreError};
use super::{Api, MAX_BODY};
use crate::policy::overlay::{DataWrite, WriteError};
use crate::policy::{BundleRevision, DataRef};

/// How a path's segments are unescaped: reads keep a segment whose escape is bad, as OPA
/// does; writes refuse it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escapes {
    Lenient,
    Strict,
}

/// The segments of the URL path after `prefix`.
fn segments(uri: &Uri, prefix: &str, escapes: Escapes) -> Result<Vec<String>, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or_default();
    let mut out = Vec::new();
    for s in raw.split('/').filter(|s| !s.is_empty()) {
        match super::params::unescape_segment(s) {
            Some(d) => out.push(d),
            None if escapes == Escapes::Lenient => out.push(s.to_string()),
            None => return Err(ApiError::bad_request(format!("bad path: {raw}"))),
        }
    }
    let len: usize = out.iter().map(|s| s.len() + 1).sum();
    if len > crate::policy::reference::MAX_DECISION_PATH {
        return Err(ApiError::bad_request(format!(
            "the path is longer than {} bytes",
            crate::policy::reference::MAX_DECISION_PATH
        )));
    }
    if out.iter().any(|s| s.chars().any(char::is_control)) {
        return Err(ApiError::bad_request("the path has control characters"));
    }
    Ok(out)
}

/// Parses a JSON (or, with a YAML content type, YAML) document.
fn parse_document(headers: &HeaderMap, body: &[u8]) -> Result<Json, String> {
    let yaml = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"));
    if yaml {
        let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        yaml_serde::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// `GET /v1/data/{path}`: the input is the last `input` parameter.
pub async fn v1_get(State(app): State<Api>, uri: Uri) -> Response {
    let mut timers = Timers::start();
    let params = Params::from_uri(&uri);
    let path = match segments(&uri, "/v1/data", Escapes::Lenient) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let input = match params.last("input") {
        None => None,
        Some(text) => match timers.time("rego_input_parse", || regorus::Value::from_json_str(text))
        {
            Ok(v) => Some(v),
            Err(e) => {
                return ApiError::bad_request(format!(
                    "parameter contains malformed input document: {e}"
                ))
                .into_response();
            }
        },
    };
    read(&app, &path, input, &params, timers, false)
}

/// `POST /v1/data/{path}` with `{"input": ...}` (JSON, or YAML by content type).
pub async fn v1_post(
    State(app): State<Api>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let mut timers = Timers::start();
    let params = Params::from_uri(&uri);
    let path = match segments(&uri, "/v1/data", Escapes::Lenient) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let input = timers.time("rego_input_parse", || -> Result<Option<Json>, String> {
        if is_blank(&body) {
            return Ok(None);
        }
        match parse_document(&headers, &body)? {
            Json::Object(mut m) => Ok(m.remove("input").filter(|v| !v.is_null())),
            Json::Null => Ok(None),
            _ => Err("the body must be an object like {\"input\": ...}".into()),
        }
    });
    let input = match input {
        Ok(i) => i,
        Err(e) => {
            return ApiError::bad_request(format!("body contains malformed input document: {e}"))
                .into_response();
        }
    };
    let warn = input.is_none();
    read(
        &app,
        &path,
        input.map(regorus::Value::from),
        &params,
        timers,
        warn,
    )
}

/// Evaluates `data.<path>` and answers OPA's data response.
fn read(
    app: &Api,
    path: &[String],
    input: Option<regorus::Value>,
    params: &Params,
    mut timers: Timers,
    warn: bool,
) -> Response {
    let snapshot = app.store.snapshot();
    let reference = DataRef::from_segments(path);
    let strict = params.flag("strict-builtin-errors");
    let value = match timers.time("rego_query_eval", || {
        snapshot.eval_ref(&reference, input, strict)
    }) {
        Ok(v) => v,
        Err(e) => return ApiError::eval(&e).into_response(),
    };
    let mut out = Map::new();
    if value != regorus::Value::Undefined {
        match serde_json::to_value(&value) {
            Ok(v) => {
                out.insert("result".into(), v);
            }
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        }
    }
    if warn {
        out.insert(
            "warning".into(),
            json!({"code": "api_usage_warning", "message": "'input' key missing from the request"}),
        );
    }
    if params.flag("provenance") {
        out.insert("provenance".into(), provenance(&snapshot));
    }
    if params.flag("metrics") || params.flag("instrument") {
        out.insert("metrics".into(), timers.to_json());
    }
    ok_json(&Json::Object(out), params.pretty())
}

/// OPA's provenance: this build and the active bundles' revisions.
pub fn provenance(snapshot: &crate::policy::Snapshot) -> Json {
    let bundles: Map<String, Json> = snapshot
        .bundles()
        .iter()
        .map(|b| (b.name.clone(), json!({"revision": b.revision})))
        .collect();
    let mut out = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "build_commit": "",
        "build_timestamp": "",
        "build_hostname": "",
    });
    if !bundles.is_empty() {
        out["bundles"] = Json::Object(bundles);
    }
    out
}

/// `POST /v0/data/{path}`: the body is the input itself; the answer is the bare value.
pub async fn v0_post(
    State(app): State<Api>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let path = match segments(&uri, "/v0/data", Escapes::Lenient) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    bare(&app, &path, &uri, &headers, body).await
}

/// `POST /`: the default decision (`default_decision`, `system/main` unless configured), the
/// body being the input.
pub async fn default_decision(
    State(app): State<Api>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let path: Vec<String> = app
        .rest
        .default_decision
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    bare(&app, &path, &uri, &headers, body).await
}

async fn bare(
    app: &Api,
    path: &[String],
    uri: &Uri,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Response {
    let params = Params::from_uri(uri);
    let body = match read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // As in OPA, an empty body is a null input.
    let input = if is_blank(&body) {
        Json::Null
    } else {
        match parse_document(headers, &body) {
            Ok(v) => v,
            Err(e) => {
                return ApiError::bad_request(format!(
                    "unexpected parse error for input: body contains malformed input document: {e}"
                ))
                .into_response();
            }
        }
    };
    let snapshot = app.store.snapshot();
    let reference = DataRef::from_segments(path);
    let value = match snapshot.eval_ref(&reference, Some(regorus::Value::from(input)), false) {
        Ok(v) => v,
        Err(e) => return ApiError::eval(&e).into_response(),
    };
    if value == regorus::Value::Undefined {
        let joined = path.join("/");
        let kind = if snapshot.rule_paths().contains(&joined) {
            "document undefined"
        } else {
            "document missing"
        };
        return ApiError::new(
            StatusCode::NOT_FOUND,
            Code::UndefinedDocument,
            format!("{kind}: {}", reference.to_query()),
        )
        .into_response();
    }
    match serde_json::to_value(&value) {
        Ok(v) => ok_json(&v, params.pretty()),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// A store refusal as OPA answers it.
fn store_error(e: StoreError) -> ApiError {
    let message = e.to_string();
    match e {
        StoreError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, Code::ResourceNotFound, message)
        }
        StoreError::WriteConflict(_) => {
            ApiError::new(StatusCode::NOT_FOUND, Code::ResourceConflict, message)
        }
        StoreError::InvalidPatch(_) => ApiError::bad_request(message),
    }
}

/// OPA's check that a write stays out of every bundle's roots.
fn check_scope(bundles: &[BundleRevision], path: &[String]) -> Result<(), ApiError> {
    if bundles.is_empty() {
        return Ok(());
    }
    if path.is_empty() {
        return Err(ApiError::bad_request(
            "can't write to document root with bundle roots configured",
        ));
    }
    for b in bundles {
        for root in &b.roots {
            let root: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
            if root.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "all paths owned by bundle {:?}",
                    b.name
                )));
            }
            if path.iter().zip(&root).all(|(a, b)| a == b) {
                return Err(ApiError::bad_request(format!(
                    "path {} is owned by bundle {:?}",
                    path.join("/"),
                    b.name
                )));
            }
        }
    }
    Ok(())
}

/// What a write must not break: the bundles' roots, and the rules (data may not be defined
/// where a rule is, as OPA's compiler checks).
struct Guards {
    bundles: Vec<BundleRevision>,
    rules: Vec<Vec<String>>,
}

impl Guards {
    fn of(app: &Api) -> Self {
        let snapshot = app.store.snapshot();
        Self {
            bundles: snapshot.bundles().to_vec(),
            rules: snapshot
                .rule_paths()
                .iter()
                .map(|p| p.split('/').map(String::from).collect())
                .collect(),
        }
    }

    /// The writes of `doc`, once they pass every check.
    fn writes(&self, doc: &Doc) -> Result<Vec<DataWrite>, ApiError> {
        let writes = doc.writes();
        for (path, _) in &writes {
            check_scope(&self.bundles, path)?;
            for rule in &self.rules {
                let overlaps = rule.starts_with(path) || path.starts_with(rule);
                if overlaps && doc.read(rule).is_ok() {
                    return Err(ApiError::bad_request(format!(
                        "1 error occurred: rego_compile_error: conflicting rule for data path {} \
                         found",
                        rule.join("/")
                    )));
                }
            }
        }
        Ok(writes)
    }
}

/// What a data write did.
enum Written {
    Done,
    NotModified,
}

/// Runs a data change on a blocking thread (it compiles the new snapshot) and answers it.
async fn write(
    app: &Api,
    params: &Params,
    timers: Timers,
    change: impl FnOnce(&Map<String, Json>, &Guards) -> Result<(Vec<DataWrite>, Written), ApiError>
    + Send
    + 'static,
) -> Response {
    let guards = Guards::of(app);
    let store = app.store.clone();
    let result = tokio::task::spawn_blocking(move || {
        store.update_data(|data| match change(data, &guards) {
            Ok((writes, done)) => Ok((writes, Ok(done))),
            Err(e) => Ok((Vec::new(), Err(e))),
        })
    })
    .await;
    let outcome = match result {
        Err(e) => return ApiError::internal(format!("data write task: {e}")).into_response(),
        Ok(Err(WriteError::Policy(e))) => {
            return ApiError::bad_request(e.to_string()).into_response();
        }
        Ok(Err(e)) => return ApiError::write(e).into_response(),
        Ok(Ok((_, Err(e)))) => return e.into_response(),
        Ok(Ok((revision, Ok(outcome)))) => {
            if let Written::Done = outcome {
                tracing::info!(revision, "data written through the REST API");
            }
            outcome
        }
    };
    match outcome {
        Written::NotModified => StatusCode::NOT_MODIFIED.into_response(),
        Written::Done if params.flag("metrics") => {
            json_response(StatusCode::OK, &json!({"metrics": timers.to_json()}), false)
        }
        Written::Done => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `PUT /v1/data/{path}`: sets the document, creating parent objects; with `If-None-Match: *`
/// an existing document is left alone (304).
pub async fn put(
    State(app): State<Api>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Err(e) = app.rest.protection.check_write(app.loopback, app.tls) {
        return e.into_response();
    }
    let mut timers = Timers::start();
    let params = Params::from_uri(&uri);
    let path = match segments(&uri, "/v1/data", Escapes::Strict) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let value = match timers.time("rego_input_parse", || serde_json::from_slice::<Json>(&body)) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let keep_existing = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    write(&app, &params, timers, move |data, guards| {
        check_scope(&guards.bundles, &path)?;
        let mut doc = Doc::new(data);
        if keep_existing && doc.read(&path).is_ok() {
            return Ok((Vec::new(), Written::NotModified));
        }
        doc.put(&path, value).map_err(store_error)?;
        Ok((guards.writes(&doc)?, Written::Done))
    })
    .await
}

/// `DELETE /v1/data/{path}`.
pub async fn delete(State(app): State<Api>, uri: Uri) -> Response {
    if let Err(e) = app.rest.protection.check_write(app.loopback, app.tls) {
        return e.into_response();
    }
    let timers = Timers::start();
    let params = Params::from_uri(&uri);
    let path = match segments(&uri, "/v1/data", Escapes::Strict) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    write(&app, &params, timers, move |data, guards| {
        check_scope(&guards.bundles, &path)?;
        let mut doc = Doc::new(data);
        doc.read(&path).map_err(store_error)?;
        doc.apply(Op::Remove, &path, None).map_err(store_error)?;
        Ok((guards.writes(&doc)?, Written::Done))
    })
    .await
}

/// One JSON Patch operation as OPA reads it.
#[derive(Debug, serde::Deserialize)]
struct PatchOp {
    op: String,
    path: String,
    #[serde(default)]
    value: Json,
}

/// `PATCH /v1/data/{path}` with a JSON Patch array; every operation applies or none does.
pub async fn patch(State(app): State<Api>, uri: Uri, body: axum::body::Body) -> Response {
    if let Err(e) = app.rest.protection.check_write(app.loopback, app.tls) {
        return e.into_response();
    }
    let mut timers = Timers::start();
    let params = Params::from_uri(&uri);
    let root = match segments(&uri, "/v1/data", Escapes::Strict) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ops = match timers.time("rego_input_parse", || {
        serde_json::from_slice::<Vec<PatchOp>>(&body)
    }) {
        Ok(ops) => ops,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    if ops.len() > MAX_PATCH_OPS {
        return ApiError::bad_request(format!("a patch holds at most {MAX_PATCH_OPS} operations"))
            .into_response();
    }
    let mut parsed = Vec::with_capacity(ops.len());
    for op in ops {
        let Some(kind) = Op::parse(&op.op) else {
            return ApiError::bad_request(format!("bad patch operation: {}", op.op))
                .into_response();
        };
        let mut path = root.clone();
        for s in op.path.split('/').filter(|s| !s.is_empty()) {
            match super::params::unescape_segment(s) {
                Some(d) if !d.chars().any(char::is_control) => path.push(d),
                _ => {
                    return ApiError::bad_request(format!("bad patch path: {}", op.path))
                        .into_response();
                }
            }
        }
        if path.len() > 64 {
            return ApiError::bad_request(format!("bad patch path: {}", op.path)).into_response();
        }
        parsed.push((kind, path, op.value));
    }
    write(&app, &params, timers, move |data, guards| {
        let mut doc = Doc::new(data);
        for (kind, path, value) in parsed {
            check_scope(&guards.bundles, &path)?;
            doc.apply(kind, &path, Some(value)).map_err(store_error)?;
        }
        Ok((guards.writes(&doc)?, Written::Done))
    })
    .await
}
