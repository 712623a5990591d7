//! OPA's REST API on the HTTP API listener: each endpoint's status code and body against the
//! answer OPA gives (its REST API reference and server tests), the protection of writes, and
//! hostile inputs. Attacks first.

mod support;

use std::net::SocketAddr;

use portcullis::http::authz::{Authentication, Authorization, Protection};
use serde_json::{Value as Json, json};
use support::server::{Prepared, Running};
use support::{Spec, TestServer};

/// One HTTP/1.1 call: (status, body text, content type).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.into())))
        .expect("request");
    let resp = client.request(req).await.expect("http request");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn req(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    call(addr, method, path, &[], body).await
}

/// The body as JSON (an empty body is `null`).
fn parsed(body: &str) -> Json {
    if body.is_empty() {
        return Json::Null;
    }
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Asserts status and JSON body, field for field.
async fn expect(addr: SocketAddr, method: &str, path: &str, body: &str, status: u16, want: Json) {
    let (got_status, got) = req(addr, method, path, body).await;
    assert_eq!(
        (got_status, parsed(&got)),
        (status, want),
        "{method} {path} {body}"
    );
}

const OPEN_AUTHZ: &str = "package system.authz\n\ndefault allow := true\n";

fn protected() -> Protection {
    Protection {
        authentication: Authentication::Token,
        authorization: Authorization::Basic,
    }
}

async fn start(spec: Spec<'_>, protection: Protection) -> TestServer {
    let prepared = Prepared::new(spec).unwrap_or_else(|e| panic!("did not start: {e}"));
    let mut app = prepared.app().build().expect("app");
    app.rest.protection = protection;
    prepared.serve(app).await
}

/// A server whose policies allow every REST call, writes included.
async fn writable(data: Option<Json>) -> TestServer {
    start(
        Spec {
            policies: vec![("authz.rego", OPEN_AUTHZ)],
            data,
            ..Default::default()
        },
        protected(),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Attacks: who controls the input, and its worst value.

/// Anyone who can reach the listener: without `--authorization` no write gets through, and
/// nothing changes.
#[tokio::test]
async fn writes_are_refused_without_protection() {
    let server = start(
        Spec {
            policies: vec![("p.rego", "package p\n\nx := 1\n")],
            data: Some(json!({"users": {"alice": true}})),
            ..Default::default()
        },
        Protection::default(),
    )
    .await;
    let a = server.http_addr;
    for (method, path, body) in [
        ("PUT", "/v1/data/users/bob", "true"),
        ("PUT", "/v1/data", "{}"),
        (
            "PATCH",
            "/v1/data/users",
            r#"[{"op": "remove", "path": "alice"}]"#,
        ),
        ("DELETE", "/v1/data/users/alice", ""),
        ("PUT", "/v1/policies/evil", "package p\n\nx := 2\n"),
        ("DELETE", "/v1/policies/evil", ""),
    ] {
        let (status, got) = req(a, method, path, body).await;
        assert_eq!(status, 403, "{method} {path}: {got}");
        let got = parsed(&got);
        assert_eq!(got["code"], "unauthorized", "{got}");
        assert!(
            got["message"]
                .as_str()
                .unwrap()
                .contains("--authorization=basic"),
            "{got}"
        );
    }
    // Reads still work, and nothing was written.
    expect(
        a,
        "GET",
        "/v1/data",
        "",
        200,
        json!({"result": {"users": {"alice": true}, "p": {"x": 1}}}),
    )
    .await;
    let (_, list) = req(a, "GET", "/v1/policies", "").await;
    assert_eq!(parsed(&list)["result"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// On an address other than loopback, a policy that cannot tell callers apart is not enough:
/// writes also need `--authentication=token`.
#[tokio::test]
async fn writes_on_a_non_loopback_address_need_a_token_identity() {
    for (protection, status) in [
        (
            Protection {
                authorization: Authorization::Basic,
                ..Default::default()
            },
            403,
        ),
        (protected(), 204),
    ] {
        let prepared = Prepared::new(Spec {
            policies: vec![("authz.rego", OPEN_AUTHZ)],
            ..Default::default()
        })
        .unwrap();
        let mut app = prepared.app().build().unwrap();
        app.rest.protection = protection;
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // 0.0.0.0 is not a loopback address; it is reached through 127.0.0.1.
        let http = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = http.local_addr().unwrap().port();
        let running = Running::spawn(
            app,
            portcullis::server::Listeners {
                ext_authz: portcullis::server::GrpcListener::Tcp(grpc),
                http: Some(http),
                diagnostic: None,
                gateway: None,
                ext_authz_http: None,
                ext_proc: None,
            },
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (got, body) = req(addr, "PUT", "/v1/data/x", "1").await;
        assert_eq!(got, status, "{protection:?}: {body}");
        if status == 403 {
            assert!(body.contains("--authentication=token"), "{body}");
        }
        running.stop().await;
    }
}

const TOKEN_AUTHZ: &str = r#"package system.authz

default allow := false

# Anyone may read data.public.
allow if {
    input.method == "GET"
    input.path == ["v1", "data", "public"]
}

# The operator's token may do anything.
allow if input.identity == "s3cret-token"

# A named refusal.
allow := {"allowed": false, "reason": "carol is not welcome"} if input.identity == "carol"
"#;

/// Every call is decided by `system.authz` with OPA's input; the bearer token is the identity.
#[tokio::test]
async fn system_authz_decides_every_call_with_the_token_as_identity() {
    let server = start(
        Spec {
            policies: vec![("authz.rego", TOKEN_AUTHZ)],
            data: Some(json!({"public": 1, "secret": 2})),
            ..Default::default()
        },
        protected(),
    )
    .await;
    let a = server.http_addr;
    let rejected =
        json!({"code": "unauthorized", "message": "request rejected by administrative policy"});
    let (s, b) = call(a, "GET", "/v1/data/public", &[], "").await;
    assert_eq!((s, parsed(&b)), (200, json!({"result": 1})));
    let (s, b) = call(a, "GET", "/v1/data/secret", &[], "").await;
    assert_eq!((s, parsed(&b)), (401, rejected.clone()));
    let (s, b) = call(
        a,
        "GET",
        "/v1/data/secret",
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!((s, parsed(&b)), (401, rejected.clone()));
    // Not a bearer token: no identity.
    let (s, _) = call(
        a,
        "GET",
        "/v1/data/secret",
        &[("authorization", "Basic s3cret-token")],
        "",
    )
    .await;
    assert_eq!(s, 401);
    let (s, b) = call(
        a,
        "GET",
        "/v1/data/secret",
        &[("authorization", "Bearer carol")],
        "",
    )
    .await;
    assert_eq!(
        (s, parsed(&b)),
        (
            401,
            json!({"code": "unauthorized", "message": "carol is not welcome"})
        )
    );
    let auth = [("authorization", "Bearer s3cret-token")];
    let (s, b) = call(a, "GET", "/v1/data/secret", &auth, "").await;
    assert_eq!((s, parsed(&b)), (200, json!({"result": 2})));
    let (s, _) = call(a, "PUT", "/v1/data/secret", &auth, "3").await;
    assert_eq!(s, 204);
    // Health probes are decided too, as in OPA.
    let (s, _) = call(a, "GET", "/health", &[], "").await;
    assert_eq!(s, 401);
    let (s, b) = call(a, "GET", "/v1/data/secret", &auth, "").await;
    assert_eq!((s, parsed(&b)), (200, json!({"result": 3})));
    server.stop().await;
}

/// The authorization input is OPA's: method, path segments, params and headers as lists
/// (canonical names), and the parsed body of data `POST`s.
#[tokio::test]
async fn system_authz_input_has_opas_shape() {
    let policy = r#"package system.authz

default allow := false

allow if {
    input.method == "POST"
    input.path == ["v1", "data", "a b"]
    input.params == {"pretty": [""], "x": ["1", "2"]}
    input.headers["X-Custom-Header"] == ["v"]
    input.body == {"input": {"n": 1}}
    not input.identity
}
"#;
    let server = start(
        Spec {
            policies: vec![("authz.rego", policy)],
            ..Default::default()
        },
        protected(),
    )
    .await;
    let a = server.http_addr;
    let (s, b) = call(
        a,
        "POST",
        "/v1/data/a%20b?pretty&x=1&x=2",
        &[("x-custom-header", "v")],
        r#"{"input": {"n": 1}}"#,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // The body still reaches the handler after the authorizer read it.
    assert_eq!(parsed(&b), json!({}));
    let (s, _) = call(
        a,
        "POST",
        "/v1/data/a%20b?pretty&x=1&x=2",
        &[("x-custom-header", "v")],
        r#"{"input": {"n": 2}}"#,
    )
    .await;
    assert_eq!(s, 401);
    // A body the authorizer cannot parse is a 400 before any policy runs.
    let (s, b) = call(a, "POST", "/v1/data/a%20b", &[], "{").await;
    assert_eq!(
        (s, parsed(&b)["code"].clone()),
        (400, json!("invalid_parameter"))
    );
    server.stop().await;
}

/// With `--authorization=basic` and no `system.authz`, every call fails closed.
#[tokio::test]
async fn a_missing_authorization_policy_fails_closed() {
    let server = start(
        Spec {
            data: Some(json!({"x": 1})),
            ..Default::default()
        },
        protected(),
    )
    .await;
    expect(
        server.http_addr,
        "GET",
        "/v1/data/x",
        "",
        500,
        json!({"code": "internal_error", "message": "authorization policy missing or undefined"}),
    )
    .await;
    server.stop().await;
}

/// Bodies over 8 MiB, JSON nested past the parser's depth, bad escapes, non-UTF-8 and control
/// characters are clear 4xx errors; nothing is written.
#[tokio::test]
async fn hostile_bodies_and_paths_are_refused() {
    let server = writable(Some(json!({"keep": 1}))).await;
    let a = server.http_addr;
    let huge = vec![b' '; 9 * 1024 * 1024];
    let (s, b) = call(a, "PUT", "/v1/data/x", &[], huge.clone()).await;
    assert_eq!(
        (s, parsed(&b)),
        (
            413,
            json!({"code": "invalid_parameter", "message": "request body too large"})
        )
    );
    let (s, _) = call(a, "POST", "/v1/data/x", &[], huge).await;
    assert_eq!(s, 413);
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    for (method, path) in [
        ("PUT", "/v1/data/x"),
        ("POST", "/v1/data/x"),
        ("POST", "/v0/data/x"),
        ("POST", "/v1/query"),
    ] {
        let (s, b) = req(a, method, path, &deep).await;
        assert_eq!(s, 400, "{method} {path}: {b}");
        assert_eq!(parsed(&b)["code"], "invalid_parameter");
    }
    let (s, b) = req(a, "PUT", "/v1/data/a%ff", "1").await;
    assert_eq!(
        (s, parsed(&b)["message"].clone()),
        (400, json!("bad path: /v1/data/a%ff"))
    );
    let (s, _) = req(a, "PUT", "/v1/data/a%01b", "1").await;
    assert_eq!(s, 400);
    let (s, b) = call(a, "PUT", "/v1/policies/bin", &[], vec![0xff, 0xfe, b'p']).await;
    assert_eq!(
        (s, parsed(&b)["message"].clone()),
        (400, json!("the module is not valid UTF-8"))
    );
    let (s, _) = req(a, "PUT", "/v1/policies/a%01b", "package q\n").await;
    assert_eq!(s, 400);
    let long_id = "x".repeat(300);
    let (s, _) = req(a, "PUT", &format!("/v1/policies/{long_id}"), "package q\n").await;
    assert_eq!(s, 400);
    expect(
        a,
        "GET",
        "/v1/data",
        "",
        200,
        json!({"result": {"keep": 1, "system": {"authz": {"allow": true}}}}),
    )
    .await;
    server.stop().await;
}

/// `..` is a key like any other: ids and paths name documents and modules in memory, never
/// files.
#[tokio::test]
async fn dot_dot_names_a_key_not_a_file() {
    let server = writable(None).await;
    let a = server.http_addr;
    let (s, _) = req(a, "PUT", "/v1/data/a/%2e%2e/b", "1").await;
    assert_eq!(s, 204);
    expect(
        a,
        "GET",
        "/v1/data/a",
        "",
        200,
        json!({"result": {"..": {"b": 1}}}),
    )
    .await;
    let escape = server.dir().join("escaped.rego");
    let id = format!(
        "%2e%2e%2f%2e%2e%2f{}",
        escape.display().to_string().replace('/', "%2f")
    );
    let (s, b) = req(
        a,
        "PUT",
        &format!("/v1/policies/{id}"),
        "package odd\n\nx := 1\n",
    )
    .await;
    assert_eq!((s, b.as_str()), (200, "{}"));
    assert!(!escape.exists());
    let (_, list) = req(a, "GET", "/v1/policies", "").await;
    let ids: Vec<String> = parsed(&list)["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.contains(&format!("../../{}", escape.display())),
        "{ids:?}"
    );
    expect(a, "GET", "/v1/data/odd/x", "", 200, json!({"result": 1})).await;
    server.stop().await;
}

/// A patch cannot grow the written data past the store's bounds, nor carry unbounded
/// operations.
#[tokio::test]
async fn writes_cannot_exceed_the_stores_bounds() {
    let server = writable(None).await;
    let a = server.http_addr;
    let ops: Vec<Json> = (0..10_001)
        .map(|i| json!({"op": "add", "path": format!("/k{i}"), "value": i}))
        .collect();
    let (s, b) = req(a, "PATCH", "/v1/data", &Json::Array(ops).to_string()).await;
    assert_eq!(s, 400, "{b}");
    // 16 MiB of written data per namespace: the third 6 MiB value is refused.
    let big = format!("\"{}\"", "v".repeat(6 * 1024 * 1024));
    for (i, want) in [(1, 204), (2, 204), (3, 400)] {
        let (s, b) = req(a, "PUT", &format!("/v1/data/big{i}"), &big).await;
        assert_eq!(s, want, "{i}: {}", &b[..b.len().min(200)]);
    }
    let patch = json!([{"op": "add", "path": "/big3", "value": "v".repeat(6 * 1024 * 1024)}]);
    let (s, _) = req(a, "PATCH", "/v1/data", &patch.to_string()).await;
    assert_eq!(s, 400);
    let (s, b) = req(a, "GET", "/v1/data/big3", "").await;
    assert_eq!((s, b.as_str()), (200, "{}"));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The Data API, against OPA's server tests.

#[tokio::test]
async fn data_writes_answer_as_opa() {
    let server = writable(None).await;
    let a = server.http_addr;
    // put deep makedir
    expect(a, "PUT", "/v1/data/a/b/c/d", "1", 204, Json::Null).await;
    expect(
        a,
        "GET",
        "/v1/data/a/b/c",
        "",
        200,
        json!({"result": {"d": 1}}),
    )
    .await;
    // put exists overwrite
    expect(a, "PUT", "/v1/data/a/b", r#""goodbye""#, 204, Json::Null).await;
    expect(
        a,
        "GET",
        "/v1/data/a",
        "",
        200,
        json!({"result": {"b": "goodbye"}}),
    )
    .await;
    // put base write conflict
    expect(a, "PUT", "/v1/data/a/b", "[1,2,3,4]", 204, Json::Null).await;
    expect(
        a,
        "PUT",
        "/v1/data/a/b/c/d",
        "0",
        404,
        json!({"code": "resource_conflict", "message": "storage_write_conflict_error: /a/b"}),
    )
    .await;
    // If-None-Match: * keeps an existing document.
    let (s, b) = call(a, "PUT", "/v1/data/a/b", &[("if-none-match", "*")], "7").await;
    assert_eq!((s, b.as_str()), (304, ""));
    expect(
        a,
        "GET",
        "/v1/data/a/b",
        "",
        200,
        json!({"result": [1, 2, 3, 4]}),
    )
    .await;
    let (s, _) = call(a, "PUT", "/v1/data/fresh", &[("if-none-match", "*")], "7").await;
    assert_eq!(s, 204);
    // delete and check
    expect(
        a,
        "DELETE",
        "/v1/data/z/y",
        "",
        404,
        json!({"code": "resource_not_found", "message": "storage_not_found_error: /z/y: document does not exist"}),
    )
    .await;
    expect(a, "PUT", "/v1/data/z/y/c/d", "1", 204, Json::Null).await;
    expect(a, "DELETE", "/v1/data/z/y", "", 204, Json::Null).await;
    expect(a, "GET", "/v1/data/z/y/c/d", "", 200, json!({})).await;
    expect(a, "GET", "/v1/data/z", "", 200, json!({"result": {}})).await;
    // Malformed JSON.
    let (s, b) = req(a, "PUT", "/v1/data/a", "{").await;
    assert_eq!(
        (s, parsed(&b)["code"].clone()),
        (400, json!("invalid_parameter"))
    );
    // The root: replaced by an object only; never removed.
    expect(
        a,
        "DELETE",
        "/v1/data",
        "",
        400,
        json!({"code": "invalid_parameter", "message": "storage_invalid_patch_error: root cannot be removed"}),
    )
    .await;
    expect(
        a,
        "PUT",
        "/v1/data",
        "[1]",
        400,
        json!({"code": "invalid_parameter", "message": "storage_invalid_patch_error: root must be object"}),
    )
    .await;
    expect(a, "PUT", "/v1/data", r#"{"foo": [1,2,3]}"#, 204, Json::Null).await;
    expect(
        a,
        "GET",
        "/v1/data/foo",
        "",
        200,
        json!({"result": [1, 2, 3]}),
    )
    .await;
    // ?metrics: 200 with OPA's timers instead of 204.
    let (s, b) = req(a, "PUT", "/v1/data/m?metrics", "1").await;
    assert_eq!(s, 200);
    let m = parsed(&b);
    assert!(m["metrics"]["timer_server_handler_ns"].is_u64(), "{m}");
    assert!(m["metrics"]["timer_rego_input_parse_ns"].is_u64(), "{m}");
    // Writes survive a reload of the files.
    server.store.reload().unwrap();
    expect(
        a,
        "GET",
        "/v1/data/foo",
        "",
        200,
        json!({"result": [1, 2, 3]}),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn json_patch_applies_as_opa_or_not_at_all() {
    let server = writable(None).await;
    let a = server.http_addr;
    // append array one-shot
    expect(
        a,
        "PATCH",
        "/v1/data/x",
        r#"[{"op": "add", "path": "/", "value": []},
            {"op": "add", "path": "-", "value": {"a": 1}},
            {"op": "add", "path": "-", "value": {"a": 2}}]"#,
        204,
        Json::Null,
    )
    .await;
    expect(a, "GET", "/v1/data/x/1/a", "", 200, json!({"result": 2})).await;
    // insert array
    expect(
        a,
        "PATCH",
        "/v1/data/y",
        r#"[{"op": "add", "path": "/", "value": {"y": [{"z": [1,2,3]}, {"z": [4,5,6]}]}}]"#,
        204,
        Json::Null,
    )
    .await;
    expect(
        a,
        "PATCH",
        "/v1/data/y/y/1",
        r#"[{"op": "add", "path": "/z/1", "value": 100}]"#,
        204,
        Json::Null,
    )
    .await;
    expect(
        a,
        "GET",
        "/v1/data/y/y/1/z",
        "",
        200,
        json!({"result": [4, 100, 5, 6]}),
    )
    .await;
    expect(
        a,
        "PATCH",
        "/v1/data/y/y/1",
        r#"[{"op": "replace", "path": "/z/0", "value": 9}, {"op": "remove", "path": "/z/3"}]"#,
        204,
        Json::Null,
    )
    .await;
    expect(
        a,
        "GET",
        "/v1/data/y/y/1/z",
        "",
        200,
        json!({"result": [9, 100, 5]}),
    )
    .await;
    // patch abort: the third operation fails, so none applies.
    let (s, b) = req(
        a,
        "PATCH",
        "/v1/data",
        r#"[{"op": "add", "path": "/foo", "value": "hello"},
            {"op": "add", "path": "/bar", "value": "world"},
            {"op": "add", "path": "/foo/bad", "value": "deadbeef"}]"#,
    )
    .await;
    assert_eq!(
        (s, parsed(&b)),
        (
            404,
            json!({"code": "resource_not_found", "message": "storage_not_found_error: document does not exist"})
        )
    );
    expect(a, "GET", "/v1/data/foo", "", 200, json!({})).await;
    // Operations OPA's Data API does not support, and bad paths.
    for op in ["move", "copy", "test", "frob"] {
        expect(
            a,
            "PATCH",
            "/v1/data",
            &format!(r#"[{{"op": "{op}", "path": "/x", "from": "/y", "value": 1}}]"#),
            400,
            json!({"code": "invalid_parameter", "message": format!("bad patch operation: {op}")}),
        )
        .await;
    }
    expect(
        a,
        "PATCH",
        "/v1/data",
        r#"[{"op": "add", "path": "/a%zz", "value": 1}]"#,
        400,
        json!({"code": "invalid_parameter", "message": "bad patch path: /a%zz"}),
    )
    .await;
    expect(
        a,
        "PATCH",
        "/v1/data/x",
        r#"[{"op": "replace", "path": "/-", "value": 1}]"#,
        400,
        json!({"code": "invalid_parameter", "message": "storage_invalid_patch_error: /x/-: invalid patch path"}),
    )
    .await;
    let (s, _) = req(a, "PATCH", "/v1/data", r#"{"op": "add"}"#).await;
    assert_eq!(s, 400);
    // patch root invalid / patch invalid
    let (s, _) = req(
        a,
        "PATCH",
        "/v1/data",
        r#"[{"op": "add", "path": "/", "value": [1,2,3]}]"#,
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = req(a, "PATCH", "/v1/data", r#"[{"op": "remove", "path": "/"}]"#).await;
    assert_eq!(s, 400);
    // escaped paths
    expect(a, "PUT", "/v1/data/a%2Fb", r#"{"c/d": 1}"#, 204, Json::Null).await;
    expect(
        a,
        "GET",
        "/v1/data/a%2Fb/c%2Fd",
        "",
        200,
        json!({"result": 1}),
    )
    .await;
    expect(a, "GET", "/v1/data/a/b", "", 200, json!({})).await;
    expect(
        a,
        "PATCH",
        "/v1/data/a%2Fb",
        r#"[{"op": "add", "path": "/e%2Ff", "value": 2}]"#,
        204,
        Json::Null,
    )
    .await;
    expect(
        a,
        "GET",
        "/v1/data/a%2Fb",
        "",
        200,
        json!({"result": {"c/d": 1, "e/f": 2}}),
    )
    .await;
    server.stop().await;
}

/// Data may not be written where a rule is (OPA's compiler check), nor under a bundle's roots.
#[tokio::test]
async fn data_writes_keep_out_of_rules_and_bundles() {
    let server = writable(None).await;
    let a = server.http_addr;
    expect(
        a,
        "PUT",
        "/v1/policies/testmod",
        "package x.y\n\np := 1\nq := 2\n",
        200,
        json!({}),
    )
    .await;
    for (path, body) in [
        ("/v1/data/x", r#"{"y": {"p": "xxx"}}"#),
        ("/v1/data/x/y/p", r#""xxx""#),
        ("/v1/data/x/y/p/a", "1"),
    ] {
        let (s, b) = req(a, "PUT", path, body).await;
        assert_eq!(s, 400, "{path}: {b}");
        assert_eq!(
            parsed(&b)["message"],
            "1 error occurred: rego_compile_error: conflicting rule for data path x/y/p found"
        );
    }
    expect(
        a,
        "GET",
        "/v1/data/x/y",
        "",
        200,
        json!({"result": {"p": 1, "q": 2}}),
    )
    .await;
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    std::fs::create_dir_all(bundle.join("owned")).unwrap();
    std::fs::write(
        bundle.join(".manifest"),
        r#"{"revision": "r1", "roots": ["owned"]}"#,
    )
    .unwrap();
    std::fs::write(bundle.join("owned/data.json"), r#"{"v": 1}"#).unwrap();
    let server = start(
        Spec {
            policies: vec![("authz.rego", OPEN_AUTHZ)],
            bundle_paths: vec![bundle],
            ..Default::default()
        },
        protected(),
    )
    .await;
    let a = server.http_addr;
    let (s, b) = req(a, "PUT", "/v1/data/owned/w", "1").await;
    assert_eq!(s, 400, "{b}");
    assert!(
        parsed(&b)["message"]
            .as_str()
            .unwrap()
            .starts_with("path owned/w is owned by bundle"),
        "{b}"
    );
    expect(
        a,
        "PUT",
        "/v1/data",
        "{}",
        400,
        json!({"code": "invalid_parameter", "message": "can't write to document root with bundle roots configured"}),
    )
    .await;
    expect(a, "PUT", "/v1/data/free", "1", 204, Json::Null).await;
    server.stop().await;
}

const RULES: &str = r#"package testmod

gt1 if input.req1 > 1

p := [1, 2, 3, 4]

undef if false

div if 1 / 0 == 0

default strict := false

strict if 1 / 0 == 0

default typed := "default"

typed := "sum" if input.n + 9 > 0
"#;

#[tokio::test]
async fn data_reads_answer_as_opa() {
    let server = TestServer::start(Spec {
        policies: vec![("test.rego", RULES)],
        data: Some(json!({"x": [1, 2]})),
        ..Default::default()
    })
    .await;
    let a = server.http_addr;
    expect(
        a,
        "POST",
        "/v1/data/testmod/gt1",
        r#"{"input": {"req1": 2}}"#,
        200,
        json!({"result": true}),
    )
    .await;
    let warning =
        json!({"code": "api_usage_warning", "message": "'input' key missing from the request"});
    expect(
        a,
        "POST",
        "/v1/data/x",
        "",
        200,
        json!({"result": [1, 2], "warning": warning}),
    )
    .await;
    expect(
        a,
        "POST",
        "/v1/data/testmod/undef",
        "{}",
        200,
        json!({"warning": warning}),
    )
    .await;
    expect(
        a,
        "POST",
        "/v1/data/x",
        r#"{"input": {}}"#,
        200,
        json!({"result": [1, 2]}),
    )
    .await;
    expect(a, "GET", "/v1/data/testmod/undef", "", 200, json!({})).await;
    expect(a, "GET", "/v1/data/doesnot/exist", "", 200, json!({})).await;
    expect(
        a,
        "GET",
        "/v1/data/testmod/gt1?input=%7B%22req1%22%3A2%7D",
        "",
        200,
        json!({"result": true}),
    )
    .await;
    expect(a, "GET", "/v1/data/x/1", "", 200, json!({"result": 2})).await;
    let (s, b) = req(a, "GET", "/v1/data/deadbeef?input", "").await;
    assert_eq!(s, 400);
    assert!(
        parsed(&b)["message"]
            .as_str()
            .unwrap()
            .starts_with("parameter contains malformed input document: "),
        "{b}"
    );
    let (s, b) = req(a, "POST", "/v1/data/deadbeef", r#"{"input": @}"#).await;
    assert_eq!(s, 400);
    assert!(
        parsed(&b)["message"]
            .as_str()
            .unwrap()
            .starts_with("body contains malformed input document: "),
        "{b}"
    );
    // YAML by content type.
    let (s, b) = call(
        a,
        "POST",
        "/v1/data/testmod/gt1",
        &[("content-type", "application/x-yaml")],
        "input:\n  req1: 2\n",
    )
    .await;
    assert_eq!((s, parsed(&b)), (200, json!({"result": true})));
    // strict-builtin-errors: undefined (so the default) without it, OPA's 500 with it.
    expect(
        a,
        "GET",
        "/v1/data/testmod/strict",
        "",
        200,
        json!({"result": false}),
    )
    .await;
    let (s, b) = req(
        a,
        "GET",
        "/v1/data/testmod/strict?strict-builtin-errors",
        "",
    )
    .await;
    assert_eq!(s, 500, "{b}");
    let b = parsed(&b);
    assert_eq!(
        (b["code"].clone(), b["message"].clone()),
        (
            json!("internal_error"),
            json!("error(s) occurred while evaluating query")
        )
    );
    assert_eq!(b["errors"].as_array().map(Vec::len), Some(1), "{b}");
    // An operator on the wrong types is a builtin error too: undefined without the flag (the
    // default answers), OPA's 500 with it.
    expect(
        a,
        "POST",
        "/v1/data/testmod/typed",
        r#"{"input": {"n": "1"}}"#,
        200,
        json!({"result": "default"}),
    )
    .await;
    expect(
        a,
        "POST",
        "/v1/data/testmod/typed",
        r#"{"input": {"n": 1}}"#,
        200,
        json!({"result": "sum"}),
    )
    .await;
    let (s, b) = req(
        a,
        "POST",
        "/v1/data/testmod/typed?strict-builtin-errors",
        r#"{"input": {"n": "1"}}"#,
    )
    .await;
    assert_eq!(s, 500, "{b}");
    assert_eq!(parsed(&b)["code"], json!("internal_error"), "{b}");
    // ?pretty indents by two spaces.
    let (_, b) = req(a, "GET", "/v1/data/testmod/p?pretty", "").await;
    assert_eq!(
        b,
        "{\n  \"result\": [\n    1,\n    2,\n    3,\n    4\n  ]\n}"
    );
    // ?metrics with OPA's timer names; ?provenance with the build and bundles.
    let (_, b) = req(
        a,
        "POST",
        "/v1/data/x?metrics&provenance",
        r#"{"input": 1}"#,
    )
    .await;
    let b = parsed(&b);
    for timer in [
        "timer_rego_query_eval_ns",
        "timer_server_handler_ns",
        "timer_rego_input_parse_ns",
    ] {
        assert!(b["metrics"][timer].is_u64(), "{timer}: {b}");
    }
    assert_eq!(b["provenance"]["version"], env!("CARGO_PKG_VERSION"));
    for field in ["build_commit", "build_timestamp", "build_hostname"] {
        assert!(b["provenance"][field].is_string(), "{b}");
    }
    // ?partial, ?explain and ?instrument change nothing.
    expect(
        a,
        "POST",
        "/v1/data/testmod/gt1?partial&explain=full",
        r#"{"input": {"req1": 2}}"#,
        200,
        json!({"result": true}),
    )
    .await;
    // A method the path does not have: 405 with an empty body.
    let (s, b) = req(a, "POST", "/v1/policies", "").await;
    assert_eq!((s, b.as_str()), (405, ""));
    server.stop().await;
}

#[tokio::test]
async fn v0_and_the_default_decision_answer_bare_values() {
    let main = "package system\n\nmain := data.testmod.gt1\n";
    let server = TestServer::start(Spec {
        policies: vec![("test.rego", RULES)],
        ..Default::default()
    })
    .await;
    let a = server.http_addr;
    let (s, b) = req(a, "POST", "/v0/data/testmod/gt1", r#"{"req1": 2}"#).await;
    assert_eq!((s, b.as_str()), (200, "true"));
    expect(
        a,
        "POST",
        "/v0/data/testmod/gt1",
        r#"{"req1": 0}"#,
        404,
        json!({"code": "undefined_document", "message": "document undefined: data.testmod.gt1"}),
    )
    .await;
    expect(
        a,
        "POST",
        "/v0/data/nothing/here",
        "{}",
        404,
        json!({"code": "undefined_document", "message": "document missing: data.nothing.here"}),
    )
    .await;
    expect(
        a,
        "POST",
        "/",
        r#"{"req1": 2}"#,
        404,
        json!({"code": "undefined_document", "message": "document missing: data.system.main"}),
    )
    .await;
    server.stop().await;

    let server = TestServer::start(Spec {
        policies: vec![("test.rego", RULES), ("main.rego", main)],
        ..Default::default()
    })
    .await;
    let (s, b) = req(server.http_addr, "POST", "/", r#"{"req1": 2}"#).await;
    assert_eq!((s, b.as_str()), (200, "true"));
    let (s, b) = call(
        server.http_addr,
        "POST",
        "/",
        &[("content-type", "application/yaml")],
        "req1: 2\n",
    )
    .await;
    assert_eq!((s, b.as_str()), (200, "true"));
    server.stop().await;

    // default_decision moves it.
    let server = TestServer::start(Spec {
        policies: vec![("test.rego", RULES)],
        config: "default_decision: /testmod/gt1\n",
        ..Default::default()
    })
    .await;
    let (s, b) = req(server.http_addr, "POST", "/", r#"{"req1": 5}"#).await;
    assert_eq!((s, b.as_str()), (200, "true"));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The Policy API.

#[tokio::test]
async fn policies_are_listed_read_written_and_deleted_as_opa() {
    let server = writable(None).await;
    let a = server.http_addr;
    let file_id = server.dir().join("authz.rego").display().to_string();
    let ast = |parts: &[&str]| {
        let mut path = vec![json!({"type": "var", "value": "data"})];
        path.extend(parts.iter().map(|p| json!({"type": "string", "value": p})));
        json!({"package": {"path": path}})
    };
    expect(
        a,
        "GET",
        "/v1/policies",
        "",
        200,
        json!({"result": [{"id": file_id, "raw": OPEN_AUTHZ, "ast": ast(&["system", "authz"])}]}),
    )
    .await;
    let module = "package example\n\nallow if input.x == 1\n";
    expect(a, "PUT", "/v1/policies/ex/one", module, 200, json!({})).await;
    expect(
        a,
        "GET",
        "/v1/policies/ex/one",
        "",
        200,
        json!({"result": {"id": "ex/one", "raw": module, "ast": ast(&["example"])}}),
    )
    .await;
    expect(
        a,
        "POST",
        "/v1/data/example/allow",
        r#"{"input": {"x": 1}}"#,
        200,
        json!({"result": true}),
    )
    .await;
    expect(
        a,
        "GET",
        "/v1/policies/nope",
        "",
        404,
        json!({"code": "resource_not_found", "message": "storage_not_found_error: policy id \"nope\""}),
    )
    .await;
    // A parse error: OPA's 400 with the location in the module.
    expect(
        a,
        "PUT",
        "/v1/policies/bad",
        "package bad\n\nallow if {\n  input.x ==\n}\n",
        400,
        json!({"code": "invalid_parameter", "message": "error(s) occurred while compiling module(s)",
               "errors": [{"code": "rego_parse_error", "message": "expecting expression",
                           "location": {"file": "bad", "row": 5, "col": 1}}]}),
    )
    .await;
    // A compile error (unsafe variable) is refused too; the old policies keep serving.
    let (s, b) = req(
        a,
        "PUT",
        "/v1/policies/ex/one",
        "package example\n\nallow if y\n",
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let b = parsed(&b);
    assert_eq!(b["errors"][0]["code"], "rego_unsafe_var_error", "{b}");
    assert_eq!(b["errors"][0]["location"]["file"], "ex/one", "{b}");
    expect(
        a,
        "POST",
        "/v1/data/example/allow",
        r#"{"input": {"x": 1}}"#,
        200,
        json!({"result": true}),
    )
    .await;
    expect(
        a,
        "PUT",
        "/v1/policies/empty",
        "# nothing\n\n",
        400,
        json!({"code": "invalid_parameter", "message": "empty module"}),
    )
    .await;
    // ?metrics
    let (s, b) = req(a, "PUT", "/v1/policies/ex/one?metrics", module).await;
    assert_eq!(s, 200);
    assert!(
        parsed(&b)["metrics"]["timer_rego_module_compile_ns"].is_u64(),
        "{b}"
    );
    expect(a, "DELETE", "/v1/policies/ex/one", "", 200, json!({})).await;
    expect(a, "GET", "/v1/data/example/allow", "", 200, json!({})).await;
    expect(
        a,
        "DELETE",
        "/v1/policies/ex/one",
        "",
        404,
        json!({"code": "resource_not_found", "message": "storage_not_found_error: policy id \"ex/one\""}),
    )
    .await;
    // A file module is replaced by a write of the same id, and only the write can be deleted.
    let shadow = "package system.authz\n\nallow := true\n";
    let file_path = format!("/v1/policies/{}", file_id.replace('/', "%2F"));
    let (s, _) = req(a, "PUT", &file_path, shadow).await;
    assert_eq!(s, 200);
    expect(
        a,
        "GET",
        &file_path,
        "",
        200,
        json!({"result": {"id": file_id, "raw": shadow, "ast": ast(&["system", "authz"])}}),
    )
    .await;
    expect(a, "DELETE", &file_path, "", 200, json!({})).await;
    let (s, b) = req(a, "DELETE", &file_path, "").await;
    assert_eq!(s, 400, "{b}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The Query API.

#[tokio::test]
async fn queries_answer_bindings_as_opa() {
    let server = TestServer::start(Spec {
        data: Some(json!({"x": [1, 2, 3, 4]})),
        ..Default::default()
    })
    .await;
    let a = server.http_addr;
    expect(
        a,
        "GET",
        "/v1/query?q=data.x[_]%20=%20x",
        "",
        200,
        json!({"result": [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]}),
    )
    .await;
    expect(a, "GET", "/v1/query?q=a=1%3Bb=2%3Ba=b", "", 200, json!({})).await;
    expect(
        a,
        "GET",
        "/v1/query?q=x=1",
        "",
        200,
        json!({"result": [{"x": 1}]}),
    )
    .await;
    expect(
        a,
        "GET",
        "/v1/query?q=1%20==%201",
        "",
        200,
        json!({"result": [{}]}),
    )
    .await;
    expect(
        a,
        "GET",
        "/v1/query",
        "",
        400,
        json!({"code": "invalid_parameter", "message": "missing parameter 'q'"}),
    )
    .await;
    let (s, b) = req(a, "GET", "/v1/query?q=x", "").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        parsed(&b)["message"],
        "error(s) occurred while compiling query"
    );
    let (s, b) = req(a, "GET", "/v1/query?q=data.x%20==", "").await;
    assert_eq!(s, 400, "{b}");
    let b = parsed(&b);
    assert_eq!(b["message"], "error(s) occurred while parsing query");
    assert_eq!(b["errors"][0]["code"], "rego_parse_error");
    expect(
        a,
        "POST",
        "/v1/query",
        r#"{"query": "y := input.n + 1", "input": {"n": 41}}"#,
        200,
        json!({"result": [{"y": 42}]}),
    )
    .await;
    let (s, b) = req(a, "POST", "/v1/query", "{").await;
    assert_eq!(s, 400);
    assert!(
        parsed(&b)["message"]
            .as_str()
            .unwrap()
            .starts_with("error(s) occurred while decoding request: ")
    );
    let (_, b) = req(a, "GET", "/v1/query?q=x=1&metrics", "").await;
    assert!(
        parsed(&b)["metrics"]["timer_rego_query_eval_ns"].is_u64(),
        "{b}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The Config and Status APIs.

#[tokio::test]
async fn config_is_answered_without_secrets_and_status_with_plugins() {
    let config = r#"
labels: {region: west}
services:
  acmecorp:
    url: https://example.com/control-plane-api/v1
    credentials: {bearer: {token: "s3cret-bearer"}}
keys:
  global_key: {algorithm: HS256, key: "s3cret-key"}
decision_logs: {console: true}
"#;
    let server = TestServer::start(Spec {
        config,
        ..Default::default()
    })
    .await;
    let a = server.http_addr;
    let (s, b) = req(a, "GET", "/v1/config", "").await;
    assert_eq!(s, 200);
    assert!(!b.contains("s3cret"), "{b}");
    let got = parsed(&b);
    let id = got["result"]["labels"]["id"].clone();
    assert!(id.as_str().is_some_and(|i| i.len() == 36), "{got}");
    assert_eq!(
        got,
        json!({"result": {
            "labels": {"id": id, "version": env!("CARGO_PKG_VERSION"), "region": "west"},
            "keys": {"global_key": {"algorithm": "HS256"}},
            "services": {"acmecorp": {"url": "https://example.com/control-plane-api/v1"}},
            "decision_logs": {"console": true},
            "default_authorization_decision": "/system/authz/allow",
            "default_decision": "/system/main",
        }})
    );
    expect(
        a,
        "GET",
        "/v1/status",
        "",
        200,
        json!({"result": {
            "labels": {"id": id, "version": env!("CARGO_PKG_VERSION"), "region": "west"},
            "bundles": {},
            "plugins": {"decision_logs": {"state": "OK"}, "envoy_ext_authz_grpc": {"state": "OK"}},
        }}),
    )
    .await;
    server.stop().await;
}

/// `--authentication=tls` without the certificate flags is refused at start-up, naming them.
#[test]
fn tls_authentication_without_certificates_is_refused_at_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--authentication=tls", "--addr", "127.0.0.1:0"])
        .args(["--set", "plugins.envoy_ext_authz_grpc.addr=127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--authentication=tls") && err.contains("--tls-cert-file"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--authorization=everything"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
