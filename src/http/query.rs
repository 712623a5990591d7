//! OPA's Query API: `GET /v1/query?q=...` and `POST /v1/query` with `{"query", "input"}`,
//! evaluated on the default namespace's snapshot (the same engine as `portcullis eval`).
//!
//! The answer is `{"result": [bindings, ...]}`, one object of variable bindings per result
//! (generated wildcards left out), or `{}` when the query is undefined. A query that does not
//! parse is OPA's 400 `error(s) occurred while parsing query`; one that does not compile (an
//! unsafe variable) is 400 `error(s) occurred while compiling query`; both carry one detailed
//! error with its location in the query.

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};

use super::error::{ApiError, MSG_COMPILE_QUERY, MSG_PARSE_QUERY, compile_code, detail};
use super::params::{Params, Timers, ok_json, read_body};
use super::{Api, MAX_BODY};
use crate::policy::EvalError;

/// The longest query accepted.
const MAX_QUERY: usize = 64 * 1024;

/// The file name the engine gives a query in its errors.
const QUERY_FILE: &str = "<query.rego>";

/// `GET /v1/query?q=...`.
pub async fn get(State(app): State<Api>, uri: Uri) -> Response {
    let timers = Timers::start();
    let params = Params::from_uri(&uri);
    let Some(query) = params.last("q").map(str::to_string) else {
        return ApiError::bad_request("missing parameter 'q'").into_response();
    };
    run(&app, &query, None, &params, timers)
}

#[derive(Debug, serde::Deserialize)]
struct QueryRequest {
    #[serde(default)]
    query: String,
    #[serde(default)]
    input: Option<Json>,
}

/// `POST /v1/query` with `{"query": "...", "input": ...}`.
pub async fn post(State(app): State<Api>, uri: Uri, body: axum::body::Body) -> Response {
    let mut timers = Timers::start();
    let params = Params::from_uri(&uri);
    let body = match read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let request = match timers.time("rego_input_parse", || {
        serde_json::from_slice::<QueryRequest>(&body)
    }) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!("error(s) occurred while decoding request: {e}"))
                .into_response();
        }
    };
    let input = request
        .input
        .filter(|i| !i.is_null())
        .map(regorus::Value::from);
    run(&app, &request.query, input, &params, timers)
}

/// Parses the query alone, so that a syntax error is OPA's parse error.
fn parse(query: &str) -> Result<(), ApiError> {
    let fail = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(MSG_PARSE_QUERY)
            .with_errors(vec![detail("rego_parse_error", &e.to_string())])
    };
    if query.len() > MAX_QUERY {
        return Err(ApiError::bad_request(format!(
            "a query has at most {MAX_QUERY} bytes"
        )));
    }
    if query.trim().is_empty() {
        return Err(ApiError::bad_request(MSG_PARSE_QUERY).with_errors(vec![
            json!({"code": "rego_parse_error", "message": "empty query"}),
        ]));
    }
    let source = regorus::unstable::Source::from_contents(QUERY_FILE.into(), query.to_string())
        .map_err(|e| fail(&e))?;
    let mut parser = regorus::unstable::Parser::new(&source).map_err(|e| fail(&e))?;
    parser.enable_rego_v1().map_err(|e| fail(&e))?;
    parser.parse_user_query().map(|_| ()).map_err(|e| fail(&e))
}

fn run(
    app: &Api,
    query: &str,
    input: Option<regorus::Value>,
    params: &Params,
    mut timers: Timers,
) -> Response {
    if let Err(e) = timers.time("rego_query_parse", || parse(query)) {
        return e.into_response();
    }
    let snapshot = app.store.snapshot();
    let results = match timers.time("rego_query_eval", || snapshot.eval_query(query, input)) {
        Ok(r) => r,
        Err(EvalError::Failed(m)) if m.contains(QUERY_FILE) => {
            return ApiError::bad_request(MSG_COMPILE_QUERY)
                .with_errors(vec![detail(compile_code(&m), &m)])
                .into_response();
        }
        Err(e) => return ApiError::eval(&e).into_response(),
    };
    let mut out = Map::new();
    if !results.result.is_empty() {
        let mut rows = Vec::with_capacity(results.result.len());
        for r in &results.result {
            let bindings = match serde_json::to_value(&r.bindings) {
                Ok(Json::Object(m)) => m,
                Ok(_) => Map::new(),
                Err(e) => return ApiError::internal(e.to_string()).into_response(),
            };
            let bindings: Map<String, Json> = bindings
                .into_iter()
                .filter(|(k, _)| !(k == "_" || k.starts_with('$') || k.starts_with("__")))
                .collect();
            rows.push(Json::Object(bindings));
        }
        out.insert("result".into(), Json::Array(rows));
    }
    if params.flag("metrics") || params.flag("instrument") {
        out.insert("metrics".into(), timers.to_json());
    }
    ok_json(&Json::Object(out), params.pretty())
}
