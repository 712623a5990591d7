//! The layering in ARCHITECTURE.md, checked against the imports in `src/`: every `crate::` path
//! in a top-level module must name a module of a lower layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layers, lowest first, from the marked block of ARCHITECTURE.md.
fn layers() -> Vec<Vec<String>> {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text.find("<!-- layers:").expect("layers marker");
    let end = text.find("<!-- /layers -->").expect("end of layers marker");
    text[start..end]
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module names that follow `crate::` on a line of code: `crate::a::b`,
/// `crate::{a, b::c}` (macros' `$crate::` excluded).
fn crate_refs(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = &rest[..i];
        let after = &rest[i + "crate::".len()..];
        rest = after;
        if before.ends_with('$') || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            // Split the group at its top-level commas; each item starts with a module name.
            let mut depth = 0usize;
            let mut items = vec![String::new()];
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(String::new());
                        continue;
                    }
                    _ => {}
                }
                items.last_mut().expect("an item").push(c);
            }
            refs.extend(
                items
                    .iter()
                    .map(|i| leading_name(i.trim()))
                    .filter(|n| !n.is_empty()),
            );
        } else {
            let name = leading_name(after);
            if !name.is_empty() {
                refs.push(name);
            }
        }
    }
    refs
}

fn leading_name(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn imports_only_go_down_the_layers() {
    let layers = layers();
    assert!(layers.len() > 3, "too few layers read: {layers:?}");
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();

    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .expect("component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if first == "lib" || first == "main" {
            continue;
        }
        modules.insert(first.clone());
        let Some(&own) = rank.get(first.as_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for target in crate_refs(line) {
                if target == first {
                    continue;
                }
                match rank.get(target.as_str()) {
                    Some(&r) if r < own => {}
                    Some(_) => violations.push(format!(
                        "{}:{}: {first} (layer {own}) imports {target} (layer {})",
                        rel.display(),
                        n + 1,
                        rank[target.as_str()]
                    )),
                    None => {}
                }
            }
        }
    }
    let listed: BTreeSet<String> = rank.keys().map(|s| s.to_string()).collect();
    let unlisted: Vec<_> = modules.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "modules missing from ARCHITECTURE.md's layers: {unlisted:?}"
    );
    let stale: Vec<_> = listed.difference(&modules).collect();
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md lists modules that do not exist: {stale:?}"
    );
    assert!(
        violations.is_empty(),
        "imports that do not go down the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn crate_paths_are_read_in_every_form() {
    assert_eq!(crate_refs("use crate::policy::Snapshot;"), ["policy"]);
    assert_eq!(
        crate_refs("use crate::{authn::Identity, token, jose::{Alg, b64}};"),
        ["authn", "token", "jose"]
    );
    assert_eq!(
        crate_refs("let x = crate::telemetry::Metrics::default(); crate::env::get()"),
        ["telemetry", "env"]
    );
    assert!(crate_refs("$crate::x::y").is_empty());
    assert!(crate_refs("pub(crate) fn f()").is_empty());
}
