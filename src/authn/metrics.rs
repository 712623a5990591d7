//! Authentication and token counters: relaxed atomics (cheap, readable in tests) that are also
//! forwarded to the Prometheus registry ([`crate::telemetry::Metrics`]: `portcullis_authn_total`,
//! JWKS fetches, tokens minted and reused) once [`AuthnMetrics::connect`] is called.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::callout::Source;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{AuthnResult, Method, Refusal};

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
    /// Answers of call-out methods (oauth, custom) served from their cache, by method index.
    pub cache_hits: [AtomicU64; METHODS],
    /// Answers of call-out methods that took a call, by method index.
    pub cache_misses: [AtomicU64; METHODS],
    prometheus: OnceLock<Metrics>,
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

    pub fn reused(&self) {
        Self::inc(&self.tokens_reused);
        if let Some(m) = self.prometheus.get() {
            m.token_reused();
        }
    }
}
