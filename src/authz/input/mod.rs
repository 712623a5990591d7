//! CheckRequest -> the OPA-Envoy input document, as a regorus `Value`.
//!
//! The document is the one the OPA-Envoy plugin (ext_authz v3) evaluates, built directly from
//! the prost structs without a JSON round trip:
//!
//! - `attributes`: the request's `AttributeContext` with protobuf JSON field names, only
//!   populated fields present, `google.protobuf.Struct` expanded to plain JSON, and every other
//!   message (`Timestamp`, `Any` included) as an object of its populated fields; integers and
//!   enums are numbers, bytes are base64 strings.
//! - `parsed_path`, `parsed_query`, `parsed_body`, `truncated_body`, `version` and, when the
//!   source peer has one, `source_principal`.
//!
//! The submodules reproduce the Go behaviour the plugin inherits: [`path`] (`net/url`),
//! [`json`] (`encoding/json` through OPA's `util.UnmarshalJSON`), [`multipart`]
//! (`mime` and `mime/multipart`), [`proto`] (gRPC bodies through `protojson`) and [`body`]
//! (which of those applies, and when the body is reported as truncated). [`scrub`] erases
//! credentials from a copy of the document before it is logged.

mod body;
mod goutil;
mod json;
mod multipart;
mod path;
mod proto;
pub(crate) mod scrub;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    Address, EnvoyInternalAddress, HeaderMap, Metadata, Pipe, SocketAddress, address,
    envoy_internal_address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use regorus::Value;

pub use proto::{ProtoDescriptors, load_descriptor_set};

/// Options that change how the input document is built.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// `skip-request-body-parse`: neither `parsed_body` nor `truncated_body` is set.
    pub skip_body_parse: bool,
    /// `proto-descriptor`: the descriptor set used to decode `application/grpc` bodies.
    /// Without it, gRPC bodies are not parsed (`parsed_body` is `null`).
    pub proto_descriptors: Option<ProtoDescriptors>,
}

/// A request that cannot be turned into an input document.
/// Its `Display` is the text after `request_parse_error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// How deep any value in the input document may nest: parsed bodies (JSON, protobuf) and
/// `google.protobuf.Struct` values in the attributes (the network decoder already stops those
/// far earlier, at prost's recursion limit; this keeps hand-built requests from exhausting the
/// stack). Go's JSON decoder allows 10,000 levels; 512 keeps deep values off the stack's edge.
pub const MAX_DEPTH: usize = 512;

/// Builds the input document for `req`.
pub fn build(req: &CheckRequest, opts: &InputOptions) -> Result<Value, InputError> {
    KEYS.with(|keys| build_with(keys, req, opts))
}

fn build_with(k: &Keys, req: &CheckRequest, opts: &InputOptions) -> Result<Value, InputError> {
    let mut input = BTreeMap::new();
    if let Some(attrs) = &req.attributes {
        input.insert(k.attributes.clone(), attribute_context(k, attrs)?);
    }
    input.insert(k.version.clone(), k.version_value.clone());

    let http = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());

    let (parsed_path, parsed_query) = path::parse(http.map_or("", |h| h.path.as_str()))?;
    input.insert(k.parsed_path.clone(), parsed_path.to_value());
    input.insert(k.parsed_query.clone(), parsed_query);

    if !opts.skip_body_parse {
        let segments: Vec<&[u8]> = parsed_path.segments().collect();
        let (parsed_body, truncated) = body::parse(http, &segments, opts)?;
        input.insert(k.parsed_body.clone(), parsed_body);
        input.insert(k.truncated_body.clone(), Value::from(truncated));
    }

    let principal = req
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .map_or("", |s| s.principal.as_str());
    if !principal.is_empty() {
        input.insert(k.source_principal.clone(), Value::from(principal));
    }

    Ok(Value::from(input))
}

// ---------------------------------------------------------------------------------------------
// Object keys: built once per thread and cloned (a reference count bump, no allocation).

