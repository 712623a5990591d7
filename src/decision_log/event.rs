//! One decision: what the Check hands over ([`DecisionRecord`], cheap to build: regorus values
//! are reference-counted) and the OPA event it becomes off the request path ([`DecisionEvent`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value as Json, json};

use crate::policy::Snapshot;
pub use crate::telemetry::trace::TraceIds;

/// What the Check knows about one decision. Built on the request path only when the decision
/// log is enabled; turned into JSON by the log's writer.
#[derive(Debug)]
pub struct DecisionRecord {
    pub decision_id: String,
    pub timestamp: SystemTime,
    /// The input document, when it could be built.
    pub input: Option<regorus::Value>,
    /// The decision value, when the policy produced one.
    pub result: Option<regorus::Value>,
    /// The error the Check ended in: OPA-Envoy's reason code and the message.
    pub error: Option<(&'static str, String)>,
    /// The policies that decided (revision, and the mask and drop policies).
    pub snapshot: Option<Arc<Snapshot>>,
    /// Policy evaluation time, when the policy ran.
    pub eval: Option<Duration>,
    /// Time in the Check handler.
    pub handler: Duration,
    /// The Check span's ids, when tracing is on.
    pub trace: Option<TraceIds>,
    /// The namespace that decided (default: the `namespace` context extension, if any).
    pub namespace: Option<String>,
    /// The `jti` of the internal token minted for this request.
    pub internal_token_jti: Option<String>,
    /// The decision path, when not the configured one (the gateway's `Decide` names its own).
    pub path: Option<String>,
    /// OPA's `rule_labels`: the `labels` of the annotated rules that held.
    pub rule_labels: Vec<Json>,
}

impl DecisionRecord {
    /// A record with the Check's id and start time; the rest is filled as the Check goes.
    pub fn new(decision_id: &str) -> Self {
        Self {
            decision_id: decision_id.to_string(),
            timestamp: SystemTime::now(),
            input: None,
            result: None,
            error: None,
            snapshot: None,
            eval: None,
            handler: Duration::ZERO,
            trace: None,
            namespace: None,
            internal_token_jti: None,
            path: None,
            rule_labels: Vec::new(),
        }
    }
}

/// One decision in OPA's event format, after masking. Subscribers receive it shared.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionEvent(pub(crate) Json, std::sync::OnceLock<String>);

impl DecisionEvent {
    pub(crate) fn new(event: Json) -> Self {
        Self(event, std::sync::OnceLock::new())
    }

    /// The event as JSON.
    pub fn json(&self) -> &Json {
        &self.0
    }

