//! The gateway's AuthService wired to the authentication module: API keys created, listed,
//! exchanged and revoked; ID tokens from a trusted OIDC issuer exchanged; the internal-token
//! JWKS.

mod support;

use support::authn::{IssuerServer, Key, jwks};
use support::gateway::*;

/// A gateway in JWT mode with an API key store, a trusted OIDC issuer granting `read` on
/// `acme`, a token revocation list, and internal-token keys.
async fn start(issuer: &str) -> (Gw, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(&store, "{\"keys\": []}").unwrap();
    let yaml = format!(
        "  addr: 127.0.0.1:0
  api_key_scopes: [orders:read]
authentication:
  policies:
    - name: keys
      match: {{path_prefixes: [/keys-only/]}}
      methods: [api_key]
      required: false
      api_key: {{header: x-api-key, prefix: sk_gw_, store: \"{}\"}}
  revocation: {{file: \"{}\"}}
  trust:
    oidc:
      - issuer: {issuer}
        audiences: [portcullis]
        grants: [{{kind: read, namespace: acme}}]
internal_token:
  enabled: false
",
        store.display(),
        dir.path().join("revoked.json").display()
    );
    let gw = Gw::start(&[("GATEWAY_JWT_SECRET", SECRET)], &yaml).await;
    (gw, dir)
}

#[tokio::test]
async fn api_keys_are_created_exchanged_and_revoked() {
    let (gw, _dir) = start("https://issuer.invalid").await;
    let ch = gw.channel().await;
    let root = Auth::bearer(&root_token());
    let mut auth = AuthServiceClient::new(ch.clone());

    let created = auth
        .create_api_key(req(
            pb::CreateApiKeyRequest {
                subject: "root/ci-bot".into(),
                scopes: vec!["gateway:readwrite@acme".into(), "orders:read".into()],
                ttl_seconds: 0,
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret.clone();
    assert!(secret.starts_with("sk_gw_"), "the policy's prefix");
    let key = created.key.unwrap();
    assert_eq!(key.subject, "root/ci-bot");

    // Listings never show the secret (nor its hash).
    let listed = auth
        .list_api_keys(req(pb::ListApiKeysRequest {}, &root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert_eq!(listed.keys[0].id, key.id);
    assert!(!format!("{listed:?}").contains(&secret));

    // The key exchanges for a gateway token with its gateway scope as the grant.
    let token = auth
        .exchange_api_key(req(
            pb::ExchangeApiKeyRequest {
                api_key: secret.clone(),
                scope: None,
                ttl_seconds: 60,
            },
            &Auth::None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(token.grants.len(), 1);
    assert_eq!(token.grants[0].namespace, "acme");
    // The listing shows the key's use (it was never used before the exchange).
    assert_eq!(listed.keys[0].last_used_at, 0);
    let listed = auth
        .list_api_keys(req(pb::ListApiKeysRequest {}, &root))
        .await
        .unwrap()
        .into_inner();
    let used = listed.keys[0].last_used_at;
    assert!(used > 0 && used <= now() as i64, "{listed:?}");
    let bot = Auth::bearer(&token.token);
    put_policy(&ch, &bot, "acme", "a.rego", "package a\n")
        .await
        .unwrap();
    assert_eq!(
        code(put_policy(&ch, &bot, "other", "a.rego", "package a\n").await),
        Code::PermissionDenied
    );
    // The bot may not manage keys (that needs the default namespace).
    assert_eq!(
        code(
            auth.list_api_keys(req(pb::ListApiKeysRequest {}, &bot))
                .await
        ),
        Code::PermissionDenied
    );

    // Wrong keys: UNAUTHENTICATED, whatever is wrong.
    for wrong in ["sk_gw_nope", "no-prefix", ""] {
        let r = auth
            .exchange_api_key(req(
                pb::ExchangeApiKeyRequest {
                    api_key: wrong.into(),
                    ..Default::default()
                },
                &Auth::None,
            ))
            .await;
        assert_eq!(code(r), Code::Unauthenticated, "{wrong:?}");
    }
    // A key without a gateway scope exchanges for nothing.
    let plain = auth
        .create_api_key(req(
            pb::CreateApiKeyRequest {
                subject: "root/reader".into(),
                scopes: vec!["orders:read".into()],
                ttl_seconds: 600,
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    let r = auth
        .exchange_api_key(req(
            pb::ExchangeApiKeyRequest {
                api_key: plain.secret,
                ..Default::default()
            },
            &Auth::None,
        ))
        .await;
    assert_eq!(code(r), Code::PermissionDenied);

    // Revoked: no more exchanges; an unknown id is NOT_FOUND.
    auth.revoke_api_key(req(pb::RevokeApiKeyRequest { id: key.id.clone() }, &root))
        .await
        .unwrap();
    let r = auth
        .exchange_api_key(req(
            pb::ExchangeApiKeyRequest {
                api_key: secret,
                ..Default::default()
            },
            &Auth::None,
        ))
        .await;
    assert_eq!(code(r), Code::Unauthenticated);
    let r = auth
        .revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                id: "key_nope".into(),
            },
            &root,
        ))
        .await;
    assert_eq!(code(r), Code::NotFound);
    gw.stop().await;
}

#[tokio::test]
async fn keys_never_widen_the_creator() {
    let (gw, _dir) = start("https://issuer.invalid").await;
    let ch = gw.channel().await;
    let mut auth = AuthServiceClient::new(ch.clone());
    // Readwrite on the default namespace (enough to manage keys) and read elsewhere.
    let exp = now() + 120;
    let admin = Auth::bearer(&token(serde_json::json!({
        "sub": "admin", "aud": "portcullis-gateway", "exp": exp,
        "grants": [{"kind": "readwrite", "namespace": "default"}, {"kind": "read"}]
    })));
    let create = |scopes: &[&str]| pb::CreateApiKeyRequest {
        subject: "admin/k".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ttl_seconds: 0,
    };
    for wider in [&["gateway:readwrite"][..], &["gateway:readwrite@acme"]] {
        let r = auth.create_api_key(req(create(wider), &admin)).await;
        assert_eq!(code(r), Code::PermissionDenied, "{wider:?}");
    }
    let r = auth
        .create_api_key(req(create(&["gateway:admin"]), &admin))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    // Within its grants; the key expires with the creator's token.
    let ok = auth
        .create_api_key(req(
            create(&["gateway:read@acme", "gateway:readwrite@default"]),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.key.unwrap().expires_at, exp as i64);
    gw.stop().await;
}

#[tokio::test]
async fn oidc_id_tokens_exchange_for_the_issuers_grants() {
    let key = Key::es256("ec256-a.key.pem", "k1");
    let issuer = IssuerServer::start(jwks(&[&key])).await;
    let iss = issuer.url();
    let (gw, _dir) = start(&iss).await;
    let ch = gw.channel().await;
    let mut auth = AuthServiceClient::new(ch.clone());
    let id_exp = now() + 90;
    let id_token = key.sign(&serde_json::json!({
        "iss": iss, "aud": "portcullis", "sub": "alice@example.com", "exp": id_exp, "iat": now(),
        "jti": "id-1"
    }));
    let exchange = |id_token: String| {
        let mut auth = auth.clone();
        async move {
            auth.exchange_oidc_token(req(
                pb::ExchangeOidcTokenRequest {
                    id_token,
                    scope: None,
                    ttl_seconds: 3600,
                },
                &Auth::None,
            ))
            .await
        }
    };
    let token = exchange(id_token.clone()).await.unwrap().into_inner();
    assert!(
        token.expires_at as u64 <= id_exp,
        "no later than the ID token"
    );
    assert_eq!(token.grants.len(), 1);
    assert_eq!(token.grants[0].kind, pb::GrantKind::Read as i32);
    let alice = Auth::bearer(&token.token);
    let listed = PolicyServiceClient::new(ch.clone())
        .list_policies(req(
            pb::ListPoliciesRequest {
                namespace: "acme".into(),
            },
            &alice,
        ))
        .await;
    assert_eq!(
        code(listed),
        Code::NotFound,
        "allowed to look; acme does not exist yet"
    );
    assert_eq!(
        code(put_policy(&ch, &alice, "acme", "a.rego", "package a\n").await),
        Code::PermissionDenied
    );
    // A revoked ID token exchanges for nothing.
    AuthServiceClient::new(ch.clone())
        .revoke_token(req(
            pb::RevokeTokenRequest {
                target: Some(pb::revoke_token_request::Target::Jti(pb::RevokeJti {
                    jti: "id-1".into(),
                    expires_at: id_exp as i64,
                })),
            },
            &Auth::bearer(&root_token()),
        ))
        .await
        .unwrap();
    assert_eq!(code(exchange(id_token).await), Code::Unauthenticated);

    // Another key, another audience, an untrusted issuer: UNAUTHENTICATED.
    let other = Key::es256("ec256-b.key.pem", "k1");
    for bad in [
        other.sign(&serde_json::json!({"iss": iss, "aud": "portcullis", "sub": "m", "exp": now() + 60})),
        key.sign(&serde_json::json!({"iss": iss, "aud": "elsewhere", "sub": "m", "exp": now() + 60})),
        key.sign(&serde_json::json!({"iss": "https://evil.test", "aud": "portcullis", "sub": "m", "exp": now() + 60})),
        key.sign(&serde_json::json!({"iss": iss, "aud": "portcullis", "sub": "m", "exp": now() - 3600})),
    ] {
        let r = auth
            .exchange_oidc_token(req(
                pb::ExchangeOidcTokenRequest {
                    id_token: bad,
                    ..Default::default()
                },
                &Auth::None,
            ))
            .await;
        assert_eq!(code(r), Code::Unauthenticated);
    }
    gw.stop().await;
}

#[tokio::test]
async fn jwks_publishes_internal_token_keys_never_the_gateway_secret() {
    let (gw, _dir) = start("https://issuer.invalid").await;
    let jwks = AuthServiceClient::new(gw.channel().await)
        .get_jwks(req(pb::GetJwksRequest {}, &Auth::None))
        .await
        .unwrap()
        .into_inner();
    let doc: serde_json::Value = serde_json::from_str(&jwks.jwks_json).unwrap();
    assert!(!doc["keys"].as_array().unwrap().is_empty());
    assert!(doc["keys"][0]["kid"].is_string());
    assert!(!jwks.jwks_json.contains(SECRET));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    assert!(!jwks.jwks_json.contains(&b64));
    gw.stop().await;
}
