//! `/metrics` on the HTTP API and on the diagnostic listener, scraped and parsed after a known
//! sequence of Checks: the counts must match exactly.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::client::RequestSpec;
use portcullis::server::App;
use support::server::Prepared;
use support::{Spec, TestServer};

const POLICY: &str = r#"package envoy.authz

p := input.parsed_path[0]

default allow := false

allow if p == "ok"

allow := "yes" if p == "string"

allow := true if p == "conflict"
allow := false if p == "conflict"
"#;

fn request(path: &str) -> CheckRequest {
    RequestSpec::from_yaml_str(&format!("{{path: {path:?}}}"), Path::new("t"))
        .unwrap()
        .to_check_request()
}

/// Parses Prometheus/OpenMetrics text into `name{labels}` -> value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample line");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            out.insert(key.to_string(), value).is_none(),
            "duplicate {key}"
        );
    }
    out
}

/// A server with a diagnostic listener, and its app for recording reloads as the watcher does.
struct Server {
    grpc: SocketAddr,
    http: SocketAddr,
    diagnostic: SocketAddr,
    app: App,
    server: TestServer,
}

async fn start() -> Server {
    let prepared = Prepared::new(Spec {
        policies: vec![("p.rego", POLICY)],
        diagnostic: true,
        ..Default::default()
    })
    .unwrap();
    let app = prepared.app().build().unwrap();
    let server = prepared.serve(app.clone()).await;
    Server {
        grpc: server.grpc_addr,
        http: server.http_addr,
        diagnostic: server.diagnostic_addr.unwrap(),
        app,
        server,
    }
}

#[tokio::test]
async fn metrics_count_checks_exactly_on_both_listeners() {
    let s = start().await;
    let mut client = AuthorizationClient::connect(format!("http://{}", s.grpc))
        .await
        .unwrap();
    for path in [
        "/ok",
        "/ok/1",
        "/ok/2",
        "/no",
        "/nope",
        "/%zz",
        "/bad?x=%G1",
    ] {
        client.check(request(path)).await.unwrap();
    }
    for path in ["/conflict", "/string"] {
        client.check(request(path)).await.unwrap_err();
    }
    // A reload that works and one that does not, recorded as the watcher does.
    s.app.metrics.policy_reload(&s.server.store.reload());
    std::fs::write(
        s.server.dir().join("p.rego"),
        "package envoy.authz\nallow if {",
    )
    .unwrap();
    s.app.metrics.policy_reload(&s.server.store.reload());

    let (status, text) = support::http(s.http, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let (dstatus, dtext) = support::http(s.diagnostic, "GET", "/metrics", None).await;
    assert_eq!(dstatus, 200);
    // The process' own values (CPU time, memory) move between two scrapes; the rest is equal.
    let own = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("process_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        own(&text),
        own(&dtext),
        "both listeners serve the same registry"
    );
    assert!(text.ends_with("# EOF\n"));
    let m = parse(&text);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{text}"))
    };
    assert_eq!(get(r#"portcullis_checks_total{outcome="allow"}"#), 3.0);
    assert_eq!(get(r#"portcullis_checks_total{outcome="deny"}"#), 2.0);
    assert_eq!(
        get(r#"portcullis_checks_total{outcome="error",reason="request_parse_error"}"#),
        2.0
    );
    assert_eq!(
        get(r#"portcullis_checks_total{outcome="error",reason="envoyauth_eval_error"}"#),
        1.0
    );
    assert_eq!(
        get(r#"portcullis_checks_total{outcome="error",reason="envoyauth_result_error"}"#),
        1.0
    );
    assert_eq!(get(r#"error_counter{reason="request_parse_error"}"#), 2.0);
    assert_eq!(get(r#"error_counter{reason="envoyauth_eval_error"}"#), 1.0);
    assert_eq!(
        get(r#"error_counter{reason="envoyauth_result_error"}"#),
        1.0
    );
    assert_eq!(
        get(r#"grpc_request_duration_seconds_count{handler="check"}"#),
        9.0
    );
    assert_eq!(
        get(r#"grpc_request_duration_seconds_bucket{le="+Inf",handler="check"}"#),
        9.0
    );
    assert!(get(r#"grpc_request_duration_seconds_sum{handler="check"}"#) > 0.0);
    assert_eq!(get("portcullis_check_duration_seconds_count"), 9.0);
    // Parse errors never reach the policy; a conflict fails inside it.
    assert_eq!(get("portcullis_policy_eval_duration_seconds_count"), 6.0);
    assert_eq!(get("portcullis_policy_reloads_total"), 1.0);
    assert_eq!(get("portcullis_policy_reload_errors_total"), 1.0);
    assert_eq!(get("portcullis_policy_revision"), 2.0);
    assert_eq!(
        get(&format!(
            "portcullis_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert_eq!(get("portcullis_decision_logs_total"), 0.0);
    assert_eq!(get("portcullis_decision_log_queue_depth"), 0.0);
    assert_eq!(
        get(r#"portcullis_authn_total{method="jwt",result="success"}"#),
        0.0
    );
    assert_eq!(get(r#"portcullis_tokens_minted_total"#), 0.0);
    // Histogram buckets are cumulative.
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("portcullis_check_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.iter().all(|b| *b <= 9.0) && buckets.contains(&9.0));

    s.server.stop().await;
}

#[tokio::test]
async fn diagnostic_listener_serves_health_and_metrics_only() {
    let s = start().await;
    let (status, _) = support::http(s.diagnostic, "GET", "/health", None).await;
    assert_eq!(status, 200);
    let (status, _) = support::http(s.diagnostic, "GET", "/v1/data/envoy/authz", None).await;
    assert_eq!(status, 404);
    let (status, _) = support::http(s.http, "GET", "/v1/data/envoy/authz", None).await;
    assert_eq!(status, 200);
    s.server.stop().await;
}
