//! Namespaces on the Check path, policies refused with their position, and gateway writes that
//! survive a reload of the files.

mod support;

use support::gateway::*;

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
async fn configured_namespaces_load_their_own_files() {
    let ns_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        ns_dir.path().join("p.rego"),
        "package envoy.authz\n\nallow := true\n",
    )
    .unwrap();
    let gw = Gw::start(
        &[("GATEWAY_TOKEN", "t")],
        &format!(
            "  addr: 127.0.0.1:0\nnamespaces:\n  \"files:a\":\n    paths: [\"{}\"]\n",
            ns_dir.path().display()
        ),
    )
    .await;
    let mut check = AuthorizationClient::connect(format!("http://{}", gw.grpc))
        .await
        .unwrap();
    let r = check
        .check(check_request(Some("files:a"), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0, "files:a allows everything");
    let r = check
        .check(check_request(None, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::PermissionDenied as i32);
    let listed = PolicyServiceClient::new(gw.channel().await)
        .list_policies(req(
            pb::ListPoliciesRequest {
                namespace: "files:a".into(),
            },
            &Auth::bearer("t"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.policies.len(), 1);
    assert_eq!(listed.policies[0].source, pb::PolicySource::File as i32);
    assert_eq!(listed.policies[0].package, "envoy.authz");
    gw.stop().await;
}
