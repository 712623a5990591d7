//! The Check path: CheckRequest -> request view -> namespace -> authentication -> input document
//! -> evaluation -> decision -> response (+ internal token) -> one outcome that metrics, the
//! decision log and tracing all read. `pipeline` is that sequence; `service` is the gRPC handler;
//! `http` the HTTP listener for proxies that ask over plain HTTP (NGINX, Traefik, Caddy, Envoy's
//! `http_service`); `ext_proc` answers Envoy's external processing streams through the same service.

pub mod decision;
pub(crate) mod error;
pub mod ext_proc;
pub mod http;
pub mod input;
pub(crate) mod pipeline;
pub(crate) mod response;
pub mod security;
pub(crate) mod service;
