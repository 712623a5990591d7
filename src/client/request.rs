//! One HTTP request as Envoy's ext_authz filter would describe it to the authorization server.
//!
//! A [`RequestSpec`] comes from a case file (YAML or JSON) or from the `authorize` command line, and
//! [`RequestSpec::to_check_request`] turns it into the `CheckRequest` Envoy would send for it.
//!
//! What Envoy sends (`source/extensions/filters/common/ext_authz/check_request_utils.cc`), and so
//! what `to_check_request` fills in:
//!
//! - `request.http.headers`: every request header, keys lower-cased, duplicates joined with `,`,
//!   plus the pseudo-headers `:authority`, `:method`, `:path` and `:scheme` (Envoy adds `:scheme`
//!   to HTTP/1 requests too). An HTTP/1 `Host` header becomes `:authority`.
//! - `request.http.{method,path,host,scheme}`: the values of those pseudo-headers.
//! - `request.http.protocol`: `HTTP/1.1` unless told otherwise.
//! - `request.http.size`: the body bytes Envoy has received when it calls the server, i.e. the
//!   body length when a body is buffered (`with_request_body`), else `0`. Never `-1`.
//! - `request.http.body` or `request.http.raw_body` (`pack_as_bytes`), and then the header
//!   `x-envoy-auth-partial-body: false`; a client's own copy of that header is dropped.
//! - `request.http.id`: Envoy's stream id, a decimal `u64` (random unless `request_id` is set).
//! - `request.time`: now.
//! - `source`/`destination`: socket addresses (defaults `127.0.0.1:50000` and `127.0.0.1:8000`),
//!   principals when given, `source.service` from `x-envoy-downstream-service-cluster`.
//! - `context_extensions`, `metadata_context` (always present, possibly empty) and an empty
//!   `route_metadata_context`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context,
};
use envoy_types::pb::google::protobuf::Timestamp;
use serde::{Deserialize, Deserializer};

/// Default `:method`.
pub const DEFAULT_METHOD: &str = "GET";
/// Default `:path`.
pub const DEFAULT_PATH: &str = "/";
/// Default `:authority`.
pub const DEFAULT_HOST: &str = "localhost";
/// Default `:scheme`.
pub const DEFAULT_SCHEME: &str = "http";
/// Default `request.http.protocol`.
pub const DEFAULT_PROTOCOL: &str = "HTTP/1.1";
/// Default downstream (source) address.
pub const DEFAULT_SOURCE_ADDRESS: &str = "127.0.0.1";
/// Default downstream (source) port.
pub const DEFAULT_SOURCE_PORT: u16 = 50000;
/// Default listener (destination) address.
pub const DEFAULT_DESTINATION_ADDRESS: &str = "127.0.0.1";
/// Default listener (destination) port.
pub const DEFAULT_DESTINATION_PORT: u16 = 8000;

/// The header Envoy adds when it sends a buffered body.
const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";
/// The header Envoy copies into `source.service`.
const DOWNSTREAM_CLUSTER_HEADER: &str = "x-envoy-downstream-service-cluster";

/// A request that cannot be described or loaded.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The case file cannot be read.
    #[error("cannot read case file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The case file is not a valid request description.
    #[error("invalid case file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with its location.
        message: String,
    },
    /// A `-H` argument that is not `Name: value`.
    #[error("malformed header {arg:?}: {reason} (expected \"Name: value\")")]
    MalformedHeader {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A field with a value Envoy could never send.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Bytes given in a case file as base64 text (`raw_body_base64`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(&compact)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&compact))
            .map(Base64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("raw_body_base64 is not base64: {e}")))
    }
}

