//! Authentication counters, kept here until the Prometheus registry lands; each counter is a
//! relaxed atomic so the Check path pays a few nanoseconds.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl AuthnMetrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
