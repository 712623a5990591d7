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

fn response_header(
    resp: &envoy_types::pb::envoy::service::auth::v3::CheckResponse,
    name: &str,
) -> Option<String> {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match resp.http_response.as_ref()? {
        HttpResponse::OkResponse(ok) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_reload_swaps_atomically_under_concurrent_checks() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    let rev = |n: u32| {
        format!(
            "package envoy.authz\n\nallow := {{\"allowed\": true, \"headers\": {{\"x-rev\": \"{n}\"}}}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.rego");
    std::fs::write(&file, rev(1)).unwrap();
    let server = TestServer::start(Spec {
        paths: vec![file.clone()],
        ..Default::default()
    })
    .await;
    let reloads = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let (r, j) = (reloads.clone(), rejected.clone());
    let _watcher = portcullis::policy::watch::watch(server.store.clone(), move |res| match res {
        Ok(_) => {
            r.fetch_add(1, Ordering::SeqCst);
        }
        Err(_) => {
            j.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let checks = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut client = server.client().await;
        let (stop, failures, checks) = (stop.clone(), failures.clone(), checks.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.check(CheckRequest::default()).await {
                    Ok(resp) if resp.get_ref().status.as_ref().map(|s| s.code) == Some(0) => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Valid change, then a broken one that must be rejected while revision 2 keeps serving.
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&file, rev(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the change was not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rejected_before = rejected.load(Ordering::SeqCst);
    std::fs::write(&file, "package envoy.authz\n\nallow := {\n").unwrap();
    while rejected.load(Ordering::SeqCst) <= rejected_before {
        assert!(Instant::now() < deadline, "the broken change was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(checks.load(Ordering::Relaxed) > 10);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no Check may fail during reloads"
    );
    let mut client = server.client().await;
    let resp = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response_header(&resp, "x-rev").as_deref(), Some("2"));
    assert_eq!(server.store.snapshot().revision(), 2);
    server.stop().await;
}

#[tokio::test]
async fn unix_and_abstract_sockets_serve_checks() {
    use portcullis::config::ListenAddr;
    use portcullis::server::GrpcListener;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("authz.sock");
    // A stale socket file from a previous run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let name = format!("portcullis-test-{}", std::process::id());
    for addr in [ListenAddr::Unix(sock.clone()), ListenAddr::Abstract(name)] {
        let listener = GrpcListener::bind(&addr).await.unwrap();
        let policy = dir.path().join("p.rego");
        std::fs::write(&policy, "package envoy.authz\n\nallow := true\n").unwrap();
        let store = std::sync::Arc::new(
            portcullis::policy::PolicyStore::load(vec![policy], Default::default()).unwrap(),
        );
        let config = portcullis::config::Config::default();
        let app = portcullis::server::App::builder(&config, store)
            .build()
            .unwrap();
        let running = support::server::Running::spawn(
            app,
            portcullis::server::Listeners {
                ext_authz: listener,
                http: None,
                diagnostic: None,
                gateway: None,
                ext_authz_http: None,
                ext_proc: None,
            },
        );
        let addr2 = addr.clone();
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let addr = addr2.clone();
                async move {
                    let stream = match addr {
                        ListenAddr::Unix(p) => tokio::net::UnixStream::connect(p).await?,
                        ListenAddr::Abstract(n) => {
                            use std::os::linux::net::SocketAddrExt;
                            let sa =
                                std::os::unix::net::SocketAddr::from_abstract_name(n.as_bytes())?;
                            let s = std::os::unix::net::UnixStream::connect_addr(&sa)?;
                            s.set_nonblocking(true)?;
                            tokio::net::UnixStream::from_std(s)?
                        }
                        _ => unreachable!(),
                    };
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .unwrap();
        let mut client =
            envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
                channel,
            );
        let resp = client
            .check(CheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status.unwrap().code, 0, "{addr:?}");
        running.stop().await;
    }
}

#[tokio::test]
async fn reflection_describes_ext_authz_and_health() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", ALLOW_IF_X)],
        sets: vec!["plugins.envoy_ext_authz_grpc.enable-reflection=true".into()],
        ..Default::default()
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let ask = |m: MessageRequest| {
        tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        }])
    };
    let mut stream = client
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"envoy.service.auth.v3.Authorization".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    assert_eq!(
        names.len(),
        2,
        "only served services are advertised: {names:?}"
    );
    let mut stream = client
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "envoy.service.auth.v3.CheckRequest".into(),
        )))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap().message_response;
    assert!(
        matches!(resp, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{resp:?}"
    );
    // The v1alpha service too, as OPA-Envoy serves it (grpcurl before 1.9 asks it).
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            }]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected a service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"envoy.service.auth.v3.Authorization".to_string()),
            "{names:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_is_off_by_default() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
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
    let mut client = ServerReflectionClient::new(channel);
    let err = client
        .server_reflection_info(tokio_stream::iter(vec![]))
        .await
        .expect_err("no reflection service");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    server.stop().await;
}

