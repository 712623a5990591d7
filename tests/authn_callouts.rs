//! Authentication by call-out, through the Check path: OAuth 2.0 token introspection (RFC 7662)
//! against an introspection endpoint written here (axum on 127.0.0.1:0) that checks the
//! client's authentication as an authorization server does.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value as Json, json};
use support::authn::*;

const CLIENT_ID: &str = "portcullis client";
const CLIENT_SECRET: &str = "s3cret:with&odd=chars";

/// How the endpoint misbehaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Normal,
    Hang,
    Status500,
    Garbage,
    NotAnObject,
    Huge,
    /// A redirect to `redirect_to`.
    Redirect,
}

struct Endpoint {
    /// token → the answer when the client authenticated correctly.
    answers: HashMap<String, Json>,
    mode: Mode,
    /// Delay before answering (to hold concurrent calls in flight).
    delay: Duration,
    redirect_to: String,
    /// `basic` or `post`: how the client must authenticate.
    auth: &'static str,
    /// The form fields of the last call.
    last_form: Vec<(String, String)>,
}

/// Calls being answered now, and the most there ever were at once.
#[derive(Clone, Default)]
struct Gauge(Arc<Mutex<(u64, u64)>>);

/// One call counted in a [`Gauge`] for as long as it is answered (also when the caller goes
/// away).
struct InFlight(Gauge);

impl Gauge {
    fn enter(&self) -> InFlight {
        let mut g = self.0.lock().unwrap();
        g.0 += 1;
        g.1 = g.1.max(g.0);
        InFlight(self.clone())
    }
    fn now(&self) -> u64 {
        self.0.lock().unwrap().0
    }
    fn max(&self) -> u64 {
        self.0.lock().unwrap().1
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        (self.0).0.lock().unwrap().0 -= 1;
    }
}

