//! The tower layer that authenticates every gateway call before it reaches a handler.
//!
//! It looks the gRPC path up in the [`Rpc`] table: a public RPC passes as is; any other
//! `portcullis.v1` RPC needs credentials that the [`Authenticator`] accepts, and the resulting
//! [`Caller`] goes into the request's extensions for the handler's scope check. A path under
//! `/portcullis.v1.` that is not in the table is refused (UNIMPLEMENTED) here, so an RPC added
//! to the protos without a table entry can never be reached unauthenticated. Health and
//! reflection pass. Failures answer UNAUTHENTICATED with one generic message; the reason is
//! logged at debug level, never the credential.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;

use super::access::{Access, Rpc};
use super::caller::Authenticator;

/// The message of every UNAUTHENTICATED answer.
pub const UNAUTHENTICATED: &str = "authentication required";

/// Adds [`Authenticate`] around the gateway's routes.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
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
                match self.auth.authenticate(header) {
                    Ok(caller) => {
                        tracing::debug!(
                            gateway.rpc = rpc.path(),
                            authn.method = caller.method.name(),
                            authn.subject = %caller.subject,
                            "gateway call"
                        );
                        req.extensions_mut().insert(caller);
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
        // The clone that was driven to readiness serves this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}
