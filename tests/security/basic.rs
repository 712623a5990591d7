//! Finding 3: with `max_failures: 5`, 40 concurrent wrong passwords for one user produced 40
//! argon2 verifications (a 300-way burst, 86): the lockout was checked before the verification
//! slot was awaited, not reserved. The queue of waiting verifications was unbounded too.

use argon2::password_hash::{PasswordHasher, SaltString};
use base64::Engine as _;

use crate::sidecar::{Setup, Sidecar};
use crate::support::authn::{Answer, req as check_req};

/// A users file with `ops`/`right`, hashed with costly parameters (so that verifications
/// overlap), and a policy that allows any authenticated caller.
fn setup() -> Setup<'static> {
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(32 * 1024, 2, 1, None).unwrap(),
    );
    let hash = argon
        .hash_password(b"right", &SaltString::generate(&mut rand_core::OsRng))
        .unwrap()
        .to_string();
    Setup {
        config: r#"authentication:
  policies:
    - name: admin
      methods: [basic]
      basic: {users: "{dir}/users.json", lockout: {max_failures: 5, seconds: 300}}
"#,
        files: vec![
            (
                "users.json",
                serde_json::json!({"users": [{"username": "ops", "hash": hash}]}).to_string(),
            ),
            (
                "policy.rego",
                "package envoy.authz\nallow if input.identity.subject\n".into(),
            ),
        ],
        env: vec![],
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// How many passwords were actually verified (and found wrong).
fn verifications(s: &Sidecar) -> usize {
    s.audit_events()
        .iter()
        .filter(|e| e["reason"] == "wrong user name or password")
        .count()
}

#[tokio::test]
async fn concurrent_wrong_passwords_are_verified_at_most_max_failures_times() {
    let s = Sidecar::start(setup()).await;
    let attempts = (0..40).map(|i| {
        let s = &s;
        async move {
            s.check(
                check_req("/admin").header("authorization", &basic("ops", &format!("wrong{i}"))),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    for a in &answers {
        assert_eq!(a.http, Some(401), "{}", a.json);
    }
    let verified = verifications(&s);
    assert!(verified <= 5, "{verified} verifications for max_failures 5");
    // Locked: the right password is refused too, without a verification.
    let a = s
        .check(check_req("/admin").header("authorization", &basic("ops", "right")))
        .await;
    a.assert_refused(401, "invalid_token");
    assert_eq!(verifications(&s), verified);
    s.stop().await;
}

#[tokio::test]
async fn the_queue_of_waiting_verifications_is_bounded() {
    let s = Sidecar::start(setup()).await;
    // A burst for 300 different user names: each has its own lockout count, so only the queue
    // bound stops them.
    // One HTTP/2 connection carries the burst (300 connections opened at once can be reset by
    // a busy machine's accept backlog, which is not what this test is about).
    let client = s.ext_authz().await;
    let attempts = (0..300).map(|i| {
        let mut client = client.clone();
        async move {
            let req = check_req("/admin").header("authorization", &basic(&format!("u{i}"), "x"));
            Answer::from(
                client
                    .check(req.build())
                    .await
                    .expect("Check answered with a gRPC error")
                    .into_inner(),
            )
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let busy = answers.iter().filter(|a| a.http == Some(429)).count();
    for a in &answers {
        assert!(matches!(a.http, Some(401 | 429)), "{}", a.json);
        if a.http == Some(429) {
            assert_eq!(a.body, r#"{"error":"too_many_requests"}"#);
        }
    }
    assert!(busy > 0, "no attempt was refused for a full queue");
    assert!(
        verifications(&s) + busy <= 300,
        "{} verified, {busy} refused",
        verifications(&s)
    );
    // Once the burst is over, the right password works.
    let a = s
        .check(check_req("/admin").header("authorization", &basic("ops", "right")))
        .await;
    assert!(a.allowed(), "{}", a.json);
    s.stop().await;
}

#[tokio::test]
async fn absurd_user_names_are_refused_without_verification() {
    let s = Sidecar::start(setup()).await;
    let a = s
        .check(check_req("/admin").header("authorization", &basic(&"u".repeat(100_000), "x")))
        .await;
    a.assert_refused(401, "invalid_token");
    assert_eq!(verifications(&s), 0);
    s.stop().await;
}
