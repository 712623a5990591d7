//! The generated `portcullis.v1` messages, clients and servers (see build.rs), the encoded
//! descriptor set for reflection, and JSON ↔ `google.protobuf.Value` conversions.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("portcullis.v1");

/// The encoded `FileDescriptorSet` of `proto/portcullis/v1/*.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));

use prost_types::value::Kind;
use serde_json::Value as Json;

/// The deepest JSON nesting converted (deeper values are refused, not recursed into).
pub const MAX_DEPTH: usize = 128;

/// `google.protobuf.Value` → JSON. `None` when nested deeper than [`MAX_DEPTH`] or a number is
/// not finite.
pub fn value_to_json(v: &prost_types::Value) -> Option<Json> {
    to_json(v, 0)
}

fn to_json(v: &prost_types::Value, depth: usize) -> Option<Json> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n)?,
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(
            l.values
                .iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Option<_>>()?,
        ),
        Some(Kind::StructValue(s)) => Json::Object(
            s.fields
                .iter()
                .map(|(k, v)| Some((k.clone(), to_json(v, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// Integers that a double holds exactly stay integers.
fn number(n: f64) -> Option<Json> {
    if !n.is_finite() {
        return None;
    }
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        return Some(Json::from(n as i64));
    }
    serde_json::Number::from_f64(n).map(Json::Number)
}

/// JSON → `google.protobuf.Value` (numbers become doubles).
pub fn json_to_value(j: &Json) -> prost_types::Value {
    let kind = match j {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips() {
        let j = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        assert_eq!(value_to_json(&json_to_value(&j)).unwrap(), j);
    }

    #[test]
    fn deep_values_are_refused() {
        let mut v = json_to_value(&Json::Null);
        for _ in 0..(MAX_DEPTH + 2) {
            v = prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue { values: vec![v] })),
            };
        }
        assert!(value_to_json(&v).is_none());
    }
}
