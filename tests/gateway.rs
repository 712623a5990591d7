//! The gateway against a real server on loopback: every RPC under every auth mode; health,
//! reflection and status.

mod support;

use support::gateway::*;

/// Calls `rpc` with a valid request; the result code.
async fn call(
    ch: &Channel,
    rpc: portcullis::gateway::access::Rpc,
    auth: &Auth,
    api_key: &str,
) -> Code {
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
                .exchange_oidc_token(req(
                    pb::ExchangeOidcTokenRequest {
                        id_token: "not-a-token".into(),
                        ..Default::default()
                    },
                    auth,
                ))
                .await,
        ),
        R::CreateApiKey => code(
            AuthServiceClient::new(ch.clone())
                .create_api_key(req(
                    pb::CreateApiKeyRequest {
                        subject: String::new(),
                        scopes: vec!["gateway:read".into()],
                        ttl_seconds: 0,
                    },
                    auth,
                ))
                .await,
        ),
        R::ListApiKeys => code(
            AuthServiceClient::new(ch.clone())
                .list_api_keys(req(pb::ListApiKeysRequest::default(), auth))
                .await,
        ),
        R::RevokeApiKey => {
            let mut c = AuthServiceClient::new(ch.clone());
            let id = c
                .create_api_key(req(
                    pb::CreateApiKeyRequest {
                        subject: String::new(),
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .ok()
                .and_then(|r| r.into_inner().key.map(|k| k.id))
                .unwrap_or_else(|| "missing".into());
            code(
                c.revoke_api_key(req(pb::RevokeApiKeyRequest { id }, auth))
                    .await,
            )
        }
        R::ExchangeApiKey => code(
            AuthServiceClient::new(ch.clone())
                .exchange_api_key(req(
                    pb::ExchangeApiKeyRequest {
                        api_key: api_key.into(),
                        ..Default::default()
                    },
                    auth,
                ))
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
        R::RevokeToken => code(
            AuthServiceClient::new(ch.clone())
                .revoke_token(req(
                    pb::RevokeTokenRequest {
                        target: Some(pb::revoke_token_request::Target::Subject(
                            pb::RevokeSubject {
                                subject: "nobody".into(),
                                ..Default::default()
                            },
                        )),
                    },
                    auth,
                ))
                .await,
        ),
        R::ListRevocations => code(
            AuthServiceClient::new(ch.clone())
                .list_revocations(req(pb::ListRevocationsRequest::default(), auth))
                .await,
        ),
    }
}

/// What a valid caller gets from each RPC: OK, or the documented refusal.
fn expected(rpc: portcullis::gateway::access::Rpc, mode: &str) -> Code {
    use portcullis::gateway::access::Rpc as R;
    match rpc {
        // A garbage ID token (tests/gateway_auth.rs exchanges a real one).
        R::ExchangeOidcToken if mode == "jwt" => Code::Unauthenticated,
        R::ExchangeOidcToken => Code::FailedPrecondition,
        // Issuing gateway tokens needs JWT mode.
        R::MintAccessToken | R::ExchangeApiKey if mode != "jwt" => Code::FailedPrecondition,
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
        // An API key store (with one key carrying a gateway grant) and internal-token keys.
        let keys_dir = tempfile::tempdir().unwrap();
        let store_path = keys_dir.path().join("keys.json");
        std::fs::write(&store_path, "{\"keys\": []}").unwrap();
        let api_key = portcullis::authn::api_key::ApiKeyStore::open(&store_path)
            .unwrap()
            .create(portcullis::authn::api_key::NewApiKey {
                subject: "svc".into(),
                scopes: vec!["gateway:read".into()],
                prefix: "sk_gw_".into(),
                ..Default::default()
            })
            .unwrap()
            .secret;
        let yaml = format!(
            "  addr: 127.0.0.1:0\nauthentication:\n  policies:\n    - name: keys\n      \
             match: {{path_prefixes: [/keys-only/]}}\n      methods: [api_key]\n      \
             required: false\n      api_key: {{header: x-api-key, prefix: sk_gw_, store: \"{}\"}}\n  \
             revocation: {{file: \"{}\"}}\n\
             internal_token:\n  enabled: false\n",
            store_path.display(),
            keys_dir.path().join("revoked.json").display()
        );
        let gw = Gw::start(&env, &yaml).await;
        let ch = gw.channel().await;
        for rpc in Rpc::ALL {
            let got = call(&ch, *rpc, &good, &api_key).await;
            assert_eq!(
                got,
                expected(*rpc, mode),
                "{mode}: {rpc:?} with good credentials"
            );
            for b in &bad {
                let got = call(&ch, *rpc, b, &api_key).await;
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
    let mut reflection = ServerReflectionClient::new(ch.clone());
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
    // grpcurl before 1.9 asks the v1alpha service.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("{reply:?}");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "portcullis.v1.DecisionService"),
            "{list:?}"
        );
    }
    gw.stop().await;
}
