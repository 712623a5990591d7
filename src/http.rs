//! The HTTP API: OPA's `/health` and `/v1/data/{path}`, and the internal token's
//! `/.well-known/jwks.json` and `/.well-known/openid-configuration` (404 unless `internal_token`
//! is configured).
//!
//! `POST /v1/data/{path}` with `{"input": ...}` answers `{"result": ...}` (or `{}` when the
//! document is undefined), so a policy can be tried against the same input the Check path
//! builds. `GET` takes the input from an optional `input` query parameter (JSON).

use std::future::Future;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

use crate::server::App;

/// The largest request body the HTTP API reads.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `--addr`: health and the data API.
    Full,
    /// `--diagnostic-addr`: health only.
    Diagnostic,
}

/// Builds the router for a surface.
pub fn router(app: App, surface: Surface) -> Router {
    let mut router = Router::new().route("/health", get(health));
    if surface == Surface::Full {
        router = router
            .route("/v1/data", get(get_root).post(post_root))
            .route("/v1/data/", get(get_root).post(post_root))
            .route("/v1/data/{*path}", get(get_data).post(post_data))
            .route("/.well-known/jwks.json", get(jwks))
            .route(
                "/.well-known/openid-configuration",
                get(openid_configuration),
            );
    }
    router
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// `GET /health` (also `?plugins` and `?bundles`): 200 once policies are loaded. Policies are
/// loaded before any listener serves, and this build has no bundle plugin, so every form answers
/// 200 while the process runs.
async fn health(State(app): State<App>) -> Response {
    let _ = app.store.snapshot();
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// The internal token's public keys.
async fn jwks(State(app): State<App>) -> Response {
    match app.authz.security().and_then(|s| s.minter.as_ref()) {
        Some(m) => (
            StatusCode::OK,
            [(axum::http::header::CACHE_CONTROL, "max-age=60")],
            axum::Json(m.jwks()),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no internal token is configured",
        ),
    }
}

/// OIDC discovery for the internal token's issuer.
async fn openid_configuration(State(app): State<App>) -> Response {
    match app.authz.security().and_then(|s| s.minter.as_ref()) {
        Some(m) => {
            let jwks_uri = format!(
                "{}/.well-known/jwks.json",
                m.config().issuer.trim_end_matches('/')
            );
            (
                StatusCode::OK,
                axum::Json(m.openid_configuration(&jwks_uri)),
            )
                .into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no internal token is configured",
        ),
    }
}

#[derive(Debug, serde::Deserialize)]
struct GetParams {
    input: Option<String>,
}

async fn get_root(State(app): State<App>, Query(q): Query<GetParams>) -> Response {
    query_data(app, String::new(), parse_input_param(q.input))
}

async fn get_data(
    State(app): State<App>,
    Path(path): Path<String>,
    Query(q): Query<GetParams>,
) -> Response {
    query_data(app, path, parse_input_param(q.input))
}

async fn post_root(State(app): State<App>, body: axum::body::Bytes) -> Response {
    query_data(app, String::new(), parse_body(&body))
}

async fn post_data(
    State(app): State<App>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    query_data(app, path, parse_body(&body))
}

fn parse_input_param(input: Option<String>) -> Result<Option<regorus::Value>, String> {
    match input {
        None => Ok(None),
        Some(text) => regorus::Value::from_json_str(&text)
            .map(Some)
            .map_err(|e| format!("input parameter: {e}")),
    }
}

fn parse_body(body: &[u8]) -> Result<Option<regorus::Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let json: Json = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    match json {
        Json::Object(mut map) => {
            let input = map.remove("input");
            Ok(input.map(regorus::Value::from))
        }
        _ => Err("body: expected an object like {\"input\": ...}".into()),
    }
}

fn query_data(app: App, path: String, input: Result<Option<regorus::Value>, String>) -> Response {
    let input = match input {
        Ok(i) => i,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_parameter", &message),
    };
    if let Err(message) = crate::config::validate_decision_path(&path)
        && !path.trim_matches('/').is_empty()
    {
        return error(StatusCode::BAD_REQUEST, "invalid_parameter", &message);
    }
    let snapshot = app.store.snapshot();
    match snapshot.eval_path(&path, input) {
        Ok(regorus::Value::Undefined) => (StatusCode::OK, axum::Json(json!({}))).into_response(),
        Ok(value) => match serde_json::to_value(&value) {
            Ok(result) => (StatusCode::OK, axum::Json(json!({ "result": result }))).into_response(),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                &e.to_string(),
            ),
        },
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            &e.to_string(),
        ),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}
