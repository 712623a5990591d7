//! Rule labels in decision logs, as OPA 1.17+ (and OPA-Envoy with it) records them: a
//! `labels` map in a rule's `# METADATA` annotation is copied into the decision log event's
//! `rule_labels` array when the rule succeeds while the decision is made.
//!
//! ```rego
//! # METADATA
//! # labels:
//! #   severity: low
//! #   team: platform
//! allow if input.role == "admin"
//! ```
//!
//! **Scopes.** An annotation before a rule applies to that definition (`scope: rule`, the
//! default) or to every definition of the rule (`scope: document`); before the `package` line
//! to every rule of the package (`scope: package`, the default there) or of the package and the
//! packages below it (`scope: subpackages`). A rule's labels are the union of its scopes, the
//! nearer scope winning a key: subpackages (outermost first), package, document, rule. Each
//! element of `rule_labels` is one rule's labels; an element equal to an earlier one is left
//! out.
//!
//! **Which rules.** regorus has no evaluation tracker, so after the decision the labelled
//! rules the decision depends on (its rule and every rule reachable from it in the dependency
//! graph the loader builds, see [`super::recursion`]) are evaluated one definition at a time
//! against the same input: a definition counts when it produces a value (a complete rule is
//! defined, a partial set or object rule has a member). This differs from OPA in one way: OPA
//! records only the rules its evaluation actually reached, so a labelled rule behind a failed
//! expression (`allow if { false; labelled }`) appears here and not in OPA. Labels on functions
//! and on `default` rules are not recorded. The extra evaluations run only when the decision
//! log is on and some rule the decision depends on has labels.
//!
//! A `# METADATA` block that is not a YAML map, or whose `labels` is not a map, fails the load
//! as OPA's parser fails it.

use std::collections::BTreeSet;

use regorus::Engine;
use regorus::Value;
use regorus::unstable::{Module, Ref, Rule, RuleHead};
use serde_json::{Map, Value as Json};

use super::recursion::{self, RulePaths};

/// How a labelled definition is judged to have produced a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A complete rule: defined.
    Complete,
    /// A partial set or object rule, or a ref-head rule with a dynamic part: a non-empty
    /// collection at its static path.
    Partial,
}

/// One labelled rule definition.
struct Labelled {
    /// Index of the module among the engine's modules, and of the rule in the module (the
    /// engine's AST is not shared across threads; each thread's engine clone is indexed alike).
    module: usize,
    rule: usize,
    /// `["envoy", "authz", "allow"]`: package path and the static part of the head.
    path: Vec<String>,
    kind: Kind,
    labels: Map<String, Json>,
}

/// The labelled definitions a decision depends on.
pub struct RuleLabels {
    rules: Vec<Labelled>,
}

impl std::fmt::Debug for RuleLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleLabels")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// One `# METADATA` block: the line of the statement it annotates, its scope and labels.
#[derive(Debug, Clone, PartialEq)]
struct Annotation {
    /// 1-based line of the first statement after the block.
    target_line: u32,
    scope: Option<String>,
    labels: Option<Map<String, Json>>,
}

/// The `# METADATA` blocks of a module's text. `Err` is `file:line: message`.
fn annotations(file: &str, text: &str) -> Result<Vec<Annotation>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines.get(i).map(|l| l.trim()).unwrap_or_default();
        let is_header = line
            .strip_prefix('#')
            .is_some_and(|rest| rest.trim() == "METADATA");
        if !is_header {
            i += 1;
            continue;
        }
        let header_line = i + 1;
        let mut yaml = String::new();
        i += 1;
        while let Some(next) = lines.get(i).map(|l| l.trim_start()) {
            let Some(rest) = next.strip_prefix('#') else {
                break;
            };
            // `# key: value`: the comment marker and one space are not part of the YAML.
            yaml.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            yaml.push('\n');
            i += 1;
        }
        // The statement annotated: the next line that is neither blank nor a comment.
        let mut target = i;
        while lines
            .get(target)
            .is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            target += 1;
        }
        let fail = |message: String| format!("{file}:{header_line}: rego_parse_error: {message}");
        let parsed: Json = if yaml.trim().is_empty() {
            Json::Object(Map::new())
        } else {
            yaml_serde::from_str(&yaml).map_err(|e| fail(format!("invalid METADATA: {e}")))?
        };
        let Json::Object(mut block) = parsed else {
            return Err(fail("METADATA must be a YAML map".into()));
        };
        let scope = match block.remove("scope") {
            None => None,
            Some(Json::String(s)) => Some(s),
            Some(_) => return Err(fail("METADATA scope must be a string".into())),
        };
        let labels = match block.remove("labels") {
            None | Some(Json::Null) => None,
            Some(Json::Object(m)) => Some(m),
            Some(_) => return Err(fail("METADATA labels must be a map".into())),
        };
        found.push(Annotation {
            target_line: u32::try_from(target + 1).unwrap_or(u32::MAX),
            scope,
            labels,
        });
    }
    Ok(found)
}

