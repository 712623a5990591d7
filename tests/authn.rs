//! Authentication through the real Check gRPC path: the adversarial suite (each test fails if
//! the attack succeeds) and the positive cases for every method.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value as Json, json};
use support::authn::*;

fn jwt_config(source: &str, extra: &str) -> String {
    format!(
        r#"authentication:
  policies:
    - name: api
      match: {{path_prefixes: ["/v1/"]}}
      methods: [jwt]
      jwt:
        issuer: {ISSUER}
        audiences: [orders]
        algorithms: [ES256, RS256, EdDSA]
        {source}
        clock_skew_seconds: 30
{extra}"#
    )
}

fn ec() -> Key {
    Key::es256("ec256-a.key.pem", "ec-a")
}
fn rsa() -> Key {
    Key::rs256("rsa-a.key.pem", "rsa-a")
}
fn ed() -> Key {
    Key::eddsa("ed25519-a.key.pem", "ed-a")
}

/// Portcullis with a jwks_file holding `keys`.
async fn with_file(keys: &[&Key]) -> Portcullis {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys).to_string()).unwrap();
    let cfg = jwt_config(&format!("jwks_file: {}", path.display()), "");
    Portcullis::start_in(dir, &cfg, &|_: &str| None).await
}

async fn refused(p: &Portcullis, token: &str, code: &str) {
    let a = p.check(req("/v1/orders").bearer(token)).await;
    a.assert_refused(401, code);
}

// --- positive ---------------------------------------------------------------------------------

#[tokio::test]
async fn valid_tokens_of_each_key_type_reach_rego_with_identity() {
    let (ec, rsa, ed) = (ec(), rsa(), ed());
    let p = with_file(&[&ec, &rsa, &ed]).await;
    for key in [&ec, &rsa, &ed] {
        let a = p
            .check(req("/v1/orders").bearer(&key.sign(&claims("alice"))))
            .await;
        assert!(a.allowed(), "{}", a.json);
        let id = a.identity();
        assert_eq!(id["method"], "jwt");
        assert_eq!(id["subject"], "alice");
        assert_eq!(id["issuer"], ISSUER);
        assert_eq!(id["roles"], json!(["reader"]));
        assert_eq!(id["scopes"], json!(["orders:read", "orders:write"]));
        assert_eq!(id["claims"]["aud"], "orders");
        assert_eq!(id["api_key_id"], Json::Null);
    }
    // No policy matches /public: authentication does not run, input.identity is absent.
    let a = p.check(req("/public")).await;
    assert!(a.allowed());
    assert_eq!(a.identity(), json!("absent"));
    // A token without kid is tried against the keys of its algorithm.
    let hdr = json!({"alg": "ES256"});
    let a = p
        .check(req("/v1/x").bearer(&ec.sign_with_header(&hdr, &claims("bob"))))
        .await;
    assert!(a.allowed(), "{}", a.json);
}

#[tokio::test]
async fn missing_token_is_401_with_challenge() {
    let p = with_file(&[&ec()]).await;
    let a = p.check(req("/v1/orders")).await;
    a.assert_refused(401, "missing_token");
    assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(a.grpc, 16, "UNAUTHENTICATED");
    let a = p
        .check(req("/v1/orders").header("authorization", "Basic Zm9vOmJhcg=="))
        .await;
    a.assert_refused(401, "missing_token");
    assert!(
        p.check(req("/v1/orders").bearer(&ec().sign(&claims("a"))))
            .await
            .allowed()
    );
    // Counted in Prometheus.
    let (status, text) = support::http(p.server.http_addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let value = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with("portcullis_authn_total") && l.contains(needle))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        value("method=\"none\",result=\"failure\",reason=\"missing_token\"").as_deref(),
        Some("2"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("portcullis_authn_total")
            && l.contains("method=\"jwt\"")
            && l.contains("success")
            && l.ends_with(" 1")),
        "{text}"
    );
}

