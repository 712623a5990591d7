//! Authentication: signing keys, token crafting, a JWKS/OIDC issuer on loopback (axum on
//! 127.0.0.1:0), and a Portcullis with authentication through the real Check gRPC path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis::authn::audit::AuditLog;
use portcullis::authz::security::Security;
use portcullis::client::request::RequestSpec;
use portcullis::client::response_json;
use serde_json::{Value as Json, json};

pub use super::fixtures::fixture;
use super::server::{Prepared, Spec, TestServer};

/// A signing key with its public JWK.
#[derive(Clone)]
pub struct Key {
    pub alg: Algorithm,
    pub kid: String,
    pub enc: EncodingKey,
}

impl Key {
    pub fn es256(file: &str, kid: &str) -> Self {
        Self {
            alg: Algorithm::ES256,
            kid: kid.into(),
            enc: EncodingKey::from_ec_pem(fixture(file).as_bytes()).expect("ec key"),
        }
    }
    pub fn rs256(file: &str, kid: &str) -> Self {
        Self {
            alg: Algorithm::RS256,
            kid: kid.into(),
            enc: EncodingKey::from_rsa_pem(fixture(file).as_bytes()).expect("rsa key"),
        }
    }
    pub fn eddsa(file: &str, kid: &str) -> Self {
        Self {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            enc: EncodingKey::from_ed_pem(fixture(file).as_bytes()).expect("ed key"),
        }
    }

    /// The public JWK, with `kid` and `alg`.
    pub fn jwk(&self) -> Json {
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.enc, self.alg).expect("jwk");
        let mut v = serde_json::to_value(jwk).expect("jwk json");
        v["kid"] = json!(self.kid);
        v
    }

    /// A token with the standard header.
    pub fn sign(&self, claims: &Json) -> String {
        self.sign_with_header(
            &json!({"alg": alg_name(self.alg), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    /// A token with any header, signed with this key and its algorithm.
    pub fn sign_with_header(&self, header: &Json, claims: &Json) -> String {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &self.enc, self.alg).expect("sign");
        format!("{msg}.{}", low_s(self.alg, &sig))
    }

    /// The same token with its ECDSA signature's twin `(r, n - s)` (high-S when the token's is
    /// low-S): it verifies mathematically, and strict verifiers refuse it.
    pub fn high_s_twin(&self, token: &str) -> String {
        let (msg, sig) = token.rsplit_once('.').expect("three segments");
        let bytes = URL_SAFE_NO_PAD.decode(sig).expect("base64url signature");
        let twin = match self.alg {
            Algorithm::ES256 => {
                let s = p256::ecdsa::Signature::from_slice(&bytes).expect("signature");
                let (r, s) = s.split_scalars();
                p256::ecdsa::Signature::from_scalars(r, -*s.as_ref())
                    .expect("twin")
                    .to_bytes()
                    .to_vec()
            }
            Algorithm::ES384 => {
                let s = p384::ecdsa::Signature::from_slice(&bytes).expect("signature");
                let (r, s) = s.split_scalars();
                p384::ecdsa::Signature::from_scalars(r, -*s.as_ref())
                    .expect("twin")
                    .to_bytes()
                    .to_vec()
            }
            _ => panic!("not an ECDSA key"),
        };
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(twin))
    }
}

/// An ECDSA signature (base64url) in low-S form, as careful signers emit it; others unchanged.
pub fn low_s(alg: Algorithm, sig: &str) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(sig).expect("base64url signature");
    let normalized = match alg {
        Algorithm::ES256 => {
            let s = p256::ecdsa::Signature::from_slice(&bytes).expect("signature");
            s.normalize_s().unwrap_or(s).to_bytes().to_vec()
        }
        Algorithm::ES384 => {
            let s = p384::ecdsa::Signature::from_slice(&bytes).expect("signature");
            s.normalize_s().unwrap_or(s).to_bytes().to_vec()
        }
        _ => return sig.to_string(),
    };
    URL_SAFE_NO_PAD.encode(normalized)
}

pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        _ => "other",
    }
}

