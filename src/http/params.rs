//! The REST API's query parameters, read as OPA reads them, and how answers are written.
//!
//! A flag such as `pretty` is on when given with no value (`?pretty`) or with any value equal
//! to `true` ignoring case (`?pretty=TRUE`), off otherwise, as in OPA. `input` takes its last
//! value. `explain`, `instrument` and `partial` are accepted and change nothing (see the
//! README's "OPA REST API" section).

use std::time::Instant;

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json};

use super::error::ApiError;

/// The parameters one request gave.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn from_uri(uri: &Uri) -> Self {
        let pairs = uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Self { pairs }
    }

    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_string();
        self.pairs
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// OPA's boolean parameter: see the module docs.
    pub fn flag(&self, name: &str) -> bool {
        let values: Vec<&str> = self.values(name).collect();
        match values.as_slice() {
            [] => false,
            [""] => true,
            many => many.iter().any(|v| v.eq_ignore_ascii_case("true")),
        }
    }

    /// The last value of a parameter.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.values(name).last()
    }

    pub fn pretty(&self) -> bool {
        self.flag("pretty")
    }

    /// Every parameter as OPA's authorization input shows them: `{name: [values]}`.
    pub fn to_json(&self) -> Json {
        let mut out = Map::new();
        for (k, v) in &self.pairs {
            if let Json::Array(values) = out
                .entry(k.clone())
                .or_insert_with(|| Json::Array(Vec::new()))
            {
                values.push(Json::String(v.clone()));
            }
        }
        Json::Object(out)
    }
}

/// OPA's timers for one request, in nanoseconds, answered under `metrics` when asked for.
#[derive(Debug)]
pub struct Timers {
    started: Instant,
    done: Vec<(&'static str, u128)>,
}

impl Timers {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs `f`, recording its duration as `timer_<name>_ns`.
    pub fn time<R>(&mut self, name: &'static str, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.done.push((name, t.elapsed().as_nanos()));
        r
    }

    /// Every timer, and `timer_server_handler_ns` for the whole request so far.
    pub fn to_json(&self) -> Json {
        let mut out = Map::new();
        for (name, ns) in &self.done {
            out.insert(format!("timer_{name}_ns"), Json::from(*ns as u64));
        }
        out.insert(
            "timer_server_handler_ns".into(),
            Json::from(self.started.elapsed().as_nanos() as u64),
        );
        Json::Object(out)
    }
}

/// Go's `url.PathUnescape` of one path segment, as UTF-8; `None` for a `%` not followed by two
/// hex digits, or bytes that are not UTF-8.
pub fn unescape_segment(s: &str) -> Option<String> {
    let bytes = crate::gourl::unescape(s.as_bytes(), false).ok()?;
    String::from_utf8(bytes.into_owned()).ok()
}

/// A 200 answer with a JSON body, indented with two spaces when `pretty`.
pub fn ok_json(value: &Json, pretty: bool) -> Response {
    json_response(StatusCode::OK, value, pretty)
}

pub fn json_response(status: StatusCode, value: &Json, pretty: bool) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    match text {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// Reads a request body of at most `limit` bytes; a longer one is OPA's 413.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            super::error::Code::InvalidParameter,
            "request body too large",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::from_uri(&format!("/x?{q}").parse().unwrap())
    }

    #[test]
    fn segments_unescape_like_go() {
        assert_eq!(unescape_segment("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(unescape_segment("a+b").as_deref(), Some("a+b"));
        assert_eq!(unescape_segment("a%zz"), None);
        assert_eq!(unescape_segment("a%f"), None);
        assert_eq!(unescape_segment("a%ff"), None);
    }

    #[test]
    fn flags_read_like_opa() {
        assert!(params("pretty").flag("pretty"));
        assert!(params("pretty=").flag("pretty"));
        assert!(params("pretty=TRUE").flag("pretty"));
        assert!(!params("pretty=1").flag("pretty"));
        assert!(!params("pretty=false").flag("pretty"));
        assert!(params("pretty=x&pretty=true").flag("pretty"));
        assert!(!params("other").flag("pretty"));
        assert_eq!(params("input=1&input=2").last("input"), Some("2"));
        assert_eq!(
            params("a=1&a=2&b").to_json(),
            serde_json::json!({"a": ["1", "2"], "b": [""]})
        );
    }
}