// --- algorithm attacks ------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_in_every_spelling_is_refused() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let h = b64(&json!({"alg": alg, "kid": "ec-a"}).to_string());
        let c = b64(&claims("mallory").to_string());
        refused(&p, &format!("{h}.{c}."), "invalid_token").await;
        refused(&p, &format!("{h}.{c}.c2ln"), "invalid_token").await;
    }
    let h = b64(&json!({"kid": "ec-a"}).to_string());
    refused(
        &p,
        &format!("{h}.{}.c2ln", b64(&claims("m").to_string())),
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    use hmac::{Hmac, Mac};
    let rsa = rsa();
    let p = with_file(&[&rsa]).await;
    let public_pem = fixture("rsa-a.pub.pem");
    for secret in [
        public_pem.as_bytes().to_vec(),
        rsa.jwk().to_string().into_bytes(),
    ] {
        let msg = format!(
            "{}.{}",
            b64(&json!({"alg": "HS256", "kid": "rsa-a"}).to_string()),
            b64(&claims("mallory").to_string())
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
        mac.update(msg.as_bytes());
        let sig =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        refused(&p, &format!("{msg}.{sig}"), "invalid_token").await;
    }
}

#[tokio::test]
async fn token_alg_disagreeing_with_the_jwk_is_refused() {
    // The set declares the RSA key for RS256; a PS256 token with its kid must not verify even
    // though the same private key signed it, and an RS256 token must not use the EC key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let rsa = rsa();
    let ec = ec();
    let mut rsa_jwk = rsa.jwk();
    rsa_jwk["alg"] = json!("RS256");
    std::fs::write(&path, json!({"keys": [rsa_jwk, ec.jwk()]}).to_string()).unwrap();
    let cfg = format!(
        r#"authentication:
  policies:
    - name: api
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [RS256, PS256, ES256], jwks_file: {}}}
"#,
        path.display()
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    let ps = Key {
        alg: jsonwebtoken::Algorithm::PS256,
        ..rsa.clone()
    };
    let t = ps.sign_with_header(&json!({"alg": "PS256", "kid": "rsa-a"}), &claims("m"));
    refused(&p, &t, "invalid_signature").await;
    // RS256 token naming the EC key's kid.
    let t = rsa.sign_with_header(&json!({"alg": "RS256", "kid": "ec-a"}), &claims("m"));
    refused(&p, &t, "invalid_signature").await;
    // ES256 header over an RSA signature.
    let t = rsa.sign_with_header(&json!({"alg": "ES256", "kid": "ec-a"}), &claims("m"));
    refused(&p, &t, "invalid_signature").await;
    // Control: the right alg passes.
    assert!(
        p.check(req("/v1/x").bearer(&rsa.sign(&claims("a"))))
            .await
            .allowed()
    );
}

#[tokio::test]
async fn embedded_jwk_jku_and_x5u_headers_are_ignored() {
    let ec = ec();
    let attacker = Key::es256("ec256-b.key.pem", "evil");
    let evil_server = IssuerServer::start(jwks(&[&attacker])).await;
    let p = with_file(&[&ec]).await;
    for header in [
        json!({"alg": "ES256", "jwk": attacker.jwk()}),
        json!({"alg": "ES256", "kid": "evil", "jwk": attacker.jwk()}),
        json!({"alg": "ES256", "kid": "evil", "jku": evil_server.jwks_uri()}),
        json!({"alg": "ES256", "jku": evil_server.jwks_uri()}),
        json!({"alg": "ES256", "x5u": evil_server.jwks_uri()}),
        json!({"alg": "ES256", "kid": "ec-a", "jku": evil_server.jwks_uri(), "jwk": attacker.jwk()}),
    ] {
        let t = attacker.sign_with_header(&header, &claims("mallory"));
        refused(&p, &t, "invalid_signature").await;
    }
    assert_eq!(
        evil_server.fetches(),
        0,
        "a key URL from the token was fetched"
    );
}

// --- kid attacks ------------------------------------------------------------------------------

#[tokio::test]
async fn kid_path_traversal_empty_huge_and_unknown_are_refused() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    let sign = |kid: Json| ec.sign_with_header(&json!({"alg": "ES256", "kid": kid}), &claims("m"));
    refused(
        &p,
        &sign(json!("../../../../etc/passwd")),
        "invalid_signature",
    )
    .await;
    refused(&p, &sign(json!("/dev/null")), "invalid_signature").await;
    refused(&p, &sign(json!("unknown")), "invalid_signature").await;
    refused(&p, &sign(json!("")), "invalid_token").await;
    refused(&p, &sign(json!("k".repeat(10 * 1024))), "invalid_token").await;
    refused(&p, &sign(json!(17)), "invalid_token").await;
    refused(&p, &sign(json!(null)), "invalid_token").await;
}

// --- time and claim attacks -------------------------------------------------------------------

