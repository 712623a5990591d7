//! Envoy ext_proc (`plugins.envoy_ext_proc_grpc`) over gRPC against the real server: each
//! phase, the translation of allows and denials, and streams that misbehave. Through a real
//! Envoy: tests/envoy_e2e.rs (`envoy_ext_proc_*`).

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse,
    ProtocolConfiguration, processing_request::Request as Rq, processing_response::Response as Rs,
};
use tokio_stream::StreamExt as _;
use tonic::Code;

mod support;

use support::{Spec, TestServer};

const POLICY: &str = r#"package envoy.authz

default allow := {"allowed": false, "http_status": 429, "body": "no tea", "headers": {"x-why": "policy"}}

allow := {
    "allowed": true,
    "headers": {"x-user": input.attributes.request.http.headers["x-user"]},
    "request_headers_to_remove": ["x-secret"],
    "response_headers_to_add": {"x-decided": "yes"},
} if input.attributes.request.http.headers["x-user"] == "alice"

allow := {"allowed": true, "headers": {"x-body-ok": "yes"}} if input.parsed_body.ok == true

other := {"allowed": true, "headers": {"x-other": "yes"}}
"#;

async fn server(sets: &[&str]) -> TestServer {
    let mut all = vec!["plugins.envoy_ext_proc_grpc.addr=127.0.0.1:0".to_string()];
    all.extend(sets.iter().map(|s| s.to_string()));
    TestServer::start(Spec {
        policies: vec![("policy.rego", POLICY)],
        sets: all,
        ..Default::default()
    })
    .await
}

fn headers(pairs: &[(&str, &str)], end_of_stream: bool) -> Rq {
    let mut all = vec![
        (":method", "POST"),
        (":path", "/orders?x=1"),
        (":authority", "shop.example.com"),
        (":scheme", "http"),
    ];
    all.extend_from_slice(pairs);
    Rq::RequestHeaders(HttpHeaders {
        headers: Some(HeaderMap {
            headers: all
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        }),
        end_of_stream,
        ..Default::default()
    })
}

fn msg(r: Rq) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(r),
        ..Default::default()
    }
}

fn buffered(r: Rq) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(r),
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: BodySendMode::Buffered as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sends `messages` on one stream and collects every answer (or the stream's error).
async fn exchange(
    server: &TestServer,
    messages: Vec<ProcessingRequest>,
) -> (Vec<ProcessingResponse>, Option<tonic::Status>) {
    let addr = server.ext_proc_addr.expect("ext_proc is configured");
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let mut answers = Vec::new();
    let mut stream = match client
        .process(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => return (answers, Some(e)),
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.next()).await {
            Err(_) => panic!("no answer within 15 s"),
            Ok(None) => return (answers, None),
            Ok(Some(Ok(a))) => answers.push(a),
            Ok(Some(Err(e))) => return (answers, Some(e)),
        }
    }
}

