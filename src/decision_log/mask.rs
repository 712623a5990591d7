//! Masking and dropping events, with OPA's `system.log.mask` and `system.log.drop` policies,
//! and the default erasure of credentials.
//!
//! Both policies are evaluated with the unmasked event as `input`, drop first. The mask policy
//! answers a set of JSON pointers to erase (`"/input/password"`), or of operations
//! `{"op": "remove"|"upsert", "path": ..., "value": ...}`; paths start with `/input`, `/result`
//! or `/nd_builtin_cache` and their segments are percent-decoded. Erased paths are listed in the
//! event's `erased`, upserted ones in `masked`.
//!
//! After the mask policy, the values of the `authorization`, `proxy-authorization` and `cookie`
//! request headers are erased whatever the policy said, unless the policy upserted that very
//! header (then its value is the policy's choice).

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::policy::Snapshot;

/// Request headers whose values are never logged.
pub const ERASED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

const HEADERS: &str = "/input/attributes/request/http/headers";
const HEADER_MAP: &str = "/input/attributes/request/http/headerMap/headers";

/// One rule of a mask policy's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MaskRule {
    Remove {
        path: String,
        parts: Vec<String>,
    },
    Upsert {
        path: String,
        parts: Vec<String>,
        value: Json,
    },
}

/// Parses a mask policy's answer (an array or set of strings and operation objects).
pub(crate) fn parse_rules(answer: &Json) -> Result<Vec<MaskRule>, String> {
    let Json::Array(items) = answer else {
        return Err(format!("the mask policy must answer a set, got {answer}"));
    };
    items
        .iter()
        .map(|item| match item {
            Json::String(path) => Ok(MaskRule::Remove {
                parts: split_path(path)?,
                path: path.clone(),
            }),
            Json::Object(op) => {
                let path = op
                    .get("path")
                    .and_then(Json::as_str)
                    .ok_or_else(|| format!("mask rule without a string \"path\": {item}"))?;
                let parts = split_path(path)?;
                match op.get("op").and_then(Json::as_str).unwrap_or("remove") {
                    "remove" => Ok(MaskRule::Remove {
                        path: path.to_string(),
                        parts,
                    }),
                    "upsert" => Ok(MaskRule::Upsert {
                        path: path.to_string(),
                        parts,
                        value: op.get("value").cloned().unwrap_or(Json::Null),
                    }),
                    other => Err(format!("mask op {other:?} is not supported")),
                }
            }
            other => Err(format!("invalid mask rule {other}")),
        })
        .collect()
}

fn split_path(path: &str) -> Result<Vec<String>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("mask path {path:?} must start with '/'"))?;
    let parts: Vec<String> = rest
        .split('/')
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("mask path {path:?} has an invalid escape"))
        })
        .collect::<Result<_, _>>()?;
    match parts.first().map(String::as_str) {
        Some("input" | "result" | "nd_builtin_cache") => Ok(parts),
        _ => Err(format!(
            "mask path {path:?} must start with /input, /result or /nd_builtin_cache"
        )),
    }
}

/// Applies `rules` to `event`, recording what was erased and masked.
pub(crate) fn apply(
    event: &mut Map<String, Json>,
    rules: &[MaskRule],
    erased: &mut Vec<String>,
    masked: &mut Vec<String>,
) {
    for rule in rules {
        match rule {
            MaskRule::Remove { path, parts } => {
                if remove(event, parts) {
                    erased.push(path.clone());
                }
            }
            MaskRule::Upsert { path, parts, value } => {
                if upsert(event, parts, value.clone()) {
                    masked.push(path.clone());
                }
            }
        }
    }
}

