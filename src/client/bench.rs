//! `portcullis bench check`: closed-loop load against a Check server.
//!
//! `--connections` HTTP/2 connections (one tonic channel each) carry `--concurrency` workers,
//! spread round-robin; each worker sends the same Check back to back. The first `--warmup` is
//! not measured; then, for `--duration`, every answer is counted and its latency recorded.
//! A request still in flight when the window closes is dropped and not counted, so the run ends
//! on time even against a server that stops answering.
//!
//! The result is ONE JSON line on stdout:
//!
//! ```json
//! {"rps":41234.5,"p50_us":180.2,"p90_us":260.0,"p99_us":410.5,"p999_us":900.1,"max_us":2100.3,
//!  "ok":412345,"denied":0,"errors":0,"requests":412345,"duration_s":10.0,
//!  "concurrency":8,"connections":2,
//!  "server_cpu_us_per_req":21.4,"server_peak_rss_kb":18220,"server_rss_kb":17900}
//! ```
//!
//! - `rps`: answered Checks (`ok` + `denied`) per second of the measured window.
//! - `p*_us`, `max_us`: latency of answered Checks in microseconds, from a log-linear
//!   histogram (within 0.8 %); `max_us` is exact.
//! - `ok`: answers with gRPC status OK (or none); `denied`: answers with another status;
//!   `errors`: RPCs that failed (transport error, gRPC error, per-request timeout);
//!   `requests` = `ok` + `denied` + `errors`. `first_error` appears when `errors` > 0.
//! - With `--server-pid`: `server_cpu_us_per_req` is the server's user+system CPU time over the
//!   measured window (from `/proc/PID/stat`, in clock ticks taken as 100 per second, the value
//!   on every Linux build that matters) divided by the answered Checks; `server_peak_rss_kb` is
//!   `VmHWM` and `server_rss_kb` is `VmRSS` from `/proc/PID/status`, read at the end.
//!
//! Bounds: `--duration` and `--warmup` are each at most 600 s, `--concurrency` at most 1024;
//! connecting and the first Check on each connection must succeed within `--connect-timeout`,
//! so an address that does not answer gives an error, not a hang.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::floor::{self, FloorArgs, FloorError};
use super::histogram::Histogram;
use super::transport::{Target, describe_status, fmt_duration, is_timeout};
use super::{DEFAULT_ADDR, RequestArgs, RequestError, parse_duration};

/// The longest `--duration` or `--warmup`.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// The most workers.
pub const MAX_CONCURRENCY: usize = 1024;
/// Clock ticks per second assumed for `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub const CLK_TCK: u64 = 100;

/// The `bench` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum BenchCommand {
    /// Load a Check server and print one JSON line of results.
    Check(BenchCheckArgs),
    /// Serve a no-op Check server (always OK), the floor to compare a real server with.
    Floor(FloorArgs),
    /// Time policy evaluation per decision, like `opa bench`.
    Eval(super::eval_bench::BenchEvalArgs),
}

impl BenchCommand {
    /// Runs the subcommand, prints an error as `error: ...` on stderr, and returns the process
    /// exit code.
    pub async fn main(self) -> i32 {
        match self {
            BenchCommand::Check(args) => match run(args).await {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit_code()
                }
            },
            BenchCommand::Eval(args) => super::eval_bench::main(&args),
            BenchCommand::Floor(args) => match floor::run(args).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    FloorError::exit_code(&e)
                }
            },
        }
    }
}

