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
