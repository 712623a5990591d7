//! The `portcullis run` wiring of observability: `/metrics` on `--diagnostic-addr`, `--watch`
//! reloads counted, the decision-log file written and flushed at SIGTERM.

mod support;

use support::{Proc, free_ports};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Polls `/metrics` until `line` appears or the deadline passes.
async fn metrics_until(addr: SocketAddr, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, text) = support::http(addr, "GET", "/metrics", None).await;
            if status == 200 && text.lines().any(|l| l == line) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {line:?} in\n{text}");
        }
        assert!(Instant::now() < deadline, "{addr} never answered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn diagnostic_metrics_watch_reloads_and_file_log_flushed_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.rego");
    std::fs::write(&policy, "package envoy.authz\n\nallow := true\n").unwrap();
    let log = dir.path().join("decisions.log");
    let [grpc, http, diag] = free_ports();
    let child = Command::new(BIN)
        .args([
            "run".to_string(),
            "--server".into(),
            "--watch".into(),
            "--log-level=warn".into(),
            format!("--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc}"),
            format!("--addr=127.0.0.1:{http}"),
            format!("--diagnostic-addr=127.0.0.1:{diag}"),
            format!("--set=decision_logs.file.path={}", log.display()),
            policy.display().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let diag: SocketAddr = format!("127.0.0.1:{diag}").parse().unwrap();
    metrics_until(diag, "portcullis_policy_revision 1").await;

    let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    for _ in 0..3 {
        client.check(CheckRequest::default()).await.unwrap();
    }
    let text = metrics_until(diag, "portcullis_checks_total{outcome=\"allow\"} 3").await;
    assert!(text.contains("grpc_request_duration_seconds_count{handler=\"check\"} 3\n"));

    // A change that compiles, then one that does not; each replaces the file in one step
    // (as editors and Kubernetes do), so that no half-written file is ever reloaded.
    let replace = |text: &str| {
        let tmp = dir.path().join("p.rego.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &policy).unwrap();
    };
    replace("package envoy.authz\n\nallow := false\n");
    metrics_until(diag, "portcullis_policy_reloads_total 1").await;
    metrics_until(diag, "portcullis_policy_revision 2").await;
    replace("package envoy.authz\n\nallow if {\n");
    metrics_until(diag, "portcullis_policy_reload_errors_total 1").await;
    client.check(CheckRequest::default()).await.unwrap();
    metrics_until(diag, "portcullis_checks_total{outcome=\"deny\"} 1").await;

    let pid = proc.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || {
        let code = proc.0.wait().unwrap();
        std::mem::forget(proc);
        code
    })
    .await
    .unwrap();
    assert!(exit.success(), "{exit:?}");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["result"], false);
    assert_eq!(events[3]["revision"], "2");
}
