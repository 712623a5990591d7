//! Prometheus metrics, served as text on `/metrics`.
//!
//! One [`Metrics`] value is built at start-up with every series registered (so a scrape shows
//! zeros rather than missing series) and cloned into whatever records. Recording is lock-free:
//! each series is an atomic resolved when the struct is built, never looked up by label on the
//! request path. The decision log's queue and buffer are read at scrape time.
//!
//! Names: OPA-Envoy's `grpc_request_duration_seconds{handler="check"}` and `error_counter{reason}`
//! (same names, buckets and labels, so existing dashboards keep working), and Portcullis' own
//! series prefixed `portcullis_`:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `portcullis_checks_total` | counter | `outcome` (`allow`, `deny`, `error`), `reason` on errors |
//! | `portcullis_check_duration_seconds` | histogram | |
//! | `portcullis_policy_eval_duration_seconds` | histogram | |
//! | `portcullis_policy_reloads_total` / `portcullis_policy_reload_errors_total` | counter | |
//! | `portcullis_policy_revision` | gauge | |
//! | `portcullis_authn_total` | counter | `method`, `result`, `reason` on failures |
//! | `portcullis_auth_attempts_total` | counter | `policy`, `method` (`none`: no credential), `result` |
//! | `portcullis_auth_failures_total` | counter | `policy`, `method`, `reason` |
//! | `portcullis_auth_duration_seconds` | histogram | `policy`, `method` |
//! | `portcullis_auth_cache_total` | counter | `policy`, `method` (`oauth`, `custom`), `result` (`hit`, `miss`) |
//! | `portcullis_jwks_fetches_total` | counter | `result` (`success`, `failure`) |
//! | `portcullis_tokens_minted_total` / `portcullis_tokens_reused_total` | counter | |
//! | `portcullis_token_mint_failures_total` | counter | `reason` |
//! | `portcullis_bundle_polls_total` | counter | `bundle`, `result` (`activated`, `not_modified`, `failure`) |
//! | `portcullis_bundle_consecutive_failures` | gauge | `bundle` |
//! | `portcullis_bundle_last_activation_timestamp_seconds` | gauge (0: never) | `bundle` |
//! | `portcullis_decision_logs_total` | counter | |
//! | `portcullis_decision_logs_dropped_total` | counter | `reason` |
//! | `portcullis_decision_log_uploads_total` | counter | `result` |
//! | `portcullis_decision_log_queue_depth` / `_buffer_events` / `_buffer_bytes` | gauge | |
//! | `portcullis_build_info` | gauge (1) | `version` |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, ... | | (see [`super::process`]) |

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use super::labels::{CheckReason, Method, MintFailure, Refusal};

/// OPA-Envoy's default buckets for `grpc_request_duration_seconds`.
pub const OPA_ENVOY_BUCKETS: &[f64] = &[
    1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 3e-3, 5e-3, 0.1, 1.0,
];

/// Buckets for Portcullis' own latency histograms: microseconds to a second.
pub const LATENCY_BUCKETS: &[f64] = &[
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 1.0,
];