/// Flags of `bench check`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchCheckArgs {
    /// Server address: HOST:PORT, http://HOST:PORT, grpc://HOST:PORT or unix:///PATH.
    #[arg(long, default_value = DEFAULT_ADDR, value_name = "ADDR")]
    pub addr: String,
    /// The request to send (default: GET / with no headers).
    #[command(flatten)]
    pub request: RequestArgs,
    /// Workers, each sending one Check at a time (at most 1024).
    #[arg(long, short = 'c', default_value_t = 8, value_name = "N")]
    pub concurrency: usize,
    /// HTTP/2 connections the workers are spread over (at most --concurrency).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub connections: usize,
    /// Measured time (at most 600s).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Unmeasured time before it (at most 600s).
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,
    /// Server process to report CPU per request and memory of (Linux /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Time allowed to connect and to answer the first Check on each connection.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// Time allowed for each Check; a Check that takes longer counts as an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Load the HTTP authorization listener (plugins.envoy_ext_authz_http) instead of gRPC,
    /// with plain HTTP/1.1 requests as Envoy's http_service (envoy) or NGINX auth_request
    /// (nginx) sends them; 200 counts as ok, any other status as denied (--connections does
    /// not apply: the client keeps one keep-alive connection per worker).
    #[arg(long, value_enum, value_name = "MODE")]
    pub http: Option<HttpLoad>,
}

/// How `bench check --http` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpLoad {
    /// The original method and path on the request line.
    Envoy,
    /// `GET /auth` with `X-Original-URI` and `X-Original-Method`.
    Nginx,
}

impl BenchCheckArgs {
    /// Defaults for `addr`, as the command line has them.
    pub fn new(addr: impl Into<String>) -> Self {
        BenchCheckArgs {
            addr: addr.into(),
            request: RequestArgs::default(),
            concurrency: 8,
            connections: 2,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            server_pid: None,
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(5),
            http: None,
        }
    }
}

/// A bench run that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
    /// A bad request description.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The server cannot be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server does not answer Checks.
    #[error("{addr} did not answer a first Check: {reason}")]
    Preflight {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server process cannot be observed.
    #[error("cannot read the stats of server pid {pid}: {reason}")]
    ServerStats {
        /// The pid.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// A worker failed.
    #[error("bench worker failed: {0}")]
    Internal(String),
}

impl BenchError {
    /// The process exit code: `2` for usage errors, `1` otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Usage(_) | BenchError::Request(_) => 2,
            _ => 1,
        }
    }
}

/// The results of a bench run (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// Answered Checks per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 90th percentile latency, µs.
    pub p90_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile latency, µs.
    pub p999_us: f64,
    /// Largest latency, µs.
    pub max_us: f64,
    /// Answers with status OK.
    pub ok: u64,
    /// Answers with another status.
    pub denied: u64,
    /// Failed RPCs.
    pub errors: u64,
    /// `ok + denied + errors`.
    pub requests: u64,
    /// The measured window, s.
    pub duration_s: f64,
    /// Workers.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Server CPU (user + system) per answered Check, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_req: Option<f64>,
    /// Server peak RSS (`VmHWM`), KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_kb: Option<u64>,
    /// Server RSS at the end (`VmRSS`), KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_kb: Option<u64>,
    /// The first error seen in the measured window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl BenchReport {
    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// `bench check`: runs the load, prints the report as one JSON line on stdout, returns it.
pub async fn run(args: BenchCheckArgs) -> Result<BenchReport, BenchError> {
    let report = measure(&args).await?;
    println!("{}", report.to_json_line());
    Ok(report)
}

fn validate(args: &BenchCheckArgs) -> Result<(), BenchError> {
    let usage = |m: String| Err(BenchError::Usage(m));
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return usage(format!(
            "--concurrency must be between 1 and {MAX_CONCURRENCY}, not {}",
            args.concurrency
        ));
    }
    if args.connections == 0 || args.connections > args.concurrency {
        return usage(format!(
            "--connections must be between 1 and --concurrency ({}), not {}",
            args.concurrency, args.connections
        ));
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        return usage(format!(
            "--duration must be more than 0 and at most {}, not {}",
            fmt_duration(MAX_DURATION),
            fmt_duration(args.duration)
        ));
    }
    if args.warmup > MAX_DURATION {
        return usage(format!(
            "--warmup must be at most {}, not {}",
            fmt_duration(MAX_DURATION),
            fmt_duration(args.warmup)
        ));
    }
    for (flag, d) in [
        ("--connect-timeout", args.connect_timeout),
        ("--timeout", args.timeout),
    ] {
        if d.is_zero() || d > MAX_DURATION {
            return usage(format!(
                "{flag} must be more than 0 and at most {}, not {}",
                fmt_duration(MAX_DURATION),
                fmt_duration(d)
            ));
        }
    }
    Ok(())
}

