//! The input document, field by field, for the cases OPA-Envoy's behaviour pins down.
//!
//! What a `RequestSpec` can describe (paths, queries, JSON, form and multipart bodies, truncation,
//! parse errors) is data in `tests/cases/input/*.yaml`, run against a real server by
//! `tests/cases.rs`. What stays here needs generated inputs, protobuf-only constructs (addresses,
//! TLS, metadata, `Any`, descriptors, zero-valued oneofs) or a request a `RequestSpec` cannot
//! send (an empty path, both `body` and `raw_body`, upper-case header names, the partial-body
//! marker set to `true`, no http request).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    Address, EnvoyInternalAddress, HeaderMap, HeaderValue, Metadata, Pipe, SocketAddress, address,
    envoy_internal_address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{self as pbwkt, Any, Timestamp};
use regorus::Value;
use serde_json::{Value as Json, json};

use super::{InputError, InputOptions, ProtoDescriptors, build};

fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap()
}

fn doc(req: &CheckRequest) -> Json {
    to_json(&build(req, &InputOptions::default()).unwrap())
}

fn err(req: &CheckRequest) -> String {
    build(req, &InputOptions::default())
        .unwrap_err()
        .to_string()
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn with_http(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(http),
            }),
            ..Default::default()
        }),
    }
}

fn with_path(path: &str) -> CheckRequest {
    with_http(HttpRequest {
        path: path.to_owned(),
        ..Default::default()
    })
}

/// A request with the given headers, `body` and `raw_body`.
fn with_body(headers: &[(&str, &str)], body: &str, raw: &[u8]) -> CheckRequest {
    with_http(HttpRequest {
        path: "/".to_owned(),
        headers: map(headers),
        body: body.to_owned(),
        raw_body: raw.to_vec(),
        ..Default::default()
    })
}

/// `(parsed_body, truncated_body)` for a request.
fn parsed(req: &CheckRequest) -> (Json, Json) {
    let d = doc(req);
    (d["parsed_body"].clone(), d["truncated_body"].clone())
}

fn body_err(req: &CheckRequest) -> String {
    err(req)
}

fn json_body(body: &str) -> CheckRequest {
    with_body(&[("content-type", "application/json")], body, b"")
}

// ---------------------------------------------------------------------------------------------
// attributes

fn struct_of(fields: Vec<(&str, pbwkt::value::Kind)>) -> pbwkt::Struct {
    pbwkt::Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), pbwkt::Value { kind: Some(v) }))
            .collect(),
    }
}

