//! Property tests over the entry points a stranger feeds: the input document built from a
//! CheckRequest (path, query, headers, bodies), the decision mapping, compact JWS parsing and
//! verification, bundle archives and manifests, and the config loader with `--set`.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default: a few seconds in CI); raise it for
//! a long run, e.g. `PROPTEST_CASES=100000 cargo nextest run --test properties`. A failure
//! prints the shrunk input; it becomes a regression case in the module that owns the code.
//!
//! `parsed_path` and `parsed_query` are checked against a model of Go's `net/url` written here
//! from its specification (`url.PathUnescape`, `url.ParseQuery` as OPA-Envoy calls them), not
//! against Portcullis' own parser, so any path shape maps as OPA-Envoy maps it.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use portcullis::authz::decision::Decision;
use portcullis::authz::input::{self, InputOptions};
use portcullis::bundle::archive::{self, BundleFile, Limits};
use portcullis::jose::{Alg, Jws, KeyMaterial, KeyRules, Rules, Signer};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn check_request(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn build_value(http: HttpRequest) -> Result<regorus::Value, String> {
    input::build(&check_request(http), &InputOptions::default()).map_err(|e| e.to_string())
}

/// The input document as JSON (for requests whose numbers JSON can carry).
fn build(http: HttpRequest) -> Result<Json, String> {
    build_value(http).map(|v| serde_json::to_value(&v).expect("an input document serializes"))
}

// ---- a model of Go's net/url -------------------------------------------------------------

/// Why Go refuses a path or query, reduced to what the model predicts.
#[derive(Debug, PartialEq)]
enum GoError {
    /// `invalid URL escape "<bytes>"`.
    Escape(Vec<u8>),
    /// `invalid semicolon separator in query`.
    Semicolon,
}

/// Go's `unescape`: `%XY` decoded; a `%` without two hex digits refused with up to three
/// bytes from it; `+` a space only in a query component.
fn go_unescape(s: &[u8], query: bool) -> Result<Vec<u8>, GoError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let digits = s.get(i + 1..i + 3);
                match digits.and_then(|d| std::str::from_utf8(d).ok()) {
                    Some(d) if d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        out.push(u8::from_str_radix(d, 16).expect("two hex digits"));
                        i += 3;
                    }
                    _ => return Err(GoError::Escape(s[i..(i + 3).min(s.len())].to_vec())),
                }
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's string conversion of arbitrary bytes as JSON sees it: each byte of an invalid UTF-8
/// sequence becomes U+FFFD.
fn go_string(mut bytes: &[u8]) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).expect("valid prefix"));
                out.push('\u{FFFD}');
                bytes = &rest[1..];
            }
        }
    }
}

/// `strings.Split(strings.TrimLeft(url.PathUnescape(path), "/"), "/")` and
/// `url.ParseQuery(query)` of `strings.Cut(target, "?")`.
fn go_parse(target: &str) -> Result<(Json, Json), GoError> {
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path = go_unescape(raw_path.as_bytes(), false)?;
    let trimmed: &[u8] = {
        let start = path.iter().position(|&b| b != b'/').unwrap_or(path.len());
        &path[start..]
    };
    let segments: Vec<Json> = trimmed
        .split(|&b| b == b'/')
        .map(|s| Json::from(go_string(s)))
        .collect();

    let mut query: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    let mut err = None;
    for key in raw_query.split('&') {
        if key.contains(';') {
            err = Some(GoError::Semicolon);
            continue;
        }
        if key.is_empty() {
            continue;
        }
        let (k, v) = key.split_once('=').unwrap_or((key, ""));
        match (
            go_unescape(k.as_bytes(), true),
            go_unescape(v.as_bytes(), true),
        ) {
            (Ok(k), Ok(v)) => query
                .entry(go_string(&k))
                .or_default()
                .push(Json::from(go_string(&v))),
            (Err(e), _) | (_, Err(e)) => {
                err.get_or_insert(e);
            }
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok((Json::from(segments), json!(query))),
    }
}

/// Request targets made of the pieces that matter to a URL parser.
fn target() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", "/", "a", "Zz", "%", "%2", "%2F", "%2f", "%zz", "%41", "%C3%A9", "%FF", "%E2%82", "+",
        "?", "&", "=", ";", "#", "é", "%00", "..", " ", "%25", "%3D", "%26", "%3F", "x=1",
    ]);
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

// ---- bodies ------------------------------------------------------------------------------

fn content_type() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=XyZ",
        "multipart/form-data",
        "multipart/form-data; boundary=\"\"",
        "application/grpc",
        "text/plain",
        "",
    ])
    .prop_map(str::to_string)
}

