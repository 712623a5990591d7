//! `StatusService.GetStatus`: version, uptime, and the revisions of the namespaces the caller
//! may read.
//!
//! Any caller that may read something gets an answer: the namespaces listed are those it may
//! read at namespace level; a caller that may read nothing at all (no grant, or none within
//! its own scope) is PERMISSION_DENIED.

use std::time::UNIX_EPOCH;

use tonic::{Request, Response, Status};

use super::access::{Rpc, caller_target, namespace_target};
use super::caller::GrantKind;
use super::pb::{self, GetStatusRequest, GetStatusResponse, NamespaceStatus};
use super::{Gateway, GatewayError, caller_of};
use crate::namespaces::DEFAULT_NAMESPACE;

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Gateway);

#[tonic::async_trait]
impl pb::status_service_server::StatusService for Service {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let caller = caller_of(&request)?;
        let namespaces: Vec<NamespaceStatus> = self
            .0
            .namespaces()
            .all()
            .into_iter()
            .filter(|(name, _)| caller.allows(GrantKind::Read, &namespace_target(name)))
            .map(|(name, store)| {
                let snapshot = store.snapshot();
                NamespaceStatus {
                    name,
                    revision: snapshot.revision(),
                    policies: u32::try_from(snapshot.modules().len()).unwrap_or(u32::MAX),
                    loaded_at: snapshot
                        .loaded_at()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                }
            })
            .collect();
        if namespaces.is_empty() {
            let own = caller_target(&caller, None, "", "", "");
            Rpc::GetStatus
                .authorize(&caller, &own)
                .map_err(GatewayError::from)?;
        }
        let default = self.0.namespaces().default_store().snapshot();
        // Bundles feed the default namespace: shown to callers that may read it.
        let bundle_revisions =
            if caller.allows(GrantKind::Read, &namespace_target(DEFAULT_NAMESPACE)) {
                default
                    .bundles()
                    .iter()
                    .map(|b| (b.name.clone(), b.revision.clone()))
                    .collect()
            } else {
                Default::default()
            };
        Ok(Response::new(GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.0.uptime().as_secs(),
            policy_revision: default.revision(),
            bundle_revisions,
            namespaces,
            default_namespace: DEFAULT_NAMESPACE.to_string(),
            auth_mode: self.0.authenticator().mode().name().to_string(),
        }))
    }
}