#[test]
fn full_attribute_context() {
    use pbwkt::value::Kind;
    let filter_metadata = struct_of(vec![
        ("hello", Kind::StringValue("world".into())),
        ("count", Kind::NumberValue(1.0)),
        ("ratio", Kind::NumberValue(0.25)),
        ("on", Kind::BoolValue(true)),
        ("nothing", Kind::NullValue(0)),
        (
            "nested",
            Kind::StructValue(struct_of(vec![("deep", Kind::NumberValue(-2.0))])),
        ),
        (
            "list",
            Kind::ListValue(pbwkt::ListValue {
                values: vec![
                    pbwkt::Value {
                        kind: Some(Kind::StringValue("a".into())),
                    },
                    pbwkt::Value { kind: None },
                ],
            }),
        ),
    ]);
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        protocol: socket_address::Protocol::Udp as i32,
                        address: "10.0.0.1".into(),
                        resolver_name: "dns".into(),
                        ipv4_compat: true,
                        network_namespace_filepath: "/var/run/netns/a".into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(443)),
                    })),
                }),
                service: "frontend".into(),
                labels: map(&[("app", "web")]),
                principal: "spiffe://cluster.local/ns/default/sa/web".into(),
                certificate: "-----BEGIN CERTIFICATE-----".into(),
            }),
            destination: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::Pipe(Pipe {
                        path: "/tmp/sock".into(),
                        mode: 0o644,
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 123,
                }),
                http: Some(HttpRequest {
                    id: "13359530607844510314".into(),
                    method: "POST".into(),
                    headers: map(&[(":path", "/api/v1?x=1"), ("content-type", "text/plain")]),
                    header_map: Some(HeaderMap {
                        headers: vec![
                            HeaderValue {
                                key: "x-a".into(),
                                value: "1".into(),
                                raw_value: vec![],
                            },
                            HeaderValue {
                                key: "x-b".into(),
                                value: String::new(),
                                raw_value: b"\x00\xff".to_vec(),
                            },
                        ],
                    }),
                    path: "/api/v1?x=1".into(),
                    host: "example.com".into(),
                    scheme: "https".into(),
                    query: "x=1".into(),
                    fragment: "top".into(),
                    size: 12_345_678_901,
                    protocol: "HTTP/2".into(),
                    body: "hello".into(),
                    raw_body: b"hello".to_vec(),
                }),
            }),
            context_extensions: map(&[("virtual_host", "vh")]),
            metadata_context: Some(Metadata {
                filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), filter_metadata)]
                    .into_iter()
                    .collect(),
                typed_filter_metadata: [(
                    "typed".to_owned(),
                    Any {
                        type_url: "type.googleapis.com/google.protobuf.Duration".into(),
                        value: vec![8, 3],
                    },
                )]
                .into_iter()
                .collect(),
            }),
            route_metadata_context: Some(Metadata {
                filter_metadata: [(
                    "route".to_owned(),
                    struct_of(vec![("name", Kind::StringValue("r1".into()))]),
                )]
                .into_iter()
                .collect(),
                typed_filter_metadata: HashMap::new(),
            }),
            tls_session: Some(TlsSession {
                sni: "example.com".into(),
            }),
        }),
    };

    let expected = json!({
        "attributes": {
            "source": {
                "address": {
                    "socketAddress": {
                        "protocol": 1,
                        "address": "10.0.0.1",
                        "resolverName": "dns",
                        "ipv4Compat": true,
                        "networkNamespaceFilepath": "/var/run/netns/a",
                        "portValue": 443
                    }
                },
                "service": "frontend",
                "labels": {"app": "web"},
                "principal": "spiffe://cluster.local/ns/default/sa/web",
                "certificate": "-----BEGIN CERTIFICATE-----"
            },
            "destination": {
                "address": {"pipe": {"path": "/tmp/sock", "mode": 420}}
            },
            "request": {
                "time": {"seconds": 1_700_000_000, "nanos": 123},
                "http": {
                    "id": "13359530607844510314",
                    "method": "POST",
                    "headers": {":path": "/api/v1?x=1", "content-type": "text/plain"},
                    "headerMap": {
                        "headers": [
                            {"key": "x-a", "value": "1"},
                            {"key": "x-b", "rawValue": "AP8="}
                        ]
                    },
                    "path": "/api/v1?x=1",
                    "host": "example.com",
                    "scheme": "https",
                    "query": "x=1",
                    "fragment": "top",
                    "size": 12_345_678_901_i64,
                    "protocol": "HTTP/2",
                    "body": "hello",
                    "rawBody": "aGVsbG8="
                }
            },
            "contextExtensions": {"virtual_host": "vh"},
            "metadataContext": {
                "filterMetadata": {
                    "envoy.filters.http.jwt_authn": {
                        "hello": "world",
                        "count": 1,
                        "ratio": 0.25,
                        "on": true,
                        "nothing": null,
                        "nested": {"deep": -2},
                        "list": ["a", null]
                    }
                },
                "typedFilterMetadata": {
                    "typed": {
                        "typeUrl": "type.googleapis.com/google.protobuf.Duration",
                        "value": "CAM="
                    }
                }
            },
            "routeMetadataContext": {
                "filterMetadata": {"route": {"name": "r1"}}
            },
            "tlsSession": {"sni": "example.com"}
        },
        "version": {"encoding": "protojson", "ext_authz": "v3"},
        "parsed_path": ["api", "v1"],
        "parsed_query": {"x": ["1"]},
        "parsed_body": null,
        "truncated_body": false,
        "source_principal": "spiffe://cluster.local/ns/default/sa/web"
    });
    assert_eq!(doc(&req), expected);
}

