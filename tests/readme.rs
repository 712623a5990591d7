//! The README's examples stay true: every YAML block that is a config file loads as one, and
//! every file an example command names exists.

use std::path::Path;
use std::process::{Command, Stdio};

use portcullis::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The fenced blocks of `file` with the given info string, with their first line number.
fn blocks(file: &str, lang: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(file)).expect("read");
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        if current.is_none() {
            if fence == format!("```{lang}") {
                current = Some((n + 2, String::new()));
            }
        } else if fence == "```" {
            out.extend(current.take());
        } else if let Some((_, body)) = &mut current {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// Top-level keys of Portcullis' config file.
const CONFIG_KEYS: &[&str] = &[
    "plugins:",
    "decision_logs:",
    "services:",
    "bundles:",
    "authentication:",
    "internal_token:",
    "gateway:",
    "namespaces:",
    "runtime:",
    "distributed_tracing:",
    "labels:",
];

#[test]
fn config_examples_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for file in ["README.md", "deploy/envoy/README.md"] {
        if !Path::new(ROOT).join(file).exists() {
            continue;
        }
        for (line, yaml) in blocks(file, "yaml") {
            let first = yaml
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
            if !first.is_some_and(|f| CONFIG_KEYS.iter().any(|k| f.starts_with(k))) {
                continue;
            }
            let path = dir.path().join(format!("example-{checked}.yaml"));
            std::fs::write(&path, &yaml).expect("write");
            if let Err(e) = Config::load(Some(&path), &[]) {
                panic!("{file}:{line}: the config example does not load: {e}\n{yaml}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "no config examples found");
}

#[test]
fn files_named_by_example_commands_exist() {
    let mut missing = Vec::new();
    for file in ["README.md", "deploy/envoy/README.md"] {
        for (line, sh) in blocks(file, "sh") {
            // Files the block writes itself (`cat > acme.rego`).
            let words: Vec<&str> = sh.split_whitespace().collect();
            let created: Vec<&str> = words
                .windows(2)
                .filter(|w| w[0] == ">")
                .map(|w| w[1])
                .collect();
            for word in words {
                let word = word
                    .trim_start_matches(['"', '\'', '(', '@'])
                    .trim_end_matches(['"', '\'', ')', '}', ']', ',', ';']);
                if created.contains(&word) {
                    continue;
                }
                let looks_like_file = (word.starts_with("policies/")
                    || word.starts_with("tests/")
                    || word.starts_with("bench/")
                    || word.starts_with("deploy/")
                    || word.ends_with(".rego")
                    || word.ends_with(".json")
                    || word.ends_with(".yaml"))
                    && !word.contains('$')
                    && !word.contains("://")
                    && !word.starts_with('-')
                    && !word.contains('=');
                if looks_like_file && !Path::new(ROOT).join(word).exists() {
                    missing.push(format!("{file}:{line}: {word}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "example commands name missing files:\n{}",
        missing.join("\n")
    );
}

/// How a `sh` block runs, from the `<!-- doc-run: ... -->` comment on the line before it
/// (`;`-separated): `session=NAME` (blocks of one session run in order in one shell; the
/// default session is the file), `background=URL` (the block keeps running; the next block
/// starts once `URL` answers), and last `skip=REASON` (the block is not run).
#[derive(Debug, Default)]
struct Directive {
    session: Option<String>,
    background: Option<String>,
    skip: Option<String>,
}

struct ShBlock {
    file: &'static str,
    line: usize,
    body: String,
    directive: Directive,
}

fn sh_blocks(file: &'static str) -> Vec<ShBlock> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(file)).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut n = 0;
    while n < lines.len() {
        if lines[n].trim() != "```sh" {
            n += 1;
            continue;
        }
        let mut directive = Directive::default();
        if let Some(prev) = lines[..n].iter().rev().find(|l| !l.trim().is_empty())
            && let Some(spec) = prev
                .trim()
                .strip_prefix("<!-- doc-run:")
                .and_then(|r| r.strip_suffix("-->"))
        {
            // `skip=` comes last and its reason is the rest of the comment.
            let (spec, skip) = match spec.split_once("skip=") {
                Some((before, reason)) => (before, Some(reason.trim())),
                None => (spec, None),
            };
            directive.skip = skip.map(Into::into);
            for part in spec.split(';').filter(|p| !p.trim().is_empty()) {
                match part.trim().split_once('=') {
                    Some(("session", v)) => directive.session = Some(v.trim().into()),
                    Some(("background", v)) => directive.background = Some(v.trim().into()),
                    _ => panic!("{file}:{}: unknown doc-run directive {part:?}", n),
                }
            }
        }
        let start = n + 2;
        let mut body = String::new();
        n += 1;
        while n < lines.len() && lines[n].trim() != "```" {
            body.push_str(lines[n]);
            body.push('\n');
            n += 1;
        }
        out.push(ShBlock {
            file,
            line: start,
            body,
            directive,
        });
        n += 1;
    }
    out
}

/// What the documented commands mean here: the binary under test stands for `cargo run
/// --release --` and for a release build's path, and the benchmark's example runs briefly.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("cargo run --release --", "portcullis"),
    ("$PWD/target/release/portcullis", "$(command -v portcullis)"),
    ("--duration 10 --warmup 2", "--duration 1 --warmup 0"),
];

/// A command line whose comment states its result is checked: `# exit N` asserts the exit
/// status, and a `curl -w '%{http_code}'` line commented `# NNN` asserts the status it prints.
fn with_expectations(body: &str) -> String {
    let exit = regex::Regex::new(r"^(.*\S)\s+#\s*exit (\d+)\b").expect("regex");
    let status = regex::Regex::new(r"^(.*%\{http_code\}.*\S)\s+#\s*(\d{3})\b").expect("regex");
    // Logical lines: a trailing `\` continues the command on the next line.
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in body.lines() {
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    let mut out = String::new();
    for line in &lines {
        if let Some(c) = exit.captures(line) {
            let (cmd, want) = (&c[1], &c[2]);
            out.push_str(&format!(
                "rc=0; {cmd} || rc=$?; [ \"$rc\" = {want} ] || {{ echo \"expected exit {want}, got $rc\" >&2; false; }}\n"
            ));
        } else if let Some(c) = status.captures(line) {
            let (cmd, want) = (&c[1], &c[2]);
            out.push_str(&format!(
                "got=$({cmd}); echo \"$got\"; [ \"$got\" = {want} ] || {{ echo \"expected {want}, got $got\" >&2; false; }}\n"
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The script of one session: each block in turn, failing at the first command that fails
/// (or states a result it does not give) and naming the block.
fn session_script(blocks: &[&ShBlock]) -> String {
    let mut script = String::from(
        "set -euo pipefail\ntrap 'echo \"doc-run: failed in the block at $DOC_BLOCK\" >&2' ERR\n",
    );
    for (i, b) in blocks.iter().enumerate() {
        let mut body = with_expectations(&b.body);
        for (from, to) in SUBSTITUTIONS {
            body = body.replace(from, to);
        }
        script.push_str(&format!("DOC_BLOCK='{}:{}'\n", b.file, b.line));
        match &b.directive.background {
            Some(ready) => {
                script.push_str(&format!("( {body}\n) > doc-run-bg-{i}.log 2>&1 &\n"));
                script.push_str(&format!(
                    "for _ in $(seq 600); do curl -sf -o /dev/null '{ready}' && break; sleep 0.1; done\n\
                     curl -sf -o /dev/null '{ready}' || {{ cat doc-run-bg-{i}.log >&2; false; }}\n"
                ));
            }
            None => script.push_str(&body),
        }
    }
    script
}

/// Every README.md under deploy/ (not in installed packages), relative to the repository.
fn deploy_readmes(dir: &Path, out: &mut Vec<&'static str>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read deploy/")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() && !path.ends_with("node_modules") {
            deploy_readmes(&path, out);
        } else if path.file_name().is_some_and(|n| n == "README.md") {
            let rel = path.strip_prefix(ROOT).expect("under the repository");
            out.push(Box::leak(rel.display().to_string().into_boxed_str()));
        }
    }
}

#[test]
fn command_blocks_run() {
    let mut files = vec!["README.md"];
    deploy_readmes(&Path::new(ROOT).join("deploy"), &mut files);
    assert!(files.contains(&"deploy/envoy/README.md"), "{files:?}");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let envoy = std::env::var("ENVOY_BIN").is_ok()
        || Command::new("python3")
            .args(["-c", "import envoy"])
            .status()
            .is_ok_and(|s| s.success());
    // The binary under test as `portcullis` on PATH.
    let shims = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_portcullis"),
        shims.path().join("portcullis"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        shims.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    let mut failures = Vec::new();
    for file in files {
        let blocks = sh_blocks(file);
        let mut sessions: Vec<(String, Vec<&ShBlock>)> = Vec::new();
        for b in blocks.iter().filter(|b| b.directive.skip.is_none()) {
            let name = b.directive.session.clone().unwrap_or_else(|| file.into());
            match sessions.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push(b),
                None => sessions.push((name, vec![b])),
            }
        }
        for (name, list) in sessions {
            let script = session_script(&list);
            if script.contains("envoy") && !envoy {
                assert!(!ci, "{name}: Envoy is needed (CI installs it)");
                eprintln!("skipping {name}: no Envoy on this machine");
                continue;
            }
            // A working directory with the repository's files, where blocks may write.
            let work = tempfile::tempdir().unwrap();
            for entry in std::fs::read_dir(ROOT).unwrap().flatten() {
                let name = entry.file_name();
                if name != "target" {
                    std::os::unix::fs::symlink(entry.path(), work.path().join(&name)).unwrap();
                }
            }
            let started = std::time::Instant::now();
            let result = run_session(&script, work.path(), &path);
            eprintln!("{name}: {} blocks in {:?}", list.len(), started.elapsed());
            match result {
                Ok(()) => ran += list.len(),
                Err(e) => failures.push(format!("{name}:\n{e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran >= 10, "only {ran} blocks ran");
}

/// Runs a session's script in its own process group, killed (with whatever it left in the
/// background) when it ends or after two minutes.
fn run_session(script: &str, dir: &Path, path: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env("PORTCULLIS", env!("CARGO_BIN_EXE_portcullis"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pgid = child.id();
    let out = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        child.wait_with_output()
    })
    .join()
    .map_err(|_| "session thread panicked".to_string())?
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn stated_results_are_checked() {
    let run = |body: &str| {
        let script = format!("set -euo pipefail\n{}", with_expectations(body));
        Command::new("bash")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(run("sh -c 'exit 1'   # exit 1: denied"));
    assert!(!run("true   # exit 1"));
    assert!(!run("false  # exit 0"));
    assert!(run(
        "printf '%{http_code}' >/dev/null; echo 403   # 403: forbidden"
    ));
    assert!(!run("printf '%{http_code}' >/dev/null; echo 200   # 403"));
    assert!(!run(
        "printf '%{http_code}' >/dev/null; \\\n  echo 200   # 403"
    ));
}
