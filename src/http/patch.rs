//! Data API writes as OPA's store applies them, on a copy of the data document.
//!
//! `PUT`, `DELETE` and each `PATCH` operation (`add`, `remove`, `replace`; OPA's Data API
//! supports no others) run against the current data document in memory with OPA's rules:
//! `add` sets an object key or inserts into an array (`-` or the length appends), `replace`
//! and `remove` need the target to exist, the root can only be replaced by an object and never
//! removed, `PUT` creates missing parent objects and fails on a parent that is not one. Each
//! change records the path it touched (cut at the first array, since the store's runtime
//! writes address object keys); [`Doc::writes`] turns the changed document into those writes.

use serde_json::{Map, Value as Json};

use crate::policy::overlay::DataWrite;

/// The most operations one `PATCH` may carry.
pub const MAX_PATCH_OPS: usize = 10_000;

/// Why a write failed, as OPA's store names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// `storage_not_found_error` (404 `resource_not_found`).
    NotFound(String),
    /// `storage_write_conflict_error` (404 `resource_conflict`).
    WriteConflict(String),
    /// `storage_invalid_patch_error` (400 `invalid_parameter`).
    InvalidPatch(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound(m) => write!(f, "storage_not_found_error: {m}"),
            StoreError::WriteConflict(m) => write!(f, "storage_write_conflict_error: {m}"),
            StoreError::InvalidPatch(m) => write!(f, "storage_invalid_patch_error: {m}"),
        }
    }
}

const DOES_NOT_EXIST: &str = "document does not exist";

/// A patch operation OPA's Data API supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
    Replace,
}

impl Op {
    /// OPA's names; any other is refused as `bad patch operation`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "add" => Some(Op::Add),
            "remove" => Some(Op::Remove),
            "replace" => Some(Op::Replace),
            _ => None,
        }
    }
}

/// A storage path as OPA prints it: `/a/b`.
pub fn display(path: &[String]) -> String {
    format!("/{}", path.join("/"))
}

/// The data document being changed, and the paths changed so far.
#[derive(Debug)]
pub struct Doc {
    root: Json,
    touched: Vec<Vec<String>>,
}

impl Doc {
    pub fn new(data: &Map<String, Json>) -> Self {
        Self {
            root: Json::Object(data.clone()),
            touched: Vec::new(),
        }
    }

    /// The value at `path`, read as OPA's store reads it.
    pub fn read(&self, path: &[String]) -> Result<&Json, StoreError> {
        let mut node = &self.root;
        for key in path {
            node = match node {
                Json::Object(m) => m
                    .get(key)
                    .ok_or_else(|| not_found_at(path, DOES_NOT_EXIST))?,
                Json::Array(a) => &a[index(a, key, path)?],
                _ => return Err(not_found_at(path, DOES_NOT_EXIST)),
            };
        }
        Ok(node)
    }

    /// OPA's `PUT`: creates missing parent objects, then adds `value` at `path`.
    pub fn put(&mut self, path: &[String], value: Json) -> Result<(), StoreError> {
        if self.read(path).is_err() && !path.is_empty() {
            self.make_dir(&path[..path.len() - 1])?;
        }
        self.apply(Op::Add, path, Some(value))
    }

    fn make_dir(&mut self, path: &[String]) -> Result<(), StoreError> {
        if path.is_empty() {
            return Ok(());
        }
        match self.read(path) {
            Ok(Json::Object(_)) => Ok(()),
            Ok(_) => Err(StoreError::WriteConflict(display(path))),
            Err(_) => {
                self.make_dir(&path[..path.len() - 1])?;
                self.apply(Op::Add, path, Some(Json::Object(Map::new())))
            }
        }
    }

    /// One write with OPA's rules (see the module docs).
    pub fn apply(
        &mut self,
        op: Op,
        path: &[String],
        value: Option<Json>,
    ) -> Result<(), StoreError> {
        let Some((last, parents)) = path.split_last() else {
            return match (op, value) {
                (Op::Remove, _) => Err(StoreError::InvalidPatch("root cannot be removed".into())),
                (_, Some(Json::Object(m))) => {
                    self.root = Json::Object(m);
                    self.touched.push(Vec::new());
                    Ok(())
                }
                _ => Err(StoreError::InvalidPatch("root must be object".into())),
            };
        };
        let mut node = &mut self.root;
        // The touched path ends at the first array on the way.
        let mut cut: Option<usize> = None;
        for (i, key) in parents.iter().enumerate() {
            node = match node {
                Json::Object(m) => m.get_mut(key).ok_or_else(not_found)?,
                Json::Array(a) => {
                    cut.get_or_insert(i);
                    let pos = index(a, key, path)?;
                    &mut a[pos]
                }
                _ => return Err(not_found()),
            };
        }
        match node {
            Json::Object(m) => {
                if op != Op::Add && !m.contains_key(last) {
                    return Err(not_found());
                }
                match (op, value) {
                    (Op::Remove, _) => {
                        m.remove(last);
                    }
                    (_, value) => {
                        m.insert(last.clone(), value.unwrap_or(Json::Null));
                    }
                }
            }
            Json::Array(a) => {
                cut.get_or_insert(parents.len());
                if last == "-" || *last == a.len().to_string() {
                    if op != Op::Add {
                        return Err(StoreError::InvalidPatch(format!(
                            "{}: invalid patch path",
                            display(path)
                        )));
                    }
                    a.push(value.unwrap_or(Json::Null));
                } else {
                    let pos = index(a, last, path)?;
                    match op {
                        Op::Add => a.insert(pos, value.unwrap_or(Json::Null)),
                        Op::Remove => {
                            a.remove(pos);
                        }
                        Op::Replace => a[pos] = value.unwrap_or(Json::Null),
                    }
                }
            }
            _ => return Err(not_found()),
        }
        self.touched
            .push(path[..cut.unwrap_or(path.len())].to_vec());
        Ok(())
    }

