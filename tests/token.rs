//! The internal token: minted on allow through the Check path, narrowed, cached, published and
//! verified against the served JWKS as an upstream would.

mod support;

use portcullis::token::verify::{Expect, verify};
use serde_json::{Value as Json, json};
use support::authn::*;

fn config(jwks_file: &std::path::Path, token: &str) -> String {
    format!(
        r#"authentication:
  policies:
    - name: api
      match: {{path_prefixes: ["/v1/"]}}
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: {}}}
internal_token:
{token}
"#,
        jwks_file.display()
    )
}

async fn start(token_cfg: &str) -> (Portcullis, Key) {
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&key]).to_string()).unwrap();
    let cfg = config(&path, token_cfg);
    (Portcullis::start_in(dir, &cfg, &|_: &str| None).await, key)
}

async fn served_jwks(p: &Portcullis) -> String {
    let (status, body) =
        support::http(p.server.http_addr, "GET", "/.well-known/jwks.json", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn verified(p: &Portcullis, token: &str) -> serde_json::Map<String, Json> {
    let jwks = served_jwks(p).await;
    verify(
        token,
        &jwks,
        &Expect {
            issuer: Some("https://portcullis.local".into()),
            audience: None,
        },
        now(),
    )
    .await
    .expect("the minted token verifies against the served JWKS")
}

#[tokio::test]
async fn minted_on_allow_and_verified_against_the_served_jwks() {
    let (p, key) = start("  enabled: true\n  remove_authorization: true").await;
    let caller = key.sign(&claims("alice"));
    let a = p
        .check(
            req("/v1/orders")
                .bearer(&caller)
                .header("x-internal-token", "forged"),
        )
        .await;
    assert!(a.allowed(), "{}", a.json);
    let token = a
        .header("x-internal-token")
        .expect("token header")
        .to_string();
    assert_ne!(token, "forged");
    assert_eq!(
        a.headers
            .iter()
            .filter(|(k, _)| k == "x-internal-token")
            .count(),
        1
    );
    assert!(a.removed.contains(&"authorization".to_string()));
    let c = verified(&p, &token).await;
    assert_eq!(c["iss"], "https://portcullis.local");
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "spiffe://cluster.local/ns/shop/sa/orders");
    assert_eq!(c["scope"], "orders:read orders:write");
    assert_eq!(
        c["act"],
        json!({"sub": "spiffe://cluster.local/ns/shop/sa/frontend"})
    );
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert!(exp - iat <= 60 && exp > now());
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    // The header is JOSE with our kid; a tampered payload does not verify.
    let jwks = served_jwks(&p).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = c.clone();
    forged.insert("scope".into(), json!("admin"));
    parts[1] = b64(&Json::Object(forged).to_string());
    assert!(
        verify(&parts.join("."), &jwks, &Expect::default(), now())
            .await
            .is_err()
    );
    // The mint is audited with the caller's credential thumbprint, never a token.
    let events = p.audit.events();
    let e = events
        .iter()
        .find(|e| e["event"] == "token_minted")
        .expect("mint event");
    assert_eq!(e["jti"], c["jti"]);
    assert_eq!(e["subject"], "alice");
    assert_eq!(e["scope"], "orders:read orders:write");
    assert_eq!(
        e["credential_sha256"],
        portcullis::authn::audit::thumbprint(caller.as_bytes())
    );
    assert!(!e.to_string().contains(&token) && !e.to_string().contains(&caller));
    // Discovery names the issuer and the JWKS.
    let (status, body) = support::http(
        p.server.http_addr,
        "GET",
        "/.well-known/openid-configuration",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let doc: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], "https://portcullis.local");
    // The keys are where this API serves them, not on the issuer's host.
    let addr = p.server.http_addr;
    assert_eq!(
        doc["jwks_uri"],
        format!("http://{addr}/.well-known/jwks.json"),
        "{doc}"
    );
}

#[tokio::test]
async fn a_configured_jwks_uri_is_advertised_and_a_relative_one_refused() {
    let (p, _key) = start("  jwks_uri: https://auth.example.com/keys.json").await;
    let (status, body) = support::http(
        p.server.http_addr,
        "GET",
        "/.well-known/openid-configuration",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let doc: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["jwks_uri"], "https://auth.example.com/keys.json");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "internal_token:\n  jwks_uri: /keys.json\n").unwrap();
    let e = portcullis::config::Config::load(Some(&file), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("internal_token.jwks_uri"), "{e}");
}

#[tokio::test]
async fn a_request_for_wider_scope_gets_the_intersection() {
    let (p, key) = start("  enabled: false\n  max_ttl_seconds: 120").await;
    let caller = key.sign(&claims("alice"));
    let ask = json!({"scopes": ["orders:read", "admin:all"], "audience": "orders-api",
                     "ttl_seconds": 100000, "namespace": "acme", "grant": "readwrite",
                     "claims": {"tenant": "t1", "sub": "mallory"}});
    let a = p
        .check(
            req("/v1/orders")
                .bearer(&caller)
                .header("x-token-ask", &ask.to_string()),
        )
        .await;
    let c = verified(&p, a.header("x-internal-token").expect("token")).await;
    assert_eq!(
        c["scope"], "orders:read",
        "never wider than the caller's scopes"
    );
    assert_eq!(c["aud"], "orders-api");
    assert_eq!(c["ns"], "acme");
    assert_eq!(
        c["grants"],
        json!([{"kind": "readwrite", "namespace": "acme"}])
    );
    assert_eq!(c["tenant"], "t1");
    assert_eq!(c["sub"], "alice", "reserved claims cannot be overridden");
    assert!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 120,
        "capped by max_ttl_seconds"
    );
    // Not enabled and not asked: no token, and a caller-sent one is removed.
    let a = p
        .check(
            req("/v1/orders")
                .bearer(&caller)
                .header("x-internal-token", "forged"),
        )
        .await;
    assert!(a.allowed());
    assert!(a.header("x-internal-token").is_none());
    assert!(a.removed.contains(&"x-internal-token".to_string()));
    // No scope the caller holds: an empty scope, not the requested one.
    let ask = json!({"scopes": ["admin:all"]});
    let a = p
        .check(
            req("/v1/orders")
                .bearer(&caller)
                .header("x-token-ask", &ask.to_string()),
        )
        .await;
    let c = verified(&p, a.header("x-internal-token").unwrap()).await;
    assert_eq!(c["scope"], "");
}