#[tokio::test]
async fn exp_nbf_and_their_types_are_enforced() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    let with = |f: &dyn Fn(&mut Json)| {
        let mut c = claims("m");
        f(&mut c);
        ec.sign(&c)
    };
    refused(
        &p,
        &with(&|c| c["exp"] = json!(now() - 100)),
        "invalid_token",
    )
    .await;
    refused(
        &p,
        &with(&|c| c["nbf"] = json!(now() + 100)),
        "invalid_token",
    )
    .await;
    refused(
        &p,
        &with(&|c| c["exp"] = json!((now() + 600).to_string())),
        "invalid_token",
    )
    .await;
    refused(&p, &with(&|c| c["nbf"] = json!("0")), "invalid_token").await;
    refused(&p, &with(&|c| c["iat"] = json!("now")), "invalid_token").await;
    refused(
        &p,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        "invalid_token",
    )
    .await;
    refused(&p, &with(&|c| c["exp"] = json!(null)), "invalid_token").await;
    // Within the 30 s of skew: accepted (the control that shows the checks are not blanket).
    let a = p
        .check(req("/v1/x").bearer(&with(&|c| c["exp"] = json!(now() - 10))))
        .await;
    assert!(a.allowed(), "{}", a.json);
    let a = p
        .check(req("/v1/x").bearer(&with(&|c| c["nbf"] = json!(now() + 10))))
        .await;
    assert!(a.allowed(), "{}", a.json);
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    let with = |f: &dyn Fn(&mut Json)| {
        let mut c = claims("m");
        f(&mut c);
        ec.sign(&c)
    };
    let remove = |k: &'static str| {
        move |c: &mut Json| {
            c.as_object_mut().unwrap().remove(k);
        }
    };
    refused(&p, &with(&remove("iss")), "invalid_token").await;
    refused(
        &p,
        &with(&|c| c["iss"] = json!("https://evil.test")),
        "invalid_token",
    )
    .await;
    refused(&p, &with(&|c| c["iss"] = json!([ISSUER])), "invalid_token").await;
    refused(&p, &with(&remove("aud")), "invalid_token").await;
    refused(
        &p,
        &with(&|c| c["aud"] = json!("payments")),
        "invalid_token",
    )
    .await;
    refused(
        &p,
        &with(&|c| c["aud"] = json!(["payments", "billing"])),
        "invalid_token",
    )
    .await;
    refused(
        &p,
        &with(&|c| c["aud"] = json!(["orders", 1])),
        "invalid_token",
    )
    .await;
    refused(&p, &with(&|c| c["aud"] = json!([])), "invalid_token").await;
    refused(&p, &with(&remove("sub")), "invalid_token").await;
    refused(&p, &with(&|c| c["sub"] = json!("")), "invalid_token").await;
    let a = p
        .check(req("/v1/x").bearer(&with(&|c| c["aud"] = json!(["payments", "orders"]))))
        .await;
    assert!(
        a.allowed(),
        "an aud array naming a configured audience is accepted: {}",
        a.json
    );
}

#[tokio::test]
async fn crit_headers_are_refused() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
        let t = ec.sign_with_header(
            &json!({"alg": "ES256", "kid": "ec-a", "crit": crit, "exp": 1}),
            &claims("m"),
        );
        refused(&p, &t, "invalid_token").await;
    }
}

// --- encoding attacks -------------------------------------------------------------------------

#[tokio::test]
async fn es256_zero_signature_is_refused() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    let t = ec.sign(&claims("m"));
    let (msg, _) = t.rsplit_once('.').unwrap();
    let zero = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 64]);
    refused(&p, &format!("{msg}.{zero}"), "invalid_signature").await;
    // r = 0, s = n (the group order) is the other classic.
    let mut rs = [0u8; 64];
    rs[32..].copy_from_slice(&hex32(
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
    ));
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rs);
    refused(&p, &format!("{msg}.{sig}"), "invalid_signature").await;
}

fn hex32(h: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[tokio::test]
async fn four_segments_padding_and_huge_headers_are_refused() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    let t = ec.sign(&claims("m"));
    refused(&p, &format!("{t}.x"), "invalid_token").await;
    refused(&p, &format!("{t}."), "invalid_token").await;
    // A padded encoding of a validly signed token.
    let std = base64::engine::general_purpose::URL_SAFE;
    let header = json!({"alg": "ES256", "kid": "ec-a", "typ": "JWTx"}).to_string();
    assert_ne!(header.len() % 3, 0, "the header must need padding");
    let msg = format!(
        "{}.{}",
        std.encode(&header),
        std.encode(claims("m").to_string())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &ec.enc, ec.alg).unwrap();
    assert!(msg.contains('='));
    refused(&p, &format!("{msg}.{sig}"), "invalid_token").await;
    // 1 MB in the authorization header.
    let huge = format!("{}.{}.{}", "a".repeat(1024 * 1024), b64("{}"), "c2ln");
    refused(&p, &huge, "invalid_token").await;
    let huge_header = b64(&json!({"alg": "ES256", "x": "a".repeat(1024 * 1024)}).to_string());
    refused(
        &p,
        &format!("{huge_header}.{}.c2ln", b64("{}")),
        "invalid_token",
    )
    .await;
}

