//! `portcullis authn …` end to end: the binary against config files, key stores, users files,
//! a real JWKS issuer on loopback and audit logs; identities compared with what the real Check
//! path gives `input.identity` for the same request.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value as Json, json};
use support::authn::{IssuerServer, Key, Portcullis, jwks, now, req};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Runs the binary with `stdin` as standard input.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

async fn run_async(args: Vec<String>, stdin: Vec<u8>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &stdin)
    })
    .await
    .unwrap()
}

fn json(out: &Output) -> Json {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text:?} / {}", String::from_utf8_lossy(&out.stderr)))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A config with an API key policy (store from `hash-key`) and a Basic policy (users file from
/// `hash-password`), the audit sink a file that must stay untouched.
struct Keys {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    secret: String,
    id: String,
}

fn keys_config() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let made = run(
        &[
            "authn",
            "hash-key",
            "--subject",
            "billing",
            "--scope",
            "orders:read",
            "--prefix",
            "sk_t_",
        ],
        b"",
    );
    assert_eq!(code(&made), 0, "{made:?}");
    let made = json(&made);
    let secret = made["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk_t_") && secret.len() > 40, "{secret}");
    let entry = made["entry"].clone();
    assert_eq!(entry["subject"], "billing");
    assert!(
        !entry.to_string().contains(&secret),
        "the entry holds no secret"
    );
    // A second, revoked key hashed from standard input.
    let revoked = run(
        &["authn", "hash-key", "--subject", "old", "--stdin"],
        b"sk_t_revoked-one\n",
    );
    let revoked = json(&revoked);
    assert!(
        revoked.get("secret").is_none(),
        "a given key is not printed back"
    );
    let mut revoked = revoked["entry"].clone();
    revoked["revoked"] = json!(true);
    let mut expired = json(&run(
        &["authn", "hash-key", "--subject", "gone", "--stdin"],
        b"sk_t_expired-one",
    ))["entry"]
        .clone();
    expired["expires_at"] = json!(now() - 10);
    let store = dir.path().join("keys.json");
    std::fs::write(
        &store,
        json!({"keys": [entry, revoked, expired]}).to_string(),
    )
    .unwrap();

    let user = run(
        &[
            "authn",
            "hash-password",
            "--username",
            "ops",
            "--role",
            "admin",
        ],
        b"correct horse\n",
    );
    assert_eq!(code(&user), 0, "{user:?}");
    let user = json(&user);
    assert!(user["hash"].as_str().unwrap().starts_with("$argon2id$"));
    let users = dir.path().join("users.json");
    std::fs::write(&users, json!({"users": [user]}).to_string()).unwrap();

    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "authentication:\n  audit: {{sink: {audit}}}\n  policies:\n    \
             - {{name: api, match: {{path_prefixes: [/api/]}}, methods: [api_key], api_key: {{header: x-api-key, prefix: sk_t_, store: {store}}}}}\n    \
             - {{name: admin, match: {{path_prefixes: [/admin/], methods: [POST]}}, methods: [basic], basic: {{users: {users}}}}}\n    \
             - {{name: cookie, match: {{path_prefixes: [/web/]}}, methods: [api_key], required: false, api_key: {{cookie: session, store: {store}}}}}\n",
            audit = s(&dir.path().join("audit.log")),
            store = s(&store),
            users = s(&users),
        ),
    )
    .unwrap();
    Keys {
        id: made["entry"]["id"].as_str().unwrap().to_string(),
        secret,
        config,
        dir,
    }
}

