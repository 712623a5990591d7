//! The HTTP authorization listener (`plugins.envoy_ext_authz_http`): proxies that ask an
//! authorizer over plain HTTP — Envoy's `http_service`, NGINX `auth_request`, Traefik
//! ForwardAuth, Caddy `forward_auth` — get the same Check path as Envoy's gRPC `Check`.
//!
//! Each authorization request is translated into an Envoy `CheckRequest` (the original method,
//! path, host, scheme, headers and optionally body, and the TCP peers as `source` and
//! `destination`), decided by the one [`Pipeline`](super::pipeline::Pipeline) through
//! [`AuthzService::check_in`] (which records metrics, the trace span and the decision log), and
//! the `CheckResponse` is translated back:
//!
//! - **allowed**: `200` with the decision's request headers (and the internal token) as
//!   response headers, for the proxy to copy upstream; headers the decision removes are named
//!   in `x-envoy-auth-headers-to-remove` (which Envoy applies; other proxies overwrite the
//!   headers they copy).
//! - **denied**: the decision's status (403 unless it says otherwise), headers and body.
//! - **error** (evaluation error, undefined or malformed decision): `500` with a JSON body
//!   naming only the reason code; the message is in the server's log.
//! - **refused** before the policy (the original request cannot be read, or is ambiguous):
//!   `400` (`403` when the proxy's original-URI header is missing; `404` outside
//!   `path_prefix`; `408` body too slow; `431` headers too large) with a plain-text reason.
//!
//! # Trust
//!
//! The forwarding headers (`X-Original-URI`, `X-Forwarded-Uri`, …) say what the request *is*;
//! they are only true because the proxy sets them. The listener must be reachable from the
//! proxy alone. Headers the policy could be fooled by are refused rather than guessed: any of
//! them twice, both families in `auto` mode, an original URI that is not origin-form (`/…`),
//! that is not printable ASCII, or whose decoded path has `.`/`..` or empty segments (a proxy
//! routes on the normalised path; the policy would read the raw one).
//!
//! What the policy sees: every header the proxy sent to the listener (the forwarding headers
//! included, hop-by-hop headers excluded), plus `:authority`, `:method`, `:path` and, when
//! known, `:scheme` for the original request; duplicate headers joined with `,` as Envoy does.
//! `attributes.source` is the proxy (the TCP peer); the client's address is whatever the proxy
//! puts in `x-forwarded-for` / `x-real-ip`.

pub mod config;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderValueOption, SocketAddress};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::Timestamp;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tracing::Instrument as _;
use tracing::field::Empty;

pub use config::{HttpAuthzConfig, Mode};

use super::error::CheckError;
use super::service::AuthzService;
use crate::telemetry::trace;

/// Hop-by-hop headers: about the connection to the listener, not the original request; the
/// policy does not see them and a decision cannot set them.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Traefik's and Caddy's forwarding headers.
const FWD_METHOD: &str = "x-forwarded-method";
const FWD_URI: &str = "x-forwarded-uri";
const FWD_HOST: &str = "x-forwarded-host";
const FWD_PROTO: &str = "x-forwarded-proto";
/// Envoy's: the headers an `http_service` authorizer asks Envoy to remove upstream.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";
/// Envoy's: the body was cut at the limit.
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// A request answered before the policy: why, and with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = (self.status, format!("portcullis: {}\n", self.message)).into_response();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

/// The original request as the proxy describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// The mode that read it (never `auto`).
    pub mode: Mode,
    pub method: String,
    /// Path and query, origin-form.
    pub target: String,
    pub host: String,
    pub scheme: String,
}

/// What the listener serves from.
#[derive(Debug)]
struct Listener {
    service: AuthzService,
    config: HttpAuthzConfig,
    local: Option<SocketAddr>,
}

