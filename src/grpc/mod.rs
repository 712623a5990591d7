//! gRPC plumbing shared by the services: JSON <-> `google.protobuf.Value`.

pub(crate) mod json;
