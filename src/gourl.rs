//! Go's `net/url` query and path decoding (`PathUnescape`, `QueryUnescape`, `ParseQuery`), the
//! one parser of request URLs: the input document's `parsed_path`/`parsed_query` and form bodies,
//! and authentication's query-parameter credentials read the same values, so a credential the
//! policy sees is the one that was checked and the one that is scrubbed.

use std::borrow::Cow;

/// Go's default cap on the number of parameters `url.ParseQuery` accepts (the
/// `urlmaxqueryparams` GODEBUG setting; its count is the number of `&` plus one).
pub const MAX_QUERY_PARAMS: usize = 10_000;

/// Why a query string was refused, as Go's `url.ParseQuery` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// More than [`MAX_QUERY_PARAMS`] parameters.
    TooMany,
    /// A segment held a `;` (Go 1.17+ refuses it as a separator).
    Semicolon,
    /// A `%` not followed by two hex digits; the offending bytes (up to three).
    Escape(Vec<u8>),
}

/// One decoded `key=value` pair.
pub type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Go's `url.ParseQuery`: the pairs in order, keys and values unescaped (`+` is a space). On
/// failure the error is the first escape error, unless a segment held a `;`, whose error wins
/// (Go overwrites it last).
pub fn parse_query(query: &[u8]) -> Result<Vec<Pair<'_>>, QueryError> {
    if query.iter().filter(|&&b| b == b'&').count() + 1 > MAX_QUERY_PARAMS {
        return Err(QueryError::TooMany);
    }
    let mut pairs = Vec::new();
    let mut semicolon = false;
    let mut first_err: Option<Vec<u8>> = None;
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
        match unescape(key, true).and_then(|k| Ok((k, unescape(value, true)?))) {
            Ok(pair) => pairs.push(pair),
            Err(bad) => {
                first_err.get_or_insert(bad);
            }
        }
    }
    if semicolon {
        return Err(QueryError::Semicolon);
    }
    match first_err {
        Some(bad) => Err(QueryError::Escape(bad)),
        None => Ok(pairs),
    }
}

/// The query string of a request target (after the first `?`, before any `#`).
pub fn query_of(target: &str) -> &str {
    target
        .split_once('?')
        .map_or("", |(_, q)| q.split('#').next().unwrap_or(""))
}

/// Go's `url.unescape` for path segments (`+` kept) or query components (`+` is a space).
/// `Err` holds the malformed escape (up to three bytes).
pub fn unescape(s: &[u8], query: bool) -> Result<Cow<'_, [u8]>, Vec<u8>> {
    let mut escapes = 0usize;
    let mut plus = false;
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        match c {
            b'%' => {
                let hex = |j: usize| s.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(s[i..s.len().min(i + 3)].to_vec());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Result<Vec<(String, String)>, QueryError> {
        parse_query(q.as_bytes()).map(|p| {
            p.into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect()
        })
    }

    #[test]
    fn queries_decode_like_go() {
        assert_eq!(
            pairs("a=1&b=x+y&a=%32&&c").unwrap(),
            [("a", "1"), ("b", "x y"), ("a", "2"), ("c", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(pairs("a=1;b=2"), Err(QueryError::Semicolon));
        assert_eq!(pairs("a=%zz&b=%"), Err(QueryError::Escape(b"%zz".to_vec())));
        // The semicolon error wins over an escape error, as in Go.
        assert_eq!(pairs("a=%zz&b;c"), Err(QueryError::Semicolon));
        let many = "a&".repeat(MAX_QUERY_PARAMS);
        assert_eq!(pairs(&many), Err(QueryError::TooMany));
    }

    #[test]
    fn paths_keep_plus_and_queries_split_at_hash() {
        assert_eq!(&*unescape(b"a+b%2F", false).unwrap(), b"a+b/");
        assert_eq!(query_of("/p?x=1#frag"), "x=1");
        assert_eq!(query_of("/p"), "");
    }
}
