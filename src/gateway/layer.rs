//! The tower layer that authenticates every gateway call before it reaches a handler.
//!
//! It looks the gRPC path up in the [`Rpc`] table: a public RPC passes as is; any other
//! `portcullis.v1` RPC needs credentials that the [`Authenticator`] accepts, and the resulting
//! [`Caller`] goes into the request's extensions for the handler's scope check. A path under
//! `/portcullis.v1.` that is not in the table is refused (UNIMPLEMENTED) here, so an RPC added
//! to the protos without a table entry can never be reached unauthenticated. Health and
//! reflection pass. Failures answer UNAUTHENTICATED with one generic message; the reason is
//! logged at debug level (a revoked token at info, with its SHA-256), never the credential.
//!
//! Then the request's origin is checked ([`Origins`]), against DNS rebinding and cross-site
//! calls from a browser:
//!
//! - a request with an `Origin` header (every browser request that could carry a side effect)
//!   passes only when that origin is in `gateway.cors_origins` or is the gateway's own
//!   (`Origin` and `Host` agree);
//! - in open mode (no credentials at all) and without `allow_open`, the `Host` must be a
//!   loopback name or address (`localhost`, `127.0.0.1`, `[::1]`): a page whose name an
//!   attacker rebinds to 127.0.0.1 sends its own `Host` and is refused, and so is any
//!   cross-origin browser request, listed or not.
//!
//! A refusal is PERMISSION_DENIED (`origin not allowed`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;

use super::access::{Access, Rpc};
use super::caller::{AuthError, Authenticator};
use crate::listen::is_loopback_authority;

/// The message of every UNAUTHENTICATED answer.
pub const UNAUTHENTICATED: &str = "authentication required";

/// Which origins may call (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Origins {
    allowed: Vec<String>,
    loopback_only: bool,
}

impl Origins {
    pub fn new(allowed: Vec<String>, loopback_only: bool) -> Self {
        Self {
            allowed,
            loopback_only,
        }
    }

    /// `Err` with the reason (for logs) when the request must be refused.
    pub fn check<B>(&self, req: &http::Request<B>) -> Result<(), &'static str> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
        if self.loopback_only && !host.as_deref().is_some_and(is_loopback_authority) {
            return Err("open mode serves loopback Host names only");
        }
        let Some(origin) = req.headers().get(http::header::ORIGIN) else {
            return Ok(());
        };
        let Ok(origin) = origin.to_str() else {
            return Err("malformed Origin");
        };
        if self.loopback_only {
            let loopback_origin = origin
                .split_once("://")
                .is_some_and(|(_, authority)| is_loopback_authority(authority));
            return if loopback_origin && same_origin(origin, host.as_deref()) {
                Ok(())
            } else {
                Err("open mode refuses cross-origin browser requests")
            };
        }
        if self.allowed.iter().any(|o| o == origin) || same_origin(origin, host.as_deref()) {
            Ok(())
        } else {
            Err("Origin is not in gateway.cors_origins")
        }
    }
}

/// `Origin: scheme://authority` names the same authority the request was sent to.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Adds [`Authenticate`] around the gateway's routes.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    origins: Arc<Origins>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, origins: Origins) -> Self {
        Self {
            auth,
            origins: Arc::new(origins),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            auth: self.auth.clone(),
            origins: self.origins.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
    origins: Arc<Origins>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Authenticate<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        let refuse = |status: Status| -> Self::Future {
            Box::pin(std::future::ready(Ok(status.into_http::<ResBody>())))
        };
        match Rpc::from_path(path) {
            Some(rpc) if rpc.access() == Access::Public => {}
            Some(rpc) => {
                let header = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                let client = crate::tls::client_of(req.extensions());
                match self.auth.authenticate_peer(header, client.as_deref()) {
                    Ok(caller) => {
                        tracing::debug!(
                            gateway.rpc = rpc.path(),
                            authn.method = caller.method.name(),
                            authn.subject = %caller.subject,
                            "gateway call"
                        );
                        req.extensions_mut().insert(caller);
                    }
                    Err(AuthError::Revoked { credential_sha256 }) => {
                        tracing::info!(
                            gateway.rpc = rpc.path(),
                            reason = crate::authn::REVOKED,
                            credential.sha256 = %credential_sha256,
                            "gateway caller refused"
                        );
                        return refuse(Status::unauthenticated(UNAUTHENTICATED));
                    }
                    Err(e) => {
                        tracing::debug!(gateway.rpc = rpc.path(), reason = %e, "gateway caller refused");
                        return refuse(Status::unauthenticated(UNAUTHENTICATED));
                    }
                }
            }
            None if path.starts_with("/portcullis.") => {
                return refuse(Status::unimplemented("unknown RPC"));
            }
            None => {}
        }
        if let Err(reason) = self.origins.check(&req) {
            tracing::info!(gateway.path = %req.uri().path(), reason, "gateway call refused by origin");
            return refuse(Status::permission_denied("origin not allowed"));
        }
        // The clone that was driven to readiness serves this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: Option<&str>, origin: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/portcullis.v1.StatusService/GetStatus");
        if let Some(h) = host {
            b = b.header("host", h);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn open_mode_refuses_rebinding_and_cross_origin() {
        let open = Origins::new(vec!["https://console.example.com".into()], true);
        assert!(open.check(&req(Some("127.0.0.1:9292"), None)).is_ok());
        assert!(
            open.check(&req(Some("localhost:9292"), Some("http://localhost:9292")))
                .is_ok()
        );
        assert!(open.check(&req(Some("evil.com:9292"), None)).is_err());
        assert!(
            open.check(&req(Some("evil.com:9292"), Some("http://evil.com:9292")))
                .is_err()
        );
        assert!(
            open.check(&req(
                Some("127.0.0.1:9292"),
                Some("https://console.example.com")
            ))
            .is_err()
        );
        assert!(open.check(&req(None, None)).is_err());
        let authed = Origins::new(vec!["https://console.example.com".into()], false);
        assert!(
            authed
                .check(&req(
                    Some("gw.example.com"),
                    Some("https://console.example.com")
                ))
                .is_ok()
        );
        assert!(
            authed
                .check(&req(Some("gw.example.com"), Some("https://gw.example.com")))
                .is_ok()
        );
        assert!(
            authed
                .check(&req(Some("gw.example.com"), Some("https://evil.com")))
                .is_err()
        );
        assert!(authed.check(&req(Some("gw.example.com"), None)).is_ok());
    }
}
