//! base64url as JOSE uses it (RFC 7515 §2): strict for compact tokens Portcullis verifies, and
//! OPA's lenient form (padding optional, non-zero trailing bits allowed) for the Rego builtins.
//! Also the one lower-case hex encoder ([`hex`]).

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// How strictly base64url is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64 {
    /// Unpadded, canonical (RFC 7515 §2): one text per byte string.
    Url,
    /// OPA's `base64url.decode`: with or without `=` padding, trailing bits ignored.
    UrlLenient,
}

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Not base64url.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal base64url data")]
pub struct Invalid;

/// Decodes `text`.
pub fn decode(text: &str, mode: Base64) -> Result<Vec<u8>, Invalid> {
    match mode {
        Base64::Url => URL_SAFE_NO_PAD.decode(text),
        Base64::UrlLenient => LENIENT.decode(text),
    }
    .map_err(|_| Invalid)
}

/// Unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hexadecimal, the one encoder of digests, key ids and trace ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}