#[test]
fn other_address_kinds_and_zero_valued_oneofs() {
    let peer = |a: address::Address| Peer {
        address: Some(Address { address: Some(a) }),
        ..Default::default()
    };
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(address::Address::EnvoyInternalAddress(
                EnvoyInternalAddress {
                    endpoint_id: "ep".into(),
                    address_name_specifier: Some(
                        envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                            String::new(),
                        ),
                    ),
                },
            ))),
            destination: Some(peer(address::Address::SocketAddress(SocketAddress {
                // TCP is the zero enum value: absent.
                protocol: 0,
                address: "::1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }))),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 5,
                    nanos: 0,
                }),
                http: Some(HttpRequest::default()),
            }),
            tls_session: Some(TlsSession::default()),
            ..Default::default()
        }),
    };
    let d = doc(&req);
    assert_eq!(
        d["attributes"],
        json!({
            "source": {"address": {"envoyInternalAddress": {
                "serverListenerName": "", "endpointId": "ep"
            }}},
            "destination": {"address": {"socketAddress": {"address": "::1", "portValue": 0}}},
            "request": {"time": {"seconds": 5}, "http": {}},
            "tlsSession": {}
        })
    );
    // No principal, no `source_principal`.
    assert!(d.get("source_principal").is_none());

    let named = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(address::Address::SocketAddress(SocketAddress {
                port_specifier: Some(socket_address::PortSpecifier::NamedPort(String::new())),
                ..Default::default()
            }))),
            ..Default::default()
        }),
    };
    assert_eq!(
        doc(&named)["attributes"],
        json!({"source": {"address": {"socketAddress": {"namedPort": ""}}}})
    );

    // Zero scalars are absent: a pipe with mode 0, an empty header value, an empty `Any`.
    let zeros = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(address::Address::Pipe(Pipe {
                path: "/p".into(),
                mode: 0,
            }))),
            request: Some(Request {
                time: Some(Timestamp::default()),
                http: Some(HttpRequest {
                    header_map: Some(HeaderMap {
                        headers: vec![HeaderValue::default()],
                    }),
                    size: 0,
                    ..Default::default()
                }),
            }),
            metadata_context: Some(Metadata {
                filter_metadata: [("empty".to_owned(), pbwkt::Struct::default())]
                    .into_iter()
                    .collect(),
                typed_filter_metadata: [("none".to_owned(), Any::default())].into_iter().collect(),
            }),
            route_metadata_context: Some(Metadata::default()),
            ..Default::default()
        }),
    };
    assert_eq!(
        doc(&zeros)["attributes"],
        json!({
            "source": {"address": {"pipe": {"path": "/p"}}},
            "request": {"time": {}, "http": {"headerMap": {"headers": [{}]}}},
            "metadataContext": {
                "filterMetadata": {"empty": {}},
                "typedFilterMetadata": {"none": {}}
            },
            "routeMetadataContext": {}
        })
    );
}

#[test]
fn empty_request() {
    assert_eq!(
        doc(&CheckRequest::default()),
        json!({
            "version": {"encoding": "protojson", "ext_authz": "v3"},
            "parsed_path": [""],
            "parsed_query": {},
            "parsed_body": null,
            "truncated_body": false
        })
    );
    let empty_attributes = CheckRequest {
        attributes: Some(AttributeContext::default()),
    };
    assert_eq!(doc(&empty_attributes)["attributes"], json!({}));
}

// ---------------------------------------------------------------------------------------------
// parsed_path / parsed_query

#[test]
fn empty_path_is_one_empty_segment() {
    // A RequestSpec cannot send an empty `:path`.
    assert_eq!(doc(&with_path(""))["parsed_path"], json!([""]));
}

#[test]
fn query_parameter_limit() {
    // Go's default limit: 10000 parameters (`&` count + 1).
    let ok = format!("/p?{}", "&".repeat(9_999));
    assert_eq!(doc(&with_path(&ok))["parsed_query"], json!({}));
    let too_many = format!("/p?{}", "&".repeat(10_000));
    assert_eq!(
        err(&with_path(&too_many)),
        "number of URL query parameters exceeded limit"
    );
}

// ---------------------------------------------------------------------------------------------
// JSON bodies

#[test]
fn json_numbers_beyond_f64() {
    let big = build(
        &json_body("[123456789012345678901234567890, 1e400]"),
        &InputOptions::default(),
    )
    .unwrap();
    let body = &big["parsed_body"];
    assert_eq!(
        body[0],
        Value::from_numeric_string("123456789012345678901234567890").unwrap()
    );
    assert_eq!(
        body[1],
        Value::from_numeric_string(&format!("1{}", "0".repeat(400))).unwrap()
    );
}

