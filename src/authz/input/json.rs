//! JSON text -> `Value`, accepting and rejecting exactly what OPA-Envoy's
//! `util.UnmarshalJSON` (Go's `encoding/json` decoder plus a trailing-token check) does.
//!
//! - Strings: invalid UTF-8 and unpaired surrogate escapes become U+FFFD, as in Go.
//! - Duplicate object keys: the last one wins.
//! - After the top-level value only whitespace may follow, except that a trailing `null`
//!   token (and anything after it) is accepted: OPA's check reads one more token and only
//!   complains when that token is non-nil.
//! - Nesting is bounded by [`MAX_DEPTH`] (Go allows 10000; we stop earlier so that deep values
//!   never threaten the stack of whoever walks or drops them). The parser itself is iterative.

use std::collections::BTreeMap;

use regorus::Value;

use super::InputError;
use super::goutil::{lossy, number_from_text, quote_char};

/// Deepest accepted nesting of arrays and objects: the input document's bound.
pub(super) use super::MAX_DEPTH;

/// Parses one JSON document.
pub(super) fn parse(input: &[u8]) -> Result<Value, InputError> {
    let mut p = Parser { b: input, pos: 0 };
    p.skip_ws();
    if p.pos >= p.b.len() {
        return Err(InputError::new("EOF"));
    }
    let value = p.value_tree()?;
    p.trailing()?;
    Ok(value)
}

