//! Finding 6: a `trust.oidc` issuer without `audiences` accepted ID tokens issued to any
//! client of that issuer, and such a token satisfied every `jwt` policy whatever that policy's
//! own `issuer` and `audiences` said.

use serde_json::json;

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::{ISSUER, IssuerServer, Key, claims, jwks, now, req};

#[tokio::test]
async fn a_trusted_issuer_needs_audiences() {
    let err = Sidecar::try_start(Setup {
        config: r#"authentication:
  policies:
    - name: api
      methods: [jwt]
  trust:
    oidc:
      - issuer: https://accounts.example.com
"#,
        ..Default::default()
    })
    .await
    .err()
    .expect("start-up must fail");
    assert!(err.contains("audiences"), "{err}");
}

#[tokio::test]
async fn a_trusted_issuer_never_replaces_a_policys_own_rules() {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let idp = IssuerServer::start(jwks(&[&key])).await;
    let iss = idp.url();
    let config = format!(
        r#"authentication:
  policies:
    - name: orders
      match: {{path_prefixes: [/orders/]}}
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: "{{dir}}/jwks.json"}}
    - name: console
      match: {{path_prefixes: [/console/]}}
      methods: [jwt]
  trust:
    oidc:
      - issuer: {iss}
        audiences: [console]
"#
    );
    let s = Sidecar::start(Setup {
        config: &config,
        files: vec![
            ("jwks.json", jwks(&[&key]).to_string()),
            ("policy.rego", crate::support::authn::ECHO_POLICY.into()),
        ],
        env: vec![],
    })
    .await;
    let id_token = key.sign(&json!({"iss": iss, "aud": "console", "sub": "mallory",
                                     "exp": now() + 300}));
    // The orders policy names its own issuer and audience: the trusted issuer's token is not
    // one of its tokens.
    s.check(req("/orders/1").bearer(&id_token))
        .await
        .assert_refused(401, "invalid_token");
    // Where only trusted issuers are accepted, it is.
    let a = s.check(req("/console/x").bearer(&id_token)).await;
    assert!(a.allowed(), "{}", a.json);
    // And the orders policy's own tokens still pass.
    let own = s
        .check(req("/orders/1").bearer(&key.sign(&claims("alice"))))
        .await;
    assert!(own.allowed(), "{}", own.json);
    s.stop().await;
}
