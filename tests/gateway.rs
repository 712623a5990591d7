//! The gateway against a real server on loopback: every RPC under every auth mode, the
//! scope-escape cases, namespaces on the Check path, writes that survive a reload, gRPC-Web
//! over HTTP/1.1 with CORS, health and reflection, and StreamDecisions fed by concurrent Checks.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use portcullis::config::Config;
use portcullis::gateway::caller::{Claims, now, sign};
use portcullis::gateway::pb;
use portcullis::gateway::pb::auth_service_client::AuthServiceClient;
use portcullis::gateway::pb::data_service_client::DataServiceClient;
use portcullis::gateway::pb::decision_log_service_client::DecisionLogServiceClient;
use portcullis::gateway::pb::decision_service_client::DecisionServiceClient;
use portcullis::gateway::pb::policy_service_client::PolicyServiceClient;
use portcullis::gateway::pb::status_service_client::StatusServiceClient;
use portcullis::policy::PolicyStore;
use portcullis::server::{self, App, GrpcListener, Listeners};
use portcullis::telemetry::decision_log::DecisionLog;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
const AUD: &str = "portcullis-gateway";

/// The default namespace's policy: allow when `input.user` is in `data.users`; the whole
/// caller document is echoed by `echo`.
const POLICY: &str = r#"package envoy.authz

default allow := false

allow if data.users[input.user]

allow if input.attributes.request.http.headers["x-allow"] == "yes"

echo := input.caller
"#;