#[tokio::test]
async fn exp_is_capped_by_the_callers_expiry_and_tokens_are_cached() {
    let (p, key) = start("  enabled: true\n  ttl_seconds: 300").await;
    let mut short = claims("alice");
    short["exp"] = json!(now() + 20);
    let a = p.check(req("/v1/orders").bearer(&key.sign(&short))).await;
    let c = verified(&p, a.header("x-internal-token").unwrap()).await;
    assert!(c["exp"].as_i64().unwrap() <= short["exp"].as_i64().unwrap());
    // The same caller, scope and audience reuse the token; another audience does not.
    let caller = key.sign(&claims("bob"));
    let t1 = p
        .check(req("/v1/a").bearer(&caller))
        .await
        .header("x-internal-token")
        .unwrap()
        .to_string();
    let t2 = p
        .check(req("/v1/b").bearer(&caller))
        .await
        .header("x-internal-token")
        .unwrap()
        .to_string();
    assert_eq!(t1, t2);
    let ask = json!({"audience": "other"}).to_string();
    let t3 = p
        .check(req("/v1/b").bearer(&caller).header("x-token-ask", &ask))
        .await
        .header("x-internal-token")
        .unwrap()
        .to_string();
    assert_ne!(t1, t3);
    // A caller whose own token expires sooner never gets the cached longer-lived token.
    let mut soon = claims("bob");
    soon["exp"] = json!(now() + 15);
    let t4 = p
        .check(req("/v1/a").bearer(&key.sign(&soon)))
        .await
        .header("x-internal-token")
        .unwrap()
        .to_string();
    assert_ne!(t1, t4);
    let minted = p
        .audit
        .events()
        .iter()
        .filter(|e| e["event"] == "token_minted")
        .count();
    assert_eq!(minted, 4, "one mint per distinct token");
}

#[tokio::test]
async fn decision_can_refuse_a_token_and_anonymous_callers_get_none() {
    let (p, key) = start("  enabled: true").await;
    let ask = json!(false).to_string();
    let a = p
        .check(
            req("/v1/orders")
                .bearer(&key.sign(&claims("a")))
                .header("x-token-ask", &ask),
        )
        .await;
    assert!(a.allowed());
    assert!(a.header("x-internal-token").is_none());
    // No policy matched: no identity, no token, and a forged header is stripped.
    let a = p
        .check(req("/public").header("x-internal-token", "forged"))
        .await;
    assert!(a.allowed());
    assert!(a.header("x-internal-token").is_none());
    assert!(a.removed.contains(&"x-internal-token".to_string()));
}

#[tokio::test]
async fn keys_from_a_directory_newest_signs_all_published() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    write_private_key(&keys.join("old.pem"), &fixture("ed25519-b.key.pem"));
    let old_time = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(keys.join("old.pem"))
        .unwrap()
        .set_modified(old_time)
        .unwrap();
    write_private_key(&keys.join("new.pem"), &fixture("ec256-a.key.pem"));
    let jwks_path = dir.path().join("jwks.json");
    let key = Key::es256("ec256-a.key.pem", "ec-a");
    std::fs::write(&jwks_path, jwks(&[&key]).to_string()).unwrap();
    let cfg = config(
        &jwks_path,
        &format!("  enabled: true\n  keys: {{dir: {}}}", keys.display()),
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    let served: Json = serde_json::from_str(&served_jwks(&p).await).unwrap();
    let kids: Vec<&str> = served["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec!["new", "old"]);
    let a = p.check(req("/v1/x").bearer(&key.sign(&claims("a")))).await;
    let token = a.header("x-internal-token").unwrap();
    let header: Json = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], "new");
    assert_eq!(header["alg"], "ES256");
    verified(&p, token).await;
}

#[tokio::test]
async fn cli_token_verify_prints_claims_and_rejects_tampering() {
    let (p, key) = start("  enabled: true").await;
    let a = p
        .check(req("/v1/x").bearer(&key.sign(&claims("alice"))))
        .await;
    let token = a.header("x-internal-token").unwrap().to_string();
    let jwks_file = p.server.dir().join("served-jwks.json");
    std::fs::write(&jwks_file, served_jwks(&p).await).unwrap();
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let url = format!("http://{}/.well-known/jwks.json", p.server.http_addr);
    let jwks_arg = jwks_file.display().to_string();
    let token_for_cli = token.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args([
                "token",
                "verify",
                "--jwks",
                &url,
                "--issuer",
                "https://portcullis.local",
                "--audience",
                "spiffe://cluster.local/ns/shop/sa/orders",
                &token_for_cli,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["sub"], "alice");
    let mut bad = token.clone();
    bad.pop();
    bad.push(if token.ends_with('A') { 'B' } else { 'A' });
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args([
                "token",
                "verify",
                "--jwks",
                &jwks_arg,
                "--any-audience",
                &bad,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A private key file readable by its owner only, as the key directory requires.
fn write_private_key(path: &std::path::Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
