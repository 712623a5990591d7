//! The `envoy.service.auth.v3.Authorization` gRPC service: a thin handler that chains
//! authentication ([`Security::authenticate`]), [`input::build`] (plus `input.identity`),
//! [`Snapshot::eval`], [`Decision::try_from`], [`Decision::into_response`] and, on an allow, the
//! internal token ([`Security::apply_token`]); then records the outcome (metrics always; the
//! decision log when enabled).
//!
//! **Namespaces.** When namespaces are in use (`namespaces:` configured or the gateway on),
//! the Check is decided by the namespace named in the request's `namespace` context extension
//! (Envoy's `context_extensions`), else by the default namespace; otherwise the extension means
//! nothing, as in OPA-Envoy. A namespace that does not exist (or an empty or malformed name) is
//! *denied*: a PERMISSION_DENIED CheckResponse with HTTP 403, not a gRPC error, so that Envoy's
//! `failure_mode_allow` cannot turn a typo into an allow. It is counted and logged with the
//! reason `unknown_namespace`; `dry-run` applies to it like to any denial.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::decision::{Decision, Deny, TokenAsk};
use super::input::{self, InputOptions};
use super::response;
use crate::authn::AuthnOutcome;
use crate::authn::security::Security;
use crate::decision_log::{DecisionLog, DecisionRecord};
use crate::grpc::status::CheckError;
use crate::namespaces::{DEFAULT_NAMESPACE, Namespaces};
use crate::policy::{PolicyStore, Snapshot};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::CheckOutcome;
use crate::telemetry::trace;

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
    metrics: Metrics,
    security: Option<Arc<Security>>,
}

/// The context extension that names the namespace deciding a Check.
pub const NAMESPACE_EXTENSION: &str = "namespace";