/// One HTTP request as Envoy would describe it in a `CheckRequest`.
///
/// Every field is optional; see the module documentation for the defaults. Unknown keys are
/// rejected. Header and context-extension values may be written as YAML scalars (`12`, `true`),
/// which are taken as their text.
///
/// ```yaml
/// method: POST
/// path: /api/orders?limit=10
/// host: shop.example.com
/// headers:
///   authorization: Bearer eyJhbGciOi...
///   content-type: application/json
/// body: '{"item": 1}'
/// context_extensions: {route: orders}
/// source_principal: spiffe://cluster.local/ns/default/sa/web
/// metadata:
///   envoy.filters.http.jwt_authn: {payload: {sub: alice}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// `:method`; default `GET` (or the `:method` entry of `headers`).
    pub method: Option<String>,
    /// `:path` including the query string; default `/` (or the `:path` entry of `headers`).
    pub path: Option<String>,
    /// `:authority`; default `localhost` (or the `:authority` / `host` entry of `headers`).
    pub host: Option<String>,
    /// `:scheme`; default `http` (or the `:scheme` entry of `headers`).
    pub scheme: Option<String>,
    /// `request.http.protocol`; default `HTTP/1.1`.
    pub protocol: Option<String>,
    /// Request headers; names are lower-cased, duplicates (after lower-casing) joined with `,`.
    #[serde(default, deserialize_with = "scalar_map")]
    pub headers: BTreeMap<String, String>,
    /// The buffered body, sent as `request.http.body`.
    pub body: Option<String>,
    /// The buffered body as bytes (`pack_as_bytes`), sent as `request.http.raw_body`.
    pub raw_body_base64: Option<Base64Bytes>,
    /// `attributes.context_extensions`.
    #[serde(default, deserialize_with = "scalar_map")]
    pub context_extensions: BTreeMap<String, String>,
    /// `source.principal` (the downstream's mTLS identity).
    pub source_principal: Option<String>,
    /// `destination.principal` (this workload's mTLS identity).
    pub destination_principal: Option<String>,
    /// `source.address` IP; default `127.0.0.1`.
    pub source_address: Option<String>,
    /// `source.address` port; default `50000`.
    pub source_port: Option<u16>,
    /// `destination.address` IP; default `127.0.0.1`.
    pub destination_address: Option<String>,
    /// `destination.address` port; default `8000`.
    pub destination_port: Option<u16>,
    /// `metadata_context.filter_metadata`: filter name -> JSON object.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// `request.http.id` (Envoy's stream id); default a random decimal `u64`.
    pub request_id: Option<String>,
}

/// Deserializes a map whose values are strings or other scalars (taken as their text).
fn scalar_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    return Err(serde::de::Error::custom(format!(
                        "value of {k:?} must be a string, not a list or map"
                    )));
                }
            };
            Ok((k, text))
        })
        .collect()
}

