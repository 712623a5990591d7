//! `portcullis eval` and `portcullis test` run as a user runs them.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_policy_tests_pass() {
    let out = Command::new(BIN)
        .args(["test", "--coverage", &repo("policies")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS: 7/7"), "{stdout}");
    assert!(stdout.contains("coverage: "), "{stdout}");
}

#[test]
fn a_failing_test_exits_non_zero_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\n\ntest_ok if true\n\ntest_broken if 1 == 2\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["test", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("data.p_test.test_broken: FAIL"), "{stdout}");
    assert!(stdout.contains("PASS: 1/2"), "{stdout}");
    // A directory without tests is a failure too, not a silent pass.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("p.rego"), "package p\n\nx := 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["test", empty.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn eval_answers_like_opa_eval() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let token = std::fs::read_to_string(repo("tests/fixtures/example/reader.jwt")).unwrap();
    std::fs::write(
        &input,
        format!(
            r#"{{"attributes": {{"request": {{"http": {{"method": "GET", "headers": {{"authorization": "Bearer {}"}}}}}}}}, "parsed_path": ["orders"]}}"#,
            token.trim()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "eval",
            "-d",
            &repo("policies"),
            "-i",
            input.to_str().unwrap(),
            "data.envoy.authz.allow",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["result"][0]["expressions"][0]["value"],
        serde_json::json!({"allowed": true, "headers": {"x-user": "alice"}})
    );
    // --fail: undefined exits 1.
    let out = Command::new(BIN)
        .args([
            "eval",
            "--fail",
            "-d",
            &repo("policies"),
            "data.envoy.authz.nothing",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{}");
}
