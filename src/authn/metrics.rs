//! Authentication and token counters: relaxed atomics (cheap, readable in tests) that are also
//! forwarded to the Prometheus registry ([`crate::telemetry::Metrics`]: `portcullis_authn_total`,
//! JWKS fetches, tokens minted and reused, mint failures) once [`AuthnMetrics::connect`] is called.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::callout::Source;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{
    AuthnResult, AuthnStats, Histogram, Method, MintFailure, PolicyStats, Refusal,
};

const METHODS: usize = Method::ALL.len();

/// Counters of the authentication layer and the token minter.
#[derive(Debug, Default)]
pub struct AuthnMetrics {
    pub success: AtomicU64,
    pub anonymous: AtomicU64,
    pub failure: AtomicU64,
    pub forbidden: AtomicU64,
    pub jwks_fetches: AtomicU64,
    pub jwks_fetch_failures: AtomicU64,
    pub tokens_minted: AtomicU64,
    pub tokens_reused: AtomicU64,
    pub token_mint_failures: AtomicU64,
    /// Answers of call-out methods (oauth, custom) served from their cache, by method index.
    pub cache_hits: [AtomicU64; METHODS],
    /// Answers of call-out methods that took a call, by method index.
    pub cache_misses: [AtomicU64; METHODS],
    prometheus: OnceLock<Metrics>,
    policies: OnceLock<Vec<PolicyCounters>>,
}

/// One policy's counters; index `METHODS` stands for "no credential".
#[derive(Debug)]
struct PolicyCounters {
    name: String,
    methods: Vec<Method>,
    /// [method][0 = success, 1 = failure]
    attempts: Vec<[AtomicU64; 2]>,
    /// [method * refusals + refusal]
    failures: Vec<AtomicU64>,
    durations: Vec<Histogram>,
    /// [method][0 = hit, 1 = miss]
    cache: Vec<[AtomicU64; 2]>,
}

impl PolicyCounters {
    fn new(name: String, methods: Vec<Method>) -> Self {
        let slots = METHODS + 1;
        Self {
            name,
            methods,
            attempts: (0..slots).map(|_| Default::default()).collect(),
            failures: (0..slots * Refusal::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: (0..slots).map(|_| Histogram::latency()).collect(),
            cache: (0..METHODS).map(|_| Default::default()).collect(),
        }
    }

    /// The listed methods' slots, then "none".
    fn slots(&self) -> impl Iterator<Item = (usize, &'static str)> + '_ {
        self.methods
            .iter()
            .map(|m| (m.index(), m.as_str()))
            .chain([(METHODS, "none")])
    }

    fn stats(&self) -> PolicyStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = PolicyStats {
            policy: self.name.clone(),
            ..Default::default()
        };
        for (i, label) in self.slots() {
            let Some(a) = self.attempts.get(i) else {
                continue;
            };
            s.attempts.push((label, "success", load(&a[0])));
            s.attempts.push((label, "failure", load(&a[1])));
            for r in Refusal::ALL {
                if let Some(f) = self.failures.get(i * Refusal::ALL.len() + r.index()) {
                    s.failures.push((label, r.as_str(), load(f)));
                }
            }
            if let Some(h) = self.durations.get(i) {
                s.durations.push((label, h.clone()));
            }
        }
        for m in &self.methods {
            if matches!(m, Method::OAuth | Method::Custom)
                && let Some(c) = self.cache.get(m.index())
            {
                s.cache.push((m.as_str(), "hit", load(&c[0])));
                s.cache.push((m.as_str(), "miss", load(&c[1])));
            }
        }
        s
    }
}

impl AuthnStats for AuthnMetrics {
    fn policies(&self) -> Vec<PolicyStats> {
        self.policies
            .get()
            .map(|ps| ps.iter().map(PolicyCounters::stats).collect())
            .unwrap_or_default()
    }
}

impl AuthnMetrics {
    /// Forwards every later count to the Prometheus registry too.
    pub fn connect(&self, metrics: Metrics) {
        let _ = self.prometheus.set(metrics);
    }

    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn success(&self, method: Method) {
        Self::inc(&self.success);
        if let Some(m) = self.prometheus.get() {
            m.authn(Some(method), AuthnResult::Success);
        }
    }

