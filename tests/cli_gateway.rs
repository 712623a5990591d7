//! The gateway command line end to end against a real `portcullis run`: mint tokens, put a
//! policy, decide, tail the decision log, data, status, gRPC-Web, exit codes.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;
use support::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const SECRET: &str = "cli-test-secret-0123456789-0123456789";

/// A running server, killed on drop.
struct Server {
    _proc: Proc,
    gateway: String,
    grpc: String,
}

fn clean(cmd: &mut Command) -> &mut Command {
    for var in [
        "GATEWAY_JWT_SECRET",
        "GATEWAY_TOKEN",
        "GATEWAY_PASSWORD",
        "PORTCULLIS_JWT_SECRET",
        "PORTCULLIS_TOKEN",
        "PORTCULLIS_PASSWORD",
        "PORTCULLIS_GATEWAY",
    ] {
        cmd.env_remove(var);
    }
    // Never a login saved on this machine.
    cmd.env("PORTCULLIS_LOGIN_FILE", "/nonexistent/portcullis-login")
        .stdin(Stdio::null())
}

/// Starts `portcullis run` with every listener on port 0 and reads the bound addresses from
/// its "portcullis serving" log line. Servers started in the same `dir` share its revocation
/// list (`revoked.json`), as replicas would.
fn start(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    gateway_addr: &str,
) -> Result<Server, String> {
    let cfg = dir.join("config.yaml");
    let keys = dir.join("keys.json");
    std::fs::write(&keys, "{\"keys\": []}").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "plugins:\n  envoy_ext_authz_grpc:\n    addr: 127.0.0.1:0\ngateway:\n  addr: {gateway_addr}\n\
             authentication:\n  revocation: {{file: \"{}\"}}\n  \
             policies:\n    - name: keys\n      match: {{path_prefixes: [/keys-only/]}}\n      \
             methods: [api_key]\n      required: false\n      \
             api_key: {{header: x-api-key, prefix: sk_cli_, store: \"{}\"}}\n",
            dir.join("revoked.json").display(),
            keys.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("default.rego"),
        "package envoy.authz\n\ndefault allow := false\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    clean(&mut cmd)
        .args([
            "run",
            "--server",
            "--addr",
            "127.0.0.1:0",
            "--log-level",
            "info",
            "--config-file",
        ])
        .arg(&cfg)
        .arg(dir.join("default.rego"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.wait();
            return Err(seen);
        };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("portcullis serving") {
            let v: Json = serde_json::from_str(&line).unwrap();
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok(Server {
                _proc: Proc(child),
                gateway: v["gateway"].as_str().unwrap().to_string(),
                grpc: v["ext_authz"].as_str().unwrap().to_string(),
            });
        }
    }
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    clean(&mut cmd).args(args).envs(env.iter().copied());
    cmd.output().unwrap()
}

fn json(out: &Output) -> Json {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text:?} / {}", String::from_utf8_lossy(&out.stderr)))
}

