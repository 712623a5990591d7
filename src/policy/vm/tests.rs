//! The VM against the interpreter on the same policies and inputs.

use super::*;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// An engine prepared as `Snapshot::build` prepares it.
fn engine(modules: &[&str], data: &str) -> Engine {
    let mut engine = Engine::new();
    builtins::register(&mut engine).unwrap();
    for (i, text) in modules.iter().enumerate() {
        engine
            .add_policy(format!("m{i}.rego"), text.to_string())
            .unwrap();
    }
    engine
        .add_data(Value::from_json_str(data).unwrap())
        .unwrap();
    engine
}

/// `(entry, module)` per case of `cases`: Rego snippets each headed by `# <rule name>`.
fn cases(cases: &str) -> impl Iterator<Item = (String, String)> + '_ {
    cases.split("\n# ").skip(1).map(|case| {
        let (rule, body) = case.split_once('\n').unwrap_or((case, ""));
        let entry = format!("data.t.{rule}").trim_end_matches('.').to_string();
        (entry, format!("package t\nimport rego.v1\n{body}\n"))
    })
}

/// Evaluates on the interpreter and the VM, asserts they agree (equal values, or both
/// errors) and returns the VM's result.
fn same(engine: &Engine, vm: &VmPolicy, input: &str) -> Result<Value, String> {
    let input = Value::from_json_str(input).unwrap();
    let mut interpreter = engine.clone();
    interpreter.set_input(input.clone());
    let expected = interpreter.eval_rule(vm.entrypoint().to_string());
    let actual = vm.eval(input.clone()).map_err(|e| e.to_string());
    match (&expected, &actual) {
        (Ok(e), Ok(a)) => assert_eq!(e, a, "{} on {input}", vm.entrypoint()),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "{}: interpreter {expected:?}, VM {actual:?}",
            vm.entrypoint()
        ),
    }
    actual
}

