//! gRPC plumbing shared by the services.

pub mod status;