/// An RFC 7662 introspection endpoint that counts its calls.
struct Introspection {
    addr: SocketAddr,
    state: Arc<Mutex<Endpoint>>,
    calls: Arc<AtomicU64>,
    in_flight: Gauge,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type S = (Arc<Mutex<Endpoint>>, Arc<AtomicU64>, Gauge);

async fn introspect(
    State((st, calls, gauge)): State<S>,
    headers: HeaderMap,
    body: String,
) -> Response {
    calls.fetch_add(1, Ordering::SeqCst);
    let _in_flight = gauge.enter();
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (mode, delay, auth, redirect_to) = {
        let mut s = st.lock().unwrap();
        s.last_form = form.clone();
        (s.mode, s.delay, s.auth, s.redirect_to.clone())
    };
    tokio::time::sleep(delay).await;
    match mode {
        Mode::Hang => std::future::pending::<()>().await,
        Mode::Status500 => return (StatusCode::INTERNAL_SERVER_ERROR, "{}").into_response(),
        Mode::Garbage => return (StatusCode::OK, "<html>not json").into_response(),
        Mode::NotAnObject => return (StatusCode::OK, "[{\"active\": true}]").into_response(),
        Mode::Huge => {
            let pad = "x".repeat(100 * 1024);
            return axum::Json(json!({"active": true, "sub": "big", "pad": pad})).into_response();
        }
        Mode::Redirect => {
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", redirect_to.as_str())],
            )
                .into_response();
        }
        Mode::Normal => {}
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return (StatusCode::BAD_REQUEST, "form expected").into_response();
    }
    // Client authentication, as an authorization server checks it (RFC 6749 §2.3.1).
    let authenticated = match auth {
        "basic" => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                let (u, p) = s.split_once(':')?;
                let dec = |x: &str| {
                    form_urlencoded::parse(format!("x={x}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                };
                Some((dec(u)?, dec(p)?))
            })
            .is_some_and(|(u, p)| u == CLIENT_ID && p == CLIENT_SECRET),
        _ => {
            field("client_id").as_deref() == Some(CLIENT_ID)
                && field("client_secret").as_deref() == Some(CLIENT_SECRET)
                && headers.get("authorization").is_none()
        }
    };
    if !authenticated {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let token = field("token").unwrap_or_default();
    let answer = st
        .lock()
        .unwrap()
        .answers
        .get(&token)
        .cloned()
        .unwrap_or_else(|| json!({"active": false}));
    axum::Json(answer).into_response()
}

impl Introspection {
    async fn start(auth: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Endpoint {
            answers: HashMap::new(),
            mode: Mode::Normal,
            delay: Duration::ZERO,
            redirect_to: String::new(),
            auth,
            last_form: Vec::new(),
        }));
        let calls = Arc::new(AtomicU64::new(0));
        let in_flight = Gauge::default();
        let app = axum::Router::new()
            .route("/introspect", axum::routing::post(introspect))
            .with_state((state.clone(), calls.clone(), in_flight.clone()));
        let stop = support::server::serve_router(listener, app);
        Self {
            addr,
            state,
            calls,
            in_flight,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    fn answer(&self, token: &str, answer: Json) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(token.into(), answer);
    }

    fn set(&self, f: impl FnOnce(&mut Endpoint)) {
        f(&mut self.state.lock().unwrap());
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn last_field(&self, name: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .last_form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn active(sub: &str) -> Json {
    json!({"active": true, "sub": sub, "client_id": "web-app", "username": "ann",
           "scope": "orders:read orders:write", "iss": "https://as.example", "aud": ["orders"],
           "exp": now() + 600, "nbf": now() - 10, "token_type": "Bearer"})
}

fn env(secret: &'static str) -> impl Fn(&str) -> Option<String> {
    move |k: &str| (k == "OAUTH_SECRET").then(|| secret.to_string())
}

fn oauth_config(url: &str, auth: &str, extra: &str) -> String {
    format!(
        r#"authentication:
  policies:
    - name: api
      methods: [oauth]
      oauth:
        introspection_url: {url}
        client_id: "{CLIENT_ID}"
        client_secret_env: OAUTH_SECRET
        auth: {auth}
        timeout_ms: 500
        {extra}
"#
    )
}

async fn oauth_server(endpoint: &Introspection, auth: &str, extra: &str) -> Portcullis {
    Portcullis::start_with_env(
        &oauth_config(&endpoint.url(), auth, extra),
        &env(CLIENT_SECRET),
    )
    .await
}

/// The audit events and identity never carry the token or the client secret.
fn assert_no_secrets(p: &Portcullis, token: &str) {
    for e in p.audit.events() {
        let text = e.to_string();
        assert!(!text.contains(token), "token in {text}");
        assert!(!text.contains(CLIENT_SECRET), "secret in {text}");
    }
}

#[tokio::test]
async fn oauth_active_token_is_allowed_with_its_identity() {
    for auth in ["basic", "post"] {
        let ep = Introspection::start(auth).await;
        ep.answer("tok-active", active("user-1"));
        let p = oauth_server(
            &ep,
            auth,
            "issuer: https://as.example\n        audiences: [orders]",
        )
        .await;
        let a = p.check(req("/v1/x").bearer("tok-active")).await;
        assert!(a.allowed(), "{auth}: {}", a.json);
        let id = a.identity();
        assert_eq!(id["method"], "oauth");
        assert_eq!(id["subject"], "user-1");
        assert_eq!(id["issuer"], "https://as.example");
        assert_eq!(id["scopes"], json!(["orders:read", "orders:write"]));
        assert_eq!(id["claims"]["client_id"], "web-app");
        assert_eq!(id["claims"]["username"], "ann");
        assert_eq!(ep.last_field("token").as_deref(), Some("tok-active"));
        assert_eq!(
            ep.last_field("token_type_hint").as_deref(),
            Some("access_token")
        );
        // The token never reaches the decision input's headers as sent.
        assert_no_secrets(&p, "tok-active");
    }
}

#[tokio::test]
async fn oauth_subject_falls_back_to_username_then_client_id() {
    let ep = Introspection::start("basic").await;
    ep.answer(
        "u",
        json!({"active": true, "username": "ann", "client_id": "c"}),
    );
    ep.answer("c", json!({"active": true, "client_id": "machine"}));
    ep.answer("none", json!({"active": true, "scope": "a"}));
    let p = oauth_server(&ep, "basic", "").await;
    let a = p.check(req("/x").bearer("u")).await;
    assert_eq!(a.identity()["subject"], "ann", "{}", a.json);
    let a = p.check(req("/x").bearer("c")).await;
    assert_eq!(a.identity()["subject"], "machine", "{}", a.json);
    p.check(req("/x").bearer("none"))
        .await
        .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn oauth_inactive_and_unknown_tokens_are_refused() {
    let ep = Introspection::start("basic").await;
    ep.answer("tok-inactive", json!({"active": false, "sub": "user-1"}));
    // `active` must be the boolean true, not something that looks like it.
    ep.answer("tok-string", json!({"active": "true", "sub": "user-1"}));
    ep.answer("tok-one", json!({"active": 1, "sub": "user-1"}));
    let p = oauth_server(&ep, "basic", "").await;
    for t in ["tok-inactive", "tok-string", "tok-one", "never-issued"] {
        p.check(req("/x").bearer(t))
            .await
            .assert_refused(401, "invalid_token");
    }
    p.check(req("/x"))
        .await
        .assert_refused(401, "missing_token");
    let events = p.audit.events();
    assert!(
        events
            .iter()
            .any(|e| e["method"] == "oauth" && e["reason"] == "token is not active"),
        "{events:?}"
    );
    assert_no_secrets(&p, "tok-inactive");
}

#[tokio::test]
async fn oauth_wrong_client_secret_is_refused_and_never_logged() {
    let ep = Introspection::start("basic").await;
    ep.answer("tok-active", active("user-1"));
    let p = Portcullis::start_with_env(
        &oauth_config(&ep.url(), "basic", ""),
        &env("not-the-secret"),
    )
    .await;
    p.check(req("/x").bearer("tok-active"))
        .await
        .assert_refused(401, "invalid_token");
    assert_eq!(ep.calls(), 1);
    let events = p.audit.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().unwrap_or("").contains("HTTP 401")),
        "{events:?}"
    );
    for e in &events {
        assert!(!e.to_string().contains("not-the-secret"), "{e}");
    }
    assert_no_secrets(&p, "tok-active");
    // Client auth by form fields against an endpoint that wants Basic: refused too.
    let p = oauth_server(&ep, "post", "").await;
    p.check(req("/x").bearer("tok-active"))
        .await
        .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn oauth_endpoint_failures_fail_closed() {
    let ep = Introspection::start("basic").await;
    ep.answer("tok-active", active("user-1"));
    let p = oauth_server(&ep, "basic", "").await;
    for mode in [
        Mode::Status500,
        Mode::Garbage,
        Mode::NotAnObject,
        Mode::Huge,
        Mode::Hang,
    ] {
        ep.set(|s| s.mode = mode);
        let started = std::time::Instant::now();
        p.check(req("/x").bearer("tok-active"))
            .await
            .assert_refused(401, "invalid_token");
        // The 500 ms timeout bounds a hanging endpoint.
        assert!(started.elapsed() < Duration::from_secs(3), "{mode:?}");
    }
    // Failures are not cached: every Check asks again, and a recovered endpoint is used.
    let before = ep.calls();
    ep.set(|s| s.mode = Mode::Normal);
    let a = p.check(req("/x").bearer("tok-active")).await;
    assert!(a.allowed(), "{}", a.json);
    assert_eq!(ep.calls(), before + 1);
    let reasons: Vec<String> = p
        .audit
        .events()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("HTTP 500")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("timed out")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("larger than")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().all(|r| !r.contains("127.0.0.1")),
        "{reasons:?}"
    );
    assert_no_secrets(&p, "tok-active");
}

#[tokio::test]
async fn oauth_endpoint_down_fails_closed() {
    // A port that nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = Portcullis::start_with_env(
        &oauth_config(&format!("http://{closed}/introspect"), "basic", ""),
        &env(CLIENT_SECRET),
    )
    .await;
    p.check(req("/x").bearer("tok"))
        .await
        .assert_refused(401, "invalid_token");
    let events = p.audit.events();
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .unwrap_or("")
            .contains("connection failed")),
        "{events:?}"
    );
}

