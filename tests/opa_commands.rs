//! OPA's policy commands as policy authors run them in CI: `check`, `test`, `exec`, `build`,
//! `sign`, `capabilities`, `inspect`, `deps`, `parse`, run as the real binary on the policies in
//! `tests/fixtures/opa/`, compared with the output OPA documents.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Runs the binary in `tests/fixtures/opa`, so that file names in the output are short.
fn opa(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(fixtures())
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis")
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opa")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

/// A policy with one passing, one failing and one erroring test, and a rule no test reaches.
fn mixed_tests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package p\n\nallow if input.x == 1\n\nunreached if {\n\tinput.y == 2\n\tinput.z == 3\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\n\nimport data.p\n\n\
         test_ok if p.allow with input as {\"x\": 1}\n\n\
         test_wrong if p.allow with input as {\"x\": 2}\n\n\
         test_conflict if {\n\tx := {\"a\": 1}\n\tx[\"a\"] == to_number(\"zz\", 1, 2)\n}\n",
    )
    .unwrap();
    dir
}

// ---- check ----

#[test]
fn check_is_silent_and_exits_0_on_clean_policies() {
    let out = opa(&["check", "clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
    let out = opa(&["check", "--strict", "clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn check_reports_every_parse_error_like_opa() {
    let out = opa(&["check", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.starts_with("2 errors occurred:\n"), "{err}");
    assert!(
        err.contains("\nbroken/one.rego:5:1: rego_parse_error: "),
        "{err}"
    );
    assert!(
        err.contains("\nbroken/two.rego:4:1: rego_parse_error: "),
        "{err}"
    );
    let out = opa(&["check", "-f", "json", "broken/one.rego"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stderr(&out)).unwrap();
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["code"], "rego_parse_error");
    assert_eq!(
        errors[0]["location"],
        serde_json::json!({"file": "broken/one.rego", "row": 5, "col": 1})
    );
    assert!(errors[0]["message"].as_str().unwrap().len() > 3);
}

#[test]
fn check_refuses_recursion_as_opa_does() {
    let out = opa(&["check", "recursive"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "1 error occurred: recursive/p.rego:3:1: rego_recursion_error: rule data.rec.f is \
         recursive: data.rec.f -> data.rec.f\n"
    );
}

#[test]
fn check_strict_reports_the_lints_it_supports() {
    // Without --strict the policy is fine.
    assert_eq!(opa(&["check", "strict"]).status.code(), Some(0));
    let out = opa(&["check", "--strict", "strict"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "3 errors occurred:\n\
         strict/p.rego:3:1: rego_compile_error: import data.unused unused\n\
         strict/p.rego:6:11: rego_compile_error: unused argument y. (hint: use _ (wildcard variable) instead)\n\
         strict/p.rego:9:2: rego_compile_error: assigned var a unused\n"
    );
    // -m caps the errors, as OPA's --max-errors.
    let out = opa(&["check", "-S", "-m", "1", "strict"]);
    assert_eq!(
        stderr(&out),
        "2 errors occurred:\n\
         strict/p.rego:3:1: rego_compile_error: import data.unused unused\n\
         rego_compile_error: error limit reached\n"
    );
}

#[test]
fn check_hostile_inputs_get_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("bin.rego");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01, 0x80]).unwrap();
    let huge = dir.path().join("huge.rego");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 * 1024 * 1024)
        .unwrap();
    let missing = dir.path().join("missing.rego");
    for (path, says) in [
        (&binary, "not valid UTF-8"),
        (&huge, "bytes"),
        (&missing, "No such file"),
    ] {
        let out = opa(&["check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{path:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with("1 error occurred: ") && err.contains(says),
            "{path:?}: {err}"
        );
    }
}

#[test]
fn the_old_check_client_form_points_to_authorize() {
    for args in [
        &["check", "--addr", "127.0.0.1:9191", "--path", "/"][..],
        &["check", "--addr=127.0.0.1:9191"],
        &["check", "-H", "x: y"],
        &["check", "--case", "case.yaml"],
        &["check"],
    ] {
        let out = opa(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("portcullis authorize"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

// ---- test ----

#[test]
fn test_json_report_has_opas_shape() {
    let out = opa(&["test", "--format", "json", "clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    let results = report.as_array().unwrap();
    assert_eq!(results.len(), 3);
    let first = &results[0];
    assert_eq!(
        first["location"],
        serde_json::json!({"file": "clean/authz_test.rego", "row": 5, "col": 1})
    );
    assert_eq!(first["package"], "data.authz_test");
    assert_eq!(first["name"], "test_admin_allowed");
    assert!(first["duration"].as_u64().unwrap() > 0);
    // Passing tests carry neither `fail` nor `error`.
    assert!(first.get("fail").is_none() && first.get("error").is_none());
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["duration", "location", "name", "package"]);
}

#[test]
fn test_failures_exit_2_and_are_marked_like_opa() {
    let dir = mixed_tests();
    let out = opa(&["test", "-f", "json", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = json(&out);
    let by_name = |n: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} in {report}"))
    };
    assert!(by_name("test_ok").get("fail").is_none());
    assert_eq!(by_name("test_wrong")["fail"], true);
    let conflict = by_name("test_conflict");
    assert!(
        conflict.get("error").is_some() || conflict["fail"] == true,
        "{conflict}"
    );
    // Pretty: the location, the outcome, and OPA's summary lines.
    let out = opa(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(
        text.contains("p_test.rego:7:\ndata.p_test.test_wrong: FAIL ("),
        "{text}"
    );
    assert!(text.contains("\nPASS: 1/3\n"), "{text}");
}

#[test]
fn test_run_selects_by_full_name_and_refuses_a_bad_regex() {
    let out = opa(&[
        "test",
        "-f",
        "json",
        "--run",
        "data.authz_test.test_reader",
        "clean",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let names: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["test_reader_reads", "test_reader_cannot_write"]);
    let out = opa(&["test", "-r", "cannot_write$", "-v", "clean"]);
    assert!(stdout(&out).contains("PASS: 1/1"), "{}", stdout(&out));
    let out = opa(&["test", "--run", "(unclosed", "clean"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--run: regex parse error"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_threshold_fails_under_the_coverage_with_opas_message() {
    let dir = mixed_tests();
    std::fs::remove_file(dir.path().join("p_test.rego")).unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\n\nimport data.p\n\ntest_ok if p.allow with input as {\"x\": 1}\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let out = opa(&["test", "-f", "json", "--coverage", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    let coverage = report["coverage"].as_f64().unwrap();
    assert!(coverage > 0.0 && coverage < 100.0, "{report}");
    let file = &report["files"][format!("{path}/p.rego")];
    assert!(
        file["not_covered"][0]["start"]["row"].as_u64().is_some(),
        "{report}"
    );
    // Under the threshold: exit 2 and OPA's message (the threshold alone turns coverage on).
    let out = opa(&["test", "--threshold", "99.5", path]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("Code coverage threshold not met: got {coverage:.2} instead of 99.50\n")
    );
    assert_eq!(
        opa(&["test", "--threshold", "1", path]).status.code(),
        Some(0)
    );
    // Out of range, not a number: refused.
    for bad in ["101", "-1", "NaN"] {
        let out = opa(&["test", &format!("--threshold={bad}"), path]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert_eq!(
            stderr(&out),
            "Code coverage threshold must be between 0 and 100\n",
            "{bad}"
        );
    }
    assert_eq!(
        opa(&["test", "--threshold", "lots", path]).status.code(),
        Some(2)
    );
}

#[test]
fn test_bench_reports_ns_per_op() {
    let out = opa(&["test", "--bench", "--run", "reader_reads$", "clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().next().unwrap_or_default();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 3, "{line:?}");
    assert_eq!(fields[0], "data.authz_test.test_reader_reads");
    assert!(fields[1].trim().parse::<u64>().unwrap() > 1, "{line}");
    assert!(fields[2].trim_end().ends_with(" ns/op"), "{line}");
    let out = opa(&[
        "test",
        "--bench",
        "-f",
        "json",
        "--run",
        "reader_reads$",
        "clean",
    ]);
    let report = json(&out);
    let bench = &report[0]["benchmark_result"];
    assert!(bench["N"].as_u64().unwrap() > 1, "{report}");
    assert!(bench["T"].as_u64().unwrap() >= 1_000_000_000, "{report}");
    // Coverage cannot be measured while benchmarking, as in OPA.
    let out = opa(&["test", "--bench", "--coverage", "clean"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "coverage reporting is not supported when benchmarking tests\n"
    );
}

// ---- exec ----

#[test]
fn exec_prints_one_result_per_input_file_like_opa() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        r#"{"user": "alice", "method": "DELETE"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("b.yaml"), "user: bob\nmethod: POST\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an input").unwrap();
    std::fs::write(dir.path().join("z.json"), [0xff, 0xfe, 0x00]).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = opa(&["exec", "--decision", "/authz/allow", "-d", "clean", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        json(&out),
        serde_json::json!({"result": [
            {"path": format!("{d}/a.json"), "result": true},
            {"path": format!("{d}/b.yaml"), "result": false},
            {"path": format!("{d}/z.json"), "error": {"message": "file is not valid UTF-8"}},
        ]})
    );
    // Two-space indentation, `path` first, as OPA prints it.
    assert!(stdout(&out).starts_with("{\n  \"result\": [\n    {\n      \"path\": "));
}

#[test]
fn exec_undefined_decisions_and_fail_flags_follow_opa() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(&input, r#"{"user": "bob"}"#).unwrap();
    let input = input.to_str().unwrap();
    let out = opa(&["exec", "--decision", "authz/missing", "-d", "clean", input]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        json(&out)["result"][0]["error"],
        serde_json::json!({"code": "opa_undefined_error", "message": "/authz/missing decision was undefined"})
    );
    let out = opa(&[
        "exec",
        "--fail",
        "--decision",
        "authz/missing",
        "-d",
        "clean",
        input,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "exec error: there were 0 failures and 1 errors counted in the results list, and --fail is set\n"
    );
    let out = opa(&[
        "exec",
        "--fail-defined",
        "--decision",
        "authz/allow",
        "-d",
        "clean",
        input,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("1 failures and 0 errors"),
        "{}",
        stderr(&out)
    );
    // An empty set of reasons is not "non-empty"; a set with one is.
    let out = opa(&[
        "exec",
        "--fail-non-empty",
        "--decision",
        "authz/reasons",
        "-d",
        "clean",
        input,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(json(&out)["result"][0]["result"], serde_json::json!([]));
    let carol = dir.path().join("carol.json");
    std::fs::write(&carol, r#"{"user": "carol"}"#).unwrap();
    let out = opa(&[
        "exec",
        "--fail-non-empty",
        "--decision",
        "authz/reasons",
        "-d",
        "clean",
        carol.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("and --fail-non-empty is set"));
    // Missing input files and policies that do not load are errors.
    assert_eq!(
        opa(&[
            "exec",
            "--decision",
            "x",
            "-d",
            "clean",
            "/no/such/file.json"
        ])
        .status
        .code(),
        Some(1)
    );
    assert_eq!(
        opa(&["exec", "--decision", "x", "-d", "recursive", input])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        opa(&["exec", "--decision", "x", "-d", "clean"])
            .status
            .code(),
        Some(2)
    );
}

// ---- build and sign ----

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn verify(
    files: Vec<portcullis::bundle::archive::BundleFile>,
) -> Result<portcullis::bundle::Bundle, String> {
    portcullis::bundle::Bundle::from_files(
        "b",
        files,
        Some(&portcullis::bundle::Verification {
            keys: [(
                "ci".to_string(),
                portcullis::config::KeyConfig {
                    algorithm: "ES256".into(),
                    key: Some(std::fs::read_to_string(format!("{KEYS}/ec256-a.pub.pem")).unwrap()),
                    private_key: None,
                    scope: None,
                },
            )]
            .into(),
            ..Default::default()
        }),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn build_and_sign_take_opas_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle.tar.gz");
    let key = format!("{KEYS}/ec256-a.key.pem");
    let o = opa(&[
        "build",
        "-b",
        "clean",
        "-o",
        out.to_str().unwrap(),
        "--revision",
        "r1",
        "--signing-key",
        &key,
        "--signing-alg",
        "ES256",
        "--key-id",
        "ci",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let files = portcullis::bundle::archive::read_tar_gz(
        &std::fs::read(&out).unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(verify(files).unwrap().revision(), "r1");
    // Unsigned, the built bundle evaluates.
    let plain = tmp.path().join("plain.tar.gz");
    let o = opa(&["build", "clean", "-o", plain.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = opa(&[
        "eval",
        "-b",
        plain.to_str().unwrap(),
        "-f",
        "raw",
        "data.authz.allow",
    ]);
    assert_eq!(stdout(&e), "false\n", "{}", stderr(&e));

    // sign writes .signatures.json for a bundle directory, which then verifies.
    let dir = tmp.path().join("b");
    std::fs::create_dir(&dir).unwrap();
    for f in ["authz.rego", "data.json"] {
        std::fs::copy(fixtures().join("clean").join(f), dir.join(f)).unwrap();
    }
    let d = dir.to_str().unwrap();
    let o = opa(&[
        "sign",
        "--bundle",
        "--signing-key",
        &key,
        "--signing-alg",
        "ES256",
        "--key-id",
        "ci",
        "-o",
        d,
        d,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let files = portcullis::bundle::archive::read_dir(&dir, &Default::default()).unwrap();
    assert!(files.iter().any(|f| f.path == ".signatures.json"));
    verify(files.clone()).unwrap();
    // A file changed after signing fails verification.
    std::fs::write(dir.join("authz.rego"), "package authz\n\nallow := true\n").unwrap();
    let files = portcullis::bundle::archive::read_dir(&dir, &Default::default()).unwrap();
    assert!(verify(files).is_err());
    // OPA's usage rules: --bundle and --signing-key are required.
    let o = opa(&["sign", "--signing-key", &key, d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("enable bundle mode (ie. --bundle)"),
        "{}",
        stderr(&o)
    );
    let o = opa(&["sign", "--bundle", d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--signing-key") || stderr(&o).contains("private key"),
        "{}",
        stderr(&o)
    );
    let o = opa(&[
        "sign",
        "--bundle",
        "--signing-key",
        &key,
        "--signing-alg",
        "ES256",
        "/no/such/dir",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

// ---- capabilities, inspect, deps, parse, eval --profile ----

#[test]
fn capabilities_list_regorus_and_extension_builtins_in_opas_shape() {
    let out = opa(&["capabilities", "--current"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    let builtins = doc["builtins"].as_array().unwrap();
    let find = |n: &str| builtins.iter().find(|b| b["name"] == n).cloned();
    // An extension, a regorus builtin, and no internal helper.
    assert_eq!(
        find("io.jwt.decode_verify").unwrap()["decl"],
        serde_json::json!({"type": "function", "args": [{"type": "any"}, {"type": "any"}], "result": {"type": "any"}})
    );
    assert_eq!(
        find("count").unwrap()["decl"]["args"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        !builtins
            .iter()
            .any(|b| b["name"].as_str().unwrap().starts_with("__"))
    );
    assert_eq!(doc["wasm_abi_versions"], serde_json::json!([]));
    assert_eq!(
        doc["future_keywords"],
        serde_json::json!(["contains", "every", "if", "in"])
    );
    assert!(stdout(&out).starts_with("{\n  \"builtins\": [\n    {\n      \"name\": "));
}

#[test]
fn inspect_shows_manifest_namespaces_rules_and_annotations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(fixtures().join("clean/authz.rego"), dir.join("authz.rego")).unwrap();
    std::fs::write(
        dir.join(".manifest"),
        r#"{"revision": "v7", "roots": ["authz", "roles"], "metadata": {"team": "x"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("data.json"), r#"{"roles": {}}"#).unwrap();
    let out = opa(&["inspect", "-f", "json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["manifest"]["revision"], "v7");
    assert_eq!(
        doc["manifest"]["roots"],
        serde_json::json!(["authz", "roles"])
    );
    assert_eq!(
        doc["manifest"]["metadata"],
        serde_json::json!({"team": "x"})
    );
    assert_eq!(
        doc["namespaces"],
        serde_json::json!({"data.authz": ["authz.rego"]})
    );
    let rules: Vec<&str> = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["data.authz.allow", "data.authz.reasons"]);
    assert_eq!(
        doc["annotations"],
        serde_json::json!([{
            "path": "data.authz.allow",
            "location": {"file": "authz.rego", "row": 12, "col": 1},
            "annotations": {
                "title": "Admins may do anything",
                "description": "Grants every method to the admin role.",
                "custom": {"severity": "high"},
                "scope": "rule",
            },
        }])
    );
    // A broken annotation, a missing bundle: errors.
    std::fs::write(
        dir.join("bad.rego"),
        "package authz\n\n# METADATA\n# title: [unclosed\nx := 1\n",
    )
    .unwrap();
    let out = opa(&["inspect", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad.rego:3: rego_parse_error"),
        "{}",
        stderr(&out)
    );
    assert_eq!(opa(&["inspect", "/no/such/bundle"]).status.code(), Some(1));
}

#[test]
fn deps_lists_base_and_virtual_documents() {
    let out = opa(&["deps", "-f", "json", "-d", "clean", "data.authz.allow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        json(&out),
        serde_json::json!({"base": ["data.roles"], "virtual": ["data.authz.allow"]})
    );
    // Through another rule, and any query.
    let out = opa(&[
        "deps",
        "-f",
        "json",
        "-d",
        "clean",
        "x := data.authz_test.test_admin_allowed; x",
    ]);
    assert_eq!(
        json(&out),
        serde_json::json!({"base": ["data.roles"], "virtual": ["data.authz.allow", "data.authz_test.test_admin_allowed"]})
    );
    let out = opa(&["deps", "-d", "clean", "data.authz.reasons"]);
    assert_eq!(
        stdout(&out),
        "base document references:\n  data.roles\nvirtual document references:\n  data.authz.reasons\n"
    );
    // Broken queries and policies are errors.
    assert_eq!(
        opa(&["deps", "-d", "clean", "data.authz.allow =="])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        opa(&["deps", "-d", "recursive", "data.rec.f(1)"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        opa(&["deps", "-d", "clean", "true\n}\nx := 1"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn parse_prints_regorus_tree_and_refuses_what_does_not_parse() {
    let out = opa(&["parse", "clean/authz.rego"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc[0]["source"]["file"], "clean/authz.rego");
    assert_eq!(doc[0]["ast"]["package"]["refr"]["Var"]["value"], "authz");
    assert!(doc[0]["ast"]["rules"].as_array().unwrap().len() >= 3);
    let out = opa(&["parse", "broken/one.rego"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("broken/one.rego:5:1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(opa(&["parse", "clean/data.json"]).status.code(), Some(1));
    assert_eq!(
        opa(&["parse", "--format", "pretty", "clean/authz.rego"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn eval_profile_is_refused_with_the_reason() {
    let out = opa(&["eval", "--profile", "-d", "clean", "data.authz.allow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--profile is not supported"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}
