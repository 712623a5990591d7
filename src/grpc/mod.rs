//! gRPC plumbing shared by the services: JSON <-> `google.protobuf.Value`, and the status of
//! an oversized request.

pub(crate) mod json;
pub(crate) mod oversize;
