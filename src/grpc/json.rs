//! JSON ↔ `google.protobuf.Value` / `Struct` (envoy-types' generated types, which the gateway's
//! protos also use; see build.rs).
//!
//! Two directions of reading a `Value`: [`value_to_json`] is for values a stranger sent (bounded
//! depth, non-finite numbers refused), [`value_json`] is for display (total: every value prints,
//! `NaN` and infinities as strings).

use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Value as Json, json};

/// The deepest nesting of a `google.protobuf.Value` converted either way: protobuf decoders
/// (prost's, Envoy's) stop at 100 levels, so anything deeper could not be read back.
pub const MAX_DEPTH: usize = 100;

/// The largest integer a double holds exactly: 2^53.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// A JSON value as a `google.protobuf.Value` (numbers become doubles).
pub fn json_to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(json_object_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn json_object_to_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// A received `google.protobuf.Value` as JSON; `None` when nested deeper than [`MAX_DEPTH`] or
/// holding a number that is not finite. Integral doubles below 2^53 become JSON integers.
pub fn value_to_json(v: &Value) -> Option<Json> {
    checked(v, 0)
}

fn checked(v: &Value, depth: usize) -> Option<Json> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) if n.is_finite() => number(*n),
        Some(Kind::NumberValue(_)) => return None,
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(
            l.values
                .iter()
                .map(|v| checked(v, depth + 1))
                .collect::<Option<_>>()?,
        ),
        Some(Kind::StructValue(s)) => Json::Object(
            s.fields
                .iter()
                .map(|(k, v)| Some((k.clone(), checked(v, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// A `google.protobuf.Struct` as a plain JSON object, keys sorted, for display.
pub fn struct_json(s: &Struct) -> Json {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    let mut out = Map::new();
    for k in keys {
        if let Some(v) = s.fields.get(k) {
            out.insert(k.clone(), value_json(v));
        }
    }
    Json::Object(out)
}

/// A `google.protobuf.Value` as plain JSON, for display.
pub fn value_json(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::NumberValue(n)) if n.is_nan() => json!("NaN"),
        Some(Kind::NumberValue(n)) if n.is_infinite() => {
            json!(if *n > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_json).collect()),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

/// A finite double; integral ones that a double holds exactly stay integers.
fn number(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() <= EXACT_INT {
        #[allow(clippy::cast_possible_truncation)]
        return json!(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips() {
        let j = json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        assert_eq!(value_to_json(&json_to_value(&j)).unwrap(), j);
        assert_eq!(value_json(&json_to_value(&j)), j);
    }

    #[test]
    fn deep_and_non_finite_values_are_refused_but_display() {
        let mut v = json_to_value(&Json::Null);
        for _ in 0..(MAX_DEPTH + 2) {
            v = Value {
                kind: Some(Kind::ListValue(ListValue { values: vec![v] })),
            };
        }
        assert!(value_to_json(&v).is_none());
        let nan = Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert!(value_to_json(&nan).is_none());
        assert_eq!(value_json(&nan), json!("NaN"));
    }
}
