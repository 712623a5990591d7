//! OPA's decision-log upload against a real loopback HTTP collector: gzip'd JSON arrays POSTed
//! to `<service url>/logs`, failures retried with backoff until accepted, nothing lost below
//! the buffer bound, and overflow dropped oldest-first and counted.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use portcullis::client::RequestSpec;
use portcullis::config::Config;
use portcullis::decision_log::{DecisionLog, DropReason};
use serde_json::Value as Json;
use support::{Spec, TestServer, decision_id, eventually};

const POLICY: &str = "package envoy.authz\n\nallow if input.parsed_path[0] == \"ok\"\n";

/// What the collector saw.
#[derive(Default)]
struct Collector {
    /// Requests to refuse (503) before accepting.
    refuse: AtomicUsize,
    refused: AtomicUsize,
    accepted: Mutex<Vec<Json>>,
    bodies: Mutex<Vec<usize>>,
    problems: Mutex<Vec<String>>,
}

async fn logs(State(c): State<Arc<Collector>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut problems = Vec::new();
    if headers.get("content-encoding").map(|v| v.as_bytes()) != Some(b"gzip") {
        problems.push(format!(
            "content-encoding {:?}",
            headers.get("content-encoding")
        ));
    }
    if headers.get("content-type").map(|v| v.as_bytes()) != Some(b"application/json") {
        problems.push(format!("content-type {:?}", headers.get("content-type")));
    }
    if headers.get("x-tenant").map(|v| v.as_bytes()) != Some(b"t1") {
        problems.push("service header missing".into());
    }
    if headers.get("authorization").map(|v| v.as_bytes()) != Some(b"Bearer upload-token") {
        problems.push("bearer credentials missing".into());
    }
    let mut text = String::new();
    if let Err(e) =
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
    {
        problems.push(format!("not gzip: {e}"));
    }
    c.problems.lock().unwrap().extend(problems);
    if c.refused.load(Ordering::SeqCst) < c.refuse.load(Ordering::SeqCst) {
        c.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match serde_json::from_str::<Json>(&text) {
        Ok(Json::Array(events)) => {
            c.bodies.lock().unwrap().push(body.len());
            c.accepted.lock().unwrap().extend(events);
            StatusCode::OK
        }
        other => {
            c.problems
                .lock()
                .unwrap()
                .push(format!("body is not a JSON array: {other:?}"));
            StatusCode::BAD_REQUEST
        }
    }
}

async fn collector(refuse: usize) -> (SocketAddr, Arc<Collector>) {
    let c = Arc::new(Collector::default());
    c.refuse.store(refuse, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/api/v1/logs", axum::routing::post(logs))
        .with_state(c.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, c)
}

fn request(yaml: &str) -> CheckRequest {
    RequestSpec::from_yaml_str(yaml, Path::new("test"))
        .unwrap()
        .to_check_request()
}

async fn start(addr: SocketAddr, reporting: &str) -> (TestServer, DecisionLog) {
    let config = format!(
        "services:\n  collector:\n    url: http://{addr}/api/v1/\n    headers: {{x-tenant: t1}}\n    \
         credentials: {{bearer: {{token: upload-token}}}}\n\
         decision_logs:\n  service: collector\n  reporting: {reporting}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &config).unwrap();
    let log = DecisionLog::start(
        Config::load(Some(&path), &[])
            .unwrap()
            .decision_log_settings(),
        None,
    )
    .unwrap();
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", POLICY)],
        config: &config,
        log: Some(log.clone()),
        ..Default::default()
    })
    .await;
    (server, log)
}

#[tokio::test]
async fn uploads_retry_until_accepted_and_lose_nothing() {
    let (addr, collector) = collector(2).await;
    let (server, log) = start(
        addr,
        "{min_delay_seconds: 0.05, max_delay_seconds: 0.1, upload_size_limit_bytes: 1024, \
         buffer_size_limit_events: 500}",
    )
    .await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..120 {
        let resp = client
            .check(request(&format!(
                "{{path: /ok/{i}, headers: {{x-request-id: req-{i}-{}}}}}",
                "z".repeat(i % 7 * 10)
            )))
            .await
            .unwrap()
            .into_inner();
        ids.push(decision_id(&resp));
    }
    let all_in = eventually(Duration::from_secs(20), || async {
        collector.accepted.lock().unwrap().len() >= ids.len()
    })
    .await
    .is_ok();
    let accepted: Vec<String> = collector
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["decision_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        all_in,
        "only {} of {} events uploaded",
        accepted.len(),
        ids.len()
    );
    assert_eq!(accepted, ids, "every event exactly once, in order");
    assert_eq!(
        collector.refused.load(Ordering::SeqCst),
        2,
        "two refusals, retried"
    );
    let problems = collector.problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "{problems:?}");
    let bodies = collector.bodies.lock().unwrap().clone();
    assert!(bodies.len() > 1, "several chunks expected: {bodies:?}");
    assert!(bodies.iter().all(|b| *b <= 1024), "{bodies:?}");
    let stats = log.stats();
    // The collector records a chunk before it answers; the uploader counts it once the answer
    // arrives.
    let counted = eventually(Duration::from_secs(5), || async {
        stats.uploaded_events() == ids.len() as u64
    })
    .await;
    assert!(counted.is_ok(), "{} uploaded", stats.uploaded_events());
    assert_eq!(stats.uploads_failed(), 2);
    assert_eq!(stats.uploaded_events(), ids.len() as u64);
    for reason in DropReason::ALL {
        assert_eq!(stats.dropped(reason), 0, "{reason:?}");
    }
    // The failures show on /metrics too.
    let (_, metrics) = support::http(server.http_addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("portcullis_decision_log_uploads_total{result=\"failure\"} 2\n"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let (addr, collector) = collector(usize::MAX).await;
    // Long delays: only flushes upload, so the counts below are exact.
    let (server, log) = start(
        addr,
        "{min_delay_seconds: 300, max_delay_seconds: 600, buffer_size_limit_events: 10}",
    )
    .await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let resp = client
            .check(request(&format!("{{path: /ok/{i}}}")))
            .await
            .unwrap()
            .into_inner();
        ids.push(decision_id(&resp));
    }
    log.flush().await; // one attempt, refused: the events go back to the buffer
    let stats = log.stats();
    assert_eq!(collector.refused.load(Ordering::SeqCst), 1);
    assert_eq!(stats.logged(), 25);
    assert_eq!(stats.dropped(DropReason::BufferFull), 15);
    assert_eq!(stats.buffer_events(), 10);
    let (_, metrics) = support::http(server.http_addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("portcullis_decision_logs_dropped_total{reason=\"buffer_full\"} 15\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_decision_log_buffer_events 10\n"),
        "{metrics}"
    );

    collector.refuse.store(0, Ordering::SeqCst);
    log.flush().await;
    let accepted: Vec<String> = collector
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["decision_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(accepted, ids[15..].to_vec(), "the newest ten survive");
    assert_eq!(stats.buffer_events(), 0);
    server.stop().await;
}
