//! OPA builtins that regorus lacks, registered as engine extensions.
//!
//! | builtin | result |
//! |---|---|
//! | `io.jwt.decode(token)` | `[header, payload, signature_hex]` |
//! | `io.jwt.decode_verify(token, constraints)` | `[valid, header, payload]`, `[false, {}, {}]` when invalid |
//! | `io.jwt.verify_{hs,rs,ps,es}{256,384,512}(token, key)`, `io.jwt.verify_eddsa(token, key)` | boolean |
//! | `crypto.sha256(string)` | lowercase hex |
//! | `crypto.hmac.sha256(string, key)` | lowercase hex |
//!
//! The semantics follow OPA's policy reference; the `jwt` submodule's docs list them in detail,
//! with the few places where Portcullis differs from OPA (mostly by refusing more).
//!
//! # What a policy sees when a builtin fails
//!
//! regorus treats an `Err` returned by an extension as a hard evaluation error *whatever*
//! [`regorus::Engine::set_strict_builtin_errors`] says: the strict flag is honoured only by
//! regorus' own builtins, and an extension error aborts the whole query. OPA, by default and so
//! in OPA-Envoy, instead makes a failing builtin call *undefined*, so the rule body it sits in
//! simply does not hold and `default allow := false` answers.
//!
//! The difference matters for an authorization sidecar: a query error becomes a gRPC error, and
//! with Envoy's `failure_mode_allow` a caller could then pass by sending a malformed token.
//! [`register`] therefore follows OPA's default ([`ErrorMode::Undefined`]): every condition for
//! which OPA raises a builtin error (a malformed token, a key that does not parse, an operand of
//! the wrong type, an unknown `decode_verify` constraint, ...) makes the call evaluate to
//! *undefined*; the reason is logged at debug level, never with the token or key. Conditions for
//! which OPA answers (`false` for a bad signature, `[false, {}, {}]` for an expired token) are
//! answered the same way. [`register_with`] and [`ErrorMode::Strict`] give `opa eval
//! --strict-builtin-errors` behaviour instead: the failure aborts evaluation with an error naming
//! the builtin.
//!
//! As in OPA, `not io.jwt.verify_rs256(t, k)` is therefore true both for a bad signature and for
//! a malformed token.
//!
//! # Engines
//!
//! The extensions are stateless, `Send + Sync`, and clone as a function pointer plus a flag, so
//! regorus' per-call `Rc::make_mut` clone of a shared extension costs one small allocation.
//! They run on the regorus interpreter (`Engine`, `CompiledPolicy`) as extensions; on regorus'
//! bytecode VM, which cannot call extensions, [`super::vm`] routes the same functions through
//! host-await calls ([`lookup`]).

mod cache;
mod crypto;
pub(crate) mod jwt;
#[cfg(test)]
mod tests;

use anyhow::Context as _;
use regorus::Value;

/// How a failing builtin call shows in a policy. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorMode {
    /// OPA's default: the call is undefined and the reason is logged at debug level.
    #[default]
    Undefined,
    /// OPA's `--strict-builtin-errors`: the call aborts evaluation with an error.
    Strict,
}

/// Why a builtin call failed. Messages name what was wrong, never the token, key or secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BuiltinError(String);

impl BuiltinError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

pub(crate) type BuiltinResult<T> = Result<T, BuiltinError>;