/// Labels of a package (its own and those reaching down to its subpackages).
#[derive(Default)]
struct PackageLabels {
    package: Map<String, Json>,
    subpackages: Map<String, Json>,
}

impl RuleLabels {
    /// The labelled definitions the decision at `entry` (`data.envoy.authz.allow`, or a
    /// package or partial document) depends on; `None` when there are none.
    pub fn find(
        modules: &[Ref<Module>],
        rule_paths: &RulePaths,
        entry: &str,
    ) -> Result<Option<Self>, String> {
        // Cheap exit for the common case: no annotations anywhere.
        if !modules
            .iter()
            .any(|m| m.package.span.source.contents().contains("METADATA"))
        {
            return Ok(None);
        }
        let mut packages: std::collections::BTreeMap<Vec<String>, PackageLabels> =
            Default::default();
        // (module index, rule index, path, the definition's own labels)
        let mut per_rule: Vec<(usize, usize, Vec<String>, Labels)> = Vec::new();
        let mut documents: std::collections::BTreeMap<Vec<String>, Map<String, Json>> =
            Default::default();
        for (mi, module) in modules.iter().enumerate() {
            let source = &module.package.span.source;
            let Some(package) = recursion::static_path_of(&module.package.refr) else {
                continue;
            };
            let blocks = annotations(source.file(), source.contents())?;
            if blocks.is_empty() {
                continue;
            }
            let package_line = module.package.span.line;
            for block in &blocks {
                let Some(labels) = &block.labels else {
                    continue;
                };
                let rule = module.policy.iter().enumerate().find(|(_, r)| {
                    r.span().line == block.target_line
                        || rule_head_line(r) == Some(block.target_line)
                });
                let scope = block.scope.as_deref();
                let file = source.file();
                match (rule, scope) {
                    (_, Some("package")) => extend(
                        &mut packages.entry(package.clone()).or_default().package,
                        labels,
                    ),
                    (_, Some("subpackages")) => extend(
                        &mut packages.entry(package.clone()).or_default().subpackages,
                        labels,
                    ),
                    (None, None) if block.target_line == package_line => extend(
                        &mut packages.entry(package.clone()).or_default().package,
                        labels,
                    ),
                    (Some((ri, rule)), None | Some("rule")) => {
                        if let Some(head) = recursion::head_path_of(rule) {
                            let path = package.iter().chain(&head).cloned().collect();
                            per_rule.push((mi, ri, path, labels.clone()));
                        }
                    }
                    (Some((_, rule)), Some("document")) => {
                        if let Some(head) = recursion::head_path_of(rule) {
                            let path: Vec<String> = package.iter().chain(&head).cloned().collect();
                            extend(documents.entry(path).or_default(), labels);
                        }
                    }
                    (_, Some(other)) if !matches!(other, "rule" | "document") => {
                        return Err(format!(
                            "{file}:{}: rego_parse_error: unknown METADATA scope {other:?}",
                            block.target_line
                        ));
                    }
                    _ => {}
                }
            }
        }
        // Every definition of a document-scoped rule carries the document's labels, also the
        // definitions without an annotation of their own.
        for (mi, module) in modules.iter().enumerate() {
            let Some(package) = recursion::static_path_of(&module.package.refr) else {
                continue;
            };
            for (ri, rule) in module.policy.iter().enumerate() {
                let Some(head) = recursion::head_path_of(rule) else {
                    continue;
                };
                let path: Vec<String> = package.iter().chain(&head).cloned().collect();
                let listed = per_rule.iter().any(|(m, r, _, _)| (*m, *r) == (mi, ri));
                let in_scope = documents.contains_key(&path)
                    || packages.iter().any(|(p, l)| {
                        (p == &package && !l.package.is_empty())
                            || (package.starts_with(p) && !l.subpackages.is_empty())
                    });
                if !listed && in_scope {
                    per_rule.push((mi, ri, path, Map::new()));
                }
            }
        }
        let reachable = rule_paths.reachable_from(entry);
        let mut rules = Vec::new();
        for (mi, ri, path, own) in per_rule {
            let (Some(module), Some(rule)) = (
                modules.get(mi),
                modules.get(mi).and_then(|m| m.policy.get(ri)),
            ) else {
                continue;
            };
            let Some(kind) = kind_of(rule) else {
                continue;
            };
            if !reachable.contains(&format!("data.{}", path.join("."))) {
                continue;
            }
            let package = recursion::static_path_of(&module.package.refr).unwrap_or_default();
            let mut labels = Map::new();
            // Outermost subpackages scope first: a nearer scope wins a key.
            for n in 0..=package.len() {
                if let Some(p) = package.get(..n).and_then(|prefix| packages.get(prefix)) {
                    extend(&mut labels, &p.subpackages);
                }
            }
            if let Some(p) = packages.get(&package) {
                extend(&mut labels, &p.package);
            }
            if let Some(d) = documents.get(&path) {
                extend(&mut labels, d);
            }
            extend(&mut labels, &own);
            if labels.is_empty() {
                continue;
            }
            rules.push(Labelled {
                module: mi,
                rule: ri,
                path,
                kind,
                labels,
            });
        }
        Ok((!rules.is_empty()).then_some(Self { rules }))
    }

