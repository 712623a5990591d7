//! `parsed_path` and `parsed_query`, and the query-string parser form bodies share, following
//! Go's `net/url` (`PathUnescape`, `QueryUnescape`, `ParseQuery`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use regorus::Value;

use super::InputError;
use super::goutil::{quote, str_value};

/// Go's default cap on the number of parameters `url.ParseQuery` accepts (the
/// `urlmaxqueryparams` GODEBUG setting; its count is the number of `&` plus one).
const MAX_QUERY_PARAMS: usize = 10_000;

/// The percent-decoded path (the part of `:path` before the first `?`).
pub(super) struct ParsedPath<'a> {
    decoded: Cow<'a, [u8]>,
}

impl ParsedPath<'_> {
    /// The path with all leading `/` removed, split on `/`: `/` gives one empty segment.
    pub(super) fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let start = self
            .decoded
            .iter()
            .position(|&b| b != b'/')
            .unwrap_or(self.decoded.len());
        self.decoded
            .get(start..)
            .unwrap_or_default()
            .split(|&b| b == b'/')
    }

    pub(super) fn to_value(&self) -> Value {
        Value::from(self.segments().map(str_value).collect::<Vec<_>>())
    }
}

/// Splits `path` into the decoded path and the parsed query (`{key: [values]}`).
/// A bad escape in the path is reported before any error in the query.
pub(super) fn parse(path: &str) -> Result<(ParsedPath<'_>, Value), InputError> {
    let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));
    let decoded = unescape(raw_path.as_bytes(), false)?;
    let query = parse_query(raw_query.as_bytes())?;
    Ok((ParsedPath { decoded }, query))
}

/// Go's `url.ParseQuery`, as an object of string arrays. On failure the error is the first
/// escape error, unless a segment held a `;`, whose error wins (Go overwrites it last).
pub(super) fn parse_query(query: &[u8]) -> Result<Value, InputError> {
    if query.iter().filter(|&&b| b == b'&').count() + 1 > MAX_QUERY_PARAMS {
        return Err(InputError::new(
            "number of URL query parameters exceeded limit",
        ));
    }
    let mut params: BTreeMap<Value, Vec<Value>> = BTreeMap::new();
    let mut semicolon = false;
    let mut first_err: Option<InputError> = None;
    for segment in query.split(|&b| b == b'&') {
        if segment.contains(&b';') {
            semicolon = true;
            continue;
        }
        if segment.is_empty() {
            continue;
        }
        let (key, value) = match segment.iter().position(|&b| b == b'=') {
            Some(i) => (&segment[..i], &segment[i + 1..]),
            None => (segment, &b""[..]),
        };
        let decoded = unescape(key, true).and_then(|k| Ok((k, unescape(value, true)?)));
        match decoded {
            Ok((k, v)) => params.entry(str_value(&k)).or_default().push(str_value(&v)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if semicolon {
        return Err(InputError::new("invalid semicolon separator in query"));
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(Value::from(
        params
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect::<BTreeMap<_, _>>(),
    ))
}

/// Go's `url.unescape` for path segments (`+` kept) or query components (`+` is a space).
fn unescape(s: &[u8], query: bool) -> Result<Cow<'_, [u8]>, InputError> {
    let mut escapes = 0usize;
    let mut plus = false;
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        match c {
            b'%' => {
                let hex = |j: usize| s.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    let bad = &s[i..s.len().min(i + 3)];
                    return Err(InputError::new(format!(
                        "invalid URL escape {}",
                        quote(bad)
                    )));
                }
                escapes += 1;
                i += 3;
            }
            b'+' => {
                plus |= query;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if escapes == 0 && !plus {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len() - 2 * escapes);
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        match c {
            b'%' => {
                let hi = s.get(i + 1).copied().map_or(0, unhex);
                let lo = s.get(i + 2).copied().map_or(0, unhex);
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}

fn unhex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}