struct Gw {
    grpc: SocketAddr,
    gateway: SocketAddr,
    http: SocketAddr,
    store: Arc<PolicyStore>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Gw {
    async fn start(env: &[(&str, &str)], gateway_yaml: &str) -> Self {
        Self::start_with(env, gateway_yaml, false).await
    }

    /// With `bundle`, a bundle directory (revision `r7`, root `bundled`) is served too.
    async fn start_with(env: &[(&str, &str)], gateway_yaml: &str, bundle: bool) -> Self {
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
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        std::fs::write(
            dir.path().join("data.json"),
            json!({"users": {"alice": true}}).to_string(),
        )
        .unwrap();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, format!("gateway:\n{gateway_yaml}")).unwrap();
        let config = Config::load(Some(&cfg), &[]).unwrap();
        let store = Arc::new(
            PolicyStore::load_with(
                portcullis::policy::LoadSpec {
                    paths: vec![dir.path().join("policy.rego"), dir.path().join("data.json")],
                    bundle_paths,
                    ..Default::default()
                },
                server::policy_options(&config),
            )
            .unwrap(),
        );
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log = DecisionLog::to_writer(json!({}), std::io::sink());
        let app = App::from_config_with_env(&config, store.clone(), log, &env).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (
            grpc.local_addr().unwrap(),
            gateway.local_addr().unwrap(),
            http.local_addr().unwrap(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(
            app,
            Listeners {
                ext_authz: GrpcListener::Tcp(grpc),
                http: Some(http),
                diagnostic: None,
                gateway: Some(gateway),
            },
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            grpc: addrs.0,
            gateway: addrs.1,
            http: addrs.2,
            store,
            _dir: dir,
            stop: Some(tx),
            handle,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.gateway))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.handle.await.unwrap().unwrap();
    }
}

/// A credential to send.
#[derive(Clone, Debug)]
enum Auth {
    None,
    Header(String),
}

impl Auth {
    fn bearer(t: &str) -> Self {
        Auth::Header(format!("Bearer {t}"))
    }
    fn basic(user: &str, password: &str) -> Self {
        use base64::Engine as _;
        Auth::Header(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    }
}

fn req<T>(msg: T, auth: &Auth) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Auth::Header(h) = auth {
        r.metadata_mut().insert("authorization", h.parse().unwrap());
    }
    r
}

fn token(claims: serde_json::Value) -> String {
    let claims: Claims = serde_json::from_value(claims).unwrap();
    sign(&claims, SECRET.as_bytes()).unwrap()
}

fn root_token() -> String {
    token(json!({"sub": "root", "aud": AUD, "exp": now() + 600, "grants": [{"kind": "readwrite"}]}))
}

fn scoped(extra: serde_json::Value) -> String {
    let mut c =
        json!({"sub": "t", "aud": AUD, "exp": now() + 600, "grants": [{"kind": "readwrite"}]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    token(c)
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Calls `rpc` with a valid request; the result code.
async fn call(ch: &Channel, rpc: portcullis::gateway::access::Rpc, auth: &Auth) -> Code {
    use portcullis::gateway::access::Rpc as R;
    let ns = "ops".to_string();
    match rpc {
        R::Decide => code(
            DecisionServiceClient::new(ch.clone())
                .decide(req(pb::DecideRequest::default(), auth))
                .await,
        ),
        R::DecideBatch => code(
            DecisionServiceClient::new(ch.clone())
                .decide_batch(req(
                    pb::DecideBatchRequest {
                        requests: vec![pb::DecideRequest::default()],
                    },
                    auth,
                ))
                .await,
        ),
        R::ListPolicies => code(
            PolicyServiceClient::new(ch.clone())
                .list_policies(req(pb::ListPoliciesRequest::default(), auth))
                .await,
        ),
        R::GetPolicy => {
            let mut c = PolicyServiceClient::new(ch.clone());
            let id = c
                .list_policies(req(pb::ListPoliciesRequest::default(), auth))
                .await
                .ok()
                .and_then(|r| r.into_inner().policies.first().map(|p| p.id.clone()))
                .unwrap_or_default();
            code(
                c.get_policy(req(
                    pb::GetPolicyRequest {
                        namespace: String::new(),
                        id,
                    },
                    auth,
                ))
                .await,
            )
        }
        R::PutPolicy => code(
            PolicyServiceClient::new(ch.clone())
                .put_policy(req(
                    pb::PutPolicyRequest {
                        namespace: ns,
                        id: "ops.rego".into(),
                        rego: "package ops\nx := 1\n".into(),
                    },
                    auth,
                ))
                .await,
        ),
        R::DeletePolicy => {
            let mut c = PolicyServiceClient::new(ch.clone());
            let _ = c
                .put_policy(req(
                    pb::PutPolicyRequest {
                        namespace: ns.clone(),
                        id: "gone.rego".into(),
                        rego: "package gone\n".into(),
                    },
                    auth,
                ))
                .await;
            code(
                c.delete_policy(req(
                    pb::DeletePolicyRequest {
                        namespace: ns,
                        id: "gone.rego".into(),
                    },
                    auth,
                ))
                .await,
            )
        }
        R::GetData => code(
            DataServiceClient::new(ch.clone())
                .get_data(req(
                    pb::GetDataRequest {
                        namespace: String::new(),
                        path: "users".into(),
                    },
                    auth,
                ))
                .await,
        ),
        R::PutData => code(
            DataServiceClient::new(ch.clone())
                .put_data(req(
                    pb::PutDataRequest {
                        namespace: ns,
                        path: "a/b".into(),
                        value: Some(pb::json_to_value(&json!(1))),
                    },
                    auth,
                ))
                .await,
        ),
        R::DeleteData => {
            let mut c = DataServiceClient::new(ch.clone());
            let _ = c
                .put_data(req(
                    pb::PutDataRequest {
                        namespace: ns.clone(),
                        path: "tmp".into(),
                        value: Some(pb::json_to_value(&json!(1))),
                    },
                    auth,
                ))
                .await;
            code(
                c.delete_data(req(
                    pb::DeleteDataRequest {
                        namespace: ns,
                        path: "tmp".into(),
                    },
                    auth,
                ))
                .await,
            )
        }
        R::StreamDecisions => code(
            DecisionLogServiceClient::new(ch.clone())
                .stream_decisions(req(pb::StreamDecisionsRequest::default(), auth))
                .await,
        ),
        R::MintAccessToken => code(
            AuthServiceClient::new(ch.clone())
                .mint_access_token(req(pb::MintAccessTokenRequest::default(), auth))
                .await,
        ),
        R::ExchangeOidcToken => code(
            AuthServiceClient::new(ch.clone())
                .exchange_oidc_token(req(pb::ExchangeOidcTokenRequest::default(), auth))
                .await,
        ),
        R::CreateApiKey => code(
            AuthServiceClient::new(ch.clone())
                .create_api_key(req(pb::CreateApiKeyRequest::default(), auth))
                .await,
        ),
        R::ListApiKeys => code(
            AuthServiceClient::new(ch.clone())
                .list_api_keys(req(pb::ListApiKeysRequest::default(), auth))
                .await,
        ),
        R::RevokeApiKey => code(
            AuthServiceClient::new(ch.clone())
                .revoke_api_key(req(pb::RevokeApiKeyRequest::default(), auth))
                .await,
        ),
        R::ExchangeApiKey => code(
            AuthServiceClient::new(ch.clone())
                .exchange_api_key(req(pb::ExchangeApiKeyRequest::default(), auth))
                .await,
        ),
        R::GetJwks => code(
            AuthServiceClient::new(ch.clone())
                .get_jwks(req(pb::GetJwksRequest::default(), auth))
                .await,
        ),
        R::GetStatus => code(
            StatusServiceClient::new(ch.clone())
                .get_status(req(pb::GetStatusRequest::default(), auth))
                .await,
        ),
    }
}

/// What a valid caller gets from each RPC: OK, or the documented refusal.
fn expected(rpc: portcullis::gateway::access::Rpc, mode: &str) -> Code {
    use portcullis::gateway::access::Rpc as R;
    match rpc {
        // Waiting for the authentication module: never a fake success.
        R::ExchangeOidcToken
        | R::CreateApiKey
        | R::ListApiKeys
        | R::RevokeApiKey
        | R::ExchangeApiKey
        | R::GetJwks => Code::Unimplemented,
        R::MintAccessToken if mode != "jwt" => Code::FailedPrecondition,
        _ => Code::Ok,
    }
}

#[tokio::test]
async fn every_rpc_under_every_auth_mode() {
    use portcullis::gateway::access::{Access, Rpc};
    /// (mode, environment, a good credential, bad credentials)
    type Mode<'a> = (&'a str, Vec<(&'a str, &'a str)>, Auth, Vec<Auth>);
    let modes: [Mode; 4] = [
        (
            "jwt",
            vec![("GATEWAY_JWT_SECRET", SECRET), ("GATEWAY_PASSWORD", "pw")],
            Auth::bearer(&root_token()),
            vec![
                Auth::None,
                // The secret itself, as a password or a bearer, is no credential.
                Auth::basic("root", SECRET),
                Auth::basic("root", "pw"),
                Auth::bearer(SECRET),
                Auth::bearer(&{
                    let c: Claims = serde_json::from_value(json!({
                        "sub": "root", "aud": AUD, "exp": now() + 600,
                        "grants": [{"kind": "readwrite"}]}))
                    .unwrap();
                    sign(&c, b"another-secret-another-secret-another").unwrap()
                }),
            ],
        ),
        (
            "token",
            vec![
                ("GATEWAY_TOKEN", "static-token"),
                ("GATEWAY_PASSWORD", "pw"),
            ],
            Auth::bearer("static-token"),
            vec![
                Auth::None,
                Auth::bearer("static-tokeN"),
                Auth::basic("u", "static-token"),
                Auth::basic("u", "pw"),
            ],
        ),
        (
            "password",
            vec![("GATEWAY_PASSWORD", "hunter2")],
            Auth::basic("anyone", "hunter2"),
            vec![
                Auth::None,
                Auth::basic("anyone", "hunter3"),
                Auth::bearer("hunter2"),
            ],
        ),
        ("open", vec![], Auth::None, vec![]),
    ];
    for (mode, env, good, bad) in modes {
        let gw = Gw::start(&env, "  addr: 127.0.0.1:0\n").await;
        let ch = gw.channel().await;
        for rpc in Rpc::ALL {
            let got = call(&ch, *rpc, &good).await;
            assert_eq!(
                got,
                expected(*rpc, mode),
                "{mode}: {rpc:?} with good credentials"
            );
            for b in &bad {
                let got = call(&ch, *rpc, b).await;
                let want = if rpc.access() == Access::Public {
                    expected(*rpc, mode)
                } else {
                    Code::Unauthenticated
                };
                assert_eq!(got, want, "{mode}: {rpc:?} with {b:?}");
            }
        }
        // The UNAUTHENTICATED message says nothing about why.
        if mode != "open" {
            let err = StatusServiceClient::new(ch.clone())
                .get_status(req(pb::GetStatusRequest::default(), &Auth::None))
                .await
                .unwrap_err();
            assert_eq!(err.message(), "authentication required");
            let status = StatusServiceClient::new(ch.clone())
                .get_status(req(pb::GetStatusRequest::default(), &good))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(status.auth_mode, mode);
            assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        }
        gw.stop().await;
    }
}

async fn put_policy(
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

async fn decide(
    ch: &Channel,
    auth: &Auth,
    r: pb::DecideRequest,
) -> Result<pb::DecideResponse, tonic::Status> {
    DecisionServiceClient::new(ch.clone())
        .decide(req(r, auth))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn scoped_tokens_cannot_escape_their_scope() {
    let gw = Gw::start(&[("GATEWAY_JWT_SECRET", SECRET)], "  addr: 127.0.0.1:0\n").await;
    let ch = gw.channel().await;
    let root = Auth::bearer(&root_token());
    let echo = "package app\n\necho := input.caller\n";
    for ns in ["acme", "acme:team", "acme2"] {
        put_policy(&ch, &root, ns, "app.rego", echo).await.unwrap();
    }

    // Agent token: a namespace-level write is refused although the request names no agent.
    let agent = Auth::bearer(&scoped(json!({"ns": "acme", "agent": "bot"})));
    let denied = put_policy(&ch, &agent, "acme", "x.rego", "package x\n").await;
    assert_eq!(code(denied), Code::PermissionDenied);
    let denied = DataServiceClient::new(ch.clone())
        .put_data(req(
            pb::PutDataRequest {
                namespace: "acme".into(),
                path: "x".into(),
                value: Some(pb::json_to_value(&json!(1))),
            },
            &agent,
        ))
        .await;
    assert_eq!(code(denied), Code::PermissionDenied);
    let read = DataServiceClient::new(ch.clone())
        .get_data(req(pb::GetDataRequest::default(), &agent))
        .await;
    assert_eq!(code(read), Code::PermissionDenied);
    // ... but it decides as itself, with input.caller bound from the token whatever the
    // input says.
    let r = decide(
        &ch,
        &agent,
        pb::DecideRequest {
            path: "app/echo".into(),
            input: Some(pb::json_to_value(&json!({"caller": {"agent": "admin"}}))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let caller = pb::value_to_json(r.result.as_ref().unwrap()).unwrap();
    assert_eq!(caller["agent"], "bot");
    assert_eq!(caller["namespace"], "acme");
    assert_eq!(caller["subject"], "t");
    assert_eq!(r.namespace, "acme");
    let other = decide(
        &ch,
        &agent,
        pb::DecideRequest {
            path: "app/echo".into(),
            agent: "someone-else".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(other), Code::PermissionDenied);

    // Namespace token: children yes, a sibling sharing the prefix no.
    let acme = Auth::bearer(&scoped(json!({"ns": "acme"})));
    put_policy(&ch, &acme, "acme:team", "t.rego", "package t\n")
        .await
        .unwrap();
    put_policy(&ch, &acme, "acme", "t.rego", "package t\n")
        .await
        .unwrap();
    assert_eq!(
        code(put_policy(&ch, &acme, "acme2", "t.rego", "package t\n").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            decide(
                &ch,
                &acme,
                pb::DecideRequest {
                    namespace: "acme2".into(),
                    ..Default::default()
                }
            )
            .await
        ),
        Code::PermissionDenied
    );
    // A request without a namespace acts in the token's namespace, not the default one.
    let r = decide(
        &ch,
        &acme,
        pb::DecideRequest {
            path: "app/echo".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.namespace, "acme");
    let listed = PolicyServiceClient::new(ch.clone())
        .list_policies(req(pb::ListPoliciesRequest::default(), &acme))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.namespace, "acme");
    let status = StatusServiceClient::new(ch.clone())
        .get_status(req(pb::GetStatusRequest::default(), &acme))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = status.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["acme", "acme:team"]);

    // A read grant never passes a write RPC.
    let reader = Auth::bearer(&token(json!({
        "sub": "r", "aud": AUD, "exp": now() + 600, "grants": [{"kind": "read"}]})));
    assert_eq!(
        code(put_policy(&ch, &reader, "", "r.rego", "package r\n").await),
        Code::PermissionDenied
    );
    let got = DataServiceClient::new(ch.clone())
        .get_data(req(
            pb::GetDataRequest {
                namespace: String::new(),
                path: "users".into(),
            },
            &reader,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pb::value_to_json(&got.value.unwrap()).unwrap(),
        json!({"alice": true})
    );

    // Empty-string scope claims are invalid, not "unrestricted".
    for claim in ["ns", "agent", "session", "channel"] {
        let empty = Auth::bearer(&scoped(json!({ claim: "" })));
        assert_eq!(
            code(put_policy(&ch, &empty, "acme", "e.rego", "package e\n").await),
            Code::Unauthenticated,
            "{claim}"
        );
    }
    let empty_grant = Auth::bearer(&token(json!({
        "sub": "e", "aud": AUD, "exp": now() + 600,
        "grants": [{"kind": "readwrite", "namespace": ""}]})));
    assert_eq!(
        code(put_policy(&ch, &empty_grant, "acme", "e.rego", "package e\n").await),
        Code::Unauthenticated
    );

    // Delegation only narrows.
    let parent_exp = now() + 300;
    let parent = Auth::bearer(&token(json!({
        "sub": "p", "aud": AUD, "exp": parent_exp, "ns": "acme",
        "grants": [{"kind": "read"}]})));
    let mut auth_client = AuthServiceClient::new(ch.clone());
    let mint = |scope: pb::Scope, grants: Vec<pb::Grant>, ttl: u64| pb::MintAccessTokenRequest {
        scope: Some(scope),
        grants,
        ttl_seconds: ttl,
    };
    let ns_scope = |n: &str| pb::Scope {
        namespace: n.into(),
        ..Default::default()
    };
    let rw = pb::Grant {
        kind: pb::GrantKind::Readwrite as i32,
        ..Default::default()
    };
    for widened in [
        mint(ns_scope("acme2"), vec![], 60),
        mint(ns_scope("acme:team"), vec![rw.clone()], 60),
    ] {
        let r = auth_client.mint_access_token(req(widened, &parent)).await;
        assert_eq!(code(r), Code::PermissionDenied);
    }
    let child = auth_client
        .mint_access_token(req(mint(ns_scope("acme:team"), vec![], 3600), &parent))
        .await
        .unwrap()
        .into_inner();
    assert!(
        child.expires_at as u64 <= parent_exp,
        "exp capped by the parent's"
    );
    let child_auth = Auth::bearer(&child.token);
    let list = |ns: &str| pb::ListPoliciesRequest {
        namespace: ns.into(),
    };
    let mut policies = PolicyServiceClient::new(ch.clone());
    assert_eq!(
        code(
            policies
                .list_policies(req(list("acme:team"), &child_auth))
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(policies.list_policies(req(list("acme"), &child_auth)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(put_policy(&ch, &child_auth, "acme:team", "c.rego", "package c\n").await),
        Code::PermissionDenied
    );
    // An expired parent delegates nothing.
    let expired = Auth::bearer(&token(json!({
        "sub": "p", "aud": AUD, "exp": now() - 3600, "ns": "acme",
        "grants": [{"kind": "readwrite"}]})));
    let r = auth_client
        .mint_access_token(req(mint(ns_scope("acme:team"), vec![], 60), &expired))
        .await;
    assert_eq!(code(r), Code::Unauthenticated);
    gw.stop().await;
}

fn check_request(namespace: Option<&str>, allow: bool) -> CheckRequest {
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

fn decision_id(resp: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> String {
    use envoy_types::pb::google::protobuf::value::Kind;
    match resp
        .dynamic_metadata
        .as_ref()
        .and_then(|m| m.fields.get("decision_id"))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("no decision_id: {other:?}"),
    }
}

#[tokio::test]
async fn check_path_selects_the_namespace_and_denies_unknown_ones() {
    let gw = Gw::start(&[("GATEWAY_TOKEN", "t")], "  addr: 127.0.0.1:0\n").await;
    let ch = gw.channel().await;
    let auth = Auth::bearer("t");
    put_policy(
        &ch,
        &auth,
        "tenant:a",
        "authz.rego",
        "package envoy.authz\n\nallow if input.attributes.request.http.method == \"GET\"\n",
    )
    .await
    .unwrap();
    let mut check = AuthorizationClient::connect(format!("http://{}", gw.grpc))
        .await
        .unwrap();
    // The default namespace: no x-allow header, not alice: denied.
    let r = check
        .check(check_request(None, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::PermissionDenied as i32);
    // tenant:a allows every GET.
    let r = check
        .check(check_request(Some("tenant:a"), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    // An unknown namespace: a denial (403), not a gRPC error that failure_mode_allow could pass.
    for unknown in ["tenant:b", "", "bad name"] {
        let r = check
            .check(check_request(Some(unknown), true))
            .await
            .unwrap()
            .into_inner();
        assert!(!decision_id(&r).is_empty());
        assert_eq!(
            r.status.unwrap().code,
            Code::PermissionDenied as i32,
            "{unknown:?}"
        );
        match r.http_response {
            Some(envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::DeniedResponse(d)) => {
                assert_eq!(d.status.unwrap().code, 403);
            }
            other => panic!("{other:?}"),
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn broken_policy_is_refused_with_position_and_writes_survive_reload() {
    let gw = Gw::start(&[("GATEWAY_PASSWORD", "pw")], "  addr: 127.0.0.1:0\n").await;
    let ch = gw.channel().await;
    let auth = Auth::basic("ops", "pw");
    let before = gw.store.snapshot().revision();
    let err = put_policy(
        &ch,
        &auth,
        "",
        "broken.rego",
        "package envoy.authz\n\nallow if {\n  input.x ==\n}\n",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let re_pos = err.message().contains("broken.rego:")
        && err
            .message()
            .split("broken.rego:")
            .nth(1)
            .is_some_and(|rest| {
                let mut parts = rest.split(':');
                parts
                    .next()
                    .is_some_and(|l| l.trim().parse::<u32>().is_ok())
                    && parts.next().is_some_and(|c| {
                        c.trim()
                            .split(|ch: char| !ch.is_ascii_digit())
                            .next()
                            .is_some_and(|d| d.parse::<u32>().is_ok())
                    })
            });
    assert!(re_pos, "no file:line:col in {:?}", err.message());
    assert_eq!(
        gw.store.snapshot().revision(),
        before,
        "the old policies keep serving"
    );

    // Data and a module written through the gateway survive a reload of the files.
    let mut data = DataServiceClient::new(ch.clone());
    data.put_data(req(
        pb::PutDataRequest {
            namespace: String::new(),
            path: "users/bob".into(),
            value: Some(pb::json_to_value(&json!(true))),
        },
        &auth,
    ))
    .await
    .unwrap();
    put_policy(
        &ch,
        &auth,
        "",
        "extra.rego",
        "package extra\n\nhello := \"world\"\n",
    )
    .await
    .unwrap();
    let rev = gw.store.reload().unwrap();
    let got = data
        .get_data(req(
            pb::GetDataRequest {
                namespace: String::new(),
                path: "users".into(),
            },
            &auth,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.revision, rev);
    assert_eq!(
        pb::value_to_json(&got.value.unwrap()).unwrap(),
        json!({"alice": true, "bob": true})
    );
    let hello = data
        .get_data(req(
            pb::GetDataRequest {
                namespace: String::new(),
                path: "extra/hello".into(),
            },
            &auth,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pb::value_to_json(&hello.value.unwrap()).unwrap(),
        json!("world")
    );
    let policies = PolicyServiceClient::new(ch.clone())
        .list_policies(req(pb::ListPoliciesRequest::default(), &auth))
        .await
        .unwrap()
        .into_inner();
    let extra = policies
        .policies
        .iter()
        .find(|p| p.id == "extra.rego")
        .unwrap();
    assert_eq!(extra.source, pb::PolicySource::Gateway as i32);
    assert_eq!(extra.package, "extra");
    assert!(
        policies
            .policies
            .iter()
            .any(|p| p.source == pb::PolicySource::File as i32)
    );
    // Deleting a file module is refused; deleting data that is not there is NOT_FOUND.
    let file_id = policies
        .policies
        .iter()
        .find(|p| p.source == pb::PolicySource::File as i32)
        .unwrap()
        .id
        .clone();
    let r = PolicyServiceClient::new(ch.clone())
        .delete_policy(req(
            pb::DeletePolicyRequest {
                namespace: String::new(),
                id: file_id,
            },
            &auth,
        ))
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    let r = data
        .delete_data(req(
            pb::DeleteDataRequest {
                namespace: String::new(),
                path: "nope".into(),
            },
            &auth,
        ))
        .await;
    assert_eq!(code(r), Code::NotFound);
    // The HTTP API sees the same store.
    let (status, body) = support::http(gw.http, "GET", "/v1/data/users/bob", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":true}"#));
    gw.stop().await;
}

#[tokio::test]
async fn stream_decisions_receives_concurrent_checks() {
    let gw = Gw::start(&[("GATEWAY_JWT_SECRET", SECRET)], "  addr: 127.0.0.1:0\n").await;
    let ch = gw.channel().await;
    let root = Auth::bearer(&root_token());
    let mut logs = DecisionLogServiceClient::new(ch.clone());
    // Subscribed once the response headers are in.
    let mut all = logs
        .stream_decisions(req(pb::StreamDecisionsRequest::default(), &root))
        .await
        .unwrap()
        .into_inner();
    let mut denies = logs
        .stream_decisions(req(
            pb::StreamDecisionsRequest {
                outcome: pb::Outcome::Deny as i32,
                ..Default::default()
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    // A token scoped to another namespace sees none of the default namespace's decisions.
    let other = Auth::bearer(&scoped(json!({"ns": "elsewhere"})));
    let mut elsewhere = logs
        .stream_decisions(req(pb::StreamDecisionsRequest::default(), &other))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(
            logs.stream_decisions(req(
                pb::StreamDecisionsRequest {
                    namespace: "default".into(),
                    ..Default::default()
                },
                &other
            ))
            .await
        ),
        Code::PermissionDenied
    );

    const N: usize = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let addr = gw.grpc;
        tasks.spawn(async move {
            let mut c = AuthorizationClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let r = c
                .check(check_request(None, i % 2 == 0))
                .await
                .unwrap()
                .into_inner();
            (decision_id(&r), r.status.unwrap().code == 0)
        });
    }
    let mut expected = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (id, allowed) = r.unwrap();
        expected.insert(id, allowed);
    }
    let mut seen = HashMap::new();
    while seen.len() < N {
        let e = all.message().await.unwrap().expect("stream open");
        assert_eq!(e.namespace, "default");
        assert_eq!(e.path, "envoy/authz/allow");
        let event: serde_json::Value = serde_json::from_str(&e.event_json).unwrap();
        assert_eq!(event["decision_id"], e.decision_id.as_str());
        seen.insert(
            e.decision_id.clone(),
            e.outcome == pb::Outcome::Allow as i32,
        );
    }
    assert_eq!(seen, expected);
    let deny_ids: std::collections::HashSet<_> = expected
        .iter()
        .filter(|(_, a)| !**a)
        .map(|(id, _)| id.clone())
        .collect();
    let mut got = std::collections::HashSet::new();
    while got.len() < deny_ids.len() {
        let e = denies.message().await.unwrap().expect("stream open");
        assert_eq!(e.outcome, pb::Outcome::Deny as i32);
        got.insert(e.decision_id);
    }
    assert_eq!(got, deny_ids);

    // A gateway decision in `elsewhere` reaches its stream, which saw nothing before it.
    let acme_root = Auth::bearer(&root_token());
    put_policy(
        &ch,
        &acme_root,
        "elsewhere",
        "p.rego",
        "package p\n\nallow := true\n",
    )
    .await
    .unwrap();
    let d = decide(
        &ch,
        &other,
        pb::DecideRequest {
            path: "p/allow".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.outcome, pb::Outcome::Allow as i32);
    let e = elsewhere.message().await.unwrap().expect("stream open");
    assert_eq!(e.decision_id, d.decision_id);
    assert_eq!(e.namespace, "elsewhere");
    gw.stop().await;
}

/// One gRPC-Web call over HTTP/1.1: (HTTP status, response headers, body).
async fn grpc_web(
    addr: SocketAddr,
    path: &str,
    message: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut b = hyper::Request::builder()
        .method("POST")
        .version(http::Version::HTTP_11)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .request(b.body(Full::new(bytes::Bytes::from(frame))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// Splits a gRPC-Web body into (messages, trailers text).
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_over_http1_with_cors() {
    use prost::Message as _;
    let gw = Gw::start(
        &[("GATEWAY_TOKEN", "web-token")],
        "  addr: 127.0.0.1:0\n  cors_origins: [\"https://console.example.com\"]\n",
    )
    .await;
    let path = "/portcullis.v1.StatusService/GetStatus";
    let (status, headers, body) = grpc_web(
        gw.gateway,
        path,
        pb::GetStatusRequest {}.encode_to_vec(),
        &[
            ("authorization", "Bearer web-token"),
            ("origin", "https://console.example.com"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web"),
        "{headers:?}"
    );
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://console.example.com"
    );
    let (messages, trailers) = frames(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let reply = pb::GetStatusResponse::decode(messages[0].as_slice()).unwrap();
    assert_eq!(reply.auth_mode, "token");
    assert_eq!(reply.default_namespace, "default");

    // Without credentials: UNAUTHENTICATED through gRPC-Web too; an unlisted origin gets no
    // CORS grant.
    let (_, headers, body) = grpc_web(
        gw.gateway,
        path,
        pb::GetStatusRequest {}.encode_to_vec(),
        &[("origin", "https://evil.example.com")],
    )
    .await;
    let grpc_status = headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| frames(&body).1);
    assert!(
        grpc_status.contains(&(Code::Unauthenticated as i32).to_string()),
        "{grpc_status}"
    );
    assert!(headers.get("access-control-allow-origin").is_none());

    // The CORS preflight for an allowed origin.
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let preflight = hyper::Request::builder()
        .method("OPTIONS")
        .uri(format!("http://{}{path}", gw.gateway))
        .header("origin", "https://console.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web",
        )
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(preflight).await.unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.status());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    gw.stop().await;
}

#[tokio::test]
async fn health_reflection_and_status_on_the_gateway() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let gw = Gw::start_with(&[("GATEWAY_TOKEN", "t")], "  addr: 127.0.0.1:0\n", true).await;
    let ch = gw.channel().await;
    let status = StatusServiceClient::new(ch.clone())
        .get_status(req(pb::GetStatusRequest::default(), &Auth::bearer("t")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        gw.store.snapshot().bundles().len(),
        1,
        "{:?}",
        gw.store.snapshot()
    );
    assert_eq!(status.bundle_revisions.values().collect::<Vec<_>>(), ["r7"]);
    assert_eq!(status.policy_revision, gw.store.snapshot().revision());
    // A write next to a bundle keeps the bundle.
    DataServiceClient::new(ch.clone())
        .put_data(req(
            pb::PutDataRequest {
                namespace: String::new(),
                path: "extra".into(),
                value: Some(pb::json_to_value(&json!(2))),
            },
            &Auth::bearer("t"),
        ))
        .await
        .unwrap();
    let got = DataServiceClient::new(ch.clone())
        .get_data(req(
            pb::GetDataRequest {
                namespace: String::new(),
                path: "bundled/x".into(),
            },
            &Auth::bearer("t"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pb::value_to_json(&got.value.unwrap()).unwrap(), json!(1));
    let mut health = HealthClient::new(ch.clone());
    for service in [
        "",
        "portcullis.v1.DecisionService",
        "portcullis.v1.PolicyService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service}");
    }
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(ch);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "portcullis.v1.DecisionService",
        "portcullis.v1.PolicyService",
        "portcullis.v1.DataService",
        "portcullis.v1.DecisionLogService",
        "portcullis.v1.AuthService",
        "portcullis.v1.StatusService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    gw.stop().await;
}
