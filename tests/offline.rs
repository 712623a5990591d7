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
    assert_eq!(out.status.code(), Some(2), "{stdout}");
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

#[test]
fn eval_reads_stdin_input_bundles_and_prints_raw_values() {
    use std::io::Write;
    // The example policy as a bundle directory (without its tests).
    let bundle = tempfile::tempdir().unwrap();
    for f in ["authz.rego", "data.json"] {
        std::fs::copy(repo(&format!("policies/{f}")), bundle.path().join(f)).unwrap();
    }
    let input = std::fs::read(repo("tests/fixtures/example/input.json")).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "eval",
            "-b",
            bundle.path().to_str().unwrap(),
            "-I",
            "-f",
            "raw",
            "data.envoy.authz.allow.allowed",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "true\n");
    // An undefined query prints nothing in raw form; `--fail` makes it exit 1.
    let out = Command::new(BIN)
        .args([
            "eval",
            "-d",
            &repo("policies"),
            "-f",
            "raw",
            "--fail",
            "data.envoy.authz.nothing",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