#[tokio::test]
async fn oauth_redirects_are_not_followed() {
    // The endpoint redirects to one that would vouch for any token.
    let evil = Introspection::start("basic").await;
    evil.answer("tok", active("mallory"));
    let ep = Introspection::start("basic").await;
    ep.set(|s| {
        s.mode = Mode::Redirect;
        s.redirect_to = evil.url();
    });
    let p = oauth_server(&ep, "basic", "").await;
    p.check(req("/x").bearer("tok"))
        .await
        .assert_refused(401, "invalid_token");
    assert_eq!(evil.calls(), 0, "the redirect was followed");
}

#[tokio::test]
async fn oauth_time_issuer_and_audience_checks() {
    let ep = Introspection::start("basic").await;
    let mut expired = active("u");
    expired["exp"] = json!(now() - 60);
    ep.answer("expired", expired);
    let mut future = active("u");
    future["nbf"] = json!(now() + 600);
    ep.answer("not-yet", future);
    let mut other_iss = active("u");
    other_iss["iss"] = json!("https://evil.example");
    ep.answer("other-iss", other_iss);
    let mut no_iss = active("u");
    no_iss.as_object_mut().unwrap().remove("iss");
    ep.answer("no-iss", no_iss);
    let mut other_aud = active("u");
    other_aud["aud"] = json!("payments");
    ep.answer("other-aud", other_aud);
    let mut bad_exp = active("u");
    bad_exp["exp"] = json!("tomorrow");
    ep.answer("bad-exp", bad_exp);
    ep.answer("good", active("u"));
    let p = oauth_server(
        &ep,
        "basic",
        "issuer: https://as.example\n        audiences: [orders]\n        clock_skew_seconds: 0",
    )
    .await;
    for t in [
        "expired",
        "not-yet",
        "other-iss",
        "no-iss",
        "other-aud",
        "bad-exp",
    ] {
        let a = p.check(req("/x").bearer(t)).await;
        assert!(!a.allowed(), "{t} was allowed");
        a.assert_refused(401, "invalid_token");
    }
    assert!(p.check(req("/x").bearer("good")).await.allowed());
}

