//! gRPC request bodies (`application/grpc`), decoded with a descriptor set the way
//! OPA-Envoy does: the first length-prefixed message of `raw_body` is decoded as the input
//! type of the method named by the path (`/package.Service/Method`), then rendered as
//! `protojson` would render it (and as OPA reads that JSON back):
//!
//! - JSON field names (`json_name`), only populated fields;
//! - 64-bit integers as strings, 32-bit integers and floats as numbers (`NaN`, `Infinity`,
//!   `-Infinity` as strings), enums by name (unknown numbers as numbers), bytes as base64;
//! - the well-known types in their JSON forms (`Timestamp`, `Duration`, wrappers, `Struct`,
//!   `Value`, `ListValue`, `FieldMask`, `Empty`, `Any` with `@type`).
//!
//! Like the plugin, `Any` payloads resolve only against the types the process itself knows
//! (here the `google.protobuf` well-known types); other type URLs are an error, as
//! `protojson` reports them.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as PValue,
};
use regorus::Value;

use super::InputError;
use super::goutil::{number_from_f64, number_from_text};

/// Deepest message nesting rendered (nested `Any` payloads are decoded one by one, so the
/// decoder's own limit does not bound them): the input document's bound.
use super::MAX_DEPTH;

/// A loaded `proto-descriptor` set.
#[derive(Debug, Clone)]
pub struct ProtoDescriptors {
    pool: DescriptorPool,
    /// The types `Any` payloads may name (the well-known types).
    known_types: DescriptorPool,
}

/// A descriptor set that cannot be read or is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DescriptorSetError(pub String);

impl ProtoDescriptors {
    /// From the bytes of a serialized `google.protobuf.FileDescriptorSet` (as written by
    /// `protoc --descriptor_set_out`; imported files must be included).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DescriptorSetError> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| DescriptorSetError(e.to_string()))?;
        Ok(Self {
            pool,
            known_types: DescriptorPool::global(),
        })
    }

    /// The descriptor pool.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }
}

/// Reads the `proto-descriptor` file.
pub fn load_descriptor_set(path: impl AsRef<Path>) -> Result<ProtoDescriptors, DescriptorSetError> {
    let path = path.as_ref();
    let bytes =
        std::fs::read(path).map_err(|e| DescriptorSetError(format!("{}: {e}", path.display())))?;
    ProtoDescriptors::from_bytes(&bytes)
        .map_err(|e| DescriptorSetError(format!("{}: {}", path.display(), e.0)))
}

pub(super) enum GrpcBody {
    Parsed(Value),
    /// Not decodable here (compressed, unknown service or method): `null`.
    Unknown,
    Truncated,
}

