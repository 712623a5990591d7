//! Finding 5: a token `{ns: acme, agent: bot}` was refused `GetData`, but `Decide{namespace:
//! acme, path: "acme_secret"}` returned the secret, and `path: "users"` every user.

use crate::sidecar::{Setup, Sidecar};
use crate::support::gateway::{AUD, Auth, SECRET, code, decide, now, pb, root_token, token};
use pb::data_service_client::DataServiceClient;
use tonic::Code;

#[tokio::test]
async fn callers_below_namespace_level_get_decisions_never_data() {
    let s = Sidecar::start(Setup {
        config: "gateway: {addr: \"127.0.0.1:0\"}\n",
        files: vec![(
            "policy.rego",
            "package envoy.authz\nallow := false\n".into(),
        )],
        env: vec![("GATEWAY_JWT_SECRET", SECRET)],
    })
    .await;
    let ch = s.gateway().await;
    let root = Auth::bearer(&root_token());
    crate::support::gateway::put_policy(
        &ch,
        &root,
        "acme",
        "acme.rego",
        "package acme\nallow if input.caller.agent == \"bot\"\nresult[\"allowed\"] := allow\n",
    )
    .await
    .unwrap();
    let mut data = DataServiceClient::new(ch.clone());
    for (path, value) in [
        ("acme_secret", serde_json::json!("s3cr3t")),
        (
            "users",
            serde_json::json!({"alice": {"password": "hunter2"}}),
        ),
        ("acme/limits", serde_json::json!({"max": 3})),
    ] {
        data.put_data(crate::support::gateway::req(
            pb::PutDataRequest {
                namespace: "acme".into(),
                path: path.into(),
                value: Some(pb::json_to_value(&value)),
            },
            &root,
        ))
        .await
        .unwrap();
    }
    let bot = Auth::bearer(&token(serde_json::json!({
        "sub": "bot-1", "aud": AUD, "exp": now() + 600, "ns": "acme", "agent": "bot",
        "grants": [{"kind": "read"}]
    })));
    let ask = |auth: Auth, path: &'static str| {
        let ch = ch.clone();
        async move {
            decide(
                &ch,
                &auth,
                pb::DecideRequest {
                    namespace: "acme".into(),
                    path: path.into(),
                    ..Default::default()
                },
            )
            .await
        }
    };
    // Plain data, and a package document that data is merged into: refused.
    for path in [
        "acme_secret",
        "users",
        "users/alice",
        "acme",
        "acme/limits",
        "",
    ] {
        assert_eq!(
            code(ask(bot.clone(), path).await),
            Code::PermissionDenied,
            "{path:?}"
        );
    }
    // Decisions: a rule, and a document made only of ref-head rules.
    let allowed = ask(bot.clone(), "acme/allow").await.unwrap();
    assert_eq!(allowed.outcome, pb::Outcome::Allow as i32);
    let result = ask(bot.clone(), "acme/result").await.unwrap();
    assert_eq!(result.outcome, pb::Outcome::Allow as i32);
    // A namespace-level reader may read the data anyway, through GetData or Decide.
    let reader = Auth::bearer(&token(serde_json::json!({
        "sub": "ops", "aud": AUD, "exp": now() + 600, "ns": "acme",
        "grants": [{"kind": "read"}]
    })));
    let secret = ask(reader, "acme_secret").await.unwrap();
    assert!(format!("{:?}", secret.result).contains("s3cr3t"));
    s.stop().await;
}
