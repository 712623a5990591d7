//! The `envoy.service.auth.v3.Authorization` gRPC service: a thin handler that chains
//! [`input::build`], [`Snapshot::eval`], [`Decision::try_from`] and [`Decision::into_response`].

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use super::decision::Decision;
use super::input::{self, InputOptions};
use super::response;
use crate::grpc::status::CheckError;
use crate::policy::{PolicyStore, Snapshot};
use crate::telemetry::decision_log::{DecisionEvent, DecisionLog};

/// Settings of the Check path that do not change at run time.
#[derive(Debug, Clone, Default)]
pub struct CheckSettings {
    pub dry_run: bool,
    pub input: InputOptions,
    /// The decision path, for logs.
    pub path: String,
}

/// The ext_authz service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    store: Arc<PolicyStore>,
    settings: Arc<CheckSettings>,
    log: DecisionLog,
}

impl AuthzService {
    pub fn new(store: Arc<PolicyStore>, settings: CheckSettings, log: DecisionLog) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            log,
        }
    }

    /// Answers one Check. Errors are those OPA-Envoy answers with a gRPC error.
    pub fn check(&self, req: &CheckRequest) -> Result<CheckResponse, CheckError> {
        let start = Instant::now();
        let decision_id = uuid::Uuid::new_v4().to_string();
        let snapshot = self.store.snapshot();
        let mut outcome = Outcome::default();
        let result = self.decide(req, &decision_id, &snapshot, &mut outcome);
        if self.log.enabled() {
            let error = result.as_ref().err().map(|e| (e.reason(), e.to_string()));
            self.log.record(DecisionEvent::new(
                &decision_id,
                &self.settings.path,
                outcome.input.as_ref(),
                outcome.result.as_ref(),
                error,
                snapshot.revision(),
                outcome.eval,
                start.elapsed(),
            ));
        }
        result
    }

    fn decide(
        &self,
        req: &CheckRequest,
        decision_id: &str,
        snapshot: &Snapshot,
        outcome: &mut Outcome,
    ) -> Result<CheckResponse, CheckError> {
        let input = match input::build(req, &self.settings.input) {
            Ok(input) => input,
            Err(e) => {
                tracing::info!(decision.id = %decision_id, error = %e, "request parse error");
                return Ok(response::parse_error(&e, decision_id));
            }
        };
        if self.log.enabled() {
            outcome.input = Some(input.clone());
        }
        let evaluation = snapshot.eval(input).map_err(|e| {
            tracing::warn!(decision.id = %decision_id, error = %e, "policy evaluation failed");
            CheckError::Eval(e)
        })?;
        outcome.eval = evaluation.elapsed;
        for line in &evaluation.prints {
            tracing::info!(decision.id = %decision_id, "{line}");
        }
        let decision = Decision::try_from(&evaluation.value).map_err(|e| {
            tracing::warn!(decision.id = %decision_id, error = %e, "invalid decision");
            CheckError::Decision(e)
        })?;
        if self.log.enabled() {
            outcome.result = Some(evaluation.value);
        }
        tracing::debug!(
            decision.id = %decision_id,
            decision.allowed = decision.allowed(),
            eval.ns = outcome.eval.as_nanos() as u64,
            "decision"
        );
        Ok(decision.into_response(decision_id, self.settings.dry_run))
    }
}

/// What the decision log needs to know about one Check.
#[derive(Debug, Default)]
struct Outcome {
    input: Option<regorus::Value>,
    result: Option<regorus::Value>,
    eval: std::time::Duration,
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        AuthzService::check(self, request.get_ref())
            .map(Response::new)
            .map_err(Status::from)
    }
}
