//! Finding 12: the open-mode gateway accepted any `Host` and `Origin`, so a page in the
//! user's browser (DNS rebinding: a name the attacker points at 127.0.0.1) could read and write
//! policies over gRPC-Web.

use std::net::SocketAddr;

use prost::Message as _;

use crate::sidecar::{Setup, Sidecar};
use crate::support::gateway::pb;

/// One gRPC-Web call over HTTP/1.1 with the given headers; the gRPC status (0 is OK).
async fn call(addr: SocketAddr, path: &str, message: Vec<u8>, headers: &[(&str, &str)]) -> String {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
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
    if let Some(s) = resp.headers().get("grpc-status") {
        return s.to_str().unwrap().to_string();
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    text.split("grpc-status:")
        .nth(1)
        .map(|s| s.trim().chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default()
}

const PUT: &str = "/portcullis.v1.PolicyService/PutPolicy";

fn put() -> Vec<u8> {
    pb::PutPolicyRequest {
        namespace: "default".into(),
        id: "evil.rego".into(),
        rego: "package envoy.authz\nallow := true\n".into(),
    }
    .encode_to_vec()
}

#[tokio::test]
async fn open_mode_answers_loopback_hosts_only_and_no_cross_origin_calls() {
    let s = Sidecar::start(Setup {
        config: "gateway: {addr: \"127.0.0.1:0\", cors_origins: [\"https://console.example.com\"]}\n",
        files: vec![("policy.rego", "package envoy.authz\nallow := false\n".into())],
        env: vec![],
    })
    .await;
    let gw = s.gateway.unwrap();
    // DNS rebinding: the attacker's name, resolving to 127.0.0.1, same-origin for the browser.
    for headers in [
        &[
            ("host", "evil.example:9292"),
            ("origin", "http://evil.example:9292"),
        ][..],
        &[("host", "evil.example:9292")],
        // Cross-origin, even from an origin listed for the authenticated modes.
        &[("origin", "https://console.example.com")],
        &[("origin", "http://evil.example")],
    ] {
        assert_eq!(call(gw, PUT, put(), headers).await, "7", "{headers:?}");
    }
    assert!(
        s.store
            .snapshot()
            .modules()
            .iter()
            .all(|(n, _)| !n.contains("evil")),
        "a refused call wrote a policy"
    );
    // A local client (no Origin, loopback Host) works as before.
    assert_eq!(call(gw, PUT, put(), &[]).await, "0");
    s.stop().await;
}

#[tokio::test]
async fn every_mode_refuses_unlisted_browser_origins() {
    let s = Sidecar::start(Setup {
        config: "gateway: {addr: \"127.0.0.1:0\", cors_origins: [\"https://console.example.com\"]}\n",
        files: vec![("policy.rego", "package envoy.authz\nallow := false\n".into())],
        env: vec![("GATEWAY_TOKEN", "tok")],
    })
    .await;
    let gw = s.gateway.unwrap();
    let auth = ("authorization", "Bearer tok");
    assert_eq!(
        call(gw, PUT, put(), &[auth, ("origin", "https://evil.example")]).await,
        "7"
    );
    assert_eq!(
        call(
            gw,
            PUT,
            put(),
            &[auth, ("origin", "https://console.example.com")]
        )
        .await,
        "0"
    );
    s.stop().await;
}
