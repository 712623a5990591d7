//! Finding 7: in dry-run, a caller-sent `x-internal-token` reached the upstream: an
//! authentication denial, a bad JWT or a policy denial answered OK with no
//! `headers_to_remove`.

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::{ISSUER, Key, claims, jwks, req};

fn config() -> String {
    format!(
        r#"plugins:
  envoy_ext_authz_grpc: {{dry-run: true}}
authentication:
  policies:
    - name: api
      match: {{path_prefixes: [/v1/]}}
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: "{{dir}}/jwks.json"}}
internal_token:
  enabled: true
"#
    )
}

#[tokio::test]
async fn a_forged_internal_token_never_passes_in_dry_run() {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let config = config();
    let s = Sidecar::start(Setup {
        config: &config,
        files: vec![
            ("jwks.json", jwks(&[&key]).to_string()),
            (
                "policy.rego",
                "package envoy.authz\ndefault allow := false\nallow if input.attributes.request.http.method == \"GET\"\n"
                    .into(),
            ),
        ],
        env: vec![],
    })
    .await;
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjZW8ifQ.";
    let cases = [
        ("no credential", req("/v1/x")),
        ("a bad JWT", req("/v1/x").bearer("not.a.jwt")),
        (
            "a policy denial",
            req("/v1/x").method("POST").bearer(&key.sign(&claims("a"))),
        ),
        ("no authentication at all", req("/public").method("POST")),
    ];
    for (what, r) in cases {
        let a = s.check(r.header("x-internal-token", forged)).await;
        assert_eq!(a.grpc, 0, "{what}: dry-run answers OK: {}", a.json);
        assert!(
            a.removed.iter().any(|h| h == "x-internal-token"),
            "{what}: the caller's token must be removed: {}",
            a.json
        );
        assert!(a.header("x-internal-token").is_none(), "{what}: {}", a.json);
    }
    // An allowed, authenticated request gets Portcullis' own token instead.
    let a = s
        .check(
            req("/v1/x")
                .bearer(&key.sign(&claims("a")))
                .header("x-internal-token", forged),
        )
        .await;
    let minted = a.header("x-internal-token").expect("a minted token");
    assert_ne!(minted, forged);
    s.stop().await;
}
