//! The Check path: CheckRequest -> request view -> namespace -> authentication -> input document
//! -> evaluation -> decision -> response (+ internal token) -> one outcome that metrics, the
//! decision log and tracing all read. `pipeline` is that sequence; `service` is the gRPC handler.

pub mod decision;
pub mod error;
pub mod input;
pub mod pipeline;
pub mod response;
pub mod security;
pub mod service;