/// Runs the load and returns the report without printing it.
pub async fn measure(args: &BenchCheckArgs) -> Result<BenchReport, BenchError> {
    validate(args)?;
    let request = Arc::new(args.request.to_spec()?.to_check_request());
    let target = Target::parse(&args.addr).map_err(BenchError::Usage)?;
    if let Some(pid) = args.server_pid {
        read_cpu_ticks(pid).map_err(|reason| BenchError::ServerStats { pid, reason })?;
    }

    let mut channels = Vec::with_capacity(args.connections);
    let http = match args.http {
        Some(mode) => {
            let load = http_load::HttpLoader::new(&target, mode, &request)?;
            load.preflight(&target, args.connect_timeout).await?;
            Some(load)
        }
        None => None,
    };
    for _ in 0..args.connections {
        if http.is_some() {
            break;
        }
        let channel = target
            .connect(args.connect_timeout)
            .await
            .map_err(|reason| BenchError::Connect {
                addr: target.display.clone(),
                reason,
            })?;
        preflight(&target, &channel, &request, args.connect_timeout).await?;
        channels.push(channel);
    }

    let start = Instant::now();
    let measure_start = start + args.warmup;
    let end = measure_start + args.duration;
    let mut workers = JoinSet::new();
    for i in 0..args.concurrency {
        match &http {
            Some(load) => {
                workers.spawn(load.clone().worker(measure_start, end, args.timeout));
            }
            None => {
                let channel = channels[i % channels.len()].clone();
                workers.spawn(worker(
                    channel,
                    Arc::clone(&request),
                    measure_start,
                    end,
                    args.timeout,
                ));
            }
        }
    }

    let mut server = None;
    if let Some(pid) = args.server_pid {
        let stats =
            |r: Result<u64, String>| r.map_err(|reason| BenchError::ServerStats { pid, reason });
        tokio::time::sleep_until(measure_start).await;
        let before = stats(read_cpu_ticks(pid))?;
        tokio::time::sleep_until(end).await;
        let after = stats(read_cpu_ticks(pid))?;
        let (peak, rss) =
            read_memory_kb(pid).map_err(|reason| BenchError::ServerStats { pid, reason })?;
        server = Some((after.saturating_sub(before), peak, rss));
    }

    let mut totals = WorkerStats::default();
    while let Some(joined) = workers.join_next().await {
        let stats = joined.map_err(|e| BenchError::Internal(e.to_string()))?;
        totals.merge(stats);
    }

    let answered = totals.ok + totals.denied;
    let secs = args.duration.as_secs_f64();
    let us = |ns: u64| round(ns as f64 / 1000.0, 1);
    let h = &totals.hist;
    let (cpu, peak, rss) = match server {
        Some((ticks, peak, rss)) => {
            let cpu_us = ticks as f64 * 1e6 / CLK_TCK as f64;
            let per_req = (answered > 0).then(|| round(cpu_us / answered as f64, 2));
            (per_req, Some(peak), Some(rss))
        }
        None => (None, None, None),
    };
    Ok(BenchReport {
        rps: round(answered as f64 / secs, 1),
        p50_us: us(h.quantile(0.50)),
        p90_us: us(h.quantile(0.90)),
        p99_us: us(h.quantile(0.99)),
        p999_us: us(h.quantile(0.999)),
        max_us: us(h.max()),
        ok: totals.ok,
        denied: totals.denied,
        errors: totals.errors,
        requests: answered + totals.errors,
        duration_s: round(secs, 3),
        concurrency: args.concurrency,
        connections: args.connections,
        server_cpu_us_per_req: cpu,
        server_peak_rss_kb: peak,
        server_rss_kb: rss,
        first_error: totals.first_error,
    })
}

