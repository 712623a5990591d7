//! The `envoy.service.auth.v3.Authorization` gRPC service: a thin handler that chains
//! authentication ([`Security::authenticate`]), [`input::build`] (plus `input.identity`),
//! [`Snapshot::eval`], [`Decision::try_from`], [`Decision::into_response`] and, on an allow, the
//! internal token ([`Security::apply_token`]).

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use super::decision::{Decision, TokenAsk};
use super::input::{self, InputOptions};
use super::response;
use crate::authn::AuthnOutcome;
use crate::authn::security::Security;
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
    security: Option<Arc<Security>>,
}

impl AuthzService {
    pub fn new(store: Arc<PolicyStore>, settings: CheckSettings, log: DecisionLog) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            log,
            security: None,
        }
    }

    /// Adds authentication and internal tokens.
    pub fn with_security(mut self, security: Option<Arc<Security>>) -> Self {
        self.security = security;
        self
    }

    /// Authentication and internal tokens, when configured.
    pub fn security(&self) -> Option<&Arc<Security>> {
        self.security.as_ref()
    }

    /// Answers one Check. Errors are those OPA-Envoy answers with a gRPC error.
    pub async fn check(&self, req: &CheckRequest) -> Result<CheckResponse, CheckError> {
        let start = Instant::now();
        let decision_id = uuid::Uuid::new_v4().to_string();
        let authn = match &self.security {
            Some(s) => s.authenticate(req, &decision_id).await,
            None => AuthnOutcome::NotApplicable,
        };
        let snapshot = self.store.snapshot();
        let mut outcome = Outcome::default();
        let result = self.decide(req, &decision_id, &snapshot, &mut outcome, authn);
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
        authn: AuthnOutcome,
    ) -> Result<CheckResponse, CheckError> {
        let identity = match authn {
            AuthnOutcome::Denied(denial) => {
                return Ok(response::authn_denied(
                    &denial,
                    decision_id,
                    self.settings.dry_run,
                ));
            }
            AuthnOutcome::Authenticated(id) => Some(Some(id)),
            AuthnOutcome::Anonymous => Some(None),
            AuthnOutcome::NotApplicable => None,
        };
        let mut input = match input::build(req, &self.settings.input) {
            Ok(input) => input,
            Err(e) => {
                tracing::info!(decision.id = %decision_id, error = %e, "request parse error");
                return Ok(response::parse_error(&e, decision_id));
            }
        };
        if let Some(id) = &identity {
            crate::authn::identity::attach(&mut input, id.as_deref());
        }
        if self.log.enabled() {
            let mut logged = input.clone();
            if let Some(s) = &self.security {
                s.scrub(&mut logged);
            }
            outcome.input = Some(logged);
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
        let allowed = decision.allowed();
        let ask = match &decision {
            Decision::Allow(a) => a.internal_token.clone(),
            _ => TokenAsk::Unspecified,
        };
        let mut resp = decision.into_response(decision_id, self.settings.dry_run);
        if allowed && let Some(s) = &self.security {
            s.apply_token(
                &mut resp,
                &ask,
                identity.flatten().as_deref(),
                req,
                decision_id,
            );
        }
        Ok(resp)
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
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
