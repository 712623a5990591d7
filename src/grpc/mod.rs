//! gRPC plumbing shared by the services.

pub mod json;
pub mod status;