macro_rules! keys {
    ($($field:ident = $name:literal,)*) => {
        struct Keys {
            $($field: Value,)*
            version_value: Value,
        }

        impl Keys {
            fn new() -> Self {
                let mut keys = Keys {
                    $($field: Value::from($name),)*
                    version_value: Value::Null,
                };
                let mut version = BTreeMap::new();
                version.insert(keys.ext_authz.clone(), Value::from("v3"));
                version.insert(keys.encoding.clone(), Value::from("protojson"));
                keys.version_value = Value::from(version);
                keys
            }
        }
    };
}

keys! {
    attributes = "attributes",
    version = "version",
    ext_authz = "ext_authz",
    encoding = "encoding",
    parsed_path = "parsed_path",
    parsed_query = "parsed_query",
    parsed_body = "parsed_body",
    truncated_body = "truncated_body",
    source_principal = "source_principal",
    source = "source",
    destination = "destination",
    request = "request",
    context_extensions = "contextExtensions",
    metadata_context = "metadataContext",
    route_metadata_context = "routeMetadataContext",
    tls_session = "tlsSession",
    address = "address",
    service = "service",
    labels = "labels",
    principal = "principal",
    certificate = "certificate",
    socket_address = "socketAddress",
    pipe = "pipe",
    envoy_internal_address = "envoyInternalAddress",
    protocol = "protocol",
    resolver_name = "resolverName",
    ipv4_compat = "ipv4Compat",
    network_namespace_filepath = "networkNamespaceFilepath",
    port_value = "portValue",
    named_port = "namedPort",
    path = "path",
    mode = "mode",
    server_listener_name = "serverListenerName",
    endpoint_id = "endpointId",
    time = "time",
    http = "http",
    seconds = "seconds",
    nanos = "nanos",
    id = "id",
    method = "method",
    headers = "headers",
    header_map = "headerMap",
    host = "host",
    scheme = "scheme",
    query = "query",
    fragment = "fragment",
    size = "size",
    body = "body",
    raw_body = "rawBody",
    key = "key",
    value = "value",
    raw_value = "rawValue",
    filter_metadata = "filterMetadata",
    typed_filter_metadata = "typedFilterMetadata",
    type_url = "typeUrl",
    sni = "sni",
}

thread_local! {
    static KEYS: Keys = Keys::new();
}

// ---------------------------------------------------------------------------------------------
// AttributeContext -> `attributes`, the way OPA-Envoy's `protomap` renders a message: a field
// is present when it is populated (non-zero scalar, non-empty string/bytes/list/map, set
// message, set oneof member even with a zero value), under its JSON name.

/// An object under construction; the helpers skip unpopulated values.
struct Obj(BTreeMap<Value, Value>);

impl Obj {
    fn new() -> Self {
        Self(BTreeMap::new())
    }

    fn put(&mut self, key: &Value, value: Value) {
        self.0.insert(key.clone(), value);
    }

    fn string(&mut self, key: &Value, s: &str) {
        if !s.is_empty() {
            self.put(key, Value::from(s));
        }
    }

    fn bytes(&mut self, key: &Value, b: &[u8]) {
        if !b.is_empty() {
            self.put(
                key,
                Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
            );
        }
    }

    fn uint(&mut self, key: &Value, n: u64) {
        if n != 0 {
            self.put(key, Value::from(n));
        }
    }

    fn int(&mut self, key: &Value, n: i64) {
        if n != 0 {
            self.put(key, Value::from(n));
        }
    }

    fn boolean(&mut self, key: &Value, b: bool) {
        if b {
            self.put(key, Value::from(true));
        }
    }

    fn string_map(&mut self, key: &Value, m: &HashMap<String, String>) {
        if !m.is_empty() {
            self.put(key, string_map(m));
        }
    }

    fn done(self) -> Value {
        Value::from(self.0)
    }
}

