//! The HTTP API on `--addr`: OPA's REST API on the default namespace, `/health`, `/metrics`,
//! and the internal token's `/.well-known/jwks.json` and `/.well-known/openid-configuration`
//! (404 unless `internal_token` is configured). `--diagnostic-addr` serves `/health` and
//! `/metrics` only.
//!
//! - [`data`]: the Data API (`v0`, `v1`, `POST /`), reads and writes
//! - [`policies`]: the Policy API
//! - [`query`]: the Query API
//! - [`config`]: the Config and Status APIs
//! - [`authz`]: `--authentication`, `--authorization` (`system.authz`) and the write guard
//! - [`tls`]: HTTPS from OPA's `--tls-*` flags, and which listener serves it
//! - [`error`]: OPA's error object; [`params`]: query parameters and answers; [`patch`]: data
//!   writes with OPA's store rules
//!
//! `/health` answers 200 `{}` while the server runs. With `?bundles` (readiness with bundles) or
//! `?plugins`, it answers 200 only once every configured bundle has been activated at least
//! once, and 500 `{"error": ...}` naming the pending bundles (and their last download error)
//! before that, as OPA does. Once ready, `?bundles` answers `{"bundles": {name: {"revision"}}}`
//! (OPA answers `{}`; probes only read the status).
//!
//! Reads answer on every listener as before; writes (`PUT`/`PATCH`/`DELETE`) are refused
//! unless the listener is protected (see [`authz`]). A path with a route but another method
//! answers 405 with an empty body, as OPA does.

pub mod authz;
pub mod config;
pub mod data;
pub mod error;
pub mod params;
pub mod patch;
pub mod policies;
pub mod query;
pub mod tls;

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::authz::security::Security;
use crate::policy::PolicyStore;
use crate::telemetry::Metrics;

/// The largest request body the HTTP API reads.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the HTTP API reads: the default namespace's store, the internal token's keys, the
/// metrics registry, the REST API's settings, and whether the listener is on loopback.
#[derive(Debug, Clone)]
pub struct Api {
    pub store: Arc<PolicyStore>,
    pub security: Option<Arc<Security>>,
    pub metrics: Metrics,
    pub rest: Arc<RestSettings>,
    /// Whether this listener's address is a loopback one (writes need less protection there).
    pub loopback: bool,
    /// Whether this listener serves HTTPS.
    pub tls: bool,
}

/// The REST API's settings, from the config and the command line.
#[derive(Debug, Clone, Default)]
pub struct RestSettings {
    /// `--authentication` and `--authorization`.
    pub protection: authz::Protection,
    /// The document `POST /` evaluates (`default_decision`), a slash path.
    pub default_decision: String,
    /// The document that authorizes every call (`default_authorization_decision`).
    pub authorization_decision: String,
    /// The config as `/v1/config` answers it (secrets removed).
    pub config: Json,
    /// OPA's `labels` (`id`, `version`, the config's).
    pub labels: Json,
    /// Whether decision logging is configured (for `/v1/status`).
    pub decision_logs: bool,
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
        let data = || {
            get(data::v1_get)
                .post(data::v1_post)
                .put(data::put)
                .patch(data::patch)
                .delete(data::delete)
        };
        router = router
            .route("/", post(data::default_decision))
            .route("/v0/data", post(data::v0_post))
            .route("/v0/data/", post(data::v0_post))
            .route("/v0/data/{*path}", post(data::v0_post))
            .route("/v1/data", data())
            .route("/v1/data/", data())
            .route("/v1/data/{*path}", data())
            .route("/v1/policies", get(policies::list))
            .route(
                "/v1/policies/{*id}",
                get(policies::get)
                    .put(policies::put)
                    .delete(policies::delete),
            )
            .route("/v1/query", get(query::get).post(query::post))
            .route("/v1/config", get(config::get_config))
            .route("/v1/status", get(config::get_status))
            .route("/.well-known/jwks.json", get(jwks))
            .route(
                "/.well-known/openid-configuration",
                get(openid_configuration),
            );
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authz::authorize,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` resolves, over TLS when `tls` is set (each
/// request then carries the connection's [`TlsPeer`](crate::tls::TlsPeer) as `ConnectInfo`).
/// On a loopback address only loopback `Host` names are answered (403 otherwise): a web page
/// whose name an attacker rebinds to 127.0.0.1 must not read decisions and data through the
/// user's browser.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = if listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
        router.layer(axum::middleware::from_fn(loopback_hosts_only))
    } else {
        router
    };
    let result = match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let listener = match crate::tls::TlsListener::new(listener, tls, "http") {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "HTTP server failed");
                    return;
                }
            };
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<crate::tls::TlsPeer>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    };
    if let Err(e) = result {
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
    let scheme = if app.tls { "https" } else { "http" };
    let jwks_uri = format!("{scheme}://{}/.well-known/jwks.json", host.as_str());
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

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}