#[tokio::test]
async fn oauth_missing_required_scope_is_forbidden() {
    let ep = Introspection::start("basic").await;
    ep.answer("reader", active("u"));
    let mut admin = active("admin");
    admin["scope"] = json!("orders:read orders:write orders:admin");
    ep.answer("admin", admin);
    let p = oauth_server(&ep, "basic", "required_scopes: [orders:admin]").await;
    p.check(req("/x").bearer("reader"))
        .await
        .assert_refused(403, "insufficient_scope");
    assert!(p.check(req("/x").bearer("admin")).await.allowed());
    // The cached answer is checked against the scopes again.
    p.check(req("/x").bearer("reader"))
        .await
        .assert_refused(403, "insufficient_scope");
    assert_eq!(ep.calls(), 2);
}

#[tokio::test]
async fn oauth_answers_are_cached_and_refusals_briefly() {
    let ep = Introspection::start("basic").await;
    ep.answer("tok", active("u"));
    let p = oauth_server(&ep, "basic", "cache_ttl_seconds: 60").await;
    for _ in 0..5 {
        assert!(p.check(req("/x").bearer("tok")).await.allowed());
    }
    assert_eq!(ep.calls(), 1);
    for _ in 0..5 {
        p.check(req("/x").bearer("unknown"))
            .await
            .assert_refused(401, "invalid_token");
    }
    assert_eq!(ep.calls(), 2, "an inactive answer is remembered briefly");
    let authn = p.security.authn.as_ref().unwrap();
    assert_eq!(
        authn
            .metrics()
            .cache_hits(portcullis::telemetry::Method::OAuth),
        8
    );
    assert_eq!(
        authn
            .metrics()
            .cache_misses(portcullis::telemetry::Method::OAuth),
        2
    );
}