    /// The labels of the definitions that produce a value for the input already set on
    /// `engine`, in the order the policies define them, without repeats.
    pub fn collect(&self, engine: &mut Engine) -> Vec<Json> {
        let mut out: Vec<Json> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let modules = engine.get_modules().clone();
        for r in &self.rules {
            let Some(module) = modules.get(r.module) else {
                continue;
            };
            let Some(rule) = module.policy.get(r.rule) else {
                continue;
            };
            let Ok(data) = engine.eval_rule_in_module(module, rule, false) else {
                continue;
            };
            let mut value = &data;
            for part in &r.path {
                value = &value[part.as_str()];
            }
            let produced = match (r.kind, value) {
                (_, Value::Undefined) => false,
                (Kind::Partial, Value::Set(s)) => !s.is_empty(),
                (Kind::Partial, Value::Object(o)) => !o.is_empty(),
                (Kind::Partial, Value::Array(a)) => !a.is_empty(),
                _ => true,
            };
            if !produced {
                continue;
            }
            let labels = Json::Object(r.labels.clone());
            if seen.insert(labels.to_string()) {
                out.push(labels);
            }
        }
        out
    }
}

type Labels = Map<String, Json>;

fn extend(into: &mut Map<String, Json>, from: &Map<String, Json>) {
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
}

/// The line a rule's head starts on (a rule's own span may start at its first token).
fn rule_head_line(rule: &Ref<Rule>) -> Option<u32> {
    match rule.as_ref() {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => Some(refr.span().line),
            RuleHead::Func { .. } => None,
        },
        Rule::Default { .. } => None,
    }
}

