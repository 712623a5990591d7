//! Observability: logging set-up, Prometheus metrics and OpenTelemetry traces (the decision
//! log, which evaluates mask policies, is [`crate::decision_log`], a layer up).
//!
//! - [`labels`]       the closed sets (reasons, methods, refusals), defined once
//! - [`metrics`]      the one metrics registry, lock-free recording, `/metrics` text
//! - [`process`]      the process' CPU, memory and file descriptors, read at scrape time
//! - [`trace`]        OTLP/gRPC span export, W3C/B3 parent extraction

pub(crate) mod labels;
pub(crate) mod metrics;
mod process;
pub mod trace;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use labels::{CheckReason, Method, MintFailure, Refusal};
pub use metrics::Metrics;

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// Installs the global tracing subscriber. `level` is OPA's `--log-level`
/// (`debug`, `info`, `error`, ...) or an `EnvFilter` directive. Logs go to stderr so that
/// stdout carries only console decision logs.
pub fn init(level: &str, format: LogFormat) {
    let _ = init_with_tracing(level, format, None);
}

/// Like [`init`], and with `tracer` records Portcullis' spans into it (whatever the log level:
/// each layer has its own filter). Fails when a global subscriber is already installed.
pub fn init_with_tracing(
    level: &str,
    format: LogFormat,
    tracer: Option<&trace::Tracer>,
) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a file or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    let otel = tracer.map(|t| t.layer());
    registry.with(otel).try_init().map_err(|e| e.to_string())
}