// --- JWKS endpoint behaviour ------------------------------------------------------------------

async fn with_uri(server: &IssuerServer, ttl: u64, cooldown: u64, timeout_ms: u64) -> Portcullis {
    let cfg = jwt_config(
        &format!(
            "jwks_uri: {}\n        jwks_cache_ttl_seconds: {ttl}\n        jwks_refresh_cooldown_seconds: {cooldown}\n        jwks_fetch_timeout_ms: {timeout_ms}",
            server.jwks_uri()
        ),
        "",
    );
    Portcullis::start(&cfg).await
}

#[tokio::test]
async fn jwks_endpoint_returning_500_fails_closed_then_recovers() {
    let ec = ec();
    let server = IssuerServer::start(jwks(&[&ec])).await;
    server.set(|s| s.status = 500);
    let p = with_uri(&server, 300, 0, 2000).await;
    refused(&p, &ec.sign(&claims("a")), "invalid_signature").await;
    assert!(server.fetches() >= 1);
    server.set(|s| s.status = 200);
    assert!(
        p.check(req("/v1/x").bearer(&ec.sign(&claims("a"))))
            .await
            .allowed()
    );
    // Garbage with status 200 is a failed refresh too, and keeps the last good set.
    server.set(|s| s.jwks = json!({"keys": "nope"}));
    let other = Key::es256("ec256-b.key.pem", "ec-b");
    refused(&p, &other.sign(&claims("a")), "invalid_signature").await;
    assert!(
        p.check(req("/v1/x").bearer(&ec.sign(&claims("a"))))
            .await
            .allowed()
    );
}

#[tokio::test]
async fn jwks_endpoint_timing_out_is_bounded_and_keeps_the_last_good_set() {
    let ec = ec();
    let server = IssuerServer::start(jwks(&[&ec])).await;
    // TTL 0: every Check finds the set stale and tries to refresh it.
    let p = with_uri(&server, 0, 0, 300).await;
    assert!(
        p.check(req("/v1/x").bearer(&ec.sign(&claims("a"))))
            .await
            .allowed()
    );
    server.set(|s| s.hang = true);
    let started = std::time::Instant::now();
    let a = p.check(req("/v1/x").bearer(&ec.sign(&claims("a")))).await;
    assert!(
        a.allowed(),
        "the last good key set must be kept: {}",
        a.json
    );
    let other = Key::es256("ec256-b.key.pem", "ec-b");
    refused(&p, &other.sign(&claims("a")), "invalid_signature").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fetches must time out"
    );
    // A verifier that never had a key set fails closed when the endpoint hangs.
    let server2 = IssuerServer::start(jwks(&[&ec])).await;
    server2.set(|s| s.hang = true);
    let p2 = with_uri(&server2, 300, 0, 300).await;
    refused(&p2, &ec.sign(&claims("a")), "invalid_signature").await;
}

#[tokio::test]
async fn jwks_rotation_is_followed() {
    let a_key = ec();
    let b_key = Key::es256("ec256-b.key.pem", "ec-b");
    let server = IssuerServer::start(jwks(&[&a_key])).await;
    let p = with_uri(&server, 300, 0, 2000).await;
    assert!(
        p.check(req("/v1/x").bearer(&a_key.sign(&claims("a"))))
            .await
            .allowed()
    );
    server.set(|s| s.jwks = jwks(&[&b_key]));
    // The new kid triggers a refresh; the retired key no longer verifies.
    assert!(
        p.check(req("/v1/x").bearer(&b_key.sign(&claims("b"))))
            .await
            .allowed()
    );
    refused(&p, &a_key.sign(&claims("a")), "invalid_signature").await;
}

#[tokio::test]
async fn random_kid_flood_causes_a_bounded_number_of_fetches() {
    let ec = ec();
    let server = IssuerServer::start(jwks(&[&ec])).await;
    let p = with_uri(&server, 300, 30, 2000).await;
    assert!(
        p.check(req("/v1/x").bearer(&ec.sign(&claims("a"))))
            .await
            .allowed()
    );
    let before = server.fetches();
    let mut client = p.server.client().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let t = ec.sign_with_header(
            &json!({"alg": "ES256", "kid": format!("rnd-{i}")}),
            &claims("m"),
        );
        let request = req("/v1/x").bearer(&t).build();
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.check(request).await.map(|r| r.into_inner())
        }));
    }
    for t in tasks {
        let a = Answer::from(t.await.unwrap().unwrap());
        a.assert_refused(401, "invalid_signature");
    }
    let _ = client.check(req("/v1/x").build()).await;
    let fetched = server.fetches() - before;
    assert!(
        fetched <= 1,
        "200 random kids caused {fetched} JWKS fetches"
    );
}