#[test]
fn json_nesting_is_bounded() {
    // A nesting bomb fails fast with an error instead of exhausting the stack.
    let bomb = "[".repeat(1_000_000);
    assert_eq!(body_err(&json_body(&bomb)), "exceeded max depth");
    let bomb = "{\"a\":".repeat(100_000);
    assert_eq!(body_err(&json_body(&bomb)), "exceeded max depth");

    let depth = super::json::MAX_DEPTH;
    let ok = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let (body, truncated) = parsed(&json_body(&ok));
    assert_eq!(truncated, json!(false));
    let mut v = &body;
    for _ in 0..depth {
        v = &v[0];
    }
    assert_eq!(v, &json!(1));
    let too_deep = format!("{}{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
    assert_eq!(body_err(&json_body(&too_deep)), "exceeded max depth");
}

// ---------------------------------------------------------------------------------------------
// which body is parsed

#[test]
fn body_wins_over_raw_body() {
    // raw_body is ignored when body is set (a RequestSpec sends one or the other, never both).
    let ct = [("content-type", "application/json")];
    assert_eq!(
        parsed(&with_body(
            &ct,
            r#"{"from": "body"}"#,
            br#"{"from": "raw"}"#
        ))
        .0,
        json!({"from": "body"})
    );
    let ct = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(
        parsed(&with_body(&ct, "a=x+y%21&b", b"ignored=1")).0,
        json!({"a": ["x y!"], "b": [""]})
    );
}

#[test]
fn partial_body_marker_truncates() {
    // Envoy's partial-body marker, whatever the content type or length. (A RequestSpec always
    // sends it as `false`, as Envoy does for a whole body.)
    for ct in [
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=foo",
    ] {
        let req = with_body(
            &[("content-type", ct), ("x-envoy-auth-partial-body", "true")],
            "{\"firstname\": \"foo\"}",
            b"",
        );
        assert_eq!(parsed(&req), (json!(null), json!(true)), "{ct}");
    }
    let req = with_body(&[("x-envoy-auth-partial-body", "true")], "", b"");
    assert_eq!(parsed(&req), (json!(null), json!(true)));
}

#[test]
fn content_type_header_name_and_missing_http() {
    // The header name must be lower case, as Envoy sends it (a RequestSpec lower-cases names).
    assert_eq!(
        parsed(&with_body(
            &[("Content-Type", "application/json")],
            "{}",
            b""
        )),
        (json!(null), json!(false))
    );
    // No http request at all.
    let req = CheckRequest {
        attributes: Some(AttributeContext::default()),
    };
    assert_eq!(parsed(&req), (json!(null), json!(false)));
}

#[test]
fn skip_body_parse() {
    let opts = InputOptions {
        skip_body_parse: true,
        ..Default::default()
    };
    let req = json_body("{not json");
    let d = to_json(&build(&req, &opts).unwrap());
    assert!(d.get("parsed_body").is_none());
    assert!(d.get("truncated_body").is_none());
    assert_eq!(d["parsed_path"], json!([""]));
    // Without the option the same request is an error.
    assert!(build(&req, &InputOptions::default()).is_err());
}

// ---------------------------------------------------------------------------------------------
// gRPC bodies

mod grpc {
    use prost::Message as _;
    use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, Value as PValue};
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, FileDescriptorSet, MessageOptions, MethodDescriptorProto,
        OneofDescriptorProto, ServiceDescriptorProto,
    };

    use super::*;

    fn field(name: &str, number: i32, ty: Type, type_name: Option<&str>) -> FieldDescriptorProto {
        let json_name = {
            let mut out = String::new();
            let mut upper = false;
            for c in name.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.push(c.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        };
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            type_name: type_name.map(str::to_owned),
            json_name: Some(json_name),
            ..Default::default()
        }
    }

    fn repeated(mut f: FieldDescriptorProto) -> FieldDescriptorProto {
        f.label = Some(Label::Repeated as i32);
        f
    }

    fn map_entry(name: &str, key: Type, value: Type, value_type: Option<&str>) -> DescriptorProto {
        DescriptorProto {
            name: Some(name.into()),
            field: vec![
                field("key", 1, key, None),
                field("value", 2, value, value_type),
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn descriptors() -> ProtoDescriptors {
        let wkt = DescriptorPool::global();
        let mut files: Vec<FileDescriptorProto> = wkt
            .files()
            .map(|f| f.file_descriptor_proto().clone())
            .collect();

        let mut zero = field("zero", 19, Type::Int32, None);
        zero.oneof_index = Some(0);
        let mut custom = field("renamed_field", 24, Type::String, None);
        custom.json_name = Some("customName".into());
        let req = DescriptorProto {
            name: Some("Req".into()),
            field: vec![
                field("s", 1, Type::String, None),
                field("i32", 2, Type::Int32, None),
                field("i64", 3, Type::Int64, None),
                field("u64", 4, Type::Uint64, None),
                field("b", 5, Type::Bool, None),
                field("color", 6, Type::Enum, Some(".test.pkg.Color")),
                field("data", 7, Type::Bytes, None),
                repeated(field("tags", 8, Type::String, None)),
                repeated(field(
                    "counts",
                    9,
                    Type::Message,
                    Some(".test.pkg.Req.CountsEntry"),
                )),
                field("inner", 10, Type::Message, Some(".test.pkg.Inner")),
                field("ts", 11, Type::Message, Some(".google.protobuf.Timestamp")),
                field("dur", 12, Type::Message, Some(".google.protobuf.Duration")),
                field(
                    "wrapped",
                    13,
                    Type::Message,
                    Some(".google.protobuf.Int64Value"),
                ),
                field("meta", 14, Type::Message, Some(".google.protobuf.Struct")),
                field("any", 15, Type::Message, Some(".google.protobuf.Any")),
                field(
                    "mask",
                    16,
                    Type::Message,
                    Some(".google.protobuf.FieldMask"),
                ),
                field("d", 17, Type::Double, None),
                field("f", 18, Type::Float, None),
                zero,
                field("neg", 20, Type::Sint32, None),
                field("unknown_color", 21, Type::Enum, Some(".test.pkg.Color")),
                repeated(field(
                    "by_id",
                    22,
                    Type::Message,
                    Some(".test.pkg.Req.ByIdEntry"),
                )),
                field("empty_inner", 23, Type::Message, Some(".test.pkg.Inner")),
                custom,
                field("unset_inner", 25, Type::Message, Some(".test.pkg.Inner")),
                field("neg_zero", 26, Type::Double, None),
                field(
                    "list",
                    27,
                    Type::Message,
                    Some(".google.protobuf.ListValue"),
                ),
                field("empty", 28, Type::Message, Some(".google.protobuf.Empty")),
            ],
            nested_type: vec![
                map_entry("CountsEntry", Type::String, Type::Int32, None),
                map_entry(
                    "ByIdEntry",
                    Type::Int64,
                    Type::Message,
                    Some(".test.pkg.Inner"),
                ),
            ],
            oneof_decl: vec![OneofDescriptorProto {
                name: Some("choice".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let inner = DescriptorProto {
            name: Some("Inner".into()),
            field: vec![
                field("name", 1, Type::String, None),
                field("payload", 2, Type::Message, Some(".google.protobuf.Any")),
            ],
            ..Default::default()
        };
        let color = EnumDescriptorProto {
            name: Some("Color".into()),
            value: ["COLOR_UNSPECIFIED", "RED", "GREEN"]
                .iter()
                .zip(0..)
                .map(|(name, number)| EnumValueDescriptorProto {
                    name: Some((*name).into()),
                    number: Some(number),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let method = |name: &str, client_streaming: bool| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(".test.pkg.Req".into()),
            output_type: Some(".test.pkg.Inner".into()),
            client_streaming: Some(client_streaming),
            ..Default::default()
        };
        files.push(FileDescriptorProto {
            name: Some("test/pkg.proto".into()),
            package: Some("test.pkg".into()),
            dependency: [
                "google/protobuf/timestamp.proto",
                "google/protobuf/duration.proto",
                "google/protobuf/wrappers.proto",
                "google/protobuf/struct.proto",
                "google/protobuf/any.proto",
                "google/protobuf/field_mask.proto",
                "google/protobuf/empty.proto",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            message_type: vec![req, inner],
            enum_type: vec![color],
            service: vec![ServiceDescriptorProto {
                name: Some("Svc".into()),
                method: vec![method("Do", false), method("Upload", true)],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        });

        let mut required = field("id", 1, Type::String, None);
        required.label = Some(Label::Required as i32);
        files.push(FileDescriptorProto {
            name: Some("test/legacy.proto".into()),
            package: Some("test.legacy".into()),
            message_type: vec![DescriptorProto {
                name: Some("Legacy".into()),
                field: vec![required, field("note", 2, Type::String, None)],
                ..Default::default()
            }],
            service: vec![ServiceDescriptorProto {
                name: Some("LegacySvc".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Get".into()),
                    input_type: Some(".test.legacy.Legacy".into()),
                    output_type: Some(".test.legacy.Legacy".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto2".into()),
            ..Default::default()
        });

        let set = FileDescriptorSet { file: files };
        ProtoDescriptors::from_bytes(&set.encode_to_vec()).unwrap()
    }

    fn message(d: &ProtoDescriptors, name: &str) -> DynamicMessage {
        let desc = d
            .pool()
            .get_message_by_name(name)
            .or_else(|| DescriptorPool::global().get_message_by_name(name))
            .unwrap();
        DynamicMessage::new(desc)
    }

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
        out.extend_from_slice(msg);
        out
    }

    fn grpc_request(path: &str, raw: Vec<u8>) -> CheckRequest {
        with_http(HttpRequest {
            method: "POST".into(),
            path: path.to_owned(),
            headers: map(&[("content-type", "application/grpc")]),
            protocol: "HTTP/2".into(),
            raw_body: raw,
            ..Default::default()
        })
    }

    fn with(d: &ProtoDescriptors) -> InputOptions {
        InputOptions {
            proto_descriptors: Some(d.clone()),
            ..Default::default()
        }
    }

    fn grpc_parsed(d: &ProtoDescriptors, req: &CheckRequest) -> (Json, Json) {
        let v = to_json(&build(req, &with(d)).unwrap());
        (v["parsed_body"].clone(), v["truncated_body"].clone())
    }

    fn grpc_err(d: &ProtoDescriptors, req: &CheckRequest) -> InputError {
        build(req, &with(d)).unwrap_err()
    }

    fn any_of(d: &ProtoDescriptors, msg: &DynamicMessage) -> DynamicMessage {
        use prost_reflect::ReflectMessage as _;
        let mut any = message(d, "google.protobuf.Any");
        any.set_field_by_name(
            "type_url",
            PValue::String(format!(
                "type.googleapis.com/{}",
                msg.descriptor().full_name()
            )),
        );
        any.set_field_by_name("value", PValue::Bytes(msg.encode_to_vec().into()));
        any
    }

    fn full_request(d: &ProtoDescriptors) -> DynamicMessage {
        let mut m = message(d, "test.pkg.Req");
        m.set_field_by_name("s", PValue::String("hello".into()));
        m.set_field_by_name("i32", PValue::I32(-5));
        m.set_field_by_name("i64", PValue::I64(-9_000_000_000));
        m.set_field_by_name("u64", PValue::U64(u64::MAX));
        m.set_field_by_name("b", PValue::Bool(true));
        m.set_field_by_name("color", PValue::EnumNumber(2));
        m.set_field_by_name("data", PValue::Bytes(b"\x00\x01\xfe".to_vec().into()));
        m.set_field_by_name(
            "tags",
            PValue::List(vec![PValue::String("a".into()), PValue::String("b".into())]),
        );
        m.set_field_by_name(
            "counts",
            PValue::Map(
                [(MapKey::String("x".into()), PValue::I32(1))]
                    .into_iter()
                    .collect(),
            ),
        );
        let mut inner = message(d, "test.pkg.Inner");
        inner.set_field_by_name("name", PValue::String("n".into()));
        m.set_field_by_name("inner", PValue::Message(inner.clone()));
        let mut ts = message(d, "google.protobuf.Timestamp");
        ts.set_field_by_name("seconds", PValue::I64(1_700_000_000));
        ts.set_field_by_name("nanos", PValue::I32(5_000_000));
        m.set_field_by_name("ts", PValue::Message(ts));
        let mut dur = message(d, "google.protobuf.Duration");
        dur.set_field_by_name("seconds", PValue::I64(1));
        dur.set_field_by_name("nanos", PValue::I32(500_000_000));
        m.set_field_by_name("dur", PValue::Message(dur));
        m.set_field_by_name(
            "wrapped",
            PValue::Message(message(d, "google.protobuf.Int64Value")),
        );
        let number = |n: f64| {
            let mut v = message(d, "google.protobuf.Value");
            v.set_field_by_name("number_value", PValue::F64(n));
            PValue::Message(v)
        };
        let mut null = message(d, "google.protobuf.Value");
        null.set_field_by_name("null_value", PValue::EnumNumber(0));
        let mut meta = message(d, "google.protobuf.Struct");
        meta.set_field_by_name(
            "fields",
            PValue::Map(
                [
                    (MapKey::String("k".into()), number(1.5)),
                    (MapKey::String("n".into()), PValue::Message(null)),
                ]
                .into_iter()
                .collect(),
            ),
        );
        m.set_field_by_name("meta", PValue::Message(meta));
        let mut three_secs = message(d, "google.protobuf.Duration");
        three_secs.set_field_by_name("seconds", PValue::I64(3));
        m.set_field_by_name("any", PValue::Message(any_of(d, &three_secs)));
        let mut mask = message(d, "google.protobuf.FieldMask");
        mask.set_field_by_name(
            "paths",
            PValue::List(vec![
                PValue::String("foo_bar".into()),
                PValue::String("baz.qux".into()),
            ]),
        );
        m.set_field_by_name("mask", PValue::Message(mask));
        m.set_field_by_name("d", PValue::F64(f64::NAN));
        m.set_field_by_name("f", PValue::F32(0.1));
        m.set_field_by_name("zero", PValue::I32(0));
        m.set_field_by_name("neg", PValue::I32(-3));
        m.set_field_by_name("unknown_color", PValue::EnumNumber(7));
        let mut by_id = inner.clone();
        by_id.set_field_by_name("name", PValue::String("x".into()));
        m.set_field_by_name(
            "by_id",
            PValue::Map(
                [(MapKey::I64(42), PValue::Message(by_id))]
                    .into_iter()
                    .collect(),
            ),
        );
        m.set_field_by_name("empty_inner", PValue::Message(message(d, "test.pkg.Inner")));
        m.set_field_by_name("renamed_field", PValue::String("r".into()));
        let mut list = message(d, "google.protobuf.ListValue");
        list.set_field_by_name("values", PValue::List(vec![number(2.0)]));
        m.set_field_by_name("list", PValue::Message(list));
        m.set_field_by_name(
            "empty",
            PValue::Message(message(d, "google.protobuf.Empty")),
        );
        m
    }

    #[test]
    fn grpc_body_as_protojson() {
        let d = descriptors();
        let mut msg = full_request(&d).encode_to_vec();
        // `neg_zero = -0.0`, which Go encodes (its zero test is on the bits) but prost-reflect
        // would drop: field 26, fixed64.
        msg.extend_from_slice(&[0xd1, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        let raw = frame(&msg);
        let req = grpc_request("/test.pkg.Svc/Do", raw);
        let (body, truncated) = grpc_parsed(&d, &req);
        assert_eq!(truncated, json!(false));
        assert_eq!(
            body,
            json!({
                "s": "hello",
                "i32": -5,
                "i64": "-9000000000",
                "u64": "18446744073709551615",
                "b": true,
                "color": "GREEN",
                "data": "AAH+",
                "tags": ["a", "b"],
                "counts": {"x": 1},
                "inner": {"name": "n"},
                "ts": "2023-11-14T22:13:20.005Z",
                "dur": "1.500s",
                "wrapped": "0",
                "meta": {"k": 1.5, "n": null},
                "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"},
                "mask": "fooBar,baz.qux",
                "d": "NaN",
                "f": 0.1,
                "zero": 0,
                "neg": -3,
                "unknownColor": 7,
                "byId": {"42": {"name": "x"}},
                "emptyInner": {},
                "customName": "r",
                "negZero": 0,
                "list": [2],
                "empty": {}
            })
        );
        // The rest of the document is unchanged.
        let v = to_json(&build(&req, &with(&d)).unwrap());
        assert_eq!(v["parsed_path"], json!(["test.pkg.Svc", "Do"]));
        // An empty message is an empty object.
        let empty = grpc_request("/test.pkg.Svc/Do", frame(&[]));
        assert_eq!(grpc_parsed(&d, &empty), (json!({}), json!(false)));
        // Only the first message is read.
        let mut two = frame(&[]);
        two.extend(frame(&[0x0a, 0x01, b'z']));
        assert_eq!(
            grpc_parsed(&d, &grpc_request("/test.pkg.Svc/Do", two)).0,
            json!({})
        );
    }

    #[test]
    fn grpc_body_not_decoded() {
        let d = descriptors();
        let raw = frame(&[0x0a, 0x01, b'z']);
        let null = (json!(null), json!(false));
        // No descriptor set configured.
        let req = grpc_request("/test.pkg.Svc/Do", raw.clone());
        assert_eq!(parsed(&req), null);
        // Unknown service, unknown method, client streaming, not a service.
        for path in [
            "/test.pkg.Other/Do",
            "/test.pkg.Svc/Nope",
            "/test.pkg.Svc/Upload",
            "/test.pkg.Req/Do",
        ] {
            assert_eq!(
                grpc_parsed(&d, &grpc_request(path, raw.clone())),
                null,
                "{path}"
            );
        }
        // Compressed payloads are not decoded.
        let mut compressed = raw.clone();
        compressed[0] = 1;
        assert_eq!(
            grpc_parsed(&d, &grpc_request("/test.pkg.Svc/Do", compressed)),
            null
        );
        // Without raw_body (Envoy's pack_as_bytes off) there is nothing to decode, even with
        // a bad path.
        let mut no_raw = grpc_request("/just-one-segment", Vec::new());
        if let Some(http) = no_raw
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.body = "ignored".into();
        }
        assert_eq!(grpc_parsed(&d, &no_raw), null);
        // A message longer than what was sent: truncated.
        let mut short = frame(&[0x0a, 0x05, b'a']);
        short.truncate(6);
        assert_eq!(
            grpc_parsed(&d, &grpc_request("/test.pkg.Svc/Do", short)),
            (json!(null), json!(true))
        );
    }

    #[test]
    fn grpc_body_errors() {
        let d = descriptors();
        assert_eq!(
            grpc_err(&d, &grpc_request("/test.pkg.Svc/Do", vec![0, 0, 0])).0,
            "less than 5 bytes"
        );
        assert_eq!(
            grpc_err(&d, &grpc_request("/test.pkg.Svc/Do/extra", frame(&[]))).0,
            "invalid parsed path"
        );
        assert_eq!(
            grpc_err(&d, &grpc_request("/", frame(&[]))).0,
            "invalid parsed path"
        );
        // Undecodable protobuf: a string field cut short.
        let bad = frame(&[0x0a, 0x05, b'a']);
        assert!(
            grpc_err(&d, &grpc_request("/test.pkg.Svc/Do", bad))
                .0
                .starts_with("proto: ")
        );
        // A missing proto2 required field.
        assert_eq!(
            grpc_err(
                &d,
                &grpc_request("/test.legacy.LegacySvc/Get", frame(&[0x12, 0]))
            )
            .0,
            "proto: required field test.legacy.Legacy.id not set"
        );
        assert_eq!(
            grpc_parsed(
                &d,
                &grpc_request("/test.legacy.LegacySvc/Get", frame(&[0x0a, 0]))
            )
            .0,
            json!({"id": ""}),
            "proto2 fields with presence are present when set, even empty"
        );
        // An Any naming a type outside the well-known types cannot be resolved.
        let mut inner = message(&d, "test.pkg.Inner");
        inner.set_field_by_name("name", PValue::String("x".into()));
        let mut req = message(&d, "test.pkg.Req");
        req.set_field_by_name("any", PValue::Message(any_of(&d, &inner)));
        let e = grpc_err(
            &d,
            &grpc_request("/test.pkg.Svc/Do", frame(&req.encode_to_vec())),
        );
        assert_eq!(
            e.0,
            "proto: google.protobuf.Any: unable to resolve \
             \"type.googleapis.com/test.pkg.Inner\": not found"
        );
        // A google.protobuf.Value without a kind has no JSON form.
        let mut meta = message(&d, "google.protobuf.Struct");
        meta.set_field_by_name(
            "fields",
            PValue::Map(
                [(
                    MapKey::String("k".into()),
                    PValue::Message(message(&d, "google.protobuf.Value")),
                )]
                .into_iter()
                .collect(),
            ),
        );
        let mut req = message(&d, "test.pkg.Req");
        req.set_field_by_name("meta", PValue::Message(meta));
        assert_eq!(
            grpc_err(
                &d,
                &grpc_request("/test.pkg.Svc/Do", frame(&req.encode_to_vec()))
            )
            .0,
            "proto: google.protobuf.Value: none of the oneof fields is set"
        );
    }

    #[test]
    fn nested_any_with_message_payload() {
        let d = descriptors();
        // A well-known type without a JSON form of its own (a plain message) inside Any:
        // its fields next to @type.
        let mut option = message(&d, "google.protobuf.Option");
        option.set_field_by_name("name", PValue::String("opt".into()));
        let mut inner = message(&d, "test.pkg.Inner");
        inner.set_field_by_name("payload", PValue::Message(any_of(&d, &option)));
        let mut req = message(&d, "test.pkg.Req");
        req.set_field_by_name("inner", PValue::Message(inner));
        let body = grpc_parsed(
            &d,
            &grpc_request("/test.pkg.Svc/Do", frame(&req.encode_to_vec())),
        );
        assert_eq!(
            body.0,
            json!({"inner": {"payload": {
                "@type": "type.googleapis.com/google.protobuf.Option",
                "name": "opt"
            }}})
        );
    }

    #[test]
    fn loading_descriptor_sets() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.pb");
        let d = descriptors();
        let set = FileDescriptorSet {
            file: d
                .pool()
                .files()
                .map(|f| f.file_descriptor_proto().clone())
                .collect(),
        };
        std::fs::write(&good, set.encode_to_vec()).unwrap();
        let loaded = super::super::load_descriptor_set(&good).unwrap();
        assert!(loaded.pool().get_service_by_name("test.pkg.Svc").is_some());

        let bad = dir.path().join("bad.pb");
        std::fs::write(&bad, b"\xff\xff\xff").unwrap();
        assert!(super::super::load_descriptor_set(&bad).is_err());
        assert!(super::super::load_descriptor_set(dir.path().join("missing.pb")).is_err());
    }
}
