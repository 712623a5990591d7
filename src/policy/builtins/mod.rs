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
pub(crate) mod guarded;
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
    /// OPA's `--strict-builtin-errors`: the call aborts evaluation with an error. Only
    /// [`register_with`] callers choose it; the server and `eval` answer as OPA does by default.
    #[cfg_attr(not(test), allow(dead_code))]
    Strict,
}

/// Why a builtin call failed. Messages name what was wrong, never the token, key or secret.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct BuiltinError {
    message: String,
    /// A resource limit ([`guarded`]): fails the evaluation whatever the [`ErrorMode`].
    limit: bool,
}

impl BuiltinError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            limit: false,
        }
    }

    pub(crate) fn limit(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            limit: true,
        }
    }

    pub(crate) fn is_limit(&self) -> bool {
        self.limit
    }
}

/// What every limit error's message starts with, so that an evaluation failing on one is told
/// apart from other evaluation errors (regorus passes extension errors on as text).
pub const LIMIT_MARKER: &str = "policy evaluation limit exceeded";

pub(crate) type BuiltinResult<T> = Result<T, BuiltinError>;

/// A builtin's own implementation.
pub(crate) type BuiltinFn = fn(&[Value]) -> BuiltinResult<Value>;

/// How a builtin is evaluated.
#[derive(Clone, Copy)]
enum Eval {
    /// Implemented here.
    Own(BuiltinFn),
    /// regorus' implementation behind a size check ([`guarded`]).
    Guarded(fn(&[Value]) -> BuiltinResult<()>),
}

/// One builtin: its Rego path, its arity and its implementation.
#[derive(Clone, Copy)]
pub(crate) struct Builtin {
    pub(crate) name: &'static str,
    pub(crate) nargs: u8,
    eval: Eval,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Builtin {
    const fn own(name: &'static str, nargs: u8, eval: BuiltinFn) -> Self {
        Self {
            name,
            nargs,
            eval: Eval::Own(eval),
        }
    }

    /// Evaluates the builtin on `args`.
    pub(crate) fn call(&self, args: &[Value]) -> BuiltinResult<Value> {
        match self.eval {
            Eval::Own(f) => f(args),
            Eval::Guarded(check) => guarded::run(self.name, check, args),
        }
    }

    /// What the engine sees of a failure: in `mode`, or always an error for a limit.
    fn failure(&self, error: BuiltinError, mode: ErrorMode) -> anyhow::Result<Value> {
        let name = self.name;
        if error.is_limit() {
            tracing::info!(builtin.name = name, builtin.error = %error, "{LIMIT_MARKER}");
            return Err(anyhow::anyhow!("{LIMIT_MARKER}: {error}"));
        }
        match mode {
            ErrorMode::Undefined => {
                tracing::debug!(
                    builtin.name = name,
                    builtin.error = %error,
                    "builtin call failed; its result is undefined"
                );
                Ok(Value::Undefined)
            }
            ErrorMode::Strict => Err(anyhow::anyhow!("{name}: {error}")),
        }
    }

    /// Evaluates the builtin as the engine sees it in `mode`.
    pub(crate) fn eval(&self, args: &[Value], mode: ErrorMode) -> anyhow::Result<Value> {
        match self.call(args) {
            Ok(v) => Ok(v),
            Err(e) => self.failure(e, mode),
        }
    }
}

const OWN: &[Builtin] = &[
    Builtin::own("io.jwt.decode", 1, jwt::decode),
    Builtin::own("io.jwt.decode_verify", 2, jwt::decode_verify),
    Builtin::own("io.jwt.verify_hs256", 2, jwt::verify_hs256),
    Builtin::own("io.jwt.verify_hs384", 2, jwt::verify_hs384),
    Builtin::own("io.jwt.verify_hs512", 2, jwt::verify_hs512),
    Builtin::own("io.jwt.verify_rs256", 2, jwt::verify_rs256),
    Builtin::own("io.jwt.verify_rs384", 2, jwt::verify_rs384),
    Builtin::own("io.jwt.verify_rs512", 2, jwt::verify_rs512),
    Builtin::own("io.jwt.verify_ps256", 2, jwt::verify_ps256),
    Builtin::own("io.jwt.verify_ps384", 2, jwt::verify_ps384),
    Builtin::own("io.jwt.verify_ps512", 2, jwt::verify_ps512),
    Builtin::own("io.jwt.verify_es256", 2, jwt::verify_es256),
    Builtin::own("io.jwt.verify_es384", 2, jwt::verify_es384),
    Builtin::own("io.jwt.verify_es512", 2, jwt::verify_es512),
    Builtin::own("io.jwt.verify_eddsa", 2, jwt::verify_eddsa),
    Builtin::own("crypto.sha256", 1, crypto::sha256),
    Builtin::own("crypto.hmac.sha256", 2, crypto::hmac_sha256),
];

/// Every builtin [`register`] adds: those implemented here, then the guarded regorus ones.
pub(crate) fn all() -> impl Iterator<Item = Builtin> {
    OWN.iter().copied().chain(
        guarded::GUARDED
            .iter()
            .map(|&(name, nargs, check)| Builtin {
                name,
                nargs,
                eval: Eval::Guarded(check),
            }),
    )
}

/// The Rego paths of the builtins [`register`] adds.
#[cfg(test)]
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    all().map(|b| b.name)
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
    for builtin in all() {
        let extension =
            move |args: Vec<Value>| -> anyhow::Result<Value> { builtin.eval(&args, mode) };
        engine
            .add_extension(builtin.name.to_string(), builtin.nargs, Box::new(extension))
            .with_context(|| format!("registering builtin {}", builtin.name))?;
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
pub(crate) use crate::jose::b64::hex as to_hex;