/// One Check on a fresh connection, to tell "not a Check server" from a slow one.
async fn preflight(
    target: &Target,
    channel: &Channel,
    request: &CheckRequest,
    timeout: Duration,
) -> Result<(), BenchError> {
    let mut client = AuthorizationClient::new(channel.clone());
    let mut req = tonic::Request::new(request.clone());
    req.set_timeout(timeout);
    let fail = |reason: String| BenchError::Preflight {
        addr: target.display.clone(),
        reason,
    };
    match tokio::time::timeout(timeout, client.check(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) if !is_timeout(&status) => Err(fail(describe_status(&status))),
        Ok(Err(_)) | Err(_) => Err(fail(format!(
            "no answer within {} (is it an ext_authz gRPC server?)",
            fmt_duration(timeout)
        ))),
    }
}

#[derive(Debug, Default)]
struct WorkerStats {
    hist: Histogram,
    ok: u64,
    denied: u64,
    errors: u64,
    first_error: Option<String>,
}

impl WorkerStats {
    fn merge(&mut self, other: WorkerStats) {
        self.hist.merge(&other.hist);
        self.ok += other.ok;
        self.denied += other.denied;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, reason: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(reason());
        }
    }
}

/// `bench check --http`: the same loop over plain HTTP/1.1 (a pooled keep-alive client).
mod http_load {
    use std::sync::Arc;
    use std::time::Duration;

    use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use tokio::time::Instant;

    use super::{BenchError, HttpLoad, WorkerStats};
    use crate::client::transport::{Target, fmt_duration};

    /// Answer bodies are read and dropped; more than this is an error.
    const MAX_ANSWER: usize = 1024 * 1024;

    #[derive(Clone)]
    pub(super) struct HttpLoader {
        client: Client<HttpConnector, String>,
        request: Arc<http::Request<String>>,
    }

    impl HttpLoader {
        pub(super) fn new(
            target: &Target,
            mode: HttpLoad,
            check: &CheckRequest,
        ) -> Result<Self, BenchError> {
            let base = target
                .uri
                .strip_prefix("http://")
                .ok_or_else(|| BenchError::Usage("--http needs a TCP address".into()))?;
            let h = check
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref())
                .cloned()
                .unwrap_or_default();
            let (method, path) = match mode {
                HttpLoad::Envoy => (h.method.as_str(), h.path.as_str()),
                HttpLoad::Nginx => ("GET", "/auth"),
            };
            let mut b = http::Request::builder()
                .method(method)
                .uri(format!("http://{base}{path}"))
                .header(http::header::HOST, h.host.as_str());
            if mode == HttpLoad::Nginx {
                b = b
                    .header("x-original-uri", h.path.as_str())
                    .header("x-original-method", h.method.as_str());
            }
            for (k, v) in &h.headers {
                if !k.starts_with(':') && k != "host" {
                    b = b.header(k.as_str(), v.as_str());
                }
            }
            let request = b
                .body(h.body.clone())
                .map_err(|e| BenchError::Usage(format!("the request cannot be sent: {e}")))?;
            Ok(Self {
                client: Client::builder(TokioExecutor::new()).build_http(),
                request: Arc::new(request),
            })
        }

        fn request(&self) -> http::Request<String> {
            let mut b = http::Request::builder()
                .method(self.request.method().clone())
                .uri(self.request.uri().clone());
            for (k, v) in self.request.headers() {
                b = b.header(k, v);
            }
            b.body(self.request.body().clone()).unwrap_or_default()
        }

        /// One status, or why none.
        async fn send(&self) -> Result<u16, String> {
            let resp = self
                .client
                .request(self.request())
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            axum::body::to_bytes(axum::body::Body::new(resp.into_body()), MAX_ANSWER)
                .await
                .map_err(|e| e.to_string())?;
            Ok(status)
        }

