//! `PolicyService`: list, read, write and delete the Rego modules of a namespace.
//!
//! Writes compile the whole namespace before they swap (see `crate::policy::overlay`); a
//! write to a namespace that does not exist creates it. Reads of an unknown namespace are
//! NOT_FOUND (after the scope check, so they reveal nothing to a caller without access).

use tonic::{Request, Response, Status};

use super::access::{Rpc, namespace_of, namespace_target};
use super::pb::{
    self, DeletePolicyRequest, GetPolicyRequest, ListPoliciesRequest, ListPoliciesResponse, Policy,
    PolicySource, PolicyWriteResponse, PutPolicyRequest,
};
use super::{Gateway, GatewayError, caller_of};
use crate::policy::overlay::{ModuleInfo, ModuleSource};

/// The largest module `PutPolicy` accepts.
pub const MAX_MODULE_BYTES: usize = 1024 * 1024;

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Gateway);

/// Authorizes `rpc` on the request's namespace and returns the namespace's name.
pub(super) fn namespace_for<T>(
    request: &Request<T>,
    rpc: Rpc,
    requested: &str,
) -> Result<String, GatewayError> {
    let caller = caller_of(request)?;
    let namespace = namespace_of(&caller, requested);
    crate::namespaces::validate_name(&namespace)?;
    rpc.authorize(&caller, &namespace_target(&namespace))?;
    Ok(namespace)
}

#[tonic::async_trait]
impl pb::policy_service_server::PolicyService for Service {
    async fn list_policies(
        &self,
        request: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        let ns = namespace_for(&request, Rpc::ListPolicies, &request.get_ref().namespace)?;
        let store = self
            .0
            .namespaces()
            .require(&ns)
            .map_err(GatewayError::from)?;
        let policies = store
            .module_infos()
            .into_iter()
            .map(|m| Policy {
                rego: String::new(),
                ..policy_of(m)
            })
            .collect();
        Ok(Response::new(ListPoliciesResponse {
            namespace: ns,
            revision: store.snapshot().revision(),
            policies,
        }))
    }

    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<Policy>, Status> {
        let ns = namespace_for(&request, Rpc::GetPolicy, &request.get_ref().namespace)?;
        let store = self
            .0
            .namespaces()
            .require(&ns)
            .map_err(GatewayError::from)?;
        let id = &request.get_ref().id;
        store
            .module_infos()
            .into_iter()
            .find(|m| &m.id == id)
            .map(|m| Response::new(policy_of(m)))
            .ok_or_else(|| Status::not_found(format!("policy {id:?} not found")))
    }

    async fn put_policy(
        &self,
        request: Request<PutPolicyRequest>,
    ) -> Result<Response<PolicyWriteResponse>, Status> {
        let ns = namespace_for(&request, Rpc::PutPolicy, &request.get_ref().namespace)?;
        let req = request.into_inner();
        if req.rego.len() > MAX_MODULE_BYTES {
            return Err(GatewayError::Invalid(format!(
                "a module holds at most {MAX_MODULE_BYTES} bytes"
            ))
            .into());
        }
        let store = self
            .0
            .namespaces()
            .get_or_create(&ns)
            .map_err(GatewayError::from)?;
        let revision = blocking(move || store.put_module(&req.id, &req.rego)).await?;
        tracing::info!(namespace = %ns, revision, "policy written through the gateway");
        Ok(Response::new(PolicyWriteResponse {
            namespace: ns,
            revision,
        }))
    }

    async fn delete_policy(
        &self,
        request: Request<DeletePolicyRequest>,
    ) -> Result<Response<PolicyWriteResponse>, Status> {
        let ns = namespace_for(&request, Rpc::DeletePolicy, &request.get_ref().namespace)?;
        let store = self
            .0
            .namespaces()
            .require(&ns)
            .map_err(GatewayError::from)?;
        let id = request.into_inner().id;
        let revision = blocking(move || store.delete_module(&id)).await?;
        tracing::info!(namespace = %ns, revision, "policy deleted through the gateway");
        Ok(Response::new(PolicyWriteResponse {
            namespace: ns,
            revision,
        }))
    }
}

/// Runs a policy write (a compile) off the async workers.
pub(super) async fn blocking(
    f: impl FnOnce() -> Result<u64, crate::policy::overlay::WriteError> + Send + 'static,
) -> Result<u64, GatewayError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GatewayError::Internal(format!("policy write task: {e}")))?
        .map_err(GatewayError::from)
}

fn policy_of(m: ModuleInfo) -> Policy {
    Policy {
        package: m.package(),
        source: match m.source {
            ModuleSource::File => PolicySource::File,
            ModuleSource::Gateway => PolicySource::Gateway,
        } as i32,
        shadows_file: m.shadows_file,
        id: m.id,
        rego: m.text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn package_is_found() {
        let info = |text: &str| crate::policy::overlay::ModuleInfo {
            id: "m".into(),
            source: crate::policy::overlay::ModuleSource::Gateway,
            shadows_file: false,
            text: text.into(),
        };
        assert_eq!(
            info("# c\n\npackage envoy.authz # x\nallow := 1\n").package(),
            "envoy.authz"
        );
        assert_eq!(info("allow := 1").package(), "");
    }
}
