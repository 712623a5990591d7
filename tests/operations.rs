//! Operating Portcullis: the alerting rules (`deploy/prometheus/alerts.yaml`) and the Grafana
//! dashboard (`deploy/grafana/portcullis.json`) name only metrics a running server serves, and
//! the `portcullis run` process handles its signals: SIGTERM under load (health NOT_SERVING,
//! the wait period, the drain, the decision log flushed, exit 0), a second signal (exit at
//! once), SIGHUP (files re-read, the process keeps running).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::Value as Json;
use support::authn::req;
use support::{Proc, Spec, TestServer, eventually, free_ports};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// --- alerts and dashboard against the exposition ----------------------------------------------

/// PromQL words that are not metric names; those of the first line take a label list.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right", //
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
];

/// Aggregation operators, which may come before their parentheses (`sum by (job) (...)`).
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression selects: identifiers that are not functions, keywords,
/// label names (in `{...}` matchers and `by (...)` lists), strings, ranges (`[5m]`) or numbers.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening character to its closing one, over quoted strings.
    let skip_group = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if matches!(chars[i], '"' | '\'' | '`') {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_group(i + 1, c);
        } else if c == '{' {
            i = skip_group(i + 1, '}');
        } else if c == '[' {
            i = skip_group(i + 1, ']');
        } else if c.is_ascii_digit() || c == '$' {
            // Numbers, durations (`offset 5m`), Grafana variables.
            i += 1;
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                if call {
                    // `by (job, le)`: label names.
                    i = skip_group(next + 1, ')');
                }
            } else if !call && !AGGREGATIONS.contains(&lower.as_str()) {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn promql_metric_names_are_told_from_everything_else() {
    let expr = r#"sum by (job, le) (rate(foo_bucket{a="}", b=~"x[0-9]"}[5m]))
        / on(instance) group_left bar offset 5m > 3 * baz:ratio unless histogram_quantile(0.99, q) > 1e-3
        and max without (instance) ($var_metric_not + qux{l='a b'}) or vector(1)"#;
    let got: Vec<String> = promql_metrics(expr).into_iter().collect();
    assert_eq!(got, ["bar", "baz:ratio", "foo_bucket", "q", "qux"]);
}

/// The names a scrape shows: every sample's, and each family's from its `# TYPE` line (so that
/// a family with no series yet, such as per-bundle ones without bundles, still counts).
fn exposition_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Every `expr` of the alerting rules, by alert name; checks each rule's shape on the way.
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yaml")).unwrap();
    let doc: Json = yaml_serde::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in doc["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name}: no {key}"
                );
            }
            let expr = rule["expr"].as_str().expect("expr");
            out.push((name.to_string(), expr.to_string()));
        }
    }
    out
}

/// Every PromQL expression of the dashboard, by panel title (template variables' `label_values`
/// selectors included); checks the panels' shape on the way.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/portcullis.json")).unwrap();
    let doc: Json = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in doc["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title").to_string();
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: duplicate id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_string()));
        }
    }
    for var in doc["templating"]["list"].as_array().expect("templating") {
        if let Some(def) = var["definition"].as_str() {
            let selector = def
                .strip_prefix("label_values(")
                .and_then(|s| s.rsplit_once(','))
                .map(|(selector, _)| selector)
                .expect("label_values(selector, label)");
            out.push((format!("${}", var["name"]), selector.to_string()));
        }
    }
    out
}

