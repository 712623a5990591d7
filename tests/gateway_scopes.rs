//! Scoped gateway tokens cannot escape their scope: agent tokens on namespace-level writes,
//! sibling namespaces sharing a prefix, read grants on write RPCs, empty-string claims,
//! widened delegation and expired parents; `input.caller` bound from the token.

mod support;

use support::gateway::*;

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

    // A batch is authorized item by item before anything is evaluated: one item outside the
    // scope refuses the whole batch.
    let batch = |agents: &[&str]| pb::DecideBatchRequest {
        requests: agents
            .iter()
            .map(|a| pb::DecideRequest {
                path: "app/echo".into(),
                agent: a.to_string(),
                ..Default::default()
            })
            .collect(),
    };
    let mut decisions = DecisionServiceClient::new(ch.clone());
    let ok = decisions
        .decide_batch(req(batch(&["bot", ""]), &agent))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.responses.len(), 2);
    assert_eq!(
        code(
            decisions
                .decide_batch(req(batch(&["bot", "other"]), &agent))
                .await
        ),
        Code::PermissionDenied
    );

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