/// How a definition is judged; `None` for functions and defaults (not recorded).
fn kind_of(rule: &Ref<Rule>) -> Option<Kind> {
    match rule.as_ref() {
        Rule::Spec { head, .. } => match head {
            RuleHead::Set { .. } => Some(Kind::Partial),
            RuleHead::Compr { refr, .. } => {
                if recursion::ref_is_static(refr) {
                    Some(Kind::Complete)
                } else {
                    Some(Kind::Partial)
                }
            }
            RuleHead::Func { .. } => None,
        },
        Rule::Default { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_read_with_their_target_line() {
        let text = "package p\n\n# METADATA\n# labels:\n#   severity: low\n#   team: platform\nallow if true\n";
        let found = annotations("p.rego", text).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].target_line, 7);
        let labels = found[0].labels.clone().unwrap();
        assert_eq!(labels["severity"], "low");
        assert_eq!(labels["team"], "platform");
    }

    #[test]
    fn malformed_blocks_fail_with_the_line() {
        let text = "package p\n# METADATA\n# labels: [a, b]\nallow if true\n";
        let e = annotations("p.rego", text).unwrap_err();
        assert!(e.starts_with("p.rego:2: rego_parse_error"), "{e}");
        let text = "package p\n# METADATA\n# labels: {a: [\nallow if true\n";
        let e = annotations("p.rego", text).unwrap_err();
        assert!(e.contains("invalid METADATA"), "{e}");
    }

    #[test]
    fn an_alias_bomb_in_a_block_fails_quickly() {
        // Nine levels of nine aliases: 387M nodes if expanded.
        let mut yaml = String::from("# labels:\n#   a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            yaml.push_str(&format!(
                "#   a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let text = format!("package p\n# METADATA\n{yaml}allow if true\n");
        let started = std::time::Instant::now();
        let result = annotations("p.rego", &text);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let e = result.unwrap_err();
        assert!(e.contains("invalid METADATA"), "{e}");
    }

    #[test]
    fn blocks_without_labels_are_kept_without_labels() {
        let text = "# METADATA\n# title: x\npackage p\n";
        let found = annotations("p.rego", text).unwrap();
        assert_eq!(found[0].labels, None);
        assert_eq!(found[0].target_line, 3);
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::super::{PolicyOptions, Snapshot, Sources};
    use regorus::Value;
    use serde_json::json;

    fn labels(modules: &[(&str, &str)], path: &str, input: &str) -> Vec<serde_json::Value> {
        let mut s = Sources::default();
        for (name, text) in modules {
            s.add_module((*name).into(), (*text).into());
        }
        let opts = PolicyOptions {
            decision_path: path.into(),
            ..Default::default()
        };
        let snapshot = Snapshot::build(&s, &opts, 1).unwrap();
        snapshot.rule_labels(Value::from_json_str(input).unwrap())
    }

    const RBAC: &str = r#"package envoy.authz

default allow := false

# METADATA
# labels:
#   severity: low
#   team: platform
allow if input.role == "admin"

# METADATA
# labels: {rule: reader}
allow if {
    input.role == "reader"
    input.method == "GET"
}

# METADATA
# labels: {rule: never-reached}
unrelated if input.role == "admin"
"#;

    #[test]
    fn only_the_definitions_that_hold_are_recorded() {
        let got = labels(
            &[("p.rego", RBAC)],
            "envoy/authz/allow",
            r#"{"role": "admin"}"#,
        );
        assert_eq!(got, vec![json!({"severity": "low", "team": "platform"})]);
        let got = labels(
            &[("p.rego", RBAC)],
            "envoy/authz/allow",
            r#"{"role": "reader", "method": "GET"}"#,
        );
        assert_eq!(got, vec![json!({"rule": "reader"})]);
        // The default alone decided: no labelled definition held.
        let got = labels(&[("p.rego", RBAC)], "envoy/authz/allow", r#"{"role": "x"}"#);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn rules_the_decision_does_not_depend_on_are_left_out() {
        // `unrelated` holds for an admin but the decision never refers to it.
        let got = labels(
            &[("p.rego", RBAC)],
            "envoy/authz/allow",
            r#"{"role": "admin"}"#,
        );
        assert!(!got.contains(&json!({"rule": "never-reached"})), "{got:?}");
    }

    #[test]
    fn dependencies_partial_rules_and_duplicates() {
        let rego = r#"package envoy.authz

allow if count(deny) == 0

# METADATA
# labels: {check: method}
deny contains "method" if input.method == "DELETE"

# METADATA
# labels: {check: path}
deny contains "path" if startswith(input.path, "/admin")

# METADATA
# labels: {check: path}
deny contains "dots" if contains(input.path, "..")
"#;
        let got = labels(
            &[("p.rego", rego)],
            "envoy/authz/allow",
            r#"{"method": "DELETE", "path": "/admin/.."}"#,
        );
        // Reached through `allow`; the second {check: path} is an exact duplicate.
        assert_eq!(
            got,
            vec![json!({"check": "method"}), json!({"check": "path"})]
        );
        let got = labels(
            &[("p.rego", rego)],
            "envoy/authz/allow",
            r#"{"method": "GET", "path": "/"}"#,
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn scopes_combine_nearest_first() {
        let parent = r#"# METADATA
# scope: subpackages
# labels: {org: acme, team: everyone}
package envoy
"#;
        let child = r#"# METADATA
# labels: {team: platform, tier: pkg}
package envoy.authz

# METADATA
# scope: document
# labels: {tier: doc}
allow if input.a

# METADATA
# labels: {tier: rule}
allow if input.b

# no annotation of its own: document and package labels
allow if input.c
"#;
        let mods = [("a.rego", parent), ("b.rego", child)];
        let got = labels(&mods, "envoy/authz/allow", r#"{"b": true}"#);
        assert_eq!(
            got,
            vec![json!({"org": "acme", "team": "platform", "tier": "rule"})]
        );
        let got = labels(&mods, "envoy/authz/allow", r#"{"c": true}"#);
        assert_eq!(
            got,
            vec![json!({"org": "acme", "team": "platform", "tier": "doc"})]
        );
    }

    #[test]
    fn policies_without_labels_cost_nothing() {
        let mut s = Sources::default();
        s.add_module(
            "p.rego".into(),
            "package envoy.authz\n# METADATA\n# title: no labels\nallow if true\n".into(),
        );
        let snapshot = Snapshot::build(&s, &PolicyOptions::default(), 1).unwrap();
        assert!(!snapshot.has_rule_labels());
    }

    #[test]
    fn a_malformed_block_fails_the_load() {
        let mut s = Sources::default();
        s.add_module(
            "p.rego".into(),
            "package envoy.authz\n# METADATA\n# labels: [x]\nallow if true\n".into(),
        );
        let e = Snapshot::build(&s, &PolicyOptions::default(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.rego:2: rego_parse_error"), "{e}");
    }
}
