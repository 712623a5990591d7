//! The `portcullis run` command line: config and policy errors stop start-up with a message that
//! names the file and key; a running server shuts down gracefully on SIGTERM.

mod support;

use support::{Proc, free_ports};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn run_fails(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn unknown_config_key_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "config.yaml",
        "plugins:\n  envoy_ext_authz_grpc:\n    adr: \":9191\"\n",
    );
    let (code, err) = run_fails(&["run", "--server", "--config-file", &cfg]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("config.yaml"), "{err}");
    assert!(err.contains("plugins.envoy_ext_authz_grpc"), "{err}");
    assert!(err.contains("adr"), "{err}");
}

#[test]
fn bad_set_value_names_the_key() {
    let (code, err) = run_fails(&[
        "run",
        "--server",
        "--set=plugins.envoy_ext_authz_grpc.dry-run=perhaps",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("plugins.envoy_ext_authz_grpc.dry-run"),
        "{err}"
    );
    let (code, err) = run_fails(&["run", "--server", "--set=decision_logs.consol=true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("consol"), "{err}");
}

#[test]
fn missing_config_file_is_named() {
    let (code, err) = run_fails(&["run", "--server", "--config-file", "/nonexistent/c.yaml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/c.yaml"), "{err}");
}

#[test]
fn broken_policy_stops_startup_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "broken.rego",
        "package envoy.authz\n\nallow if {\n  input.x ==\n}\n",
    );
    let (code, err) = run_fails(&[
        "run",
        "--server",
        "--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:0",
        "--addr=127.0.0.1:0",
        &p,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("broken.rego:"), "{err}");
    let missing = dir.path().join("missing.rego").display().to_string();
    let (code, err) = run_fails(&["run", "--server", &missing]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.rego"), "{err}");
}

#[test]
fn errors_say_what_to_do_and_are_printed_once() {
    // `--port` is no flag of OPA's or ours: the answer names the flags that set the ports.
    let (code, err) = run_fails(&["run", "--server", "--port", "9000"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--set plugins.envoy_ext_authz_grpc.addr=:9000")
            && err.contains("--addr :9000"),
        "{err}"
    );
    // A Rego v0 policy loaded as v1 gets a hint, in every command that loads policies.
    let dir = tempfile::tempdir().unwrap();
    let v0 = write(dir.path(), "v0.rego", "package p\nallow { input.x == 1 }\n");
    for args in [
        vec![
            "run",
            "--server",
            "--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:0",
            "--addr=127.0.0.1:0",
            &v0,
        ],
        vec!["eval", "-d", &v0, "data.p.allow"],
        vec!["test", &v0],
        vec!["check", &v0],
    ] {
        let (code, err) = run_fails(&args);
        assert_ne!(code, 0, "{args:?}: {err}");
        assert!(err.contains("--v0-compatible"), "{args:?}: {err}");
        // Printed once: one `error:` line, no second copy as a log line.
        assert_eq!(err.matches("--v0-compatible").count(), 1, "{args:?}: {err}");
    }
}

#[tokio::test]
async fn the_check_client_against_an_http_port_asks_whether_it_is_the_grpc_port() {
    // A plain HTTP/1.1 server on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            });
        }
    });
    let addr = addr.to_string();
    let (code, err) = tokio::task::spawn_blocking(move || {
        run_fails(&[
            "authorize",
            "--addr",
            &addr,
            "--path",
            "/",
            "--timeout",
            "5s",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is this the ext_authz gRPC port"), "{err}");
}

#[test]
fn text_logs_have_no_colours_when_stderr_is_not_a_terminal() {
    use std::io::{BufRead, BufReader};
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--server",
            "--log-format",
            "text",
            "--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:0",
            "--addr=127.0.0.1:0",
            &format!("{root}/policies"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("portcullis serving") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("portcullis serving"), "{seen}");
    assert!(!seen.contains('\u{1b}'), "ANSI escapes in {seen:?}");
}

#[test]
fn every_flag_and_argument_has_help_text() {
    let commands: &[&[&str]] = &[
        &["run"],
        &["decide"],
        &["policy", "ls"],
        &["policy", "get"],
        &["policy", "put"],
        &["policy", "rm"],
        &["data", "get"],
        &["data", "put"],
        &["data", "rm"],
        &["logs", "tail"],
        &["keys", "create"],
        &["keys", "ls"],
        &["keys", "revoke"],
        &["status"],
        &["auth", "root-token"],
        &["auth", "namespace-token"],
        &["auth", "channel-token"],
        &["eval"],
        &["test"],
        &["check"],
        &["authorize"],
        &["exec"],
        &["build"],
        &["sign"],
        &["capabilities"],
        &["inspect"],
        &["deps"],
        &["parse"],
    ];
    let mut blank = Vec::new();
    for command in commands {
        let out = Command::new(BIN)
            .args(command.iter().copied().chain(["-h"]))
            .output()
            .expect("run");
        let help = String::from_utf8_lossy(&out.stdout);
        // `  -n, --namespace <NAMESPACE>    text` or `  <ID>  text`: two or more spaces
        // separate the flag from its help.
        // (clap moves the help to the next, deeper-indented line when the texts are long.)
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_flag = line.starts_with("  ")
                && !line.starts_with("        ")
                && (t.starts_with('-') || t.starts_with('<') || t.starts_with('['));
            if !is_flag || t.trim_end().contains("  ") {
                continue;
            }
            let next = lines.get(i + 1).copied().unwrap_or("");
            if !next.starts_with("          ") || next.trim().is_empty() {
                blank.push(format!("{}: {}", command.join(" "), t.trim_end()));
            }
        }
    }
    assert!(
        blank.is_empty(),
        "flags without help:\n{}",
        blank.join("\n")
    );
    // A root token has no scope flags to refuse.
    let out = Command::new(BIN)
        .args(["auth", "root-token", "-h"])
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("--namespace"));
}

#[test]
fn usage_errors_exit_2() {
    let (code, _) = run_fails(&["run", "--no-such-flag"]);
    assert_eq!(code, 2);
}

/// Starts the binary and waits until its HTTP health answers.
async fn start(args: &[String]) -> (Proc, SocketAddr) {
    let [grpc_port, http_port] = free_ports();
    let mut all = vec![
        "run".to_string(),
        "--server".into(),
        format!("--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc_port}"),
        format!("--addr=127.0.0.1:{http_port}"),
        "--log-level=warn".into(),
    ];
    all.extend_from_slice(args);
    let child = Command::new(BIN)
        .args(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(http).await.is_ok() {
            let (status, _) = support::http(http, "GET", "/health", None).await;
            if status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (proc, format!("127.0.0.1:{grpc_port}").parse().unwrap())
}

#[tokio::test]
async fn sigterm_lets_in_flight_checks_finish() {
    let dir = tempfile::tempdir().unwrap();
    // About a few hundred milliseconds of work, well under the raised eval time limit.
    let p = write(
        dir.path(),
        "slow.rego",
        "package envoy.authz\n\nallow if {\n  count([1 | some x in numbers.range(1, 1500); some y in numbers.range(1, 1500)]) > 0\n}\n",
    );
    let (mut proc, grpc) = start(&[
        "--set=plugins.envoy_ext_authz_grpc.eval-timeout-ms=20000".into(),
        p,
    ])
    .await;
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    // Time one Check so the signal lands while the next is in flight.
    let t = Instant::now();
    client.check(CheckRequest::default()).await.unwrap();
    let one = t.elapsed();
    let pending = tokio::spawn(async move { client.check(CheckRequest::default()).await });
    tokio::time::sleep(one / 3).await;
    assert!(
        !pending.is_finished(),
        "the Check ({one:?}) finished before the signal; make the policy slower"
    );
    let pid = proc.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let resp = pending
        .await
        .unwrap()
        .expect("in-flight Check must complete");
    assert_eq!(resp.into_inner().status.unwrap().code, 0);
    let exit = tokio::task::spawn_blocking(move || {
        let code = proc.0.wait().unwrap();
        std::mem::forget(proc);
        code
    })
    .await
    .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn console_decision_logs_go_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.rego",
        "package envoy.authz\n\nallow := true\n",
    );
    let (mut proc, grpc) = start(&["--set=decision_logs.console=true".into(), p]).await;
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let resp = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let stdout = proc.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["path"], "envoy/authz/allow");
    assert_eq!(event["result"], true);
    let md = resp.dynamic_metadata.unwrap();
    let id = match md.fields["decision_id"].kind.as_ref().unwrap() {
        envoy_types::pb::google::protobuf::value::Kind::StringValue(s) => s.clone(),
        other => panic!("decision_id is {other:?}"),
    };
    assert_eq!(event["decision_id"], id.as_str());
}

/// The allocator commits its arenas lazily (a lower peak RSS) without any environment setting,
/// and an explicit `MIMALLOC_ARENA_EAGER_COMMIT` still decides. mimalloc's verbose mode prints
/// each option's value at start-up.
#[test]
#[cfg(target_os = "linux")]
fn the_allocator_commits_arenas_lazily_unless_the_environment_says_otherwise() {
    let option = |env: Option<&str>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("version")
            .env("MIMALLOC_VERBOSE", "1")
            .env_remove("MIMALLOC_ARENA_EAGER_COMMIT");
        if let Some(value) = env {
            cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", value);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("mimalloc: option 'arena_eager_commit': "))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no arena_eager_commit line in:\n{stderr}"))
    };
    assert_eq!(option(None), "0");
    assert_eq!(option(Some("1")), "1");
    assert_eq!(option(Some("2")), "2");
}
