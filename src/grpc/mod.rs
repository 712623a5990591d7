//! gRPC plumbing shared by the services: JSON <-> `google.protobuf.Value`.

pub mod json;