// --- HMAC secret ------------------------------------------------------------------------------

#[tokio::test]
async fn hs256_with_a_configured_secret() {
    let secret = "0123456789abcdef0123456789abcdef-secret";
    let cfg = r#"authentication:
  policies:
    - name: api
      methods: [jwt]
      jwt: {issuer: "https://issuer.test", audiences: [orders], algorithms: [HS256], secret_env: JWT_SECRET}
"#;
    let p = Portcullis::start_with_env(cfg, &|k: &str| {
        (k == "JWT_SECRET").then(|| secret.to_string())
    })
    .await;
    let key = |s: &str| Key {
        alg: jsonwebtoken::Algorithm::HS256,
        kid: "h".into(),
        enc: jsonwebtoken::EncodingKey::from_secret(s.as_bytes()),
    };
    assert!(
        p.check(req("/v1/x").bearer(&key(secret).sign(&claims("a"))))
            .await
            .allowed()
    );
    refused(
        &p,
        &key("wrong-secret-wrong-secret-wrong-secret").sign(&claims("a")),
        "invalid_signature",
    )
    .await;
    // An asymmetric token is not accepted by an HS-only policy.
    refused(&p, &ec().sign(&claims("a")), "invalid_token").await;
}

// --- audit ------------------------------------------------------------------------------------

#[tokio::test]
async fn failures_are_audited_with_a_thumbprint_never_the_token() {
    let ec = ec();
    let p = with_file(&[&ec]).await;
    let mut c = claims("alice");
    c["exp"] = json!(now() - 1000);
    let token = ec.sign(&c);
    refused(&p, &token, "invalid_token").await;
    let events = p.audit.events();
    let e = events
        .iter()
        .find(|e| e["event"] == "authn_failure")
        .expect("event");
    assert_eq!(e["method"], "jwt");
    assert_eq!(e["result"], "invalid_token");
    assert!(e["reason"].as_str().unwrap().contains("expired"), "{e}");
    assert_eq!(
        e["credential_sha256"],
        portcullis::authn::audit::thumbprint(token.as_bytes())
    );
    assert!(e["decision_id"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(!e.to_string().contains(&token));
}

// --- require: mfa, amr, acr ---------------------------------------------------------------------

#[tokio::test]
async fn required_mfa_amr_and_acr_refuse_weaker_authentication() {
    let key = ec();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&key]).to_string()).unwrap();
    let cfg = jwt_config(
        &format!("jwks_file: {}", path.display()),
        "      require: {mfa: true, amr: [hwk], acr: [\"urn:acr:high\", \"urn:acr:max\"]}\n",
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    let with = |amr: serde_json::Value, acr: serde_json::Value| {
        let mut c = claims("alice");
        c["amr"] = amr;
        c["acr"] = acr;
        key.sign(&c)
    };
    let strong = with(
        serde_json::json!(["pwd", "hwk", "mfa"]),
        "urn:acr:high".into(),
    );
    let a = p.check(req("/v1/orders").bearer(&strong)).await;
    assert!(a.allowed(), "{}", a.json);
    for (what, token) in [
        (
            "no mfa",
            with(serde_json::json!(["pwd", "hwk"]), "urn:acr:high".into()),
        ),
        (
            "no hwk",
            with(
                serde_json::json!(["pwd", "otp", "mfa"]),
                "urn:acr:high".into(),
            ),
        ),
        (
            "amr as a string",
            with("mfa hwk".into(), "urn:acr:high".into()),
        ),
        (
            "low acr",
            with(serde_json::json!(["hwk", "mfa"]), "urn:acr:low".into()),
        ),
        (
            "acr as an array",
            with(
                serde_json::json!(["hwk", "mfa"]),
                serde_json::json!(["urn:acr:high"]),
            ),
        ),
        ("no claims", key.sign(&claims("alice"))),
    ] {
        let a = p.check(req("/v1/orders").bearer(&token)).await;
        assert!(!a.allowed(), "{what} was allowed");
        a.assert_refused(403, "insufficient_authentication");
    }
}
