//! The HTTP API: OPA's `/health`, `/metrics` and `/v1/data/{path}`, and the internal token's
//! `/.well-known/jwks.json` and `/.well-known/openid-configuration` (404 unless `internal_token`
//! is configured).
//!
//! `/health` answers 200 `{}` while the server runs. With `?bundles` (readiness with bundles) or
//! `?plugins`, it answers 200 only once every configured bundle has been activated at least
//! once, and 500 `{"error": ...}` naming the pending bundles (and their last download error)
//! before that, as OPA does. Once ready, `?bundles` answers `{"bundles": {name: {"revision"}}}`
//! (OPA answers `{}`; probes only read the status).
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

use std::sync::Arc;

use crate::authz::security::Security;
use crate::policy::PolicyStore;
use crate::telemetry::Metrics;

/// The largest request body the HTTP API reads.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the HTTP API reads: the default namespace's store, the internal token's keys, the
/// metrics registry.
#[derive(Debug, Clone)]
pub struct Api {
    pub store: Arc<PolicyStore>,
    pub security: Option<Arc<Security>>,
    pub metrics: Metrics,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `--addr`: health, metrics and the data API.
    Full,
    /// `--diagnostic-addr`: health and metrics only.
    Diagnostic,
}

/// Builds the router for a surface.
pub fn router(app: Api, surface: Surface) -> Router {
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics));
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

/// Serves `router` on `listener` until `shutdown` resolves. On a loopback address only
/// loopback `Host` names are answered (403 otherwise): a web page whose name an attacker
/// rebinds to 127.0.0.1 must not read decisions and data through the user's browser.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = if listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
        router.layer(axum::middleware::from_fn(loopback_hosts_only))
    } else {
        router
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn loopback_hosts_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if host.is_some_and(crate::listen::is_loopback_authority) {
        next.run(req).await
    } else {
        error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this listener answers loopback host names only",
        )
    }
}

/// `GET /health`, `?bundles`, `?plugins`: see the module docs.
async fn health(State(app): State<Api>, uri: axum::http::Uri) -> Response {
    let wants = |key: &str| {
        uri.query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == key && !v.eq_ignore_ascii_case("false"))
        })
    };
    if (wants("bundles") || wants("plugins")) && !app.store.is_ready() {
        let statuses = app.store.bundle_status().all();
        let pending: Vec<String> = app
            .store
            .pending_bundles()
            .into_iter()
            .map(|name| {
                match statuses
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| s.last_error.clone())
                {
                    Some(error) => format!("{name} ({error})"),
                    None => name,
                }
            })
            .collect();
        let error = format!(
            "not all bundles have been activated: {}",
            pending.join(", ")
        );
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": error })),
        )
            .into_response();
    }
    if wants("bundles") {
        // Portcullis: the active revision of each bundle (OPA answers `{}`).
        let bundles: serde_json::Map<String, Json> = app
            .store
            .snapshot()
            .bundles()
            .iter()
            .map(|b| (b.name.clone(), json!({ "revision": b.revision })))
            .collect();
        if !bundles.is_empty() {
            return (StatusCode::OK, axum::Json(json!({ "bundles": bundles }))).into_response();
        }
    }
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// The internal token's public keys.
async fn jwks(State(app): State<Api>) -> Response {
    match app.security.as_ref().and_then(|s| s.minter.as_ref()) {
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
async fn openid_configuration(State(app): State<Api>, headers: axum::http::HeaderMap) -> Response {
    let Some(minter) = app.security.as_ref().and_then(|s| s.minter.as_ref()) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no internal token is configured",
        );
    };
    if let Some(uri) = &minter.config().jwks_uri {
        return (StatusCode::OK, axum::Json(minter.openid_configuration(uri))).into_response();
    }
    // Where this API serves the keys: the host the document was asked from. The answer
    // depends on `Host`, so caches must key on it.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .filter(|a| a.as_str().len() <= 255);
    let Some(host) = host else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "a Host header is needed to say where the keys are served (or set internal_token.jwks_uri)",
        );
    };
    let jwks_uri = format!("http://{}/.well-known/jwks.json", host.as_str());
    (
        StatusCode::OK,
        [
            (axum::http::header::VARY, "host"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        axum::Json(minter.openid_configuration(&jwks_uri)),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus' text exposition (OpenMetrics).
async fn metrics(State(app): State<Api>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        app.metrics.encode(),
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct GetParams {
    input: Option<String>,
}

async fn get_root(State(app): State<Api>, Query(q): Query<GetParams>) -> Response {
    query_data(app, String::new(), parse_input_param(q.input))
}

async fn get_data(
    State(app): State<Api>,
    Path(path): Path<String>,
    Query(q): Query<GetParams>,
) -> Response {
    query_data(app, path, parse_input_param(q.input))
}

async fn post_root(State(app): State<Api>, body: axum::body::Bytes) -> Response {
    query_data(app, String::new(), parse_body(&body))
}

async fn post_data(
    State(app): State<Api>,
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

fn query_data(app: Api, path: String, input: Result<Option<regorus::Value>, String>) -> Response {
    let input = match input {
        Ok(i) => i,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_parameter", &message),
    };
    if let Err(message) = crate::policy::reference::validate_decision_path(&path)
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
