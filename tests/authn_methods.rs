//! API keys, Basic, trusted OIDC issuers and the restrictive cascade, through the Check path.

mod support;

use std::time::Duration;

use base64::Engine as _;
use portcullis::authn::api_key::{ApiKeyStore, NewApiKey};
use serde_json::json;
use support::authn::*;

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

// --- API keys ---------------------------------------------------------------------------------

async fn api_key_server() -> (Portcullis, std::path::PathBuf, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("keys.json");
    std::fs::write(&store_path, "{\"keys\": []}").unwrap();
    let store = ApiKeyStore::open(&store_path).unwrap();
    let live = store
        .create(NewApiKey {
            subject: "billing".into(),
            scopes: vec!["orders:read".into()],
            prefix: "sk_live_".into(),
            ..Default::default()
        })
        .unwrap();
    let test_key = store
        .create(NewApiKey {
            subject: "tester".into(),
            prefix: "sk_test_".into(),
            ..Default::default()
        })
        .unwrap();
    let expired = store
        .create(NewApiKey {
            subject: "old".into(),
            prefix: "sk_live_".into(),
            expires_at: Some(now() - 10),
            ..Default::default()
        })
        .unwrap();
    let cfg = format!(
        r#"authentication:
  policies:
    - name: keys
      methods: [api_key]
      api_key: {{header: x-api-key, query_param: api_key, cookie: api_key, prefix: sk_live_, store: {}}}
"#,
        store_path.display()
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    (p, store_path, live.secret, test_key.secret, expired.secret)
}

#[tokio::test]
async fn api_keys_from_header_query_and_cookie() {
    let (p, _, live, _, _) = api_key_server().await;
    let a = p.check(req("/v1/x").header("x-api-key", &live)).await;
    assert!(a.allowed(), "{}", a.json);
    let id = a.identity();
    assert_eq!(id["method"], "api_key");
    assert_eq!(id["subject"], "billing");
    assert_eq!(id["scopes"], json!(["orders:read"]));
    assert!(id["api_key_id"].as_str().unwrap().starts_with("key_"));
    let a = p.check(req(&format!("/v1/x?api_key={live}"))).await;
    assert!(a.allowed(), "{}", a.json);
    let a = p
        .check(req("/v1/x").header("cookie", &format!("a=b; api_key={live}")))
        .await;
    assert!(a.allowed(), "{}", a.json);
    p.check(req("/v1/x"))
        .await
        .assert_refused(401, "missing_token");
}

#[tokio::test]
async fn api_key_revoked_expired_wrong_prefix_and_unknown_are_refused() {
    let (p, store_path, live, test_key, expired) = api_key_server().await;
    // sk_test_ is a valid stored key, but this policy accepts only sk_live_.
    p.check(req("/v1/x").header("x-api-key", &test_key))
        .await
        .assert_refused(401, "invalid_api_key");
    p.check(req("/v1/x").header("x-api-key", &expired))
        .await
        .assert_refused(401, "invalid_api_key");
    p.check(req("/v1/x").header("x-api-key", "sk_live_nope"))
        .await
        .assert_refused(401, "invalid_api_key");
    let a = p.check(req("/v1/x").header("x-api-key", &live)).await;
    assert!(a.allowed());
    // Revoke through another handle on the same file: the server re-reads it on change.
    let admin = ApiKeyStore::open(&store_path).unwrap();
    let id = a.identity()["api_key_id"].as_str().unwrap().to_string();
    assert!(admin.revoke(&id).unwrap());
    // Poll with a deadline: the store is re-read at most once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let last = loop {
        let a = p.check(req("/v1/x").header("x-api-key", &live)).await;
        if !a.allowed() || std::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!last.allowed(), "a revoked key kept working");
    last.assert_refused(401, "invalid_api_key");
    // Audit events carry the key's hash, never the key.
    let events = p.audit.events();
    assert!(events.iter().all(|e| !e.to_string().contains(&live)));
    assert!(events.iter().any(
        |e| e["method"] == "api_key" && e["reason"].as_str().unwrap_or("").contains("revoked")
    ));
}