/// Serves the HTTP authorization listener on `listener` until `shutdown` resolves, over TLS
/// when `tls` is set (a verified client certificate is then `input.tls_client`).
pub async fn serve(
    service: AuthzService,
    config: HttpAuthzConfig,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let state = Arc::new(Listener {
        service,
        config,
        local: listener.local_addr().ok(),
    });
    let router = Router::new().fallback(handle).with_state(state);
    let result = match tls {
        None => {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        Some(tls) => match crate::tls::TlsListener::new(listener, tls, "ext_authz_http") {
            Ok(listener) => {
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<crate::tls::TlsPeer>(),
                )
                .with_graceful_shutdown(shutdown)
                .await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP authorization listener failed");
    }
}

/// The TCP peer and, over TLS, the verified client certificate of a request's connection.
fn connection(
    extensions: &http::Extensions,
) -> (SocketAddr, Option<Arc<crate::tls::ClientIdentity>>) {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<crate::tls::TlsPeer>>() {
        return (peer.remote_addr.unwrap_or(unknown), peer.client.clone());
    }
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(unknown, |c| c.0);
    (peer, None)
}

async fn handle(State(state): State<Arc<Listener>>, req: Request) -> Response {
    let (peer, client) = connection(req.extensions());
    let (parts, body) = req.into_parts();
    let check = match to_check(&parts, peer, state.local, &state.config) {
        Ok(c) => c,
        Err(refusal) => {
            tracing::info!(status = refusal.status.as_u16(), reason = %refusal.message, "HTTP authorization request refused");
            return refusal.into_response();
        }
    };
    let mut check = check;
    if let Some(limit) = state.config.body_limit() {
        let timeout = Duration::from_millis(state.config.body_timeout_ms);
        match tokio::time::timeout(timeout, read_body(body, limit)).await {
            Ok(Ok((bytes, truncated))) => set_body(&mut check, bytes, truncated),
            Ok(Err(e)) => {
                return Refusal::bad(format!("cannot read the body: {e}")).into_response();
            }
            Err(_) => {
                return Refusal {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: "the body did not arrive in time".into(),
                }
                .into_response();
            }
        }
    }
    let span = tracing::debug_span!(
        "ext_authz.check",
        otel.kind = "server",
        http.request.method = Empty,
        decision.id = Empty,
        decision.outcome = Empty,
        error.reason = Empty,
        otel.status_code = Empty,
    );
    if !span.is_disabled()
        && let Some(http) = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
    {
        span.record("http.request.method", http.method.as_str());
        trace::set_remote_parent(&span, &http.headers);
    }
    let result = state
        .service
        .check_in(&check, client.as_deref(), &span)
        .instrument(span.clone())
        .await;
    answer(result)
}

/// Reads at most `limit` bytes of `body`; whether it was longer.
async fn read_body(body: Body, limit: usize) -> Result<(Bytes, bool), axum::Error> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf.freeze(), true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), false))
}

fn set_body(check: &mut CheckRequest, bytes: Bytes, truncated: bool) {
    let Some(http) = check
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    else {
        return;
    };
    // Ours, not the sender's: whether the body was cut here.
    http.headers.insert(
        PARTIAL_BODY.into(),
        if truncated { "true" } else { "false" }.into(),
    );
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => http.body = text,
        Err(_) => http.raw_body = bytes.to_vec(),
    }
}

/// The one value of header `name`, if any; refused when sent twice or not printable ASCII.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::bad(format!(
            "{name} is sent more than once; the proxy must set it exactly once"
        )));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Refusal::bad(format!("{name} is not printable ASCII")))
}

