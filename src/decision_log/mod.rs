//! Decision logs in OPA's event format.
//!
//! The Check hands a [`DecisionRecord`] (reference-counted values, no formatting) to a bounded
//! queue and never waits: when the queue is full the record is dropped and counted. One writer
//! thread turns records into events: it applies the `system.log.drop` and `system.log.mask`
//! policies and the default credential erasure ([`mask`]), serializes each event once and hands
//! it to every sink: the console (JSON lines on stdout), a rotating file, the HTTP upload
//! buffer ([`upload`]) and the [`DecisionLog::subscribe`] broadcast (the gateway's
//! `StreamDecisions`).
//!
//! When no sink is configured and nobody subscribes, [`DecisionLog::enabled`] is false and
//! the Check builds no record at all.
//!
//! Credentials never reach the log: see [`mask::ERASED_HEADERS`].

pub(crate) mod config;
mod event;
pub(crate) mod mask;
mod sink;
pub(crate) mod upload;

pub use crate::telemetry::metrics::DropReason;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use event::{DecisionEvent, DecisionRecord, TraceIds};
pub use mask::ERASED_HEADERS;
pub use upload::UploadSettings;

use self::config::DecisionLogFile;

/// How many records may wait for the writer by default.
pub const DEFAULT_QUEUE: usize = 8192;

/// How long the writer lets records gather while they keep coming.
const BATCH_WAIT: Duration = Duration::from_millis(2);

/// How many events a slow subscriber may fall behind before it misses some.
const BROADCAST_CAPACITY: usize = 1024;

/// The decision log's counters, read by the metrics at scrape time.
#[derive(Debug, Default)]
pub struct LogStats {
    logged: AtomicU64,
    dropped: [AtomicU64; 8],
    uploads_ok: AtomicU64,
    uploads_failed: AtomicU64,
    uploaded_events: AtomicU64,
    buffer_events: AtomicU64,
    buffer_bytes: AtomicU64,
    queue: OnceLock<mpsc::WeakSender<Msg>>,
}

impl crate::telemetry::metrics::DecisionLogStats for LogStats {
    fn logged(&self) -> u64 {
        LogStats::logged(self)
    }
    fn dropped(&self, reason: DropReason) -> u64 {
        LogStats::dropped(self, reason)
    }
    fn uploads_ok(&self) -> u64 {
        LogStats::uploads_ok(self)
    }
    fn uploads_failed(&self) -> u64 {
        LogStats::uploads_failed(self)
    }
    fn queue_depth(&self) -> u64 {
        LogStats::queue_depth(self)
    }
    fn buffer_events(&self) -> u64 {
        LogStats::buffer_events(self)
    }
    fn buffer_bytes(&self) -> u64 {
        LogStats::buffer_bytes(self)
    }
}

impl LogStats {
    pub fn logged(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }
    pub fn uploads_ok(&self) -> u64 {
        self.uploads_ok.load(Ordering::Relaxed)
    }
    pub fn uploads_failed(&self) -> u64 {
        self.uploads_failed.load(Ordering::Relaxed)
    }
    /// Events accepted by the upload service.
    pub fn uploaded_events(&self) -> u64 {
        self.uploaded_events.load(Ordering::Relaxed)
    }
    pub fn buffer_events(&self) -> u64 {
        self.buffer_events.load(Ordering::Relaxed)
    }
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_bytes.load(Ordering::Relaxed)
    }
    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> u64 {
        self.queue
            .get()
            .and_then(mpsc::WeakSender::upgrade)
            .map_or(0, |tx| (tx.max_capacity() - tx.capacity()) as u64)
    }

    fn drop_event(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
    fn uploaded(&self, events: usize) {
        self.uploads_ok.fetch_add(1, Ordering::Relaxed);
        self.uploaded_events
            .fetch_add(events as u64, Ordering::Relaxed);
    }
    fn upload_failed(&self) {
        self.uploads_failed.fetch_add(1, Ordering::Relaxed);
    }
    fn set_buffer(&self, events: usize, bytes: usize) {
        self.buffer_events.store(events as u64, Ordering::Relaxed);
        self.buffer_bytes.store(bytes as u64, Ordering::Relaxed);
    }
}

