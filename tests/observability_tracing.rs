//! OTLP trace export to a loopback collector implemented here with opentelemetry-proto's trace
//! service: the Check span continues the caller's W3C `traceparent`, `policy.eval` is its child,
//! and the decision log carries the same trace and span ids.
//!
//! This installs the global tracing subscriber, so it is the only test in this binary.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use portcullis::client::RequestSpec;
use portcullis::config::Config;
use portcullis::decision_log::DecisionLog;
use portcullis::telemetry::trace::{Tracer, TracingSettings};
use portcullis::telemetry::{self, LogFormat};
use support::{Spec, TestServer};

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_spans_continue_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let config = format!(
        "distributed_tracing:\n  type: grpc\n  address: {otlp}\n  service_name: authz-test\n  \
         sample_percentage: 0\n  batch_span_processor_options: {{schedule_delay_millis: 50}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("c.yaml");
    let log_path = dir.path().join("d.log");
    std::fs::write(
        &cfg_path,
        format!(
            "{config}decision_logs: {{file: {{path: {:?}}}}}\n",
            log_path.display().to_string()
        ),
    )
    .unwrap();
    let parsed = Config::load(Some(&cfg_path), &[]).unwrap();
    let settings =
        TracingSettings::resolve(parsed.distributed_tracing.as_ref(), &|_: &str| None).unwrap();
    assert_eq!(settings.endpoint, format!("http://{otlp}"));
    let tracer = Tracer::start(&settings).unwrap();
    telemetry::init_with_tracing("info", LogFormat::Text, Some(&tracer)).unwrap();
    let log = DecisionLog::start(parsed.decision_log_settings(), None).unwrap();
    let server = TestServer::start(Spec {
        policies: vec![(
            "p.rego",
            "package envoy.authz\n\nallow if input.parsed_path[0] == \"ok\"\n",
        )],
        log: Some(log.clone()),
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    let req = RequestSpec::from_yaml_str(
        &format!("{{path: /ok, headers: {{traceparent: 00-{TRACE}-{PARENT}-01, authorization: Bearer hush}}}}"),
        Path::new("t"),
    )
    .unwrap()
    .to_check_request();
    let resp = client.check(req).await.unwrap().into_inner();
    let decision_id = support::decision_id(&resp);
    // sample_percentage 0: a Check without a sampled parent is not exported.
    let unsampled = RequestSpec::from_yaml_str("{path: /ok/unsampled}", Path::new("t"))
        .unwrap()
        .to_check_request();
    client.check(unsampled).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    let (check, eval) = loop {
        let spans = collector.spans.lock().unwrap().clone();
        let check = spans
            .iter()
            .find(|(_, s)| s.name == "ext_authz.check")
            .cloned();
        let eval = spans.iter().find(|(_, s)| s.name == "policy.eval").cloned();
        if let (Some(c), Some(e)) = (check, eval) {
            break (c, e);
        }
        assert!(Instant::now() < deadline, "no spans exported: {spans:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let (service, check) = check;
    assert_eq!(service, "authz-test");
    assert_eq!(hex(&check.trace_id), TRACE);
    assert_eq!(hex(&check.parent_span_id), PARENT);
    assert_eq!(
        attr(&check, "decision.id").as_deref(),
        Some(decision_id.as_str())
    );
    assert_eq!(attr(&check, "decision.outcome").as_deref(), Some("allow"));
    assert_eq!(attr(&check, "rpc.method").as_deref(), Some("Check"));
    let (_, eval) = eval;
    assert_eq!(eval.trace_id, check.trace_id);
    assert_eq!(eval.parent_span_id, check.span_id);
    // Export whatever is still queued, then count.
    server.stop().await;
    tokio::task::spawn_blocking(move || tracer.shutdown())
        .await
        .unwrap();
    let spans = collector.spans.lock().unwrap().clone();
    let text = format!("{spans:?}");
    assert!(!text.contains("hush"), "a credential reached a span");
    assert_eq!(
        spans
            .iter()
            .filter(|(_, s)| s.name == "ext_authz.check")
            .count(),
        1,
        "the unsampled Check is not exported"
    );

    log.flush().await;
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let event = events
        .iter()
        .find(|e| e["decision_id"] == decision_id.as_str())
        .unwrap();
    assert_eq!(event["trace_id"], TRACE);
    assert_eq!(event["span_id"], hex(&check.span_id));
}
