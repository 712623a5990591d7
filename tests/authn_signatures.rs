//! Authentication by signature, through the Check path: webhook HMACs signed exactly as
//! GitHub, Stripe and Slack sign them.

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