/// The stored records of the key store at `path`, by id.
fn stored(path: &std::path::Path) -> std::collections::HashMap<String, serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k.clone()))
        .collect()
}

#[tokio::test]
async fn api_key_use_is_written_once_a_minute_and_audited() {
    let (p, store_path, live, _, _) = api_key_server().await;
    let before = now();
    for _ in 0..5 {
        assert!(
            p.check(req("/v1/x").header("x-api-key", &live))
                .await
                .allowed()
        );
    }
    // One sampled event for the five uses: the key's id and subject, never the key.
    let used: Vec<serde_json::Value> = p
        .audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "api_key_used")
        .collect();
    assert_eq!(used.len(), 1, "{used:?}");
    let id = used[0]["key_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("key_"));
    assert_eq!(used[0]["subject"], "billing");
    assert_eq!(used[0]["policy"], "keys");
    assert!(!used[0].to_string().contains(&live));
    // Written to the store off the Check path, about a second later.
    support::eventually(Duration::from_secs(10), || async {
        stored(&store_path)[&id]["last_used_at"]
            .as_i64()
            .is_some_and(|t| t >= before && t <= now())
    })
    .await
    .unwrap();
    let keys = stored(&store_path);
    assert_eq!(
        keys.values()
            .filter(|k| k.get("last_used_at").is_some())
            .count(),
        1,
        "only the used key: {keys:?}"
    );
    // Within the minute, more uses neither write the file again nor audit again.
    let written = std::fs::read_to_string(&store_path).unwrap();
    for _ in 0..10 {
        assert!(
            p.check(req("/v1/x").header("x-api-key", &live))
                .await
                .allowed()
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(std::fs::read_to_string(&store_path).unwrap(), written);
    assert_eq!(
        p.audit
            .events()
            .iter()
            .filter(|e| e["event"] == "api_key_used")
            .count(),
        1
    );
}

#[tokio::test]
async fn api_key_use_writes_never_lose_concurrent_creates_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("keys.json");
    std::fs::write(&store_path, "{\"keys\": []}").unwrap();
    let seed = ApiKeyStore::open(&store_path).unwrap();
    let keys: Vec<(String, String)> = (0..30)
        .map(|i| {
            let k = seed
                .create(NewApiKey {
                    subject: format!("svc-{i}"),
                    ..Default::default()
                })
                .unwrap();
            (k.record.id, k.secret)
        })
        .collect();
    drop(seed);
    let cfg = format!(
        "authentication:\n  policies:\n    - name: keys\n      methods: [api_key]\n      \
         api_key: {{header: x-api-key, store: {}}}\n",
        store_path.display()
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    // Another writer of the same file (another replica, another policy's store) creates and
    // revokes keys back to back while the server writes the uses of the keys it sees.
    let admin_path = store_path.clone();
    let to_revoke: Vec<String> = keys.iter().skip(20).map(|(id, _)| id.clone()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin_stop = stop.clone();
    let admin = std::thread::spawn(move || {
        let admin = ApiKeyStore::open(&admin_path).unwrap();
        let mut created = Vec::new();
        let mut revoke = to_revoke.iter();
        while !admin_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let k = admin
                .create(NewApiKey {
                    subject: format!("new-{}", created.len()),
                    ..Default::default()
                })
                .unwrap();
            created.push((k.record.id, k.secret));
            if created.len() % 5 == 0
                && let Some(id) = revoke.next()
            {
                assert!(admin.revoke(id).unwrap());
            }
        }
        assert!(revoke.next().is_none(), "every revoke was made");
        created
    });
    let mut allowed = Vec::new();
    for (id, secret) in keys.iter().take(20) {
        assert!(
            p.check(req("/x").header("x-api-key", secret))
                .await
                .allowed()
        );
        allowed.push(id.clone());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Let the last batch of uses be written while the other writer still writes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let created = tokio::task::spawn_blocking(move || admin.join().unwrap())
        .await
        .unwrap();
    // Every use written, every create and revoke kept.
    support::eventually(Duration::from_secs(10), || async {
        let file = stored(&store_path);
        let missing: Vec<&String> = allowed
            .iter()
            .filter(|id| file[*id].get("last_used_at").is_none())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no last_used_at for {missing:?}"))
        }
    })
    .await
    .unwrap();
    let file = stored(&store_path);
    assert_eq!(file.len(), 30 + created.len(), "seeded and created keys");
    for (id, _) in &created {
        assert!(file.contains_key(id), "created key {id} lost");
    }
    for (i, (id, _)) in keys.iter().enumerate() {
        assert_eq!(file[id]["revoked"], i >= 20, "{id}");
    }
    // The server sees the other writer's keys: a new one authenticates, a revoked one not.
    support::eventually(Duration::from_secs(5), || async {
        p.check(req("/x").header("x-api-key", &created.last().unwrap().1))
            .await
            .allowed()
    })
    .await
    .unwrap();
    p.check(req("/x").header("x-api-key", &keys[25].1))
        .await
        .assert_refused(401, "invalid_api_key");
}

// --- Basic ------------------------------------------------------------------------------------

async fn basic_server(max_failures: u32) -> Portcullis {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let hash = portcullis::authn::basic::hash_password("correct horse").unwrap();
    std::fs::write(
        &users,
        json!({"users": [{"username": "ops", "hash": hash, "roles": ["admin"]}]}).to_string(),
    )
    .unwrap();
    let cfg = format!(
        r#"authentication:
  policies:
    - name: admin
      match: {{path_prefixes: ["/admin/"]}}
      methods: [basic]
      require: {{roles: {{any_of: [admin]}}}}
      basic: {{realm: ops, users: {}, lockout: {{max_failures: {max_failures}, seconds: 300}}}}
"#,
        users.display()
    );
    Portcullis::start_in(dir, &cfg, &|_: &str| None).await
}

#[tokio::test]
async fn basic_positive_wrong_password_and_unknown_user() {
    let p = basic_server(5).await;
    let a = p
        .check(req("/admin/x").header("authorization", &basic("ops", "correct horse")))
        .await;
    assert!(a.allowed(), "{}", a.json);
    assert_eq!(a.identity()["method"], "basic");
    assert_eq!(a.identity()["subject"], "ops");
    let a = p
        .check(req("/admin/x").header("authorization", &basic("ops", "pw-Zq9x")))
        .await;
    a.assert_refused(401, "invalid_token");
    assert!(
        a.header("www-authenticate")
            .unwrap()
            .starts_with("Basic realm=\"ops\"")
    );
    let b = p
        .check(req("/admin/x").header("authorization", &basic("nobody", "pw-Zq9x")))
        .await;
    assert_eq!(
        a.body, b.body,
        "unknown user and wrong password answer alike"
    );
    assert_eq!(a.http, b.http);
    // Audit thumbprints never hash the password.
    for e in p.audit.events() {
        assert!(!e.to_string().contains("pw-Zq9x"), "{e}");
    }
}

#[tokio::test]
async fn basic_lockout_after_repeated_failures() {
    let p = basic_server(3).await;
    for _ in 0..3 {
        p.check(req("/admin/x").header("authorization", &basic("ops", "guess")))
            .await
            .assert_refused(401, "invalid_token");
    }
    // Locked: even the right password is refused now.
    p.check(req("/admin/x").header("authorization", &basic("ops", "correct horse")))
        .await
        .assert_refused(401, "invalid_token");
    assert!(
        p.audit
            .events()
            .iter()
            .any(|e| e["reason"] == "user is locked out")
    );
    // Unknown users lock the same way (lockout reveals nothing about who exists).
    for _ in 0..3 {
        p.check(req("/admin/x").header("authorization", &basic("ghost", "g")))
            .await;
    }
    let n = p
        .audit
        .events()
        .iter()
        .filter(|e| e["reason"] == "user is locked out")
        .count();
    p.check(req("/admin/x").header("authorization", &basic("ghost", "g")))
        .await;
    let m = p
        .audit
        .events()
        .iter()
        .filter(|e| e["reason"] == "user is locked out")
        .count();
    assert_eq!(m, n + 1);
}

#[tokio::test]
async fn basic_requirements_answer_403() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let hash = portcullis::authn::basic::hash_password("pw").unwrap();
    std::fs::write(
        &users,
        json!({"users": [{"username": "viewer", "hash": hash, "roles": ["viewer"], "scopes": ["a"]}]}).to_string(),
    )
    .unwrap();
    let cfg = format!(
        r#"authentication:
  policies:
    - name: roles
      match: {{path_prefixes: ["/r/"]}}
      methods: [basic]
      require: {{roles: {{all_of: [viewer, admin]}}}}
      basic: {{users: {0}}}
    - name: scopes
      match: {{path_prefixes: ["/s/"]}}
      methods: [basic]
      require: {{scopes: [a, b]}}
      basic: {{users: {0}}}
"#,
        users.display()
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    p.check(req("/r/x").header("authorization", &basic("viewer", "pw")))
        .await
        .assert_refused(403, "insufficient_role");
    p.check(req("/s/x").header("authorization", &basic("viewer", "pw")))
        .await
        .assert_refused(403, "insufficient_scope");
}

/// A Basic policy on `/admin/` over the users file `name` holding `text`.
async fn users_file_server(name: &str, text: &str) -> Portcullis {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join(name);
    std::fs::write(&users, text).unwrap();
    let cfg = format!(
        r#"authentication:
  policies:
    - name: admin
      match: {{path_prefixes: ["/admin/"]}}
      methods: [basic]
      basic: {{users: {}}}
"#,
        users.display()
    );
    Portcullis::start_in(dir, &cfg, &|_: &str| None).await
}

#[tokio::test]
async fn basic_bcrypt_user_in_the_json_users_file() {
    let argon = portcullis::authn::basic::hash_password("argon pw").unwrap();
    let bcrypt = bcrypt::hash("bcrypt pw", 10).unwrap();
    let p = users_file_server(
        "users.json",
        &json!({"users": [
            {"username": "ann", "hash": argon, "roles": ["admin"]},
            {"username": "bob", "hash": bcrypt, "roles": ["ops"], "scopes": ["deploy"]},
        ]})
        .to_string(),
    )
    .await;
    let a = p
        .check(req("/admin/x").header("authorization", &basic("bob", "bcrypt pw")))
        .await;
    assert!(a.allowed(), "{}", a.json);
    assert_eq!(a.identity()["subject"], "bob");
    assert_eq!(a.identity()["roles"], json!(["ops"]));
    assert_eq!(a.identity()["scopes"], json!(["deploy"]));
    p.check(req("/admin/x").header("authorization", &basic("bob", "bcrypt PW")))
        .await
        .assert_refused(401, "invalid_token");
    // The argon2id user still works beside it; neither password opens the other account.
    assert!(
        p.check(req("/admin/x").header("authorization", &basic("ann", "argon pw")))
            .await
            .allowed()
    );
    p.check(req("/admin/x").header("authorization", &basic("ann", "bcrypt pw")))
        .await
        .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn basic_htpasswd_file_as_apache_writes_it() {
    // `htpasswd -B` writes `$2y$`; other tools `$2b$` or `$2a$`: all three verify.
    let b = bcrypt::hash("pw-b", 10).unwrap();
    let y = bcrypt::hash_with_result("pw-y", 10)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let a = bcrypt::hash_with_result("pw-a", 10)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoA);
    let argon = portcullis::authn::basic::hash_password("pw-argon").unwrap();
    let text = format!("# made by htpasswd\nbee:{b}\nwhy:{y}\r\n\nay:{a}\nargo:{argon}\n");
    let p = users_file_server(".htpasswd", &text).await;
    for (user, pw) in [
        ("bee", "pw-b"),
        ("why", "pw-y"),
        ("ay", "pw-a"),
        ("argo", "pw-argon"),
    ] {
        let ok = p
            .check(req("/admin/x").header("authorization", &basic(user, pw)))
            .await;
        assert!(ok.allowed(), "{user}: {}", ok.json);
        assert_eq!(ok.identity()["subject"], user);
        assert_eq!(
            ok.identity()["roles"],
            json!([]),
            "htpasswd carries no roles"
        );
    }
    p.check(req("/admin/x").header("authorization", &basic("why", "pw-b")))
        .await
        .assert_refused(401, "invalid_token");
    p.check(req("/admin/x").header("authorization", &basic("nobody", "pw-b")))
        .await
        .assert_refused(401, "invalid_token");
}

/// Starts the `portcullis` binary with a Basic policy over a users file holding `users`;
/// start-up must fail: its exit code and standard error.
fn start_fails_with_users(users: &str) -> (Option<i32>, String) {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, users).unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "authentication:\n  policies:\n    - name: admin\n      methods: [basic]\n      basic: {{users: {}}}\n",
            path.display()
        ),
    )
    .unwrap();
    let mut child = support::Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--server", "--addr=127.0.0.1:0"])
            .arg("--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:0")
            .arg("--config-file")
            .arg(&cfg)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server started with users file {users:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

#[test]
fn weak_or_foreign_password_hashes_stop_start_up() {
    let good = bcrypt::hash("pw", 10).unwrap();
    // bcrypt below cost 10: refused, naming the user, in either format.
    let weak = bcrypt::hash("pw", 9).unwrap();
    let (code, err) = start_fails_with_users(
        &json!({"users": [{"username": "ok", "hash": good}, {"username": "weakling", "hash": weak}]})
            .to_string(),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("\"weakling\"") && err.contains("cost 9"),
        "{err}"
    );
    assert!(!err.contains(&weak), "the hash is echoed: {err}");
    let (code, err) = start_fails_with_users(&format!("ok:{good}\nweakling:{weak}\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 2") && err.contains("cost 9"), "{err}");
    // htpasswd's MD5, SHA-1 and plain lines: refused, naming the line, never the hash.
    for (line, kind) in [
        ("md5user:$apr1$Vq1lH0Ff$Qx8b0y3cN2wW2z0tUuQ2d/", "MD5"),
        ("shauser:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "SHA-1"),
        ("plainuser:my-plain-password", "plain text"),
    ] {
        let (code, err) = start_fails_with_users(&format!("# users\nok:{good}\n\n{line}\n"));
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("line 4") && err.contains(kind),
            "{line}: {err}"
        );
        let hash = line.split_once(':').unwrap().1;
        assert!(!err.contains(hash), "the hash is echoed: {err}");
    }
}

// --- the restrictive cascade ------------------------------------------------------------------

#[tokio::test]
async fn restrictive_cascade_never_weakens() {
    let ec = Key::es256("ec256-a.key.pem", "ec-a");
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&ec]).to_string()).unwrap();
    let users = dir.path().join("users.json");
    let hash = portcullis::authn::basic::hash_password("pw").unwrap();
    std::fs::write(
        &users,
        json!({"users": [{"username": "ops", "hash": hash, "roles": ["admin"]}]}).to_string(),
    )
    .unwrap();
    // An optional JWT policy for all of /v1/, a required Basic one for /v1/admin/, and a
    // scope requirement on writes to /v1/orders.
    let cfg = format!(
        r#"authentication:
  policies:
    - name: api
      match: {{path_prefixes: ["/v1/"]}}
      methods: [jwt, basic]
      required: false
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: {jwks}}}
      basic: {{users: {users}}}
    - name: admin
      match: {{path_prefixes: ["/v1/admin/"]}}
      methods: [basic]
      require: {{roles: {{any_of: [admin]}}}}
      basic: {{users: {users}}}
    - name: writes
      match: {{path_prefixes: ["/v1/orders"], methods: [POST]}}
      methods: [jwt]
      require: {{scopes: ["orders:admin"]}}
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: {jwks}}}
"#,
        jwks = jwks_path.display(),
        users = users.display()
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    let token = ec.sign(&claims("alice"));
    // Optional alone: anonymous reaches Rego with identity null; a token is used.
    let a = p.check(req("/v1/things")).await;
    assert!(a.allowed());
    assert_eq!(a.identity(), serde_json::Value::Null);
    assert_eq!(
        p.check(req("/v1/things").bearer(&token)).await.identity()["subject"],
        "alice"
    );
    // An invalid credential is never downgraded to anonymous by an optional policy.
    p.check(req("/v1/things").bearer("a.b.c"))
        .await
        .assert_refused(401, "invalid_token");
    // Required beats optional: /v1/admin/ needs Basic even though /v1/ is optional.
    p.check(req("/v1/admin/users"))
        .await
        .assert_refused(401, "missing_token");
    // ...and a JWT that satisfies the optional policy does not satisfy the required one.
    p.check(req("/v1/admin/users").bearer(&token))
        .await
        .assert_refused(401, "missing_token");
    // Encoded or dotted paths meet the same policy.
    p.check(req("/v1/%61dmin/users"))
        .await
        .assert_refused(401, "missing_token");
    p.check(req("/v1/x/../admin/users"))
        .await
        .assert_refused(401, "missing_token");
    let a = p
        .check(req("/v1/admin/users").header("authorization", &basic("ops", "pw")))
        .await;
    assert!(a.allowed(), "{}", a.json);
    // Requirements add up: POST /v1/orders needs orders:admin, which alice lacks.
    p.check(req("/v1/orders").method("POST").bearer(&token))
        .await
        .assert_refused(403, "insufficient_scope");
    let mut c = claims("root");
    c["scope"] = json!("orders:admin");
    assert!(
        p.check(req("/v1/orders").method("POST").bearer(&ec.sign(&c)))
            .await
            .allowed()
    );
    // GET is not matched by "writes".
    assert!(p.check(req("/v1/orders").bearer(&token)).await.allowed());
}

