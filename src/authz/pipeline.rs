//! One Check, start to end, as one straight line:
//!
//! request view (built once) → namespace → authentication → input document (with
//! `input.identity`, and `input.tls_client` when the connection presented a client certificate) → evaluation → decision → response (+ internal token) → an [`Outcome`].
//!
//! The outcome is one value: the answer, its single classification ([`CheckOutcome`]) and what
//! the metrics, the decision log and the trace read. Nothing is recorded here; the gRPC
//! service ([`super::service`]) observes the outcome.
//!
//! **Namespaces.** When namespaces are in use (`namespaces:` configured or the gateway on),
//! the Check is decided by the namespace named in the request's `namespace` context extension
//! (Envoy's `context_extensions`), else by the default namespace; otherwise the extension means
//! nothing, as in OPA-Envoy. A namespace that does not exist (or an empty or malformed name) is
//! *denied*: a PERMISSION_DENIED CheckResponse with HTTP 403, not a gRPC error, so that Envoy's
//! `failure_mode_allow` cannot turn a typo into an allow. It is classified as the error
//! `unknown_namespace`; `dry-run` applies to it like to any denial.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use regorus::Value;

use super::decision::{Decision, Deny, TokenAsk};
use super::error::CheckError;
use super::input::{self, InputOptions};
use super::response;
use super::security::Security;
use crate::authn::AuthnOutcome;
use crate::authn::request::RequestView;
use crate::namespaces::{DEFAULT_NAMESPACE, Namespaces};
use crate::policy::{PolicyStore, Snapshot};
use crate::telemetry::labels::CheckReason;
use crate::telemetry::metrics::CheckOutcome;
use crate::tls::ClientIdentity;

/// The context extension that names the namespace deciding a Check.
pub const NAMESPACE_EXTENSION: &str = "namespace";

/// Settings of the Check path that do not change at run time.
#[derive(Debug, Clone, Default)]
pub struct CheckSettings {
    pub dry_run: bool,
    pub input: InputOptions,
    /// A decision path other than the store's (a surface with its own `path`, such as
    /// ext_proc); `None`: the store's.
    pub decision_path: Option<String>,
}

/// Everything one Check did.
#[derive(Debug)]
pub struct Outcome {
    pub decision_id: String,
    /// The one classification of the Check, for metrics and traces.
    pub verdict: CheckOutcome,
    /// The answer, or the gRPC error OPA-Envoy answers with.
    pub response: Result<CheckResponse, CheckError>,
    /// The namespace that decided, or the unknown one named.
    pub namespace: String,
    /// The policies that decided, when a namespace was found.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Policy evaluation time, when the policy ran.
    pub eval: Option<Duration>,
    /// The input document with credentials erased, when asked for and built.
    pub input: Option<Value>,
    /// The policy's value, when it produced one.
    pub result: Option<Value>,
    /// What the decision log's `error` says, when something other than the policy decided.
    pub log_error: Option<(&'static str, String)>,
    /// The `jti` of the internal token minted for the request.
    pub minted_jti: Option<String>,
    /// The labels of the labelled rules that held, for the decision log's `rule_labels`.
    pub rule_labels: Vec<serde_json::Value>,
}

impl Outcome {
    fn new(decision_id: String, namespace: &str) -> Self {
        Self {
            decision_id,
            verdict: CheckOutcome::Deny,
            response: Ok(CheckResponse::default()),
            namespace: namespace.to_string(),
            snapshot: None,
            eval: None,
            input: None,
            result: None,
            log_error: None,
            minted_jti: None,
            rule_labels: Vec::new(),
        }
    }
}

/// The Check path.
#[derive(Debug, Clone)]
pub struct Pipeline {
    namespaces: Arc<Namespaces>,
    settings: Arc<CheckSettings>,
    security: Option<Arc<Security>>,
}

impl Pipeline {
    pub fn new(
        namespaces: Arc<Namespaces>,
        settings: CheckSettings,
        security: Option<Arc<Security>>,
    ) -> Self {
        Self {
            namespaces,
            settings: Arc::new(settings),
            security,
        }
    }

