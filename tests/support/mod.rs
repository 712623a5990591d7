//! Support for the integration tests, one module for every test binary: `mod support;` in
//! `tests/*.rs`, `#[path = "../support/mod.rs"] mod support;` from a suite folder.
//!
//! | module | what |
//! |---|---|
//! | [`server`] | the real server on ephemeral loopback ports, from a config and policies |
//! | [`client`] | talking to it: a minimal HTTP/1.1 client, a Check answer's decision id |
//! | [`process`] | the `portcullis` binary as a child process, killed on drop |
//! | [`ports`] | free loopback ports for such a process |
//! | [`wait`] | polling until a condition holds |
//! | [`fixtures`] | the key files under `tests/fixtures/jwt` |
//! | [`authn`] | signing keys, tokens, a JWKS/OIDC issuer, a server with authentication |
//! | [`gateway`] | a server with the gateway, its credentials, tokens and RPC helpers |
//! | [`bundle`] | bundles built in memory and a bundle server |
//! | [`tls`] | a CA and certificates made at test time; gRPC clients over TLS |
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod authn;
pub mod bundle;
pub mod client;
pub mod fixtures;
pub mod gateway;
pub mod ports;
pub mod process;
pub mod server;
pub mod tls;
pub mod wait;

pub use client::{decision_id, http};
pub use fixtures::fixture;
pub use ports::{free_port, free_ports};
pub use process::Proc;
pub use server::{Spec, TestServer};
pub use wait::eventually;