    /// The event as JSON text, serialized once however many subscribers ask.
    pub fn text(&self) -> &str {
        self.1.get_or_init(|| self.0.to_string())
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

impl DecisionRecord {
    /// The unmasked event: OPA's fields plus Portcullis' `namespace`, `identity.subject` and
    /// `internal_token.jti` where present.
    pub(crate) fn to_event(&self, labels: &Json, path: &str) -> Map<String, Json> {
        let mut e = Map::new();
        e.insert("labels".into(), labels.clone());
        e.insert("decision_id".into(), json!(self.decision_id));
        let input = self.input.as_ref().map(to_json);
        let trace = self
            .trace
            .map(|t| (hex(&t.trace_id), Some(hex(&t.span_id))));
        let trace = trace.or_else(|| {
            input
                .as_ref()
                .and_then(trace_id_from_headers)
                .map(|id| (id, None))
        });
        if let Some((trace_id, span_id)) = trace {
            e.insert("trace_id".into(), json!(trace_id));
            if let Some(span_id) = span_id {
                e.insert("span_id".into(), json!(span_id));
            }
        }
        if let Some(s) = &self.snapshot {
            e.insert("revision".into(), json!(s.revision().to_string()));
            // OPA's `bundles`: the revision of each bundle the decision was made with.
            if !s.bundles().is_empty() {
                let bundles: serde_json::Map<String, Json> = s
                    .bundles()
                    .iter()
                    .map(|b| (b.name.clone(), json!({"revision": b.revision})))
                    .collect();
                e.insert("bundles".into(), Json::Object(bundles));
            }
        }
        e.insert("path".into(), json!(self.path.as_deref().unwrap_or(path)));
        let namespace = self.namespace.clone().or_else(|| {
            input
                .as_ref()
                .and_then(|i| i.pointer("/attributes/contextExtensions/namespace"))
                .and_then(Json::as_str)
                .map(str::to_string)
        });
        let subject = input
            .as_ref()
            .and_then(|i| i.pointer("/identity/subject"))
            .filter(|s| !s.is_null())
            .cloned();
        if let Some(input) = input {
            e.insert("input".into(), input);
        }
        if let Some(result) = &self.result
            && !matches!(result, regorus::Value::Undefined)
        {
            e.insert("result".into(), to_json(result));
        }
        if !self.rule_labels.is_empty() {
            e.insert("rule_labels".into(), Json::Array(self.rule_labels.clone()));
        }
        if let Some((code, message)) = &self.error {
            e.insert("error".into(), json!({"code": code, "message": message}));
        }
        let timestamp: chrono::DateTime<chrono::Utc> = self.timestamp.into();
        e.insert(
            "timestamp".into(),
            json!(timestamp.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
        );
        let mut metrics = Map::new();
        if let Some(eval) = self.eval {
            metrics.insert(
                "timer_rego_query_eval_ns".into(),
                json!(u64::try_from(eval.as_nanos()).unwrap_or(u64::MAX)),
            );
        }
        metrics.insert(
            "timer_server_handler_ns".into(),
            json!(u64::try_from(self.handler.as_nanos()).unwrap_or(u64::MAX)),
        );
        e.insert("metrics".into(), Json::Object(metrics));
        if let Some(ns) = namespace {
            e.insert("namespace".into(), json!(ns));
        }
        if let Some(subject) = subject {
            e.insert("identity".into(), json!({ "subject": subject }));
        }
        if let Some(jti) = &self.internal_token_jti {
            e.insert("internal_token".into(), json!({ "jti": jti }));
        }
        e
    }
}

use crate::jose::b64::hex;

/// The trace id of the caller's trace (W3C `traceparent`, else B3), for events logged while
/// tracing is off.
/// A regorus value as the event's JSON. A number JSON cannot carry as a double (`1e999` or a
/// 400-digit integer in a request body: regorus keeps it exactly, `serde_json` refuses it) is
/// written as its decimal text rather than losing the whole value, so no request can keep
/// itself out of the log that way. Object keys that are not strings are written as JSON text.
fn to_json(v: &regorus::Value) -> Json {
    use regorus::Value;
    match v {
        Value::Number(n) => {
            serde_json::to_value(n).unwrap_or_else(|_| Json::String(n.format_decimal()))
        }
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Set(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.to_string(),
                        other => other.to_json_str().unwrap_or_default(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        other => serde_json::to_value(other).unwrap_or(Json::Null),
    }
}

fn trace_id_from_headers(input: &Json) -> Option<String> {
    let headers = input.pointer("/attributes/request/http/headers")?;
    let get = |name: &str| headers.get(name).and_then(Json::as_str);
    let candidate = if let Some(tp) = get("traceparent") {
        tp.split('-').nth(1).map(str::to_string)
    } else if let Some(b3) = get("b3") {
        b3.split('-').next().map(str::to_string)
    } else {
        get("x-b3-traceid").map(str::to_string)
    }?;
    let id = candidate.trim().to_ascii_lowercase();
    let valid = (id.len() == 32 || id.len() == 16)
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    valid.then(|| format!("{id:0>32}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_the_span_then_the_headers() {
        let mut r = DecisionRecord::new("d");
        r.input = Some(
            regorus::Value::from_json_str(
                r#"{"attributes": {"request": {"http": {"headers": {
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}}}"#,
            )
            .unwrap(),
        );
        let e = r.to_event(&json!({}), "p");
        assert_eq!(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!e.contains_key("span_id"));
        r.trace = Some(TraceIds {
            trace_id: [1; 16],
            span_id: [2; 8],
        });
        let e = r.to_event(&json!({}), "p");
        assert_eq!(e["trace_id"], "01".repeat(16));
        assert_eq!(e["span_id"], "02".repeat(8));
    }

    #[test]
    fn b3_short_trace_ids_are_padded() {
        let input = json!({"attributes": {"request": {"http": {"headers": {
            "b3": "a3ce929d0e0e4736-00f067aa0ba902b7-1"}}}}});
        assert_eq!(
            trace_id_from_headers(&input).as_deref(),
            Some("0000000000000000a3ce929d0e0e4736")
        );
        let bad =
            json!({"attributes": {"request": {"http": {"headers": {"traceparent": "junk"}}}}});
        assert_eq!(trace_id_from_headers(&bad), None);
    }
}
