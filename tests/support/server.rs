//! The real server on ephemeral loopback ports: [`Spec`] says what to serve, [`Prepared`] is the
//! server's directory with its config and policies loaded, [`TestServer`] the running server.
//! [`TestServer::start`] goes through all three; the harnesses that wire more into the app
//! (authentication, the gateway, the security suite's sidecar) call the steps themselves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::authn::audit::AuditLog;
use portcullis::authz::security::Security;
use portcullis::config::Config;
use portcullis::decision_log::DecisionLog;
use portcullis::env::Env;
use portcullis::policy::{LoadSpec, PolicyStore};
use portcullis::server::{self, App, AppBuilder, GrpcListener, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// What to serve.
#[derive(Default)]
pub struct Spec<'a> {
    /// (file name, Rego text), written into the server's directory
    pub policies: Vec<(&'a str, &'a str)>,
    /// data.json contents
    pub data: Option<serde_json::Value>,
    /// config YAML
    pub config: &'a str,
    /// `--set` overrides
    pub sets: Vec<String>,
    /// extra files or directories to load (before `policies` and `data`)
    pub paths: Vec<PathBuf>,
    /// bundle directories or archives (`--bundle`)
    pub bundle_paths: Vec<PathBuf>,
    /// the config's `bundles` are awaited: the store is ready once each has been activated
    pub remote_bundles: bool,
    /// decision log sink
    pub log: Option<DecisionLog>,
    /// also serve health and metrics on a diagnostic listener (`--diagnostic-addr`)
    pub diagnostic: bool,
    /// the server's directory, when the caller has put files in it (default: a fresh one)
    pub dir: Option<tempfile::TempDir>,
}

/// A server's directory with its files written (`config.yaml`, the policies, `data.json`), the
/// config loaded and the policies compiled: everything but the app.
pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub store: Arc<PolicyStore>,
    log: DecisionLog,
    diagnostic: bool,
}

impl Prepared {
    /// Writes and loads `spec`; fails with the error start-up would stop with (config, policies).
    pub fn new(spec: Spec<'_>) -> Result<Self, String> {
        let dir = match spec.dir {
            Some(dir) => dir,
            None => tempfile::tempdir().expect("tempdir"),
        };
        let mut paths = spec.paths;
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
        let config = Config::load(Some(&cfg_path), &spec.sets).map_err(|e| e.to_string())?;
        let remote_bundles = if spec.remote_bundles {
            config.bundles.keys().cloned().collect()
        } else {
            Vec::new()
        };
        let store = PolicyStore::load_with(
            LoadSpec {
                paths,
                bundle_paths: spec.bundle_paths,
                remote_bundles,
            },
            server::policy_options(&config),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            dir,
            config,
            store: Arc::new(store),
            log: spec.log.unwrap_or_default(),
            diagnostic: spec.diagnostic,
        })
    }

    /// The app's builder with the spec's decision log; add security or the environment, build.
    pub fn app(&self) -> AppBuilder<'_> {
        App::builder(&self.config, self.store.clone()).log(self.log.clone())
    }

    /// Authentication and internal tokens from the config, auditing to `audit` (for
    /// [`AppBuilder::security`]).
    pub fn security(&self, audit: &AuditLog, env: &dyn Env) -> Result<Arc<Security>, String> {
        Security::build(
            self.config.authentication.as_ref(),
            self.config.internal_token.as_ref(),
            audit.clone(),
            env,
        )
        .map(Arc::new)
        .map_err(|e| e.to_string())
    }

    /// Serves `app` on loopback port 0: ext_authz and the HTTP API, the gateway when the app
    /// has one, the diagnostic listener when the spec asked for it.
    pub async fn serve(self, app: App) -> TestServer {
        let grpc = loopback().await;
        let http = loopback().await;
        let gateway = match app.gateway {
            Some(_) => Some(loopback().await),
            None => None,
        };
        let ext_authz_http = match app.ext_authz_http {
            Some(_) => Some(loopback().await),
            None => None,
        };
        let ext_proc = match app.ext_proc {
            Some(_) => Some(loopback().await),
            None => None,
        };
        let diagnostic = if self.diagnostic {
            Some(loopback().await)
        } else {
            None
        };
        let addr = |l: &TcpListener| l.local_addr().expect("addr");
        let grpc_addr = addr(&grpc);
        let http_addr = addr(&http);
        let gateway_addr = gateway.as_ref().map(addr);
        let diagnostic_addr = diagnostic.as_ref().map(addr);
        let ext_authz_http_addr = ext_authz_http.as_ref().map(addr);
        let ext_proc_addr = ext_proc.as_ref().map(addr);
        let running = Running::spawn(
            app,
            Listeners {
                ext_authz: GrpcListener::Tcp(grpc),
                http: Some(http),
                diagnostic,
                gateway,
                ext_authz_http,
                ext_proc: ext_proc.map(GrpcListener::Tcp),
            },
        );
        TestServer {
            running,
            grpc_addr,
            http_addr,
            gateway_addr,
            diagnostic_addr,
            ext_authz_http_addr,
            ext_proc_addr,
            store: self.store,
            dir: self.dir,
        }
    }
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// A running server. Dropping it without `stop` still shuts it down.
pub struct TestServer {
    // First, so that a drop starts the shutdown before the directory goes.
    running: Running,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// When the config has a `gateway` section.
    pub gateway_addr: Option<SocketAddr>,
    /// When the spec asked for it.
    pub diagnostic_addr: Option<SocketAddr>,
    /// When the config has `plugins.envoy_ext_authz_http`.
    pub ext_authz_http_addr: Option<SocketAddr>,
    /// When the config has `plugins.envoy_ext_proc_grpc`.
    pub ext_proc_addr: Option<SocketAddr>,
    pub store: Arc<PolicyStore>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Serves `spec` with the app its config describes.
    pub async fn start(spec: Spec<'_>) -> Self {
        let prepared =
            Prepared::new(spec).unwrap_or_else(|e| panic!("the server did not start: {e}"));
        let app = prepared.app().build().expect("app from config");
        prepared.serve(app).await
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// `server::run` on a task, until `stop` (which waits for it to finish) or a drop.
pub struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Running {
    pub fn spawn(app: App, listeners: Listeners) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(app, listeners, async move {
            let _ = rx.await;
        }));
        Self {
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Shuts the server down and waits until it has, failing if it failed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves an axum router (a test's fake JWKS or bundle server) on `listener` until the returned
/// sender is sent to or dropped.
pub fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    tx
}
