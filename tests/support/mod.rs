//! Test support: a real Portcullis server on ephemeral loopback ports, stopped by a oneshot.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::config::Config;
use portcullis::decision_log::DecisionLog;
use portcullis::policy::PolicyStore;
use portcullis::server::{self, App, GrpcListener, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A running server. Dropping it without `stop` still shuts it down.
pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub store: Arc<PolicyStore>,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

/// What to serve.
#[derive(Default)]
pub struct Spec<'a> {
    /// (file name, Rego text)
    pub policies: Vec<(&'a str, &'a str)>,
    /// data.json contents
    pub data: Option<serde_json::Value>,
    /// config YAML
    pub config: &'a str,
    /// `--set` overrides
    pub sets: Vec<String>,
    /// extra files or directories to load
    pub paths: Vec<PathBuf>,
    /// decision log sink
    pub log: Option<DecisionLog>,
}

impl TestServer {
    pub async fn start(spec: Spec<'_>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = spec.paths.clone();
        for (name, text) in &spec.policies {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write policy");
            paths.push(p);
        }
        if let Some(data) = &spec.data {
            let p = dir.path().join("data.json");
            std::fs::write(&p, serde_json::to_vec(data).expect("data json")).expect("write data");
            paths.push(p);
        }
        let cfg_path = dir.path().join("config.yaml");
        std::fs::write(&cfg_path, spec.config).expect("write config");
        let config = Config::load(Some(&cfg_path), &spec.sets).expect("valid config");
        let store = Arc::new(
            PolicyStore::load(paths, server::policy_options(&config)).expect("policies load"),
        );
        let app = App::builder(&config, store.clone())
            .log(spec.log.unwrap_or_default())
            .build()
            .expect("app from config");
        Self::serve(app, store, dir).await
    }

    pub async fn serve(app: App, store: Arc<PolicyStore>, dir: tempfile::TempDir) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc_addr = grpc.local_addr().expect("addr");
        let http_addr = http.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(
            app,
            Listeners {
                ext_authz: GrpcListener::Tcp(grpc),
                http: Some(http),
                diagnostic: None,
                gateway: None,
            },
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            grpc_addr,
            http_addr,
            store,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A minimal HTTP/1.1 client: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(
            body.unwrap_or("").to_string(),
        )))
        .expect("request");
    let resp = client.request(req).await.expect("http request");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A child process (the `portcullis` binary), killed on drop so that a failed test leaks none.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
