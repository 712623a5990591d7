//! StreamDecisions fed by concurrent Checks, and gRPC-Web over HTTP/1.1 with CORS.

mod support;

use support::gateway::*;

#[tokio::test]
async fn stream_decisions_receives_concurrent_checks() {
    let gw = Gw::start(&[("GATEWAY_JWT_SECRET", SECRET)], "  addr: 127.0.0.1:0\n").await;
    let ch = gw.channel().await;
    let root = Auth::bearer(&root_token());
    let mut logs = DecisionLogServiceClient::new(ch.clone());
    // Subscribed once the response headers are in.
    let mut all = logs
        .stream_decisions(req(pb::StreamDecisionsRequest::default(), &root))
        .await
        .unwrap()
        .into_inner();
    let mut denies = logs
        .stream_decisions(req(
            pb::StreamDecisionsRequest {
                outcome: pb::Outcome::Deny as i32,
                ..Default::default()
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    // A token scoped to another namespace sees none of the default namespace's decisions.
    let other = Auth::bearer(&scoped(json!({"ns": "elsewhere"})));
    let mut elsewhere = logs
        .stream_decisions(req(pb::StreamDecisionsRequest::default(), &other))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(
            logs.stream_decisions(req(
                pb::StreamDecisionsRequest {
                    namespace: "default".into(),
                    ..Default::default()
                },
                &other
            ))
            .await
        ),
        Code::PermissionDenied
    );

    const N: usize = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let addr = gw.grpc;
        tasks.spawn(async move {
            let mut c = AuthorizationClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let r = c
                .check(check_request(None, i % 2 == 0))
                .await
                .unwrap()
                .into_inner();
            (decision_id(&r), r.status.unwrap().code == 0)
        });
    }
    let mut expected = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (id, allowed) = r.unwrap();
        expected.insert(id, allowed);
    }
    let mut seen = HashMap::new();
    while seen.len() < N {
        let e = all.message().await.unwrap().expect("stream open");
        assert_eq!(e.namespace, "default");
        assert_eq!(e.path, "envoy/authz/allow");
        let event: serde_json::Value = serde_json::from_str(&e.event_json).unwrap();
        assert_eq!(event["decision_id"], e.decision_id.as_str());
        seen.insert(
            e.decision_id.clone(),
            e.outcome == pb::Outcome::Allow as i32,
        );
    }
    assert_eq!(seen, expected);
    let deny_ids: std::collections::HashSet<_> = expected
        .iter()
        .filter(|(_, a)| !**a)
        .map(|(id, _)| id.clone())
        .collect();
    let mut got = std::collections::HashSet::new();
    while got.len() < deny_ids.len() {
        let e = denies.message().await.unwrap().expect("stream open");
        assert_eq!(e.outcome, pb::Outcome::Deny as i32);
        got.insert(e.decision_id);
    }
    assert_eq!(got, deny_ids);

    // A gateway decision in `elsewhere` reaches its stream, which saw nothing before it.
    let acme_root = Auth::bearer(&root_token());
    put_policy(
        &ch,
        &acme_root,
        "elsewhere",
        "p.rego",
        "package p\n\nallow := true\n",
    )
    .await
    .unwrap();
    let d = decide(
        &ch,
        &other,
        pb::DecideRequest {
            path: "p/allow".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.outcome, pb::Outcome::Allow as i32);
    let e = elsewhere.message().await.unwrap().expect("stream open");
    assert_eq!(e.decision_id, d.decision_id);
    assert_eq!(e.namespace, "elsewhere");
    assert_eq!(e.path, "p/allow", "the path the Decide named");
    gw.stop().await;
}

/// One gRPC-Web call over HTTP/1.1: (HTTP status, response headers, body).
async fn grpc_web(
    addr: SocketAddr,
    path: &str,
    message: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut b = hyper::Request::builder()
        .method("POST")
        .version(http::Version::HTTP_11)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .request(b.body(Full::new(bytes::Bytes::from(frame))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// Splits a gRPC-Web body into (messages, trailers text).
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_over_http1_with_cors() {
    use prost::Message as _;
    let gw = Gw::start(
        &[("GATEWAY_TOKEN", "web-token")],
        "  addr: 127.0.0.1:0\n  cors_origins: [\"https://console.example.com\"]\n",
    )
    .await;
    let path = "/portcullis.v1.StatusService/GetStatus";
    let (status, headers, body) = grpc_web(
        gw.gateway,
        path,
        pb::GetStatusRequest {}.encode_to_vec(),
        &[
            ("authorization", "Bearer web-token"),
            ("origin", "https://console.example.com"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web"),
        "{headers:?}"
    );
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://console.example.com"
    );
    let (messages, trailers) = frames(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let reply = pb::GetStatusResponse::decode(messages[0].as_slice()).unwrap();
    assert_eq!(reply.auth_mode, "token");
    assert_eq!(reply.default_namespace, "default");

    // Without credentials: UNAUTHENTICATED through gRPC-Web too; an unlisted origin gets no
    // CORS grant.
    let (_, headers, body) = grpc_web(
        gw.gateway,
        path,
        pb::GetStatusRequest {}.encode_to_vec(),
        &[("origin", "https://evil.example.com")],
    )
    .await;
    let grpc_status = headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| frames(&body).1);
    assert!(
        grpc_status.contains(&(Code::Unauthenticated as i32).to_string()),
        "{grpc_status}"
    );
    assert!(headers.get("access-control-allow-origin").is_none());

    // The CORS preflight for an allowed origin.
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let preflight = hyper::Request::builder()
        .method("OPTIONS")
        .uri(format!("http://{}{path}", gw.gateway))
        .header("origin", "https://console.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web",
        )
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(preflight).await.unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.status());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    gw.stop().await;
}
