//! Authentication by signature, through the Check path: webhook HMACs signed exactly as
//! GitHub, Stripe and Slack sign them; client certificates Envoy forwards, made at test time.

mod support;

use base64::Engine as _;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use hmac::Mac as _;
use support::authn::*;

const SECRET: &str = "whsec_0123456789abcdefghijklmnop";
const NEW_SECRET: &str = "whsec_rotated-9876543210zyxwvuts";
const OTHER: &str = "whsec_attacker-guess-0000000000000";

fn hmac256(secret: &str, msg: &[u8]) -> Vec<u8> {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn env(k: &str) -> Option<String> {
    match k {
        "WEBHOOK_SECRET" => Some(SECRET.into()),
        "WEBHOOK_SECRET_NEW" => Some(NEW_SECRET.into()),
        "SHORT" => Some("short".into()),
        _ => None,
    }
}

async fn server(hmac_block: &str) -> Portcullis {
    let cfg = format!(
        "authentication:\n  policies:\n    - name: hooks\n      match: {{path_prefixes: [\"/hooks/\"]}}\n      methods: [hmac]\n      hmac: {hmac_block}\n"
    );
    Portcullis::start_with_env(&cfg, &env).await
}

const BODY: &str = r#"{"action":"opened","number":7}"#;

fn post(path: &str, body: &str) -> Req {
    let mut r = req(path).method("POST");
    r.spec.body = Some(body.into());
    r
}

/// Sends a CheckRequest as given (to forge Envoy's body headers).
async fn raw(p: &Portcullis, creq: CheckRequest) -> Answer {
    let mut client = p.server.client().await;
    Answer::from(client.check(creq).await.expect("check").into_inner())
}

fn set_header(creq: &mut CheckRequest, k: &str, v: &str) {
    let http = creq
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.headers.insert(k.into(), v.into());
}

#[tokio::test]
async fn github_signature_over_the_body() {
    let p = server("{preset: github, secrets_env: WEBHOOK_SECRET}").await;
    let sig = format!("sha256={}", hex(&hmac256(SECRET, BODY.as_bytes())));
    let a = p
        .check(post("/hooks/gh", BODY).header("x-hub-signature-256", &sig))
        .await;
    assert!(a.allowed(), "{}", a.json);
    let id = a.identity();
    assert_eq!(id["method"], "hmac");
    assert_eq!(id["subject"], "github");
    assert_eq!(id["claims"]["key_index"], 0);
    // Another secret, a changed body, a missing prefix, a truncated or garbled signature.
    let wrong = format!("sha256={}", hex(&hmac256(OTHER, BODY.as_bytes())));
    for (body, sig) in [
        (BODY, wrong.as_str()),
        (r#"{"action":"closed","number":7}"#, sig.as_str()),
        (BODY, &sig["sha256=".len()..]),
        (BODY, &sig[..sig.len() - 2]),
        (BODY, "sha256=zz"),
    ] {
        p.check(post("/hooks/gh", body).header("x-hub-signature-256", sig))
            .await
            .assert_refused(401, "invalid_signature");
    }
    p.check(post("/hooks/gh", BODY))
        .await
        .assert_refused(401, "missing_token");
    // The audit log names the failure, never a signature or the secret.
    for e in p.audit.events() {
        let t = e.to_string();
        assert!(!t.contains(SECRET) && !t.contains(&wrong[7..]), "{t}");
    }
}

#[tokio::test]
async fn stripe_signature_with_timestamp_and_replay_window() {
    let p = server("{preset: stripe, secrets_env: WEBHOOK_SECRET}").await;
    let sign = |t: i64, body: &str| {
        format!(
            "t={t},v1={},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
            hex(&hmac256(SECRET, format!("{t}.{body}").as_bytes()))
        )
    };
    let a = p
        .check(post("/hooks/stripe", BODY).header("stripe-signature", &sign(now(), BODY)))
        .await;
    assert!(a.allowed(), "{}", a.json);
    assert_eq!(a.identity()["subject"], "stripe");
    // A delivery captured ten minutes ago, replayed: the signature is genuine, the time is not.
    p.check(post("/hooks/stripe", BODY).header("stripe-signature", &sign(now() - 600, BODY)))
        .await
        .assert_refused(401, "invalid_token");
    p.check(post("/hooks/stripe", BODY).header("stripe-signature", &sign(now() + 600, BODY)))
        .await
        .assert_refused(401, "invalid_token");
    // Moving a genuine signature to a fresh timestamp breaks it.
    let (then, t_now) = (now() - 600, now());
    let moved = sign(then, BODY).replacen(&format!("t={then}"), &format!("t={t_now}"), 1);
    p.check(post("/hooks/stripe", BODY).header("stripe-signature", &moved))
        .await
        .assert_refused(401, "invalid_signature");
    // No t=, two t=, no v1.
    let v1 = hex(&hmac256(SECRET, format!("{}.{BODY}", now()).as_bytes()));
    for h in [
        format!("v1={v1}"),
        format!("t={},t=1,v1={v1}", now()),
        format!("t={}", now()),
    ] {
        let a = p
            .check(post("/hooks/stripe", BODY).header("stripe-signature", &h))
            .await;
        assert!(!a.allowed(), "{h}");
        assert_eq!(a.http, Some(401));
    }
}

#[tokio::test]
async fn slack_signature_with_request_timestamp() {
    let p = server("{preset: slack, secrets_env: WEBHOOK_SECRET}").await;
    let body = "token=x&team_id=T1&command=%2Fdeploy&text=prod";
    let sign = |ts: i64| {
        format!(
            "v0={}",
            hex(&hmac256(SECRET, format!("v0:{ts}:{body}").as_bytes()))
        )
    };
    let ts = now();
    let a = p
        .check(
            post("/hooks/slack", body)
                .header("x-slack-signature", &sign(ts))
                .header("x-slack-request-timestamp", &ts.to_string()),
        )
        .await;
    assert!(a.allowed(), "{}", a.json);
    assert_eq!(a.identity()["claims"]["timestamp"], ts);
    let stale = now() - 301;
    p.check(
        post("/hooks/slack", body)
            .header("x-slack-signature", &sign(stale))
            .header("x-slack-request-timestamp", &stale.to_string()),
    )
    .await
    .assert_refused(401, "invalid_token");
    // Without the timestamp header, or with one that is not a number.
    p.check(post("/hooks/slack", body).header("x-slack-signature", &sign(ts)))
        .await
        .assert_refused(401, "invalid_token");
    p.check(
        post("/hooks/slack", body)
            .header("x-slack-signature", &sign(ts))
            .header("x-slack-request-timestamp", &format!("{ts}.0")),
    )
    .await
    .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn rotated_second_secret_is_accepted() {
    let p = server("{preset: github, secrets_env: [WEBHOOK_SECRET, WEBHOOK_SECRET_NEW]}").await;
    for (secret, index) in [(SECRET, 0), (NEW_SECRET, 1)] {
        let sig = format!("sha256={}", hex(&hmac256(secret, BODY.as_bytes())));
        let a = p
            .check(post("/hooks/gh", BODY).header("x-hub-signature-256", &sig))
            .await;
        assert!(a.allowed(), "{}", a.json);
        assert_eq!(a.identity()["claims"]["key_index"], index);
    }
    let sig = format!("sha256={}", hex(&hmac256(OTHER, BODY.as_bytes())));
    p.check(post("/hooks/gh", BODY).header("x-hub-signature-256", &sig))
        .await
        .assert_refused(401, "invalid_signature");
}

#[tokio::test]
async fn truncated_or_missing_body_is_refused() {
    let p = server("{preset: github, secrets_env: WEBHOOK_SECRET}").await;
    // Envoy buffered only the first part (max_request_bytes with allow_partial_message): the
    // signature over the part cannot stand for the whole request.
    let part = &BODY[..10];
    let sig = format!("sha256={}", hex(&hmac256(SECRET, part.as_bytes())));
    let mut creq = post("/hooks/gh", part)
        .header("x-hub-signature-256", &sig)
        .build();
    set_header(&mut creq, "x-envoy-auth-partial-body", "true");
    raw(&p, creq).await.assert_refused(401, "invalid_token");
    // A body shorter than its content-length.
    let mut creq = post("/hooks/gh", part)
        .header("x-hub-signature-256", &sig)
        .build();
    set_header(&mut creq, "content-length", &BODY.len().to_string());
    raw(&p, creq).await.assert_refused(401, "invalid_token");
    // with_request_body off: a request with a body reaches us without it. The signature of an
    // empty body must not let it through.
    let empty = format!("sha256={}", hex(&hmac256(SECRET, b"")));
    let creq = req("/hooks/gh")
        .method("POST")
        .header("content-length", "31")
        .header("x-hub-signature-256", &empty)
        .build();
    raw(&p, creq).await.assert_refused(401, "invalid_token");
    let events = p.audit.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().unwrap_or("").contains("truncated")),
        "{events:?}"
    );
}

#[tokio::test]
async fn template_over_method_path_and_headers_with_sha512_base64() {
    let p = server(
        "{header: x-signature, algorithm: sha512, encoding: base64, prefix: \"\", signed: \"{method}\\n{path}\\n{header:x-request-id}\\n{timestamp}\\n{body}\", timestamp_header: x-timestamp, tolerance_seconds: 60, secrets_env: WEBHOOK_SECRET, subject: billing-system}",
    )
    .await;
    let ts = now().to_string();
    let sign = |method: &str, path: &str, id: &str| {
        let mut m = hmac::Hmac::<sha2::Sha512>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(format!("{method}\n{path}\n{id}\n{ts}\n{BODY}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    };
    let send = |path: &str, id: &str, sig: String| {
        post(path, BODY)
            .header("x-signature", &sig)
            .header("x-request-id", id)
            .header("x-timestamp", &ts)
    };
    let a = p
        .check(send(
            "/hooks/bill",
            "r-1",
            sign("POST", "/hooks/bill", "r-1"),
        ))
        .await;
    assert!(a.allowed(), "{}", a.json);
    assert_eq!(a.identity()["subject"], "billing-system");
    // The same signature on another path, or with another request id, fails.
    p.check(send(
        "/hooks/other",
        "r-1",
        sign("POST", "/hooks/bill", "r-1"),
    ))
    .await
    .assert_refused(401, "invalid_signature");
    p.check(send(
        "/hooks/bill",
        "r-2",
        sign("POST", "/hooks/bill", "r-1"),
    ))
    .await
    .assert_refused(401, "invalid_signature");
}

/// The `reason` of the last audit event.
fn last_reason(p: &Portcullis) -> String {
    p.audit
        .events()
        .last()
        .and_then(|e| e["reason"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn replayed_deliveries_within_the_window_are_refused() {
    let p = server("{preset: stripe, secrets_env: [WEBHOOK_SECRET, WEBHOOK_SECRET_NEW]}").await;
    let v1 =
        |secret: &str, t: i64, body: &str| hex(&hmac256(secret, format!("{t}.{body}").as_bytes()));
    let t = now();
    // Stripe signs with both secrets while one is rolled.
    let header = format!(
        "t={t},v1={},v1={}",
        v1(SECRET, t, BODY),
        v1(NEW_SECRET, t, BODY)
    );
    let send = |h: String, body: &'static str| {
        let p = &p;
        async move {
            p.check(post("/hooks/stripe", body).header("stripe-signature", &h))
                .await
        }
    };
    assert!(send(header.clone(), BODY).await.allowed());
    // The captured delivery again, as it was, or with only one of its signatures, or them
    // swapped: the same signed message, refused.
    for replay in [
        header.clone(),
        format!("t={t},v1={}", v1(NEW_SECRET, t, BODY)),
        format!(
            "t={t},v1={},v1={}",
            v1(NEW_SECRET, t, BODY),
            v1(SECRET, t, BODY)
        ),
    ] {
        send(replay, BODY)
            .await
            .assert_refused(401, "invalid_token");
        assert_eq!(last_reason(&p), "replayed");
    }
    // Another delivery (another body, or the same body at another time) is new.
    let other = r#"{"action":"closed","number":7}"#;
    assert!(
        send(format!("t={t},v1={}", v1(SECRET, t, other)), other)
            .await
            .allowed()
    );
    let t2 = t - 1;
    assert!(
        send(format!("t={t2},v1={}", v1(SECRET, t2, BODY)), BODY)
            .await
            .allowed()
    );
    // A forged signature is refused as such and never takes a place in the cache.
    let forged = format!("t={},v1={}", t - 2, v1(OTHER, t - 2, BODY));
    send(forged, BODY)
        .await
        .assert_refused(401, "invalid_signature");
    // Slack: the same timestamp and body twice.
    let p = server("{preset: slack, secrets_env: WEBHOOK_SECRET}").await;
    let ts = now();
    let slack = || {
        post("/hooks/slack", BODY)
            .header(
                "x-slack-signature",
                &format!(
                    "v0={}",
                    hex(&hmac256(SECRET, format!("v0:{ts}:{BODY}").as_bytes()))
                ),
            )
            .header("x-slack-request-timestamp", &ts.to_string())
    };
    assert!(p.check(slack()).await.allowed());
    p.check(slack()).await.assert_refused(401, "invalid_token");
    assert_eq!(last_reason(&p), "replayed");
}

#[tokio::test]
async fn github_replays_are_refused_only_within_replay_window_seconds() {
    let sig = format!("sha256={}", hex(&hmac256(SECRET, BODY.as_bytes())));
    let delivery = |id: &str| {
        post("/hooks/gh", BODY)
            .header("x-hub-signature-256", &sig)
            .header("x-github-delivery", id)
    };
    // GitHub signs no time: by default nothing bounds a window, and a replay passes.
    let p = server("{preset: github, secrets_env: WEBHOOK_SECRET}").await;
    assert!(p.check(delivery("d-1")).await.allowed());
    assert!(p.check(delivery("d-1")).await.allowed());
    // With a window, the same body is refused, whatever delivery id (unsigned) it claims.
    let p =
        server("{preset: github, secrets_env: WEBHOOK_SECRET, replay_window_seconds: 600}").await;
    assert!(p.check(delivery("d-1")).await.allowed());
    for id in ["d-1", "d-2"] {
        p.check(delivery(id))
            .await
            .assert_refused(401, "invalid_token");
        assert_eq!(last_reason(&p), "replayed");
    }
    let other = r#"{"action":"closed","number":7}"#;
    let other_sig = format!("sha256={}", hex(&hmac256(SECRET, other.as_bytes())));
    assert!(
        p.check(post("/hooks/gh", other).header("x-hub-signature-256", &other_sig))
            .await
            .allowed()
    );
}

#[tokio::test]
async fn a_full_replay_cache_refuses_new_deliveries_until_old_ones_expire() {
    let p = server(
        "{preset: stripe, secrets_env: WEBHOOK_SECRET, tolerance_seconds: 1, replay_cache_size: 2}",
    )
    .await;
    let t = now();
    let send = |body: String| {
        let p = &p;
        async move {
            let h = format!(
                "t={t},v1={}",
                hex(&hmac256(SECRET, format!("{t}.{body}").as_bytes()))
            );
            p.check(post("/hooks/stripe", &body).header("stripe-signature", &h))
                .await
        }
    };
    // Forged deliveries are refused before they could take a place.
    for i in 0..5 {
        let h = format!(
            "t={t},v1={}",
            hex(&hmac256(OTHER, format!("{t}.forged-{i}").as_bytes()))
        );
        p.check(post("/hooks/stripe", &format!("forged-{i}")).header("stripe-signature", &h))
            .await
            .assert_refused(401, "invalid_signature");
    }
    assert!(send("one".into()).await.allowed());
    assert!(send("two".into()).await.allowed());
    // Two deliveries in their window fill it: a third cannot be remembered, so it is refused
    // (the sender retries) rather than a remembered one forgotten early.
    let full = send("three".into()).await;
    assert_eq!(full.http, Some(429), "{}", full.json);
    assert_eq!(
        full.body,
        serde_json::json!({"error": "too_many_requests"}).to_string()
    );
    assert_eq!(last_reason(&p), "replay cache full");
    // Once their timestamps leave the tolerance they are forgotten, making room.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let t = now();
    let h = format!(
        "t={t},v1={}",
        hex(&hmac256(SECRET, format!("{t}.three").as_bytes()))
    );
    let a = p
        .check(post("/hooks/stripe", "three").header("stripe-signature", &h))
        .await;
    assert!(a.allowed(), "{}", a.json);
}

#[tokio::test]
async fn hmac_config_errors_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("secrets");
    std::fs::write(&loose, format!("{SECRET}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let cases = [
        (
            "{preset: github, secrets_env: SHORT}".to_string(),
            "at least 16",
        ),
        ("{preset: github, secrets_env: UNSET}".to_string(), "UNSET"),
        (
            format!("{{preset: github, secrets_file: {}}}", loose.display()),
            "owner only",
        ),
        ("{preset: github}".to_string(), "secrets_env"),
        (
            "{header: x-sig, signed: \"{nope}\", secrets_env: WEBHOOK_SECRET}".to_string(),
            "placeholder",
        ),
        (
            "{header: x-sig, signed: \"{timestamp}{body}\", secrets_env: WEBHOOK_SECRET}"
                .to_string(),
            "timestamp_header",
        ),
        ("{secrets_env: WEBHOOK_SECRET}".to_string(), "header"),
        (
            "{header: x-sig, timestamp_header: x-ts, secrets_env: WEBHOOK_SECRET}".to_string(),
            "not signed",
        ),
        (
            "{preset: stripe, signed: \"{body}\", secrets_env: WEBHOOK_SECRET}".to_string(),
            "not signed",
        ),
        (
            "{preset: stripe, secrets_env: WEBHOOK_SECRET, replay_window_seconds: 60}".to_string(),
            "tolerance_seconds is the window",
        ),
        (
            "{preset: github, secrets_env: WEBHOOK_SECRET, replay_cache_size: 0}".to_string(),
            "replay_cache_size",
        ),
        (
            "{preset: github, secrets_env: WEBHOOK_SECRET, replay_window_seconds: 999999}"
                .to_string(),
            "replay_window_seconds",
        ),
    ];
    for (block, want) in cases {
        let cfg = format!(
            "authentication:\n  policies:\n    - name: hooks\n      methods: [hmac]\n      hmac: {block}\n"
        );
        let e = match support::server::Prepared::new(support::Spec {
            config: &cfg,
            policies: vec![("policy.rego", ECHO_POLICY)],
            ..Default::default()
        }) {
            Err(e) => e,
            Ok(p) => match p.security(&portcullis::authn::audit::AuditLog::memory(), &env) {
                Err(e) => e,
                Ok(_) => panic!("{block} was accepted"),
            },
        };
        assert!(e.contains(want), "{want}: {e}");
        assert!(!e.contains(SECRET), "{e}");
    }
}

// --- x509: the client certificate Envoy forwards ----------------------------------------------

use support::tls::{Ca, Leaf, LeafSpec};

fn url_encoded(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn with_cert(mut creq: CheckRequest, leaf_pem: &str) -> CheckRequest {
    creq.attributes
        .as_mut()
        .unwrap()
        .source
        .get_or_insert_with(Default::default)
        .certificate = url_encoded(leaf_pem);
    creq
}

async fn x509_server(ca: &Ca, block: &str) -> Portcullis {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("clients-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let cfg = format!(
        "authentication:\n  policies:\n    - name: mesh\n      methods: [x509]\n      x509: {{trusted_ca_file: {}, {block}}}\n",
        ca_path.display()
    );
    Portcullis::start_in(dir, &cfg, &|_: &str| None).await
}

fn spiffe_leaf(ca: &Ca, id: &str) -> Leaf {
    ca.leaf(LeafSpec {
        common_name: "frontend",
        dns: &["frontend.shop.svc"],
        uris: &[id],
        validity: None,
        names: &[],
    })
}

#[tokio::test]
async fn x509_forwarded_certificate_is_verified() {
    let ca = Ca::new("clients");
    let p = x509_server(
        &ca,
        "allowed_spiffe_ids: [\"spiffe://cluster.local/ns/shop/*\"]",
    )
    .await;
    let leaf = spiffe_leaf(&ca, "spiffe://cluster.local/ns/shop/sa/frontend");
    let a = raw(&p, with_cert(req("/x").build(), &leaf.cert_pem)).await;
    assert!(a.allowed(), "{}", a.json);
    let id = a.identity();
    assert_eq!(id["method"], "x509");
    assert_eq!(id["subject"], "spiffe://cluster.local/ns/shop/sa/frontend");
    assert_eq!(
        id["claims"]["dns_names"],
        serde_json::json!(["frontend.shop.svc"])
    );
    assert_eq!(id["claims"]["subject"], "CN=frontend");
    assert_eq!(
        id["claims"]["fingerprint_sha256"].as_str().unwrap().len(),
        64
    );

    // Another CA's certificate with the same names; an expired one; a SPIFFE ID outside the
    // pattern; garbage; a truncated PEM; text that is no PEM.
    let rogue = spiffe_leaf(
        &Ca::new("clients"),
        "spiffe://cluster.local/ns/shop/sa/frontend",
    );
    let expired = ca.leaf(LeafSpec {
        common_name: "old",
        dns: &[],
        uris: &["spiffe://cluster.local/ns/shop/sa/old"],
        validity: Some(((2020, 1, 1), (2021, 1, 1))),
        names: &[],
    });
    let other_ns = spiffe_leaf(&ca, "spiffe://cluster.local/ns/other/sa/frontend");
    let truncated = &leaf.cert_pem[..leaf.cert_pem.len() / 2];
    for (what, pem) in [
        ("rogue CA", rogue.cert_pem.as_str()),
        ("expired", expired.cert_pem.as_str()),
        ("other namespace", other_ns.cert_pem.as_str()),
        (
            "garbage",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
        ("truncated", truncated),
        ("not PEM", "hello"),
    ] {
        let a = raw(&p, with_cert(req("/x").build(), pem)).await;
        assert!(!a.allowed(), "{what} was allowed");
        a.assert_refused(401, "invalid_token");
    }
    // No certificate: no credential. A forged x-forwarded-client-cert is not read by a policy
    // that takes the certificate from the connection's attributes.
    p.check(req("/x"))
        .await
        .assert_refused(401, "missing_token");
    let forged = format!("Cert=\"{}\"", url_encoded(&leaf.cert_pem));
    p.check(req("/x").header("x-forwarded-client-cert", &forged))
        .await
        .assert_refused(401, "missing_token");
    let events = p.audit.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().unwrap_or("").contains("not trusted")),
        "{events:?}"
    );
}

#[tokio::test]
async fn x509_from_xfcc_with_allowed_sans() {
    let ca = Ca::new("clients");
    let p = x509_server(&ca, "source: xfcc, allowed_sans: [\"*.shop.svc\"]").await;
    let leaf = spiffe_leaf(&ca, "spiffe://cluster.local/ns/shop/sa/frontend");
    let xfcc = format!(
        "By=spiffe://cluster.local/ns/shop/sa/api;Hash=00;Cert=\"{}\";Subject=\"CN=frontend\";URI=spiffe://cluster.local/ns/shop/sa/frontend",
        url_encoded(&leaf.cert_pem)
    );
    let a = p
        .check(req("/x").header("x-forwarded-client-cert", &xfcc))
        .await;
    assert!(a.allowed(), "{}", a.json);
    assert_eq!(
        a.identity()["subject"],
        "spiffe://cluster.local/ns/shop/sa/frontend"
    );
    // An element appended by a client in front of an unsanitizing proxy: refused.
    let two = format!("{xfcc},Cert=\"{}\"", url_encoded(&leaf.cert_pem));
    p.check(req("/x").header("x-forwarded-client-cert", &two))
        .await
        .assert_refused(401, "invalid_token");
    // A SAN outside the allowed names.
    let other = ca.leaf(LeafSpec {
        common_name: "x",
        dns: &["evil.example"],
        uris: &[],
        validity: None,
        names: &[],
    });
    let xfcc = format!("Cert=\"{}\"", url_encoded(&other.cert_pem));
    p.check(req("/x").header("x-forwarded-client-cert", &xfcc))
        .await
        .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn x509_config_errors_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "nothing here").unwrap();
    for (block, want) in [
        (
            format!("{{trusted_ca_file: {}}}", not_pem.display()),
            "no CERTIFICATE",
        ),
        (
            "{trusted_ca_file: /nonexistent/ca.pem}".to_string(),
            "/nonexistent/ca.pem",
        ),
        (
            format!(
                "{{trusted_ca_file: {}, allowed_sans: [\"a[\"]}}",
                not_pem.display()
            ),
            "allowed_sans",
        ),
    ] {
        let cfg = format!(
            "authentication:\n  policies:\n    - name: mesh\n      methods: [x509]\n      x509: {block}\n"
        );
        let e = match support::server::Prepared::new(support::Spec {
            config: &cfg,
            policies: vec![("policy.rego", ECHO_POLICY)],
            ..Default::default()
        }) {
            Err(e) => e,
            Ok(p) => match p.security(&portcullis::authn::audit::AuditLog::memory(), &env) {
                Err(e) => e,
                Ok(_) => panic!("{block} was accepted"),
            },
        };
        assert!(e.contains(want), "{want}: {e}");
    }
}
