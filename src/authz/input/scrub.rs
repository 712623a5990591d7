//! Erasing credentials from a copy of the input document before it is logged (decision logs,
//! `StreamDecisions`), at every place the input document holds a copy of the request:
//!
//! | location in the request | copies in the input document |
//! |---|---|
//! | a header | `attributes.request.http.headers[name]`, `headerMap.headers[]` entries of that name |
//! | a query parameter | `http.path`, `http.query`, the `:path` and `x-envoy-original-path` headers (and their `headerMap` entries), `parsed_query[name]` |
//! | a cookie | that cookie in every `cookie` header (`headers`, `headerMap`) |
//!
//! Headers are removed; a query parameter's or cookie's value becomes `REDACTED` and the rest
//! of the string is kept byte for byte. Query parameter names are compared after decoding
//! (`api%5Fkey` is `api_key`), header and cookie names as HTTP compares them.

use base64::Engine as _;
use regorus::Value;

/// What a redacted value reads.
pub const REDACTED: &str = "REDACTED";

/// Headers whose value carries a query string.
const PATH_HEADERS: &[&str] = &[":path", "x-envoy-original-path"];

pub use crate::authn::Credentials;

/// Erases every copy of every credential `creds` names from `input` (see the module docs).
pub fn scrub(creds: &Credentials, input: &mut Value) {
    Scrubber(creds).scrub(input)
}

/// The scrubbing of one document.
struct Scrubber<'a>(&'a Credentials);

impl std::ops::Deref for Scrubber<'_> {
    type Target = Credentials;
    fn deref(&self) -> &Credentials {
        self.0
    }
}

impl Scrubber<'_> {
    fn scrub(&self, input: &mut Value) {
        if self.is_empty() {
            return;
        }
        let Ok(root) = input.as_object_mut() else {
            return;
        };
        if let Some(q) = root.get_mut(&Value::from("parsed_query"))
            && let Ok(q) = q.as_object_mut()
        {
            for p in &self.query_params {
                q.remove(&Value::from(p.as_str()));
            }
        }
        let Some(http) = root
            .get_mut(&Value::from("attributes"))
            .and_then(|a| child(a, "request"))
            .and_then(|r| child(r, "http"))
        else {
            return;
        };
        let Ok(http) = http.as_object_mut() else {
            return;
        };
        for key in ["path", "query"] {
            if let Some(v) = http.get_mut(&Value::from(key)) {
                self.redact_string(v, |s| self.redact_query_in(s, key == "path"));
            }
        }
        if let Some(h) = http.get_mut(&Value::from("headers"))
            && let Ok(h) = h.as_object_mut()
        {
            for name in &self.headers {
                h.remove(&Value::from(name.as_str()));
            }
            for name in PATH_HEADERS {
                if let Some(v) = h.get_mut(&Value::from(*name)) {
                    self.redact_string(v, |s| self.redact_query_in(s, true));
                }
            }
            if let Some(v) = h.get_mut(&Value::from("cookie")) {
                self.redact_string(v, |s| self.redact_cookies(s));
            }
        }
        if let Some(map) = http.get_mut(&Value::from("headerMap"))
            && let Some(list) = child(map, "headers")
            && let Ok(list) = list.as_array_mut()
        {
            list.retain(|entry| {
                !entry_key(entry)
                    .is_some_and(|k| self.headers.iter().any(|h| k.eq_ignore_ascii_case(h)))
            });
            for entry in list.iter_mut() {
                let Some(key) = entry_key(entry).map(str::to_owned) else {
                    continue;
                };
                let redact: fn(&Scrubber<'_>, &str) -> Option<String> =
                    if PATH_HEADERS.iter().any(|h| key.eq_ignore_ascii_case(h)) {
                        |c, s| c.redact_query_in(s, true)
                    } else if key.eq_ignore_ascii_case("cookie") {
                        |c, s| c.redact_cookies(s)
                    } else {
                        continue;
                    };
                let Ok(fields) = entry.as_object_mut() else {
                    continue;
                };
                if let Some(v) = fields.get_mut(&Value::from("value")) {
                    self.redact_string(v, |s| redact(self, s));
                }
                if let Some(v) = fields.get_mut(&Value::from("rawValue"))
                    && let Value::String(b64) = v
                    && let Ok(bytes) =
                        base64::engine::general_purpose::STANDARD.decode(b64.as_bytes())
                    && let Some(text) = redact(self, &String::from_utf8_lossy(&bytes))
                {
                    *v = Value::from(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
        }
    }

    fn redact_string(&self, v: &mut Value, f: impl Fn(&str) -> Option<String>) {
        if let Value::String(s) = v
            && let Some(new) = f(s)
        {
            *v = Value::from(new);
        }
    }

    /// `path` (with `?query` when `in_path`) with credential parameters' values redacted;
    /// `None` when nothing changed.
    fn redact_query_in(&self, s: &str, in_path: bool) -> Option<String> {
        if self.query_params.is_empty() {
            return None;
        }
        let (base, query) = if in_path {
            let (b, q) = s.split_once('?')?;
            (Some(b), q)
        } else {
            (None, s)
        };
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let mut changed = false;
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let (key, _) = pair.split_once('=').unwrap_or((pair, ""));
                if self
                    .query_params
                    .iter()
                    .any(|p| *p == decode_component(key))
                {
                    changed = true;
                    format!("{key}={REDACTED}")
                } else {
                    pair.to_string()
                }
            })
            .collect();
        if !changed {
            return None;
        }
        let mut out = String::with_capacity(s.len());
        if let Some(b) = base {
            out.push_str(b);
            out.push('?');
        }
        out.push_str(&pairs.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        Some(out)
    }

    /// A `cookie` header with credential cookies' values redacted.
    fn redact_cookies(&self, s: &str) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        let mut changed = false;
        let parts: Vec<String> = s
            .split(';')
            .map(|part| {
                let (name, _) = part.split_once('=').unwrap_or((part, ""));
                if self.cookies.iter().any(|c| c == name.trim()) {
                    changed = true;
                    format!("{name}={REDACTED}")
                } else {
                    part.to_string()
                }
            })
            .collect();
        changed.then(|| parts.join(";"))
    }
}

fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    v.as_object_mut().ok()?.get_mut(&Value::from(key))
}