/// [`same`] for each input, in both execution modes.
fn check(modules: &[&str], entry: &str, inputs: &[&str]) -> Vec<Result<Value, String>> {
    let mut engine = engine(modules, r#"{"lib": {"limit": 3}}"#);
    let vm = VmPolicy::compile(&mut engine, entry).unwrap_or_else(|e| panic!("{e}"));
    let mut other = VmPolicy::compile(&mut engine, entry).unwrap();
    other.mode = match vm.mode {
        ExecutionMode::Suspendable => ExecutionMode::RunToCompletion,
        _ => ExecutionMode::Suspendable,
    };
    let results: Vec<_> = inputs.iter().map(|i| same(&engine, &vm, i)).collect();
    if vm.mode == ExecutionMode::RunToCompletion {
        let again: Vec<_> = inputs.iter().map(|i| same(&engine, &other, i)).collect();
        assert_eq!(results, again);
    }
    results
}

fn request(method: &str, path: &[&str], authorization: Option<&str>) -> String {
    let headers = match authorization {
        Some(a) => serde_json::json!({ "authorization": a }),
        None => serde_json::json!({}),
    };
    let http = serde_json::json!({"method": method, "headers": headers});
    serde_json::json!({"attributes": {"request": {"http": http}}, "parsed_path": path}).to_string()
}

fn bearer(name: &str) -> String {
    let token = repo_file(&format!("tests/fixtures/example/{name}.jwt"));
    format!("Bearer {}", token.trim())
}

fn example() -> (Engine, VmPolicy) {
    let rego = repo_file("policies/authz.rego");
    let mut engine = engine(&[&rego], &repo_file("policies/data.json"));
    let vm = VmPolicy::compile(&mut engine, "data.envoy.authz.allow").unwrap();
    (engine, vm)
}

#[test]
fn example_policy_matches_interpreter() {
    let (engine, vm) = example();
    let (reader, admin) = (bearer("reader"), bearer("admin"));
    let mut tampered = reader.clone();
    let last = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., last);
    let eval =
        |method, path: &[&str], auth| same(&engine, &vm, &request(method, path, auth)).unwrap();
    let v = eval("GET", &["orders", "42"], Some(&reader));
    assert_eq!(v["allowed"], Value::from(true));
    assert_eq!(v["headers"]["x-user"], Value::from("alice"));
    // Wrong role: a reader may not POST.
    assert_eq!(
        eval("POST", &["orders"], Some(&reader))["http_status"],
        403.into()
    );
    let v = eval("DELETE", &["x", "y"], Some(&admin));
    assert_eq!(v["headers"]["x-user"], Value::from("root"));
    // Missing, tampered, malformed (decode_verify fails: undefined) and non-bearer tokens.
    for auth in [
        None,
        Some(&*tampered),
        Some("Bearer a.b.c"),
        Some("Basic x"),
    ] {
        assert_eq!(
            eval("GET", &["orders"], auth)["http_status"],
            401.into(),
            "{auth:?}"
        );
    }
    let v = eval("GET", &["health"], None);
    assert_eq!(v, Value::from_json_str(r#"{"allowed": true}"#).unwrap());
    for input in [r#"{"attributes": 7}"#, "{}", "null"] {
        same(&engine, &vm, input).unwrap();
    }
}

#[test]
fn constructs_match_interpreter() {
    let inputs = [
        r#"{"l": [{"kind": "a", "n": 1, "name": "x", "w": 2}, {"kind": "a", "n": 5},
            {"kind": "b", "n": 7}], "ok": true, "s": "k:v", "roles": ["b", "a"]}"#,
        r#"{"l": [{"kind": "b", "n": -1}], "ok": false, "role": "user", "n": 1}"#,
        r#"{"l": [], "x": 1, "role": "admin"}"#,
        "{}",
    ];
    let rego = r#"
# decision
default decision := {"allowed": false}
decision := {"allowed": true, "headers": {"x-roles": concat(",", sort(roles))},
  "kinds": {i.kind | some i in input.l}, "big": [i.n | some i in input.l; i.n > 1]} if input.ok
roles contains r if some r in input.roles
# level
level := "admin" if input.role == "admin" else := "user" if input.role == "user" else := "anon"
# allow
default allow := false
allow if input.x == 1
allow if input.n == 1
# maybe
maybe if input.x == 1
# only_default
default only_default := {"result": false}
# some_in
some_in if { some i in input.l; i.kind == "a"; i.n > 3 }
# every_pos
every_pos if every i in input.l { i.n > 0 }
# doubled
f(n) := n * 2
doubled := [f(i.n) | some i in input.l]
# names
names contains sprintf("%d-%s", [i, x.kind]) if some i, x in input.l
# pair
pair := [a, b] if [a, b] := split(input.s, ":")
# small
import data.lib
small := count(input.l) < lib.limit
# not_missing
not_missing if { x := input.missing; not x == 1 }
# not_host
not_host if { x := crypto.sha256(input.n); not x == "a" }
# yield_missing
yield_missing := [i.name | some i in input.l]
# objects
objects := [{"n": i.name} | some i in input.l]
# assign_in_compr
assign_in_compr := [x | some i in input.l; x := i.name]
# sum_missing
sum_missing := sum([i.w | some i in input.l])
# else_missing
else_missing := input.missing if true else := 2
# else_host
else_host := x if { x := crypto.sha256(input.n) } else := "fallback"
# fn_missing
g(x) := x.name
fn_missing := [g(i) | some i in input.l]
# decoded
decoded := io.jwt.decode(input.s)
# unverified
unverified if not io.jwt.verify_hs256(input.s, "secret")
# hashes
hashes := [crypto.hmac.sha256(x, "k") | some x in [input.s, input.n, 1]]
"#;
    for (entry, module) in cases(rego) {
        check(&[&module], &entry, &inputs);
    }
    let shared = "package shared\nlimit := 2\n";
    let rego = "package t\nimport data.shared\nr := shared.limit + count(input.l)\n";
    assert_eq!(
        check(&[rego, shared], "data.t.r", &[r#"{"l": [1]}"#]),
        [Ok(3.into())]
    );
    let r = check(
        &["package t\nallow if input.x == 1\n"],
        "data.t.allow",
        &["{}", "null"],
    );
    assert_eq!(r, [Ok(Value::Undefined), Ok(Value::Undefined)]);
}

#[test]
fn conflicts_stay_on_the_interpreter() {
    let input = r#"{"a": true, "b": true, "l": [1, 2], "n": 2, "o": {"a": 1}, "k": "a"}"#;
    let conflicting = r#"
# v
v := 1 if input.a
v := 2 if input.b
# v
v := x if some x in input.l
# v
f(x) := 1 if x > 0
f(x) := 2 if x > 1
v := f(input.n)
# v
v[k] := x if some k, x in input.o
v[k] := 9 if k := input.k
# v
v := walk(input)
"#;
    for (entry, module) in cases(conflicting) {
        let err = VmPolicy::compile(&mut engine(&[&module], "{}"), &entry).unwrap_err();
        assert!(matches!(err, VmCompileError::Unsupported { .. }), "{err}");
        let mut interpreter = engine(&[&module], "{}");
        interpreter.set_input(Value::from_json_str(input).unwrap());
        assert!(interpreter.eval_rule(entry).is_err(), "{module}");
    }
    // Definitions that cannot disagree run on the VM.
    let rego = "package t\nv if input.a\nv if input.b\nw := 1 if { input.l[_] }\n";
    check(&[rego], "data.t.v", &[input]);
    check(&[rego], "data.t.w", &[input]);
}

#[test]
fn unsupported_constructs_are_compile_errors() {
    let unsupported = r#"
# v
inner if input.x
v if inner with input as {"x": 1}
# v
v if { print("hello", input.x); true }
# v
default f(_) := 0
f(x) := 1 if x == 1
v := f(2)
# v
v["a"] := 1
# v
v := data.t
# v
v if "a", 1 in input.o
# upper
upper := u if u := upper(input.s)
# missing
v := 1
# .
v := 1
"#;
    for (entry, module) in cases(unsupported) {
        let r = VmPolicy::compile(&mut engine(&[&module], "{}"), &entry);
        assert!(r.is_err(), "{module}");
    }
}

/// Where the VM follows OPA and the interpreter does not.
#[test]
fn known_differences_from_the_interpreter() {
    // regorus' interpreter raises errors for its own failing builtins (its default is
    // strict); on the VM, as in OPA, the call is undefined.
    let rego = "package t\nn := to_number(input.s)\nm := [to_number(x) | x := input.l[_]]\n";
    let mut interpreter = engine(&[rego], "{}");
    let input = Value::from_json_str(r#"{"s": "abc", "l": ["1", "x"]}"#).unwrap();
    interpreter.set_input(input.clone());
    assert!(interpreter.eval_rule("data.t.n".into()).is_err());
    let n = VmPolicy::compile(&mut interpreter, "data.t.n").unwrap();
    assert_eq!(n.eval(input.clone()).unwrap(), Value::Undefined);
    let m = VmPolicy::compile(&mut interpreter, "data.t.m").unwrap();
    assert_eq!(m.eval(input).unwrap(), Value::from_json_str("[1]").unwrap());
    // A set rule whose member is undefined for one element keeps the others, as in OPA.
    let rego = "package t\nimport rego.v1\nr contains i.name if some i in input.l\n";
    let vm = VmPolicy::compile(&mut engine(&[rego], "{}"), "data.t.r").unwrap();
    let v = vm.eval(Value::from_json_str(r#"{"l": [{"name": "a"}, {}]}"#).unwrap());
    assert_eq!(
        v.unwrap().as_set().unwrap().iter().collect::<Vec<_>>(),
        [&"a".into()]
    );
}

#[test]
fn looping_policy_hits_the_time_limit() {
    let rego = "package p\nallow if { count([1 | some x in input.l; some y in input.l]) > 0 }\n";
    let input = Value::from(serde_json::json!({"l": (0..5000).collect::<Vec<_>>()}));
    for mode in [ExecutionMode::RunToCompletion, ExecutionMode::Suspendable] {
        let vm = VmPolicy::compile(&mut engine(&[rego], "{}"), "data.p.allow").unwrap();
        let mut vm = vm.with_time_limit(Duration::from_millis(50));
        vm.mode = mode;
        let start = Instant::now();
        let r = vm.eval(input.clone());
        assert!(matches!(r, Err(VmEvalError::TimeLimit(_))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn threads_evaluate_independently() {
    let vm = Arc::new(example().1);
    let input = request("GET", &["orders"], Some(&bearer("reader")));
    let input = Value::from_json_str(&input).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (vm, input) = (vm.clone(), input.clone());
            std::thread::spawn(move || {
                (0..50).all(|_| vm.eval(input.clone()).unwrap()["allowed"] == true.into())
            })
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap()));
}

/// ns per evaluation: `cargo test --release --lib policy::vm -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_interpreter_vs_vm() {
    use crate::policy::{PolicyOptions, Snapshot, Sources};
    fn time(mut f: impl FnMut() -> Value) -> (u64, u64) {
        (0..1000).for_each(|_| drop(std::hint::black_box(f())));
        let mut ns: Vec<u64> = (0..20_000)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed().as_nanos() as u64
            })
            .collect();
        ns.sort_unstable();
        (ns[ns.len() / 2], ns.iter().sum::<u64>() / ns.len() as u64)
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let example = Sources::read(&[dir.into()], &[]).unwrap();
    let mut trivial = Sources::default();
    let rego = "package envoy.authz\nallow if input.attributes.request.http.method == \"GET\"";
    trivial.add_module("t.rego".into(), format!("{rego}\n"));
    let valid = request("GET", &["orders", "42"], Some(&bearer("reader")));
    let none = request("GET", &["orders", "42"], None);
    let runs = [
        ("example", &example, &valid),
        ("example-401", &example, &none),
    ];
    for (name, sources, input) in runs.into_iter().chain([("trivial", &trivial, &valid)]) {
        let input = Value::from_json_str(input).unwrap();
        let path = "envoy/authz/allow".into();
        let opts = PolicyOptions {
            decision_path: path,
            ..Default::default()
        };
        let snapshot = Snapshot::build(sources, &opts, 1).unwrap();
        let modules: Vec<_> = sources.modules.iter().map(|(_, t)| t.as_str()).collect();
        let mut engine = engine(&modules, &sources.data_value().to_json_str().unwrap());
        let entry = "data.envoy.authz.allow";
        let compiled = engine.compile_with_entrypoint(&entry.into()).unwrap();
        let vm = VmPolicy::compile(&mut engine, entry).unwrap();
        let expected = snapshot.eval(input.clone()).unwrap().value;
        assert_eq!(vm.eval(input.clone()).unwrap(), expected);
        let (p50, mean) = time(|| snapshot.eval(input.clone()).unwrap().value);
        println!("{name:12} interpreter p50 {p50:>6} ns mean {mean:>6} ns");
        let (p50, mean) = time(|| compiled.eval_with_input(input.clone()).unwrap());
        println!("{name:12} compiled    p50 {p50:>6} ns mean {mean:>6} ns");
        let (p50, mean) = time(|| vm.eval(input.clone()).unwrap());
        println!(
            "{name:12} vm ({:?}) p50 {p50:>6} ns mean {mean:>6} ns",
            vm.mode
        );
    }
}

#[test]
fn defaults_that_are_not_constants_stay_on_the_interpreter() {
    let refused = r#"
# a
default a := [x | some x in [1, 2]]
# a
default a := count([1])
"#;
    for (entry, module) in cases(refused) {
        let err = VmPolicy::compile(&mut engine(&[&module], "{}"), &entry).unwrap_err();
        assert!(matches!(err, VmCompileError::Unsupported { .. }), "{err}");
    }
    // Constant defaults, however nested, run on the VM.
    let rego = "package t\nimport rego.v1\ndefault a := {\"k\": [1, {2}], \"n\": null}\na := 1 if input.x\n";
    check(&[rego], "data.t.a", &["{}", r#"{"x": true}"#]);
}

#[test]
fn object_comprehensions_stay_on_the_interpreter() {
    let rego =
        "package t\nimport rego.v1\nx := {k: v | some k in [\"a\", \"b\"]; some v in [1, 2]}\n";
    let err = VmPolicy::compile(&mut engine(&[rego], "{}"), "data.t.x").unwrap_err();
    assert!(matches!(err, VmCompileError::Unsupported { .. }), "{err}");
    // The interpreter reports the conflict, as OPA does.
    assert!(engine(&[rego], "{}").eval_rule("data.t.x".into()).is_err());
    // One that cannot conflict is refused too (the check is conservative) and answers on the
    // interpreter.
    let counts = "package t\nimport rego.v1\ncounts := {k: count([i | some i in input.l; i.kind == k]) | some j in input.l; k := j.kind}\n";
    assert!(VmPolicy::compile(&mut engine(&[counts], "{}"), "data.t.counts").is_err());
    let mut interpreter = engine(&[counts], "{}");
    interpreter.set_input(
        Value::from_json_str(r#"{"l": [{"kind": "a"}, {"kind": "a"}, {"kind": "b"}]}"#).unwrap(),
    );
    assert_eq!(
        interpreter.eval_rule("data.t.counts".into()).unwrap(),
        Value::from_json_str(r#"{"a": 2, "b": 1}"#).unwrap()
    );
}

#[test]
fn functions_and_escaped_imports_stay_on_the_interpreter() {
    // A function is not a decision: undefined on the interpreter.
    let f = "package t\nimport rego.v1\nh(_) := \"x\"\n";
    let err = VmPolicy::compile(&mut engine(&[f], "{}"), "data.t.h").unwrap_err();
    assert!(matches!(err, VmCompileError::Unsupported { .. }), "{err}");
    assert_eq!(
        engine(&[f], "{}").eval_rule("data.t.h".into()).unwrap(),
        Value::Undefined
    );
    // An import of an escaped package name.
    let lib = "package graph[\"a.b\"]\nimport rego.v1\nvalue := 7\n";
    let consumer =
        "package c\nimport rego.v1\nimport data.graph[\"a.b\"] as g\nresult := g.value\n";
    let err = VmPolicy::compile(&mut engine(&[lib, consumer], "{}"), "data.c.result").unwrap_err();
    assert!(matches!(err, VmCompileError::Unsupported { .. }), "{err}");
    assert_eq!(
        engine(&[lib, consumer], "{}")
            .eval_rule("data.c.result".into())
            .unwrap(),
        Value::from(7)
    );
}

#[test]
fn else_chains_with_loops_stay_on_the_interpreter() {
    // The VM skips the remaining branches once a body with a loop has failed.
    for rego in [
        "package t\nimport rego.v1\nlevel := 1 if { input.a == 1 } else := 2 if { some r in input.l; r == \"x\" } else := 3\n",
        "package t\nimport rego.v1\nlevel := 1 if { input.l[_] == \"x\" } else := 3\n",
    ] {
        let err = VmPolicy::compile(&mut engine(&[rego], "{}"), "data.t.level").unwrap_err();
        assert!(matches!(err, VmCompileError::Unsupported { .. }), "{err}");
        let mut interpreter = engine(&[rego], "{}");
        interpreter.set_input(Value::from_json_str(r#"{"l": ["a"]}"#).unwrap());
        assert_eq!(
            interpreter.eval_rule("data.t.level".into()).unwrap(),
            Value::from(3)
        );
    }
    // Without a loop, the chain runs on the VM.
    let rego = "package t\nimport rego.v1\nlevel := 1 if { input.a == 1 } else := 2 if { input.b == 1 } else := 3\n";
    check(
        &[rego],
        "data.t.level",
        &["{}", r#"{"a": 1}"#, r#"{"b": 1}"#],
    );
}
