//! The server as a whole: listeners, health, the HTTP API, shutdown and reload.

mod support;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use support::{Spec, TestServer, http};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const ALLOW_IF_X: &str = "package envoy.authz\n\nallow if input.x == 1\n";

#[tokio::test]
async fn health_is_serving_once_policies_are_loaded() {
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", ALLOW_IF_X)],
        ..Default::default()
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status, 1, "service {service:?} should be SERVING");
    }
    let (status, _) = http(server.http_addr, "GET", "/health", None).await;
    assert_eq!(status, 200);
    let (status, _) = http(server.http_addr, "GET", "/health?plugins", None).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn v1_data_evaluates_like_opa() {
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", ALLOW_IF_X)],
        data: Some(serde_json::json!({"roles": {"alice": ["admin"]}})),
        ..Default::default()
    })
    .await;
    let (status, body) = http(
        server.http_addr,
        "POST",
        "/v1/data/envoy/authz/allow",
        Some(r#"{"input": {"x": 1}}"#),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":true}"#));
    // Undefined: an empty object, as OPA answers.
    let (status, body) = http(
        server.http_addr,
        "POST",
        "/v1/data/envoy/authz/allow",
        Some(r#"{"input": {"x": 2}}"#),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    // Data documents and packages.
    let (status, body) = http(server.http_addr, "GET", "/v1/data/roles/alice", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"result":["admin"]}"#));
    let (status, body) = http(
        server.http_addr,
        "GET",
        "/v1/data/envoy/authz?input=%7B%22x%22%3A1%7D",
        None,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"result":{"allow":true}}"#)
    );
    // Bad bodies are 400s with OPA's error shape.
    let (status, body) = http(server.http_addr, "POST", "/v1/data/envoy", Some("{")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_parameter"), "{body}");
    let (status, _) = http(server.http_addr, "POST", "/v1/data/envoy", Some("[1]")).await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn undefined_decision_is_a_grpc_unknown_error() {
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", ALLOW_IF_X)],
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    let err = client
        .check(CheckRequest::default())
        .await
        .expect_err("undefined decision must be an error");
    assert_eq!(err.code(), tonic::Code::Unknown);
    assert!(
        err.message().contains("undefined decision"),
        "{}",
        err.message()
    );
    server.stop().await;
}