/// Why an event was not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue to the writer was full.
    QueueFull,
    /// The upload buffer was full; the oldest event was dropped.
    BufferFull,
    /// One event was larger than `upload_size_limit_bytes`.
    TooLarge,
    /// The mask or drop policy failed; the event is dropped rather than logged unmasked.
    MaskError,
    /// The drop policy (`system.log.drop`) asked for it.
    DropPolicy,
    /// The event could not be serialized.
    Encoding,
    /// A console or file write failed.
    SinkError,
    /// Still buffered for upload when the process stopped.
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::QueueFull,
        DropReason::BufferFull,
        DropReason::TooLarge,
        DropReason::MaskError,
        DropReason::DropPolicy,
        DropReason::Encoding,
        DropReason::SinkError,
        DropReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BufferFull => "buffer_full",
            DropReason::TooLarge => "too_large",
            DropReason::MaskError => "mask_error",
            DropReason::DropPolicy => "drop_policy",
            DropReason::Encoding => "encoding_error",
            DropReason::SinkError => "sink_error",
            DropReason::Shutdown => "shutdown",
        }
    }

    pub(crate) fn index(self) -> usize {
        DropReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The decision log's counters, read at scrape time ([`crate::decision_log`] has them).
pub trait DecisionLogStats: std::fmt::Debug + Send + Sync {
    fn logged(&self) -> u64;
    fn dropped(&self, reason: DropReason) -> u64;
    fn uploads_ok(&self) -> u64;
    fn uploads_failed(&self) -> u64;
    fn queue_depth(&self) -> u64;
    fn buffer_events(&self) -> u64;
    fn buffer_bytes(&self) -> u64;
}

/// Per-policy authentication counters, read at scrape time (the policies are known only once
/// [`crate::authn`] is built).
pub trait AuthnStats: std::fmt::Debug + Send + Sync {
    fn policies(&self) -> Vec<PolicyStats>;
}

/// One authentication policy's counters.
#[derive(Debug, Clone, Default)]
pub struct PolicyStats {
    pub policy: String,
    /// (method, `success` | `failure`, count)
    pub attempts: Vec<(&'static str, &'static str, u64)>,
    /// (method, reason, count)
    pub failures: Vec<(&'static str, &'static str, u64)>,
    /// (method, time taken)
    pub durations: Vec<(&'static str, Histogram)>,
    /// (method, `hit` | `miss`, count)
    pub cache: Vec<(&'static str, &'static str, u64)>,
}

/// The configured bundles' download state, read at scrape time ([`crate::policy`] keeps it).
pub trait BundleStats: std::fmt::Debug + Send + Sync {
    fn bundles(&self) -> Vec<BundleCounters>;
}

/// One configured bundle's polls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BundleCounters {
    pub name: String,
    /// Polls that activated a new download.
    pub activated: u64,
    /// Polls that found the active bundle current.
    pub not_modified: u64,
    /// Polls that failed (request, status, refused or not activated).
    pub failed: u64,
    /// Failed polls since the last one that succeeded.
    pub consecutive_failures: u64,
    /// When a download (or the persisted copy) was last activated, in Unix seconds.
    pub last_activation: Option<f64>,
}

/// How one Check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Allow,
    Deny,
    Error(CheckReason),
}

impl CheckOutcome {
    /// `allow`, `deny` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Allow => "allow",
            CheckOutcome::Deny => "deny",
            CheckOutcome::Error(_) => "error",
        }
    }
}

/// An authentication attempt's method label: the method, or `none` when no credential was
/// presented.
fn method_label(method: Option<Method>) -> &'static str {
    method.map_or("none", Method::as_str)
}

/// The result of one authentication attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthnResult {
    Success,
    Failure(Refusal),
}

/// Every metric, registered once. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    checks: Series<Count>,
    opa_errors: Series<Count>,
    grpc_duration: Histogram,
    check_duration: Histogram,
    eval_duration: Histogram,
    reloads: Count,
    reload_errors: Count,
    revision: Gauge,
    /// [method][0 = success, 1.. = failure reasons]
    authn: Series<Count>,
    jwks: Series<Count>,
    minted: Count,
    reused: Count,
    mint_failures: Series<Count>,
    bundle_stats: Arc<std::sync::OnceLock<Arc<dyn BundleStats>>>,
    authn_stats: Arc<std::sync::OnceLock<Arc<dyn AuthnStats>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(OPA_ENVOY_BUCKETS, Arc::new(NoLog))
    }
}

/// No decision log: every counter is 0.
#[derive(Debug)]
struct NoLog;

impl DecisionLogStats for NoLog {
    fn logged(&self) -> u64 {
        0
    }
    fn dropped(&self, _: DropReason) -> u64 {
        0
    }
    fn uploads_ok(&self) -> u64 {
        0
    }
    fn uploads_failed(&self) -> u64 {
        0
    }
    fn queue_depth(&self) -> u64 {
        0
    }
    fn buffer_events(&self) -> u64 {
        0
    }
    fn buffer_bytes(&self) -> u64 {
        0
    }
}