/// One builtin: its Rego path, its arity and its implementation.
struct Builtin {
    name: &'static str,
    nargs: u8,
    eval: fn(&[Value]) -> BuiltinResult<Value>,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "io.jwt.decode",
        nargs: 1,
        eval: jwt::decode,
    },
    Builtin {
        name: "io.jwt.decode_verify",
        nargs: 2,
        eval: jwt::decode_verify,
    },
    Builtin {
        name: "io.jwt.verify_hs256",
        nargs: 2,
        eval: jwt::verify_hs256,
    },
    Builtin {
        name: "io.jwt.verify_hs384",
        nargs: 2,
        eval: jwt::verify_hs384,
    },
    Builtin {
        name: "io.jwt.verify_hs512",
        nargs: 2,
        eval: jwt::verify_hs512,
    },
    Builtin {
        name: "io.jwt.verify_rs256",
        nargs: 2,
        eval: jwt::verify_rs256,
    },
    Builtin {
        name: "io.jwt.verify_rs384",
        nargs: 2,
        eval: jwt::verify_rs384,
    },
    Builtin {
        name: "io.jwt.verify_rs512",
        nargs: 2,
        eval: jwt::verify_rs512,
    },
    Builtin {
        name: "io.jwt.verify_ps256",
        nargs: 2,
        eval: jwt::verify_ps256,
    },
    Builtin {
        name: "io.jwt.verify_ps384",
        nargs: 2,
        eval: jwt::verify_ps384,
    },
    Builtin {
        name: "io.jwt.verify_ps512",
        nargs: 2,
        eval: jwt::verify_ps512,
    },
    Builtin {
        name: "io.jwt.verify_es256",
        nargs: 2,
        eval: jwt::verify_es256,
    },
    Builtin {
        name: "io.jwt.verify_es384",
        nargs: 2,
        eval: jwt::verify_es384,
    },
    Builtin {
        name: "io.jwt.verify_es512",
        nargs: 2,
        eval: jwt::verify_es512,
    },
    Builtin {
        name: "io.jwt.verify_eddsa",
        nargs: 2,
        eval: jwt::verify_eddsa,
    },
    Builtin {
        name: "crypto.sha256",
        nargs: 1,
        eval: crypto::sha256,
    },
    Builtin {
        name: "crypto.hmac.sha256",
        nargs: 2,
        eval: crypto::hmac_sha256,
    },
];

/// The Rego paths of the builtins [`register`] adds.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// A builtin's implementation.
pub(crate) type BuiltinFn = fn(&[Value]) -> BuiltinResult<Value>;

/// The arity and implementation of the builtin named `name`, for hosts that call the
/// builtins themselves rather than through [`register`] (the RVM in [`super::vm`]). The
/// caller applies the [`ErrorMode`]: with [`ErrorMode::Undefined`] an `Err` means undefined.
pub(crate) fn lookup(name: &str) -> Option<(u8, BuiltinFn)> {
    BUILTINS
        .iter()
        .find(|b| b.name == name)
        .map(|b| (b.nargs, b.eval))
}

/// Registers every extension builtin on `engine` with OPA's default error semantics
/// ([`ErrorMode::Undefined`]: a failing call is undefined, see the [module docs](self)).
///
/// Fails if one of the builtins is already registered on `engine`.
pub fn register(engine: &mut regorus::Engine) -> anyhow::Result<()> {
    register_with(engine, ErrorMode::Undefined)
}

/// Registers every extension builtin on `engine`, with failing calls reported as `mode` says.
pub fn register_with(engine: &mut regorus::Engine, mode: ErrorMode) -> anyhow::Result<()> {
    for builtin in BUILTINS {
        let (name, eval) = (builtin.name, builtin.eval);
        let extension = move |args: Vec<Value>| -> anyhow::Result<Value> {
            match eval(&args) {
                Ok(value) => Ok(value),
                Err(error) => match mode {
                    ErrorMode::Undefined => {
                        tracing::debug!(
                            builtin.name = name,
                            builtin.error = %error,
                            "builtin call failed; its result is undefined"
                        );
                        Ok(Value::Undefined)
                    }
                    ErrorMode::Strict => Err(anyhow::anyhow!("{name}: {error}")),
                },
            }
        };
        engine
            .add_extension(name.to_string(), builtin.nargs, Box::new(extension))
            .with_context(|| format!("registering builtin {name}"))?;
    }
    Ok(())
}

/// The `index`-th operand (1-based in messages, as OPA counts) as a string.
pub(crate) fn string_operand(args: &[Value], index: usize) -> BuiltinResult<&str> {
    match args.get(index) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(BuiltinError::new(format!(
            "operand {} must be a string",
            index + 1
        ))),
        None => Err(BuiltinError::new(format!("operand {} missing", index + 1))),
    }
}

/// Decodes base64url as OPA's `base64url.decode` does: the URL-safe alphabet, with or without
/// `=` padding.
pub(crate) fn b64url_decode(text: &str) -> BuiltinResult<Vec<u8>> {
    use base64::Engine as _;
    use base64::alphabet::URL_SAFE;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT_URL_SAFE
        .decode(text)
        .map_err(|_| BuiltinError::new("illegal base64url data"))
}

/// Lowercase hexadecimal of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}