enum Frame {
    Array(Vec<Value>),
    /// The members so far and the key whose value is being parsed.
    Object(BTreeMap<Value, Value>, Value),
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

fn unexpected_eof() -> InputError {
    InputError::new("unexpected EOF")
}

fn syntax(c: u8, context: &str) -> InputError {
    InputError::new(format!("invalid character {} {context}", quote_char(c)))
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.pos += 1;
        }
    }

    /// Parses the value starting at `pos` (whitespace skipped), without recursion.
    fn value_tree(&mut self) -> Result<Value, InputError> {
        let mut stack: Vec<Frame> = Vec::new();
        'value: loop {
            let mut value = match self.peek() {
                None => return Err(unexpected_eof()),
                Some(b'{') => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(InputError::new("exceeded max depth"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b'}') => {
                            self.pos += 1;
                            Value::new_object()
                        }
                        Some(b'"') => {
                            let key = self.key()?;
                            stack.push(Frame::Object(BTreeMap::new(), key));
                            continue 'value;
                        }
                        Some(c) => {
                            return Err(syntax(c, "looking for beginning of object key string"));
                        }
                        None => return Err(unexpected_eof()),
                    }
                }
                Some(b'[') => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(InputError::new("exceeded max depth"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            Value::new_array()
                        }
                        None => return Err(unexpected_eof()),
                        Some(_) => {
                            stack.push(Frame::Array(Vec::new()));
                            continue 'value;
                        }
                    }
                }
                Some(_) => self.scalar("looking for beginning of value")?,
            };

            // Hand the finished value to the enclosing containers, closing those that end.
            loop {
                let Some(frame) = stack.pop() else {
                    return Ok(value);
                };
                self.skip_ws();
                match frame {
                    Frame::Array(mut items) => {
                        items.push(value);
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                self.skip_ws();
                                stack.push(Frame::Array(items));
                                continue 'value;
                            }
                            Some(b']') => {
                                self.pos += 1;
                                value = Value::from(items);
                            }
                            Some(c) => return Err(syntax(c, "after array element")),
                            None => return Err(unexpected_eof()),
                        }
                    }
                    Frame::Object(mut members, key) => {
                        members.insert(key, value);
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                self.skip_ws();
                                match self.peek() {
                                    Some(b'"') => {
                                        let key = self.key()?;
                                        stack.push(Frame::Object(members, key));
                                        continue 'value;
                                    }
                                    Some(c) => {
                                        return Err(syntax(
                                            c,
                                            "looking for beginning of object key string",
                                        ));
                                    }
                                    None => return Err(unexpected_eof()),
                                }
                            }
                            Some(b'}') => {
                                self.pos += 1;
                                value = Value::from(members);
                            }
                            Some(c) => return Err(syntax(c, "after object key:value pair")),
                            None => return Err(unexpected_eof()),
                        }
                    }
                }
            }
        }
    }

    /// An object key and its colon; leaves `pos` at the start of the member's value.
    fn key(&mut self) -> Result<Value, InputError> {
        let key = self.string()?;
        self.skip_ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                self.skip_ws();
                Ok(key)
            }
            Some(c) => Err(syntax(c, "after object key")),
            None => Err(unexpected_eof()),
        }
    }

    /// A string, number or literal; `context` describes any other leading byte.
    fn scalar(&mut self, context: &str) -> Result<Value, InputError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => {
                let text = self.number_text()?;
                number_from_text(text)
            }
            Some(b't') => self.literal(b"true").map(|()| Value::from(true)),
            Some(b'f') => self.literal(b"false").map(|()| Value::from(false)),
            Some(b'n') => self.literal(b"null").map(|()| Value::Null),
            Some(c) => Err(syntax(c, context)),
            None => Err(unexpected_eof()),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), InputError> {
        let name = match word {
            b"true" => "true",
            b"false" => "false",
            _ => "null",
        };
        for (i, &expected) in word.iter().enumerate() {
            match self.b.get(self.pos + i) {
                Some(&c) if c == expected => {}
                Some(&c) => {
                    return Err(syntax(
                        c,
                        &format!("in literal {name} (expecting {})", quote_char(expected)),
                    ));
                }
                None => return Err(unexpected_eof()),
            }
        }
        self.pos += word.len();
        Ok(())
    }

    /// The text of a number, validated against the JSON grammar.
    fn number_text(&mut self) -> Result<&str, InputError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            Some(c) => return Err(syntax(c, "in numeric literal")),
            None => return Err(unexpected_eof()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            match self.peek() {
                Some(b'0'..=b'9') => self.digits(),
                Some(c) => return Err(syntax(c, "after decimal point in numeric literal")),
                None => return Err(unexpected_eof()),
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            match self.peek() {
                Some(b'0'..=b'9') => self.digits(),
                Some(c) => return Err(syntax(c, "in exponent of numeric literal")),
                None => return Err(unexpected_eof()),
            }
        }
        let text = self.b.get(start..self.pos).unwrap_or_default();
        std::str::from_utf8(text).map_err(|_| InputError::new("invalid number"))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<Value, InputError> {
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes.
        loop {
            match self.peek() {
                None => return Err(unexpected_eof()),
                Some(b'"') => {
                    let raw = self.b.get(start..self.pos).unwrap_or_default();
                    self.pos += 1;
                    return Ok(Value::from(lossy(raw).as_ref()));
                }
                Some(b'\\') => break,
                Some(c) if c < 0x20 => return Err(syntax(c, "in string literal")),
                Some(_) => self.pos += 1,
            }
        }
        let mut out: Vec<u8> = self.b.get(start..self.pos).unwrap_or_default().to_vec();
        loop {
            match self.peek() {
                None => return Err(unexpected_eof()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Value::from(lossy(&out).as_ref()));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(c) = self.peek() else {
                        return Err(unexpected_eof());
                    };
                    self.pos += 1;
                    match c {
                        b'"' | b'\\' | b'/' => out.push(c),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            let c = self.utf16_char(unit)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        c => return Err(syntax(c, "in string escape code")),
                    }
                }
                Some(c) if c < 0x20 => return Err(syntax(c, "in string literal")),
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// Four hex digits after `\u`.
    fn hex4(&mut self) -> Result<u32, InputError> {
        let mut unit = 0u32;
        for _ in 0..4 {
            let Some(c) = self.peek() else {
                return Err(unexpected_eof());
            };
            let digit = char::from(c)
                .to_digit(16)
                .ok_or_else(|| syntax(c, "in \\u hexadecimal character escape"))?;
            unit = unit << 4 | digit;
            self.pos += 1;
        }
        Ok(unit)
    }

    /// The character for a `\u` escape: a high surrogate pairs with an immediately following
    /// `\u` low surrogate; any other surrogate is U+FFFD (and a following escape stays its own).
    fn utf16_char(&mut self, unit: u32) -> Result<char, InputError> {
        if !(0xD800..0xE000).contains(&unit) {
            return Ok(char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
        if (0xD800..0xDC00).contains(&unit)
            && self.b.get(self.pos) == Some(&b'\\')
            && self.b.get(self.pos + 1) == Some(&b'u')
        {
            let next = self
                .b
                .get(self.pos + 2..self.pos + 6)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            if let Some(low @ 0xDC00..=0xDFFF) = next {
                self.pos += 6;
                let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
        Ok(char::REPLACEMENT_CHARACTER)
    }

    /// What may follow the top-level value: whitespace, or one more token that is `null`
    /// (then anything). Other tokens give the errors OPA reports.
    fn trailing(&mut self) -> Result<(), InputError> {
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Ok(());
        };
        let token = match c {
            b'n' => return self.literal(b"null"),
            b'{' | b'[' => char::from(c).to_string(),
            b'"' => match self.string()? {
                Value::String(s) => s.to_string(),
                _ => String::new(),
            },
            b'-' | b'0'..=b'9' => self.number_text()?.to_owned(),
            b't' | b'f' => {
                let word: &'static [u8] = if c == b't' { b"true" } else { b"false" };
                self.literal(word)?;
                format!("%!s(bool={})", c == b't')
            }
            c => return Err(syntax(c, "looking for beginning of value")),
        };
        Err(InputError::new(format!(
            "error: invalid character '{token}' after top-level value"
        )))
    }
}
