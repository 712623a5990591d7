//! # Portcullis
//!
//! An external authorization sidecar for Envoy and Istio that is a drop-in replacement for the
//! OPA-Envoy plugin: same command line, config block, input document, decision format and
//! responses, with policies evaluated by the `regorus` Rego engine.
//!
//! # Layout
//!
//! ARCHITECTURE.md puts these modules in layers; each imports only from the layers below it.
//!
//! - [`bundle`]   OPA bundles: safe archive reading, manifest and roots, signatures, download
//! - [`env`]      the process environment behind one trait (tests pass a map)
//! - [`decision_log`] OPA-format decision logs: console, file, HTTP upload, subscribers, masking
//! - [`config`]   the config file (OPA's keys plus Portcullis sections), `--set` overrides, typed errors
//! - [`authn`]    authentication before Rego: JWT, API keys, Basic, trusted OIDC issuers, audit log,
//!   token revocation
//! - [`authz`]    the Check path: one pipeline from request to outcome, input document, decision,
//!   CheckResponse, authentication and internal tokens as a Check uses them, the gRPC service
//! - [`client`]   client tools: `check`, `bench check`, `bench floor`, request case files
//! - [`cli`]      the gateway's command line: `auth`, `decide`, `policy`, `data`, `logs`, `keys`, `status`,
//!   `token revoke|revocations`
//! - [`gateway`]  the gateway gRPC API (`portcullis.v1`), gRPC-Web, caller auth and scopes
//! - [`namespaces`] isolated policy sets, each its own store; hierarchical names with `:`
//! - [`offline`]  OPA's policy commands: `check`, `test`, `eval`, `exec`, `build`, `sign`, `capabilities`, `inspect`, `deps`, `parse`
//! - [`policy`]   policy loading, the compiled snapshot behind `ArcSwap`, hot reload, extra builtins
//! - [`server`]   binds nothing itself: serves given listeners until a shutdown future resolves
//! - [`services`] OPA's `services` config and the outbound HTTP client
//! - [`invalid`]  a refused config value (key and reason), what every section's validation returns
//! - [`http`]     the HTTP API: `/health`, `/metrics`, OPA's REST API (data, policies, query, config, status), `system.authz`
//! - [`jose`]     JWS once: algorithms, keys and their rules, verify, sign, claims, the clock
//! - [`listen`]   listener addresses in OPA's forms; loopback names
//! - [`gourl`]    Go's `net/url` query and path decoding, the one parser of request URLs
//! - [`grpc`]     protobuf-JSON helpers shared by the gRPC services
//! - [`tls`]      TLS and mTLS for the gRPC listeners: files re-read on change, client identity
//! - [`token`]    the internal token: minting within the caller's scope, signing keys, JWKS
//! - [`telemetry`] logging, Prometheus metrics, OpenTelemetry traces, the closed label sets
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod authn;
pub mod authz;
pub mod bundle;
pub mod cli;
pub mod client;
pub mod config;
pub mod decision_log;
pub mod env;
pub mod gateway;
pub mod gourl;
pub mod grpc;
pub mod http;
pub mod invalid;
pub mod jose;
pub mod listen;
pub mod namespaces;
pub mod offline;
pub mod policy;
pub mod server;
pub mod services;
pub mod telemetry;
pub mod tls;
pub mod token;