#[test]
fn api_keys_and_passwords_made_by_the_cli_authenticate() {
    let k = keys_config();
    let c = s(&k.config);

    // The key, from a file, where the matching policy reads it.
    let key_file = k.dir.path().join("key");
    std::fs::write(&key_file, format!("{}\n", k.secret)).unwrap();
    let out = run(
        &[
            "authn",
            "test",
            "-c",
            c,
            "--path",
            "/api/orders",
            "--api-key-file",
            s(&key_file),
        ],
        b"",
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["result"], "authenticated");
    assert_eq!(v["policies"], json!(["api"]));
    assert_eq!(v["identity"]["subject"], "billing");
    assert_eq!(v["identity"]["api_key_id"], k.id.as_str());
    assert_eq!(v["identity"]["scopes"], json!(["orders:read"]));

    // From standard input, into a cookie, for the optional policy.
    let out = run(
        &[
            "authn",
            "test",
            "-c",
            c,
            "--policy",
            "cookie",
            "--api-key-file",
            "-",
        ],
        k.secret.as_bytes(),
    );
    assert_eq!(json(&out)["identity"]["subject"], "billing", "{out:?}");

    // Refusals, with the internal reason.
    for (key, reason) in [
        ("sk_t_revoked-one", "is revoked"),
        ("sk_t_expired-one", "is expired"),
        ("sk_t_unknown", "unknown key"),
        ("other_prefix", "accepted prefix"),
    ] {
        let out = run(
            &[
                "authn",
                "test",
                "-c",
                c,
                "--path",
                "/api/x",
                "--api-key",
                key,
            ],
            b"",
        );
        assert_eq!(code(&out), 1, "{out:?}");
        let v = json(&out);
        assert_eq!(v["result"], "refused");
        assert_eq!(v["status"], 401);
        assert_eq!(v["code"], "invalid_api_key");
        assert_eq!(v["policy"], "api");
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
        assert!(
            !v.to_string().contains("sk_t_revoked"),
            "no key in the output"
        );
    }

    // No credential: the required policy's answer.
    let out = run(&["authn", "test", "-c", c, "--path", "/api/x"], b"");
    assert_eq!(code(&out), 1);
    let v = json(&out);
    assert_eq!(v["code"], "missing_token");
    assert_eq!(
        v["www_authenticate"],
        json!(["ApiKey realm=\"portcullis\""])
    );
    // Only optional policies: anonymous; none: not applicable. Neither is a success.
    let out = run(&["authn", "test", "-c", c, "--path", "/web/"], b"");
    assert_eq!(
        (code(&out), json(&out)["result"].clone()),
        (1, json!("anonymous"))
    );
    let out = run(&["authn", "test", "-c", c, "--path", "/elsewhere"], b"");
    assert_eq!(
        (code(&out), json(&out)["result"].clone()),
        (1, json!("not_applicable"))
    );

    // Basic: --policy picks a request the policy matches (POST /admin/).
    let out = run(
        &[
            "authn",
            "test",
            "-c",
            c,
            "--policy",
            "admin",
            "--basic",
            "ops:correct horse",
        ],
        b"",
    );
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(json(&out)["identity"]["roles"], json!(["admin"]));
    let out = run(
        &[
            "authn",
            "test",
            "-c",
            c,
            "--policy",
            "admin",
            "--basic-file",
            "-",
            "-o",
            "table",
        ],
        b"ops:wrong\n",
    );
    assert_eq!(code(&out), 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(
            "401 invalid_token: wrong user name or password (policy admin, method basic)"
        ),
        "{text}"
    );
    assert!(
        !text.contains("ops:wrong"),
        "no credential in the output: {text}"
    );

    // One credential at most; an unknown policy names the ones there are.
    let out = run(
        &["authn", "test", "-c", c, "--token", "a", "--api-key", "b"],
        b"",
    );
    assert_eq!(code(&out), 2);
    let out = run(&["authn", "test", "-c", c, "--policy", "nope"], b"");
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("api, admin, cookie"));
    // An API key where no matching policy reads one is a usage error, not a guess.
    let out = run(
        &[
            "authn",
            "test",
            "-c",
            c,
            "--path",
            "/admin/",
            "--api-key",
            "k",
        ],
        b"",
    );
    assert_eq!(code(&out), 2, "{out:?}");

    // The tool writes nothing to the configured audit sink.
    assert!(!k.dir.path().join("audit.log").exists());
}