/// Bodies near the shapes the parsers expect, and noise.
fn body() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        "\"a\"",
        ":",
        ",",
        "1",
        "-1e999",
        "null",
        "true",
        "a=b",
        "&",
        "%zz",
        "--XyZ\r\n",
        "--XyZ--\r\n",
        "\r\n",
        "Content-Disposition: form-data; name=\"f\"\r\n",
        "Content-Type: application/json\r\n",
        "\u{0}",
        "é",
        "\\u0000",
        "\"\\ud800\"",
    ]);
    prop_oneof![
        prop::collection::vec(piece, 0..32).prop_map(|p| p.concat()),
        ".{0,64}",
    ]
}

// ---- decisions ---------------------------------------------------------------------------

/// JSON values shaped like decision objects: the keys OPA-Envoy reads, with values of every
/// type (right and wrong), and some other keys.
fn decision_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        prop::sample::select(vec![0i64, 200, 403, 99, 600, -1, 1 << 40]).prop_map(Json::from),
        Just(json!(403.5)),
        "[a-z-]{0,8}".prop_map(Json::from),
        Just(Json::from("x\r\nInjected: 1")),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::from),
            prop::collection::btree_map("[a-z:-]{1,8}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    });
    let key = prop::sample::select(vec![
        "allowed",
        "allowed",
        "headers",
        "request_headers_to_remove",
        "response_headers_to_add",
        "query_parameters_to_set",
        "query_parameters_to_remove",
        "body",
        "http_status",
        "dynamic_metadata",
        "internal_token",
        "other",
    ]);
    prop_oneof![
        4 => prop::collection::btree_map(key, value.clone(), 0..6)
            .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => value,
    ]
}

fn regorus_value(j: &Json) -> regorus::Value {
    regorus::Value::from_json_str(&j.to_string()).expect("JSON converts")
}

// ---- JWS ---------------------------------------------------------------------------------

/// One token per algorithm family, made once, with the key material that verifies it.
fn signed_tokens() -> &'static [(String, KeyMaterial, Alg)] {
    static TOKENS: std::sync::OnceLock<Vec<(String, KeyMaterial, Alg)>> =
        std::sync::OnceLock::new();
    TOKENS.get_or_init(|| {
        let claims = json!({"sub": "alice", "exp": 4_000_000_000u64, "roles": ["reader"]});
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let hs = Signer::hmac(Alg::HS256, &secret).expect("hmac signer");
        let mut out = vec![(
            hs.jwt(Some("k1"), &claims).expect("HS256 token"),
            KeyMaterial::Secret(secret),
            Alg::HS256,
        )];
        for alg in [Alg::ES256, Alg::EdDSA] {
            let signer = Signer::generate(alg).expect("key generation");
            let jwk = signer.public_jwk().expect("a public JWK");
            let key = portcullis::jose::keys::parse(&jwk.to_string(), KeyRules::STRICT)
                .expect("the public JWK parses")
                .remove(0)
                .material;
            out.push((signer.jwt(None, &claims).expect("token"), key, alg));
        }
        out
    })
}

/// Verifies `token` with `key` under the strict rules; the payload when it verifies.
fn verify(token: &str, key: &KeyMaterial, alg: Alg) -> Option<serde_json::Map<String, Json>> {
    let jws = Jws::parse(token, &[alg], 16 * 1024).ok()?;
    if !jws.verify_any([key], Rules::STRICT) {
        return None;
    }
    jws.payload().ok()
}

/// Ways to damage a token: flip one bit of one byte, cut it, insert a byte.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
    ]
}

fn apply(token: &str, d: &Damage) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    match *d {
        Damage::Flip { at, bit } => {
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        Damage::Truncate { at } => bytes.truncate(at % bytes.len()),
        Damage::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
    }
    bytes
}

// ---- bundles -----------------------------------------------------------------------------

fn bundle_files() -> impl Strategy<Value = Vec<BundleFile>> {
    let path = prop_oneof![
        "[a-z]{1,6}(/[a-z]{1,6}){0,3}/data\\.json",
        "[a-z]{1,6}/policy\\.rego",
        Just(".manifest".to_string()),
    ];
    prop::collection::btree_map(path, prop::collection::vec(any::<u8>(), 0..64), 0..6).prop_map(
        |m| {
            m.into_iter()
                .map(|(path, bytes)| BundleFile { path, bytes })
                .collect()
        },
    )
}

