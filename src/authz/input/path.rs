//! `parsed_path` and `parsed_query`, and the query-string parser form bodies share, following
//! Go's `net/url` ([`crate::gourl`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use regorus::Value;

use super::InputError;
use super::goutil::{quote, str_value};
use crate::gourl::{self, QueryError};

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
    let decoded = gourl::unescape(raw_path.as_bytes(), false).map_err(|bad| escape_error(&bad))?;
    let query = parse_query(raw_query.as_bytes())?;
    Ok((ParsedPath { decoded }, query))
}

/// Go's `url.ParseQuery`, as an object of string arrays.
pub(super) fn parse_query(query: &[u8]) -> Result<Value, InputError> {
    let pairs = gourl::parse_query(query).map_err(|e| match e {
        QueryError::TooMany => InputError::new("number of URL query parameters exceeded limit"),
        QueryError::Semicolon => InputError::new("invalid semicolon separator in query"),
        QueryError::Escape(bad) => escape_error(&bad),
    })?;
    let mut params: BTreeMap<Value, Vec<Value>> = BTreeMap::new();
    for (k, v) in pairs {
        params.entry(str_value(&k)).or_default().push(str_value(&v));
    }
    Ok(Value::from(
        params
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect::<BTreeMap<_, _>>(),
    ))
}

fn escape_error(bad: &[u8]) -> InputError {
    InputError::new(format!("invalid URL escape {}", quote(bad)))
}