        pub(super) async fn preflight(
            &self,
            target: &Target,
            timeout: Duration,
        ) -> Result<(), BenchError> {
            match tokio::time::timeout(timeout, self.send()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(reason)) => Err(BenchError::Connect {
                    addr: target.display.clone(),
                    reason,
                }),
                Err(_) => Err(BenchError::Preflight {
                    addr: target.display.clone(),
                    reason: format!("no answer within {}", fmt_duration(timeout)),
                }),
            }
        }

        pub(super) async fn worker(
            self,
            measure_start: Instant,
            end: Instant,
            timeout: Duration,
        ) -> WorkerStats {
            let mut stats = WorkerStats::default();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let deadline = (started + timeout).min(end);
                let outcome = tokio::time::timeout_at(deadline, self.send()).await;
                let finished = Instant::now();
                if started < measure_start {
                    continue;
                }
                match outcome {
                    Ok(Ok(status)) => {
                        let nanos =
                            u64::try_from((finished - started).as_nanos()).unwrap_or(u64::MAX);
                        stats.hist.record(nanos);
                        if status == 200 {
                            stats.ok += 1;
                        } else {
                            stats.denied += 1;
                        }
                    }
                    Ok(Err(e)) => stats.error(|| e),
                    Err(_) if deadline == end => break,
                    Err(_) => stats.error(|| format!("no answer within {}", fmt_duration(timeout))),
                }
            }
            stats
        }
    }
}

async fn worker(
    channel: Channel,
    request: Arc<CheckRequest>,
    measure_start: Instant,
    end: Instant,
    timeout: Duration,
) -> WorkerStats {
    let mut client = AuthorizationClient::new(channel);
    let mut stats = WorkerStats::default();
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let mut req = tonic::Request::new(CheckRequest::clone(&request));
        req.set_timeout(timeout);
        let deadline = (started + timeout).min(end);
        let outcome = tokio::time::timeout_at(deadline, client.check(req)).await;
        let finished = Instant::now();
        if started < measure_start {
            continue;
        }
        match outcome {
            Ok(Ok(resp)) => {
                let nanos = u64::try_from((finished - started).as_nanos()).unwrap_or(u64::MAX);
                stats.hist.record(nanos);
                let allowed = resp.get_ref().status.as_ref().is_none_or(|s| s.code == 0);
                if allowed {
                    stats.ok += 1;
                } else {
                    stats.denied += 1;
                }
            }
            Ok(Err(status)) if !is_timeout(&status) => stats.error(|| describe_status(&status)),
            // Cut off by the end of the window: not counted.
            Ok(Err(_)) | Err(_) if deadline == end => break,
            Ok(Err(_)) | Err(_) => {
                stats.error(|| format!("no answer within {}", fmt_duration(timeout)));
            }
        }
    }
    stats
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// utime + stime of `pid`, in clock ticks.
fn read_cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_cpu_ticks(&text).ok_or_else(|| format!("{path}: unexpected format"))
}

/// utime (field 14) + stime (field 15) from the text of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may hold spaces or parentheses, so fields are counted from
/// the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// (`VmHWM`, `VmRSS`) of `pid`, KiB.
fn read_memory_kb(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_memory_kb(&text).ok_or_else(|| format!("{path}: no VmHWM/VmRSS"))
}