fn string_map(m: &HashMap<String, String>) -> Value {
    Value::from(
        m.iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn attribute_context(k: &Keys, a: &AttributeContext) -> Result<Value, InputError> {
    let mut o = Obj::new();
    if let Some(p) = &a.source {
        o.put(&k.source, peer(k, p));
    }
    if let Some(p) = &a.destination {
        o.put(&k.destination, peer(k, p));
    }
    if let Some(r) = &a.request {
        o.put(&k.request, request(k, r));
    }
    o.string_map(&k.context_extensions, &a.context_extensions);
    if let Some(m) = &a.metadata_context {
        o.put(&k.metadata_context, metadata(k, m)?);
    }
    if let Some(m) = &a.route_metadata_context {
        o.put(&k.route_metadata_context, metadata(k, m)?);
    }
    if let Some(t) = &a.tls_session {
        o.put(&k.tls_session, tls_session(k, t));
    }
    Ok(o.done())
}

fn peer(k: &Keys, p: &Peer) -> Value {
    let mut o = Obj::new();
    if let Some(a) = &p.address {
        o.put(&k.address, address(k, a));
    }
    o.string(&k.service, &p.service);
    o.string_map(&k.labels, &p.labels);
    o.string(&k.principal, &p.principal);
    o.string(&k.certificate, &p.certificate);
    o.done()
}

fn address(k: &Keys, a: &Address) -> Value {
    let mut o = Obj::new();
    match &a.address {
        Some(address::Address::SocketAddress(s)) => o.put(&k.socket_address, socket_addr(k, s)),
        Some(address::Address::Pipe(p)) => o.put(&k.pipe, pipe(k, p)),
        Some(address::Address::EnvoyInternalAddress(e)) => {
            o.put(&k.envoy_internal_address, internal_addr(k, e));
        }
        None => {}
    }
    o.done()
}

fn socket_addr(k: &Keys, s: &SocketAddress) -> Value {
    let mut o = Obj::new();
    // Enums are numbers (OPA-Envoy's protomap hands Go's EnumNumber to the JSON encoder).
    o.int(&k.protocol, i64::from(s.protocol));
    o.string(&k.address, &s.address);
    o.string(&k.resolver_name, &s.resolver_name);
    o.boolean(&k.ipv4_compat, s.ipv4_compat);
    o.string(&k.network_namespace_filepath, &s.network_namespace_filepath);
    // A set oneof member is present even when it holds the zero value.
    match &s.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            o.put(&k.port_value, Value::from(u64::from(*p)));
        }
        Some(socket_address::PortSpecifier::NamedPort(n)) => {
            o.put(&k.named_port, Value::from(n.as_str()));
        }
        None => {}
    }
    o.done()
}

fn pipe(k: &Keys, p: &Pipe) -> Value {
    let mut o = Obj::new();
    o.string(&k.path, &p.path);
    o.uint(&k.mode, u64::from(p.mode));
    o.done()
}

fn internal_addr(k: &Keys, e: &EnvoyInternalAddress) -> Value {
    let mut o = Obj::new();
    match &e.address_name_specifier {
        Some(envoy_internal_address::AddressNameSpecifier::ServerListenerName(n)) => {
            o.put(&k.server_listener_name, Value::from(n.as_str()));
        }
        None => {}
    }
    o.string(&k.endpoint_id, &e.endpoint_id);
    o.done()
}

fn request(k: &Keys, r: &Request) -> Value {
    let mut o = Obj::new();
    if let Some(t) = &r.time {
        o.put(&k.time, timestamp(k, t));
    }
    if let Some(h) = &r.http {
        o.put(&k.http, http_request(k, h));
    }
    o.done()
}

/// `google.protobuf.Timestamp` is not special-cased by `protomap`: it is a message with two
/// integer fields, each present only when non-zero.
fn timestamp(k: &Keys, t: &Timestamp) -> Value {
    let mut o = Obj::new();
    o.int(&k.seconds, t.seconds);
    o.int(&k.nanos, i64::from(t.nanos));
    o.done()
}

