//! A real Portcullis for the attacker's tests: ext_authz, the HTTP API and (when the config has
//! a `gateway:` section) the gateway on loopback port 0, a decision log captured in memory, an
//! in-memory audit log, and the environment from a map.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use portcullis::authn::audit::AuditLog;
use portcullis::authz::security::Security;
use portcullis::config::Config;
use portcullis::decision_log::DecisionLog;
use portcullis::policy::PolicyStore;
use portcullis::server::{self, App, GrpcListener, Listeners};
use serde_json::Value as Json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::authn_common::{Answer, Req};

/// The text written to the console decision log, shared with the test.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What to serve. Every `{dir}` in the config and in file contents is the server's directory.
#[derive(Default)]
pub struct Setup<'a> {
    pub config: &'a str,
    /// (relative name, contents); `.rego` files and `data.json` are loaded as policy PATHs.
    pub files: Vec<(&'a str, String)>,
    pub env: Vec<(&'a str, &'a str)>,
}

pub struct Sidecar {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub gateway: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub log: DecisionLog,
    pub audit: AuditLog,
    pub store: Arc<PolicyStore>,
    captured: Captured,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Sidecar {
    /// The config as the server would load it, or the error it would stop with.
    pub fn config(setup: &Setup<'_>, dir: &std::path::Path) -> Result<Config, String> {
        let text = setup.config.replace("{dir}", &dir.display().to_string());
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).expect("write config");
        Config::load(Some(&path), &[]).map_err(|e| e.to_string())
    }

    /// Starts the server, or returns the start-up error (config, keys, files).
    pub async fn try_start(setup: Setup<'_>) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let mut paths = Vec::new();
        for (name, text) in &setup.files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, text.replace("{dir}", &d)).expect("write file");
            if name.ends_with(".rego") || *name == "data.json" {
                paths.push(p);
            }
        }
        let config = Self::config(&setup, dir.path())?;
        let store = Arc::new(
            PolicyStore::load(paths, server::policy_options(&config)).map_err(|e| e.to_string())?,
        );
        let env: HashMap<String, String> = setup
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |k: &str| env.get(k).cloned();
        let audit = AuditLog::memory();
        let security = if config.authentication.is_some() || config.internal_token.is_some() {
            Some(Arc::new(
                Security::build(
                    config.authentication.as_ref(),
                    config.internal_token.as_ref(),
                    audit.clone(),
                    &lookup,
                )
                .map_err(|e| e.to_string())?,
            ))
        } else {
            None
        };
        let captured = Captured::default();
        let log = DecisionLog::to_writer(serde_json::json!({}), captured.clone());
        let app = App::builder(&config, store.clone())
            .log(log.clone())
            .security(security)
            .env(&env)
            .build()
            .map_err(|e| e.to_string())?;
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gateway = match app.gateway {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
            None => None,
        };
        let grpc_addr = grpc.local_addr().expect("addr");
        let http_addr = http.local_addr().expect("addr");
        let gateway_addr = gateway.as_ref().map(|g| g.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(
            app,
            Listeners {
                ext_authz: GrpcListener::Tcp(grpc),
                http: Some(http),
                diagnostic: None,
                gateway,
            },
            async move {
                let _ = rx.await;
            },
        ));
        Ok(Self {
            grpc: grpc_addr,
            http: http_addr,
            gateway: gateway_addr,
            dir,
            log,
            audit,
            store,
            captured,
            stop: Some(tx),
            handle: Some(handle),
        })
    }

    pub async fn start(setup: Setup<'_>) -> Self {
        match Self::try_start(setup).await {
            Ok(s) => s,
            Err(e) => panic!("the sidecar did not start: {e}"),
        }
    }

    pub async fn ext_authz(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }

    /// One Check; a gRPC error panics (use [`Sidecar::check_raw`] to see it).
    pub async fn check(&self, req: Req) -> Answer {
        Answer::from(
            self.check_raw(req)
                .await
                .expect("Check answered with a gRPC error"),
        )
    }

    pub async fn check_raw(&self, req: Req) -> Result<CheckResponse, tonic::Status> {
        self.send(req.build()).await
    }

    /// Sends a CheckRequest as built (for fields a [`Req`] cannot set).
    pub async fn send(&self, req: CheckRequest) -> Result<CheckResponse, tonic::Status> {
        self.ext_authz()
            .await
            .check(req)
            .await
            .map(|r| r.into_inner())
    }

    /// A channel to the gateway.
    pub async fn gateway(&self) -> Channel {
        let addr = self.gateway.expect("the config has no gateway section");
        Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect gateway")
    }

    /// Everything the console decision log has written so far.
    pub async fn logged(&self) -> String {
        self.log.flush().await;
        let bytes = self
            .captured
            .0
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The audit events so far.
    pub fn audit_events(&self) -> Vec<Json> {
        self.audit.events()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
