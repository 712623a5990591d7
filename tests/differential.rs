//! The two engines against each other: every rule of regorus' own YAML test corpus (the copy
//! in `vendor/regorus`, else the pinned crate's source in the cargo registry) and of this
//! repository's `tests/cases`, evaluated with `runtime.policy_engine: interpreter` and `auto`
//! (the bytecode VM where it applies), must give the same answer.
//!
//! Divergences already known are listed in `tests/differential/known.txt` (`file#case rule`, one
//! per line, with a comment saying what differs): the test fails on any divergence not listed,
//! and on a listed one that no longer diverges, so the list only shrinks. The summary line
//! (`rules compared on the VM, routed to the interpreter, ...`) is printed with `--nocapture`.
//!
//! `REGORUS_CORPUS=<dir>` points at another corpus directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use portcullis::policy::{EngineChoice, PolicyOptions, Snapshot, Sources};
use regorus::Value;
use serde_json::Value as Json;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The regorus crate's `tests/interpreter/cases`: the vendored copy's (`vendor/regorus`), else
/// the version pinned in Cargo.lock, in the cargo registry's unpacked sources
/// (`$CARGO_HOME/registry/src/*/regorus-<version>`).
fn regorus_corpus() -> PathBuf {
    if let Ok(dir) = std::env::var("REGORUS_CORPUS") {
        return PathBuf::from(dir);
    }
    let vendored = Path::new(ROOT).join("vendor/regorus/tests/interpreter/cases");
    if vendored.is_dir() {
        return vendored;
    }
    let lock = std::fs::read_to_string(Path::new(ROOT).join("Cargo.lock")).expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"regorus\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .expect("regorus in Cargo.lock");
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo"));
    let registries = home.join("registry/src");
    std::fs::read_dir(&registries)
        .unwrap_or_else(|e| panic!("{}: {e}", registries.display()))
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join(format!("regorus-{version}/tests/interpreter/cases"))
        })
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("regorus {version} sources not in {}", registries.display()))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// One policy set and the inputs to evaluate each of its rules on.
struct Subject {
    name: String,
    modules: Vec<String>,
    data: serde_json::Map<String, Json>,
    inputs: Vec<Json>,
}

/// regorus' cases: `cases: [{note, modules, data?, input?, ...}]`.
fn regorus_subjects(file: &Path, base: &Path) -> Vec<Subject> {
    let text = std::fs::read_to_string(file).expect("read");
    let Ok(doc) = yaml_serde::from_str::<Json>(&text) else {
        return Vec::new();
    };
    let rel = file
        .strip_prefix(base)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut out = Vec::new();
    for case in doc["cases"].as_array().into_iter().flatten() {
        let Some(modules) = case["modules"].as_array() else {
            continue;
        };
        let modules: Vec<String> = modules
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        let data = case["data"].as_object().cloned().unwrap_or_default();
        let input = match &case["input"] {
            Json::Null => Json::Object(Default::default()),
            i => i.clone(),
        };
        out.push(Subject {
            name: format!("{rel}#{}", case["note"].as_str().unwrap_or("(no note)")),
            modules,
            data,
            inputs: vec![input],
        });
    }
    out
}

/// This repository's Check cases: the file's policies, each case's request as an input
/// document is not needed to compare engines: the policy's rules are evaluated on a few
/// typical inputs.
fn repository_subjects(file: &Path, base: &Path) -> Vec<Subject> {
    let text = std::fs::read_to_string(file).expect("read");
    let doc: Json = yaml_serde::from_str(&text).expect("case yaml");
    let mut modules: Vec<String> = doc["policy"]
        .as_str()
        .map(str::to_string)
        .into_iter()
        .collect();
    if let Some(more) = doc["policies"].as_object() {
        modules.extend(more.values().filter_map(|v| v.as_str().map(str::to_string)));
    }
    if modules.is_empty() {
        return Vec::new();
    }
    let data = doc["data"].as_object().cloned().unwrap_or_default();
    let inputs = vec![
        serde_json::json!({}),
        serde_json::json!({
            "attributes": {"request": {"http": {"method": "GET", "path": "/orders/1?x=1",
                "headers": {"authorization": "Bearer x", "x-user": "alice"}}}},
            "parsed_path": ["orders", "1"],
            "parsed_query": {"x": ["1"]},
        }),
        serde_json::json!({
            "attributes": {"request": {"http": {"method": "POST", "path": "/admin",
                "headers": {}}}},
            "parsed_path": ["admin"],
            "parsed_body": {"a": [1, 2]},
        }),
    ];
    vec![Subject {
        name: file
            .strip_prefix(base)
            .unwrap_or(file)
            .display()
            .to_string(),
        modules,
        data,
        inputs,
    }]
}

#[derive(Default)]
struct Tally {
    on_vm: usize,
    routed: usize,
    not_built: usize,
    skipped: usize,
    divergent: BTreeSet<String>,
    details: Vec<String>,
}

