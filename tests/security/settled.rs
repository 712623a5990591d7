//! The review's suspected findings, settled: path-matching normalization, unbounded streams,
//! internal tokens without an audience, far-future `iat`, duplicate JSON members in tokens,
//! and private key file permissions.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::authn_common::{ISSUER, Key, claims, fixture, jwks, now, req};
use crate::gateway_support::{Auth, SECRET, pb, root_token};
use crate::sidecar::{Setup, Sidecar};

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
            ("policy.rego", crate::authn_common::ECHO_POLICY.into()),
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
    let duplicate = format!("{msg}.{}", crate::authn_common::low_s(key.alg, &sig));
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
            .stream_decisions(crate::gateway_support::req(
                pb::StreamDecisionsRequest::default(),
                &root,
            ))
            .await
            .unwrap();
        open.push(stream);
    }
    let r = pb::decision_log_service_client::DecisionLogServiceClient::new(ch.clone())
        .stream_decisions(crate::gateway_support::req(
            pb::StreamDecisionsRequest::default(),
            &root,
        ))
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::ResourceExhausted);
    drop(open);
    s.stop().await;
}