    pub fn anonymous(&self) {
        Self::inc(&self.anonymous);
    }

    /// A refusal; `method` is `None` when no credential was presented.
    pub fn failure(&self, method: Option<Method>, code: Refusal) {
        if code.http_status() == 403 {
            Self::inc(&self.forbidden);
        } else {
            Self::inc(&self.failure);
        }
        if let Some(m) = self.prometheus.get() {
            m.authn(method, AuthnResult::Failure(code));
        }
    }

    /// Names the policies (in config order) and their methods, for the per-policy series.
    pub fn set_policies(&self, policies: Vec<(String, Vec<Method>)>) {
        let _ = self.policies.set(
            policies
                .into_iter()
                .map(|(n, m)| PolicyCounters::new(n, m))
                .collect(),
        );
    }

    /// One policy's verdict: the method that decided (`None`: no credential), the refusal if
    /// any, and the time the policy took.
    pub fn policy_attempt(
        &self,
        policy: usize,
        method: Option<Method>,
        refusal: Option<Refusal>,
        took: Duration,
    ) {
        let Some(p) = self.policies.get().and_then(|ps| ps.get(policy)) else {
            return;
        };
        let m = method.map_or(METHODS, Method::index);
        if let Some(a) = p.attempts.get(m) {
            Self::inc(&a[usize::from(refusal.is_some())]);
        }
        if let Some(r) = refusal
            && let Some(f) = p.failures.get(m * Refusal::ALL.len() + r.index())
        {
            Self::inc(f);
        }
        if let Some(h) = p.durations.get(m) {
            h.observe(took);
        }
    }

    /// A call-out method's answer for a policy, from the cache or a call.
    pub fn policy_cache(&self, policy: usize, method: Method, source: Source) {
        self.cache(method, source);
        if let Some(c) = self
            .policies
            .get()
            .and_then(|ps| ps.get(policy))
            .and_then(|p| p.cache.get(method.index()))
        {
            Self::inc(&c[usize::from(source == Source::Miss)]);
        }
    }

    /// A call-out method's answer, from the cache or a call.
    pub fn cache(&self, method: Method, source: Source) {
        let counters = match source {
            Source::Hit => &self.cache_hits,
            Source::Miss => &self.cache_misses,
        };
        if let Some(c) = counters.get(method.index()) {
            Self::inc(c);
        }
    }

    /// Answers of `method` served from its cache.
    pub fn cache_hits(&self, method: Method) -> u64 {
        self.cache_hits
            .get(method.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Answers of `method` that took a call.
    pub fn cache_misses(&self, method: Method) -> u64 {
        self.cache_misses
            .get(method.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn jwks_fetch(&self, ok: bool) {
        Self::inc(&self.jwks_fetches);
        if !ok {
            Self::inc(&self.jwks_fetch_failures);
        }
        if let Some(m) = self.prometheus.get() {
            m.jwks_fetch(ok);
        }
    }

    pub fn minted(&self) {
        Self::inc(&self.tokens_minted);
        if let Some(m) = self.prometheus.get() {
            m.token_minted();
        }
    }

    /// An internal token that was wanted and could not be minted.
    pub fn mint_failed(&self, reason: MintFailure) {
        Self::inc(&self.token_mint_failures);
        if let Some(m) = self.prometheus.get() {
            m.token_mint_failed(reason);
        }
    }

    pub fn reused(&self) {
        Self::inc(&self.tokens_reused);
        if let Some(m) = self.prometheus.get() {
            m.token_reused();
        }
    }
}
