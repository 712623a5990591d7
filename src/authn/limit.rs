//! A bounded number of costly operations at once (password verifications, call-outs), with a
//! bounded queue in front: a caller beyond the queue, or one that has waited too long, is
//! refused at once instead of piling up, so a flood costs bounded memory, threads and
//! connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `parallel` slots and at most `max_waiting` callers waiting for one.
#[derive(Debug)]
pub struct Slots {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// No slot: the queue was full, or the wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A place in the queue, given back when dropped (also when the waiting caller is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(parallel: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A slot, held until the permit is dropped: at once when one is free, else after waiting
    /// in the queue for at most `wait` (`None`: as long as it takes).
    pub async fn acquire(&self, wait: Option<Duration>) -> Result<OwnedSemaphorePermit, Full> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Full);
        }
        let _waiting = Waiting(&self.waiting);
        let acquire = self.permits.clone().acquire_owned();
        match wait {
            Some(d) => tokio::time::timeout(d, acquire).await.map_err(|_| Full)?,
            None => acquire.await,
        }
        .map_err(|_| Full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_parallel_and_queue() {
        let slots = Arc::new(Slots::new(2, 1));
        let a = slots.acquire(None).await.unwrap();
        let _b = slots.acquire(None).await.unwrap();
        // The third waits; a fourth finds the queue full.
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(Some(Duration::from_secs(5))).await })
        };
        while slots.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(slots.acquire(None).await.err(), Some(Full));
        drop(a);
        let _c = waiter
            .await
            .unwrap()
            .expect("the waiter gets the freed slot");
        // Both slots taken again: a bounded wait runs out.
        assert_eq!(
            slots.acquire(Some(Duration::from_millis(20))).await.err(),
            Some(Full)
        );
        assert_eq!(slots.waiting.load(Ordering::Acquire), 0);
    }
}
