//! Data-driven Check cases: every `tests/cases/**/*.yaml` file names a policy (and optional data
//! and config) and a list of requests with the response each must get. Each file runs against
//! its own real server on an ephemeral port, through a real tonic client.
//!
//! ```yaml
//! description: what this file is about
//! policy: |            # or `policies: {name.rego: text}`
//!   package envoy.authz
//!   allow := true
//! data: {}             # optional, merged at the root of `data`
//! paths: [policies]    # optional, files or directories relative to the repository root
//! config: |            # optional config file text
//!   plugins: {envoy_ext_authz_grpc: {dry-run: true}}
//! cases:
//!   - name: allowed
//!     request: {method: GET, path: /}      # a RequestSpec (src/client/request.rs)
//!     response: {status: {code: 0}}         # exact protobuf-JSON; decision_id checked apart
//!   - name: broken
//!     request: {path: /}
//!     error: {code: 2, contains: "undefined decision"}
//!   - name: input document
//!     request: {path: /a?b=c}
//!     input: {parsed_path: [a]}             # subset of dynamic_metadata.input (policy echoes it)
//!     absent: [/parsed_body]                # JSON pointers that must not exist in that input
//! ```

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portcullis::client::{RequestSpec, response_json};
use serde::Deserialize;
use serde_json::Value as Json;
use support::{Spec, TestServer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    description: String,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    policies: BTreeMap<String, String>,
    #[serde(default)]
    data: Option<Json>,
    #[serde(default)]
    config: Option<String>,
    /// Policy and data paths relative to the repository root (e.g. `policies`).
    #[serde(default)]
    paths: Vec<PathBuf>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: RequestSpec,
    #[serde(default)]
    response: Option<Json>,
    #[serde(default)]
    error: Option<ExpectedError>,
    #[serde(default)]
    input: Option<Json>,
    #[serde(default)]
    absent: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    code: i32,
    #[serde(default)]
    contains: Option<String>,
}

fn case_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            case_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// Numbers compare by value (Struct numbers come back as floats).
fn same(expected: &Json, actual: &Json) -> bool {
    match (expected, actual) {
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Json::Object(a), Json::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => expected == actual,
    }
}

/// Every key in `expected` exists in `actual` with a matching value (objects recursively).
fn subset(expected: &Json, actual: &Json, path: &str, errors: &mut Vec<String>) {
    match (expected, actual) {
        (Json::Object(e), Json::Object(a)) => {
            for (k, v) in e {
                match a.get(k) {
                    Some(w) => subset(v, w, &format!("{path}/{k}"), errors),
                    None => errors.push(format!("{path}/{k}: missing")),
                }
            }
        }
        _ if same(expected, actual) => {}
        _ => errors.push(format!("{path}: expected {expected}, got {actual}")),
    }
}

async fn run_file(path: &Path, engine: &str) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let file: CaseFile = yaml_serde::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: invalid case file: {e}", path.display()));
    assert!(!file.description.is_empty());
    let mut policies: Vec<(&str, &str)> = file
        .policies
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(p) = &file.policy {
        policies.push(("policy.rego", p.as_str()));
    }
    let server = TestServer::start(Spec {
        policies,
        data: file.data.clone(),
        config: file.config.as_deref().unwrap_or(""),
        sets: vec![format!("runtime.policy_engine={engine}")],
        paths: file
            .paths
            .iter()
            .map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
            .collect(),
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    let mut failures = Vec::new();
    for case in &file.cases {
        let label = format!("{} [{engine}] / {}", path.display(), case.name);
        if let Err(e) = case.request.validate() {
            failures.push(format!("{label}: invalid request: {e}"));
            continue;
        }
        let result = client.check(case.request.to_check_request()).await;
        match (result, &case.error) {
            (Err(status), Some(expected)) => {
                if status.code() as i32 != expected.code {
                    failures.push(format!(
                        "{label}: expected gRPC code {}, got {:?}: {}",
                        expected.code,
                        status.code(),
                        status.message()
                    ));
                }
                if let Some(text) = &expected.contains
                    && !status.message().contains(text.as_str())
                {
                    failures.push(format!(
                        "{label}: error {:?} does not contain {text:?}",
                        status.message()
                    ));
                }
            }
            (Err(status), None) => failures.push(format!(
                "{label}: unexpected gRPC error {:?}: {}",
                status.code(),
                status.message()
            )),
            (Ok(resp), Some(_)) => failures.push(format!(
                "{label}: expected a gRPC error, got {}",
                response_json(resp.get_ref())
            )),
            (Ok(resp), None) => {
                check_response(&label, response_json(resp.get_ref()), case, &mut failures)
            }
        }
    }
    server.stop().await;
    (file.cases.len(), failures)
}

fn check_response(label: &str, mut json: Json, case: &Case, failures: &mut Vec<String>) {
    let mut fail = |m: String| failures.push(format!("{label}: {m}"));
    // decision_id: present on every response, a UUID; removed before comparing.
    let mut echoed_input = None;
    match json
        .get_mut("dynamicMetadata")
        .and_then(Json::as_object_mut)
    {
        Some(md) => {
            match md.remove("decision_id") {
                Some(Json::String(id)) if id.len() == 36 => {}
                other => fail(format!("decision_id missing or malformed: {other:?}")),
            }
            echoed_input = md.remove("input");
            if md.is_empty()
                && let Json::Object(top) = &mut json
            {
                top.remove("dynamicMetadata");
            }
        }
        None => fail("no dynamicMetadata (decision_id)".into()),
    }
    if case.input.is_none() && case.absent.is_empty() && case.response.is_none() {
        fail("the case asserts nothing".into());
    }
    if case.input.is_some() || !case.absent.is_empty() {
        match &echoed_input {
            None => fail("the policy did not echo its input into dynamic_metadata.input".into()),
            Some(actual) => {
                if let Some(expected) = &case.input {
                    let mut errors = Vec::new();
                    subset(expected, actual, "input", &mut errors);
                    for e in errors {
                        fail(e);
                    }
                }
                for pointer in &case.absent {
                    if actual.pointer(pointer).is_some() {
                        fail(format!("input{pointer} should be absent"));
                    }
                }
            }
        }
    }
    if let Some(expected) = &case.response
        && !same(expected, &json)
    {
        fail(format!(
            "response\n  expected {expected}\n  actual   {json}"
        ));
    }
}

/// Every case on the interpreter, and again with the bytecode VM where it applies: both must
/// give the same answers.
#[tokio::test]
async fn check_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files = Vec::new();
    case_files(&root, &mut files);
    assert!(!files.is_empty(), "no case files under {}", root.display());
    let mut total = 0;
    let mut failures = Vec::new();
    for engine in ["interpreter", "auto"] {
        for file in &files {
            let (n, f) = run_file(file, engine).await;
            total += n;
            failures.extend(f);
        }
    }
    println!(
        "{} case files, {total} cases, {} failures",
        files.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