fn ok(out: Output) -> Output {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn cli_end_to_end_mint_put_decide_tail() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("GATEWAY_JWT_SECRET", SECRET)], "127.0.0.1:0").unwrap();
    let gw = server.gateway.as_str();

    // Mint: a root token from the flag, a namespace token from the gateway's own variable.
    let root = json(&ok(cli(
        &["auth", "root-token", "--jwt-secret", SECRET, "--ttl", "10m"],
        &[],
    )));
    let root = root["token"].as_str().unwrap().to_string();
    let acme = json(&ok(cli(
        &[
            "auth",
            "namespace-token",
            "--namespace",
            "acme",
            "--grant",
            "readwrite",
        ],
        &[("GATEWAY_JWT_SECRET", SECRET)],
    )));
    assert_eq!(acme["claims"]["ns"], "acme");
    let acme = acme["token"].as_str().unwrap().to_string();

    // Put a policy into acme.
    let rego = dir.path().join("acme.rego");
    std::fs::write(
        &rego,
        "package acme\n\ndefault allow := false\n\nallow if data.users[input.user]\n",
    )
    .unwrap();
    let put = json(&ok(cli(
        &[
            "policy",
            "put",
            "acme.rego",
            rego.to_str().unwrap(),
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    )));
    assert_eq!(put["namespace"], "acme");
    ok(cli(
        &[
            "data",
            "put",
            "users/alice",
            "true",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    ));
    // A broken policy is refused with its position; exit 1.
    let broken = dir.path().join("broken.rego");
    std::fs::write(&broken, "package acme\n\nallow if {\n  input.x ==\n}\n").unwrap();
    let out = cli(
        &[
            "policy",
            "put",
            "broken.rego",
            broken.to_str().unwrap(),
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("broken.rego:"),
        "{err}"
    );
    // Outside the token's namespace: refused.
    let out = cli(
        &[
            "policy",
            "put",
            "x.rego",
            rego.to_str().unwrap(),
            "-n",
            "acme2",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"));

    // Tail acme's decisions while two are made.
    let mut tail = Command::new(BIN);
    clean(&mut tail)
        .args([
            "logs",
            "tail",
            "--count",
            "2",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
            "--grpc-web",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tail = tail.spawn().unwrap();
    let mut tail_err = BufReader::new(tail.stderr.take().unwrap());
    let mut line = String::new();
    tail_err.read_line(&mut line).unwrap();
    assert!(line.contains("following decisions"), "{line}");

    let allow = ok(cli(
        &[
            "decide",
            "-n",
            "acme",
            "--path",
            "acme/allow",
            "--input",
            r#"{"user": "alice"}"#,
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    ));
    let allow = json(&allow);
    assert_eq!(allow["outcome"], "allow");
    let deny = cli(
        &[
            "decide",
            "-n",
            "acme",
            "--path",
            "acme/allow",
            "--input",
            r#"{"user": "bob"}"#,
            "--gateway",
            gw,
            "--token",
            &acme,
            "--grpc-web",
        ],
        &[],
    );
    assert_eq!(deny.status.code(), Some(1), "a denial exits 1");
    let deny = json(&deny);
    assert_eq!(deny["outcome"], "deny");
    assert_eq!(deny["namespace"], "acme");

    let tailed = tail.wait_with_output().unwrap();
    assert_eq!(tailed.status.code(), Some(0));
    let ids: Vec<String> = String::from_utf8_lossy(&tailed.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Json>(l).unwrap()["decision_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [
            allow["decision_id"].as_str().unwrap(),
            deny["decision_id"].as_str().unwrap()
        ]
    );

    // Reads, data, status, over gRPC and gRPC-Web.
    let ls = json(&ok(cli(
        &[
            "policy",
            "ls",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    )));
    assert_eq!(ls["policies"][0]["id"], "acme.rego");
    assert_eq!(ls["policies"][0]["source"], "gateway");
    let got = json(&ok(cli(
        &[
            "policy",
            "get",
            "acme.rego",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    )));
    assert!(got["rego"].as_str().unwrap().contains("package acme"));
    let data = json(&ok(cli(
        &[
            "data",
            "get",
            "users",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
            "--grpc-web",
        ],
        &[],
    )));
    assert_eq!(data["result"], serde_json::json!({"alice": true}));
    ok(cli(
        &[
            "data",
            "rm",
            "users/alice",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    ));
    let out = cli(
        &[
            "data",
            "rm",
            "users/alice",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    ok(cli(
        &[
            "policy",
            "rm",
            "acme.rego",
            "-n",
            "acme",
            "--gateway",
            gw,
            "--token",
            &acme,
        ],
        &[],
    ));
    let status = json(&ok(cli(
        &[
            "status",
            "--gateway",
            gw,
            "--jwt-secret",
            SECRET,
            "--grpc-web",
        ],
        &[],
    )));
    assert_eq!(status["auth_mode"], "jwt");
    assert!(
        status["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "acme")
    );
    let status = json(&ok(cli(
        &["status", "--gateway", gw],
        &[("PORTCULLIS_TOKEN", root.as_str())],
    )));
    assert_eq!(status["default_namespace"], "default");

    // The Check listener is unaffected by the gateway.
    let check = cli(&["authorize", "--addr", &server.grpc], &[]);
    assert_eq!(check.status.code(), Some(1), "the default policy denies");

    // API keys: the secret once, listed without it, revoked.
    let created = json(&ok(cli(
        &[
            "keys",
            "create",
            "--subject",
            "portcullis-cli/ci",
            "--scope",
            "gateway:read",
            "--gateway",
            gw,
            "--token",
            &root,
        ],
        &[],
    )));
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk_cli_"));
    let id = created["id"].as_str().unwrap().to_string();
    let listed = ok(cli(&["keys", "ls", "--gateway", gw, "--token", &root], &[]));
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&secret));
    assert_eq!(json(&listed)["keys"][0]["id"], id.as_str());
    assert_eq!(json(&listed)["keys"][0]["last_used_at"], 0, "never used");
    // Used on the Check path, `keys list` shows when.
    let used_at = portcullis::jose::clock::now();
    cli(
        &[
            "authorize",
            "--addr",
            &server.grpc,
            "--path",
            "/keys-only/x",
            "-H",
            &format!("x-api-key: {secret}"),
        ],
        &[],
    );
    let listed = json(&ok(cli(
        &["keys", "list", "--gateway", gw, "--token", &root],
        &[],
    )));
    let last = listed["keys"][0]["last_used_at"].as_i64().unwrap();
    assert!(
        last >= used_at && last <= portcullis::jose::clock::now(),
        "{listed}"
    );
    let revoked = json(&ok(cli(
        &["keys", "revoke", &id, "--gateway", gw, "--token", &root],
        &[],
    )));
    assert_eq!(revoked["revoked"], true);
    let out = cli(
        &[
            "keys",
            "revoke",
            "key_nope",
            "--gateway",
            gw,
            "--token",
            &root,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    // Failures: no credentials, a bad input, conflicting credential flags.
    let out = cli(&["status", "--gateway", gw], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
    let out = cli(
        &[
            "decide",
            "--input",
            "not json",
            "--gateway",
            gw,
            "--token",
            &root,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = cli(
        &["status", "--gateway", gw, "--token", "a", "--password", "b"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = cli(
        &[
            "auth",
            "agent-token",
            "--namespace",
            "acme",
            "--jwt-secret",
            SECRET,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    drop(server);
}

#[test]
fn open_mode_refuses_a_non_loopback_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let err = start(dir.path(), &[], "0.0.0.0:0")
        .err()
        .expect("must not start");
    assert!(err.contains("allow_open"), "{err}");
    // Loopback in open mode starts, with a warning.
    let server = start(dir.path(), &[], "127.0.0.1:0").unwrap();
    let status = json(&ok(cli(
        &["status", "--gateway", &server.gateway, "-o", "json"],
        &[],
    )));
    assert_eq!(status["auth_mode"], "open");
}

/// Polls `f` until it gives a value, failing with `what` after `secs` seconds.
fn within_seconds<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `status` through `gateway` with `token`: its exit code.
fn status_code(gateway: &str, token: &str) -> Option<i32> {
    cli(&["status", "--gateway", gateway, "--token", token], &[])
        .status
        .code()
}

#[test]
fn cli_revokes_tokens_and_replicas_sharing_the_list_agree() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("GATEWAY_JWT_SECRET", SECRET)];
    let a = start(dir.path(), &env, "127.0.0.1:0").unwrap();
    let b = start(dir.path(), &env, "127.0.0.1:0").unwrap();
    let mint = |args: &[&str]| {
        let mut all = vec!["auth"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--jwt-secret", SECRET, "--ttl", "10m"]);
        json(&ok(cli(&all, &[])))
    };
    let root = mint(&["root-token"])["token"].as_str().unwrap().to_string();
    let victim = mint(&["namespace-token", "--namespace", "acme"]);
    let (victim_token, victim_claims) = (victim["token"].as_str().unwrap(), &victim["claims"]);
    let other = mint(&["namespace-token", "--namespace", "acme"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(status_code(&a.gateway, victim_token), Some(0));
    assert_eq!(status_code(&b.gateway, victim_token), Some(0));

    // Revoke by the token's own id on A (read from the token; its exp is the entry's).
    let out = json(&ok(cli(
        &[
            "token",
            "revoke",
            "--from-token",
            victim_token,
            "--gateway",
            &a.gateway,
            "--token",
            &root,
        ],
        &[],
    )));
    assert_eq!(out["jti"], victim_claims["jti"]);
    assert_eq!(out["expires_at"], victim_claims["exp"]);
    assert_eq!(out["revoked_by"], "portcullis-cli");
    let refused = cli(
        &["status", "--gateway", &a.gateway, "--token", victim_token],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
    // B, another process on the same file, follows within a few seconds.
    within_seconds(10, "B refuses the revoked token", || {
        (status_code(&b.gateway, victim_token) == Some(1)).then_some(())
    });
    assert_eq!(status_code(&b.gateway, &other), Some(0));

    // A namespace token may not revoke others, and says so with exit 1.
    let denied = cli(
        &[
            "token",
            "revoke",
            "--subject",
            "portcullis-cli",
            "--gateway",
            &b.gateway,
            "--token",
            &other,
        ],
        &[],
    );
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"));
    // ... but it may end itself.
    ok(cli(
        &[
            "token",
            "revoke",
            "--current",
            "--gateway",
            &b.gateway,
            "--token",
            &other,
        ],
        &[],
    ));
    assert_eq!(status_code(&b.gateway, &other), Some(1));

    // By subject, with an RFC 3339 time, and by id with an explicit expiry.
    let now = chrono::Utc::now();
    let before = now - chrono::Duration::hours(1);
    let before_text = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (now + chrono::Duration::days(30)).timestamp().to_string();
    let by_subject = json(&ok(cli(
        &[
            "token",
            "revoke",
            "--subject",
            "alice",
            "--before",
            &before_text,
            "--expires-at",
            &until,
            "--gateway",
            &b.gateway,
            "--token",
            &root,
        ],
        &[],
    )));
    assert_eq!(by_subject["issued_before"], before.timestamp());
    assert_eq!(by_subject["expires_at"].to_string(), until);
    ok(cli(
        &[
            "token",
            "revoke",
            "--jti",
            "some-id",
            "--expires-at",
            &until,
            "--gateway",
            &b.gateway,
            "--token",
            &root,
        ],
        &[],
    ));
    // A lists what B wrote once it has re-read the file.
    let listed = within_seconds(10, "A lists 4 entries", || {
        let out = json(&ok(cli(
            &[
                "token",
                "revocations",
                "--gateway",
                &a.gateway,
                "--token",
                &root,
            ],
            &[],
        )));
        let listed = out["revocations"].as_array().unwrap().clone();
        (listed.len() == 4).then_some(listed)
    });
    assert_eq!(listed[2]["subject"], "alice");
    let table = ok(cli(
        &[
            "token",
            "revocations",
            "-o",
            "table",
            "--gateway",
            &a.gateway,
            "--token",
            &root,
        ],
        &[],
    ));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("JTI") && table.contains("some-id"),
        "{table}"
    );

    // Usage errors exit 2 before anything is sent.
    for args in [
        vec!["token", "revoke"],
        vec!["token", "revoke", "--jti", "x"],
        vec![
            "token",
            "revoke",
            "--jti",
            "x",
            "--subject",
            "y",
            "--expires-at",
            "1",
        ],
        vec!["token", "revoke", "--subject", "y", "--before", "tomorrow"],
        vec!["token", "revoke", "--from-token", "not-a-jwt"],
    ] {
        let out = cli(&args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
