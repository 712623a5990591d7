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
    cmd.stdin(Stdio::null())
}

/// Starts `portcullis run` with every listener on port 0 and reads the bound addresses from
/// its "portcullis serving" log line.
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
             authentication:\n  policies:\n    - name: keys\n      match: {{path_prefixes: [/keys-only/]}}\n      \
             methods: [api_key]\n      required: false\n      \
             api_key: {{header: x-api-key, prefix: sk_cli_, store: \"{}\"}}\n",
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