impl AuthzService {
    pub fn new(
        store: Arc<PolicyStore>,
        settings: CheckSettings,
        log: DecisionLog,
        metrics: Metrics,
    ) -> Self {
        Self {
            namespaces: Arc::new(Namespaces::new(store.clone())),
            store,
            settings: Arc::new(settings),
            log,
            metrics,
            security: None,
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
            .filter(|_| self.namespaces.selecting())
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
        self.metrics.check(
            CheckOutcome::Error("unknown_namespace"),
            start.elapsed(),
            None,
        );
        if self.log.enabled() {
            let mut record = DecisionRecord::new(decision_id);
            record.error = Some(("unknown_namespace", "unknown namespace".to_string()));
            record.namespace = Some(name.to_string());
            record.handler = start.elapsed();
            self.log.record(record);
        }
        Decision::Deny(Deny {
            headers: Vec::new(),
            body: String::new(),
            http_status: envoy_types::pb::envoy::r#type::v3::StatusCode::Forbidden,
            dynamic_metadata: None,
        })
        .into_response(decision_id, self.settings.dry_run)
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
        self.check_in(req, &tracing::Span::none()).await
    }

    /// Answers one Check inside `span` (the `ext_authz.check` span, usually disabled).
    async fn check_in(
        &self,
        req: &CheckRequest,
        span: &tracing::Span,
    ) -> Result<CheckResponse, CheckError> {
        let start = Instant::now();
        let decision_id = uuid::Uuid::new_v4().to_string();
        span.record("decision.id", decision_id.as_str());
        let (namespace, store) = match self.select(req) {
            Ok(selected) => selected,
            Err(name) => {
                let mut resp = self.unknown_namespace(name, &decision_id, start);
                if let Some(s) = &self.security {
                    s.seal(&mut resp);
                }
                return Ok(resp);
            }
        };
        let authn = match &self.security {
            Some(s) => s.authenticate(req, &decision_id).await,
            None => AuthnOutcome::NotApplicable,
        };
        let snapshot = store.snapshot();
        let mut record = self
            .log
            .enabled()
            .then(|| DecisionRecord::new(&decision_id));
        let mut eval = None;
        let minting_namespace = (namespace != DEFAULT_NAMESPACE).then_some(namespace);
        let result = self.decide(
            req,
            &decision_id,
            &snapshot,
            &mut record,
            &mut eval,
            authn,
            minting_namespace,
        );
        let handler = start.elapsed();
        let outcome = match &result {
            Ok((_, outcome)) => *outcome,
            Err(e) => CheckOutcome::Error(e.reason()),
        };
        self.metrics.check(outcome, handler, eval);
        if !span.is_disabled() {
            match outcome {
                CheckOutcome::Allow => span.record("decision.outcome", "allow"),
                CheckOutcome::Deny => span.record("decision.outcome", "deny"),
                CheckOutcome::Error(reason) => {
                    span.record("decision.outcome", "error");
                    span.record("error.reason", reason);
                    span.record("otel.status_code", "error")
                }
            };
        }
        if let Some(mut record) = record {
            if let Err(e) = &result {
                record.error = Some((e.reason(), e.to_string()));
            }
            record.snapshot = Some(snapshot);
            if self.namespaces.selecting() {
                // Otherwise the log labels the event with the context extension, if any.
                record.namespace = Some(namespace.to_string());
            }
            record.eval = eval;
            record.handler = handler;
            record.trace = trace::span_ids(span);
            self.log.record(record);
        }
        result.map(|(mut response, _)| {
            if let Some(s) = &self.security {
                s.seal(&mut response);
            }
            response
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        req: &CheckRequest,
        decision_id: &str,
        snapshot: &Snapshot,
        record: &mut Option<DecisionRecord>,
        eval: &mut Option<Duration>,
        authn: AuthnOutcome,
        namespace: Option<&str>,
    ) -> Result<(CheckResponse, CheckOutcome), CheckError> {
        let identity = match authn {
            AuthnOutcome::Denied(denial) => {
                if let Some(r) = record {
                    r.error = Some(("authentication_refused", denial.code.to_string()));
                }
                return Ok((
                    response::authn_denied(&denial, decision_id, self.settings.dry_run),
                    CheckOutcome::Deny,
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
                if let Some(r) = record {
                    r.error = Some(("request_parse_error", e.to_string()));
                }
                return Ok((
                    response::parse_error(&e, decision_id),
                    CheckOutcome::Error("request_parse_error"),
                ));
            }
        };
        if let Some(id) = &identity {
            crate::authn::identity::attach(&mut input, id.as_deref());
        }
        if let Some(r) = record {
            let mut logged = input.clone();
            if let Some(s) = &self.security {
                s.scrub(&mut logged);
            }
            r.input = Some(logged);
        }
        let evaluation = {
            let _span = tracing::debug_span!("policy.eval", policy.revision = snapshot.revision())
                .entered();
            snapshot.eval(input).map_err(|e| {
                tracing::warn!(decision.id = %decision_id, error = %e, "policy evaluation failed");
                CheckError::Eval(e)
            })?
        };
        *eval = Some(evaluation.elapsed);
        for line in &evaluation.prints {
            tracing::info!(decision.id = %decision_id, "{line}");
        }
        if let Some(r) = record {
            r.result = Some(evaluation.value.clone());
        }
        let decision = Decision::try_from(&evaluation.value).map_err(|e| {
            tracing::warn!(decision.id = %decision_id, error = %e, "invalid decision");
            CheckError::Decision(e)
        })?;
        tracing::debug!(
            decision.id = %decision_id,
            decision.allowed = decision.allowed(),
            eval.ns = evaluation.elapsed.as_nanos() as u64,
            "decision"
        );
        let outcome = if decision.allowed() {
            CheckOutcome::Allow
        } else {
            CheckOutcome::Deny
        };
        let ask = match &decision {
            Decision::Allow(a) => a.internal_token.clone(),
            _ => TokenAsk::Unspecified,
        };
        let mut resp = decision.into_response(decision_id, self.settings.dry_run);
        if outcome == CheckOutcome::Allow
            && let Some(s) = &self.security
        {
            s.apply_token(
                &mut resp,
                &ask,
                identity.flatten().as_deref(),
                req,
                decision_id,
                namespace,
            );
        }
        Ok((resp, outcome))
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
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
        self.check_in(req, &span)
            .instrument(span.clone())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