#[tokio::test]
async fn oauth_cache_ends_with_the_token() {
    let ep = Introspection::start("basic").await;
    let mut short = active("u");
    short["exp"] = json!(now() + 2);
    ep.answer("short", short);
    let p = oauth_server(
        &ep,
        "basic",
        "cache_ttl_seconds: 600\n        clock_skew_seconds: 0",
    )
    .await;
    assert!(p.check(req("/x").bearer("short")).await.allowed());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    p.check(req("/x").bearer("short"))
        .await
        .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn oauth_concurrent_identical_tokens_make_one_call() {
    let ep = Introspection::start("basic").await;
    ep.answer("tok", active("u"));
    ep.set(|s| s.delay = Duration::from_millis(300));
    let p = Arc::new(oauth_server(&ep, "basic", "").await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.check(req("/x").bearer("tok")).await
        }));
    }
    for t in tasks {
        let a = t.await.unwrap();
        assert!(a.allowed(), "{}", a.json);
    }
    assert_eq!(ep.calls(), 1);
}

/// Sends `n` Checks at once over one connection, the i-th built by `make(i)`.
async fn burst(p: &Portcullis, n: usize, make: impl Fn(usize) -> Req) -> Vec<Answer> {
    let client = p.server.client().await;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut client = client.clone();
            let creq = make(i).build();
            tokio::spawn(
                async move { Answer::from(client.check(creq).await.unwrap().into_inner()) },
            )
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn oauth_flood_of_distinct_tokens_is_capped_at_max_concurrent() {
    let ep = Introspection::start("basic").await;
    for i in 0..40 {
        ep.answer(&format!("tok-{i}"), active(&format!("u{i}")));
    }
    ep.answer("later", active("later"));
    ep.set(|s| s.delay = Duration::from_millis(400));
    let p = oauth_server(&ep, "basic", "max_concurrent: 4").await;
    // Each token is a cache miss: 4 calls run, 4 more wait for a slot, the rest are refused.
    let answers = burst(&p, 40, |i| req("/x").bearer(&format!("tok-{i}"))).await;
    assert_eq!(ep.in_flight.max(), 4, "calls in flight at the endpoint");
    let allowed = answers.iter().filter(|a| a.allowed()).count();
    let busy: Vec<&Answer> = answers.iter().filter(|a| a.http == Some(429)).collect();
    assert_eq!(allowed + busy.len(), 40, "every other answer is 429");
    assert!(busy.len() >= 10, "{} refused as busy", busy.len());
    assert!(allowed >= 4, "{allowed} allowed");
    assert_eq!(
        ep.calls(),
        allowed as u64,
        "a refused token never reached the endpoint"
    );
    for a in &busy {
        assert_eq!(a.body, json!({"error": "too_many_requests"}).to_string());
    }
    assert!(
        p.audit
            .events()
            .iter()
            .any(|e| e["result"] == "too_many_requests"
                && e["reason"].as_str().unwrap().contains("in flight")),
        "{:?}",
        p.audit.events()
    );
    // Busy answers are not remembered: the slots free up and the same tokens pass.
    let refused = answers.iter().position(|a| a.http == Some(429)).unwrap();
    assert!(
        p.check(req("/x").bearer(&format!("tok-{refused}")))
            .await
            .allowed()
    );
    assert!(p.check(req("/x").bearer("later")).await.allowed());
    assert_eq!(ep.in_flight.now(), 0);
}

#[tokio::test]
async fn oauth_token_header_is_scrubbed_from_logged_input() {
    let ep = Introspection::start("basic").await;
    ep.answer("tok-secret-value", active("u"));
    let p = oauth_server(&ep, "basic", "header: x-access-token\n        scheme: \"\"").await;
    let a = p
        .check(req("/x").header("x-access-token", "tok-secret-value"))
        .await;
    assert!(a.allowed(), "{}", a.json);
    let creds = p.security.authn.as_ref().unwrap().credential_locations();
    assert!(
        creds.headers.contains(&"x-access-token".to_string()),
        "{creds:?}"
    );
}

#[tokio::test]
async fn oauth_config_errors_stop_start_up() {
    let cases = [
        (
            oauth_config("http://user:pw@127.0.0.1:1/introspect", "basic", ""),
            "must not carry credentials",
        ),
        (oauth_config("ftp://127.0.0.1/x", "basic", ""), "http(s)"),
        (
            oauth_config("http://127.0.0.1:1/i", "basic", "timeout_ms: 0"),
            "timeout_ms",
        ),
        // The token and the client secret would cross the network in clear.
        (
            oauth_config("http://auth.example.com/introspect", "basic", ""),
            "must be https",
        ),
        (
            oauth_config("http://10.0.0.1/introspect", "basic", ""),
            "allow_insecure_http",
        ),
        (
            oauth_config("http://127.0.0.1:1/i", "basic", "max_concurrent: 0"),
            "max_concurrent",
        ),
    ];
    for (cfg, want) in cases {
        let e = match support::server::Prepared::new(support::Spec {
            config: &cfg,
            policies: vec![("policy.rego", ECHO_POLICY)],
            ..Default::default()
        }) {
            Err(e) => e,
            Ok(p) => match p.security(
                &portcullis::authn::audit::AuditLog::memory(),
                &env(CLIENT_SECRET),
            ) {
                Err(e) => e,
                Ok(_) => panic!("{cfg} was accepted"),
            },
        };
        assert!(e.contains(want), "{want}: {e}");
    }
    // An unset secret variable is named, and no secret value appears.
    let cfg = oauth_config("http://127.0.0.1:1/i", "basic", "");
    let p = support::server::Prepared::new(support::Spec {
        config: &cfg,
        policies: vec![("policy.rego", ECHO_POLICY)],
        ..Default::default()
    })
    .unwrap();
    let e = p
        .security(&portcullis::authn::audit::AuditLog::memory(), &|_: &str| {
            None
        })
        .unwrap_err();
    assert!(e.contains("OAUTH_SECRET"), "{e}");
    // https anywhere, http to loopback, http elsewhere only when asked for.
    for (url, extra) in [
        ("https://auth.example.com/introspect", ""),
        ("http://localhost:1/i", ""),
        ("http://[::1]:1/i", ""),
        ("http://127.0.0.2:1/i", ""),
        ("http://auth.mesh.svc:8080/i", "allow_insecure_http: true"),
    ] {
        let cfg = oauth_config(url, "basic", extra);
        let p = support::server::Prepared::new(support::Spec {
            config: &cfg,
            policies: vec![("policy.rego", ECHO_POLICY)],
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{url}: {e}"));
        p.security(
            &portcullis::authn::audit::AuditLog::memory(),
            &env(CLIENT_SECRET),
        )
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

// --- custom: an external validator ------------------------------------------------------------

/// A validator service: it reads `x-session`, answers by its value, and records what it got.
struct Validator {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Json>>>,
    in_flight: Gauge,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type V = (Arc<AtomicU64>, Arc<Mutex<Vec<Json>>>, Gauge);

async fn validate(State((calls, seen, gauge)): State<V>, body: String) -> Response {
    calls.fetch_add(1, Ordering::SeqCst);
    let _in_flight = gauge.enter();
    let Ok(v) = serde_json::from_str::<Json>(&body) else {
        return (StatusCode::BAD_REQUEST, "json expected").into_response();
    };
    seen.lock().unwrap().push(v.clone());
    let session = v["headers"]["x-session"].as_str().unwrap_or("").to_string();
    match session.as_str() {
        s if s == "good" || s.starts_with("slow-") => {
            if s.starts_with("slow-") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            axum::Json(json!({"subject": "svc-user", "roles": ["reader"],
                "scopes": "a b", "claims": {"tenant": "acme"}, "expires_at": now() + 600}))
            .into_response()
        }
        "expired" => axum::Json(json!({"subject": "u", "expires_at": now() - 5})).into_response(),
        "bad" => StatusCode::UNAUTHORIZED.into_response(),
        "err" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "created" => (StatusCode::CREATED, axum::Json(json!({"subject": "u"}))).into_response(),
        "garbage" => (StatusCode::OK, "yes").into_response(),
        "nosub" => axum::Json(json!({"roles": ["admin"]})).into_response(),
        "hang" => std::future::pending().await,
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

impl Validator {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Gauge::default();
        let app = axum::Router::new()
            .route("/validate", axum::routing::post(validate))
            .with_state((calls.clone(), seen.clone(), in_flight.clone()));
        let stop = support::server::serve_router(listener, app);
        Self {
            addr,
            calls,
            seen,
            in_flight,
            _stop: stop,
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

fn custom_config(url: &str, extra: &str) -> String {
    format!(
        r#"authentication:
  policies:
    - name: legacy
      methods: [custom]
      custom: {{url: "{url}", headers: [x-session, X-Tenant], timeout_ms: 500, cache_ttl_seconds: 60{extra}}}
"#
    )
}

async fn custom_server(url: &str) -> Portcullis {
    Portcullis::start(&custom_config(url, "")).await
}

#[tokio::test]
async fn custom_validator_identity_and_only_selected_headers() {
    let v = Validator::start().await;
    let p = custom_server(&format!("http://{}/validate", v.addr)).await;
    let a = p
        .check(
            req("/x")
                .header("x-session", "good")
                .header("x-tenant", "acme")
                .header("cookie", "sid=private")
                .bearer("unrelated"),
        )
        .await;
    assert!(a.allowed(), "{}", a.json);
    let id = a.identity();
    assert_eq!(id["method"], "custom");
    assert_eq!(id["subject"], "svc-user");
    assert_eq!(id["roles"], json!(["reader"]));
    assert_eq!(id["scopes"], json!(["a", "b"]));
    assert_eq!(id["claims"]["tenant"], "acme");
    // The validator got the selected headers and nothing else.
    let seen = v.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![json!({"headers": {"x-session": "good", "x-tenant": "acme"}})]
    );
    // No selected header: no credential.
    p.check(req("/x").bearer("unrelated"))
        .await
        .assert_refused(401, "missing_token");
}

#[tokio::test]
async fn custom_validator_refusals_and_failures_fail_closed() {
    let v = Validator::start().await;
    let p = custom_server(&format!("http://{}/validate", v.addr)).await;
    for s in [
        "bad", "other", "err", "created", "garbage", "nosub", "expired", "hang",
    ] {
        let a = p.check(req("/x").header("x-session", s)).await;
        assert!(!a.allowed(), "{s} was allowed");
        a.assert_refused(401, "invalid_token");
    }
    // A 401 is remembered briefly; a 500 is asked again.
    let before = v.calls();
    p.check(req("/x").header("x-session", "bad"))
        .await
        .assert_refused(401, "invalid_token");
    assert_eq!(v.calls(), before);
    p.check(req("/x").header("x-session", "err"))
        .await
        .assert_refused(401, "invalid_token");
    assert_eq!(v.calls(), before + 1);
    // Validator down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = custom_server(&format!("http://{closed}/validate")).await;
    p.check(req("/x").header("x-session", "good"))
        .await
        .assert_refused(401, "invalid_token");
}

#[tokio::test]
async fn custom_validator_cached_and_one_call_for_concurrent_checks() {
    let v = Validator::start().await;
    let p = Arc::new(custom_server(&format!("http://{}/validate", v.addr)).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.check(req("/x").header("x-session", "slow-good")).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().allowed());
    }
    assert_eq!(v.calls(), 1);
    assert!(
        p.check(req("/x").header("x-session", "slow-good"))
            .await
            .allowed()
    );
    assert_eq!(v.calls(), 1);
    // Another tenant header is another credential.
    assert!(
        p.check(
            req("/x")
                .header("x-session", "slow-good")
                .header("x-tenant", "b")
        )
        .await
        .allowed()
    );
    assert_eq!(v.calls(), 2);
    let m = p.security.authn.as_ref().unwrap().metrics();
    assert_eq!(m.cache_misses(portcullis::telemetry::Method::Custom), 2);
    assert_eq!(m.cache_hits(portcullis::telemetry::Method::Custom), 20);
}

#[tokio::test]
async fn custom_validator_flood_is_capped_at_max_concurrent() {
    let v = Validator::start().await;
    let p = Portcullis::start(&custom_config(
        &format!("http://{}/validate", v.addr),
        ", max_concurrent: 3",
    ))
    .await;
    let answers = burst(&p, 30, |i| {
        req("/x").header("x-session", &format!("slow-{i}"))
    })
    .await;
    assert_eq!(v.in_flight.max(), 3, "calls in flight at the validator");
    let allowed = answers.iter().filter(|a| a.allowed()).count();
    let busy = answers.iter().filter(|a| a.http == Some(429)).count();
    assert_eq!(allowed + busy, 30);
    assert!(busy >= 10 && allowed >= 3, "{allowed} allowed, {busy} busy");
    assert_eq!(v.calls(), allowed as u64);
}

#[tokio::test]
async fn custom_validator_url_must_be_https_unless_loopback() {
    let load = |cfg: &str| {
        support::server::Prepared::new(support::Spec {
            config: cfg,
            policies: vec![("policy.rego", ECHO_POLICY)],
            ..Default::default()
        })
        .map(|_| ())
    };
    let e = load(&custom_config("http://sessions.internal:8080/validate", "")).unwrap_err();
    assert!(
        e.contains("custom.url") && e.contains("must be https"),
        "{e}"
    );
    load(&custom_config(
        "http://sessions.internal:8080/validate",
        ", allow_insecure_http: true",
    ))
    .unwrap();
    load(&custom_config("https://sessions.internal/validate", "")).unwrap();
    load(&custom_config("http://localhost:8080/validate", "")).unwrap();
    let e = load(&custom_config(
        "https://v.internal/x",
        ", max_concurrent: 100000",
    ))
    .unwrap_err();
    assert!(e.contains("max_concurrent"), "{e}");
}

#[tokio::test]
async fn per_policy_metrics_count_attempts_failures_latency_and_cache() {
    let ep = Introspection::start("basic").await;
    ep.answer("tok", active("u"));
    let p = oauth_server(&ep, "basic", "").await;
    assert!(p.check(req("/x").bearer("tok")).await.allowed());
    assert!(p.check(req("/x").bearer("tok")).await.allowed());
    p.check(req("/x").bearer("inactive"))
        .await
        .assert_refused(401, "invalid_token");
    p.check(req("/x"))
        .await
        .assert_refused(401, "missing_token");
    let (status, text) = support::http(p.server.http_addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        r#"portcullis_auth_attempts_total{policy="api",method="oauth",result="success"} 2"#,
        r#"portcullis_auth_attempts_total{policy="api",method="oauth",result="failure"} 1"#,
        r#"portcullis_auth_attempts_total{policy="api",method="none",result="failure"} 1"#,
        r#"portcullis_auth_failures_total{policy="api",method="oauth",reason="invalid_token"} 1"#,
        r#"portcullis_auth_failures_total{policy="api",method="none",reason="missing_token"} 1"#,
        r#"portcullis_auth_duration_seconds_count{policy="api",method="oauth"} 3"#,
        r#"portcullis_auth_cache_total{policy="api",method="oauth",result="hit"} 1"#,
        r#"portcullis_auth_cache_total{policy="api",method="oauth",result="miss"} 2"#,
        // The method-wide series stay as they were.
        r#"portcullis_authn_total{method="oauth",result="success"} 2"#,
        r#"portcullis_authn_total{method="oauth",result="failure",reason="invalid_token"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
