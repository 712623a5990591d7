//! Authentication and the internal token, wired together for the Check path.

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use super::audit::{AuditLog, Sink};
use super::identity::Identity;
use super::request::RequestView;
use super::{Authenticator, AuthnOutcome};
use crate::authz::decision::TokenAsk;
use crate::config::Config;
use crate::env::Env;
use crate::token::{MintContext, Minter};

/// What the Check path uses before and after Rego.
#[derive(Debug)]
pub struct Security {
    pub authn: Option<Authenticator>,
    pub minter: Option<Minter>,
    pub audit: AuditLog,
    credentials: crate::authz::input::scrub::Credentials,
}

impl Security {
    /// Builds from the config's `authentication` and `internal_token` sections; `None` when
    /// neither is present.
    pub fn from_config(config: &Config, env: &dyn Env) -> Result<Option<Self>, String> {
        if config.authentication.is_none() && config.internal_token.is_none() {
            return Ok(None);
        }
        let sink = config
            .authentication
            .as_ref()
            .map_or_else(|| Sink::Stderr, |a| Sink::parse(&a.audit.sink));
        let audit = AuditLog::open(&sink).map_err(|e| format!("authentication.audit.sink: {e}"))?;
        Self::build(config, audit, env).map(Some)
    }

    /// Builds with a given audit log (tests use a memory sink).
    pub fn build(config: &Config, audit: AuditLog, env: &dyn Env) -> Result<Self, String> {
        let authn = match &config.authentication {
            Some(a) => {
                Some(Authenticator::build(a, audit.clone(), env).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let metrics = authn
            .as_ref()
            .map(|a| a.metrics().clone())
            .unwrap_or_default();
        let minter = match &config.internal_token {
            Some(t) => Some(Minter::new(t.clone(), audit.clone(), metrics)?),
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
            credentials,
        })
    }

    /// Forwards authentication and token counters to the Prometheus registry.
    pub fn connect_metrics(&self, metrics: &crate::telemetry::Metrics) {
        if let Some(a) = &self.authn {
            a.metrics().connect(metrics.clone());
        }
        if let Some(m) = &self.minter {
            m.metrics().connect(metrics.clone());
        }
    }

    /// Authenticates a Check.
    pub async fn authenticate(&self, req: &CheckRequest, decision_id: &str) -> AuthnOutcome {
        match &self.authn {
            Some(a) => {
                a.authenticate(&RequestView::from_check(req), decision_id)
                    .await
            }
            None => AuthnOutcome::NotApplicable,
        }
    }

    /// Erases credentials from an input document kept for the decision log.
    pub fn scrub(&self, input: &mut regorus::Value) {
        self.credentials.scrub(input);
    }

    /// Every answer that lets the request through must carry Portcullis' own internal token or
    /// none: on an OK answer without a freshly minted token (a dry-run denial, an allow without
    /// a token), a caller-sent header of that name is removed. Without `internal_token` there is
    /// no such header.
    pub fn seal(&self, resp: &mut envoy_types::pb::envoy::service::auth::v3::CheckResponse) {
        use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
        let Some(minter) = &self.minter else { return };
        let header = minter.config().header.as_str();
        let minted = matches!(&resp.http_response, Some(HttpResponse::OkResponse(ok))
            if ok.headers.iter().any(|h| h.header.as_ref().is_some_and(|h| h.key.eq_ignore_ascii_case(header))));
        if !minted {
            crate::authz::response::set_internal_token(resp, header, None, &[]);
        }
    }

    /// After an allow: sets the internal token header (or removes a caller-sent one).
    /// `namespace` is the deciding namespace when it is not the default one.
    pub fn apply_token(
        &self,
        resp: &mut envoy_types::pb::envoy::service::auth::v3::CheckResponse,
        ask: &TokenAsk,
        identity: Option<&Identity>,
        req: &CheckRequest,
        decision_id: &str,
        namespace: Option<&str>,
    ) {
        let Some(minter) = &self.minter else { return };
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
        let token = match (wanted, identity) {
            (Some(r), Some(id)) => {
                let view = RequestView::from_check(req);
                match minter.mint(
                    r,
                    MintContext {
                        identity: id,
                        source_principal: view.source_principal,
                        destination_principal: view.destination_principal,
                        decision_id,
                        namespace,
                    },
                ) {
                    Ok(m) => Some(m.token),
                    Err(e) => {
                        tracing::warn!(decision.id = %decision_id, error = %e, "no internal token minted");
                        None
                    }
                }
            }
            (Some(_), None) => {
                tracing::debug!(decision.id = %decision_id, "internal token wanted but the caller is not authenticated");
                None
            }
            (None, _) => None,
        };
        let remove: &[&str] = if token.is_some() && cfg.remove_authorization {
            &["authorization"]
        } else {
            &[]
        };
        crate::authz::response::set_internal_token(resp, &cfg.header, token.as_deref(), remove);
    }
}

/// Shared handle.
pub type SharedSecurity = Arc<Security>;
