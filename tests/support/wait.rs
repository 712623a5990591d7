//! Polling until a condition holds.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] asks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What a polled condition answers: `bool`, or `Result<(), String>` whose error says why it
/// does not hold yet (reported when the time is up).
pub trait Progress {
    fn progress(self) -> Result<(), String>;
}

impl Progress for bool {
    fn progress(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition does not hold".into())
        }
    }
}

impl Progress for Result<(), String> {
    fn progress(self) -> Result<(), String> {
        self
    }
}

/// Polls `cond` every [`POLL_INTERVAL`] until it holds, or fails with its last answer once
/// `timeout` has passed: `Err("not within {timeout:?}; last: {last}")`. A condition that needs
/// no `await` is written `|| async { ... }`.
pub async fn eventually<F, Fut, P>(timeout: Duration, mut cond: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
    P: Progress,
{
    let deadline = Instant::now() + timeout;
    loop {
        match cond().await.progress() {
            Ok(()) => return Ok(()),
            Err(last) if Instant::now() > deadline => {
                return Err(format!("not within {timeout:?}; last: {last}"));
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}
