//! `/metrics` on the HTTP API and on the diagnostic listener, scraped and parsed after a known
//! sequence of Checks: the counts must match exactly.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::client::RequestSpec;
use portcullis::config::Config;
use portcullis::policy::PolicyStore;
use portcullis::server::{self, App, GrpcListener, Listeners};
use tokio::net::TcpListener;

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

struct Server {
    grpc: SocketAddr,
    http: SocketAddr,
    diagnostic: SocketAddr,
    app: App,
    store: Arc<PolicyStore>,
    dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.rego");
    std::fs::write(&policy, POLICY).unwrap();
    let config = Config::load(None, &[]).unwrap();
    let store = Arc::new(PolicyStore::load(vec![policy], server::policy_options(&config)).unwrap());
    let app = App::builder(&config, store.clone()).build().unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let diagnostic = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (
        grpc.local_addr().unwrap(),
        http.local_addr().unwrap(),
        diagnostic.local_addr().unwrap(),
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server::run(
        app.clone(),
        Listeners {
            ext_authz: GrpcListener::Tcp(grpc),
            http: Some(http),
            diagnostic: Some(diagnostic),
            gateway: None,
        },
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        grpc: addrs.0,
        http: addrs.1,
        diagnostic: addrs.2,
        app,
        store,
        dir,
        stop,
        handle,
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
    s.app.metrics.policy_reload(&s.store.reload());
    std::fs::write(
        s.dir.path().join("p.rego"),
        "package envoy.authz\nallow if {",
    )
    .unwrap();
    s.app.metrics.policy_reload(&s.store.reload());

    let (status, text) = support::http(s.http, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let (dstatus, dtext) = support::http(s.diagnostic, "GET", "/metrics", None).await;
    assert_eq!(dstatus, 200);
    assert_eq!(text, dtext, "both listeners serve the same registry");
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

    let _ = s.stop.send(());
    s.handle.await.unwrap().unwrap();
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
    let _ = s.stop.send(());
    s.handle.await.unwrap().unwrap();
}