impl RequestSpec {
    /// Parses a YAML (or JSON, which is YAML) request description and validates it.
    /// `origin` names the source in error messages.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self, RequestError> {
        let spec: RequestSpec = if text.trim().is_empty() {
            RequestSpec::default()
        } else {
            yaml_serde::from_str(text).map_err(|e| RequestError::Parse {
                path: origin.to_path_buf(),
                message: e.to_string(),
            })?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Parses a JSON request description and validates it.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self, RequestError> {
        let spec: RequestSpec = serde_json::from_str(text).map_err(|e| RequestError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a case file: JSON when it ends in `.json`, YAML otherwise.
    pub fn load(path: &Path) -> Result<Self, RequestError> {
        let text = std::fs::read_to_string(path).map_err(|source| RequestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            Self::from_json_str(&text, path)
        } else {
            Self::from_yaml_str(&text, path)
        }
    }

    /// The request described by `authorize`'s flags: `method`, `path`, `-H 'Name: value'` headers
    /// (repeated names are joined with `,`) and a body.
    pub fn from_cli(
        method: Option<String>,
        path: Option<String>,
        headers: &[String],
        body: Option<String>,
    ) -> Result<Self, RequestError> {
        let mut spec = RequestSpec::default();
        spec.apply_cli(method, path, headers, body)?;
        Ok(spec)
    }

    /// Overrides this request with command-line flags: a given method, path or body replaces
    /// this one's, and a `-H` header replaces any header of the same name (case-insensitive).
    pub fn apply_cli(
        &mut self,
        method: Option<String>,
        path: Option<String>,
        headers: &[String],
        body: Option<String>,
    ) -> Result<(), RequestError> {
        let mut given: BTreeMap<String, String> = BTreeMap::new();
        for arg in headers {
            let (name, value) = parse_header_arg(arg)?;
            given
                .entry(name)
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        for (name, value) in given {
            self.headers.retain(|k, _| !k.eq_ignore_ascii_case(&name));
            self.headers.insert(name, value);
        }
        if method.is_some() {
            self.method = method;
        }
        if path.is_some() {
            self.path = path;
        }
        if body.is_some() {
            self.body = body;
            self.raw_body_base64 = None;
        }
        self.validate()
    }

    /// Checks that Envoy could send this request: header names are HTTP tokens, values hold no
    /// line breaks, fields agree with the pseudo-headers given in `headers`, and at most one of
    /// `body` and `raw_body_base64` is set.
    pub fn validate(&self) -> Result<(), RequestError> {
        let invalid = |m: String| Err(RequestError::Invalid(m));
        let headers = self.lowered_headers();
        for (name, value) in &self.headers {
            let bare = name.strip_prefix(':').unwrap_or(name);
            if bare.is_empty() || !bare.bytes().all(is_token_byte) {
                return invalid(format!(
                    "header name {name:?} is not a valid HTTP header name"
                ));
            }
            if name.starts_with(':')
                && !matches!(
                    name.to_ascii_lowercase().as_str(),
                    ":authority" | ":method" | ":path" | ":scheme"
                )
            {
                return invalid(format!(
                    "pseudo-header {name:?} is not one of :authority, :method, :path, :scheme"
                ));
            }
            if !is_valid_value(value) {
                return invalid(format!(
                    "value of header {name:?} contains a line break or control character"
                ));
            }
        }
        for (field, value, pseudo) in [
            ("method", &self.method, ":method"),
            ("path", &self.path, ":path"),
            ("host", &self.host, ":authority"),
            ("scheme", &self.scheme, ":scheme"),
        ] {
            if let (Some(v), Some(h)) = (value, headers.get(pseudo))
                && v != h
            {
                return invalid(format!(
                    "{field} {v:?} disagrees with header {pseudo}: {h:?}; give one of them"
                ));
            }
        }
        if let Some(m) = &self.method
            && (m.is_empty() || !m.bytes().all(is_token_byte))
        {
            return invalid(format!("method {m:?} is not an HTTP token"));
        }
        for (field, value) in [
            ("path", &self.path),
            ("host", &self.host),
            ("scheme", &self.scheme),
            ("protocol", &self.protocol),
        ] {
            if let Some(v) = value {
                if v.is_empty() {
                    return invalid(format!("{field} is empty"));
                }
                if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return invalid(format!("{field} {v:?} contains whitespace"));
                }
            }
        }
        if self.body.is_some() && self.raw_body_base64.is_some() {
            return invalid(
                "give body or raw_body_base64, not both (Envoy sends one or the other)".into(),
            );
        }
        Ok(())
    }

    /// Header names lower-cased, duplicates joined with `,` in name order.
    fn lowered_headers(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &self.headers {
            out.entry(name.to_ascii_lowercase())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        out
    }

    /// The `CheckRequest` Envoy's ext_authz filter would send for this request.
    pub fn to_check_request(&self) -> CheckRequest {
        let mut headers = self.lowered_headers();
        let host_header = headers.remove("host");
        let pick = |field: &Option<String>, header: Option<&String>, default: &str| {
            field
                .clone()
                .or_else(|| header.cloned())
                .unwrap_or_else(|| default.to_string())
        };
        let method = pick(&self.method, headers.get(":method"), DEFAULT_METHOD);
        let path = pick(&self.path, headers.get(":path"), DEFAULT_PATH);
        let host = pick(
            &self.host,
            headers.get(":authority").or(host_header.as_ref()),
            DEFAULT_HOST,
        );
        let scheme = pick(&self.scheme, headers.get(":scheme"), DEFAULT_SCHEME);
        headers.insert(":authority".into(), host.clone());
        headers.insert(":method".into(), method.clone());
        headers.insert(":path".into(), path.clone());
        headers.insert(":scheme".into(), scheme.clone());

        headers.remove(PARTIAL_BODY_HEADER);
        let (body, raw_body) = match (&self.body, &self.raw_body_base64) {
            (Some(b), _) => (b.clone(), Vec::new()),
            (None, Some(raw)) => (String::new(), raw.0.clone()),
            (None, None) => (String::new(), Vec::new()),
        };
        let has_body = self.body.is_some() || self.raw_body_base64.is_some();
        let size = if has_body {
            let len = body.len().max(raw_body.len());
            if !headers.contains_key("content-length") && !headers.contains_key("transfer-encoding")
            {
                headers.insert("content-length".into(), len.to_string());
            }
            headers.insert(PARTIAL_BODY_HEADER.into(), "false".into());
            i64::try_from(len).unwrap_or(i64::MAX)
        } else {
            0
        };

        let source_service = headers
            .get(DOWNSTREAM_CLUSTER_HEADER)
            .cloned()
            .unwrap_or_default();
        let id = self.request_id.clone().unwrap_or_else(random_stream_id);

        let http = attribute_context::HttpRequest {
            id,
            method,
            headers: headers.into_iter().collect(),
            header_map: None,
            path,
            host,
            scheme,
            query: String::new(),
            fragment: String::new(),
            size,
            protocol: self
                .protocol
                .clone()
                .unwrap_or_else(|| DEFAULT_PROTOCOL.to_string()),
            body,
            raw_body,
        };
        let source = attribute_context::Peer {
            address: Some(socket_address(
                self.source_address
                    .as_deref()
                    .unwrap_or(DEFAULT_SOURCE_ADDRESS),
                self.source_port.unwrap_or(DEFAULT_SOURCE_PORT),
            )),
            service: source_service,
            labels: Default::default(),
            principal: self.source_principal.clone().unwrap_or_default(),
            certificate: String::new(),
        };
        let destination = attribute_context::Peer {
            address: Some(socket_address(
                self.destination_address
                    .as_deref()
                    .unwrap_or(DEFAULT_DESTINATION_ADDRESS),
                self.destination_port.unwrap_or(DEFAULT_DESTINATION_PORT),
            )),
            service: String::new(),
            labels: Default::default(),
            principal: self.destination_principal.clone().unwrap_or_default(),
            certificate: String::new(),
        };
        let metadata = Metadata {
            filter_metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), json_object_to_struct(v)))
                .collect(),
            typed_filter_metadata: Default::default(),
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(source),
                destination: Some(destination),
                request: Some(attribute_context::Request {
                    time: Some(now_timestamp()),
                    http: Some(http),
                }),
                context_extensions: self.context_extensions.clone().into_iter().collect(),
                metadata_context: Some(metadata),
                route_metadata_context: Some(Metadata::default()),
                tls_session: None,
            }),
        }
    }
}