#[test]
fn validate_key_says_who_or_why_not() {
    let k = keys_config();
    let c = s(&k.config);
    let out = run(
        &[
            "authn",
            "validate-key",
            "-c",
            c,
            "--policy",
            "api",
            "--key-file",
            "-",
        ],
        format!("{}\n", k.secret).as_bytes(),
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["id"], k.id.as_str());
    assert_eq!(v["subject"], "billing");
    assert_eq!(v["scopes"], json!(["orders:read"]));

    for (key, reason) in [
        ("sk_t_revoked-one", "revoked"),
        ("sk_t_expired-one", "expired"),
        ("sk_t_nope", "unknown key"),
        ("nope", "accepted prefix (sk_t_)"),
    ] {
        let out = run(
            &[
                "authn",
                "validate-key",
                "-c",
                c,
                "--policy",
                "api",
                "--key",
                key,
            ],
            b"",
        );
        assert_eq!(code(&out), 1, "{key}: {out:?}");
        let v = json(&out);
        assert_eq!(v["valid"], false);
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
    }
    // A policy without a key store, an unknown policy, no key: usage errors.
    for args in [
        vec!["--policy", "admin", "--key", "k"],
        vec!["--policy", "nope", "--key", "k"],
        vec!["--policy", "api"],
    ] {
        let mut all = vec!["authn", "validate-key", "-c", c];
        all.extend(args);
        assert_eq!(code(&run(&all, b"")), 2, "{all:?}");
    }
    // A config that does not load is named.
    let out = run(
        &[
            "authn",
            "validate-key",
            "-c",
            "/nonexistent.yaml",
            "--policy",
            "api",
            "--key",
            "k",
        ],
        b"",
    );
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml"));
}

#[test]
fn passwords_are_never_arguments() {
    let out = run(
        &[
            "authn",
            "hash-password",
            "--username",
            "u",
            "--password",
            "p",
        ],
        b"",
    );
    assert_eq!(code(&out), 2);
    // Empty input is refused, not hashed.
    let out = run(&["authn", "hash-password", "--username", "u"], b"\n");
    assert_eq!(code(&out), 2, "{out:?}");
    // Two hashes of one password differ (a fresh salt each).
    let a = json(&run(&["authn", "hash-password", "--username", "u"], b"pw"));
    let b = json(&run(&["authn", "hash-password", "--username", "u"], b"pw"));
    assert_ne!(a["hash"], b["hash"]);
}

/// A JWT policy whose keys come from a real JWKS endpoint: `authn test` makes the fetch, and
/// its identity is the one the Check path gives Rego for the same token.
#[tokio::test(flavor = "multi_thread")]
async fn jwt_identity_matches_the_check_path() {
    let key = Key::es256("ec256-a.key.pem", "k1");
    let issuer = IssuerServer::start(jwks(&[&key])).await;
    let yaml = format!(
        "authentication:\n  audit: {{sink: off}}\n  policies:\n    - name: api\n      match: {{path_prefixes: [/v1/]}}\n      methods: [jwt]\n      \
         require: {{scopes: [orders:read]}}\n      \
         jwt: {{issuer: https://issuer.test, audiences: [orders], algorithms: [ES256], jwks_uri: {}}}\n",
        issuer.jwks_uri()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let c = s(&config).to_string();
    let token = |exp: i64, scope: &str| {
        key.sign(&json!({
            "iss": "https://issuer.test", "aud": "orders", "sub": "alice", "exp": exp,
            "scope": scope, "roles": ["reader"],
        }))
    };
    let good = token(now() + 300, "orders:read");
    let args = |extra: &[&str]| -> Vec<String> {
        ["authn", "test", "-c", &c, "--path", "/v1/orders"]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };

    let out = run_async(args(&["--token-file", "-"]), good.clone().into_bytes()).await;
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(issuer.fetches() >= 1, "the JWKS was fetched");
    let cli_identity = json(&out)["identity"].clone();

    let server = Portcullis::start(&yaml).await;
    let answer = server.check(req("/v1/orders").bearer(&good)).await;
    assert!(answer.allowed(), "{}", answer.json);
    assert_eq!(cli_identity, answer.identity());

    // Expired, unsigned by the issuer's key, lacking the scope: the reason says which.
    let other = Key::es256("ec256-b.key.pem", "k1");
    for (t, status, code_name, reason) in [
        (token(now() - 3600, "orders:read"), 401, "invalid_token", "expired"),
        (
            other.sign(&json!({"iss": "https://issuer.test", "aud": "orders", "sub": "m", "exp": now() + 60})),
            401,
            "invalid_signature",
            "",
        ),
        (token(now() + 300, "other"), 403, "insufficient_scope", "requirement not met"),
    ] {
        let out = run_async(args(&["--token", &t]), Vec::new()).await;
        assert_eq!(code(&out), 1, "{out:?}");
        let v = json(&out);
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["code"], code_name, "{v}");
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
        assert!(!v.to_string().contains(&t), "the token is not echoed");
    }

    // The issuer unreachable: the call-out fails and the token is refused, not accepted.
    drop(server);
    drop(issuer);
    let out = run_async(args(&["--token", &good]), Vec::new()).await;
    assert_eq!(code(&out), 1, "{out:?}");
    assert_eq!(json(&out)["code"], "invalid_signature");
}

