//! The README's examples stay true: every YAML block that is a config file loads as one, and
//! every file an example command names exists.

use std::path::Path;

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
