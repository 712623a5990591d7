//! `DecisionService`: `Decide` and `DecideBatch`.
//!
//! The input's `caller` key is always replaced by the gateway with who is asking:
//! `{subject, method, namespace, agent?, session?, channel?}`, where agent, session and
//! channel come from the request and, where it leaves them out, from the caller's token; a
//! scoped token cannot name another value (PERMISSION_DENIED), so a caller never asks on
//! someone else's behalf.
//!
//! **Decisions, not data.** A caller that may not read the namespace's data (`GetData`: a
//! token scoped below namespace level, to an agent, session or channel) may only ask for
//! decisions: a path naming a rule or lying inside a rule's value, or a document made only of
//! rules (a package, ref-head rules) with no data at or below it
//! ([`crate::policy::Snapshot::is_decision`]). Asking for plain data (`acme_secret`, `users`)
//! is PERMISSION_DENIED, whatever the data holds. What a rule returns is the policy author's
//! choice.

use std::time::Instant;

use serde_json::{Map, Value as Json, json};
use tonic::{Request, Response, Status};

use super::access::{Rpc, caller_target, namespace_of, namespace_target};
use super::caller::{Caller, Scope};
use super::pb::{self, DecideBatchRequest, DecideBatchResponse, DecideRequest, DecideResponse};
use super::{Gateway, GatewayError, caller_of, logs};

/// The most requests in one `DecideBatch`.
pub const MAX_BATCH: usize = 256;

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Gateway);

#[tonic::async_trait]
impl pb::decision_service_server::DecisionService for Service {
    async fn decide(
        &self,
        request: Request<DecideRequest>,
    ) -> Result<Response<DecideResponse>, Status> {
        let caller = caller_of(&request)?;
        let asked = authorize(&caller, Rpc::Decide, request.into_inner())?;
        Ok(Response::new(decide(&self.0, &caller, asked)?))
    }

    async fn decide_batch(
        &self,
        request: Request<DecideBatchRequest>,
    ) -> Result<Response<DecideBatchResponse>, Status> {
        let caller = caller_of(&request)?;
        let requests = request.into_inner().requests;
        if requests.len() > MAX_BATCH {
            return Err(GatewayError::Invalid(format!(
                "a batch holds at most {MAX_BATCH} requests"
            ))
            .into());
        }
        // Every item is authorized before any is evaluated.
        let asked = requests
            .into_iter()
            .map(|r| authorize(&caller, Rpc::DecideBatch, r))
            .collect::<Result<Vec<_>, _>>()?;
        // Up to MAX_BATCH evaluations: off the async workers.
        let gw = self.0.clone();
        let responses = tokio::task::spawn_blocking(move || {
            asked
                .into_iter()
                .map(|a| decide(&gw, &caller, a))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| GatewayError::Internal(format!("batch task: {e}")))??;
        Ok(Response::new(DecideBatchResponse { responses }))
    }
}

/// An authorized request.
struct Asked {
    target: Scope,
    namespace: String,
    request: DecideRequest,
}

fn authorize(caller: &Caller, rpc: Rpc, request: DecideRequest) -> Result<Asked, GatewayError> {
    let namespace = namespace_of(caller, &request.namespace);
    let target = caller_target(
        caller,
        Some(namespace.clone()),
        &request.agent,
        &request.session,
        &request.channel,
    );
    rpc.authorize(caller, &target)?;
    Ok(Asked {
        target,
        namespace,
        request,
    })
}

/// `input.caller` for a decision.
fn caller_document(caller: &Caller, target: &Scope, namespace: &str) -> Json {
    let mut c = Map::new();
    c.insert("subject".into(), json!(caller.subject));
    c.insert("method".into(), json!(caller.method.name()));
    c.insert("namespace".into(), json!(namespace));
    for (key, value) in [
        ("agent", &target.agent),
        ("session", &target.session),
        ("channel", &target.channel),
    ] {
        if let Some(v) = value {
            c.insert(key.into(), json!(v));
        }
    }
    Json::Object(c)
}

fn decide(gw: &Gateway, caller: &Caller, asked: Asked) -> Result<DecideResponse, GatewayError> {
    let start = Instant::now();
    let Asked {
        target,
        namespace,
        request,
    } = asked;
    let path = if request.path.is_empty() {
        gw.decision_path().to_string()
    } else {
        crate::policy::reference::validate_decision_path(&request.path)
            .map_err(GatewayError::Invalid)?;
        request.path.trim_matches('/').to_string()
    };
    let mut input = match &request.input {
        None => Map::new(),
        Some(v) => match pb::value_to_json(v) {
            Some(Json::Object(m)) => m,
            Some(_) => return Err(GatewayError::Invalid("input must be an object".into())),
            None => {
                return Err(GatewayError::Invalid(
                    "input is nested too deeply or has a non-finite number".into(),
                ));
            }
        },
    };
    input.insert(
        "caller".into(),
        caller_document(caller, &target, &namespace),
    );
    let input = regorus::Value::from(Json::Object(input));
    let store = gw.namespaces().require(&namespace)?;
    let snapshot = store.snapshot();
    let reads_data = Rpc::GetData
        .authorize(caller, &namespace_target(&namespace))
        .is_ok();
    if !reads_data && !snapshot.is_decision(&crate::policy::DataRef::parse(&path)) {
        tracing::info!(namespace = %namespace, path = %path, "Decide of a data document by a caller who may not read data: denied");
        return Err(GatewayError::Denied(super::access::Denied {
            rpc: Rpc::Decide,
        }));
    }
    let decision_id = uuid::Uuid::new_v4().to_string();
    let eval_start = Instant::now();
    let result = snapshot.eval_path(&path, Some(input.clone()));
    let eval = eval_start.elapsed();
    let mut response = DecideResponse {
        decision_id: decision_id.clone(),
        namespace: namespace.clone(),
        revision: snapshot.revision(),
        ..Default::default()
    };
    match &result {
        Ok(value) => {
            response.outcome = outcome_of(value) as i32;
            if !matches!(value, regorus::Value::Undefined) {
                let json = serde_json::to_value(value)
                    .map_err(|e| GatewayError::Internal(format!("decision to JSON: {e}")))?;
                response.result = Some(pb::json_to_value(&json));
            }
        }
        Err(e) => {
            response.outcome = pb::Outcome::Error as i32;
            response.error = e.to_string();
            tracing::warn!(decision.id = %decision_id, namespace = %namespace, error = %e, "gateway decision failed");
        }
    }
    logs::record(
        gw.log(),
        logs::Decided {
            decision_id: &decision_id,
            namespace: &namespace,
            path: &path,
            input: &input,
            result: &result,
            snapshot: snapshot.clone(),
            eval,
            handler: start.elapsed(),
        },
    );
    // A policy past a resource limit fails the call itself; the process goes on serving.
    if let Err(crate::policy::EvalError::Limit(message)) = &result {
        return Err(GatewayError::Invalid(message.clone()));
    }
    Ok(response)
}

/// The outcome of a decision value.
pub fn outcome_of(value: &regorus::Value) -> pb::Outcome {
    match value {
        regorus::Value::Undefined => pb::Outcome::Undefined,
        regorus::Value::Bool(true) => pb::Outcome::Allow,
        regorus::Value::Bool(false) => pb::Outcome::Deny,
        regorus::Value::Object(o) => match o.get(&regorus::Value::from("allowed")) {
            Some(regorus::Value::Bool(true)) => pb::Outcome::Allow,
            Some(regorus::Value::Bool(false)) => pb::Outcome::Deny,
            _ => pb::Outcome::Other,
        },
        _ => pb::Outcome::Other,
    }
}
