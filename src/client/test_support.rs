//! Test-only Check servers with scripted answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

type Script = dyn Fn(u64) -> Result<CheckResponse, Status> + Send + Sync;

/// Answers the n-th Check (from 0) with `script(n)`.
pub struct ScriptedService {
    calls: AtomicU64,
    script: Arc<Script>,
}

fn with_code(code: i32) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus {
            code,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl ScriptedService {
    pub fn new(
        script: impl Fn(u64) -> Result<CheckResponse, Status> + Send + Sync + 'static,
    ) -> Self {
        ScriptedService {
            calls: AtomicU64::new(0),
            script: Arc::new(script),
        }
    }

    /// Always denies with PERMISSION_DENIED.
    pub fn deny() -> Self {
        Self::new(|_| Ok(with_code(7)))
    }

    /// OK, PERMISSION_DENIED, an INTERNAL gRPC error, and again.
    pub fn cycle_ok_denied_error() -> Self {
        Self::new(|n| match n % 3 {
            0 => Ok(with_code(0)),
            1 => Ok(with_code(7)),
            _ => Err(Status::internal("scripted failure")),
        })
    }
}

#[tonic::async_trait]
impl Authorization for ScriptedService {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        (self.script)(n).map(Response::new)
    }
}

/// Serves `service` on a free loopback port until the sender is used or dropped.
pub async fn serve_scripted(
    service: ScriptedService,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(service))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            }),
    );
    (addr, tx)
}