/// The original request, read as `config.mode` says.
pub fn original(
    parts: &http::request::Parts,
    config: &HttpAuthzConfig,
) -> Result<Original, Refusal> {
    let h = &parts.headers;
    let uri_header = config.original_uri_header.as_str();
    let (routed, prefix) = config.route(parts.uri.path()).ok_or_else(|| Refusal {
        status: StatusCode::NOT_FOUND,
        message: "no route's path_prefix serves this path".into(),
    })?;
    let mode = match routed {
        Mode::Auto => match (h.contains_key(FWD_URI), h.contains_key(uri_header)) {
            (true, true) => {
                return Err(Refusal::bad(format!(
                    "both {FWD_URI} and {uri_header} are present: which proxy sent this is \
                     ambiguous (set plugins.envoy_ext_authz_http.mode)"
                )));
            }
            (true, false) => Mode::ForwardAuth,
            (false, true) => Mode::Nginx,
            (false, false) => Mode::Envoy,
        },
        m => m,
    };
    let host_header = || single(h, http::header::HOST.as_str());
    let scheme = single(h, FWD_PROTO)?.unwrap_or_default().to_string();
    let (method, target, host) = match mode {
        Mode::Envoy | Mode::Auto => {
            if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
                return Err(Refusal::bad(
                    "the request target is absolute-form; expected the original path",
                ));
            }
            let target = parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string();
            let target = strip_prefix(&target, prefix).ok_or_else(|| Refusal {
                status: StatusCode::NOT_FOUND,
                message: format!("the path is not under path_prefix {prefix:?}"),
            })?;
            (
                parts.method.as_str().to_string(),
                target,
                host_header()?.unwrap_or_default().to_string(),
            )
        }
        Mode::Nginx => {
            let target = single(h, uri_header)?.ok_or_else(|| Refusal {
                status: StatusCode::FORBIDDEN,
                message: format!("{uri_header} is missing: the proxy must send the original URI"),
            })?;
            let method = match single(h, &config.original_method_header)? {
                Some(m) => m,
                None => parts.method.as_str(),
            };
            let host = match single(h, &config.original_host_header)? {
                Some(host) => host,
                None => host_header()?.unwrap_or_default(),
            };
            (method.to_string(), target.to_string(), host.to_string())
        }
        Mode::ForwardAuth => {
            let target =
                single(h, FWD_URI)?.ok_or_else(|| Refusal::bad(format!("{FWD_URI} is missing")))?;
            let method = single(h, FWD_METHOD)?
                .ok_or_else(|| Refusal::bad(format!("{FWD_METHOD} is missing")))?;
            let host = match single(h, FWD_HOST)? {
                Some(host) => host,
                None => host_header()?.unwrap_or_default(),
            };
            (method.to_string(), target.to_string(), host.to_string())
        }
    };
    if method.is_empty() || http::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(Refusal::bad(format!("{method:?} is not an HTTP method")));
    }
    check_target(&target)?;
    if host.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(Refusal::bad("the original host is not printable ASCII"));
    }
    if !matches!(scheme.as_str(), "" | "http" | "https") {
        return Err(Refusal::bad(format!(
            "{FWD_PROTO} {scheme:?} is not http or https"
        )));
    }
    Ok(Original {
        mode,
        method,
        target,
        host,
        scheme,
    })
}

/// `target` below `prefix` (`/` when nothing is left of the path).
fn strip_prefix(target: &str, prefix: &str) -> Option<String> {
    let rest = target.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('?') {
        Some(format!("/{rest}"))
    } else if rest.starts_with('/') {
        Some(rest.to_string())
    } else {
        None
    }
}

