//! Decision references: how a `path` such as `envoy/authz/allow` names a document under `data`,
//! exactly as OPA-Envoy (and OPA's Data API) turn it into a Rego reference.
//!
//! The path is split on `/`; empty segments (leading, trailing or doubled slashes) are
//! skipped; a segment Go's `strconv.Atoi` accepts (`1`, `-2`, `+3`, `007`) is an integer
//! index, so `envoy/authz/decisions/1` is `data.envoy.authz.decisions[1]` and indexes an
//! array; any other segment is one string key, dots included (`test/com.foo.envoy.ingress/allow`
//! is `data.test["com.foo.envoy.ingress"].allow`). A path with no segments (`/`) is `data`
//! itself. The reference may name anything: a complete rule, a partial or ref-head rule
//! (`result["allowed"] := allow`, `result.headers := ...`), a package, or plain data.

use std::fmt::Write as _;

/// The default decision path, as in OPA-Envoy.
pub const DEFAULT_PATH: &str = "envoy/authz/allow";

/// Checks a decision path such as `envoy/authz/allow`. As in OPA-Envoy any segment is
/// accepted (see [this module](self)); only control characters and absurd lengths are
/// refused. An empty path means the default one.
pub fn validate_decision_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_DECISION_PATH {
        return Err(format!(
            "the decision path is longer than {MAX_DECISION_PATH} bytes"
        ));
    }
    if path.chars().any(char::is_control) {
        return Err("the decision path has control characters".into());
    }
    Ok(())
}

/// The longest decision path accepted.
pub const MAX_DECISION_PATH: usize = 1024;

/// One segment of a [`DataRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(i64),
}

/// A reference into `data`, parsed from an OPA-style slash path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRef {
    segments: Vec<Segment>,
}

/// Rego keywords: never written after a `.` in a generated reference.
const KEYWORDS: &[&str] = &[
    "as", "contains", "data", "default", "else", "every", "false", "if", "import", "in", "input",
    "not", "null", "package", "some", "true", "with",
];

impl DataRef {
    /// Parses a slash path the way OPA-Envoy's `stringPathToRef` does.
    pub fn parse(path: &str) -> Self {
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match go_atoi(s) {
                Some(i) => Segment::Index(i),
                None => Segment::Key(s.to_string()),
            })
            .collect();
        Self { segments }
    }

    /// A reference from path segments already split and unescaped (OPA's Data API splits the
    /// URL path on `/` and unescapes each segment, so `a%2Fb` is the one key `a/b`); a segment
    /// Go's `strconv.Atoi` accepts is an index, as in [`DataRef::parse`].
    pub fn from_segments<S: AsRef<str>>(segments: &[S]) -> Self {
        let segments = segments
            .iter()
            .map(|s| {
                let s = s.as_ref();
                match go_atoi(s) {
                    Some(i) => Segment::Index(i),
                    None => Segment::Key(s.to_string()),
                }
            })
            .collect();
        Self { segments }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The reference as Rego text: `data.a.b`, `data.a["b.c"]`, `data.a[1]`.
    pub fn to_query(&self) -> String {
        let mut out = String::from("data");
        for segment in &self.segments {
            match segment {
                Segment::Key(k) if is_identifier(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Segment::Key(k) => {
                    out.push('[');
                    // A JSON string is a valid Rego string literal.
                    out.push_str(&serde_json::Value::from(k.as_str()).to_string());
                    out.push(']');
                }
                Segment::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    /// `data.a.b` when every segment is a plain identifier, which is how a rule is named for
    /// regorus' rule evaluation; `None` otherwise (the reference is then evaluated as a query).
    pub fn rule_path(&self) -> Option<String> {
        if self.segments.is_empty() {
            return None;
        }
        let plain = self
            .segments
            .iter()
            .all(|s| matches!(s, Segment::Key(k) if is_identifier(k)));
        plain.then(|| self.to_query())
    }

    /// The leading string keys as a dotted path (`data.a.b`), up to the first index or
    /// non-identifier key: used to tell whether any package or rule lies on the way.
    pub fn dotted_prefix(&self) -> String {
        let mut out = String::from("data");
        for segment in &self.segments {
            match segment {
                Segment::Key(k) if is_identifier(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                _ => break,
            }
        }
        out
    }
}

impl std::fmt::Display for DataRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_query())
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
}

/// Go's `strconv.Atoi`: an optional sign, then decimal digits only, within `i64`.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_references_as_in_opa_envoy() {
        let q = |p: &str| DataRef::parse(p).to_query();
        assert_eq!(q("envoy/authz/allow"), "data.envoy.authz.allow");
        assert_eq!(q("/envoy/authz/allow/"), "data.envoy.authz.allow");
        assert_eq!(q("a//b"), "data.a.b");
        assert_eq!(
            q("envoy/authz/decisions/1"),
            "data.envoy.authz.decisions[1]"
        );
        assert_eq!(q("x/-2/+3/007"), "data.x[-2][3][7]");
        assert_eq!(
            q("test/com.foo.envoy.ingress/allow/main/"),
            r#"data.test["com.foo.envoy.ingress"].allow.main"#
        );
        assert_eq!(q("a/b-c/q\"uote"), r#"data.a["b-c"]["q\"uote"]"#);
        assert_eq!(q("a/if/9x"), r#"data.a["if"]["9x"]"#);
        assert_eq!(q("/"), "data");
        assert_eq!(q(""), "data");
        // Not Go integers: kept as string keys.
        assert_eq!(
            q("a/1_000/0x1/+/99999999999999999999"),
            r#"data.a["1_000"]["0x1"]["+"]["99999999999999999999"]"#
        );
    }

    #[test]
    fn rule_paths_only_for_plain_identifiers() {
        assert_eq!(
            DataRef::parse("envoy/authz/allow").rule_path().as_deref(),
            Some("data.envoy.authz.allow")
        );
        assert_eq!(DataRef::parse("a/1").rule_path(), None);
        assert_eq!(DataRef::parse("a/b.c").rule_path(), None);
        assert_eq!(DataRef::parse("/").rule_path(), None);
        assert_eq!(DataRef::parse("a/b.c/d").dotted_prefix(), "data.a");
    }
}
