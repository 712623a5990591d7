//! Small pieces of Go behaviour the input document depends on: how invalid UTF-8 is
//! replaced, how Go quotes strings in error messages, and how JSON numbers become values.

use std::borrow::Cow;
use std::fmt::Write as _;

use regorus::Value;

use super::InputError;

/// Bytes as text the way Go's JSON encoder and decoder see them: every byte that does not
/// start a valid UTF-8 sequence becomes one U+FFFD (unlike `String::from_utf8_lossy`, which
/// replaces a maximal invalid subsequence with a single U+FFFD).
pub(super) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(lossy_owned(bytes)),
    }
}

fn lossy_owned(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // `valid` is valid UTF-8 by construction; the fallback never runs.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                bytes = rest.get(1..).unwrap_or_default();
            }
        }
    }
}

/// A string value from bytes, with Go's replacement of invalid UTF-8.
pub(super) fn str_value(bytes: &[u8]) -> Value {
    Value::from(lossy(bytes).as_ref())
}

/// Go's `strconv.Quote` (close enough for error messages: the printable test is approximate).
pub(super) fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    let mut rest = bytes;
    while let Some(&first) = rest.first() {
        let (c, width) = decode_rune(rest);
        rest = rest.get(width..).unwrap_or_default();
        match c {
            None => {
                let _ = write!(out, "\\x{first:02x}");
            }
            Some(c) => quote_rune(&mut out, c, '"'),
        }
    }
    out.push('"');
    out
}

fn quote_rune(out: &mut String, c: char, quote: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_print(c) => out.push(c),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

fn is_print(c: char) -> bool {
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || matches!(c,
                '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
                | '\u{e000}'..='\u{f8ff}'))
}

/// Go's `utf8.DecodeRune`: `None` with width 1 for an invalid encoding.
fn decode_rune(b: &[u8]) -> (Option<char>, usize) {
    let width = match b.first() {
        Some(&c) if c < 0x80 => 1,
        Some(&c) if (0xC2..=0xDF).contains(&c) => 2,
        Some(&c) if (0xE0..=0xEF).contains(&c) => 3,
        Some(&c) if (0xF0..=0xF4).contains(&c) => 4,
        _ => return (None, 1),
    };
    match b.get(..width).map(std::str::from_utf8) {
        Some(Ok(s)) => (s.chars().next(), width),
        _ => (None, 1),
    }
}

/// The single-quoted byte in Go's JSON syntax errors (`encoding/json`'s `quoteChar`): the
/// byte is read as a Latin-1 rune.
pub(super) fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        _ => {
            let mut out = String::from("'");
            quote_rune(&mut out, char::from(c), '"');
            out.push('\'');
            out
        }
    }
}

/// 2^53: below it every integer is exact in an `f64`.
const F64_EXACT: f64 = 9_007_199_254_740_992.0;

/// How many decimal digits a number may expand to before it is refused (an exponent such as
/// `1e999999999` would otherwise make the exact integer expansion run out of time and memory).
const MAX_NUMBER_DIGITS: i64 = 4096;

/// A number from JSON number text (already validated against the JSON grammar).
///
/// OPA keeps a JSON number as its text; regorus needs a value. Integers are exact (big
/// integers included), other numbers are `f64`, as when regorus itself reads the text.
pub(super) fn number_from_text(text: &str) -> Result<Value, InputError> {
    let plain_int = !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    if plain_int {
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Value::from(u));
        }
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
    }
    let f: f64 = text
        .parse()
        .map_err(|_| InputError::new(format!("invalid number {text}")))?;
    if f.is_finite() && f.abs() < F64_EXACT {
        return Ok(small_f64(f));
    }
    // Large or overflowing: integral in value, expanded exactly when that stays bounded.
    if digits_upper_bound(text) > MAX_NUMBER_DIGITS {
        return Err(InputError::new(format!("number {text} out of range")));
    }
    Value::from_numeric_string(text)
        .map_err(|_| InputError::new(format!("number {text} out of range")))
}

/// An upper bound on the digits of the integer part of a JSON number.
fn digits_upper_bound(text: &str) -> i64 {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().unwrap_or(i64::MAX)),
        None => (text, 0),
    };
    let int_digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    i64::try_from(int_digits)
        .unwrap_or(i64::MAX)
        .saturating_add(exp.max(0))
}

/// A number from an `f64`, as OPA would have it from the shortest text of the float:
/// `NaN` and infinities have no JSON form and become `null`.
pub(super) fn number_from_f64(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    if f.abs() < F64_EXACT {
        return small_f64(f);
    }
    // Integral; its shortest decimal text read exactly, as regorus reads "1e+21".
    Value::from_numeric_string(&format!("{f:e}")).unwrap_or_else(|_| Value::from(f))
}

fn small_f64(f: f64) -> Value {
    if f.fract() == 0.0 {
        // |f| < 2^53, so the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        if i >= 0 {
            Value::from(i.unsigned_abs())
        } else {
            Value::from(i)
        }
    } else {
        Value::from(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_replaces_each_invalid_byte() {
        assert_eq!(lossy(b"ok"), "ok");
        // A truncated 4-byte sequence: Go emits one U+FFFD per byte.
        assert_eq!(lossy(b"a\xf0\x9f\x98b"), "a\u{fffd}\u{fffd}\u{fffd}b");
        assert_eq!(lossy(b"\xff"), "\u{fffd}");
        // Encoded surrogates are invalid, byte by byte.
        assert_eq!(lossy(b"\xed\xa0\x80"), "\u{fffd}\u{fffd}\u{fffd}");
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(quote(b"%zz"), "\"%zz\"");
        assert_eq!(quote(b"%\xe2\x82"), "\"%\\xe2\\x82\"");
        assert_eq!(quote(b"a\"b\\\n"), "\"a\\\"b\\\\\\n\"");
        assert_eq!(quote_char(b'x'), "'x'");
        assert_eq!(quote_char(b'\n'), "'\\n'");
        assert_eq!(quote_char(b'\''), "'\\''");
        assert_eq!(quote_char(0xc3), "'\u{c3}'");
    }

    #[test]
    fn numbers() {
        let j = |t: &str| serde_json::to_value(number_from_text(t).unwrap()).unwrap();
        assert_eq!(j("42"), serde_json::json!(42));
        assert_eq!(j("-7"), serde_json::json!(-7));
        assert_eq!(j("1.5"), serde_json::json!(1.5));
        assert_eq!(j("1.0"), serde_json::json!(1));
        assert_eq!(j("2e3"), serde_json::json!(2000));
        let big = number_from_text("123456789012345678901234567890").unwrap();
        assert_eq!(
            big,
            Value::from_numeric_string("123456789012345678901234567890").unwrap()
        );
        assert!(number_from_text("1e999999999").is_err());
        assert_eq!(number_from_f64(f64::NAN), Value::Null);
        assert_eq!(number_from_f64(3.0), Value::from(3u64));
        assert_eq!(number_from_f64(1e21), number_from_text("1e21").unwrap());
    }
}