    /// The paths touched, each covering the ones below it.
    pub fn touched(&self) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for p in &self.touched {
            if out.iter().any(|q| p.starts_with(q)) {
                continue;
            }
            out.retain(|q| !q.starts_with(p));
            out.push(p.clone());
        }
        out
    }

    /// The runtime writes that turn the old document into this one.
    pub fn writes(&self) -> Vec<DataWrite> {
        self.touched()
            .into_iter()
            .map(|p| {
                let value = self.read(&p).ok().cloned();
                (p, value)
            })
            .collect()
    }
}

fn not_found() -> StoreError {
    StoreError::NotFound(DOES_NOT_EXIST.into())
}

fn not_found_at(path: &[String], hint: &str) -> StoreError {
    StoreError::NotFound(format!("{}: {hint}", display(path)))
}

/// An array index as OPA's store reads one: a Go integer within the array.
fn index(a: &[Json], key: &str, path: &[String]) -> Result<usize, StoreError> {
    let i: i64 = key
        .parse()
        .map_err(|_| not_found_at(path, "array index must be integer"))?;
    usize::try_from(i)
        .ok()
        .filter(|i| *i < a.len())
        .ok_or_else(|| not_found_at(path, "array index out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Json) -> Doc {
        match v {
            Json::Object(m) => Doc::new(&m),
            _ => panic!("object"),
        }
    }

    fn p(s: &str) -> Vec<String> {
        s.split('/')
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn arrays_append_insert_and_replace_like_opa() {
        let mut d = doc(json!({"x": []}));
        d.apply(Op::Add, &p("x/-"), Some(json!({"a": 1}))).unwrap();
        d.apply(Op::Add, &p("x/1"), Some(json!({"a": 2}))).unwrap();
        d.apply(Op::Add, &p("x/0"), Some(json!(0))).unwrap();
        assert_eq!(d.read(&p("x")).unwrap(), &json!([0, {"a": 1}, {"a": 2}]));
        d.apply(Op::Replace, &p("x/0"), Some(json!(9))).unwrap();
        d.apply(Op::Remove, &p("x/1"), None).unwrap();
        assert_eq!(d.read(&p("x")).unwrap(), &json!([9, {"a": 2}]));
        // Writes inside an array touch the array.
        assert_eq!(d.writes(), vec![(p("x"), Some(json!([9, {"a": 2}])))]);
        assert_eq!(
            d.apply(Op::Remove, &p("x/-"), None),
            Err(StoreError::InvalidPatch("/x/-: invalid patch path".into()))
        );
        assert_eq!(
            d.apply(Op::Replace, &p("x/7"), Some(json!(1))),
            Err(StoreError::NotFound(
                "/x/7: array index out of range".into()
            ))
        );
        assert_eq!(
            d.apply(Op::Replace, &p("x/k"), Some(json!(1))),
            Err(StoreError::NotFound(
                "/x/k: array index must be integer".into()
            ))
        );
        assert_eq!(
            d.apply(Op::Replace, &p("x/-1"), Some(json!(1))),
            Err(StoreError::NotFound(
                "/x/-1: array index out of range".into()
            ))
        );
    }

    #[test]
    fn objects_need_their_parents_and_targets() {
        let mut d = doc(json!({"a": {"b": 1}}));
        assert_eq!(
            d.apply(Op::Add, &p("nope/b"), Some(json!(1))),
            Err(StoreError::NotFound(DOES_NOT_EXIST.into()))
        );
        assert_eq!(
            d.apply(Op::Replace, &p("a/c"), Some(json!(1))),
            Err(StoreError::NotFound(DOES_NOT_EXIST.into()))
        );
        assert!(d.apply(Op::Add, &p("a/b/c"), Some(json!(1))).is_err());
        d.apply(Op::Remove, &p("a/b"), None).unwrap();
        assert_eq!(d.writes(), vec![(p("a/b"), None)]);
        assert_eq!(
            d.apply(Op::Remove, &[], None),
            Err(StoreError::InvalidPatch("root cannot be removed".into()))
        );
        assert_eq!(
            d.apply(Op::Add, &[], Some(json!([1]))),
            Err(StoreError::InvalidPatch("root must be object".into()))
        );
        assert_eq!(
            d.read(&p("a/x")),
            Err(StoreError::NotFound("/a/x: document does not exist".into()))
        );
    }

    #[test]
    fn put_makes_parents_and_stops_at_scalars() {
        let mut d = doc(json!({}));
        d.put(&p("a/b/c/d"), json!(1)).unwrap();
        assert_eq!(d.read(&p("a")).unwrap(), &json!({"b": {"c": {"d": 1}}}));
        assert_eq!(
            d.writes(),
            vec![(p("a"), Some(json!({"b": {"c": {"d": 1}}})))]
        );
        let mut d = doc(json!({"a": {"b": [1, 2]}}));
        assert_eq!(
            d.put(&p("a/b/c/d"), json!(0)),
            Err(StoreError::WriteConflict("/a/b".into()))
        );
        // A later root write covers the earlier ones.
        let mut d = doc(json!({"a": 1}));
        d.put(&p("b"), json!(2)).unwrap();
        d.put(&[], json!({"c": 3})).unwrap();
        assert_eq!(d.writes(), vec![(vec![], Some(json!({"c": 3})))]);
    }
}
