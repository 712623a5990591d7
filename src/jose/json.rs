//! JSON objects as JOSE headers and payloads are read: optionally refusing duplicate member
//! names, at any depth (serde_json alone keeps the last value silently).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

/// Why the bytes are not an acceptable JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

/// Parses `bytes` as a JSON object; with `unique`, a member name given twice in any object is
/// an error.
pub fn object(bytes: &[u8], unique: bool) -> Result<Map<String, Json>, JsonError> {
    let value = if unique {
        serde_json::from_slice::<Unique>(bytes).map(|u| u.0)
    } else {
        serde_json::from_slice::<Json>(bytes)
    }
    .map_err(|e| JsonError(e.to_string()))?;
    match value {
        Json::Object(map) => Ok(map),
        _ => Err(JsonError("not a JSON object".into())),
    }
}

/// A JSON value with no duplicate member names anywhere.
struct Unique(Json);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate member {:?}",
                    key.chars().take(64).collect::<String>()
                )));
            }
            let Unique(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Json::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth_only_when_asked() {
        assert!(object(br#"{"a": 1, "a": 2}"#, true).is_err());
        assert!(object(br#"{"x": [{"a": 1, "a": 2}]}"#, true).is_err());
        assert_eq!(object(br#"{"a": 1, "a": 2}"#, false).unwrap()["a"], 2);
        let ok = object(br#"{"a": [1, 2.5, "s", null, true, {"b": {}}]}"#, true).unwrap();
        assert_eq!(ok["a"][5]["b"], serde_json::json!({}));
        assert!(object(b"[1]", true).is_err());
        assert!(object(b"{", true).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(object(deep.as_bytes(), true).is_err());
    }
}
