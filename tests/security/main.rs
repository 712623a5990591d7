//! The adversarial suite: every finding of the security review, sent as an attacker would send
//! it to a real server over gRPC or HTTP. Each test fails if the attack succeeds.
//!
//! | finding | module |
//! |---|---|
//! | 1. API keys minted for any subject and scope | [`api_keys`] |
//! | 2. credentials from the query string in decision logs | [`scrubbing`] |
//! | 3. Basic lockout bypassed by concurrency; unbounded queue | [`basic`] |
//! | 4. a policy aborting the process; unbounded namespaces and writes | [`limits`] |
//! | 5. `Decide` reading raw data for callers below namespace level | [`decide_scope`] |
//! | 6. trusted OIDC issuer without audiences, replacing a policy's rules | [`oidc_trust`] |
//! | 7. a caller-sent internal token passing in dry-run | [`dry_run`] |
//! | 8, 9, 10. high-S ECDSA, small RSA keys, `oct` keys in a `cert` | [`jose`] |
//! | 11. recursion aborting the process | [`recursion`] |
//! | 12. open-mode gateway answering any `Host` and `Origin` | [`gateway_origin`] |
//! | suspected: path normalization, streams, audiences, `iat`, duplicate members, key files | [`settled`] |

mod sidecar;
#[path = "../support/mod.rs"]
mod support;

mod api_keys;
mod basic;
mod decide_scope;
mod dry_run;
mod gateway_origin;
mod jose;
mod limits;
mod oidc_trust;
mod recursion;
mod scrubbing;
mod settled;
