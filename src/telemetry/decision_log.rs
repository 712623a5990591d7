//! Decision logs in OPA's event format.
//!
//! With `decision_logs.console: true`, each Check produces one JSON line on stdout. Events are
//! handed to a background task through a bounded queue: the Check never waits for stdout, and
//! when the queue is full the event is dropped and counted (see [`DecisionLog::dropped`]).
//!
//! [`DecisionLog::subscribe`] hands every recorded event to live subscribers too (the gateway's
//! `StreamDecisions`), through a bounded broadcast: a subscriber that falls behind misses
//! events rather than slowing the Check. While someone subscribes, events are built even when
//! no sink is configured.
//!
//! Credentials never reach the log: the values of the `authorization`, `proxy-authorization`
//! and `cookie` request headers are erased from the logged input (and listed under `erased`,
//! as OPA's masking does), even without a mask policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

/// Request headers whose values are never logged.
pub const ERASED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// How many events may wait for the writer.
const QUEUE: usize = 8192;

/// One decision, in OPA's event format.
#[derive(Debug)]
pub struct DecisionEvent(Json);

impl DecisionEvent {
    /// Builds an event. `outcome` is the Check's result: the decision value and response, or the
    /// error it ended in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        decision_id: &str,
        path: &str,
        input: Option<&regorus::Value>,
        result: Option<&regorus::Value>,
        error: Option<(&str, String)>,
        revision: u64,
        eval: Duration,
        handler: Duration,
    ) -> Self {
        let mut event = Map::new();
        event.insert("decision_id".into(), json!(decision_id));
        event.insert("path".into(), json!(path));
        let mut erased = Vec::new();
        if let Some(input) = input
            && let Ok(mut input) = serde_json::to_value(input)
        {
            erase_credentials(&mut input, &mut erased);
            event.insert("input".into(), input);
        }
        if let Some(result) = result
            && !matches!(result, regorus::Value::Undefined)
            && let Ok(result) = serde_json::to_value(result)
        {
            event.insert("result".into(), result);
        }
        if let Some((code, message)) = error {
            event.insert("error".into(), json!({"code": code, "message": message}));
        }
        if !erased.is_empty() {
            event.insert("erased".into(), json!(erased));
        }
        event.insert(
            "timestamp".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
        );
        event.insert(
            "metrics".into(),
            json!({
                "timer_rego_query_eval_ns": eval.as_nanos() as u64,
                "timer_server_handler_ns": handler.as_nanos() as u64,
            }),
        );
        event.insert("revision".into(), json!(revision.to_string()));
        Self(Json::Object(event))
    }

    /// The event as JSON.
    pub fn json(&self) -> &Json {
        &self.0
    }

    /// Records the namespace that decided.
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        if let Json::Object(map) = &mut self.0 {
            map.insert("namespace".into(), json!(namespace));
        }
        self
    }

    /// The decision id.
    pub fn decision_id(&self) -> &str {
        self.0["decision_id"].as_str().unwrap_or_default()
    }

    /// The namespace that decided, when known.
    pub fn namespace(&self) -> Option<&str> {
        self.0.get("namespace").and_then(Json::as_str)
    }
}

fn erase_credentials(input: &mut Json, erased: &mut Vec<String>) {
    let Some(headers) = input
        .pointer_mut("/attributes/request/http/headers")
        .and_then(Json::as_object_mut)
    else {
        return;
    };
    for name in ERASED_HEADERS {
        if headers.remove(*name).is_some() {
            erased.push(format!("/input/attributes/request/http/headers/{name}"));
        }
    }
}

/// How many events a slow subscriber may fall behind before it misses some.
const BROADCAST: usize = 1024;

/// The decision log: disabled, or a queue to the console writer; plus live subscribers.
#[derive(Debug, Clone, Default)]
pub struct DecisionLog {
    inner: Option<Arc<Inner>>,
    hub: Arc<Hub>,
}