#[tokio::test]
async fn alerts_and_dashboard_name_only_metrics_the_server_serves() {
    let server = TestServer::start(Spec {
        policies: vec![(
            "p.rego",
            "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.path == \"/ok\"\n",
        )],
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    for path in ["/ok", "/ok", "/no"] {
        client.check(req(path).build()).await.unwrap();
    }
    let (status, text) = support::http(server.http_addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("portcullis_checks_total{outcome=\"allow\"} 2\n"),
        "{text}"
    );
    let mut served = exposition_names(&text);
    // Prometheus' own series of every scrape target.
    served.insert("up".into());

    let alerts = alert_exprs();
    let panels = dashboard_exprs();
    assert!(alerts.len() >= 10 && panels.len() >= 20);
    let mut missing = Vec::new();
    let mut named = BTreeSet::new();
    for (owner, expr) in alerts.iter().chain(&panels) {
        let metrics = promql_metrics(expr);
        assert!(!metrics.is_empty(), "{owner}: no metric in {expr}");
        for m in metrics {
            if !served.contains(&m) {
                missing.push(format!("{owner}: {m}"));
            }
            named.insert(m);
        }
    }
    assert!(
        missing.is_empty(),
        "not in the exposition: {missing:#?}\n{text}"
    );
    // What the brief of each file promises is there.
    for m in [
        "portcullis_checks_total",
        "portcullis_check_duration_seconds_bucket",
        "portcullis_auth_failures_total",
        "portcullis_decision_logs_dropped_total",
        "portcullis_bundle_consecutive_failures",
        "portcullis_jwks_fetches_total",
        "portcullis_token_mint_failures_total",
        "portcullis_policy_reload_errors_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(named.contains(m), "{m} is in neither file");
    }
}

// --- the process and its signals --------------------------------------------------------------

/// A validator for the `custom` authentication method that answers after `delay`: it keeps
/// Checks in flight for as long as a test needs.
struct SlowValidator {
    addr: SocketAddr,
    /// Calls received so far (answered or not).
    calls: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SlowValidator {
    fn start(delay: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/validate",
            axum::routing::post(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                axum::Json(serde_json::json!({"subject": "svc-user"}))
            }),
        );
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        Self {
            addr,
            calls,
            _stop: support::server::serve_router(listener, app),
        }
    }
}

/// `portcullis run` as a child process: every Check authenticates through `validator` (each
/// with its own `x-session`, so none shares another's call), the decision log goes to a file.
struct Sidecar {
    proc: Proc,
    grpc: SocketAddr,
    http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Sidecar {
    async fn start(validator: SocketAddr, policy: &str, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "authentication:\n  policies:\n    - name: sessions\n      methods: [custom]\n      \
                 custom: {{url: \"http://{validator}/validate\", headers: [x-session], timeout_ms: 60000}}\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("p.rego"), policy).unwrap();
        let [grpc, http] = free_ports();
        let child = Command::new(BIN)
            .args([
                "run".to_string(),
                "--server".into(),
                "--log-level=info".into(),
                format!("--config-file={}", config.display()),
                format!("--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc}"),
                format!("--addr=127.0.0.1:{http}"),
                format!(
                    "--set=decision_logs.file.path={}",
                    dir.path().join("decisions.log").display()
                ),
            ])
            .args(flags)
            .arg(dir.path().join("p.rego"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let sidecar = Self {
            proc: Proc(child),
            grpc: format!("127.0.0.1:{grpc}").parse().unwrap(),
            http: format!("127.0.0.1:{http}").parse().unwrap(),
            dir,
        };
        eventually(Duration::from_secs(30), || async {
            match sidecar.connect().await {
                Ok(channel) => sidecar.health(&channel).await == Some(ServingStatus::Serving),
                Err(_) => false,
            }
        })
        .await
        .expect("the sidecar never became SERVING");
        sidecar
    }

    /// A new connection to the ext_authz listener.
    async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
    }

    async fn health(&self, channel: &Channel) -> Option<ServingStatus> {
        let answer = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(answer.into_inner().status).ok()
    }

    fn signal(&self, name: &str) {
        let pid = self.proc.0.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {pid}");
    }

    fn running(&mut self) -> bool {
        self.proc.0.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit, at most `timeout`.
    async fn exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn decision_log(&self) -> Vec<Json> {
        std::fs::read_to_string(self.dir.path().join("decisions.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn metrics(&self) -> String {
        support::http(self.http, "GET", "/metrics", None).await.1
    }
}

/// Whether a new TCP connection to `addr` is refused.
async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

const ALLOW_SVC_USER: &str =
    "package envoy.authz\n\nallow if input.identity.subject == \"svc-user\"\n";

/// The whole graceful shutdown, against a client that behaves as Envoy does: it keeps Checks
/// in flight over several connections and stops sending new ones once health says
/// NOT_SERVING.
#[tokio::test]
async fn sigterm_under_load_turns_not_serving_waits_drains_flushes_and_exits_0() {
    const DELAY: Duration = Duration::from_secs(4);
    const WAIT: Duration = Duration::from_secs(2);
    const GRACE: Duration = Duration::from_secs(20);
    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 6;
    let validator = SlowValidator::start(DELAY);
    let mut sidecar = Sidecar::start(
        validator.addr,
        ALLOW_SVC_USER,
        &["--shutdown-wait-period=2", "--shutdown-grace-period=20"],
    )
    .await;

    // The load: each worker sends one Check at a time, each Check taking DELAY.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let channel = sidecar.connect().await.unwrap();
        for w in 0..PER_CONNECTION {
            let (stop, sent) = (stop.clone(), sent.clone());
            let mut client = AuthorizationClient::new(channel.clone());
            workers.spawn(async move {
                let mut answers = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    let session = format!("s-{c}-{w}-{n}");
                    let answer = client
                        .check(req("/x").header("x-session", &session).build())
                        .await
                        .map(|r| r.into_inner().status.map(|s| s.code));
                    answers.push((session, answer));
                }
                answers
            });
        }
    }
    // Envoy's health checking, on its own connection.
    let health_channel = sidecar.connect().await.unwrap();
    let not_serving_at = {
        let stop = stop.clone();
        let health = HealthClient::new(health_channel.clone());
        tokio::spawn(async move {
            let mut health = health;
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: "envoy.service.auth.v3.Authorization".into(),
                    })
                    .await
                    .map(|r| r.into_inner().status)
                    .map_err(|e| e.to_string());
                if status != Ok(ServingStatus::Serving as i32) {
                    stop.store(true, Ordering::SeqCst);
                    return (Instant::now(), status);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // One round of Checks completes; the second is in flight when SIGTERM comes.
    let round = (CONNECTIONS * PER_CONNECTION) as u64;
    eventually(DELAY + Duration::from_secs(10), || async {
        validator.calls.load(Ordering::SeqCst) == 2 * round
    })
    .await
    .expect("a second round of Checks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let in_flight = sent.load(Ordering::SeqCst);
    assert_eq!(in_flight, 2 * round);
    let t0 = Instant::now();
    sidecar.signal("TERM");

    // 1. Health turns NOT_SERVING at once, while every listener still serves.
    let (at, status) = not_serving_at.await.unwrap();
    assert_eq!(status, Ok(ServingStatus::NotServing as i32));
    assert!(at - t0 < WAIT, "NOT_SERVING after {:?}", at - t0);
    let during_wait = sidecar
        .connect()
        .await
        .expect("connections accepted while waiting");
    assert_eq!(
        sidecar.health(&during_wait).await,
        Some(ServingStatus::NotServing)
    );
    let (status, _) = support::http(sidecar.http, "GET", "/health", None).await;
    assert_eq!(status, 200, "the HTTP API serves until the drain");

    // 2. After the wait period: new connections are refused while Checks are still in flight.
    eventually(DELAY, || async { refused(sidecar.grpc).await })
        .await
        .expect("ext_authz still accepts after the wait period");
    let refused_after = t0.elapsed();
    assert!(
        refused_after >= WAIT,
        "refused after {refused_after:?}, before the wait"
    );
    assert!(refused(sidecar.http).await, "the HTTP API still accepts");
    assert!(sidecar.running(), "exited before in-flight Checks finished");

    // 3. Every Check sent completes, allowed; then the process exits 0, well within the grace.
    let mut answers = Vec::new();
    while let Some(done) = workers.join_next().await {
        answers.extend(done.unwrap());
    }
    let status = sidecar.exit(WAIT + GRACE).await;
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took > refused_after, "exited after {took:?}");
    assert!(took < WAIT + GRACE, "exited after {took:?}");
    assert_eq!(answers.len() as u64, sent.load(Ordering::SeqCst));
    assert_eq!(
        answers.len() as u64,
        in_flight,
        "a Check was sent after NOT_SERVING"
    );
    for (session, answer) in &answers {
        assert_eq!(
            answer.as_ref().ok(),
            Some(&Some(0)),
            "{session}: {answer:?}"
        );
    }

    // 4. The decision log was flushed: one event for every Check.
    let events = sidecar.decision_log();
    assert_eq!(events.len(), answers.len());
    assert!(events.iter().all(|e| e["result"] == true));
}

/// A second SIGTERM or SIGINT during the drain ends the process at once, with 128 + the
/// signal's number, instead of waiting for the grace period.
#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let validator = SlowValidator::start(Duration::from_secs(30));
    for (n, (second, code)) in [("INT", 130), ("TERM", 143)].into_iter().enumerate() {
        let mut sidecar = Sidecar::start(
            validator.addr,
            ALLOW_SVC_USER,
            &["--shutdown-grace-period=60"],
        )
        .await;
        let mut client = AuthorizationClient::new(sidecar.connect().await.unwrap());
        let check = tokio::spawn(async move {
            client
                .check(req("/x").header("x-session", "slow").build())
                .await
        });
        // In flight: the validator has the call and holds it.
        eventually(Duration::from_secs(10), || async {
            validator.calls.load(Ordering::SeqCst) == n as u64 + 1
        })
        .await
        .unwrap();
        sidecar.signal("TERM");
        // The first signal drains: the in-flight Check holds the process.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            sidecar.running(),
            "the first signal did not wait for the Check"
        );
        assert!(!check.is_finished());
        let t = Instant::now();
        sidecar.signal(second);
        let status = sidecar.exit(Duration::from_secs(5)).await;
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(status.code(), Some(code), "SIGTERM then SIG{second}");
        assert!(
            check.await.unwrap().is_err(),
            "the cut Check cannot have an answer"
        );
    }
}

/// The largest periods the flags take are waited for, never overflowed: with nothing in
/// flight, the drain is over at once and the process exits 0.
#[tokio::test]
async fn the_largest_shutdown_periods_do_not_panic() {
    let validator = SlowValidator::start(Duration::ZERO);
    let mut sidecar = Sidecar::start(
        validator.addr,
        ALLOW_SVC_USER,
        &[&format!("--shutdown-grace-period={}", u64::MAX)],
    )
    .await;
    sidecar.signal("TERM");
    let status = sidecar.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}

/// SIGHUP re-reads the policy files (without `--watch`), keeps the previous policies when the
/// new ones do not compile, and never stops the process.
#[tokio::test]
async fn sighup_rereads_policy_files_and_keeps_serving() {
    let validator = SlowValidator::start(Duration::ZERO);
    let mut sidecar = Sidecar::start(validator.addr, ALLOW_SVC_USER, &[]).await;
    let policy = sidecar.dir.path().join("p.rego");
    let mut client = AuthorizationClient::new(sidecar.connect().await.unwrap());
    let mut code = async |session: &str| {
        client
            .check(req("/x").header("x-session", session).build())
            .await
            .unwrap()
            .into_inner()
            .status
            .map(|s| s.code)
    };
    assert_eq!(code("a").await, Some(0));

    replace(&policy, "package envoy.authz\n\nallow := false\n");
    // No --watch: nothing happens until SIGHUP.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(code("b").await, Some(0));
    sidecar.signal("HUP");
    let metrics_line = async |line: &str| {
        eventually(Duration::from_secs(10), || async {
            sidecar.metrics().await.lines().any(|l| l == line)
        })
        .await
        .unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    metrics_line("portcullis_policy_reloads_total 1").await;
    metrics_line("portcullis_policy_revision 2").await;
    assert_eq!(code("c").await, Some(7), "PERMISSION_DENIED once reloaded");

    replace(&policy, "package envoy.authz\n\nallow if {\n");
    sidecar.signal("HUP");
    metrics_line("portcullis_policy_reload_errors_total 1").await;
    assert_eq!(
        code("d").await,
        Some(7),
        "the previous policies keep serving"
    );
    assert!(sidecar.running());

    sidecar.signal("TERM");
    let status = sidecar.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}

/// SIGHUP re-reads TLS files that changed at once, whatever the refresh period.
#[tokio::test]
async fn sighup_rereads_changed_tls_files() {
    use support::tls::{Ca, LeafSpec, client_config, http1, server_leaf, write_private};
    let ca = Ca::new("server ca");
    let leaf = |common_name| {
        ca.leaf(LeafSpec {
            common_name,
            ..Default::default()
        })
    };
    let (first, second) = (leaf("first"), leaf("second"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    write_private(&cert, &first.cert_pem);
    write_private(&key, &first.key_pem);
    let validator = SlowValidator::start(Duration::ZERO);
    let mut sidecar = Sidecar::start(
        validator.addr,
        ALLOW_SVC_USER,
        &[
            &format!("--tls-cert-file={}", cert.display()),
            &format!("--tls-private-key-file={}", key.display()),
            "--tls-cert-refresh-period=1h",
        ],
    )
    .await;
    // The HTTP API (--addr) serves HTTPS with these files.
    let client = http1(client_config(&ca, None));
    assert_eq!(server_leaf(sidecar.http, client.clone()).await, first.der);

    write_private(&cert, &second.cert_pem);
    write_private(&key, &second.key_pem);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server_leaf(sidecar.http, client.clone()).await,
        first.der,
        "not before an hour, or SIGHUP"
    );
    sidecar.signal("HUP");
    eventually(Duration::from_secs(10), || {
        let client = client.clone();
        let addr = sidecar.http;
        let want = second.der.clone();
        async move { server_leaf(addr, client).await == want }
    })
    .await
    .expect("the new certificate after SIGHUP");
    assert!(sidecar.running());
}

/// Replaces a file in one step, as editors and Kubernetes do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
