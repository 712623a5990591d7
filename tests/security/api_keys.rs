//! Finding 1: a gateway caller with readwrite on `default` minted a key for `ceo` carrying
//! `admin` and `payments:write`, which then passed a Check in another namespace.

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::req as check_req;
use crate::support::gateway::{AUD, Auth, SECRET, code, now, pb, token};
use pb::auth_service_client::AuthServiceClient;
use tonic::Code;

const POLICY: &str = r#"package envoy.authz

default allow := false

# The payments namespace's rule, as its owners wrote it.
allow if "payments:write" in input.identity.scopes
"#;

fn setup() -> Setup<'static> {
    Setup {
        config: r#"gateway:
  addr: 127.0.0.1:0
  api_key_scopes: [orders:read]
authentication:
  policies:
    - name: keys
      methods: [api_key]
      api_key: {header: x-api-key, prefix: sk_, store: "{dir}/keys.json"}
"#,
        files: vec![
            ("keys.json", "{\"keys\": []}".into()),
            ("policy.rego", POLICY.into()),
        ],
        env: vec![("GATEWAY_JWT_SECRET", SECRET)],
    }
}

/// A caller with readwrite on `default` only, and read elsewhere.
fn default_admin() -> Auth {
    Auth::bearer(&token(serde_json::json!({
        "sub": "alice", "aud": AUD, "exp": now() + 600,
        "grants": [{"kind": "readwrite", "namespace": "default"}]
    })))
}

async fn create(
    s: &Sidecar,
    auth: &Auth,
    subject: &str,
    scopes: &[&str],
) -> Result<pb::CreateApiKeyResponse, tonic::Status> {
    AuthServiceClient::new(s.gateway().await)
        .create_api_key(crate::support::gateway::req(
            pb::CreateApiKeyRequest {
                subject: subject.into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ttl_seconds: 0,
            },
            auth,
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_key_never_names_another_subject() {
    let s = Sidecar::start(setup()).await;
    let alice = default_admin();
    for subject in ["ceo", "alice2", "alicex/ci", "alice/", "root"] {
        let r = create(&s, &alice, subject, &[]).await;
        assert_eq!(code(r), Code::PermissionDenied, "subject {subject:?}");
    }
    // Her own subject, or a sub-identity of it.
    let own = create(&s, &alice, "", &[]).await.unwrap();
    assert_eq!(own.key.unwrap().subject, "alice");
    let sub = create(&s, &alice, "alice/ci", &[]).await.unwrap();
    assert_eq!(sub.key.unwrap().subject, "alice/ci");
    s.stop().await;
}

#[tokio::test]
async fn a_key_never_carries_scopes_outside_the_allow_list() {
    let s = Sidecar::start(setup()).await;
    let alice = default_admin();
    // The attack of the review, and each of its parts.
    for scopes in [
        &["admin", "payments:write"][..],
        &["payments:write"],
        &["admin"],
        &["orders:read", "payments:write"],
    ] {
        let r = create(&s, &alice, "alice/bot", scopes).await;
        assert_eq!(code(r), Code::PermissionDenied, "{scopes:?}");
    }
    // What the operator allowed passes, and such a key authenticates on the Check path, where
    // the payments rule still refuses it.
    let ok = create(&s, &alice, "alice/bot", &["orders:read"])
        .await
        .unwrap();
    let answer = s
        .check(check_req("/pay").header("x-api-key", &ok.secret))
        .await;
    assert_eq!(answer.grpc, 7, "{}", answer.json);
    // Nothing was written for the refused requests: one key only.
    let listed = AuthServiceClient::new(s.gateway().await)
        .list_api_keys(crate::support::gateway::req(
            pb::ListApiKeysRequest {},
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1, "{listed:?}");
    s.stop().await;
}
