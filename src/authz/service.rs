//! The `envoy.service.auth.v3.Authorization` gRPC service: a thin handler that chains
//! [`input::build`], [`Snapshot::eval`], [`Decision::try_from`] and [`Decision::into_response`].
//!
//! **Namespaces.** The Check is decided by the namespace named in the request's `namespace`
//! context extension (Envoy's `context_extensions`), else by the default namespace. A
//! namespace that does not exist (or an empty or malformed name) is *denied*: a
//! PERMISSION_DENIED CheckResponse with HTTP 403, not a gRPC error, so that Envoy's
//! `failure_mode_allow` cannot turn a typo into an allow. The decision log records it with the
//! error code `unknown_namespace`; `dry-run` applies to it like to any denial.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use super::decision::{Decision, Deny};
use super::input::{self, InputOptions};
use super::response;
use crate::grpc::status::CheckError;
use crate::namespaces::{DEFAULT_NAMESPACE, Namespaces};
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
    namespaces: Arc<Namespaces>,
    settings: Arc<CheckSettings>,
    log: DecisionLog,
}

/// The context extension that names the namespace deciding a Check.
pub const NAMESPACE_EXTENSION: &str = "namespace";

impl AuthzService {
    pub fn new(store: Arc<PolicyStore>, settings: CheckSettings, log: DecisionLog) -> Self {
        Self {
            namespaces: Arc::new(Namespaces::new(store.clone())),
            store,
            settings: Arc::new(settings),
            log,
        }
    }

    /// Decides Checks with these namespaces (the default one included).
    pub fn with_namespaces(mut self, namespaces: Arc<Namespaces>) -> Self {
        self.store = namespaces.default_store().clone();
        self.namespaces = namespaces;
        self
    }

    /// The namespace a Check names, and its store (`Err`: the name, which is unknown).
    fn select<'r>(&self, req: &'r CheckRequest) -> Result<(&'r str, Arc<PolicyStore>), &'r str> {
        let named = req
            .attributes
            .as_ref()
            .and_then(|a| a.context_extensions.get(NAMESPACE_EXTENSION));
        match named {
            None => Ok((DEFAULT_NAMESPACE, self.store.clone())),
            Some(name) => match self.namespaces.get(name) {
                Some(store) => Ok((name.as_str(), store)),
                None => Err(name.as_str()),
            },
        }
    }

    /// The denial of a Check that names an unknown namespace.
    fn unknown_namespace(&self, name: &str, decision_id: &str, start: Instant) -> CheckResponse {
        tracing::info!(decision.id = %decision_id, namespace = %name.chars().take(64).collect::<String>(), "Check names an unknown namespace: denied");
        if self.log.enabled() {
            self.log.record(
                DecisionEvent::new(
                    decision_id,
                    &self.settings.path,
                    None,
                    None,
                    Some(("unknown_namespace", "unknown namespace".to_string())),
                    0,
                    std::time::Duration::ZERO,
                    start.elapsed(),
                )
                .with_namespace(name),
            );
        }
        Decision::Deny(Deny {
            headers: Vec::new(),
            body: String::new(),
            http_status: envoy_types::pb::envoy::r#type::v3::StatusCode::Forbidden,
            dynamic_metadata: None,
        })
        .into_response(decision_id, self.settings.dry_run)
    }

    /// Answers one Check. Errors are those OPA-Envoy answers with a gRPC error.
    pub fn check(&self, req: &CheckRequest) -> Result<CheckResponse, CheckError> {
        let start = Instant::now();
        let decision_id = uuid::Uuid::new_v4().to_string();
        let (namespace, store) = match self.select(req) {
            Ok(selected) => selected,
            Err(name) => return Ok(self.unknown_namespace(name, &decision_id, start)),
        };
        let snapshot = store.snapshot();
        let mut outcome = Outcome::default();
        let result = self.decide(req, &decision_id, &snapshot, &mut outcome);
        if self.log.enabled() {
            let error = result.as_ref().err().map(|e| (e.reason(), e.to_string()));
            self.log.record(
                DecisionEvent::new(
                    &decision_id,
                    &self.settings.path,
                    outcome.input.as_ref(),
                    outcome.result.as_ref(),
                    error,
                    snapshot.revision(),
                    outcome.eval,
                    start.elapsed(),
                )
                .with_namespace(namespace),
            );
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