pub fn jwks(keys: &[&Key]) -> Json {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub const ISSUER: &str = "https://issuer.test";

/// Valid claims for the test issuer.
pub fn claims(sub: &str) -> Json {
    json!({"iss": ISSUER, "aud": "orders", "sub": sub, "exp": now() + 600, "iat": now(),
           "roles": ["reader"], "scope": "orders:read orders:write"})
}

pub fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// What the loopback issuer answers.
pub struct IssuerState {
    pub jwks: Json,
    pub status: u16,
    pub hang: bool,
    /// For OIDC discovery: the issuer named in the document (default: the server's URL).
    pub discovery_issuer: Option<String>,
}

/// A JWKS / OIDC issuer on 127.0.0.1:0 that counts the JWKS fetches.
pub struct IssuerServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<IssuerState>>,
    pub fetches: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IssuerServer {
    pub async fn start(jwks: Json) -> Self {
        use axum::extract::State;
        use axum::response::IntoResponse;
        let state = Arc::new(Mutex::new(IssuerState {
            jwks,
            status: 200,
            hang: false,
            discovery_issuer: None,
        }));
        let fetches = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        type S = (Arc<Mutex<IssuerState>>, Arc<AtomicU64>, SocketAddr);
        async fn keys(State((st, n, _)): State<S>) -> axum::response::Response {
            n.fetch_add(1, Ordering::SeqCst);
            let (hang, status, body) = {
                let s = st.lock().expect("state");
                (s.hang, s.status, s.jwks.to_string())
            };
            if hang {
                std::future::pending::<()>().await;
            }
            (
                axum::http::StatusCode::from_u16(status).expect("status"),
                body,
            )
                .into_response()
        }
        async fn discovery(State((st, _, addr)): State<S>) -> axum::response::Response {
            let iss = st
                .lock()
                .expect("state")
                .discovery_issuer
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            axum::Json(json!({"issuer": iss, "jwks_uri": format!("http://{addr}/jwks.json")}))
                .into_response()
        }
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(keys))
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(discovery),
            )
            .with_state((state.clone(), fetches.clone(), addr));
        let tx = super::server::serve_router(listener, app);
        Self {
            addr,
            state,
            fetches,
            stop: Some(tx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set(&self, f: impl FnOnce(&mut IssuerState)) {
        f(&mut self.state.lock().expect("state"));
    }
}

impl Drop for IssuerServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A policy that allows any request that reached Rego and echoes `input.identity` (or
/// `absent`) in the `x-identity` header; the decision's `internal_token` comes from the
/// request header `x-token-ask` (JSON).
pub const ECHO_POLICY: &str = r#"package envoy.authz

default allow := {"allowed": false, "body": "rego"}

headers := input.attributes.request.http.headers

ask := {"internal_token": json.unmarshal(headers["x-token-ask"])} if {
    headers["x-token-ask"]
} else := {}

allow := object.union({"allowed": true, "headers": {"x-identity": json.marshal(input.identity)}}, ask) if {
    _ = input.identity
    input.attributes.request.http.path != "/rego-deny"
}

allow := object.union({"allowed": true, "headers": {"x-identity": "absent"}}, ask) if {
    not has_identity
}

has_identity if {
    _ = input.identity
}
"#;

/// A Portcullis with `config_yaml`, the echo policy and a memory audit log.
pub struct Portcullis {
    pub server: TestServer,
    pub audit: AuditLog,
    pub security: Arc<Security>,
}

impl Portcullis {
    pub async fn start(config_yaml: &str) -> Self {
        Self::start_with_env(config_yaml, &|_: &str| None).await
    }

    pub async fn start_with_env(config_yaml: &str, env: &dyn portcullis::env::Env) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config_yaml, env).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        config_yaml: &str,
        env: &dyn portcullis::env::Env,
    ) -> Self {
        let prepared = Prepared::new(Spec {
            dir: Some(dir),
            policies: vec![("policy.rego", ECHO_POLICY)],
            config: config_yaml,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("config and policy: {e}"));
        let audit = AuditLog::memory();
        let security = prepared.security(&audit, env).expect("security");
        let app = prepared
            .app()
            .security(Some(security.clone()))
            .build()
            .expect("app");
        let server = prepared.serve(app).await;
        Self {
            server,
            audit,
            security,
        }
    }

    pub async fn check(&self, req: Req) -> Answer {
        let mut client = self.server.client().await;
        let resp = client
            .check(req.build())
            .await
            .expect("check rpc")
            .into_inner();
        Answer::from(resp)
    }
}

/// A request to send.
#[derive(Default, Clone)]
pub struct Req {
    pub spec: RequestSpec,
}

pub fn req(path: &str) -> Req {
    Req {
        spec: RequestSpec {
            path: Some(path.into()),
            host: Some("api.example.com".into()),
            method: Some("GET".into()),
            source_principal: Some("spiffe://cluster.local/ns/shop/sa/frontend".into()),
            destination_principal: Some("spiffe://cluster.local/ns/shop/sa/orders".into()),
            ..Default::default()
        },
    }
}

impl Req {
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.spec.headers.insert(k.into(), v.into());
        self
    }
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn method(mut self, m: &str) -> Self {
        self.spec.method = Some(m.into());
        self
    }
    pub fn host(mut self, h: &str) -> Self {
        self.spec.host = Some(h.into());
        self
    }
    pub fn build(&self) -> CheckRequest {
        self.spec.to_check_request()
    }
}

/// A Check answer, flattened for assertions.
#[derive(Debug, Clone)]
pub struct Answer {
    pub grpc: i32,
    pub http: Option<i64>,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub removed: Vec<String>,
    pub json: Json,
}

impl From<CheckResponse> for Answer {
    fn from(resp: CheckResponse) -> Self {
        let json = response_json(&resp);
        let grpc = json["status"]["code"].as_i64().unwrap_or(-1) as i32;
        let (section, http) = if json.get("deniedResponse").is_some() {
            (
                "deniedResponse",
                json["deniedResponse"]["status"]["code"].as_i64(),
            )
        } else {
            ("okResponse", None)
        };
        let headers = json[section]["headers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| {
                        (
                            h["header"]["key"].as_str().unwrap_or("").to_string(),
                            h["header"]["value"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let removed = json[section]["headersToRemove"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let body = json[section]["body"].as_str().unwrap_or("").to_string();
        Self {
            grpc,
            http,
            body,
            headers,
            removed,
            json,
        }
    }
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `input.identity` as Rego saw it.
    pub fn identity(&self) -> Json {
        match self.header("x-identity") {
            Some("absent") | None => Json::String("absent".into()),
            Some(text) => serde_json::from_str(text).expect("identity json"),
        }
    }

    pub fn allowed(&self) -> bool {
        self.grpc == 0
    }

    /// Asserts a 401/403 with this error code, and that nothing else leaks in the body.
    pub fn assert_refused(&self, http: i64, code: &str) {
        assert_ne!(self.grpc, 0, "expected a refusal, got {}", self.json);
        assert_eq!(self.http, Some(http), "{}", self.json);
        assert_eq!(
            self.body,
            json!({"error": code}).to_string(),
            "{}",
            self.json
        );
        if http == 401 {
            assert!(self.header("www-authenticate").is_some(), "{}", self.json);
        }
    }
}
