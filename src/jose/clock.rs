//! The one clock every token check reads.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Seconds since the Unix epoch, unsigned (the gateway's claims).
pub fn now_u64() -> u64 {
    u64::try_from(now()).unwrap_or(0)
}

/// Nanoseconds since the Unix epoch, as a float (OPA's `time.now_ns()` scale).
pub fn now_ns() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_nanos() as f64)
}