/// Sends `body` as the raw protobuf of a CheckRequest and returns the gRPC status.
async fn raw_check(addr: std::net::SocketAddr, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct Raw;
    struct RawEnc;
    struct RawDec;
    impl Encoder for RawEnc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for RawDec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEnc;
        type Decoder = RawDec;
        fn encoder(&mut self) -> RawEnc {
            RawEnc
        }
        fn decoder(&mut self) -> RawDec {
            RawDec
        }
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn hostile_messages_get_clear_errors_and_the_server_keeps_serving() {
    use prost::Message;
    let server = TestServer::start(Spec {
        policies: vec![("p.rego", "package envoy.authz\n\nallow := true\n")],
        sets: vec!["plugins.envoy_ext_authz_grpc.grpc-max-recv-msg-size=2048".into()],
        ..Default::default()
    })
    .await;
    // Over the size limit.
    let mut big = CheckRequest::default();
    let mut attrs = envoy_types::pb::envoy::service::auth::v3::AttributeContext::default();
    let mut request =
        envoy_types::pb::envoy::service::auth::v3::attribute_context::Request::default();
    let http_req = envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
        body: "x".repeat(10_000),
        ..Default::default()
    };
    request.http = Some(http_req);
    attrs.request = Some(request);
    big.attributes = Some(attrs);
    let err = raw_check(server.grpc_addr, big.encode_to_vec())
        .await
        .unwrap_err();
    // gRPC (and OPA-Envoy) name it RESOURCE_EXHAUSTED; the message says what the limit is.
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    // Not protobuf at all.
    let err = raw_check(server.grpc_addr, vec![0xff; 64])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    // A header value that is not UTF-8 (field 1 attributes > 4 request > 2 http > 3 headers).
    let header_entry = [0x0a, 0x01, b'k', 0x12, 0x02, 0xc3, 0x28];
    let mut http_bytes = vec![0x1a, header_entry.len() as u8];
    http_bytes.extend_from_slice(&header_entry);
    let mut request_bytes = vec![0x12, http_bytes.len() as u8];
    request_bytes.extend_from_slice(&http_bytes);
    let mut attrs_bytes = vec![0x22, request_bytes.len() as u8];
    attrs_bytes.extend_from_slice(&request_bytes);
    let mut msg = vec![0x0a, attrs_bytes.len() as u8];
    msg.extend_from_slice(&attrs_bytes);
    let err = raw_check(server.grpc_addr, msg).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(err.message().contains("UTF-8"), "{err:?}");
    // The server still answers.
    let ok = raw_check(server.grpc_addr, CheckRequest::default().encode_to_vec())
        .await
        .unwrap();
    let resp =
        envoy_types::pb::envoy::service::auth::v3::CheckResponse::decode(ok.as_slice()).unwrap();
    assert_eq!(resp.status.unwrap().code, 0);
    server.stop().await;
}