/// Splits `Name: value` (curl's `-H` syntax; a leading `:` is part of a pseudo-header's name).
/// The name is lower-cased and the value trimmed of surrounding blanks.
pub fn parse_header_arg(arg: &str) -> Result<(String, String), RequestError> {
    let malformed = |reason| RequestError::MalformedHeader {
        arg: arg.to_string(),
        reason,
    };
    let pseudo = arg
        .strip_prefix(':')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()));
    let search_from = usize::from(pseudo);
    let colon = arg
        .get(search_from..)
        .and_then(|rest| rest.find(':'))
        .map(|i| i + search_from)
        .ok_or_else(|| malformed("no ':' between name and value"))?;
    let (name, value) = (&arg[..colon], &arg[colon + 1..]);
    if name.trim().is_empty() {
        return Err(malformed("empty header name"));
    }
    if name != name.trim() {
        return Err(malformed("whitespace around the header name"));
    }
    let bare = name.strip_prefix(':').unwrap_or(name);
    if bare.is_empty() || !bare.bytes().all(is_token_byte) {
        return Err(malformed("header name has a character HTTP does not allow"));
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if !is_valid_value(value) {
        return Err(malformed(
            "header value has a line break or control character",
        ));
    }
    Ok((name.to_ascii_lowercase(), value.to_string()))
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field value: no CR, LF, NUL or other control character except tab.
fn is_valid_value(v: &str) -> bool {
    !v.chars().any(|c| c.is_control() && c != '\t')
}

fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            protocol: socket_address::Protocol::Tcp as i32,
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn now_timestamp() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// A random decimal `u64`, like Envoy's stream ids.
fn random_stream_id() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(first).to_string()
}