impl Metrics {
    /// Registers every metric. `grpc_buckets` are the bounds of `grpc_request_duration_seconds`
    /// (OPA-Envoy's `grpc-request-duration-seconds-buckets`); `log` is the decision log's
    /// counters, read at scrape time.
    pub fn new(grpc_buckets: &[f64], log: Arc<dyn DecisionLogStats>) -> Self {
        let mut registry = Registry::default();

        let mut check_labels: Vec<Labels> =
            vec![vec![("outcome", "allow")], vec![("outcome", "deny")]];
        check_labels.extend(
            CheckReason::ALL
                .iter()
                .map(|r| vec![("outcome", "error"), ("reason", r.as_str())]),
        );
        let checks = Series::new(check_labels, Count::default);
        registry.register(
            "portcullis_checks",
            "Checks answered, by outcome (and reason, for errors)",
            checks.clone(),
        );
        let opa_errors = Series::new(
            CheckReason::ALL
                .iter()
                .map(|r| vec![("reason", r.as_str())])
                .collect(),
            Count::untyped,
        );
        registry.register(
            "error_counter",
            "A counter for errors (OPA-Envoy's name)",
            opa_errors.clone(),
        );

        let grpc_duration = Histogram::new(grpc_buckets);
        registry.register(
            "grpc_request_duration_seconds",
            "A histogram of duration for grpc authz requests (OPA-Envoy's name)",
            Series::single(vec![("handler", "check")], grpc_duration.clone()),
        );
        let check_duration = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "portcullis_check_duration_seconds",
            "Time to answer one Check, in the handler",
            check_duration.clone(),
        );
        let eval_duration = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "portcullis_policy_eval_duration_seconds",
            "Time to evaluate the decision policy for one Check",
            eval_duration.clone(),
        );

        let reloads = Count::default();
        registry.register(
            "portcullis_policy_reloads",
            "Policy reloads that succeeded",
            reloads.clone(),
        );
        let reload_errors = Count::default();
        registry.register(
            "portcullis_policy_reload_errors",
            "Policy reloads that failed (the previous policies kept serving)",
            reload_errors.clone(),
        );
        let revision = Gauge::default();
        registry.register(
            "portcullis_policy_revision",
            "The revision of the policies being served",
            revision.clone(),
        );

        let mut authn_labels: Vec<Labels> = Vec::new();
        let methods = Method::ALL.iter().copied().map(Some).chain([None]);
        for method in methods {
            authn_labels.push(vec![
                ("method", method_label(method)),
                ("result", "success"),
            ]);
            for reason in Refusal::ALL {
                authn_labels.push(vec![
                    ("method", method_label(method)),
                    ("result", "failure"),
                    ("reason", reason.as_str()),
                ]);
            }
        }
        let authn = Series::new(authn_labels, Count::default);
        registry.register(
            "portcullis_authn",
            "Authentication attempts, by method and result (and reason, for failures)",
            authn.clone(),
        );
        let jwks = Series::new(
            vec![vec![("result", "success")], vec![("result", "failure")]],
            Count::default,
        );
        registry.register(
            "portcullis_jwks_fetches",
            "JWKS fetches, by result",
            jwks.clone(),
        );
        let minted = Count::default();
        registry.register(
            "portcullis_tokens_minted",
            "Internal tokens minted",
            minted.clone(),
        );
        let reused = Count::default();
        registry.register(
            "portcullis_tokens_reused",
            "Internal tokens served from the token cache",
            reused.clone(),
        );

        let mint_failures = Series::new(
            MintFailure::ALL
                .iter()
                .map(|r| vec![("reason", r.as_str())])
                .collect(),
            Count::default,
        );
        registry.register(
            "portcullis_token_mint_failures",
            "Allows that wanted an internal token and got none, by reason",
            mint_failures.clone(),
        );

        registry.register_collector(Box::new(LogCollector(log)));
        let bundle_stats: Arc<std::sync::OnceLock<Arc<dyn BundleStats>>> = Arc::default();
        registry.register_collector(Box::new(BundleCollector(bundle_stats.clone())));
        registry.register_collector(Box::new(super::process::ProcessCollector));
        let authn_stats: Arc<std::sync::OnceLock<Arc<dyn AuthnStats>>> = Arc::default();
        registry.register_collector(Box::new(AuthnCollector(authn_stats.clone())));
        registry.register(
            "portcullis_build_info",
            "Build information; the value is always 1",
            Series::single(
                vec![("version", env!("CARGO_PKG_VERSION"))],
                Gauge::with_value(1),
            ),
        );

        Self {
            inner: Arc::new(Inner {
                registry,
                checks,
                opa_errors,
                grpc_duration,
                check_duration,
                eval_duration,
                reloads,
                reload_errors,
                revision,
                authn,
                jwks,
                minted,
                reused,
                mint_failures,
                bundle_stats,
                authn_stats,
            }),
        }
    }

    /// Records one Check: its outcome, the handler time and the policy evaluation time (zero
    /// when the policy was not evaluated).
    pub fn check(&self, outcome: CheckOutcome, handler: Duration, eval: Option<Duration>) {
        let m = &self.inner;
        match outcome {
            CheckOutcome::Allow => m.checks.at(0).inc(),
            CheckOutcome::Deny => m.checks.at(1).inc(),
            CheckOutcome::Error(reason) => {
                m.checks.at(2 + reason.index()).inc();
                m.opa_errors.at(reason.index()).inc();
            }
        }
        m.grpc_duration.observe(handler);
        m.check_duration.observe(handler);
        if let Some(eval) = eval {
            m.eval_duration.observe(eval);
        }
    }

    /// Records a policy reload: the new revision, or the error that kept the old one serving.
    pub fn policy_reload<E>(&self, result: &Result<u64, E>) {
        match result {
            Ok(revision) => {
                self.inner.reloads.inc();
                self.policy_revision(*revision);
            }
            Err(_) => self.inner.reload_errors.inc(),
        }
    }

    /// Records a reload of a namespace other than the default one (its revision is its own).
    pub fn namespace_reload<E>(&self, result: &Result<u64, E>) {
        match result {
            Ok(_) => self.inner.reloads.inc(),
            Err(_) => self.inner.reload_errors.inc(),
        }
    }

    /// Sets the revision being served (at start-up; [`Metrics::policy_reload`] keeps it).
    pub fn policy_revision(&self, revision: u64) {
        self.inner
            .revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// Records one authentication attempt.
    pub fn authn(&self, method: Option<Method>, result: AuthnResult) {
        let per_method = 1 + Refusal::ALL.len();
        let m = method.map_or(Method::ALL.len(), Method::index);
        let r = match result {
            AuthnResult::Success => 0,
            AuthnResult::Failure(f) => 1 + f.index(),
        };
        self.inner.authn.at(m * per_method + r).inc();
    }

    /// Reads per-policy authentication counters from `stats` at every scrape (the first call
    /// wins).
    pub fn connect_authn(&self, stats: Arc<dyn AuthnStats>) {
        let _ = self.inner.authn_stats.set(stats);
    }

    /// Records one JWKS fetch.
    pub fn jwks_fetch(&self, ok: bool) {
        self.inner.jwks.at(usize::from(!ok)).inc();
    }

    /// Records one internal token minted.
    pub fn token_minted(&self) {
        self.inner.minted.inc();
    }

    /// Records an internal token that could not be minted.
    pub fn token_mint_failed(&self, reason: MintFailure) {
        self.inner.mint_failures.at(reason.index()).inc();
    }

    /// Reads the configured bundles' state from `stats` at every scrape (the first call wins).
    pub fn connect_bundles(&self, stats: Arc<dyn BundleStats>) {
        let _ = self.inner.bundle_stats.set(stats);
    }

    /// Records one internal token served from the cache instead of minted.
    pub fn token_reused(&self) {
        self.inner.reused.inc();
    }

    /// The Prometheus (OpenMetrics) text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, &'static str)>;

/// A counter: one atomic. `untyped` ones are exposed without the `_total` suffix (for
/// OPA-Envoy's `error_counter`).
#[derive(Debug, Clone, Default)]
pub struct Count {
    value: Arc<AtomicU64>,
    untyped: bool,
}

impl Count {
    fn untyped() -> Self {
        Self {
            value: Arc::default(),
            untyped: true,
        }
    }

    fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for Count {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        if self.untyped {
            encoder.encode_gauge(&self.get())
        } else {
            encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                &self.get(),
                None,
            )
        }
    }

    fn metric_type(&self) -> MetricType {
        if self.untyped {
            MetricType::Unknown
        } else {
            MetricType::Counter
        }
    }
}