fn remove(event: &mut Map<String, Json>, parts: &[String]) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return false;
    };
    let Some((last, parents)) = rest.split_last() else {
        return event.remove(first).is_some();
    };
    let Some(mut node) = event.get_mut(first) else {
        return false;
    };
    for p in parents {
        node = match node {
            Json::Object(m) => match m.get_mut(p) {
                Some(n) => n,
                None => return false,
            },
            Json::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Json::Object(m) => m.remove(last).is_some(),
        Json::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn upsert(event: &mut Map<String, Json>, parts: &[String], value: Json) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return false;
    };
    let Some((last, parents)) = rest.split_last() else {
        event.insert(first.clone(), value);
        return true;
    };
    // Like OPA, a missing input or result is not created.
    let Some(mut node) = event.get_mut(first) else {
        return false;
    };
    for p in parents {
        node = match node {
            Json::Object(m) => m
                .entry(p.clone())
                .or_insert_with(|| Json::Object(Map::new())),
            Json::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Json::Object(m) => {
            m.insert(last.clone(), value);
            true
        }
        Json::Array(a) => match last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Erases credential headers (see the module doc), except those the mask policy upserted.
pub(crate) fn erase_credentials(
    event: &mut Map<String, Json>,
    erased: &mut Vec<String>,
    masked: &[String],
) {
    let Some(input) = event.get_mut("input") else {
        return;
    };
    if let Some(headers) = input
        .pointer_mut("/attributes/request/http/headers")
        .and_then(Json::as_object_mut)
    {
        for name in ERASED_HEADERS {
            let path = format!("{HEADERS}/{name}");
            if masked.contains(&path) {
                continue;
            }
            if headers.remove(*name).is_some() && !erased.contains(&path) {
                erased.push(path);
            }
        }
    }
    if let Some(list) = input
        .pointer_mut("/attributes/request/http/headerMap/headers")
        .and_then(Json::as_array_mut)
    {
        for (i, entry) in list.iter_mut().enumerate() {
            let Some(entry) = entry.as_object_mut() else {
                continue;
            };
            let is_secret = entry
                .get("key")
                .and_then(Json::as_str)
                .is_some_and(|k| ERASED_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h)));
            if !is_secret {
                continue;
            }
            for field in ["value", "rawValue"] {
                let path = format!("{HEADER_MAP}/{i}/{field}");
                if !masked.contains(&path) && entry.remove(field).is_some() {
                    erased.push(path);
                }
            }
        }
    }
}

/// The mask and drop policies of one snapshot, found once per snapshot.
#[derive(Debug, Default)]
pub(crate) struct Policies {
    mask_path: String,
    drop_path: String,
    current: Option<(Arc<Snapshot>, bool, bool)>,
}

/// What the policies said about one event.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Keep(Vec<MaskRule>),
    Drop,
}

impl Policies {
    pub(crate) fn new(mask_path: &str, drop_path: &str) -> Self {
        Self {
            mask_path: mask_path.trim_matches('/').to_string(),
            drop_path: drop_path.trim_matches('/').to_string(),
            current: None,
        }
    }

    /// Evaluates the drop policy, then the mask policy, against `event`. An error in either
    /// is returned (the caller drops the event: an unmasked event could leak what the mask
    /// was written to hide).
    pub(crate) fn judge(
        &mut self,
        snapshot: &Arc<Snapshot>,
        event: &Map<String, Json>,
    ) -> Result<Verdict, String> {
        let (has_mask, has_drop) = match &self.current {
            Some((s, m, d)) if Arc::ptr_eq(s, snapshot) => (*m, *d),
            _ => {
                let m = defines(snapshot, &self.mask_path);
                let d = defines(snapshot, &self.drop_path);
                self.current = Some((snapshot.clone(), m, d));
                (m, d)
            }
        };
        if !has_mask && !has_drop {
            return Ok(Verdict::Keep(Vec::new()));
        }
        let input = regorus::Value::from(Json::Object(event.clone()));
        if has_drop {
            let v = snapshot
                .eval_path(&self.drop_path, Some(input.clone()))
                .map_err(|e| format!("drop policy: {e}"))?;
            if v == regorus::Value::from(true) {
                return Ok(Verdict::Drop);
            }
        }
        if !has_mask {
            return Ok(Verdict::Keep(Vec::new()));
        }
        let v = snapshot
            .eval_path(&self.mask_path, Some(input))
            .map_err(|e| format!("mask policy: {e}"))?;
        if v == regorus::Value::Undefined {
            return Ok(Verdict::Keep(Vec::new()));
        }
        let answer = serde_json::to_value(&v).map_err(|e| format!("mask policy: {e}"))?;
        parse_rules(&answer)
            .map(Verdict::Keep)
            .map_err(|e| format!("mask policy: {e}"))
    }
}