fn parse_memory_kb(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some((field("VmHWM")?, field("VmRSS")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::test_support::{ScriptedService, serve_scripted};
    use std::time::Instant as StdInstant;

    async fn start_floor() -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(floor::serve(listener, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    fn quick(addr: &str) -> BenchCheckArgs {
        BenchCheckArgs {
            concurrency: 4,
            connections: 2,
            duration: Duration::from_millis(1000),
            warmup: Duration::from_millis(200),
            ..BenchCheckArgs::new(addr)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_against_floor() {
        let (addr, stop) = start_floor().await;
        let args = BenchCheckArgs {
            server_pid: Some(std::process::id()),
            ..quick(&addr)
        };
        let started = StdInstant::now();
        let r = run(args).await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1200), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(r.ok > 0, "{r:?}");
        assert_eq!(r.errors, 0, "{r:?}");
        assert_eq!(r.denied, 0, "{r:?}");
        assert_eq!(r.requests, r.ok);
        assert!(r.rps > 0.0);
        assert!((r.rps - r.ok as f64).abs() < 1.0, "{r:?}");
        assert!(r.p50_us > 0.0, "{r:?}");
        assert!(r.p50_us <= r.p90_us, "{r:?}");
        assert!(r.p90_us <= r.p99_us, "{r:?}");
        assert!(r.p99_us <= r.p999_us, "{r:?}");
        assert!(r.p999_us <= r.max_us, "{r:?}");
        assert_eq!(r.duration_s, 1.0);
        // The floor runs in this process, so these are this process's numbers.
        assert!(r.server_cpu_us_per_req.unwrap() > 0.0, "{r:?}");
        let (peak, rss) = (r.server_peak_rss_kb.unwrap(), r.server_rss_kb.unwrap());
        assert!(rss > 0 && peak >= rss, "{r:?}");
        let line: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
        for key in [
            "rps",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "ok",
            "denied",
            "errors",
            "requests",
            "duration_s",
            "server_cpu_us_per_req",
            "server_peak_rss_kb",
            "server_rss_kb",
        ] {
            assert!(line.get(key).is_some(), "missing {key} in {line}");
        }
        assert!(line.get("first_error").is_none());
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn nothing_listening_is_a_quick_clear_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let started = StdInstant::now();
        let err = run(quick(&addr)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(matches!(err, BenchError::Connect { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("cannot connect to {addr}: connection refused")
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn silent_server_fails_within_connect_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let args = BenchCheckArgs {
            connect_timeout: Duration::from_millis(300),
            ..quick(&addr)
        };
        let started = StdInstant::now();
        let err = run(args).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(
            matches!(
                err,
                BenchError::Preflight { .. } | BenchError::Connect { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("300ms"), "{err}");
        drop(listener);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_and_denying_server_is_counted_not_fatal() {
        // ok, denied, Internal error, ok, denied, ...; the preflight gets the first "ok".
        let (addr, stop) = serve_scripted(ScriptedService::cycle_ok_denied_error()).await;
        let args = BenchCheckArgs {
            duration: Duration::from_millis(500),
            warmup: Duration::ZERO,
            ..quick(&addr)
        };
        let r = run(args).await.unwrap();
        assert!(r.ok > 0 && r.denied > 0 && r.errors > 0, "{r:?}");
        assert_eq!(r.requests, r.ok + r.denied + r.errors);
        let first = r.first_error.as_deref().unwrap();
        assert!(first.contains("Internal"), "{first}");
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn bad_arguments_are_usage_errors() {
        let base = quick("127.0.0.1:1");
        for args in [
            BenchCheckArgs {
                concurrency: 0,
                ..base.clone()
            },
            BenchCheckArgs {
                concurrency: 2,
                connections: 3,
                ..base.clone()
            },
            BenchCheckArgs {
                duration: Duration::from_secs(601),
                ..base.clone()
            },
            BenchCheckArgs {
                duration: Duration::ZERO,
                ..base.clone()
            },
            BenchCheckArgs {
                warmup: Duration::from_secs(601),
                ..base.clone()
            },
            BenchCheckArgs {
                addr: "nope".into(),
                ..base.clone()
            },
        ] {
            let err = run(args).await.unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }

    #[tokio::test]
    async fn missing_server_pid_is_an_error() {
        let (addr, stop) = start_floor().await;
        let args = BenchCheckArgs {
            server_pid: Some(u32::MAX),
            ..quick(&addr)
        };
        let err = run(args).await.unwrap_err();
        assert!(matches!(err, BenchError::ServerStats { .. }), "{err}");
        let _ = stop.send(());
    }

    #[test]
    fn proc_files_parse() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 5000 0 0 0 \
                    250 75 0 0 20 0 4 0 12345 100000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status =
            "Name:\tportcullis\nVmPeak:\t  9000 kB\nVmHWM:\t  8123 kB\nVmRSS:\t  7000 kB\n";
        assert_eq!(parse_memory_kb(status), Some((8123, 7000)));
        assert_eq!(parse_memory_kb("Name: x\n"), None);
        let own = read_cpu_ticks(std::process::id());
        assert!(own.is_ok(), "{own:?}");
    }
}
