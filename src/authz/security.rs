//! Authentication and the internal token, as the Check path uses them: who the caller is
//! before Rego, and the token the upstream gets after an allow.

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;

use super::decision::TokenAsk;
use crate::authn::audit::{AuditLog, Sink};
use crate::authn::config::Authentication;
use crate::authn::identity::Identity;
use crate::authn::request::RequestView;
use crate::authn::revocation::Revocations;
use crate::authn::{Authenticator, AuthnOutcome, Credentials};
use crate::env::Env;
use crate::invalid::Invalid;
use crate::token::config::InternalToken;
use crate::token::{MintContext, Minted, Minter};

/// What the Check path uses before and after Rego.
#[derive(Debug)]
pub struct Security {
    pub authn: Option<Authenticator>,
    pub minter: Option<Minter>,
    pub audit: AuditLog,
    /// The token deny-list (`authentication.revocation`), shared with the gateway.
    pub revocations: Option<Arc<Revocations>>,
    credentials: Credentials,
}

impl Security {
    /// Builds from the `authentication` and `internal_token` sections, opening the audit sink
    /// the first names; `None` when neither is present.
    pub fn open(
        authentication: Option<&Authentication>,
        internal_token: Option<&InternalToken>,
        env: &dyn Env,
    ) -> Result<Option<Self>, Invalid> {
        if authentication.is_none() && internal_token.is_none() {
            return Ok(None);
        }
        let sink = authentication.map_or_else(|| Sink::Stderr, |a| Sink::parse(&a.audit.sink));
        let audit = AuditLog::open(&sink)
            .map_err(|e| Invalid::new("authentication.audit.sink", e.to_string()))?;
        Self::build(authentication, internal_token, audit, env).map(Some)
    }

    /// Builds with a given audit log (tests use a memory sink).
    pub fn build(
        authentication: Option<&Authentication>,
        internal_token: Option<&InternalToken>,
        audit: AuditLog,
        env: &dyn Env,
    ) -> Result<Self, Invalid> {
        let revocations = match authentication.and_then(|a| a.revocation.as_ref()) {
            Some(c) => {
                Some(Arc::new(Revocations::open(c).map_err(|m| {
                    Invalid::new("authentication.revocation.file", m)
                })?))
            }
            None => None,
        };
        let authn = match authentication {
            Some(a) => Some(
                Authenticator::build(a, audit.clone(), env)
                    .map_err(|e| {
                        Invalid::new(
                            format!("authentication.policies[{:?}]", e.policy),
                            e.message,
                        )
                    })?
                    .with_revocations(revocations.clone()),
            ),
            None => None,
        };
        let metrics = authn
            .as_ref()
            .map(|a| a.metrics().clone())
            .unwrap_or_default();
        let minter = match internal_token {
            Some(t) => Some(
                Minter::new(t.clone(), audit.clone(), metrics)
                    .map_err(|m| Invalid::new("internal_token", m))?
                    .with_revocations(revocations.clone()),
            ),
            None => None,
        };
        let credentials = authn
            .as_ref()
            .map(Authenticator::credential_locations)
            .unwrap_or_default();
        Ok(Self {
            authn,
            minter,
            audit,
            revocations,
            credentials,
        })
    }

    /// Forwards authentication and token counters to the Prometheus registry.
    pub fn connect_metrics(&self, metrics: &crate::telemetry::Metrics) {
        if let Some(a) = &self.authn {
            a.metrics().connect(metrics.clone());
            metrics.connect_authn(a.metrics().clone());
        }
        if let Some(m) = &self.minter {
            m.metrics().connect(metrics.clone());
        }
    }

    /// Authenticates a Check.
    pub async fn authenticate(&self, view: &RequestView<'_>, decision_id: &str) -> AuthnOutcome {
        match &self.authn {
            Some(a) => a.authenticate(view, decision_id).await,
            None => AuthnOutcome::NotApplicable,
        }
    }

    /// Erases credentials from an input document kept for the decision log.
    pub fn scrub(&self, input: &mut regorus::Value) {
        super::input::scrub::scrub(&self.credentials, input);
    }

    /// Every answer that lets the request through must carry Portcullis' own internal token or
    /// none: on an OK answer without a freshly minted token (a dry-run denial, an allow without
    /// a token), a caller-sent header of that name is removed. Without `internal_token` there is
    /// no such header.
    pub fn seal(&self, resp: &mut CheckResponse) {
        use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
        let Some(minter) = &self.minter else { return };
        let header = minter.config().header.as_str();
        let minted = matches!(&resp.http_response, Some(HttpResponse::OkResponse(ok))
            if ok.headers.iter().any(|h| h.header.as_ref().is_some_and(|h| h.key.eq_ignore_ascii_case(header))));
        if !minted {
            super::response::set_internal_token(resp, header, None, &[]);
        }
    }

    /// After an allow: sets the internal token header (or removes a caller-sent one); the token
    /// minted, if any. `namespace` is the deciding namespace when it is not the default one.
    pub fn apply_token(
        &self,
        resp: &mut CheckResponse,
        ask: &TokenAsk,
        identity: Option<&Identity>,
        view: &RequestView<'_>,
        decision_id: &str,
        namespace: Option<&str>,
    ) -> Option<Minted> {
        let minter = self.minter.as_ref()?;
        let cfg = minter.config();
        let default_request;
        let wanted = match ask {
            TokenAsk::Refused => None,
            TokenAsk::Requested(r) => Some(r),
            TokenAsk::Unspecified if cfg.enabled => {
                default_request = Default::default();
                Some(&default_request)
            }
            TokenAsk::Unspecified => None,
        };
        let minted = match (wanted, identity) {
            (Some(r), Some(id)) => match minter.mint(
                r,
                MintContext {
                    identity: id,
                    source_principal: view.source_principal,
                    destination_principal: view.destination_principal,
                    decision_id,
                    namespace,
                },
            ) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(decision.id = %decision_id, error = %e, "no internal token minted");
                    None
                }
            },
            (Some(_), None) => {
                tracing::debug!(decision.id = %decision_id, "internal token wanted but the caller is not authenticated");
                None
            }
            (None, _) => None,
        };
        let remove: &[&str] = if minted.is_some() && cfg.remove_authorization {
            &["authorization"]
        } else {
            &[]
        };
        super::response::set_internal_token(
            resp,
            &cfg.header,
            minted.as_ref().map(|m| m.token.as_str()),
            remove,
        );
        minted
    }
}