/// Audit lines as the audit log writes them, with garbage between.
fn audit_line(i: usize, policy: &str, subject: &str) -> String {
    let mut v = json!({
        "time": format!("2025-01-01T00:00:{:02}.000Z", i % 60),
        "event": "authn_failure", "decision_id": format!("d{i}"), "policy": policy,
        "method": "jwt", "result": "invalid_token", "reason": "claims: expired",
        "credential_sha256": "ab",
    });
    if !subject.is_empty() {
        v["subject"] = json!(subject);
    }
    format!("{v}\n")
}

#[test]
fn failures_newest_first_skipping_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&audit_line(i, if i % 2 == 0 { "api" } else { "admin" }, ""));
        if i % 10 == 0 {
            text.push_str("garbage {\n");
        }
        text.push_str("{\"event\":\"token_minted\",\"decision_id\":\"t\"}\n");
    }
    text.push_str(&audit_line(40, "api", "evil\u{1b}[2Jname"));
    std::fs::write(&log, &text).unwrap();
    let out = run(
        &[
            "authn",
            "failures",
            "--audit-log",
            s(&log),
            "--policy",
            "api",
            "--limit",
            "3",
        ],
        b"",
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let v = json(&out);
    let ids: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d40", "d38", "d36"]);
    // The whole file: every failure, the four garbage lines counted.
    let v = json(&run(
        &[
            "authn",
            "failures",
            "--audit-log",
            s(&log),
            "--limit",
            "1000",
        ],
        b"",
    ));
    assert_eq!(v["events"].as_array().unwrap().len(), 41);
    assert_eq!(v["skipped_lines"], 4);
    assert_eq!(v["partial"], false);
    // A table never passes a caller's terminal escapes through.
    let out = run(
        &[
            "authn",
            "failures",
            "--audit-log",
            s(&log),
            "--limit",
            "1",
            "-o",
            "table",
        ],
        b"",
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        !table.contains('\u{1b}') && table.contains("evil\\u{1b}[2Jname"),
        "{table}"
    );
    // A missing file, a directory: errors that name them.
    let out = run(
        &["authn", "failures", "--audit-log", "/nonexistent.log"],
        b"",
    );
    assert_eq!(code(&out), 1);
    let out = run(&["authn", "failures", "--audit-log", s(dir.path())], b"");
    assert_ne!(code(&out), 0);
}

#[test]
fn failures_reads_only_the_tail_of_a_huge_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    // 2 GiB of zeros (a sparse file: no disk used), then two events; only the tail is read.
    let f = std::fs::File::create(&log).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(format!("\n{}{}", audit_line(1, "a", ""), audit_line(2, "a", "")).as_bytes())
        .unwrap();
    drop(f);
    let started = std::time::Instant::now();
    let v = json(&run(
        &["authn", "failures", "--audit-log", s(&log), "--limit", "2"],
        b"",
    ));
    assert_eq!(v["events"][0]["decision_id"], "d2");
    assert_eq!(v["events"][1]["decision_id"], "d1");
    assert!(v["scanned_bytes"].as_u64().unwrap() < 1 << 20);
    // Asking for more than there is stops at --max-scan.
    let v = json(&run(
        &[
            "authn",
            "failures",
            "--audit-log",
            s(&log),
            "--limit",
            "10",
            "--max-scan",
            "8388608",
        ],
        b"",
    ));
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["partial"], true);
    assert!(v["scanned_bytes"].as_u64().unwrap() <= 8 << 20);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// The call-outs of `oauth` introspection, `custom` validators and trusted OIDC discovery are