/// Whether any module's package could define `path` (`system/log/mask` is defined by package
/// `system.log`, `system` or `system.log.mask`). A false positive only costs an evaluation.
fn defines(snapshot: &Snapshot, path: &str) -> bool {
    let dotted = path.replace('/', ".");
    snapshot.modules().iter().any(|(_, text)| {
        package_of(text).is_some_and(|pkg| {
            dotted == pkg
                || dotted.starts_with(&format!("{pkg}."))
                || pkg.starts_with(&format!("{dotted}."))
        })
    })
}

fn package_of(text: &str) -> Option<&str> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix("package")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        rest.split_whitespace().next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Map<String, Json> {
        match json!({
            "decision_id": "d",
            "input": {"attributes": {"request": {"http": {"headers": {
                "authorization": "Bearer s3cret", "cookie": "sid=1", "x-ok": "1", "a/b": "2"}}}},
                "list": [1, 2, 3]},
            "result": {"allowed": true, "headers": {"x": "y"}}
        }) {
            Json::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn remove_and_upsert_like_opa() {
        let rules = parse_rules(&json!([
            "/input/attributes/request/http/headers/x-ok",
            "/input/attributes/request/http/headers/a%2Fb",
            "/input/list/1",
            "/input/missing/x",
            {"op": "upsert", "path": "/result/headers/x", "value": "**"},
            {"op": "upsert", "path": "/input/new/deep", "value": 1},
        ]))
        .unwrap();
        let mut e = event();
        let (mut erased, mut masked) = (vec![], vec![]);
        apply(&mut e, &rules, &mut erased, &mut masked);
        assert_eq!(
            erased,
            vec![
                "/input/attributes/request/http/headers/x-ok",
                "/input/attributes/request/http/headers/a%2Fb",
                "/input/list/1"
            ]
        );
        assert_eq!(masked, vec!["/result/headers/x", "/input/new/deep"]);
        assert_eq!(e["input"]["list"], json!([1, 3]));
        assert_eq!(e["result"]["headers"]["x"], "**");
        assert_eq!(e["input"]["new"]["deep"], 1);
        assert!(
            e["input"]["attributes"]["request"]["http"]["headers"]
                .get("x-ok")
                .is_none()
        );
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(parse_rules(&json!(["/labels/id"])).is_err());
        assert!(parse_rules(&json!(["input/x"])).is_err());
        assert!(parse_rules(&json!([{"op": "replace", "path": "/input/x"}])).is_err());
        assert!(parse_rules(&json!("/input/x")).is_err());
    }

    #[test]
    fn credentials_are_erased_unless_upserted() {
        let mut e = event();
        let (mut erased, mut masked) = (vec![], vec![]);
        let rules = parse_rules(&json!([{"op": "upsert",
            "path": "/input/attributes/request/http/headers/cookie", "value": "<cookie>"}]))
        .unwrap();
        apply(&mut e, &rules, &mut erased, &mut masked);
        erase_credentials(&mut e, &mut erased, &masked);
        let text = Json::Object(e.clone()).to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("sid=1"), "{text}");
        assert_eq!(
            e["input"]["attributes"]["request"]["http"]["headers"]["cookie"],
            "<cookie>"
        );
        assert_eq!(erased, vec![format!("{HEADERS}/authorization")]);
    }

    #[test]
    fn header_map_credentials_are_erased() {
        let mut e = match json!({"input": {"attributes": {"request": {"http": {"headerMap": {
            "headers": [{"key": "Authorization", "rawValue": "QmVhcmVy"}, {"key": "x", "value": "1"}]}}}}}})
        {
            Json::Object(m) => m,
            _ => unreachable!(),
        };
        let mut erased = vec![];
        erase_credentials(&mut e, &mut erased, &[]);
        assert_eq!(erased, vec![format!("{HEADER_MAP}/0/rawValue")]);
        assert_eq!(
            e["input"]["attributes"]["request"]["http"]["headerMap"]["headers"][1]["value"],
            "1"
        );
    }

    #[test]
    fn packages_are_found() {
        assert_eq!(package_of("# c\npackage system.log\n"), Some("system.log"));
        assert_eq!(package_of("packages := 1\n"), None);
    }
}
