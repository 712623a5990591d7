//! JOSE, once: algorithms, keys and the rules they must meet, compact JWS parsing, signature
//! verification, signing, the registered claims and the clock. Authentication, internal tokens,
//! gateway tokens, bundle signatures and the Rego `io.jwt.*` builtins all verify and sign here.
//!
//! Two sets of [`Rules`]: [`Rules::STRICT`] for every token and signature Portcullis itself
//! accepts (RSA keys of at least 2048 bits, low-S ECDSA, strict Ed25519, no duplicate JSON
//! members, no symmetric keys from public key text), and [`Rules::OPA`] for the Rego builtins,
//! whose answers must match OPA's (RSA from 1024 bits as Go allows, high-S ECDSA accepted as Go
//! accepts it, a duplicate JSON member keeps its last value). The builtins' other leniencies
//! (padded base64url, their error semantics) live with them; the cryptography does not.
//!
//! # Layout
//!
//! - [`alg`]    the JWS algorithms
//! - [`keys`]   public keys from PEM, JWK, JWK Sets, with [`KeyRules`]
//! - [`jws`]    strict compact parsing ([`Jws`]) and [`jws::verify`]
//! - [`sign`]   [`Signer`]: HMAC, Ed25519, P-256, P-384, RSA
//! - [`claims`] `exp`, `nbf`, `iat`, `iss`, `aud`
//! - [`clock`]  the one clock
//! - [`b64`], [`json`] base64url and JSON as JOSE reads them

pub(crate) mod alg;
pub(crate) mod b64;
pub(crate) mod claims;
pub mod clock;
pub(crate) mod json;
pub(crate) mod jws;
pub mod keys;
pub(crate) mod sign;

pub use alg::Alg;
pub use jws::{Jws, JwsError, Rules};
pub use keys::{KeyMaterial, KeyRules, PublicKey};
pub use sign::Signer;
