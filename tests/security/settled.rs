//! The review's suspected findings, settled: path-matching normalization, unbounded streams,
//! internal tokens without an audience, far-future `iat`, duplicate JSON members in tokens,
//! and private key file permissions.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::{ISSUER, Key, claims, fixture, jwks, now, req};
use crate::support::gateway::{Auth, SECRET, pb, root_token};

fn jwt_setup(extra: &str) -> (String, Vec<(&'static str, String)>) {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let config = format!(
        r#"authentication:
  policies:
    - name: admin
      match: {{path_prefixes: [/admin/]}}
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: "{{dir}}/jwks.json"}}
{extra}"#
    );
    (
        config,
        vec![
            ("jwks.json", jwks(&[&key]).to_string()),
            ("policy.rego", crate::support::authn::ECHO_POLICY.into()),
        ],
    )
}

#[tokio::test]
async fn an_admin_policy_cannot_be_walked_around_by_case_or_path_parameters() {
    let (config, files) = jwt_setup("");
    let s = Sidecar::start(Setup {
        config: &config,
        files,
        env: vec![],
    })
    .await;
    for path in [
        "/ADMIN/panel",
        "/Admin/panel",
        "/admin;jsessionid=1/panel",
        "/x/..;/admin/panel",
        "/%2561dmin/panel/../panel",
        "/admin%2Fpanel",
    ] {
        let a = s.check(req(path)).await;
        // Either the policy applies (401), or the path cannot be parsed at all (400): never
        // an anonymous pass.
        assert!(
            a.http == Some(401) || a.http == Some(400),
            "{path}: {}",
            a.json
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn tokens_issued_in_the_future_or_with_duplicate_members_are_refused() {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let (config, files) = jwt_setup("");
    let s = Sidecar::start(Setup {
        config: &config,
        files,
        env: vec![],
    })
    .await;
    let mut future = claims("alice");
    future["iat"] = json!(now() + 86_400);
    s.check(req("/admin/x").bearer(&key.sign(&future)))
        .await
        .assert_refused(401, "invalid_token");
    // `sub` twice: one parser could read "alice", another "admin".
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"ec-a"}"#);
    let c = claims("alice");
    let payload = format!(
        r#"{{"iss":"{ISSUER}","aud":"orders","exp":{},"sub":"alice","sub":"admin"}}"#,
        c["exp"]
    );
    let token = key.sign_with_header(
        &serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&header).unwrap()).unwrap(),
        &json!({}),
    );
    // Re-sign the raw payload with duplicate members (serde_json would merge them).
    let msg = format!("{header}.{}", URL_SAFE_NO_PAD.encode(&payload));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key.enc, key.alg).unwrap();
    let duplicate = format!("{msg}.{}", crate::support::authn::low_s(key.alg, &sig));
    assert_ne!(duplicate, token);
    s.check(req("/admin/x").bearer(&duplicate))
        .await
        .assert_refused(401, "invalid_token");
    s.stop().await;
}

#[tokio::test]
async fn no_internal_token_is_minted_without_an_audience() {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let (config, files) = jwt_setup("internal_token:\n  enabled: true\n");
    let s = Sidecar::start(Setup {
        config: &config,
        files,
        env: vec![],
    })
    .await;
    let mut r = req("/admin/x").bearer(&key.sign(&claims("alice")));
    r.spec.destination_principal = None;
    let a = s.check(r.header("x-internal-token", "forged")).await;
    assert!(a.allowed(), "{}", a.json);
    assert!(a.header("x-internal-token").is_none(), "{}", a.json);
    assert!(
        a.removed.iter().any(|h| h == "x-internal-token"),
        "{}",
        a.json
    );
    // With a destination principal there is an audience, and a token.
    let a = s
        .check(req("/admin/x").bearer(&key.sign(&claims("alice"))))
        .await;
    assert!(a.header("x-internal-token").is_some(), "{}", a.json);
    s.stop().await;
}