/// A gauge: one atomic.
#[derive(Debug, Clone, Default)]
struct Gauge(Arc<AtomicI64>);

impl Gauge {
    fn with_value(v: i64) -> Self {
        Self(Arc::new(AtomicI64::new(v)))
    }

    fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.load(Ordering::Relaxed))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// A histogram with fixed buckets whose observations are three atomic adds (prometheus-client's
/// own histogram takes a mutex).
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: Box<[f64]>,
    /// One per bound, plus +Inf.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// A histogram with Portcullis' latency buckets.
    pub fn latency() -> Self {
        Self::new(LATENCY_BUCKETS)
    }

    fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramInner {
            bounds: bounds.into_boxed_slice(),
            counts,
            sum_ns: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.0.bounds.partition_point(|b| *b < secs);
        if let Some(c) = self.0.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(self.0.counts.len());
        let mut count = 0;
        for (i, c) in self.0.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let bound = self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A metric with a fixed list of label sets, resolved at start-up so that recording indexes
/// an array.
#[derive(Debug, Clone)]
struct Series<M> {
    fixed: Arc<Vec<(Labels, M)>>,
    kind: MetricType,
}

impl<M: EncodeMetric + Clone> Series<M> {
    fn new(labels: Vec<Labels>, make: impl Fn() -> M) -> Self {
        let fixed: Vec<(Labels, M)> = labels.into_iter().map(|l| (l, make())).collect();
        let kind = fixed
            .first()
            .map_or_else(|| make().metric_type(), |(_, m)| m.metric_type());
        Self {
            fixed: Arc::new(fixed),
            kind,
        }
    }

    fn single(labels: Labels, metric: M) -> Self {
        let kind = metric.metric_type();
        Self {
            fixed: Arc::new(vec![(labels, metric)]),
            kind,
        }
    }

    fn at(&self, i: usize) -> &M {
        // Indexes are computed from the same tables the series were built from.
        &self.fixed[i.min(self.fixed.len().saturating_sub(1))].1
    }
}

impl<M: EncodeMetric + Clone> EncodeMetric for Series<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, metric) in self.fixed.iter() {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// Reads the per-policy authentication counters at scrape time.
#[derive(Debug)]
struct AuthnCollector(Arc<std::sync::OnceLock<Arc<dyn AuthnStats>>>);

impl Collector for AuthnCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let policies = self.0.get().map(|s| s.policies()).unwrap_or_default();
        let count = |v: u64| Count {
            value: Arc::new(AtomicU64::new(v)),
            untyped: false,
        };
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_auth_attempts",
                "Authentication attempts, by policy, method and result",
                None,
                MetricType::Counter,
            )?;
            for p in &policies {
                for (method, result, v) in &p.attempts {
                    let labels = [
                        ("policy", p.policy.as_str()),
                        ("method", method),
                        ("result", result),
                    ];
                    count(*v).encode(e.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_auth_failures",
                "Authentication refusals, by policy, method and reason",
                None,
                MetricType::Counter,
            )?;
            for p in &policies {
                for (method, reason, v) in &p.failures {
                    let labels = [
                        ("policy", p.policy.as_str()),
                        ("method", method),
                        ("reason", reason),
                    ];
                    count(*v).encode(e.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_auth_duration_seconds",
                "Time to run one authentication policy, by policy and the method that decided",
                None,
                MetricType::Histogram,
            )?;
            for p in &policies {
                for (method, h) in &p.durations {
                    let labels = [("policy", p.policy.as_str()), ("method", method)];
                    h.encode(e.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_auth_cache",
                "Answers of call-out methods (oauth, custom), from the cache or a call",
                None,
                MetricType::Counter,
            )?;
            for p in &policies {
                for (method, result, v) in &p.cache {
                    let labels = [
                        ("policy", p.policy.as_str()),
                        ("method", method),
                        ("result", result),
                    ];
                    count(*v).encode(e.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads the configured bundles' state at scrape time.
#[derive(Debug)]
struct BundleCollector(Arc<std::sync::OnceLock<Arc<dyn BundleStats>>>);

impl Collector for BundleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let bundles = self.0.get().map(|s| s.bundles()).unwrap_or_default();
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_bundle_polls",
                "Polls of each configured bundle, by result",
                None,
                MetricType::Counter,
            )?;
            for b in &bundles {
                for (result, v) in [
                    ("activated", b.activated),
                    ("not_modified", b.not_modified),
                    ("failure", b.failed),
                ] {
                    let labels = [("bundle", b.name.as_str()), ("result", result)];
                    Count {
                        value: Arc::new(AtomicU64::new(v)),
                        untyped: false,
                    }
                    .encode(e.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_bundle_consecutive_failures",
                "Failed polls of each configured bundle since its last successful one",
                None,
                MetricType::Gauge,
            )?;
            for b in &bundles {
                let labels = [("bundle", b.name.as_str())];
                e.encode_family(&labels)?
                    .encode_gauge(&b.consecutive_failures)?;
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_bundle_last_activation_timestamp_seconds",
                "When each configured bundle was last activated (Unix seconds; 0: never)",
                None,
                MetricType::Gauge,
            )?;
            for b in &bundles {
                let labels = [("bundle", b.name.as_str())];
                e.encode_family(&labels)?
                    .encode_gauge(&b.last_activation.unwrap_or(0.0))?;
            }
        }
        Ok(())
    }
}

/// Reads the decision log's counters at scrape time.
#[derive(Debug)]
struct LogCollector(Arc<dyn DecisionLogStats>);

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            Count {
                value: Arc::new(AtomicU64::new(v)),
                untyped: false,
            }
            .encode(e)
        };
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            e.encode_gauge(&v)
        };
        counter(
            &mut encoder,
            "portcullis_decision_logs",
            "Decision log events written to the configured sinks",
            s.logged(),
        )?;
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_decision_logs_dropped",
                "Decision log events lost or dropped, by reason",
                None,
                MetricType::Counter,
            )?;
            for reason in DropReason::ALL {
                let labels: Labels = vec![("reason", reason.as_str())];
                let fe = e.encode_family(&labels)?;
                Count {
                    value: Arc::new(AtomicU64::new(s.dropped(reason))),
                    untyped: false,
                }
                .encode(fe)?;
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "portcullis_decision_log_uploads",
                "Decision log uploads (one per chunk), by result",
                None,
                MetricType::Counter,
            )?;
            for (result, v) in [("success", s.uploads_ok()), ("failure", s.uploads_failed())] {
                let labels: Labels = vec![("result", result)];
                let fe = e.encode_family(&labels)?;
                Count {
                    value: Arc::new(AtomicU64::new(v)),
                    untyped: false,
                }
                .encode(fe)?;
            }
        }
        gauge(
            &mut encoder,
            "portcullis_decision_log_queue_depth",
            "Decision log events waiting for the log writer",
            s.queue_depth(),
        )?;
        gauge(
            &mut encoder,
            "portcullis_decision_log_buffer_events",
            "Decision log events buffered for upload",
            s.buffer_events(),
        )?;
        gauge(
            &mut encoder,
            "portcullis_decision_log_buffer_bytes",
            "Bytes of decision log events buffered for upload",
            s.buffer_bytes(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_counts() {
        let m = Metrics::default();
        m.check(
            CheckOutcome::Allow,
            Duration::from_micros(20),
            Some(Duration::from_micros(2)),
        );
        m.check(CheckOutcome::Deny, Duration::from_millis(2), None);
        m.check(
            CheckOutcome::Error(CheckReason::RequestParseError),
            Duration::from_micros(3),
            None,
        );
        m.check(
            CheckOutcome::Error(CheckReason::UnknownNamespace),
            Duration::from_micros(3),
            None,
        );
        m.authn(
            Some(Method::Jwt),
            AuthnResult::Failure(Refusal::InvalidSignature),
        );
        m.authn(Some(Method::ApiKey), AuthnResult::Success);
        m.jwks_fetch(false);
        m.token_minted();
        m.policy_reload::<()>(&Ok(7));
        m.policy_reload(&Err(()));
        let text = m.encode();
        for line in [
            "portcullis_checks_total{outcome=\"allow\"} 1",
            "portcullis_checks_total{outcome=\"deny\"} 1",
            "portcullis_checks_total{outcome=\"error\",reason=\"request_parse_error\"} 1",
            "portcullis_checks_total{outcome=\"error\",reason=\"unknown_namespace\"} 1",
            "error_counter{reason=\"request_parse_error\"} 1",
            "error_counter{reason=\"unknown_namespace\"} 1",
            "grpc_request_duration_seconds_count{handler=\"check\"} 4",
            "grpc_request_duration_seconds_bucket{le=\"0.00005\",handler=\"check\"} 3",
            "grpc_request_duration_seconds_bucket{le=\"+Inf\",handler=\"check\"} 4",
            "portcullis_policy_eval_duration_seconds_count 1",
            "portcullis_authn_total{method=\"jwt\",result=\"failure\",reason=\"invalid_signature\"} 1",
            "portcullis_authn_total{method=\"api_key\",result=\"success\"} 1",
            "portcullis_jwks_fetches_total{result=\"failure\"} 1",
            "portcullis_tokens_minted_total 1",
            "portcullis_policy_reloads_total 1",
            "portcullis_policy_reload_errors_total 1",
            "portcullis_policy_revision 7",
            "portcullis_decision_logs_dropped_total{reason=\"queue_full\"} 0",
            "portcullis_decision_log_queue_depth 0",
            "# TYPE error_counter unknown",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("portcullis_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = Histogram::new(&[1e-3, 1e-2]);
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut reg = Registry::default();
        reg.register("h", "h", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("h_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.01\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("h_count 3\n"), "{text}");
        assert!(text.contains("h_sum 1.006\n"), "{text}");
    }
}