/// made by `authn test` as by the Check path, against real servers on loopback.
#[tokio::test(flavor = "multi_thread")]
async fn call_outs_reach_their_servers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let calls = Arc::new(AtomicU64::new(0));
    let (introspect, validate) = (calls.clone(), calls.clone());
    let app = axum::Router::new()
        .route(
            "/introspect",
            axum::routing::post(move |body: String| {
                introspect.fetch_add(1, Ordering::SeqCst);
                let active = body.contains("token=good-access-token");
                async move {
                    axum::Json(
                        json!({"active": active, "sub": "svc-oauth", "scope": "orders:read"}),
                    )
                }
            }),
        )
        .route(
            "/validate",
            axum::routing::post(move |body: axum::Json<Json>| {
                validate.fetch_add(1, Ordering::SeqCst);
                let ok = body.0["headers"]["x-session"] == "s-1";
                async move {
                    if ok {
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({"subject": "legacy-user"})),
                        )
                    } else {
                        (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})))
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _stop = support::server::serve_router(listener, app);
    let key = Key::es256("ec256-a.key.pem", "k1");
    let issuer = IssuerServer::start(jwks(&[&key])).await;
    let iss = issuer.url();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "authentication:\n  policies:\n    \
             - {{name: partner, match: {{path_prefixes: [/partner/]}}, methods: [oauth], oauth: {{introspection_url: http://{addr}/introspect, client_id: portcullis, client_secret_env: INTROSPECTION_SECRET}}}}\n    \
             - {{name: legacy, match: {{path_prefixes: [/legacy/]}}, methods: [custom], custom: {{url: http://{addr}/validate, headers: [x-session]}}}}\n    \
             - {{name: sso, match: {{path_prefixes: [/sso/]}}, methods: [jwt]}}\n  \
             trust:\n    oidc:\n      - {{issuer: {iss}, audiences: [portcullis]}}\n"
        ),
    )
    .unwrap();
    let c = s(&config).to_string();
    let test = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["authn", "test", "-c"])
                .args(args)
                .env("INTROSPECTION_SECRET", "introspection-secret-0123456789")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let args = |extra: &[&str]| -> Vec<String> {
        std::iter::once(c.as_str())
            .chain(extra.iter().copied())
            .map(str::to_owned)
            .collect()
    };

    let out = test(args(&[
        "--policy",
        "partner",
        "--token",
        "good-access-token",
    ]))
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(json(&out)["identity"]["subject"], "svc-oauth");
    let out = test(args(&["--policy", "partner", "--token", "revoked-token"])).await;
    assert_eq!(code(&out), 1, "{out:?}");
    assert_eq!(json(&out)["code"], "invalid_token");

    let out = test(args(&["--path", "/legacy/x", "-H", "x-session: s-1"])).await;
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(json(&out)["identity"]["subject"], "legacy-user");
    let out = test(args(&["--path", "/legacy/x", "-H", "x-session: forged"])).await;
    assert_eq!(code(&out), 1, "{out:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "every answer came from a call"
    );

    let id_token =
        key.sign(&json!({"iss": iss, "aud": "portcullis", "sub": "dana", "exp": now() + 60}));
    let out = test(args(&["--policy", "sso", "--token", &id_token])).await;
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(json(&out)["identity"]["issuer"], iss.as_str());
    let other =
        key.sign(&json!({"iss": iss, "aud": "elsewhere", "sub": "dana", "exp": now() + 60}));
    let out = test(args(&["--policy", "sso", "--token", &other])).await;
    assert_eq!(json(&out)["code"], "invalid_token", "{out:?}");
}

/// On a terminal, `hash-password` prompts twice without echoing what is typed (`script` gives
/// it a pseudo-terminal); two different entries are refused.
#[test]
fn a_typed_password_is_not_echoed() {
    use std::io::Read as _;
    let typed = |first: &str, second: &str| -> (i32, String) {
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{BIN} authn hash-password --username u"),
                "/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux)");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = String::new();
        // Each answer is typed only once its prompt is shown (echo is off by then).
        for (prompt, answer) in [("password: ", first), ("again: ", second)] {
            while !seen.ends_with(prompt) {
                let mut byte = [0u8; 1];
                assert_eq!(
                    stdout.read(&mut byte).unwrap(),
                    1,
                    "no prompt {prompt:?}: {seen:?}"
                );
                seen.push(byte[0] as char);
            }
            stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        }
        drop(stdin);
        stdout.read_to_string(&mut seen).unwrap();
        (child.wait().unwrap().code().unwrap_or(-1), seen)
    };
    let (rc, screen) = typed("s3cret-typed", "s3cret-typed");
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains("$argon2id$"), "{screen}");
    assert!(
        !screen.contains("s3cret-typed"),
        "the password was echoed: {screen}"
    );
    let (rc, screen) = typed("one", "two");
    assert_eq!(rc, 2, "{screen}");
    assert!(
        screen.contains("differ") && !screen.contains("argon2"),
        "{screen}"
    );
}
