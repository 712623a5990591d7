//! `DecisionLogService.StreamDecisions`: the decision log's live subscription, filtered.
//!
//! The filter is a caller-level target (see [`super::access`]): fields the request leaves out
//! are bound from the caller's token, so a scoped caller only ever sees its own decisions. An
//! event matches when its namespace is covered by the filter's (hierarchically), and its agent,
//! session and channel equal the filter's where the filter has one; an event without the field
//! does not match a filter on it. The agent, session and channel of an event are
//! `input.caller.*` (gateway decisions) or the Check's context extensions of the same names.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::access::{Rpc, caller_target};
use super::caller::Scope;
use super::pb::{self, DecisionEntry, Outcome, StreamDecisionsRequest};
use super::{Gateway, GatewayError, caller_of};
use crate::decision_log::{DecisionEvent, DecisionLog, DecisionRecord};
use crate::namespaces::{DEFAULT_NAMESPACE, covers};
use crate::policy::EvalError;

/// How many entries may wait for a slow client before the stream skips events.
const STREAM_BUFFER: usize = 256;

/// The most `StreamDecisions` streams open at once; another is RESOURCE_EXHAUSTED.
pub const MAX_STREAMS: usize = 64;

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Gateway);

type EntryStream = Pin<Box<dyn Stream<Item = Result<DecisionEntry, Status>> + Send>>;

#[tonic::async_trait]
impl pb::decision_log_service_server::DecisionLogService for Service {
    type StreamDecisionsStream = EntryStream;

    async fn stream_decisions(
        &self,
        request: Request<StreamDecisionsRequest>,
    ) -> Result<Response<EntryStream>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let namespace = (!req.namespace.is_empty()).then(|| req.namespace.clone());
        if let Some(ns) = &namespace {
            crate::namespaces::validate_name(ns).map_err(GatewayError::from)?;
        }
        let filter = caller_target(&caller, namespace, &req.agent, &req.session, &req.channel);
        Rpc::StreamDecisions
            .authorize(&caller, &filter)
            .map_err(GatewayError::from)?;
        let outcome = Outcome::try_from(req.outcome).unwrap_or(Outcome::Unspecified);
        let mut subscription = self.0.log().try_subscribe(MAX_STREAMS).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "at most {MAX_STREAMS} decision streams can be open at once"
            ))
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let stopping = self.0.stopping();
        tokio::spawn(async move {
            tokio::pin!(stopping);
            loop {
                let event = tokio::select! {
                    () = &mut stopping => return,
                    () = tx.closed() => return,
                    event = subscription.recv() => event,
                };
                match event {
                    Ok(event) => {
                        let Some(entry) = entry_of(&event) else {
                            continue;
                        };
                        if !matches(&filter, outcome, &entry) {
                            continue;
                        }
                        if tx.try_send(Ok(entry)).is_err() && tx.is_closed() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a StreamDecisions client fell behind");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Whether an entry passes a filter.
fn matches(filter: &Scope, outcome: Outcome, entry: &DecisionEntry) -> bool {
    let field = |want: &Option<String>, have: &str| want.as_ref().is_none_or(|w| w == have);
    filter
        .namespace
        .as_ref()
        .is_none_or(|ns| covers(ns, &entry.namespace))
        && field(&filter.agent, &entry.agent)
        && field(&filter.session, &entry.session)
        && field(&filter.channel, &entry.channel)
        && (outcome == Outcome::Unspecified || entry.outcome == outcome as i32)
}

/// A log event as a stream entry.
fn entry_of(event: &Arc<DecisionEvent>) -> Option<DecisionEntry> {
    let json = event.json();
    let input = json.get("input");
    let who = |key: &str| -> String {
        input
            .and_then(|i| {
                i.pointer(&format!("/caller/{key}"))
                    .or_else(|| i.pointer(&format!("/attributes/contextExtensions/{key}")))
            })
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let outcome = if json.get("error").is_some() {
        Outcome::Error
    } else {
        match json.get("result") {
            None => Outcome::Undefined,
            Some(Json::Bool(true)) => Outcome::Allow,
            Some(Json::Bool(false)) => Outcome::Deny,
            Some(Json::Object(o)) => match o.get("allowed") {
                Some(Json::Bool(true)) => Outcome::Allow,
                Some(Json::Bool(false)) => Outcome::Deny,
                _ => Outcome::Other,
            },
            Some(_) => Outcome::Other,
        }
    };
    Some(DecisionEntry {
        decision_id: event.decision_id().to_string(),
        namespace: event.namespace().unwrap_or(DEFAULT_NAMESPACE).to_string(),
        path: json
            .get("path")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string(),
        outcome: outcome as i32,
        agent: who("agent"),
        session: who("session"),
        channel: who("channel"),
        timestamp: json
            .get("timestamp")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string(),
        event_json: event.text().to_string(),
    })
}

/// One gateway decision, for the decision log.
pub(super) struct Decided<'a> {
    pub decision_id: &'a str,
    pub namespace: &'a str,
    pub path: &'a str,
    pub input: &'a regorus::Value,
    pub result: &'a Result<regorus::Value, EvalError>,
    pub snapshot: Arc<crate::policy::Snapshot>,
    pub eval: Duration,
    pub handler: Duration,
}

/// Records a gateway decision like a Check's.
pub(super) fn record(log: &DecisionLog, d: Decided<'_>) {
    if !log.enabled() {
        return;
    }
    let mut record = DecisionRecord::new(d.decision_id);
    record.input = Some(d.input.clone());
    match d.result {
        Ok(v) => record.result = Some(v.clone()),
        Err(e) => record.error = Some((e.reason().as_str(), e.to_string())),
    }
    record.snapshot = Some(d.snapshot);
    record.eval = Some(d.eval);
    record.handler = d.handler;
    record.namespace = Some(d.namespace.to_string());
    record.path = Some(d.path.to_string());
    log.record(record);
}