fn snapshot(subject: &Subject, rule: &str, engine: EngineChoice) -> Option<Snapshot> {
    let mut sources = Sources::default();
    for (i, m) in subject.modules.iter().enumerate() {
        sources.add_module(format!("m{i}.rego"), m.clone());
    }
    sources.data = subject.data.clone();
    Snapshot::build(
        &sources,
        &PolicyOptions {
            decision_path: rule.to_string(),
            engine,
            ..Default::default()
        },
        1,
    )
    .ok()
}

fn answer(s: &Snapshot, input: &Json) -> Result<Value, String> {
    s.eval(Value::from(input.clone()))
        .map(|e| e.value)
        .map_err(|e| e.to_string())
}

/// Builtins whose answers differ between two evaluations by design.
const NONDETERMINISTIC: &[&str] = &["rand.", "time.now_ns", "uuid.rfc4122", "uuid.parse"];

fn compare(subject: &Subject, tally: &mut Tally) {
    if subject
        .modules
        .iter()
        .any(|m| NONDETERMINISTIC.iter().any(|b| m.contains(b)))
    {
        tally.skipped += 1;
        return;
    }
    let Some(probe) = snapshot(subject, "", EngineChoice::Interpreter) else {
        tally.not_built += 1;
        return;
    };
    for rule in probe.rule_paths() {
        let (Some(interpreter), Some(auto)) = (
            snapshot(subject, &rule, EngineChoice::Interpreter),
            snapshot(subject, &rule, EngineChoice::Auto),
        ) else {
            tally.not_built += 1;
            continue;
        };
        if auto.engine_name() != "vm" {
            tally.routed += 1;
            continue;
        }
        tally.on_vm += 1;
        for input in &subject.inputs {
            let (a, b) = (answer(&interpreter, input), answer(&auto, input));
            let same = match (&a, &b) {
                (Ok(x), Ok(y)) => x == y,
                (Err(_), Err(_)) => true,
                _ => false,
            };
            if !same {
                let key = format!("{} {rule}", subject.name);
                tally
                    .details
                    .push(format!("{key}: interpreter {a:?}, vm {b:?}"));
                tally.divergent.insert(key);
                break;
            }
        }
    }
}

