//! A real Portcullis for the attacker's tests: ext_authz, the HTTP API and (when the config has
//! a `gateway:` section) the gateway on loopback port 0, a decision log captured in memory, an
//! in-memory audit log, and the environment from a map; started through
//! [`support::server`](crate::support::server).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use portcullis::authn::audit::AuditLog;
use portcullis::decision_log::DecisionLog;
use portcullis::policy::PolicyStore;
use serde_json::Value as Json;
use tonic::transport::Channel;

use crate::support::authn::{Answer, Req};
use crate::support::server::{Prepared, Spec, TestServer};

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
    pub log: DecisionLog,
    pub audit: AuditLog,
    pub store: Arc<PolicyStore>,
    pub server: TestServer,
    captured: Captured,
}

impl Sidecar {
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
        let config = setup.config.replace("{dir}", &d);
        let captured = Captured::default();
        let log = DecisionLog::to_writer(serde_json::json!({}), captured.clone());
        let prepared = Prepared::new(Spec {
            dir: Some(dir),
            config: &config,
            paths,
            log: Some(log.clone()),
            ..Default::default()
        })?;
        let env: HashMap<String, String> = setup
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |k: &str| env.get(k).cloned();
        let audit = AuditLog::memory();
        let security = if prepared.config.authentication.is_some()
            || prepared.config.internal_token.is_some()
        {
            Some(prepared.security(&audit, &lookup)?)
        } else {
            None
        };
        let app = prepared
            .app()
            .security(security)
            .env(&env)
            .build()
            .map_err(|e| e.to_string())?;
        let server = prepared.serve(app).await;
        Ok(Self {
            grpc: server.grpc_addr,
            http: server.http_addr,
            gateway: server.gateway_addr,
            log,
            audit,
            store: server.store.clone(),
            server,
            captured,
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

    pub async fn stop(self) {
        self.server.stop().await;
    }
}
