use super::config::MAX_WITH_BODY;
use super::*;

fn parts(method: &str, uri: &str, headers: &[(&str, &[u8])]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, HeaderValue::from_bytes(v).expect("test header value"));
    }
    b.body(()).expect("request").into_parts().0
}

fn cfg(mode: Mode) -> HttpAuthzConfig {
    HttpAuthzConfig {
        mode,
        ..Default::default()
    }
}

fn refused(r: Result<Original, Refusal>) -> Refusal {
    match r {
        Ok(o) => panic!("expected a refusal, got {o:?}"),
        Err(e) => e,
    }
}

#[test]
fn nginx_reads_the_original_uri_method_and_host() {
    let p = parts(
        "GET",
        "/auth",
        &[
            ("host", b"portcullis:9192"),
            ("x-original-uri", b"/api/v1?x=1"),
            ("x-original-method", b"DELETE"),
            ("x-original-host", b"app.example.com"),
            ("x-forwarded-proto", b"https"),
        ],
    );
    let o = original(&p, &cfg(Mode::Nginx)).expect("read");
    assert_eq!(o.mode, Mode::Nginx);
    assert_eq!(o.method, "DELETE");
    assert_eq!(o.target, "/api/v1?x=1");
    assert_eq!(o.host, "app.example.com");
    assert_eq!(o.scheme, "https");
}

#[test]
fn nginx_without_the_original_uri_is_denied_not_allowed() {
    let p = parts("GET", "/auth", &[("host", b"x")]);
    let r = refused(original(&p, &cfg(Mode::Nginx)));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.message.contains("x-original-uri"), "{}", r.message);
}

#[test]
fn a_forwarding_header_sent_twice_is_refused() {
    let p = parts(
        "GET",
        "/",
        &[
            ("x-forwarded-method", b"GET"),
            ("x-forwarded-uri", b"/public"),
            ("x-forwarded-uri", b"/admin"),
        ],
    );
    let r = refused(original(&p, &cfg(Mode::ForwardAuth)));
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message.contains("more than once"), "{}", r.message);
    let p = parts(
        "GET",
        "/auth",
        &[("x-original-uri", b"/a"), ("x-original-uri", b"/b")],
    );
    refused(original(&p, &cfg(Mode::Nginx)));
}

#[test]
fn auto_refuses_both_families_and_picks_by_the_one_present() {
    let both = parts(
        "GET",
        "/auth",
        &[
            ("x-original-uri", b"/a"),
            ("x-forwarded-uri", b"/b"),
            ("x-forwarded-method", b"GET"),
        ],
    );
    let r = refused(original(&both, &cfg(Mode::Auto)));
    assert!(r.message.contains("ambiguous"), "{}", r.message);
    let fwd = parts(
        "GET",
        "/auth",
        &[("x-forwarded-uri", b"/b"), ("x-forwarded-method", b"PUT")],
    );
    let o = original(&fwd, &cfg(Mode::Auto)).expect("forward_auth");
    assert_eq!(
        (o.mode, o.method.as_str(), o.target.as_str()),
        (Mode::ForwardAuth, "PUT", "/b")
    );
    let ng = parts("GET", "/auth", &[("x-original-uri", b"/a")]);
    assert_eq!(
        original(&ng, &cfg(Mode::Auto)).expect("nginx").mode,
        Mode::Nginx
    );
    let env = parts("POST", "/a/b?c=d", &[("host", b"h")]);
    let o = original(&env, &cfg(Mode::Auto)).expect("envoy");
    assert_eq!(
        (o.mode, o.method.as_str(), o.target.as_str()),
        (Mode::Envoy, "POST", "/a/b?c=d")
    );
}

#[test]
fn forward_auth_needs_method_and_uri() {
    let p = parts("GET", "/", &[("x-forwarded-uri", b"/x")]);
    refused(original(&p, &cfg(Mode::ForwardAuth)));
    let p = parts("GET", "/", &[("x-forwarded-method", b"GET")]);
    refused(original(&p, &cfg(Mode::ForwardAuth)));
}

#[test]
fn paths_a_proxy_would_normalise_are_refused() {
    for bad in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public%2F..%2Fadmin",
        "/./admin",
        "//admin",
        "/a//b",
        "http://evil.example/admin",
        "admin",
        "*",
        "/a b",
        "/a#frag",
        "/caf\u{e9}",
        "/bad%zz",
    ] {
        let p = parts("GET", "/auth", &[("x-original-uri", bad.as_bytes())]);
        let r = refused(original(&p, &cfg(Mode::Nginx)));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.message);
    }
    // A trailing slash and dots inside a segment are fine.
    for good in ["/", "/api/", "/a/..b/c.", "/a?x=../y"] {
        let p = parts("GET", "/auth", &[("x-original-uri", good.as_bytes())]);
        original(&p, &cfg(Mode::Nginx)).unwrap_or_else(|e| panic!("{good}: {e:?}"));
    }
}