/// A message to the writer.
#[derive(Debug)]
pub(crate) enum Msg {
    Record(Box<DecisionRecord>),
    /// Write out everything queued before, attempt an upload, then answer.
    Flush(oneshot::Sender<()>),
}

/// Everything the log needs to know, usually from `Config::decision_log_settings`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// OPA's `labels`: `id`, `version` and the config's `labels`.
    pub labels: Json,
    /// The decision path, logged as `path`.
    pub path: String,
    pub console: bool,
    pub file: Option<DecisionLogFile>,
    pub upload: Option<UploadSettings>,
    pub mask_decision: String,
    pub drop_decision: String,
    pub queue_size: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            labels: json!({"id": uuid::Uuid::new_v4().to_string(), "version": env!("CARGO_PKG_VERSION")}),
            path: crate::policy::reference::DEFAULT_PATH.to_string(),
            console: false,
            file: None,
            upload: None,
            mask_decision: "system/log/mask".into(),
            drop_decision: "system/log/drop".into(),
            queue_size: DEFAULT_QUEUE,
        }
    }
}

impl LogSettings {
    fn has_sinks(&self) -> bool {
        self.console || self.file.is_some() || self.upload.is_some()
    }
}

/// The decision log. Cheap to clone; a default one records nothing.
#[derive(Debug, Clone, Default)]
pub struct DecisionLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: Option<mpsc::Sender<Msg>>,
    sinks: bool,
    subscribers: Arc<AtomicUsize>,
    events: broadcast::Sender<Arc<DecisionEvent>>,
    stats: Arc<LogStats>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            tx: None,
            sinks: false,
            subscribers: Arc::default(),
            events: broadcast::channel(1).0,
            stats: Arc::default(),
        }
    }
}

impl DecisionLog {
    /// A log that records nothing and has no writer (subscribers receive nothing).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the writer (a thread) and, with an upload service, the uploader (a task: must be
    /// called inside a tokio runtime). `console` is where console lines go (stdout unless a
    /// test passes a buffer).
    pub fn start(
        settings: LogSettings,
        console: Option<Box<dyn io::Write + Send>>,
    ) -> io::Result<Self> {
        let stats = Arc::new(LogStats::default());
        let (tx, rx) = mpsc::channel::<Msg>(settings.queue_size.max(1));
        let _ = stats.queue.set(tx.downgrade());
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let subscribers = Arc::new(AtomicUsize::new(0));

        let console = settings
            .console
            .then(|| sink::Console::new(console.unwrap_or_else(|| Box::new(io::stdout()))));
        let file = match &settings.file {
            Some(f) => Some(sink::RotatingFile::open(
                &f.path,
                f.max_size_bytes,
                f.max_backups,
            )?),
            None => None,
        };
        let (upload, flush) = match &settings.upload {
            Some(u) => {
                let buffer = Arc::new(upload::Buffer::new(u, stats.clone()));
                let (flush_tx, flush_rx) = mpsc::channel(4);
                tokio::spawn(upload::run(
                    buffer.clone(),
                    u.clone(),
                    stats.clone(),
                    flush_rx,
                ));
                (Some(buffer), Some(flush_tx))
            }
            None => (None, None),
        };
        let writer = Writer {
            labels: settings.labels.clone(),
            path: settings.path.clone(),
            policies: mask::Policies::new(&settings.mask_decision, &settings.drop_decision),
            console,
            file,
            upload,
            flush,
            events: events.clone(),
            subscribers: subscribers.clone(),
            stats: stats.clone(),
            sink_warned: false,
        };
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            shared: Arc::new(Shared {
                tx: Some(tx),
                sinks: settings.has_sinks(),
                subscribers,
                events,
                stats,
            }),
        })
    }

    /// A log that writes console lines to `out` (tests pass a buffer). Inside a runtime.
    pub fn to_writer(labels: Json, out: impl io::Write + Send + 'static) -> Self {
        let settings = LogSettings {
            labels,
            console: true,
            ..Default::default()
        };
        Self::start(settings, Some(Box::new(out))).unwrap_or_default()
    }

    /// A log that writes console lines to stdout. Inside a runtime.
    pub fn console(labels: Json) -> Self {
        Self::to_writer(labels, io::stdout())
    }

    /// Whether the Check should build records: a sink is configured or someone subscribes.
    /// One atomic load when no sink is configured.
    pub fn enabled(&self) -> bool {
        let s = &self.shared;
        s.tx.is_some() && (s.sinks || s.subscribers.load(Ordering::Relaxed) > 0)
    }

    /// Queues a record; never blocks. A full queue drops the record (counted).
    pub fn record(&self, record: DecisionRecord) {
        let Some(tx) = &self.shared.tx else {
            return;
        };
        if tx.try_send(Msg::Record(Box::new(record))).is_err() {
            self.shared.stats.drop_event(DropReason::QueueFull);
        }
    }

    /// A subscription ([`DecisionLog::subscribe`]) unless `max` already live.
    pub fn try_subscribe(&self, max: usize) -> Option<DecisionSubscription> {
        let count = &self.shared.subscribers;
        let mut current = count.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return None;
            }
            match count.compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        Some(DecisionSubscription {
            rx: self.shared.events.subscribe(),
            count: count.clone(),
        })
    }

    /// Every event logged from now on (after masking), for the gateway's `StreamDecisions`.
    /// While a subscription lives, records are built even when no sink is configured.
    pub fn subscribe(&self) -> DecisionSubscription {
        self.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        DecisionSubscription {
            rx: self.shared.events.subscribe(),
            count: self.shared.subscribers.clone(),
        }
    }

    /// Writes out everything recorded so far and attempts an upload of the buffer; returns
    /// when done (or at once for a log without a writer).
    pub async fn flush(&self) {
        let Some(tx) = &self.shared.tx else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Flushes, giving up after `timeout` (for shutdown). Events still buffered for upload
    /// afterwards are lost with the process: they are counted (`shutdown`) and logged.
    pub async fn shutdown(&self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.flush()).await.is_err() {
            tracing::warn!("decision log flush did not finish before shutdown");
        }
        let left = self.shared.stats.buffer_events();
        if left > 0 {
            self.shared.stats.dropped[DropReason::Shutdown.index()]
                .fetch_add(left, Ordering::Relaxed);
            tracing::warn!(
                events = left,
                "decision log events not uploaded at shutdown"
            );
        }
    }

    /// The counters, for metrics.
    pub fn stats(&self) -> Arc<LogStats> {
        self.shared.stats.clone()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.stats.dropped(DropReason::QueueFull)
    }
}