/// Live subscribers.
#[derive(Debug)]
struct Hub {
    events: tokio::sync::broadcast::Sender<Arc<DecisionEvent>>,
    subscribers: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            events: tokio::sync::broadcast::channel(BROADCAST).0,
            subscribers: Arc::default(),
        }
    }
}

/// A subscription to recorded events: a broadcast receiver (deref) that keeps events being
/// built while it lives. A receiver more than 1024 events behind gets `RecvError::Lagged`.
#[derive(Debug)]
pub struct DecisionSubscription {
    rx: tokio::sync::broadcast::Receiver<Arc<DecisionEvent>>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::ops::Deref for DecisionSubscription {
    type Target = tokio::sync::broadcast::Receiver<Arc<DecisionEvent>>;
    fn deref(&self) -> &Self::Target {
        &self.rx
    }
}

impl std::ops::DerefMut for DecisionSubscription {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rx
    }
}

impl Drop for DecisionSubscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Inner {
    tx: tokio::sync::mpsc::Sender<DecisionEvent>,
    dropped: AtomicU64,
    labels: Json,
}

impl DecisionLog {
    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A log that writes JSON lines to stdout. Must be called inside a tokio runtime.
    pub fn console(labels: Json) -> Self {
        Self::to_writer(labels, std::io::stdout())
    }

    /// A log that writes JSON lines to `out` (tests pass a buffer).
    pub fn to_writer(labels: Json, out: impl std::io::Write + Send + 'static) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<DecisionEvent>(QUEUE);
        let mut out = std::io::LineWriter::new(out);
        tokio::task::spawn_blocking(move || {
            while let Some(event) = rx.blocking_recv() {
                let _ = serde_json::to_writer(&mut out, &event.0);
                let _ = std::io::Write::write_all(&mut out, b"\n");
            }
        });
        Self {
            inner: Some(Arc::new(Inner {
                tx,
                dropped: AtomicU64::new(0),
                labels,
            })),
            hub: Arc::default(),
        }
    }

    /// Whether events are recorded at all (the Check skips building them when not): a sink
    /// is configured or someone subscribes.
    pub fn enabled(&self) -> bool {
        self.inner.is_some() || self.hub.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Queues an event and hands it to subscribers; never blocks.
    pub fn record(&self, mut event: DecisionEvent) {
        if let Some(inner) = &self.inner
            && let Json::Object(map) = &mut event.0
        {
            map.insert("labels".into(), inner.labels.clone());
        }
        if self.hub.subscribers.load(Ordering::Relaxed) > 0 {
            let _ = self
                .hub
                .events
                .send(Arc::new(DecisionEvent(event.0.clone())));
        }
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.tx.try_send(event).is_err() {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every event recorded from now on, for the gateway's `StreamDecisions`.
    pub fn subscribe(&self) -> DecisionSubscription {
        self.hub.subscribers.fetch_add(1, Ordering::Relaxed);
        DecisionSubscription {
            rx: self.hub.events.subscribe(),
            count: self.hub.subscribers.clone(),
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_erased() {
        let input = regorus::Value::from_json_str(
            r#"{"attributes": {"request": {"http": {"headers": {
                "authorization": "Bearer secret", "cookie": "s=1", "x-ok": "1"}}}}}"#,
        )
        .unwrap();
        let e = DecisionEvent::new(
            "id",
            "envoy/authz/allow",
            Some(&input),
            Some(&regorus::Value::from(true)),
            None,
            1,
            Duration::from_micros(3),
            Duration::from_micros(9),
        );
        let text = e.json().to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("s=1"), "{text}");
        assert!(text.contains("x-ok"));
        assert_eq!(e.json()["result"], json!(true));
        assert_eq!(e.json()["metrics"]["timer_rego_query_eval_ns"], json!(3000));
        assert_eq!(e.json()["erased"].as_array().unwrap().len(), 2);
    }
}
