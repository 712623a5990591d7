//! Distributed tracing: `tracing` spans exported over OTLP/gRPC (`opentelemetry-otlp` with its
//! tonic 0.14 exporter) when OPA's `distributed_tracing` block or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! asks for it; off by default.
//!
//! Portcullis' spans are at DEBUG level with targets under `portcullis`: with tracing off and
//! the default log level they are disabled at their call site (no allocation, no formatting);
//! with tracing on only the OpenTelemetry layer records them, whatever `--log-level` says.
//! Spans: `ext_authz.check` (the Check, child of the caller's W3C `traceparent` or B3 headers),
//! `policy.eval`; authentication and token minting add `authn.authenticate` and `token.mint`
//! the same way. Span fields never carry credentials or bodies.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, propagation::TextMapPropagator};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// W3C trace and span ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// The collector address when none is configured (OPA's default).
pub const DEFAULT_ADDRESS: &str = "localhost:4317";

/// Resolved tracing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// `http://host:port` of the OTLP/gRPC collector.
    pub endpoint: String,
    /// 0.0 ..= 1.0, for traces that do not continue a caller's sampled trace.
    pub sample_ratio: f64,
    pub service_name: String,
    pub max_queue_size: Option<usize>,
    pub max_export_batch_size: Option<usize>,
    pub schedule_delay: Option<Duration>,
    pub export_timeout: Option<Duration>,
}

impl TracingSettings {
    /// Tracing is on when the config has a `distributed_tracing` block, or else when `env`
    /// has `OTEL_EXPORTER_OTLP_ENDPOINT` (`env` is the process environment in production; tests
    /// pass a map).
    pub fn resolve(config: Option<&DistributedTracing>, env: &dyn crate::env::Env) -> Option<Self> {
        let env_endpoint = env
            .get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .filter(|e| !e.trim().is_empty());
        let (address, ratio, name, batch) = match config {
            Some(c) => (
                c.address.clone().or(env_endpoint),
                c.sample_percentage.unwrap_or(100.0) / 100.0,
                c.service_name.clone(),
                c.batch_span_processor_options.clone().unwrap_or_default(),
            ),
            None => (Some(env_endpoint?), 1.0, None, Default::default()),
        };
        let address = address.unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        let endpoint = if address.contains("://") {
            address
        } else {
            format!("http://{address}")
        };
        Some(Self {
            endpoint,
            sample_ratio: ratio.clamp(0.0, 1.0),
            service_name: name
                .or_else(|| env.get("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| "portcullis".into()),
            max_queue_size: batch.max_queue_size,
            max_export_batch_size: batch.max_export_batch_size,
            schedule_delay: batch.schedule_delay_millis.map(Duration::from_millis),
            export_timeout: batch.export_timeout_millis.map(Duration::from_millis),
        })
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("distributed tracing: {0}")]
pub struct TracingError(String);

/// The tracer provider; [`Tracer::shutdown`] exports what is still queued.
#[derive(Debug, Clone)]
pub struct Tracer {
    provider: SdkTracerProvider,
}

impl Tracer {
    /// Builds the exporter and provider. Inside a tokio runtime (the gRPC channel lives there).
    pub fn start(settings: &TracingSettings) -> Result<Self, TracingError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone());
        if let Some(t) = settings.export_timeout {
            exporter = exporter.with_timeout(t);
        }
        let exporter = exporter.build().map_err(|e| TracingError(e.to_string()))?;
        let mut batch = BatchConfigBuilder::default();
        if let Some(n) = settings.max_queue_size {
            batch = batch.with_max_queue_size(n);
        }
        if let Some(n) = settings.max_export_batch_size {
            batch = batch.with_max_export_batch_size(n);
        }
        if let Some(d) = settings.schedule_delay {
            batch = batch.with_scheduled_delay(d);
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Self { provider })
    }

    /// The `tracing` layer that records Portcullis' spans into this provider.
    pub(crate) fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        let tracer = self.provider.tracer("portcullis");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span()
                    && meta.target().starts_with("portcullis")
                    && *meta.level() <= tracing::Level::DEBUG
            }))
    }

    /// Exports queued spans and stops; blocks, so call it off the async workers.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "trace export at shutdown failed");
        }
    }
}

/// Makes `span` a child of the trace in the request headers: W3C `traceparent` (with
/// `tracestate`), else B3 (`b3` or `x-b3-*`). Does nothing for a disabled span.
pub fn set_remote_parent(span: &tracing::Span, headers: &HashMap<String, String>) {
    if span.is_disabled() {
        return;
    }
    let cx = if headers.contains_key("traceparent") {
        TraceContextPropagator::new().extract(headers)
    } else {
        match b3(headers) {
            Some(sc) => Context::new().with_remote_span_context(sc),
            None => return,
        }
    };
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The span's trace and span ids, when it is recorded by OpenTelemetry.
pub fn span_ids(span: &tracing::Span) -> Option<TraceIds> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceIds {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
    })
}