#[test]
fn non_ascii_forwarding_headers_and_bad_methods_are_refused() {
    let p = parts("GET", "/auth", &[("x-original-uri", b"/a\xff")]);
    refused(original(&p, &cfg(Mode::Nginx)));
    let p = parts(
        "GET",
        "/auth",
        &[("x-original-uri", b"/a"), ("x-original-method", b"GE T")],
    );
    refused(original(&p, &cfg(Mode::Nginx)));
    let p = parts(
        "GET",
        "/auth",
        &[("x-original-uri", b"/a"), ("x-forwarded-proto", b"gopher")],
    );
    refused(original(&p, &cfg(Mode::Nginx)));
}

#[test]
fn envoy_mode_strips_the_path_prefix_and_refuses_what_is_outside_it() {
    let c = HttpAuthzConfig {
        mode: Mode::Envoy,
        path_prefix: "/ext_authz".into(),
        ..Default::default()
    };
    let o = original(&parts("GET", "/ext_authz/api?q=1", &[]), &c).expect("under prefix");
    assert_eq!(o.target, "/api?q=1");
    let o = original(&parts("GET", "/ext_authz", &[]), &c).expect("the prefix alone");
    assert_eq!(o.target, "/");
    let o = original(&parts("GET", "/ext_authz?q", &[]), &c).expect("prefix and query");
    assert_eq!(o.target, "/?q");
    let r = refused(original(&parts("GET", "/ext_authzX/api", &[]), &c));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = refused(original(&parts("GET", "/other", &[]), &c));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = refused(original(&parts("GET", "http://h/ext_authz/x", &[]), &c));
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[test]
fn the_check_request_has_the_original_and_no_hop_by_hop_headers() {
    let p = parts(
        "GET",
        "/auth",
        &[
            ("host", b"authz"),
            ("x-original-uri", b"/a?b=c"),
            ("x-original-method", b"POST"),
            ("connection", b"keep-alive"),
            ("x-multi", b"1"),
            ("x-multi", b"2"),
        ],
    );
    let peer: SocketAddr = "127.0.0.5:4000".parse().expect("addr");
    let check = to_check(&p, peer, None, &cfg(Mode::Nginx)).expect("check");
    let attrs = check.attributes.expect("attributes");
    let http = attrs.request.and_then(|r| r.http).expect("http");
    assert_eq!(http.method, "POST");
    assert_eq!(http.path, "/a?b=c");
    assert_eq!(http.host, "authz");
    assert_eq!(http.headers.get("x-multi").map(String::as_str), Some("1,2"));
    assert_eq!(
        http.headers.get(":path").map(String::as_str),
        Some("/a?b=c")
    );
    assert!(!http.headers.contains_key("connection"));
    let src = attrs.source.and_then(|s| s.address).and_then(|a| a.address);
    let Some(address::Address::SocketAddress(sa)) = src else {
        panic!("no source address");
    };
    assert_eq!(sa.address, "127.0.0.5");
}

#[test]
fn headers_over_the_limit_are_431() {
    let big = vec![b'a'; 70 * 1024];
    let p = parts("GET", "/auth", &[("x-original-uri", b"/"), ("x-big", &big)]);
    let r = to_check(
        &p,
        "127.0.0.1:1".parse().expect("addr"),
        None,
        &cfg(Mode::Nginx),
    )
    .expect_err("too large");
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn config_refuses_bad_values_by_key() {
    let bad = |c: HttpAuthzConfig| c.validate().expect_err("refused").key;
    let base = HttpAuthzConfig::default();
    assert_eq!(
        bad(HttpAuthzConfig {
            addr: "unix:///tmp/x.sock".into(),
            ..base.clone()
        }),
        "addr"
    );
    for p in ["ext", "/ext/", "/a/../b", "/a?x", "/a//b"] {
        assert_eq!(
            bad(HttpAuthzConfig {
                path_prefix: p.into(),
                ..base.clone()
            }),
            "path_prefix",
            "{p}"
        );
    }
    assert_eq!(
        bad(HttpAuthzConfig {
            with_body: Some(MAX_WITH_BODY + 1),
            ..base.clone()
        }),
        "with_body"
    );
    for h in ["bad header", "host", "connection"] {
        assert_eq!(
            bad(HttpAuthzConfig {
                original_uri_header: h.into(),
                ..base.clone()
            }),
            "original_uri_header"
        );
    }
    base.validate().expect("defaults are valid");
}

#[test]
fn a_denial_keeps_its_status_body_and_headers_and_an_error_says_only_its_reason() {
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeader;
    use envoy_types::pb::envoy::service::auth::v3::DeniedHttpResponse;
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::google::rpc::Status;
    let resp = CheckResponse {
        status: Some(Status {
            code: 7,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: 429 }),
            headers: vec![
                HeaderValueOption {
                    header: Some(PbHeader {
                        key: "x-reason".into(),
                        value: "slow down".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                HeaderValueOption {
                    header: Some(PbHeader {
                        key: "transfer-encoding".into(),
                        value: "chunked".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            body: "too many".into(),
        })),
        ..Default::default()
    };
    let out = answer(Ok(resp));
    assert_eq!(out.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(out.headers()["x-reason"], "slow down");
    assert!(!out.headers().contains_key("transfer-encoding"));
    let err = answer(Err(CheckError::Decision(
        super::super::decision::DecisionError::Undefined,
    )));
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

fn routes(list: &[(&str, Mode)]) -> HttpAuthzConfig {
    HttpAuthzConfig {
        routes: list
            .iter()
            .map(|(p, m)| config::Route {
                path_prefix: (*p).into(),
                mode: *m,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn routes_pick_the_mode_by_the_longest_prefix_and_404_the_rest() {
    let c = routes(&[
        ("/nginx", Mode::Nginx),
        ("/fwd", Mode::ForwardAuth),
        ("/fwd/nginx", Mode::Nginx),
        ("/ext_authz", Mode::Envoy),
    ]);
    c.validate().expect("valid");
    let nginx = [("x-original-uri", b"/api?x=1" as &[u8])];
    let o = original(&parts("GET", "/nginx", &nginx), &c).expect("nginx");
    assert_eq!((o.mode, o.target.as_str()), (Mode::Nginx, "/api?x=1"));
    let o = original(&parts("GET", "/fwd/nginx/deeper", &nginx), &c).expect("longest");
    assert_eq!(o.mode, Mode::Nginx);
    let fwd = [
        ("x-forwarded-uri", b"/orders" as &[u8]),
        ("x-forwarded-method", b"POST"),
    ];
    let o = original(&parts("GET", "/fwd", &fwd), &c).expect("forward auth");
    assert_eq!((o.mode, o.method.as_str()), (Mode::ForwardAuth, "POST"));
    // Envoy's prefix is stripped; the rest is the original path.
    let o = original(&parts("DELETE", "/ext_authz/orders/7?a=b", &[]), &c).expect("envoy");
    assert_eq!((o.mode, o.target.as_str()), (Mode::Envoy, "/orders/7?a=b"));
    // A route's mode is its own: forward-auth headers on the NGINX route are not read.
    let r = refused(original(&parts("GET", "/nginx", &fwd), &c));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Paths under no route, and look-alikes of a prefix, are 404.
    for path in ["/", "/nginxx", "/other/nginx", "/NGINX", "/%6eginx"] {
        let r = refused(original(&parts("GET", path, &nginx), &c));
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[test]
fn routes_that_cannot_be_served_safely_are_refused_by_key() {
    let err = |c: HttpAuthzConfig| c.validate().unwrap_err();
    for bad in [
        "", "nginx", "/", "/nginx/", "/a//b", "/a/../b", "/a?b", "/a%2f",
    ] {
        let e = err(routes(&[("/ok", Mode::Nginx), (bad, Mode::Nginx)]));
        assert_eq!(e.key, "routes[1].path_prefix", "{bad:?}: {e}");
    }
    let e = err(routes(&[("/a", Mode::Nginx), ("/a", Mode::ForwardAuth)]));
    assert_eq!(e.key, "routes[1].path_prefix");
    assert!(e.message.contains("routes[0]"), "{e}");
    // Below an envoy (or auto) route the client writes the path: it could pick the NGINX
    // route and its trusted X-Original-URI.
    for mode in [Mode::Envoy, Mode::Auto] {
        let e = err(routes(&[("/ext", mode), ("/ext/nginx", Mode::Nginx)]));
        assert_eq!(e.key, "routes[1].path_prefix", "{e}");
        assert!(e.message.contains("a client could reach"), "{e}");
    }
    // Below an NGINX route is fine: the proxy, not the client, writes that path.
    routes(&[("/nginx", Mode::Nginx), ("/nginx/ext", Mode::Envoy)])
        .validate()
        .expect("nested under nginx");
    let mut c = routes(&[("/a", Mode::Nginx)]);
    c.path_prefix = "/b".into();
    assert_eq!(err(c).key, "path_prefix");
    let mut c = routes(&[("/a", Mode::Nginx)]);
    c.mode = Mode::Envoy;
    assert_eq!(err(c).key, "mode");
}