fn entry_key(entry: &Value) -> Option<&str> {
    match entry.as_object().ok()?.get(&Value::from("key"))? {
        Value::String(s) => Some(s.as_ref()),
        _ => None,
    }
}

/// A query component as Go's `url.ParseQuery` decodes it (`+` is a space); undecodable text is
/// compared as it is.
fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .unwrap_or(plus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            headers: vec!["x-api-key".into(), "authorization".into()],
            query_params: vec!["api_key".into()],
            cookies: vec!["session".into()],
        }
    }

    #[test]
    fn every_copy_is_scrubbed() {
        let secret = "sk_live_SECRET";
        let raw = base64::engine::general_purpose::STANDARD
            .encode(format!("/v1/x?api%5Fkey={secret}&page=2"));
        let mut input = Value::from(serde_json::json!({
            "attributes": {"request": {"http": {
                "path": format!("/v1/x?page=2&api_key={secret}#frag"),
                "query": format!("api+key=1&api_key={secret}"),
                "headers": {
                    "x-api-key": secret, "authorization": format!("Bearer {secret}"),
                    ":path": format!("/v1/x?api_key={secret}"),
                    "x-envoy-original-path": format!("/orig?api%5Fkey={secret}"),
                    "cookie": format!("a=1; session={secret}; b=2"),
                    "accept": "*/*"},
                "headerMap": {"headers": [
                    {"key": "X-Api-Key", "value": secret},
                    {"key": ":path", "value": format!("/v1/x?api_key={secret}"), "rawValue": raw},
                    {"key": "cookie", "value": format!("session={secret}")},
                    {"key": "accept", "value": "*/*"}]}}}},
            "parsed_query": {"api_key": [secret], "page": ["2"]}
        }));
        scrub(&creds(), &mut input);
        let text = serde_json::to_string(&input).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        let raw_after =
            input["attributes"]["request"]["http"]["headerMap"]["headers"][0]["rawValue"].clone();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw_after.as_string().unwrap().as_bytes())
            .unwrap();
        assert!(!String::from_utf8_lossy(&decoded).contains("SECRET"));
        // Everything else is kept as it was.
        assert!(
            text.contains(r#""path":"/v1/x?page=2&api_key=REDACTED#frag""#),
            "{text}"
        );
        assert!(
            text.contains(r#""query":"api+key=1&api_key=REDACTED""#),
            "{text}"
        );
        assert!(text.contains(r#"a=1; session=REDACTED; b=2"#), "{text}");
        assert!(
            text.contains(r#""page":["2"]"#) && text.contains("accept"),
            "{text}"
        );
    }

    #[test]
    fn nothing_configured_changes_nothing() {
        let mut input = Value::from(serde_json::json!({"parsed_query": {"api_key": ["x"]}}));
        let before = input.clone();
        scrub(&Credentials::default(), &mut input);
        assert_eq!(input, before);
    }
}
