//! `crypto.sha256` and `crypto.hmac.sha256`.

use hmac::{Hmac, Mac};
use regorus::Value;
use sha2::{Digest, Sha256};

use super::{BuiltinError, BuiltinResult, string_operand, to_hex};

/// `crypto.sha256(x)`: the SHA-256 digest of the string's UTF-8 bytes, as lowercase hex.
pub(crate) fn sha256(args: &[Value]) -> BuiltinResult<Value> {
    let x = string_operand(args, 0)?;
    Ok(Value::from(to_hex(&Sha256::digest(x.as_bytes()))))
}

/// `crypto.hmac.sha256(x, key)`: HMAC-SHA256 of `x` under `key` (both as UTF-8 bytes), as
/// lowercase hex.
pub(crate) fn hmac_sha256(args: &[Value]) -> BuiltinResult<Value> {
    let x = string_operand(args, 0)?;
    let key = string_operand(args, 1)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map_err(|_| BuiltinError::new("invalid HMAC key"))?;
    mac.update(x.as_bytes());
    Ok(Value::from(to_hex(&mac.finalize().into_bytes())))
}
