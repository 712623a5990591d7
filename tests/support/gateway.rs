//! The gateway: a real server with a `gateway` section (ext_authz, HTTP API and gateway on
//! loopback port 0), credentials, tokens and request helpers.

pub use std::collections::HashMap;
pub use std::net::SocketAddr;
pub use std::sync::Arc;

pub use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
pub use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
pub use portcullis::config::Config;
pub use portcullis::decision_log::DecisionLog;
pub use portcullis::gateway::caller::{Claims, sign};
pub use portcullis::gateway::pb;
pub use portcullis::gateway::pb::auth_service_client::AuthServiceClient;
pub use portcullis::gateway::pb::data_service_client::DataServiceClient;
pub use portcullis::gateway::pb::decision_log_service_client::DecisionLogServiceClient;
pub use portcullis::gateway::pb::decision_service_client::DecisionServiceClient;
pub use portcullis::gateway::pb::policy_service_client::PolicyServiceClient;
pub use portcullis::gateway::pb::status_service_client::StatusServiceClient;
pub use portcullis::jose::clock::now_u64 as now;
pub use portcullis::policy::PolicyStore;
pub use portcullis::server::{self, App, GrpcListener, Listeners};
pub use serde_json::json;
pub use tokio::net::TcpListener;
pub use tokio::sync::oneshot;
pub use tonic::Code;
pub use tonic::transport::Channel;

pub use super::client::decision_id;
use super::server::{Prepared, Spec, TestServer};

pub const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
pub const AUD: &str = "portcullis-gateway";

/// The default namespace's policy: allow when `input.user` is in `data.users`; the whole
/// caller document is echoed by `echo`.
pub const POLICY: &str = r#"package envoy.authz

default allow := false

allow if data.users[input.user]

allow if input.attributes.request.http.headers["x-allow"] == "yes"

echo := input.caller
"#;

pub struct Gw {
    pub grpc: SocketAddr,
    pub gateway: SocketAddr,
    pub http: SocketAddr,
    pub store: Arc<PolicyStore>,
    pub server: TestServer,
}

impl Gw {
    pub async fn start(env: &[(&str, &str)], gateway_yaml: &str) -> Self {
        Self::start_with(env, gateway_yaml, false).await
    }

    /// With `bundle`, a bundle directory (revision `r7`, root `bundled`) is served too.
    pub async fn start_with(env: &[(&str, &str)], gateway_yaml: &str, bundle: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut bundle_paths = Vec::new();
        if bundle {
            let b = dir.path().join("bundle");
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(
                b.join(".manifest"),
                r#"{"revision": "r7", "roots": ["bundled"]}"#,
            )
            .unwrap();
            std::fs::write(b.join("data.json"), r#"{"bundled": {"x": 1}}"#).unwrap();
            bundle_paths.push(b);
        }
        let config = format!("gateway:\n{gateway_yaml}");
        let prepared = Prepared::new(Spec {
            dir: Some(dir),
            policies: vec![("policy.rego", POLICY)],
            data: Some(json!({"users": {"alice": true}})),
            config: &config,
            bundle_paths,
            log: Some(DecisionLog::to_writer(json!({}), std::io::sink())),
            ..Default::default()
        })
        .unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let app = prepared.app().env(&env).build().unwrap();
        let server = prepared.serve(app).await;
        Self {
            grpc: server.grpc_addr,
            gateway: server.gateway_addr.expect("the gateway is configured"),
            http: server.http_addr,
            store: server.store.clone(),
            server,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.gateway))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// A credential to send.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Header(String),
}

impl Auth {
    pub fn bearer(t: &str) -> Self {
        Auth::Header(format!("Bearer {t}"))
    }
    pub fn basic(user: &str, password: &str) -> Self {
        use base64::Engine as _;
        Auth::Header(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    }
}

pub fn req<T>(msg: T, auth: &Auth) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Auth::Header(h) = auth {
        r.metadata_mut().insert("authorization", h.parse().unwrap());
    }
    r
}

pub fn token(claims: serde_json::Value) -> String {
    let claims: Claims = serde_json::from_value(claims).unwrap();
    sign(&claims, SECRET.as_bytes()).unwrap()
}

pub fn root_token() -> String {
    token(json!({"sub": "root", "aud": AUD, "exp": now() + 600, "grants": [{"kind": "readwrite"}]}))
}

pub fn scoped(extra: serde_json::Value) -> String {
    let mut c =
        json!({"sub": "t", "aud": AUD, "exp": now() + 600, "grants": [{"kind": "readwrite"}]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    token(c)
}

pub fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

pub async fn put_policy(
    ch: &Channel,
    auth: &Auth,
    ns: &str,
    id: &str,
    rego: &str,
) -> Result<u64, tonic::Status> {
    PolicyServiceClient::new(ch.clone())
        .put_policy(req(
            pb::PutPolicyRequest {
                namespace: ns.into(),
                id: id.into(),
                rego: rego.into(),
            },
            auth,
        ))
        .await
        .map(|r| r.into_inner().revision)
}

pub async fn decide(
    ch: &Channel,
    auth: &Auth,
    r: pb::DecideRequest,
) -> Result<pb::DecideResponse, tonic::Status> {
    DecisionServiceClient::new(ch.clone())
        .decide(req(r, auth))
        .await
        .map(|r| r.into_inner())
}

pub fn check_request(namespace: Option<&str>, allow: bool) -> CheckRequest {
    let mut attrs = AttributeContext::default();
    let mut http = envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        ..Default::default()
    };
    if allow {
        http.headers.insert("x-allow".into(), "yes".into());
    }
    attrs.request = Some(
        envoy_types::pb::envoy::service::auth::v3::attribute_context::Request {
            http: Some(http),
            ..Default::default()
        },
    );
    if let Some(ns) = namespace {
        attrs
            .context_extensions
            .insert("namespace".into(), ns.into());
    }
    CheckRequest {
        attributes: Some(attrs),
    }
}
