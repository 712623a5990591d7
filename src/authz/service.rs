//! The `envoy.service.auth.v3.Authorization` gRPC service: a thin handler around the
//! [`Pipeline`] that observes each [`Outcome`] once: metrics always, the trace span when
//! tracing is on, the decision log when it is enabled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::error::CheckError;
use super::pipeline::{CheckSettings, Outcome, Pipeline};
use super::security::Security;
use crate::decision_log::{DecisionLog, DecisionRecord};
use crate::namespaces::Namespaces;
use crate::policy::PolicyStore;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::CheckOutcome;
use crate::telemetry::trace;
use crate::tls::ClientIdentity;

/// The ext_authz service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    pipeline: Pipeline,
    log: DecisionLog,
    metrics: Metrics,
}

impl AuthzService {
    /// The service over `namespaces`, with authentication and internal tokens when `security`
    /// is set.
    pub fn new(
        namespaces: Arc<Namespaces>,
        settings: CheckSettings,
        security: Option<Arc<Security>>,
        log: DecisionLog,
        metrics: Metrics,
    ) -> Self {
        Self {
            pipeline: Pipeline::new(namespaces, settings, security),
            log,
            metrics,
        }
    }

    /// The default namespace's store.
    pub fn store(&self) -> &Arc<PolicyStore> {
        self.pipeline.store()
    }

    /// Authentication and internal tokens, when configured.
    pub fn security(&self) -> Option<&Arc<Security>> {
        self.pipeline.security()
    }

    /// Answers one Check. Errors are those OPA-Envoy answers with a gRPC error.
    pub async fn check(&self, req: &CheckRequest) -> Result<CheckResponse, CheckError> {
        self.check_in(req, None, &tracing::Span::none()).await
    }

    /// Answers one Check inside `span` (the `ext_authz.check` span, usually disabled) and
    /// observes it; `client` is the connection's verified client certificate. Every surface
    /// that answers from the Check path (ext_authz, ext_proc, the HTTP listener
    /// [`super::http`]) comes through here.
    pub(crate) async fn check_in(
        &self,
        req: &CheckRequest,
        client: Option<&ClientIdentity>,
        span: &tracing::Span,
    ) -> Result<CheckResponse, CheckError> {
        let start = Instant::now();
        let outcome = self
            .pipeline
            .check_from(req, self.log.enabled(), client)
            .await;
        self.observe(outcome, start.elapsed(), span)
    }

    /// Records the outcome in the metrics, the span and the decision log; its answer.
    fn observe(
        &self,
        outcome: Outcome,
        handler: Duration,
        span: &tracing::Span,
    ) -> Result<CheckResponse, CheckError> {
        self.metrics.check(outcome.verdict, handler, outcome.eval);
        if !span.is_disabled() {
            span.record("decision.id", outcome.decision_id.as_str());
            span.record("decision.outcome", outcome.verdict.as_str());
            if let CheckOutcome::Error(reason) = outcome.verdict {
                span.record("error.reason", reason.as_str());
                span.record("otel.status_code", "error");
            }
        }
        if self.log.enabled() {
            let mut record = DecisionRecord::new(&outcome.decision_id);
            record.input = outcome.input;
            record.result = outcome.result;
            record.error = outcome.log_error;
            record.snapshot = outcome.snapshot;
            if self.pipeline.namespaces().selecting() {
                // Otherwise the log labels the event with the context extension, if any.
                record.namespace = Some(outcome.namespace);
            }
            record.internal_token_jti = outcome.minted_jti;
            record.rule_labels = outcome.rule_labels;
            record.eval = outcome.eval;
            record.handler = handler;
            record.trace = trace::span_ids(span);
            self.log.record(record);
        }
        outcome.response
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let client = crate::tls::client_of(request.extensions());
        let req = request.get_ref();
        let span = tracing::debug_span!(
            "ext_authz.check",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "envoy.service.auth.v3.Authorization",
            rpc.method = "Check",
            decision.id = Empty,
            decision.outcome = Empty,
            error.reason = Empty,
            otel.status_code = Empty,
        );
        if !span.is_disabled()
            && let Some(http) = req
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref())
        {
            trace::set_remote_parent(&span, &http.headers);
        }
        self.check_in(req, client.as_deref(), &span)
            .instrument(span.clone())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
