//! `portcullis bench floor`: a Check server that does nothing and always allows.
//!
//! It answers every Check with `status: {code: 0}` and nothing else, on a plain tonic server
//! with no layers: what is left is the cost of gRPC, HTTP/2 and protobuf decoding, the floor a
//! real ext_authz server can be compared with.

use std::future::Future;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Flags of `bench floor`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Address to listen on, HOST:PORT (`:PORT` is all interfaces).
    #[arg(long, default_value = "127.0.0.1:9292", value_name = "HOST:PORT")]
    pub addr: String,
}

/// A failure of the floor server.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The shutdown signals cannot be watched.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    /// The server failed.
    #[error("floor server failed: {0}")]
    Serve(String),
}

impl FloorError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

/// The no-op Authorization service.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloorService;

#[tonic::async_trait]
impl Authorization for FloorService {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: None,
            dynamic_metadata: None,
        }))
    }
}

/// Serves the no-op service on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FloorError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(AuthorizationServer::new(FloorService))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| FloorError::Serve(crate::client::transport::describe(&e).text))
}

/// `bench floor`: listens on `args.addr`, says so on stderr, and serves until SIGINT or SIGTERM.
pub async fn run(args: FloorArgs) -> Result<(), FloorError> {
    let addr = if args.addr.starts_with(':') {
        format!("0.0.0.0{}", args.addr)
    } else {
        args.addr.clone()
    };
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| FloorError::Bind {
            addr: args.addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_or_else(|_| addr.clone(), |a| a.to_string());
    let shutdown = shutdown_signal()?;
    eprintln!("floor: serving envoy.service.auth.v3.Authorization/Check on {local}");
    serve(listener, shutdown).await
}

/// Resolves on SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl Future<Output = ()>, FloorError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(FloorError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(FloorError::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