fn known() -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/differential/known.txt"))
        .unwrap_or_default();
    text.lines()
        .map(|l| l.split(" -- ").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn check(tally: Tally, what: &str) {
    let known = known();
    println!(
        "{what}: {} rules compared on the VM, {} routed to the interpreter, {} not built, \
         {} policy sets skipped (nondeterministic builtins), {} divergent",
        tally.on_vm,
        tally.routed,
        tally.not_built,
        tally.skipped,
        tally.divergent.len()
    );
    let new: Vec<&String> = tally
        .divergent
        .iter()
        .filter(|d| !known.contains(*d))
        .collect();
    let details: Vec<&String> = tally
        .details
        .iter()
        .filter(|d| new.iter().any(|n| d.starts_with(n.as_str())))
        .collect();
    assert!(
        new.is_empty(),
        "{} divergences between the engines not in tests/differential/known.txt:\n{}",
        new.len(),
        details
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn fixed(tallies: &[&Tally]) -> Vec<String> {
    let divergent: BTreeSet<&String> = tallies.iter().flat_map(|t| &t.divergent).collect();
    known()
        .into_iter()
        .filter(|k| !divergent.contains(k))
        .collect()
}

/// A small deterministic generator (xorshift64*), so that a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Conditions over the generated inputs, in the Rego subset Envoy policies use.
const CONDITIONS: &[&str] = &[
    "input.method == \"GET\"",
    "input.method != \"DELETE\"",
    "input.n > 2",
    "input.n * 2 >= 6",
    "\"admin\" in input.user.roles",
    "not \"banned\" in input.user.roles",
    "some r in input.user.roles; startswith(r, \"ad\")",
    "every r in input.user.roles { is_string(r) }",
    "count(input.path) == 2",
    "input.path[0] == \"orders\"",
    "glob.match(\"orders/*\", [\"/\"], concat(\"/\", input.path))",
    "not input.missing",
    "x := [r | some r in input.user.roles; r != \"reader\"]; count(x) > 0",
    "s := {r | some r in input.user.roles}; s[\"reader\"]",
    "input.tags.x == \"1\"",
    "lower(input.user.name) == \"alice\"",
    "double(input.n) > 5",
    "object.get(input, \"m\", 1) == 1",
    "sprintf(\"%s-%d\", [input.method, input.n]) == \"GET-3\"",
    "regex.match(\"^a\", input.user.name)",
    "split(input.header, \" \")[0] == \"Bearer\"",
    "base64.decode(input.b64) == \"hi\"",
    "trim_prefix(input.header, \"Bearer \") != \"\"",
    "input.user.roles[_] == \"reader\"",
    "some i; input.path[i] == \"7\"; i > 0",
    "to_number(input.tags.x) == 1",
    "is_null(object.get(input, \"nothing\", null))",
    "array.slice(input.path, 0, 1) == [\"orders\"]",
    "time.parse_rfc3339_ns(\"2020-01-01T00:00:00Z\") > 0",
    "json.unmarshal(input.json).a == 1",
    "input.tags.x + 1 > 1",
    "count({\"a\"} | input.user.roles) > 1",
    "input.n % 2 == 1",
];

/// One random policy: a default, one to three definitions of `allow`, an `else` chain, a set,
/// a function, and a decision object built from them.
fn random_policy(rng: &mut Rng) -> String {
    let body = |rng: &mut Rng| {
        let n = 1 + rng.below(3);
        (0..n)
            .map(|_| rng.pick(CONDITIONS).to_string())
            .collect::<Vec<_>>()
            .join("\n  ")
    };
    let mut rego = String::from(
        "package envoy.authz\nimport rego.v1\n\ndouble(x) := x * 2\n\ndefault allow := false\n",
    );
    for _ in 0..1 + rng.below(3) {
        rego.push_str(&format!("\nallow if {{\n  {}\n}}\n", body(rng)));
    }
    rego.push_str(&format!(
        "\nlevel := 1 if {{\n  {}\n}} else := 2 if {{\n  {}\n}} else := 3\n",
        body(rng),
        body(rng)
    ));
    rego.push_str(&format!(
        "\nroles contains r if {{\n  some r in input.user.roles\n  {}\n}}\n",
        body(rng)
    ));
    rego.push_str(&format!(
        "\ncheck(x) if {{\n  x > 1\n  {}\n}}\n\nchecked := check(input.n)\n",
        body(rng)
    ));
    rego.push_str(
        "\nresult := {\"allowed\": allow, \"headers\": {\"x-level\": sprintf(\"%d\", [level])}, \
         \"dynamic_metadata\": {\"roles\": roles}}\n",
    );
    rego
}

fn random_input(rng: &mut Rng) -> Json {
    let roles: Vec<&str> = ["admin", "reader", "banned", "auditor"]
        .iter()
        .copied()
        .filter(|_| rng.below(2) == 0)
        .collect();
    serde_json::json!({
        "method": rng.pick(&["GET", "POST", "DELETE"]),
        "n": rng.below(6),
        "path": rng.pick(&[&["orders", "7"][..], &["orders"], &["admin", "7", "x"], &[]]),
        "user": {"name": rng.pick(&["alice", "Alice", "bob", ""]), "roles": roles},
        "tags": rng.pick(&[serde_json::json!({"x": "1"}), serde_json::json!({"x": "y"}), serde_json::json!({})]),
        "header": rng.pick(&["Bearer abc", "Basic x", ""]),
        "b64": rng.pick(&["aGk=", "!!"]),
        "json": rng.pick(&["{\"a\": 1}", "[", "{\"a\": 2}"]),
    })
}

/// Random policies and inputs: `DIFFERENTIAL_POLICIES` of them (default 200; CI runs the
/// default, a longer run sets more), from `DIFFERENTIAL_SEED` (default fixed).
#[test]
fn the_engines_agree_on_random_policies() {
    let count: usize = std::env::var("DIFFERENTIAL_POLICIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_0FC0_FFEE);
    let mut rng = Rng(seed.max(1));
    let mut tally = Tally::default();
    for i in 0..count {
        let policy = random_policy(&mut rng);
        let inputs = (0..4).map(|_| random_input(&mut rng)).collect();
        let subject = Subject {
            name: format!("random #{i} (seed {seed})"),
            modules: vec![policy.clone()],
            data: Default::default(),
            inputs,
        };
        let before = tally.divergent.len();
        compare(&subject, &mut tally);
        if tally.divergent.len() > before {
            println!("{}:\n{policy}", subject.name);
        }
    }
    check(tally, "random policies");
}

#[test]
fn the_engines_agree_on_every_rule() {
    let corpus = regorus_corpus();
    let mut files = Vec::new();
    yaml_files(&corpus, &mut files);
    assert!(
        files.len() > 50,
        "regorus corpus not found at {}",
        corpus.display()
    );
    let mut regorus = Tally::default();
    for file in &files {
        for subject in regorus_subjects(file, &corpus) {
            compare(&subject, &mut regorus);
        }
    }

    let cases = Path::new(ROOT).join("tests/cases");
    let mut files = Vec::new();
    yaml_files(&cases, &mut files);
    let mut ours = Tally::default();
    for file in &files {
        for subject in repository_subjects(file, &cases) {
            compare(&subject, &mut ours);
        }
    }
    let fixed = fixed(&[&regorus, &ours]);
    check(regorus, "regorus corpus");
    check(ours, "tests/cases");
    assert!(
        fixed.is_empty(),
        "no longer divergent: remove from tests/differential/known.txt:\n{}",
        fixed.join("\n")
    );
}