    /// Every namespace, the default one included.
    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.namespaces
    }

    /// The default namespace's store.
    pub fn store(&self) -> &Arc<PolicyStore> {
        self.namespaces.default_store()
    }

    /// Authentication and internal tokens, when configured.
    pub fn security(&self) -> Option<&Arc<Security>> {
        self.security.as_ref()
    }

    /// The namespace a Check names, and its store (`Err`: the name, which is unknown).
    fn select<'r>(&self, req: &'r CheckRequest) -> Result<(&'r str, Arc<PolicyStore>), &'r str> {
        let named = req
            .attributes
            .as_ref()
            .filter(|_| self.namespaces.selecting())
            .and_then(|a| a.context_extensions.get(NAMESPACE_EXTENSION));
        match named {
            None => Ok((DEFAULT_NAMESPACE, self.store().clone())),
            Some(name) => match self.namespaces.get(name) {
                Some(store) => Ok((name.as_str(), store)),
                None => Err(name.as_str()),
            },
        }
    }

    /// Answers one Check. With `keep_input`, the outcome carries the input document with
    /// credentials erased (for the decision log). `client` is the verified client certificate
    /// of the connection the Check came on (the proxy's, not the end user's): `input.tls_client`.
    pub async fn check_from(
        &self,
        req: &CheckRequest,
        keep_input: bool,
        client: Option<&ClientIdentity>,
    ) -> Outcome {
        let decision_id = uuid::Uuid::new_v4().to_string();
        let mut outcome = match self.select(req) {
            Ok((namespace, store)) => {
                let mut outcome = Outcome::new(decision_id, namespace);
                outcome.snapshot = Some(store.snapshot());
                self.decide(req, keep_input, client, &mut outcome).await;
                outcome
            }
            Err(name) => self.unknown_namespace(decision_id, name),
        };
        if let (Some(s), Ok(resp)) = (&self.security, &mut outcome.response) {
            s.seal(resp);
        }
        outcome
    }

    fn unknown_namespace(&self, decision_id: String, name: &str) -> Outcome {
        tracing::info!(decision.id = %decision_id, namespace = %name.chars().take(64).collect::<String>(), "Check names an unknown namespace: denied");
        let mut outcome = Outcome::new(decision_id, name);
        outcome.verdict = CheckOutcome::Error(CheckReason::UnknownNamespace);
        outcome.log_error = Some((
            CheckReason::UnknownNamespace.as_str(),
            "unknown namespace".into(),
        ));
        outcome.response = Ok(Decision::Deny(Deny {
            headers: Vec::new(),
            body: String::new(),
            http_status: envoy_types::pb::envoy::r#type::v3::StatusCode::Forbidden,
            dynamic_metadata: None,
        })
        .into_response(&outcome.decision_id, self.settings.dry_run));
        outcome
    }

    /// The Check in a known namespace; fills `outcome`.
    async fn decide(
        &self,
        req: &CheckRequest,
        keep_input: bool,
        client: Option<&ClientIdentity>,
        outcome: &mut Outcome,
    ) {
        let id = outcome.decision_id.clone();
        let dry_run = self.settings.dry_run;
        // The request as authentication reads it; only built when authentication or tokens are
        // configured.
        let view = self.security.as_ref().map(|_| RequestView::from_check(req));
        let authn = match (&self.security, &view) {
            (Some(s), Some(view)) => s.authenticate(view, &id).await,
            _ => AuthnOutcome::NotApplicable,
        };
        let identity = match authn {
            AuthnOutcome::Denied(denial) => {
                outcome.log_error = Some(("authentication_refused", denial.code.to_string()));
                outcome.response = Ok(response::authn_denied(&denial, &id, dry_run));
                return;
            }
            AuthnOutcome::Authenticated(identity) => Some(Some(identity)),
            AuthnOutcome::Anonymous => Some(None),
            AuthnOutcome::NotApplicable => None,
        };
        let mut input = match input::build(req, &self.settings.input) {
            Ok(input) => input,
            Err(e) => {
                tracing::info!(decision.id = %id, error = %e, "request parse error");
                outcome.verdict = CheckOutcome::Error(CheckReason::RequestParseError);
                outcome.log_error = Some((CheckReason::RequestParseError.as_str(), e.to_string()));
                outcome.response = Ok(response::parse_error(&e, &id));
                return;
            }
        };
        if let Some(identity) = &identity {
            crate::authn::identity::attach(&mut input, identity.as_deref());
        }
        if let Some(client) = client {
            attach_tls_client(&mut input, client);
        }
        if keep_input {
            let mut logged = input.clone();
            if let Some(s) = &self.security {
                s.scrub(&mut logged);
            }
            outcome.input = Some(logged);
        }
        let Some(snapshot) = outcome.snapshot.clone() else {
            return;
        };
        // Rule labels are for the decision log only: worked out when it is on and some rule
        // the decision depends on has labels.
        let labels_input = (keep_input && snapshot.has_rule_labels()).then(|| input.clone());
        let evaluation = {
            let _span = tracing::debug_span!("policy.eval", policy.revision = snapshot.revision())
                .entered();
            match &self.settings.decision_path {
                None => snapshot.eval(input),
                Some(path) => {
                    let start = std::time::Instant::now();
                    snapshot
                        .eval_path(path, Some(input))
                        .map(|value| crate::policy::Evaluation {
                            value,
                            prints: Vec::new(),
                            elapsed: start.elapsed(),
                        })
                }
            }
        };
        let evaluation = match evaluation {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(decision.id = %id, error = %e, "policy evaluation failed");
                self.fail(outcome, CheckError::Eval(e));
                return;
            }
        };
        outcome.eval = Some(evaluation.elapsed);
        if let Some(input) = labels_input {
            outcome.rule_labels = snapshot.rule_labels(input);
        }
        for line in &evaluation.prints {
            tracing::info!(decision.id = %id, "{line}");
        }
        let decision = Decision::try_from(&evaluation.value);
        if keep_input {
            outcome.result = Some(evaluation.value);
        }
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(decision.id = %id, error = %e, "invalid decision");
                self.fail(outcome, CheckError::Decision(e));
                return;
            }
        };
        tracing::debug!(
            decision.id = %id,
            decision.allowed = decision.allowed(),
            eval.ns = evaluation.elapsed.as_nanos() as u64,
            "decision"
        );
        let allowed = decision.allowed();
        outcome.verdict = if allowed {
            CheckOutcome::Allow
        } else {
            CheckOutcome::Deny
        };
        let ask = match &decision {
            Decision::Allow(a) => a.internal_token.clone(),
            _ => TokenAsk::Unspecified,
        };
        let mut resp = decision.into_response(&id, dry_run);
        if allowed && let (Some(s), Some(view)) = (&self.security, &view) {
            let namespace =
                (outcome.namespace != DEFAULT_NAMESPACE).then_some(outcome.namespace.as_str());
            let minted = s.apply_token(
                &mut resp,
                &ask,
                identity.flatten().as_deref(),
                view,
                &id,
                namespace,
            );
            outcome.minted_jti = minted.map(|m| m.jti);
        }
        outcome.response = Ok(resp);
    }

    fn fail(&self, outcome: &mut Outcome, error: CheckError) {
        outcome.verdict = CheckOutcome::Error(error.reason());
        outcome.log_error = Some((error.reason().as_str(), error.to_string()));
        outcome.response = Err(error);
    }
}

/// The input document key of the connection's verified client certificate.
pub const TLS_CLIENT_KEY: &str = "tls_client";

/// Adds `input.tls_client` (see [`ClientIdentity::to_json`]).
fn attach_tls_client(input: &mut Value, client: &ClientIdentity) {
    let value = Value::from(client.to_json());
    if let Ok(obj) = input.as_object_mut() {
        obj.insert(Value::from(TLS_CLIENT_KEY), value);
    }
}
