//! The gateway: Portcullis' own gRPC API (`proto/portcullis/v1`), gRPC-Web on the same port,
//! health and reflection.
//!
//! - [`pb`]       the generated messages, clients and servers; JSON ↔ `google.protobuf.Value`
//! - [`config`]   the `gateway:` section and the caller authentication mode
//! - [`caller`]   credentials → [`Caller`]; gateway JWTs; delegation
//! - [`access`]   the one table of RPC → read/readwrite, and request target scopes
//! - [`layer`]    the tower layer that authenticates every call against that table
//! - [`decision`], [`policy`], [`data`], [`logs`], [`tokens`], [`status`]: one file per
//!   service; thin handlers ([`revocations`]: `AuthService`'s token revocation RPCs)
//!
//! Errors become `tonic::Status` in `crate::grpc::status`.

pub mod access;
pub mod caller;
pub(crate) mod claims;
pub(crate) mod config;
pub(crate) mod data;
pub(crate) mod decision;
mod error;
pub(crate) mod layer;
pub mod logs;
pub mod pb;
pub(crate) mod policy;
pub(crate) mod revocations;
pub(crate) mod scope;
pub(crate) mod status;
pub(crate) mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderName;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Request;
use tonic_health::ServingStatus;

pub use caller::{Authenticator, Caller};
pub use config::{AuthMode, GatewayConfig};
pub use error::GatewayError;

use crate::decision_log::DecisionLog;
use crate::namespaces::Namespaces;

/// What the gateway's handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namespaces: Arc<Namespaces>,
    auth: Arc<Authenticator>,
    log: DecisionLog,
    decision_path: String,
    started: Instant,
    max_token_ttl: u64,
    cors_origins: Vec<String>,
    /// Open mode without `allow_open`: only loopback `Host`s.
    loopback_only: bool,
    /// Set when the gateway shuts down, so that open streams end.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Authentication (OIDC trust) and internal-token keys, when configured.
    security: Option<Arc<crate::authz::security::Security>>,
    /// The API key store the gateway manages, when configured.
    api_keys: Option<tokens::ApiKeys>,
}

impl Gateway {
    /// A gateway over `namespaces`. `decision_path` is the default for `Decide`; `security`
    /// (OIDC trust, internal-token keys) and `api_keys` (the managed key store) come from the
    /// authentication module when it is configured.
    pub fn new(
        namespaces: Arc<Namespaces>,
        auth: Authenticator,
        log: DecisionLog,
        decision_path: impl Into<String>,
        config: &GatewayConfig,
        security: Option<Arc<crate::authz::security::Security>>,
        api_keys: Option<tokens::ApiKeys>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespaces,
                auth: Arc::new(auth),
                log,
                decision_path: decision_path.into(),
                started: Instant::now(),
                max_token_ttl: config.max_token_ttl_seconds,
                cors_origins: config.cors_origins.clone(),
                loopback_only: !config.allow_open,
                stopping: tokio::sync::watch::channel(false).0,
                security,
                api_keys,
            }),
        }
    }

    pub(crate) fn security(&self) -> Option<&Arc<crate::authz::security::Security>> {
        self.inner.security.as_ref()
    }

    pub(crate) fn api_keys(&self) -> Option<&tokens::ApiKeys> {
        self.inner.api_keys.as_ref()
    }

    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.inner.namespaces
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.inner.auth
    }

    pub fn log(&self) -> &DecisionLog {
        &self.inner.log
    }

    pub fn decision_path(&self) -> &str {
        &self.inner.decision_path
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    pub fn max_token_ttl(&self) -> u64 {
        self.inner.max_token_ttl
    }

    /// Resolves when the gateway starts shutting down.
    pub(crate) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// The caller the auth layer put into the request.
pub(crate) fn caller_of<T>(req: &Request<T>) -> Result<Caller, GatewayError> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(GatewayError::Unauthenticated)
}

/// The CORS layer: only the configured origins, only what gRPC-Web needs.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let list: Vec<http::HeaderValue> = origins
        .iter()
        .filter_map(|o| http::HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Serves the gateway on `listener` until `shutdown` resolves: gRPC over HTTP/2 and gRPC-Web
/// over HTTP/1.1 on the same port, behind CORS and the auth layer, plus health and reflection.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_tls(gateway, listener, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is set (`gateway.tls`): the client certificate it verifies
/// is what the `client_cert` caller mode reads.
pub async fn serve_tls(
    gateway: Gateway,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use pb::data_service_server::DataServiceServer;
    use pb::decision_log_service_server::DecisionLogServiceServer;
    use pb::decision_service_server::DecisionServiceServer;
    use pb::policy_service_server::PolicyServiceServer;
    use pb::status_service_server::StatusServiceServer;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DecisionServiceServer<decision::Service>>()
        .await;
    health
        .set_serving::<PolicyServiceServer<policy::Service>>()
        .await;
    health
        .set_serving::<DataServiceServer<data::Service>>()
        .await;
    health
        .set_serving::<DecisionLogServiceServer<logs::Service>>()
        .await;
    health
        .set_serving::<pb::auth_service_server::AuthServiceServer<tokens::Service>>()
        .await;
    health
        .set_serving::<StatusServiceServer<status::Service>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    // Both reflection versions: grpcurl before 1.9 asks v1alpha.
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection, reflection_alpha) = match (builder().build_v1(), builder().build_v1alpha()) {
        (Ok(v1), Ok(alpha)) => (Some(v1), Some(alpha)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "gateway reflection is unavailable");
            (None, None)
        }
    };

    let g = &gateway;
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(cors(&g.inner.cors_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(layer::AuthLayer::new(
            g.inner.auth.clone(),
            layer::Origins::new(
                g.inner.cors_origins.clone(),
                g.inner.loopback_only && *g.inner.auth.mode() == AuthMode::Open,
            ),
        ))
        .add_service(DecisionServiceServer::new(decision::Service(g.clone())))
        .add_service(PolicyServiceServer::new(policy::Service(g.clone())))
        .add_service(DataServiceServer::new(data::Service(g.clone())))
        .add_service(DecisionLogServiceServer::new(logs::Service(g.clone())))
        .add_service(pb::auth_service_server::AuthServiceServer::new(
            tokens::Service(g.clone()),
        ))
        .add_service(StatusServiceServer::new(status::Service(g.clone())))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_optional_service(reflection_alpha);
    let stopping = gateway.inner.stopping.clone();
    let stop = async move {
        shutdown.await;
        stopping.send_replace(true);
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    };
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                .await
        }
        Some(tls) => {
            let incoming = crate::tls::accept(tls, "gateway", TcpListenerStream::new(listener));
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
    }
}