#[tokio::test]
async fn private_keys_others_can_read_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keys.join("k1.pem");
    std::fs::write(&key, fixture("ec256-a.key.pem")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = format!("internal_token:\n  keys: {{dir: {}}}\n", keys.display());
    let err = Sidecar::try_start(Setup {
        config: &config,
        ..Default::default()
    })
    .await
    .err()
    .expect("start-up must fail");
    assert!(err.contains("k1.pem") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Sidecar::try_start(Setup {
        config: &config,
        ..Default::default()
    })
    .await
    .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn decision_streams_are_bounded() {
    let s = Sidecar::start(Setup {
        config: "gateway: {addr: \"127.0.0.1:0\"}\n",
        files: vec![("policy.rego", "package envoy.authz\nallow := true\n".into())],
        env: vec![("GATEWAY_JWT_SECRET", SECRET)],
    })
    .await;
    let ch = s.gateway().await;
    let root = Auth::bearer(&root_token());
    let mut open = Vec::new();
    let max = portcullis::gateway::logs::MAX_STREAMS;
    for _ in 0..max {
        let stream = pb::decision_log_service_client::DecisionLogServiceClient::new(ch.clone())
            .stream_decisions(crate::support::gateway::req(
                pb::StreamDecisionsRequest::default(),
                &root,
            ))
            .await
            .unwrap();
        open.push(stream);
    }
    let r = pb::decision_log_service_client::DecisionLogServiceClient::new(ch.clone())
        .stream_decisions(crate::support::gateway::req(
            pb::StreamDecisionsRequest::default(),
            &root,
        ))
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::ResourceExhausted);
    drop(open);
    s.stop().await;
}

/// Found while settling finding 1's class: a tenant's policy asked for an internal token for
/// another namespace, which the upstreams of that namespace would trust.
#[tokio::test]
async fn a_namespace_policy_mints_tokens_within_its_namespace_only() {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let (config, files) =
        jwt_setup("internal_token:\n  enabled: false\ngateway: {addr: \"127.0.0.1:0\"}\n");
    let s = Sidecar::start(Setup {
        config: &config.replace("[/admin/]", "[/]"),
        files,
        env: vec![("GATEWAY_JWT_SECRET", SECRET)],
    })
    .await;
    let ch = s.gateway().await;
    let tenant = Auth::bearer(&crate::support::gateway::token(json!({
        "sub": "tenant", "aud": crate::support::gateway::AUD, "exp": now() + 600, "ns": "acme",
        "grants": [{"kind": "readwrite"}]
    })));
    let policy = r#"package envoy.authz
h := input.attributes.request.http.headers
ask := {"grant": "readwrite", "namespace": h["x-ns"]} if h["x-ns"]
ask := {"grant": "readwrite"} if not h["x-ns"]
allow := {"allowed": true, "internal_token": ask}
"#;
    crate::support::gateway::put_policy(&ch, &tenant, "acme", "p.rego", policy)
        .await
        .unwrap();
    let bearer = key.sign(&claims("alice"));
    let in_acme = |r: crate::support::authn::Req| {
        let mut r = r.bearer(&bearer);
        r.spec
            .context_extensions
            .insert("namespace".into(), "acme".into());
        r
    };
    let token_claims = |t: &str| -> serde_json::Value {
        let payload = t.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let own = s.check(in_acme(req("/x"))).await;
    let t = own.header("x-internal-token").expect("a token for acme");
    assert_eq!(token_claims(t)["ns"], "acme");
    let child = s
        .check(in_acme(req("/x").header("x-ns", "acme:team")))
        .await;
    assert_eq!(
        token_claims(child.header("x-internal-token").unwrap())["ns"],
        "acme:team"
    );
    let other = s.check(in_acme(req("/x").header("x-ns", "payments"))).await;
    assert!(other.allowed());
    assert!(other.header("x-internal-token").is_none(), "{}", other.json);
    assert!(other.removed.iter().any(|h| h == "x-internal-token"));
    s.stop().await;
}

/// Finding 12's class on the HTTP API: a rebinding page must not read decisions and data.
#[tokio::test]
async fn the_http_api_answers_loopback_host_names_only() {
    let s = Sidecar::start(Setup {
        config: "",
        files: vec![
            ("policy.rego", "package envoy.authz\nallow := true\n".into()),
            ("data.json", json!({"secret": "s3cr3t"}).to_string()),
        ],
        env: vec![],
    })
    .await;
    let get = |host: &'static str| {
        let addr = s.http;
        async move {
            use http_body_util::{BodyExt, Empty};
            let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let mut b = hyper::Request::builder().uri(format!("http://{addr}/v1/data/secret"));
            if !host.is_empty() {
                b = b.header("host", host);
            }
            let resp = client.request(b.body(Empty::new()).unwrap()).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = get("evil.example:8181").await;
    assert_eq!(status, 403);
    assert!(!body.contains("s3cr3t"));
    let (status, body) = get("").await;
    assert_eq!(status, 200);
    assert!(body.contains("s3cr3t"));
    assert_eq!(get("localhost:8181").await.0, 200);
    s.stop().await;
}