fn http_request(k: &Keys, h: &HttpRequest) -> Value {
    let mut o = Obj::new();
    o.string(&k.id, &h.id);
    o.string(&k.method, &h.method);
    o.string_map(&k.headers, &h.headers);
    if let Some(m) = &h.header_map {
        o.put(&k.header_map, header_map(k, m));
    }
    o.string(&k.path, &h.path);
    o.string(&k.host, &h.host);
    o.string(&k.scheme, &h.scheme);
    o.string(&k.query, &h.query);
    o.string(&k.fragment, &h.fragment);
    // int64 is a JSON number here, not protojson's string.
    o.int(&k.size, h.size);
    o.string(&k.protocol, &h.protocol);
    o.string(&k.body, &h.body);
    o.bytes(&k.raw_body, &h.raw_body);
    o.done()
}

fn header_map(k: &Keys, m: &HeaderMap) -> Value {
    let mut o = Obj::new();
    if !m.headers.is_empty() {
        let headers = m
            .headers
            .iter()
            .map(|h| {
                let mut e = Obj::new();
                e.string(&k.key, &h.key);
                e.string(&k.value, &h.value);
                e.bytes(&k.raw_value, &h.raw_value);
                e.done()
            })
            .collect::<Vec<_>>();
        o.put(&k.headers, Value::from(headers));
    }
    o.done()
}

fn metadata(k: &Keys, m: &Metadata) -> Result<Value, InputError> {
    let mut o = Obj::new();
    if !m.filter_metadata.is_empty() {
        let mut fm = BTreeMap::new();
        for (name, s) in &m.filter_metadata {
            fm.insert(Value::from(name.as_str()), struct_value(s, 0)?);
        }
        o.put(&k.filter_metadata, Value::from(fm));
    }
    if !m.typed_filter_metadata.is_empty() {
        let typed = m
            .typed_filter_metadata
            .iter()
            .map(|(name, any)| (Value::from(name.as_str()), any_message(k, any)))
            .collect::<BTreeMap<_, _>>();
        o.put(&k.typed_filter_metadata, Value::from(typed));
    }
    Ok(o.done())
}

/// `google.protobuf.Any` is rendered as a plain message: `typeUrl` and base64 `value`,
/// not unpacked.
fn any_message(k: &Keys, any: &Any) -> Value {
    let mut o = Obj::new();
    o.string(&k.type_url, &any.type_url);
    o.bytes(&k.value, &any.value);
    o.done()
}

fn tls_session(k: &Keys, t: &TlsSession) -> Value {
    let mut o = Obj::new();
    o.string(&k.sni, &t.sni);
    o.done()
}

/// `google.protobuf.Struct` as plain JSON (Go's `structpb.Struct.AsMap`).
fn struct_value(
    s: &envoy_types::pb::google::protobuf::Struct,
    depth: usize,
) -> Result<Value, InputError> {
    if depth > MAX_DEPTH {
        return Err(InputError::new("exceeded max depth"));
    }
    let mut out = BTreeMap::new();
    for (name, v) in &s.fields {
        out.insert(Value::from(name.as_str()), struct_field(v, depth + 1)?);
    }
    Ok(Value::from(out))
}

fn struct_field(
    v: &envoy_types::pb::google::protobuf::Value,
    depth: usize,
) -> Result<Value, InputError> {
    use envoy_types::pb::google::protobuf::value::Kind;
    Ok(match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => goutil::number_from_f64(*n),
        Some(Kind::StringValue(s)) => Value::from(s.as_str()),
        Some(Kind::BoolValue(b)) => Value::from(*b),
        Some(Kind::StructValue(s)) => struct_value(s, depth + 1)?,
        Some(Kind::ListValue(l)) => {
            if depth > MAX_DEPTH {
                return Err(InputError::new("exceeded max depth"));
            }
            Value::from(
                l.values
                    .iter()
                    .map(|e| struct_field(e, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    })
}