pub use crate::grpc::json::{json_object_to_struct, json_to_value};

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::value::Kind;

    fn parse(yaml: &str) -> Result<RequestSpec, RequestError> {
        RequestSpec::from_yaml_str(yaml, Path::new("case.yaml"))
    }

    fn http(req: &CheckRequest) -> &attribute_context::HttpRequest {
        req.attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .unwrap()
    }

    fn peer_addr(p: &Option<attribute_context::Peer>) -> (String, u32) {
        match p
            .as_ref()
            .unwrap()
            .address
            .as_ref()
            .unwrap()
            .address
            .as_ref()
        {
            Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(port)) => (sa.address.clone(), port),
                _ => panic!("no port"),
            },
            other => panic!("not a socket address: {other:?}"),
        }
    }

    #[test]
    fn yaml_full_spec_parses() {
        let spec = parse(
            r#"
method: POST
path: /api/orders?limit=10
host: shop.example.com
scheme: https
protocol: HTTP/2
headers:
  Authorization: Bearer abc
  content-length: 11
  x-flag: true
body: '{"item": 1}'
context_extensions: {route: orders}
source_principal: spiffe://cluster.local/ns/default/sa/web
destination_principal: spiffe://cluster.local/ns/default/sa/api
source_address: 10.1.2.3
source_port: 40123
destination_address: 10.9.8.7
destination_port: 9090
metadata:
  envoy.filters.http.jwt_authn: {payload: {sub: alice, n: 3}}
request_id: "42"
"#,
        )
        .unwrap();
        assert_eq!(spec.method.as_deref(), Some("POST"));
        assert_eq!(spec.headers["content-length"], "11");
        assert_eq!(spec.headers["x-flag"], "true");
        assert_eq!(spec.source_port, Some(40123));
        assert_eq!(
            spec.metadata["envoy.filters.http.jwt_authn"]["payload"]["sub"],
            "alice"
        );
    }

    #[test]
    fn shipped_case_files_are_valid() {
        let example = parse(include_str!("cases/example.yaml")).unwrap();
        assert_eq!(example.method.as_deref(), Some("POST"));
        let req = example.to_check_request();
        let h = http(&req);
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.size, 31);
        assert_eq!(
            req.attributes
                .as_ref()
                .unwrap()
                .source
                .as_ref()
                .unwrap()
                .service,
            "frontend"
        );
        let bench = parse(include_str!("../../bench/case.yaml")).unwrap();
        assert!(bench.headers["authorization"].starts_with("Bearer "));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = parse("method: GET\npaht: /typo\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RequestError::Parse { .. }), "{msg}");
        assert!(msg.contains("paht"), "{msg}");
        assert!(msg.contains("case.yaml"), "{msg}");
    }

    #[test]
    fn bad_types_are_rejected() {
        assert!(parse("source_port: 70000\n").is_err());
        assert!(parse("headers: {a: [1, 2]}\n").is_err());
        assert!(parse("metadata: {f: 3}\n").is_err());
        assert!(parse("raw_body_base64: '!!!'\n").is_err());
        assert!(parse("- a\n- b\n").is_err());
    }

    #[test]
    fn empty_file_is_the_default_request() {
        assert_eq!(parse("").unwrap(), RequestSpec::default());
        assert_eq!(parse("{}").unwrap(), RequestSpec::default());
    }

    #[test]
    fn json_case_parses_and_rejects_unknown() {
        let ok = RequestSpec::from_json_str(r#"{"path": "/x"}"#, Path::new("c.json")).unwrap();
        assert_eq!(ok.path.as_deref(), Some("/x"));
        assert!(RequestSpec::from_json_str(r#"{"pth": "/x"}"#, Path::new("c.json")).is_err());
    }

    #[test]
    fn load_reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("a.yaml");
        std::fs::write(&yaml, "path: /from-file\n").unwrap();
        assert_eq!(
            RequestSpec::load(&yaml).unwrap().path.as_deref(),
            Some("/from-file")
        );
        let json = dir.path().join("b.json");
        std::fs::write(&json, r#"{"method": "PUT"}"#).unwrap();
        assert_eq!(
            RequestSpec::load(&json).unwrap().method.as_deref(),
            Some("PUT")
        );
        let missing = dir.path().join("nope.yaml");
        let err = RequestSpec::load(&missing).unwrap_err();
        assert!(matches!(err, RequestError::Read { .. }));
        assert!(err.to_string().contains("nope.yaml"), "{err}");
    }

    #[test]
    fn validation_rejects_what_envoy_cannot_send() {
        for yaml in [
            "headers: {'bad name': x}\n",
            "headers: {'x-a': \"line\\nbreak\"}\n",
            "headers: {':status': '200'}\n",
            "method: 'GE T'\n",
            "method: ''\n",
            "path: '/a b'\n",
            "path: /a\nheaders: {':path': /b}\n",
            "body: x\nraw_body_base64: eA==\n",
        ] {
            let err = parse(yaml).unwrap_err();
            assert!(matches!(err, RequestError::Invalid(_)), "{yaml}: {err}");
        }
        // Agreeing field and pseudo-header are fine.
        parse("path: /a\nheaders: {':path': /a}\n").unwrap();
    }

    #[test]
    fn cli_headers_parse() {
        assert_eq!(
            parse_header_arg("Authorization: Bearer x").unwrap(),
            ("authorization".into(), "Bearer x".into())
        );
        assert_eq!(
            parse_header_arg("x-empty:").unwrap(),
            ("x-empty".into(), String::new())
        );
        assert_eq!(
            parse_header_arg("x-colon: a:b").unwrap(),
            ("x-colon".into(), "a:b".into())
        );
        assert_eq!(
            parse_header_arg(":authority: h.example").unwrap(),
            (":authority".into(), "h.example".into())
        );
    }

    #[test]
    fn malformed_cli_headers_are_clear_errors() {
        for (arg, needle) in [
            ("no-colon", "no ':'"),
            (": value", "empty header name"),
            ("", "no ':'"),
            ("bad name: v", "character"),
            (" x: v", "whitespace"),
            ("x: a\r\nb", "line break"),
            (":", "empty header name"),
            (":x-only", "no ':'"),
        ] {
            let err = parse_header_arg(arg).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, RequestError::MalformedHeader { .. }),
                "{arg:?}"
            );
            assert!(msg.contains(needle), "{arg:?}: {msg}");
            assert!(msg.contains("expected \"Name: value\""), "{msg}");
        }
        let err = RequestSpec::from_cli(None, None, &["oops".into()], None).unwrap_err();
        assert!(err.to_string().contains("\"oops\""), "{err}");
    }

    #[test]
    fn cli_overrides_case_and_joins_repeated_headers() {
        let mut spec = parse("method: POST\nheaders: {X-Token: old, keep: 1}\n").unwrap();
        spec.apply_cli(
            None,
            Some("/new".into()),
            &["x-token: a".into(), "X-Token: b".into()],
            None,
        )
        .unwrap();
        assert_eq!(spec.method.as_deref(), Some("POST"));
        assert_eq!(spec.path.as_deref(), Some("/new"));
        assert_eq!(spec.headers.get("X-Token"), None);
        assert_eq!(spec.headers["x-token"], "a,b");
        assert_eq!(spec.headers["keep"], "1");
    }

    #[test]
    fn default_request_maps_like_envoy() {
        let req = RequestSpec::default().to_check_request();
        let h = http(&req);
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/");
        assert_eq!(h.host, "localhost");
        assert_eq!(h.scheme, "http");
        assert_eq!(h.protocol, "HTTP/1.1");
        assert_eq!(h.size, 0);
        assert!(h.body.is_empty() && h.raw_body.is_empty());
        assert!(h.id.parse::<u64>().is_ok(), "{}", h.id);
        let mut keys: Vec<_> = h.headers.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, [":authority", ":method", ":path", ":scheme"]);
        assert_eq!(h.headers[":authority"], "localhost");
        let attrs = req.attributes.as_ref().unwrap();
        assert!(
            attrs
                .request
                .as_ref()
                .unwrap()
                .time
                .as_ref()
                .unwrap()
                .seconds
                > 1_600_000_000
        );
        assert_eq!(peer_addr(&attrs.source), ("127.0.0.1".into(), 50000));
        assert_eq!(peer_addr(&attrs.destination), ("127.0.0.1".into(), 8000));
        assert!(
            attrs
                .metadata_context
                .as_ref()
                .unwrap()
                .filter_metadata
                .is_empty()
        );
        assert!(attrs.context_extensions.is_empty());
    }

    #[test]
    fn full_request_maps_every_field() {
        let spec = parse(
            r#"
method: POST
path: /api?x=1
host: shop.example.com
scheme: https
protocol: HTTP/2
headers:
  Authorization: Bearer abc
  X-Dup: one
  x-dup: two
  x-envoy-auth-partial-body: spoofed
  x-envoy-downstream-service-cluster: web
body: '{"item": 1}'
context_extensions: {route: orders}
source_principal: spiffe://a
destination_principal: spiffe://b
source_address: 10.1.2.3
source_port: 40123
destination_address: 10.9.8.7
destination_port: 9090
metadata:
  jwt: {payload: {sub: alice, n: 3, ok: true, l: [1, null]}}
request_id: "42"
"#,
        )
        .unwrap();
        let req = spec.to_check_request();
        let h = http(&req);
        assert_eq!(h.id, "42");
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/api?x=1");
        assert_eq!(h.host, "shop.example.com");
        assert_eq!(h.scheme, "https");
        assert_eq!(h.protocol, "HTTP/2");
        assert_eq!(h.body, r#"{"item": 1}"#);
        assert_eq!(h.size, 11);
        assert_eq!(h.headers["authorization"], "Bearer abc");
        assert_eq!(h.headers["x-dup"], "one,two");
        assert_eq!(h.headers["x-envoy-auth-partial-body"], "false");
        assert_eq!(h.headers["content-length"], "11");
        assert_eq!(h.headers[":method"], "POST");
        assert_eq!(h.headers[":path"], "/api?x=1");
        assert_eq!(h.headers[":authority"], "shop.example.com");
        assert_eq!(h.headers[":scheme"], "https");
        assert!(!h.headers.contains_key("Authorization"));
        let attrs = req.attributes.as_ref().unwrap();
        assert_eq!(attrs.context_extensions["route"], "orders");
        let src = attrs.source.as_ref().unwrap();
        assert_eq!(src.principal, "spiffe://a");
        assert_eq!(src.service, "web");
        assert_eq!(attrs.destination.as_ref().unwrap().principal, "spiffe://b");
        assert_eq!(peer_addr(&attrs.source), ("10.1.2.3".into(), 40123));
        assert_eq!(peer_addr(&attrs.destination), ("10.9.8.7".into(), 9090));
        let md = &attrs.metadata_context.as_ref().unwrap().filter_metadata["jwt"];
        let Some(Kind::StructValue(payload)) = &md.fields["payload"].kind else {
            panic!("payload is not a struct")
        };
        assert_eq!(
            payload.fields["sub"].kind,
            Some(Kind::StringValue("alice".into()))
        );
        assert_eq!(payload.fields["n"].kind, Some(Kind::NumberValue(3.0)));
        assert_eq!(payload.fields["ok"].kind, Some(Kind::BoolValue(true)));
        let Some(Kind::ListValue(l)) = &payload.fields["l"].kind else {
            panic!("l is not a list")
        };
        assert_eq!(l.values[1].kind, Some(Kind::NullValue(0)));
    }

    #[test]
    fn pseudo_headers_and_host_header_fill_fields() {
        let spec = parse("headers: {Host: h.example, ':path': /p, ':method': DELETE}\n").unwrap();
        let req = spec.to_check_request();
        let h = http(&req);
        assert_eq!(h.host, "h.example");
        assert_eq!(h.path, "/p");
        assert_eq!(h.method, "DELETE");
        assert_eq!(h.headers[":authority"], "h.example");
        assert!(!h.headers.contains_key("host"));
    }

    #[test]
    fn raw_body_goes_to_raw_body_and_no_body_drops_partial_header() {
        let spec = parse("raw_body_base64: AAEC/w==\n").unwrap();
        let req = spec.to_check_request();
        let h = http(&req);
        assert_eq!(h.raw_body, vec![0, 1, 2, 255]);
        assert!(h.body.is_empty());
        assert_eq!(h.size, 4);
        assert_eq!(h.headers["x-envoy-auth-partial-body"], "false");

        let spec = parse("headers: {x-envoy-auth-partial-body: 'true'}\n").unwrap();
        let req = spec.to_check_request();
        assert!(!http(&req).headers.contains_key("x-envoy-auth-partial-body"));
    }
}