fn small_limits() -> Limits {
    Limits {
        max_archive_bytes: 1 << 20,
        max_file_bytes: 1 << 16,
        max_total_bytes: 1 << 18,
        max_files: 64,
    }
}

proptest! {
    /// `parsed_path` and `parsed_query` are what Go's `net/url` makes of the target, and a
    /// target Go refuses is a request parse error with Go's reason.
    #[test]
    fn path_and_query_map_as_go_net_url(target in target()) {
        let ours = build(HttpRequest { path: target.clone(), ..Default::default() });
        match (go_parse(&target), ours) {
            (Ok((path, query)), Ok(doc)) => {
                prop_assert_eq!(&doc["parsed_path"], &path, "target {:?}", target);
                prop_assert_eq!(&doc["parsed_query"], &query, "target {:?}", target);
            }
            (Err(GoError::Semicolon), Err(e)) => {
                prop_assert_eq!(e, "invalid semicolon separator in query");
            }
            (Err(GoError::Escape(bad)), Err(e)) => {
                prop_assert!(e.starts_with("invalid URL escape \""), "{e}");
                if let Ok(bad) = std::str::from_utf8(&bad) {
                    prop_assert_eq!(e, format!("invalid URL escape {bad:?}"));
                }
            }
            (go, ours) => prop_assert!(false, "target {target:?}: Go {go:?}, Portcullis {ours:?}"),
        }
    }

    /// Headers reach the input document exactly as sent, and `attributes.request.http` keeps
    /// the path as sent, whatever the parsers make of it.
    #[test]
    fn headers_and_path_are_kept_as_sent(
        target in target(),
        headers in prop::collection::hash_map("[a-z][a-z0-9-]{0,12}", ".{0,24}", 0..6),
    ) {
        let http = HttpRequest { path: target.clone(), headers: headers.clone(), ..Default::default() };
        if let Ok(doc) = build(http) {
            let http = &doc["attributes"]["request"]["http"];
            if target.is_empty() {
                prop_assert!(http.get("path").is_none());
            } else {
                prop_assert_eq!(&http["path"], &Json::from(target));
            }
            // protobuf JSON leaves out an empty map, as OPA-Envoy's protojson does
            if headers.is_empty() {
                prop_assert!(http.get("headers").is_none());
            } else {
                prop_assert_eq!(&http["headers"], &json!(headers));
            }
        }
    }

    /// Any body under any content type yields a document or a request parse error, never a
    /// panic; a JSON body that is whole and valid JSON is `parsed_body` as JSON reads it.
    #[test]
    fn bodies_parse_or_refuse(
        ct in content_type(),
        body in body(),
        raw in prop::collection::vec(any::<u8>(), 0..64),
        length in prop::option::of(prop_oneof![Just("-1".to_string()), "[0-9]{1,3}", ".{0,4}"]),
    ) {
        let mut headers = std::collections::HashMap::new();
        if !ct.is_empty() {
            headers.insert("content-type".to_string(), ct.clone());
        }
        if let Some(l) = &length {
            headers.insert("content-length".to_string(), l.clone());
        }
        for (body, raw_body) in [(body.clone(), Vec::new()), (String::new(), raw)] {
            let http = HttpRequest {
                path: "/svc.Service/Method".into(),
                headers: headers.clone(),
                body: body.clone(),
                raw_body,
                ..Default::default()
            };
            let doc = build_value(http);
            if ct.starts_with("application/json")
                && length.is_none()
                && !body.is_empty()
                && let Ok(expected) = serde_json::from_str::<Json>(&body)
            {
                let doc = doc.map_err(|e| TestCaseError::fail(format!("{body:?}: {e}")))?;
                let doc = serde_json::to_value(&doc).expect("serializes");
                prop_assert_eq!(&doc["parsed_body"], &expected);
                prop_assert_eq!(&doc["truncated_body"], &Json::from(false));
            }
        }
    }

    /// A decision either maps or is refused with a reason; a mapped decision answers OK
    /// exactly when it allows, carries the headers it names, and `dry-run` always answers OK.
    #[test]
    fn decisions_map_to_answers_that_match_them(j in decision_json()) {
        let value = regorus_value(&j);
        let Ok(decision) = Decision::try_from(&value) else { return Ok(()); };
        let allowed = decision.allowed();
        prop_assert_eq!(allowed, j.as_bool().unwrap_or_else(|| j["allowed"] == true));
        let dry = decision.clone().into_response("id", true);
        prop_assert_eq!(dry.status.as_ref().map_or(0, |s| s.code), 0);
        let response = decision.into_response("id", false);
        let code = response.status.as_ref().map_or(0, |s| s.code);
        prop_assert_eq!(code == 0, allowed, "{} -> {:?}", j, response);
        if let Some(Json::Object(headers)) = j.get("headers") {
            use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
            let sent: Vec<(String, String)> = match &response.http_response {
                Some(HttpResponse::OkResponse(ok)) => ok.headers.iter(),
                Some(HttpResponse::DeniedResponse(denied)) => denied.headers.iter(),
                _ => [].iter(),
            }
            .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
            .collect();
            for (name, value) in headers {
                let values: Vec<&str> = match value {
                    Json::String(s) => vec![s],
                    Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
                    _ => vec![],
                };
                for v in values {
                    prop_assert!(
                        sent.iter().any(|(k, s)| k == name && s == v),
                        "{name}: {v} missing from {sent:?}"
                    );
                }
            }
        }
    }

    /// A damaged token never verifies, unless the damage left the signed bytes and the
    /// signature as they were (a base64url character's unused low bits).
    #[test]
    fn damaged_tokens_never_verify(which in 0usize..3, d in damage()) {
        let (token, key, alg) = &signed_tokens()[which];
        prop_assert!(verify(token, key, *alg).is_some(), "the undamaged token verifies");
        let damaged = apply(token, &d);
        let Ok(damaged) = String::from_utf8(damaged) else { return Ok(()); };
        if let Some(payload) = verify(&damaged, key, *alg) {
            let original = verify(token, key, *alg).expect("verifies");
            prop_assert_eq!(payload, original, "{:?} verified as something else", damaged);
        }
    }

    /// Arbitrary text is never a token, and never panics the parser.
    #[test]
    fn arbitrary_text_is_not_a_token(text in ".{0,200}", which in 0usize..3) {
        let (_, key, alg) = &signed_tokens()[which];
        prop_assert!(verify(&text, key, *alg).is_none());
    }

    /// A bundle archive round-trips, and any damage to it is an error or a subset of its files,
    /// never a panic, and never a file outside the limits.
    #[test]
    fn bundle_archives_round_trip_or_refuse(files in bundle_files(), d in damage()) {
        let bytes = archive::write_tar_gz(&files).expect("writes");
        let limits = small_limits();
        let read = archive::read_tar_gz(&bytes, &limits).expect("reads back");
        let mut expected = files.clone();
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        let mut got = read.clone();
        got.sort_by(|a, b| a.path.cmp(&b.path));
        prop_assert_eq!(got, expected);

        let damaged = apply(&String::from_utf8_lossy(&bytes), &d);
        for candidate in [damaged, { let mut b = bytes.clone(); if !b.is_empty() { let i = b.len() / 2; b[i] ^= 0x5a; } b }] {
            if let Ok(read) = archive::read_tar_gz(&candidate, &limits) {
                prop_assert!(read.len() <= limits.max_files);
                for f in read {
                    prop_assert!(f.bytes.len() as u64 <= limits.max_file_bytes);
                    prop_assert!(archive::safe_path(&f.path).is_ok(), "{}", f.path);
                }
            }
        }
    }

    /// Arbitrary bytes are never a bundle (or are an empty one) and never a panic; a manifest
    /// parses or is refused.
    #[test]
    fn arbitrary_bytes_are_refused_as_bundles(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = archive::read_tar_gz(&bytes, &small_limits());
        let _ = portcullis::bundle::manifest::Manifest::parse(&bytes);
    }

    /// The config loader and `--set` refuse what they cannot use with an error, never a panic.
    #[test]
    fn config_and_set_refuse_or_load(
        yaml in prop::collection::vec(prop::sample::select(vec![
            "plugins:\n", "  envoy_ext_authz_grpc:\n", "    addr: :0\n", "    path: a/b\n",
            "    dry-run: yes\n", "decision_logs: {console: true}\n", "runtime: {policy_engine: vm}\n",
            "&a [*a, *a]\n", "- 1\n", "{", "}", ": :\n", "!!binary x\n", "services: [1]\n",
            "bundles: {b: {resource: 7}}\n", "authentication: {policies: [{}]}\n", "\t", "~\n",
        ]), 0..8).prop_map(|p| p.concat()),
        sets in prop::collection::vec(prop_oneof![
            "[a-z_.\\[\\]0-9]{0,24}=[a-z0-9:{}\\[\\],\"]{0,12}",
            ".{0,24}",
        ], 0..4),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, &yaml).expect("writes");
        let _ = portcullis::config::Config::load(Some(&file), &sets);
        let _ = portcullis::config::Config::load(None, &sets);
    }
}
