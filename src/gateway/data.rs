//! `DataService`: read, write and delete the data document of a namespace.
//!
//! Writes overlay the data files and are replayed over them at every reload (see
//! `crate::policy::overlay`); a write to a namespace that does not exist creates it.

use tonic::{Request, Response, Status};

use super::access::Rpc;
use super::pb::{
    self, DataWriteResponse, DeleteDataRequest, GetDataRequest, GetDataResponse, PutDataRequest,
};
use super::policy::{blocking, namespace_for};
use super::{Gateway, GatewayError};
use crate::policy::overlay::split_path;

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Gateway);

#[tonic::async_trait]
impl pb::data_service_server::DataService for Service {
    async fn get_data(
        &self,
        request: Request<GetDataRequest>,
    ) -> Result<Response<GetDataResponse>, Status> {
        let ns = namespace_for(&request, Rpc::GetData, &request.get_ref().namespace)?;
        let path = request.into_inner().path;
        split_path(&path).map_err(GatewayError::from)?;
        let store = self
            .0
            .namespaces()
            .require(&ns)
            .map_err(GatewayError::from)?;
        let snapshot = store.snapshot();
        let value = snapshot
            .eval_path(&path, None)
            .map_err(|e| GatewayError::Invalid(format!("data at {path:?}: {e}")))?;
        let value = match value {
            regorus::Value::Undefined => None,
            v => Some(pb::json_to_value(&serde_json::to_value(&v).map_err(
                |e| GatewayError::Internal(format!("data to JSON: {e}")),
            )?)),
        };
        Ok(Response::new(GetDataResponse {
            namespace: ns,
            revision: snapshot.revision(),
            value,
        }))
    }

    async fn put_data(
        &self,
        request: Request<PutDataRequest>,
    ) -> Result<Response<DataWriteResponse>, Status> {
        let ns = namespace_for(&request, Rpc::PutData, &request.get_ref().namespace)?;
        let req = request.into_inner();
        let value = req
            .value
            .as_ref()
            .ok_or_else(|| GatewayError::Invalid("value is required".into()))?;
        let value = pb::value_to_json(value).ok_or_else(|| {
            GatewayError::Invalid("value is nested too deeply or has a non-finite number".into())
        })?;
        let store = self
            .0
            .namespaces()
            .get_or_create(&ns)
            .map_err(GatewayError::from)?;
        let path = req.path;
        let revision = blocking(move || store.put_data(&path, value)).await?;
        Ok(Response::new(DataWriteResponse {
            namespace: ns,
            revision,
        }))
    }

    async fn delete_data(
        &self,
        request: Request<DeleteDataRequest>,
    ) -> Result<Response<DataWriteResponse>, Status> {
        let ns = namespace_for(&request, Rpc::DeleteData, &request.get_ref().namespace)?;
        let store = self
            .0
            .namespaces()
            .require(&ns)
            .map_err(GatewayError::from)?;
        let path = request.into_inner().path;
        let revision = blocking(move || store.delete_data(&path)).await?;
        Ok(Response::new(DataWriteResponse {
            namespace: ns,
            revision,
        }))
    }
}