/// An origin-form target whose decoded path has no `.`, `..` or inner empty segments.
fn check_target(target: &str) -> Result<(), Refusal> {
    if !target.starts_with('/') {
        return Err(Refusal::bad(
            "the original URI must be a path starting with / (origin-form)",
        ));
    }
    if target.bytes().any(|b| !b.is_ascii_graphic()) || target.contains('#') {
        return Err(Refusal::bad(
            "the original URI has spaces, control characters, non-ASCII bytes or a fragment",
        ));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let decoded = crate::gourl::unescape(path.as_bytes(), false).map_err(|bad| {
        Refusal::bad(format!(
            "invalid escape {:?} in the path",
            String::from_utf8_lossy(&bad)
        ))
    })?;
    let segments: Vec<&[u8]> = decoded.split(|b| *b == b'/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, s) in segments.iter().enumerate() {
        if *s == b"." || *s == b".." || (s.is_empty() && i != last) {
            return Err(Refusal::bad(
                "the original path has `.`, `..` or empty segments (also percent-encoded): \
                 the proxy would route it elsewhere than the policy reads it",
            ));
        }
    }
    Ok(())
}

/// The `CheckRequest` for an authorization request (without its body).
pub fn to_check(
    parts: &http::request::Parts,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    config: &HttpAuthzConfig,
) -> Result<CheckRequest, Refusal> {
    let size: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if size > config.max_header_bytes {
        return Err(Refusal {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!(
                "the headers take {size} bytes; at most {} are read",
                config.max_header_bytes
            ),
        });
    }
    let orig = original(parts, config)?;
    let mut headers: HashMap<String, String> = HashMap::with_capacity(parts.headers.keys_len() + 4);
    for name in parts.headers.keys() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let mut joined = String::new();
        for v in parts.headers.get_all(name) {
            let v = v
                .to_str()
                .map_err(|_| Refusal::bad(format!("header {name} is not printable ASCII")))?;
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(v);
        }
        headers.insert(name.as_str().to_string(), joined);
    }
    headers.insert(":authority".into(), orig.host.clone());
    headers.insert(":method".into(), orig.method.clone());
    headers.insert(":path".into(), orig.target.clone());
    if !orig.scheme.is_empty() {
        headers.insert(":scheme".into(), orig.scheme.clone());
    }
    let size = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer_of(peer)),
            destination: local.map(peer_of),
            request: Some(AttrRequest {
                time: Some(Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                http: Some(HttpRequest {
                    method: orig.method,
                    path: orig.target,
                    host: orig.host,
                    scheme: orig.scheme,
                    headers,
                    size,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    })
}

fn peer_of(addr: SocketAddr) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// The HTTP answer for a Check's result.
pub fn answer(result: Result<CheckResponse, CheckError>) -> Response {
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => return error_answer(e.reason().as_str()),
    };
    let allowed = resp.status.as_ref().is_none_or(|s| s.code == 0);
    match resp.http_response {
        Some(HttpResponse::OkResponse(ok)) if allowed => {
            let mut out = Response::new(Body::empty());
            *out.status_mut() = StatusCode::OK;
            for h in &ok.headers {
                if let Err(why) = add_header(out.headers_mut(), h) {
                    tracing::warn!(error = %why, "the decision's header cannot be sent over HTTP");
                    return error_answer("envoyauth_result_error");
                }
            }
            if !ok.headers_to_remove.is_empty() {
                let names = ok.headers_to_remove.join(",");
                match HeaderValue::from_str(&names) {
                    Ok(v) => {
                        out.headers_mut().insert(HEADERS_TO_REMOVE, v);
                    }
                    Err(_) => {
                        tracing::warn!("the decision's headers to remove cannot be sent over HTTP");
                        return error_answer("envoyauth_result_error");
                    }
                }
            }
            out
        }
        Some(HttpResponse::DeniedResponse(denied)) if !allowed => {
            let status = denied
                .status
                .as_ref()
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|s| !s.is_informational() && *s != StatusCode::OK && s.as_u16() != 0)
                .unwrap_or(StatusCode::FORBIDDEN);
            let mut out = Response::new(Body::from(denied.body));
            *out.status_mut() = status;
            for h in &denied.headers {
                // A denial stays a denial: a header that cannot be sent is left out.
                if let Err(why) = add_header(out.headers_mut(), h) {
                    tracing::warn!(error = %why, "a header of the denial cannot be sent over HTTP");
                }
            }
            out
        }
        _ if allowed => StatusCode::OK.into_response(),
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

/// 500 with `{"error": reason}`: the reason code only, never the message (the proxy may show
/// this body to the client).
fn error_answer(reason: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": reason }).to_string(),
    )
        .into_response()
}

fn add_header(headers: &mut HeaderMap, h: &HeaderValueOption) -> Result<(), String> {
    let Some(hv) = &h.header else {
        return Ok(());
    };
    let name = HeaderName::from_bytes(hv.key.as_bytes())
        .map_err(|_| format!("{:?} is not a header name", hv.key))?;
    if HOP_BY_HOP.contains(&name.as_str()) || name == http::header::CONTENT_LENGTH {
        return Err(format!("{name} is about the connection, not the request"));
    }
    let value = if hv.raw_value.is_empty() {
        HeaderValue::from_str(&hv.value)
    } else {
        HeaderValue::from_bytes(&hv.raw_value)
    }
    .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    headers.append(name, value);
    Ok(())
}

#[cfg(test)]
mod tests;