/// The first message of a gRPC request body.
pub(super) fn grpc_body(
    descriptors: &ProtoDescriptors,
    raw: &[u8],
    service: &[u8],
    method: &[u8],
) -> Result<GrpcBody, InputError> {
    let Some((&compressed, rest)) = raw.split_first().filter(|_| raw.len() >= 5) else {
        return Err(InputError::new("less than 5 bytes"));
    };
    if compressed != 0 {
        return Ok(GrpcBody::Unknown);
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let Some(message) = usize::try_from(len).ok().and_then(|n| rest.get(..n)) else {
        return Ok(GrpcBody::Truncated);
    };

    let (Ok(service), Ok(method)) = (std::str::from_utf8(service), std::str::from_utf8(method))
    else {
        return Ok(GrpcBody::Unknown);
    };
    let Some(service) = descriptors.pool.get_service_by_name(service) else {
        return Ok(GrpcBody::Unknown);
    };
    let Some(method) = service.methods().find(|m| m.name() == method) else {
        return Ok(GrpcBody::Unknown);
    };
    if method.is_client_streaming() {
        return Ok(GrpcBody::Unknown);
    }
    let msg = DynamicMessage::decode(method.input(), message)
        .map_err(|e| InputError::new(format!("proto: {e}")))?;
    check_required(&msg, 0)?;
    let json = Json { descriptors };
    Ok(GrpcBody::Parsed(json.message(&msg, 0)?))
}

fn too_deep() -> InputError {
    InputError::new("exceeded max recursion depth")
}

/// `proto.Unmarshal` refuses messages whose proto2 `required` fields are missing.
fn check_required(msg: &DynamicMessage, depth: usize) -> Result<(), InputError> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    for field in msg.descriptor().fields() {
        if field.cardinality() == Cardinality::Required && !msg.has_field(&field) {
            return Err(InputError::new(format!(
                "proto: required field {} not set",
                field.full_name()
            )));
        }
        if !matches!(field.kind(), Kind::Message(_)) || !msg.has_field(&field) {
            continue;
        }
        match msg.get_field(&field).as_ref() {
            PValue::Message(m) => check_required(m, depth + 1)?,
            PValue::List(items) => {
                for item in items {
                    if let PValue::Message(m) = item {
                        check_required(m, depth + 1)?;
                    }
                }
            }
            PValue::Map(entries) => {
                for item in entries.values() {
                    if let PValue::Message(m) = item {
                        check_required(m, depth + 1)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A well-known type with its own JSON form.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wkt {
    Any,
    Timestamp,
    Duration,
    Wrapper,
    Struct,
    ListValue,
    Value,
    FieldMask,
    Empty,
}

fn well_known(full_name: &str) -> Option<Wkt> {
    Some(match full_name.strip_prefix("google.protobuf.")? {
        "Any" => Wkt::Any,
        "Timestamp" => Wkt::Timestamp,
        "Duration" => Wkt::Duration,
        "BoolValue" | "Int32Value" | "Int64Value" | "UInt32Value" | "UInt64Value"
        | "FloatValue" | "DoubleValue" | "StringValue" | "BytesValue" => Wkt::Wrapper,
        "Struct" => Wkt::Struct,
        "ListValue" => Wkt::ListValue,
        "Value" => Wkt::Value,
        "FieldMask" => Wkt::FieldMask,
        "Empty" => Wkt::Empty,
        _ => return None,
    })
}

struct Json<'a> {
    descriptors: &'a ProtoDescriptors,
}

impl Json<'_> {
    fn message(&self, msg: &DynamicMessage, depth: usize) -> Result<Value, InputError> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let desc = msg.descriptor();
        if let Some(wkt) = well_known(desc.full_name()) {
            return self.well_known(wkt, msg, depth);
        }
        Ok(Value::from(self.fields(msg, depth)?))
    }

    fn fields(
        &self,
        msg: &DynamicMessage,
        depth: usize,
    ) -> Result<BTreeMap<Value, Value>, InputError> {
        let mut out = BTreeMap::new();
        for field in msg.descriptor().fields() {
            if !populated(msg, &field) {
                continue;
            }
            let value = msg.get_field(&field);
            out.insert(
                Value::from(field.json_name()),
                self.field(&field, &value, depth)?,
            );
        }
        Ok(out)
    }

    fn field(
        &self,
        field: &FieldDescriptor,
        value: &PValue,
        depth: usize,
    ) -> Result<Value, InputError> {
        match value {
            PValue::List(items) => Ok(Value::from(
                items
                    .iter()
                    .map(|v| self.singular(&field.kind(), v, depth))
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            PValue::Map(entries) => {
                let value_kind = match field.kind() {
                    Kind::Message(entry) => entry.map_entry_value_field().kind(),
                    kind => kind,
                };
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    out.insert(map_key(k), self.singular(&value_kind, v, depth)?);
                }
                Ok(Value::from(out))
            }
            v => self.singular(&field.kind(), v, depth),
        }
    }

    fn singular(&self, kind: &Kind, value: &PValue, depth: usize) -> Result<Value, InputError> {
        Ok(match value {
            PValue::Bool(b) => Value::from(*b),
            PValue::I32(n) => Value::from(i64::from(*n)),
            PValue::U32(n) => Value::from(u64::from(*n)),
            PValue::I64(n) => Value::from(n.to_string()),
            PValue::U64(n) => Value::from(n.to_string()),
            PValue::F32(f) => float32(*f)?,
            PValue::F64(f) => float64(*f),
            PValue::String(s) => Value::from(s.as_str()),
            PValue::Bytes(b) => Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
            PValue::EnumNumber(n) => match kind {
                Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => Value::Null,
                Kind::Enum(e) => match e.get_value(*n) {
                    Some(v) => Value::from(v.name()),
                    None => Value::from(i64::from(*n)),
                },
                _ => Value::from(i64::from(*n)),
            },
            PValue::Message(m) => self.message(m, depth + 1)?,
            PValue::List(_) | PValue::Map(_) => {
                return Err(InputError::new("proto: unexpected nested list or map"));
            }
        })
    }

    fn well_known(
        &self,
        wkt: Wkt,
        msg: &DynamicMessage,
        depth: usize,
    ) -> Result<Value, InputError> {
        let get = |n: u32| msg.get_field_by_number(n);
        match wkt {
            Wkt::Any => self.any(msg, depth),
            Wkt::Timestamp => {
                let secs = get(1).and_then(|v| v.as_i64()).unwrap_or_default();
                let nanos = get(2).and_then(|v| v.as_i32()).unwrap_or_default();
                timestamp(secs, nanos).map(Value::from)
            }
            Wkt::Duration => {
                let secs = get(1).and_then(|v| v.as_i64()).unwrap_or_default();
                let nanos = get(2).and_then(|v| v.as_i32()).unwrap_or_default();
                duration(secs, nanos).map(Value::from)
            }
            Wkt::Wrapper => match msg.descriptor().get_field(1) {
                Some(field) => {
                    let value = msg.get_field(&field);
                    self.singular(&field.kind(), &value, depth)
                }
                None => Ok(Value::Null),
            },
            Wkt::Struct => match msg.descriptor().get_field(1) {
                Some(field) => self.field(&field, &msg.get_field(&field), depth),
                None => Ok(Value::new_object()),
            },
            Wkt::ListValue => match msg.descriptor().get_field(1) {
                Some(field) => self.field(&field, &msg.get_field(&field), depth),
                None => Ok(Value::new_array()),
            },
            Wkt::Value => {
                let set = msg
                    .descriptor()
                    .fields()
                    .find(|f| f.containing_oneof().is_some() && msg.has_field(f));
                let Some(field) = set else {
                    return Err(InputError::new(
                        "proto: google.protobuf.Value: none of the oneof fields is set",
                    ));
                };
                let value = msg.get_field(&field);
                if let PValue::F64(f) = value.as_ref()
                    && !f.is_finite()
                {
                    return Err(InputError::new(format!(
                        "proto: google.protobuf.Value.number_value: invalid {} value",
                        go_float_name(*f)
                    )));
                }
                self.singular(&field.kind(), &value, depth)
            }
            Wkt::FieldMask => {
                let paths = match get(1).as_deref() {
                    Some(PValue::List(items)) => items
                        .iter()
                        .filter_map(|v| v.as_str())
                        .map(field_mask_path)
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => Vec::new(),
                };
                Ok(Value::from(paths.join(",")))
            }
            Wkt::Empty => Ok(Value::new_object()),
        }
    }

    /// `Any`: the payload's fields plus `@type`, or `{"@type", "value"}` for a payload with a
    /// JSON form of its own.
    fn any(&self, msg: &DynamicMessage, depth: usize) -> Result<Value, InputError> {
        let type_url = msg
            .get_field_by_number(1)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let payload = msg
            .get_field_by_number(2)
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default();
        if type_url.is_empty() {
            if payload.is_empty() {
                return Ok(Value::new_object());
            }
            return Err(InputError::new(
                "proto: google.protobuf.Any: type_url is not set",
            ));
        }
        let name = type_url.rsplit('/').next().unwrap_or_default();
        let desc: Option<MessageDescriptor> = self
            .descriptors
            .known_types
            .get_message_by_name(name)
            .filter(|d| d.full_name().starts_with("google.protobuf."));
        let Some(desc) = desc else {
            return Err(InputError::new(format!(
                "proto: google.protobuf.Any: unable to resolve {}: not found",
                super::goutil::quote(type_url.as_bytes())
            )));
        };
        let inner = DynamicMessage::decode(desc, payload).map_err(|e| {
            InputError::new(format!(
                "proto: google.protobuf.Any: unable to unmarshal {}: {e}",
                super::goutil::quote(type_url.as_bytes())
            ))
        })?;
        let type_key = Value::from("@type");
        let type_value = Value::from(type_url.as_str());
        if let Some(wkt) = well_known(inner.descriptor().full_name()) {
            let mut out = BTreeMap::new();
            out.insert(type_key, type_value);
            out.insert(
                Value::from("value"),
                self.well_known(wkt, &inner, depth + 1)?,
            );
            return Ok(Value::from(out));
        }
        let mut out = self.fields(&inner, depth + 1)?;
        out.insert(type_key, type_value);
        Ok(Value::from(out))
    }
}

/// Whether `protojson` emits the field: set (fields with presence), non-empty (lists, maps)
/// or non-zero (other scalars; `-0.0` counts as non-zero, as in Go).
fn populated(msg: &DynamicMessage, field: &FieldDescriptor) -> bool {
    if field.supports_presence() {
        return msg.has_field(field);
    }
    match msg.get_field(field).as_ref() {
        PValue::Bool(b) => *b,
        PValue::I32(n) | PValue::EnumNumber(n) => *n != 0,
        PValue::I64(n) => *n != 0,
        PValue::U32(n) => *n != 0,
        PValue::U64(n) => *n != 0,
        PValue::F32(f) => f.to_bits() != 0,
        PValue::F64(f) => f.to_bits() != 0,
        PValue::String(s) => !s.is_empty(),
        PValue::Bytes(b) => !b.is_empty(),
        PValue::List(l) => !l.is_empty(),
        PValue::Map(m) => !m.is_empty(),
        PValue::Message(_) => true,
    }
}

fn map_key(k: &MapKey) -> Value {
    match k {
        MapKey::Bool(b) => Value::from(if *b { "true" } else { "false" }),
        MapKey::I32(n) => Value::from(n.to_string()),
        MapKey::I64(n) => Value::from(n.to_string()),
        MapKey::U32(n) => Value::from(n.to_string()),
        MapKey::U64(n) => Value::from(n.to_string()),
        MapKey::String(s) => Value::from(s.as_str()),
    }
}

fn non_finite(f: f64) -> Option<Value> {
    if f.is_nan() {
        Some(Value::from("NaN"))
    } else if f.is_infinite() {
        Some(Value::from(if f > 0.0 { "Infinity" } else { "-Infinity" }))
    } else {
        None
    }
}

/// A `float` as the number its shortest 32-bit decimal text denotes.
fn float32(f: f32) -> Result<Value, InputError> {
    if let Some(v) = non_finite(f64::from(f)) {
        return Ok(v);
    }
    number_from_text(&format!("{f:e}"))
}

fn float64(f: f64) -> Value {
    non_finite(f).unwrap_or_else(|| number_from_f64(f))
}

/// Go's `%v` of a non-finite float.
fn go_float_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;
const MAX_NANOS: i32 = 999_999_999;

/// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits.
fn timestamp(secs: i64, nanos: i32) -> Result<String, InputError> {
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&secs) {
        return Err(InputError::new(format!(
            "proto: google.protobuf.Timestamp: seconds out of range {secs}"
        )));
    }
    if !(0..=MAX_NANOS).contains(&nanos) {
        return Err(InputError::new(format!(
            "proto: google.protobuf.Timestamp: nanos out of range {nanos}"
        )));
    }
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    );
    out.push_str(&fraction(nanos));
    out.push('Z');
    Ok(out)
}

fn duration(secs: i64, nanos: i32) -> Result<String, InputError> {
    if !(-MAX_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&secs) {
        return Err(InputError::new(format!(
            "proto: google.protobuf.Duration: seconds out of range {secs}"
        )));
    }
    if !(-MAX_NANOS..=MAX_NANOS).contains(&nanos) {
        return Err(InputError::new(format!(
            "proto: google.protobuf.Duration: nanos out of range {nanos}"
        )));
    }
    if (secs > 0 && nanos < 0) || (secs < 0 && nanos > 0) {
        return Err(InputError::new(
            "proto: google.protobuf.Duration: signs of seconds and nanos do not match",
        ));
    }
    let sign = if secs < 0 || nanos < 0 { "-" } else { "" };
    Ok(format!(
        "{sign}{}{}s",
        secs.unsigned_abs(),
        fraction(nanos.abs())
    ))
}

/// `.nnn`, `.nnnnnn` or `.nnnnnnnnn` (nothing for zero).
fn fraction(nanos: i32) -> String {
    if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    }
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A `FieldMask` path in JSON form; it must be a valid name whose camel-case conversion is
/// reversible.
fn field_mask_path(path: &str) -> Result<String, InputError> {
    let valid = !path.is_empty()
        && path.split('.').all(|ident| {
            let mut bytes = ident.bytes();
            bytes
                .next()
                .is_some_and(|c| c == b'_' || c.is_ascii_alphabetic())
                && bytes.all(|c| c == b'_' || c.is_ascii_alphanumeric())
        });
    if !valid {
        return Err(InputError::new(format!(
            "proto: google.protobuf.FieldMask.paths contains invalid path: {}",
            super::goutil::quote(path.as_bytes())
        )));
    }
    let mut camel = String::with_capacity(path.len());
    let mut after_underscore = false;
    for c in path.chars() {
        if c != '_' {
            camel.push(if after_underscore && c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        after_underscore = c == '_';
    }
    let mut snake = String::with_capacity(path.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    if snake != path {
        return Err(InputError::new(format!(
            "proto: google.protobuf.FieldMask.paths contains irreversible value {}",
            super::goutil::quote(path.as_bytes())
        )));
    }
    Ok(camel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0, 0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            timestamp(1_700_000_000, 5_000_000).unwrap(),
            "2023-11-14T22:13:20.005Z"
        );
        assert_eq!(timestamp(-1, 1_000).unwrap(), "1969-12-31T23:59:59.000001Z");
        assert_eq!(
            timestamp(MIN_TIMESTAMP_SECONDS, 1).unwrap(),
            "0001-01-01T00:00:00.000000001Z"
        );
        assert_eq!(
            timestamp(MAX_TIMESTAMP_SECONDS, 0).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert!(timestamp(MAX_TIMESTAMP_SECONDS + 1, 0).is_err());
        assert!(timestamp(0, -1).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration(1, 0).unwrap(), "1s");
        assert_eq!(duration(1, 500_000_000).unwrap(), "1.500s");
        assert_eq!(duration(0, -1_000).unwrap(), "-0.000001s");
        assert_eq!(duration(-3, -1).unwrap(), "-3.000000001s");
        assert!(duration(1, -1).is_err());
    }

    #[test]
    fn field_masks() {
        assert_eq!(field_mask_path("foo_bar.baz").unwrap(), "fooBar.baz");
        assert!(field_mask_path("fooBar").is_err());
        assert!(field_mask_path("foo__bar").is_err());
        assert!(field_mask_path("1a").is_err());
    }
}