fn set_headers(r: &Rs) -> Vec<(String, String)> {
    let common = match r {
        Rs::RequestHeaders(h) | Rs::ResponseHeaders(h) => h.response.as_ref(),
        Rs::RequestBody(b) => b.response.as_ref(),
        _ => None,
    };
    common
        .and_then(|c| c.header_mutation.as_ref())
        .map(|m| {
            m.set_headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| {
                    (
                        h.key.clone(),
                        String::from_utf8_lossy(&h.raw_value).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn removed(r: &Rs) -> Vec<String> {
    match r {
        Rs::RequestHeaders(h) => h
            .response
            .as_ref()
            .and_then(|c| c.header_mutation.as_ref())
            .map(|m| m.remove_headers.clone())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn decision_id(a: &ProcessingResponse) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    match a
        .dynamic_metadata
        .as_ref()?
        .fields
        .get("decision_id")?
        .kind
        .as_ref()?
    {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn an_allow_is_a_header_mutation_and_later_phases_pass_through() {
    let s = server(&[]).await;
    let (answers, err) = exchange(
        &s,
        vec![
            msg(headers(&[("x-user", "alice"), ("x-secret", "s3")], false)),
            msg(Rq::RequestBody(HttpBody {
                body: b"chunk".to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
            msg(Rq::ResponseHeaders(HttpHeaders::default())),
            msg(Rq::ResponseTrailers(HttpTrailers::default())),
        ],
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(answers.len(), 4, "{answers:?}");
    let first = answers[0].response.as_ref().unwrap();
    assert!(matches!(first, Rs::RequestHeaders(_)), "{first:?}");
    assert_eq!(
        set_headers(first),
        vec![("x-user".to_string(), "alice".to_string())]
    );
    assert_eq!(removed(first), vec!["x-secret".to_string()]);
    assert!(decision_id(&answers[0]).is_some_and(|id| id.len() == 36));
    assert!(matches!(answers[1].response, Some(Rs::RequestBody(ref b)) if b.response.is_none()));
    // response_headers_to_add, on the response-headers phase.
    let third = answers[2].response.as_ref().unwrap();
    assert!(matches!(third, Rs::ResponseHeaders(_)));
    assert_eq!(
        set_headers(third),
        vec![("x-decided".to_string(), "yes".to_string())]
    );
    assert!(matches!(answers[3].response, Some(Rs::ResponseTrailers(_))));
}

#[tokio::test]
async fn a_denial_is_an_immediate_response_with_the_decisions_status_body_and_headers() {
    let s = server(&[]).await;
    let (answers, err) = exchange(&s, vec![msg(headers(&[("x-user", "bob")], true))]).await;
    assert!(err.is_none(), "{err:?}");
    let Some(Rs::ImmediateResponse(imm)) = answers[0].response.as_ref() else {
        panic!("{answers:?}");
    };
    assert_eq!(imm.status.as_ref().unwrap().code, 429);
    assert_eq!(imm.body, b"no tea");
    let h = imm.headers.as_ref().unwrap().set_headers[0]
        .header
        .as_ref()
        .unwrap();
    // Values come back in `raw_value`, the field Envoy sent them in.
    assert_eq!(
        (h.key.as_str(), h.raw_value.as_slice()),
        ("x-why", b"policy".as_slice())
    );
    assert!(h.value.is_empty());
    assert!(decision_id(&answers[0]).is_some());
}

#[tokio::test]
async fn a_buffered_body_is_decided_on_the_body_phase() {
    let s = server(&[]).await;
    let json = [("content-type", "application/json")];
    let (answers, err) = exchange(
        &s,
        vec![
            buffered(headers(&json, false)),
            msg(Rq::RequestBody(HttpBody {
                body: br#"{"ok": true}"#.to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
        ],
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    // The headers pass untouched; the body phase carries the decision's mutation.
    assert!(set_headers(answers[0].response.as_ref().unwrap()).is_empty());
    let body = answers[1].response.as_ref().unwrap();
    assert!(matches!(body, Rs::RequestBody(_)), "{body:?}");
    assert_eq!(
        set_headers(body),
        vec![("x-body-ok".to_string(), "yes".to_string())]
    );
    // The same body saying no: denied on the body phase.
    let (answers, _) = exchange(
        &s,
        vec![
            buffered(headers(&json, false)),
            msg(Rq::RequestBody(HttpBody {
                body: br#"{"ok": false}"#.to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
        ],
    )
    .await;
    assert!(matches!(
        answers[1].response,
        Some(Rs::ImmediateResponse(_))
    ));
}

#[tokio::test]
async fn the_sections_own_path_and_dry_run_apply() {
    let s = server(&["plugins.envoy_ext_proc_grpc.path=envoy/authz/other"]).await;
    let (answers, _) = exchange(&s, vec![msg(headers(&[], true))]).await;
    assert_eq!(
        set_headers(answers[0].response.as_ref().unwrap()),
        vec![("x-other".to_string(), "yes".to_string())]
    );
    let s = server(&["plugins.envoy_ext_proc_grpc.dry-run=true"]).await;
    let (answers, _) = exchange(&s, vec![msg(headers(&[("x-user", "bob")], true))]).await;
    assert!(
        matches!(answers[0].response, Some(Rs::RequestHeaders(_))),
        "dry-run lets a denial through: {answers:?}"
    );
    // ext_authz itself keeps its settings.
    let mut c = s.client().await;
    let r = c
        .check(support::gateway::check_request(None, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 7);
}

#[tokio::test]
async fn an_undefined_decision_fails_the_stream_like_a_check() {
    let s = server(&["plugins.envoy_ext_proc_grpc.path=envoy/authz/missing"]).await;
    let (answers, err) = exchange(&s, vec![msg(headers(&[], true))]).await;
    assert!(answers.is_empty());
    assert_eq!(err.expect("an error").code(), Code::Unknown);
}

#[tokio::test]
async fn streams_that_misbehave_get_clear_errors() {
    let s = server(&["plugins.envoy_ext_proc_grpc.max-request-bytes=1024"]).await;
    // Body before headers.
    let (_, err) = exchange(
        &s,
        vec![msg(Rq::RequestBody(HttpBody {
            body: b"x".to_vec(),
            ..Default::default()
        }))],
    )
    .await;
    let err = err.expect("error");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("request_headers"), "{err:?}");
    // A message with no phase at all.
    let (_, err) = exchange(&s, vec![ProcessingRequest::default()]).await;
    assert_eq!(err.expect("error").code(), Code::InvalidArgument);
    // A buffered body over the limit.
    let (_, err) = exchange(
        &s,
        vec![
            buffered(headers(&[], false)),
            msg(Rq::RequestBody(HttpBody {
                body: vec![b'a'; 4096],
                end_of_stream: true,
                ..Default::default()
            })),
        ],
    )
    .await;
    let err = err.expect("error");
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    // Headers twice.
    let (answers, err) = exchange(
        &s,
        vec![
            msg(headers(&[("x-user", "alice")], true)),
            msg(headers(&[("x-user", "alice")], true)),
        ],
    )
    .await;
    assert_eq!(answers.len(), 1);
    assert_eq!(err.expect("error").code(), Code::InvalidArgument);
    // The server still answers.
    let (answers, err) = exchange(&s, vec![msg(headers(&[("x-user", "alice")], true))]).await;
    assert!(err.is_none() && answers.len() == 1);
}

#[tokio::test]
async fn a_stream_that_never_sends_headers_is_ended() {
    let s = server(&[]).await;
    let addr = s.ext_proc_addr.unwrap();
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<ProcessingRequest>(1);
    let started = std::time::Instant::now();
    let mut stream = client
        .process(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the server ends the stream");
    let err = next.expect("an item").expect_err("an error");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() >= Duration::from_secs(9));
    drop(tx);
}

#[test]
fn the_section_is_validated() {
    for (set, key) in [
        (
            "plugins.envoy_ext_proc_grpc.addr=nonsense",
            "plugins.envoy_ext_proc_grpc.addr",
        ),
        (
            "plugins.envoy_ext_proc_grpc.max-request-bytes=0",
            "plugins.envoy_ext_proc_grpc.max-request-bytes",
        ),
        (
            "plugins.envoy_ext_proc_grpc.tls.client_auth=require",
            "plugins.envoy_ext_proc_grpc.tls",
        ),
        (
            "plugins.envoy_ext_proc_grpc.unknown=1",
            "plugins.envoy_ext_proc_grpc",
        ),
    ] {
        let e = portcullis::config::Config::load(None, &[set.to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
}