fn b3(headers: &HashMap<String, String>) -> Option<SpanContext> {
    let (trace, span, sampled) = match headers.get("b3") {
        Some(single) => {
            let mut parts = single.split('-');
            let trace = parts.next()?.to_string();
            let span = parts.next()?.to_string();
            (trace, span, parts.next().map(str::to_string))
        }
        None => (
            headers.get("x-b3-traceid")?.clone(),
            headers.get("x-b3-spanid")?.clone(),
            headers
                .get("x-b3-sampled")
                .cloned()
                .or_else(|| headers.get("x-b3-flags").map(|_| "1".to_string())),
        ),
    };
    let trace = trace.trim();
    if trace.len() != 16 && trace.len() != 32 {
        return None;
    }
    let trace_id = TraceId::from_hex(&format!("{trace:0>32}")).ok()?;
    let span_id = SpanId::from_hex(span.trim()).ok()?;
    let flags = match sampled.as_deref().map(str::trim) {
        Some("1" | "d" | "true") => TraceFlags::SAMPLED,
        _ => TraceFlags::default(),
    };
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// `distributed_tracing:` (OPA's block).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedTracing {
    /// `grpc` (OTLP over gRPC); the only supported type.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Collector address, `host:port` or `http://host:port`; default `localhost:4317`.
    #[serde(default)]
    pub address: Option<String>,
    /// Percentage of new traces sampled (a sampled parent is always followed); default 100.
    #[serde(default)]
    pub sample_percentage: Option<f64>,
    /// default `portcullis`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Only `off` (plaintext) is supported.
    #[serde(default)]
    pub encryption: Option<String>,
    #[serde(default)]
    pub batch_span_processor_options: Option<BatchSpanProcessorOptions>,
}

/// `distributed_tracing.batch_span_processor_options` (OPA's keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpanProcessorOptions {
    #[serde(default)]
    pub max_queue_size: Option<usize>,
    #[serde(default)]
    pub max_export_batch_size: Option<usize>,
    #[serde(default)]
    pub schedule_delay_millis: Option<u64>,
    #[serde(default)]
    pub export_timeout_millis: Option<u64>,
}

impl DistributedTracing {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), crate::invalid::Invalid> {
        let t = self;
        let invalid = |key: &str, message: String| crate::invalid::Invalid::new(key, message);
        if let Some(kind) = &t.kind
            && kind != "grpc"
        {
            return Err(invalid(
                "type",
                format!("only \"grpc\" (OTLP over gRPC) is supported, got {kind:?}"),
            ));
        }
        if let Some(p) = t.sample_percentage
            && !(0.0..=100.0).contains(&p)
        {
            return Err(invalid(
                "sample_percentage",
                "must be between 0 and 100".into(),
            ));
        }
        if let Some(e) = &t.encryption
            && e != "off"
        {
            return Err(invalid(
                "encryption",
                format!("only \"off\" is supported by this build, got {e:?}"),
            ));
        }
        if let Some(a) = &t.address
            && a.trim().is_empty()
        {
            return Err(invalid("address", "is empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(map: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn off_by_default_on_with_config_or_env() {
        assert_eq!(TracingSettings::resolve(None, &env(&[])), None);
        let s = TracingSettings::resolve(
            None,
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]),
        )
        .unwrap();
        assert_eq!(s.endpoint, "http://collector:4317");
        assert_eq!(s.sample_ratio, 1.0);
        assert_eq!(s.service_name, "portcullis");
        let cfg = DistributedTracing {
            kind: Some("grpc".into()),
            address: Some("otel:4317".into()),
            sample_percentage: Some(25.0),
            service_name: Some("authz".into()),
            ..Default::default()
        };
        let s = TracingSettings::resolve(Some(&cfg), &env(&[])).unwrap();
        assert_eq!(s.endpoint, "http://otel:4317");
        assert_eq!(s.sample_ratio, 0.25);
        assert_eq!(s.service_name, "authz");
        let s = TracingSettings::resolve(Some(&DistributedTracing::default()), &env(&[])).unwrap();
        assert_eq!(s.endpoint, "http://localhost:4317");
    }

    #[test]
    fn b3_headers_parse() {
        let h: HashMap<String, String> = [(
            "b3".to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1".to_string(),
        )]
        .into();
        let sc = b3(&h).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert!(sc.is_sampled());
        let h: HashMap<String, String> = [
            ("x-b3-traceid".to_string(), "64fe8b2a57d3eff7".to_string()),
            ("x-b3-spanid".to_string(), "e457b5a2e4d86bd1".to_string()),
        ]
        .into();
        let sc = b3(&h).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
        assert!(!sc.is_sampled());
        let bad: HashMap<String, String> = [("b3".to_string(), "0".to_string())].into();
        assert!(b3(&bad).is_none());
    }
}