#[tokio::test]
async fn host_and_method_matching() {
    let ec = Key::es256("ec256-a.key.pem", "ec-a");
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&ec]).to_string()).unwrap();
    let cfg = format!(
        r#"authentication:
  policies:
    - name: api
      match: {{hosts: ["api.example.com", "*.internal.example.com"], methods: [GET]}}
      methods: [jwt]
      jwt: {{issuer: "{ISSUER}", audiences: [orders], algorithms: [ES256], jwks_file: {}}}
"#,
        jwks_path.display()
    );
    let p = Portcullis::start_in(dir, &cfg, &|_: &str| None).await;
    p.check(req("/x"))
        .await
        .assert_refused(401, "missing_token");
    p.check(req("/x").host("API.example.com:443"))
        .await
        .assert_refused(401, "missing_token");
    p.check(req("/x").host("a.internal.example.com"))
        .await
        .assert_refused(401, "missing_token");
    assert_eq!(
        p.check(req("/x").host("other.example.com"))
            .await
            .identity(),
        json!("absent")
    );
    assert_eq!(
        p.check(req("/x").method("POST")).await.identity(),
        json!("absent")
    );
}

// --- trusted OIDC issuers ---------------------------------------------------------------------

#[tokio::test]
async fn trusted_oidc_issuer_with_email_rules_and_grants() {
    let ec = Key::es256("ec256-a.key.pem", "ec-a");
    let server = IssuerServer::start(jwks(&[&ec])).await;
    let iss = server.url();
    let cfg = format!(
        r#"authentication:
  policies:
    - name: api
      methods: [jwt]
  trust:
    oidc:
      - issuer: {iss}
        audiences: [portcullis]
        allowedDomains: [example.com]
        allowedEmails: [guest@partner.org]
        clockSkewSeconds: 10
        grants: [{{kind: read, namespace: acme}}]
"#
    );
    let p = Portcullis::start(&cfg).await;
    let token = |email: &str, verified: bool| {
        ec.sign(
            &json!({"iss": iss, "aud": "portcullis", "sub": "u1", "exp": now() + 300,
                        "email": email, "email_verified": verified}),
        )
    };
    let a = p
        .check(req("/x").bearer(&token("dev@example.com", true)))
        .await;
    assert!(a.allowed(), "{}", a.json);
    let id = a.identity();
    assert_eq!(id["issuer"], iss.as_str());
    assert_eq!(id["grants"], json!([{"kind": "read", "namespace": "acme"}]));
    assert!(
        p.check(req("/x").bearer(&token("guest@partner.org", true)))
            .await
            .allowed()
    );
    p.check(req("/x").bearer(&token("dev@example.com", false)))
        .await
        .assert_refused(401, "invalid_token");
    p.check(req("/x").bearer(&token("dev@evil.com", true)))
        .await
        .assert_refused(401, "invalid_token");
    p.check(req("/x").bearer(&token("dev@sub.example.com.evil.com", true)))
        .await
        .assert_refused(401, "invalid_token");
    // A token from an issuer that is not trusted (and no jwt block): refused.
    let mut other = claims("u");
    other["iss"] = json!("https://elsewhere.test");
    p.check(req("/x").bearer(&ec.sign(&other)))
        .await
        .assert_refused(401, "invalid_token");
    // Wrong audience for the trusted issuer.
    let t = ec.sign(
        &json!({"iss": iss, "aud": "other", "sub": "u1", "exp": now() + 300,
                            "email": "dev@example.com", "email_verified": true}),
    );
    p.check(req("/x").bearer(&t))
        .await
        .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn oidc_discovery_naming_another_issuer_is_refused() {
    let ec = Key::es256("ec256-a.key.pem", "ec-a");
    let server = IssuerServer::start(jwks(&[&ec])).await;
    server.set(|s| s.discovery_issuer = Some("https://evil.test".into()));
    let iss = server.url();
    let cfg = format!(
        "authentication:\n  policies:\n    - name: api\n      methods: [jwt]\n  trust:\n    oidc:\n      - issuer: {iss}\n        audiences: [portcullis]\n"
    );
    let p = Portcullis::start(&cfg).await;
    let t = ec.sign(&json!({"iss": iss, "aud": "portcullis", "sub": "u1", "exp": now() + 300}));
    p.check(req("/x").bearer(&t))
        .await
        .assert_refused(401, "invalid_signature");
}

// --- config -----------------------------------------------------------------------------------

#[test]
fn dangerous_configs_are_refused() {
    let load = |yaml: &str| {
        let tree: serde_json::Value = yaml_serde::from_str(yaml).unwrap();
        portcullis::config::Config::from_tree(tree, "t.yaml").map(|_| ())
    };
    let base = |jwt: &str| {
        format!(
            "authentication:\n  policies:\n    - name: a\n      methods: [jwt]\n      jwt: {jwt}\n"
        )
    };
    assert!(load(&base("{algorithms: [none], jwks_file: x}")).is_err());
    assert!(load(&base("{algorithms: [], jwks_file: x}")).is_err());
    assert!(
        load(&base("{jwks_file: x}")).is_err(),
        "the allow-list is required"
    );
    assert!(
        load(&base("{algorithms: [HS256], jwks_file: x}")).is_err(),
        "HS only with a secret"
    );
    assert!(load(&base("{algorithms: [RS256], secret_env: S}")).is_err());
    assert!(
        load(&base(
            "{algorithms: [RS256], jwks_file: x, jwks_uri: 'http://a'}"
        ))
        .is_err()
    );
    assert!(load(&base("{algorithms: [RS256], jwks_file: x}")).is_ok());
    assert!(
        load("authentication:\n  policies:\n    - name: a\n      methods: [api_key]\n").is_err()
    );
    assert!(
        load(
            "authentication:\n  policies:\n    - name: a\n      methods: [basic]\n      nope: 1\n"
        )
        .is_err()
    );
}