/// A subscription to logged events: a `tokio::sync::broadcast::Receiver` (deref) that
/// keeps records being built while it lives. A receiver that falls more than 1024 events
/// behind gets `RecvError::Lagged`.
#[derive(Debug)]
pub struct DecisionSubscription {
    rx: broadcast::Receiver<Arc<DecisionEvent>>,
    count: Arc<AtomicUsize>,
}

impl std::ops::Deref for DecisionSubscription {
    type Target = broadcast::Receiver<Arc<DecisionEvent>>;
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

/// The writer thread's state.
struct Writer {
    labels: Json,
    path: String,
    policies: mask::Policies,
    console: Option<sink::Console>,
    file: Option<sink::RotatingFile>,
    upload: Option<Arc<upload::Buffer>>,
    flush: Option<mpsc::Sender<oneshot::Sender<()>>>,
    events: broadcast::Sender<Arc<DecisionEvent>>,
    subscribers: Arc<AtomicUsize>,
    stats: Arc<LogStats>,
    sink_warned: bool,
}

impl Writer {
    /// Waits for records, then works in batches: while records keep coming it drains the
    /// queue every [`BATCH_WAIT`] instead of being woken for each one (a wake-up costs the
    /// Check a system call and the writer a context switch); when a batch finds the queue
    /// empty it goes back to waiting.
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            self.handle(msg);
            loop {
                let mut handled = 0usize;
                while let Ok(msg) = rx.try_recv() {
                    self.handle(msg);
                    handled += 1;
                }
                self.flush_sinks();
                if handled == 0 {
                    break;
                }
                std::thread::sleep(BATCH_WAIT);
            }
        }
        self.flush_sinks();
        // Dropping `flush` ends the uploader after a last attempt.
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Record(record) => self.write(&record),
            Msg::Flush(done) => {
                self.flush_sinks();
                match &self.flush {
                    Some(flush) => {
                        if let Err(mpsc::error::SendError(done)) = flush.blocking_send(done) {
                            let _ = done.send(());
                        }
                    }
                    None => {
                        let _ = done.send(());
                    }
                }
            }
        }
    }

    fn write(&mut self, record: &DecisionRecord) {
        let mut event = record.to_event(&self.labels, &self.path);
        let mut erased = Vec::new();
        let mut masked = Vec::new();
        if let Some(snapshot) = &record.snapshot {
            match self.policies.judge(snapshot, &event) {
                Ok(mask::Verdict::Drop) => {
                    self.stats.drop_event(DropReason::DropPolicy);
                    return;
                }
                Ok(mask::Verdict::Keep(rules)) => {
                    mask::apply(&mut event, &rules, &mut erased, &mut masked);
                }
                Err(e) => {
                    tracing::error!(decision.id = %record.decision_id, error = %e,
                        "decision log masking failed; event dropped");
                    self.stats.drop_event(DropReason::MaskError);
                    return;
                }
            }
        }
        mask::erase_credentials(&mut event, &mut erased, &masked);
        if !erased.is_empty() {
            event.insert("erased".into(), json!(erased));
        }
        if !masked.is_empty() {
            event.insert("masked".into(), json!(masked));
        }
        let event = Json::Object(event);
        let bytes = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(decision.id = %record.decision_id, error = %e, "decision log event cannot be encoded");
                self.stats.drop_event(DropReason::Encoding);
                return;
            }
        };
        let mut failed = None;
        if let Some(c) = &mut self.console
            && let Err(e) = c.write(&bytes)
        {
            failed = Some(e);
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.write(&bytes)
        {
            failed = Some(e);
        }
        self.sink_result(failed);
        if let Some(buffer) = &self.upload {
            buffer.push(bytes);
        }
        if self.subscribers.load(Ordering::Relaxed) > 0 {
            let _ = self.events.send(Arc::new(DecisionEvent::new(event)));
        }
        self.stats.logged.fetch_add(1, Ordering::Relaxed);
    }

    fn flush_sinks(&mut self) {
        let mut failed = None;
        if let Some(c) = &mut self.console
            && let Err(e) = c.flush()
        {
            failed = Some(e);
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.flush()
        {
            failed = Some(e);
        }
        self.sink_result(failed);
    }

    /// Counts a failed write and warns once per run of failures.
    fn sink_result(&mut self, failed: Option<io::Error>) {
        match failed {
            Some(e) => {
                self.stats.drop_event(DropReason::SinkError);
                if !self.sink_warned {
                    tracing::warn!(error = %e, "decision log write failed");
                    self.sink_warned = true;
                }
            }
            None => self.sink_warned = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn console_events_and_subscribers() {
        let buf = Buf::default();
        let log = DecisionLog::to_writer(json!({"id": "i", "version": "v"}), buf.clone());
        assert!(log.enabled());
        let mut sub = log.subscribe();
        let mut r = DecisionRecord::new("d1");
        r.input = Some(
            regorus::Value::from_json_str(
                r#"{"attributes": {"request": {"http": {"headers": {
                "authorization": "Bearer secret", "cookie": "s=1", "x-ok": "1"}}}}}"#,
            )
            .unwrap(),
        );
        r.result = Some(regorus::Value::from(true));
        r.eval = Some(Duration::from_micros(3));
        r.handler = Duration::from_micros(9);
        log.record(r);
        log.flush().await;
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("s=1"), "{text}");
        let e: Json = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(e["decision_id"], "d1");
        assert_eq!(e["labels"], json!({"id": "i", "version": "v"}));
        assert_eq!(e["result"], json!(true));
        assert_eq!(e["metrics"]["timer_rego_query_eval_ns"], json!(3000));
        assert_eq!(e["erased"].as_array().unwrap().len(), 2);
        let got = sub.recv().await.unwrap();
        assert_eq!(got.decision_id(), "d1");
        assert_eq!(log.stats().logged(), 1);
    }

    #[tokio::test]
    async fn subscribers_alone_enable_the_log() {
        let log = DecisionLog::start(LogSettings::default(), None).unwrap();
        assert!(!log.enabled());
        let sub = log.subscribe();
        assert!(log.enabled());
        drop(sub);
        assert!(!log.enabled());
        assert!(!DecisionLog::disabled().enabled());
    }
}
