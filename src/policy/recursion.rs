//! Recursion is refused when policies load, as OPA's compiler refuses it
//! (`rego_recursion_error`): a rule or function that depends on itself, directly or through
//! others, is an error naming the cycle, for files, bundles and gateway writes alike.
//!
//! regorus would otherwise find out only while evaluating: a self-recursive function overflows
//! the stack (on both engines), and mutually recursive rules overflow the VM's, which aborts the
//! process on the first request that reaches the cycle.
//!
//! The dependency graph is built from the parsed modules the way OPA builds it: every rule (and
//! function) is a node named by its package and the static part of its head
//! (`data.envoy.authz.result.allowed` for `result["allowed"] := ...`, `data.p.r` for
//! `r[k] := ...`). A rule depends on every node its
//! head, bodies and `with` modifiers refer to: a name of a rule of its own package (unless a
//! local variable declared with `some`, `:=`, a function argument or `every` shadows it), a
//! reference through an import, and a `data` reference, which depends on every node it could
//! reach (all rules below a dynamic or partial reference such as `data.p[x]` or `data.p`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use regorus::Value;
use regorus::unstable::{Expr, Literal, Module, Query, Ref, Rule, RuleHead, Span};

/// A node: a rule path, and where it is first defined.
struct Node {
    span: Span,
    edges: BTreeSet<String>,
}

/// The static paths of every rule (package path, then the static part of the head), without
/// the leading `data`.
#[derive(Debug, Clone, Default)]
pub struct RulePaths(BTreeSet<Vec<String>>, BTreeMap<String, BTreeSet<String>>);

impl RulePaths {
    /// Whether `path` names a rule or lies inside a rule's value (`acme/allow/x`).
    pub fn within_rule(&self, path: &[String]) -> bool {
        (1..=path.len()).any(|n| path.get(..n).is_some_and(|p| self.0.contains(p)))
    }

    /// Every rule path, in order (`["acme", "allow"]`).
    pub fn iter(&self) -> impl Iterator<Item = &[String]> {
        self.0.iter().map(Vec::as_slice)
    }

    /// Every rule node (`data.envoy.authz.allow`) a decision at `entry` may depend on: the nodes
    /// at, below or around `entry`, and every node they refer to, transitively.
    pub fn reachable_from(&self, entry: &str) -> BTreeSet<String> {
        let all: Vec<String> = self.1.keys().cloned().collect();
        let mut seen: BTreeSet<String> = reached(&all, entry).collect();
        let mut pending: Vec<String> = seen.iter().cloned().collect();
        while let Some(node) = pending.pop() {
            for next in self.1.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    }

    /// Whether rules lie below `path` (a package, or a document built from ref-head rules).
    pub fn above_rules(&self, path: &[String]) -> bool {
        self.0
            .iter()
            .any(|r| r.len() > path.len() && r.starts_with(path))
    }
}

/// Refuses recursion among `modules`; on success, the rule paths. `Err` is a message with
/// `file:line:col`.
pub fn check(modules: &[Ref<Module>]) -> Result<RulePaths, String> {
    let (rules, paths) = references(modules)?;
    let all: Vec<String> = rules.keys().cloned().collect();
    let nodes: BTreeMap<String, Node> = rules
        .into_iter()
        .map(|(name, (span, refs))| {
            let edges = refs.iter().flat_map(|r| reached(&all, r)).collect();
            (name, Node { span, edges })
        })
        .collect();
    find_cycle(&nodes)?;
    let mut paths = paths;
    paths.1 = nodes.into_iter().map(|(k, n)| (k, n.edges)).collect();
    Ok(paths)
}

/// Every rule (`data.pkg.rule`), where it is first defined and the `data` references its
/// head, bodies and `with` modifiers make (dotted, imports and package-local names resolved);
/// and the rule paths. `Err` is a builtin arity error with `file:line:col`.
#[allow(clippy::type_complexity)]
pub(crate) fn references(
    modules: &[Ref<Module>],
) -> Result<(BTreeMap<String, (Span, BTreeSet<String>)>, RulePaths), String> {
    let mut nodes: BTreeMap<String, (Span, BTreeSet<String>)> = BTreeMap::new();
    let mut paths = RulePaths::default();
    // First pass: every rule's node, per package.
    let mut rules_of: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for module in modules {
        let Some(package) = package_path(module) else {
            continue;
        };
        let package_parts = static_path(&module.package.refr).unwrap_or_default();
        for rule in &module.policy {
            if let Some(path) = head_path(rule) {
                paths
                    .0
                    .insert(package_parts.iter().chain(&path).cloned().collect());
                if let Some(first) = path.first() {
                    rules_of
                        .entry(package.clone())
                        .or_default()
                        .insert(first.clone());
                }
                nodes
                    .entry(format!("{package}.{}", path.join(".")))
                    .or_insert_with(|| (rule.span().clone(), BTreeSet::new()));
            }
        }
    }
    // Second pass: the references of every rule.
    for module in modules {
        let Some(package) = package_path(module) else {
            continue;
        };
        let local_rules = rules_of.get(&package).cloned().unwrap_or_default();
        let mut imports: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for import in &module.imports {
            if let Some(path) = static_path(&import.refr)
                && path.first().is_some_and(|p| p == "data")
            {
                let alias = import
                    .r#as
                    .as_ref()
                    .map(|s| s.text().to_string())
                    .or_else(|| path.last().cloned());
                if let Some(alias) = alias {
                    imports.insert(alias, path);
                }
            }
        }
        for rule in &module.policy {
            let Some(path) = head_path(rule) else {
                continue;
            };
            let mut walker = Walker {
                package: &package,
                local_rules: &local_rules,
                imports: &imports,
                locals: HashSet::new(),
                refs: BTreeSet::new(),
                arity_error: None,
                output_argument: false,
            };
            walker.declare_rule(rule);
            walker.rule(rule);
            if let Some(e) = walker.arity_error {
                return Err(e);
            }
            if let Some((_, refs)) = nodes.get_mut(&format!("{package}.{}", path.join("."))) {
                refs.extend(walker.refs);
            }
        }
    }
    Ok((nodes, paths))
}

/// The rules a `data` reference may reach, for `deps`.
pub(crate) fn reached_rules<'a>(
    all: &'a [String],
    reference: &'a str,
) -> impl Iterator<Item = String> + 'a {
    reached(all, reference)
}

/// The nodes a reference may reach: those at or below it, and the one it lies within.
fn reached<'a>(all: &'a [String], reference: &'a str) -> impl Iterator<Item = String> + 'a {
    all.iter()
        .filter(move |node| {
            *node == reference
                || node
                    .strip_prefix(reference)
                    .is_some_and(|r| r.starts_with('.'))
                || reference
                    .strip_prefix(node.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
        .cloned()
}

fn find_cycle(nodes: &BTreeMap<String, Node>) -> Result<(), String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = nodes.keys().map(|k| (k.as_str(), Mark::New)).collect();
    for start in nodes.keys() {
        if marks.get(start.as_str()) != Some(&Mark::New) {
            continue;
        }
        // Iterative depth-first search: a deep (but acyclic) graph must not overflow the stack.
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, edges(nodes, start))];
        marks.insert(start, Mark::Active);
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) => match marks.get(next).copied() {
                    Some(Mark::Active) => {
                        let mut cycle: Vec<&str> = stack
                            .iter()
                            .map(|(n, _)| *n)
                            .skip_while(|n| *n != next)
                            .collect();
                        cycle.push(next);
                        let first = nodes.get(next).map(|n| &n.span);
                        return Err(recursion_error(first, &cycle));
                    }
                    Some(Mark::New) => {
                        marks.insert(next, Mark::Active);
                        stack.push((next, edges(nodes, next)));
                    }
                    _ => {}
                },
                None => {
                    marks.insert(node, Mark::Done);
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

fn edges<'a>(nodes: &'a BTreeMap<String, Node>, node: &str) -> Vec<&'a str> {
    nodes
        .get(node)
        .map(|n| n.edges.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

fn recursion_error(span: Option<&Span>, cycle: &[&str]) -> String {
    let message = format!(
        "rego_recursion_error: rule {} is recursive: {}",
        cycle.first().copied().unwrap_or_default(),
        cycle.join(" -> ")
    );
    match span {
        Some(s) => format!("{}:{}:{}: {message}", s.source.file(), s.line, s.col),
        None => message,
    }
}

/// The static part of a reference (`a.b["c"]` is `[a, b, c]`), for other policy modules.
pub(crate) fn static_path_of(expr: &Ref<Expr>) -> Option<Vec<String>> {
    static_path(expr)
}

/// The static part of a rule's head, within its package.
pub(crate) fn head_path_of(rule: &Ref<Rule>) -> Option<Vec<String>> {
    head_path(rule)
}

/// Whether a reference is static all the way (`a.b["c"]`, not `a[x]`).
pub(crate) fn ref_is_static(expr: &Ref<Expr>) -> bool {
    path_and_rest(expr).is_some_and(|(_, dynamic)| !dynamic)
}

/// `data.a.b` for `package a.b`.
fn package_path(module: &Ref<Module>) -> Option<String> {
    static_path(&module.package.refr).map(|p| format!("data.{}", p.join(".")))
}

/// The static part of a rule's head (its node within the package).
fn head_path(rule: &Ref<Rule>) -> Option<Vec<String>> {
    let refr = match rule.as_ref() {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. }
            | RuleHead::Set { refr, .. }
            | RuleHead::Func { refr, .. } => refr,
        },
        Rule::Default { refr, .. } => refr,
    };
    static_path(refr).filter(|p| !p.is_empty())
}

/// The components of a reference up to its first dynamic part: `a.b["c"][1][x].d` is
/// `[a, b, c, 1]`; `None` when it does not start with a variable.
fn static_path(expr: &Ref<Expr>) -> Option<Vec<String>> {
    let (mut path, _) = path_and_rest(expr)?;
    path.shrink_to_fit();
    Some(path)
}

/// The static components of a reference, and whether a dynamic part followed them.
fn path_and_rest(expr: &Ref<Expr>) -> Option<(Vec<String>, bool)> {
    match expr.as_ref() {
        Expr::Var { value, .. } => Some((vec![text(value)?], false)),
        Expr::RefDot { refr, field, .. } => {
            let (mut path, dynamic) = path_and_rest(refr)?;
            if !dynamic {
                path.push(text(&field.1)?);
            }
            Some((path, dynamic))
        }
        Expr::RefBrack { refr, index, .. } => {
            let (mut path, dynamic) = path_and_rest(refr)?;
            if dynamic {
                return Some((path, true));
            }
            match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    path.push(text(value)?);
                    Some((path, false))
                }
                Expr::Number { value, .. } => {
                    path.push(value.to_string());
                    Some((path, false))
                }
                _ => Some((path, true)),
            }
        }
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Walks one rule, collecting the references it makes.
struct Walker<'a> {
    package: &'a str,
    local_rules: &'a HashSet<String>,
    imports: &'a BTreeMap<String, Vec<String>>,
    /// Variables the rule declares (`some`, `:=`, arguments, `every`).
    locals: HashSet<String>,
    /// Referenced `data` paths, dotted.
    refs: BTreeSet<String>,
    /// The first builtin called with the wrong number of arguments.
    arity_error: Option<String>,
    /// Whether the call being walked is a whole statement.
    output_argument: bool,
}

/// The number of arguments a builtin takes: Portcullis' extensions first (they replace some of
/// regorus' own), then regorus'. `None` for anything else (`print` takes any number).
fn builtin_arity(name: &str) -> Option<usize> {
    if name == "print" {
        return None;
    }
    super::builtins::all()
        .find(|b| b.name == name)
        .map(|b| usize::from(b.nargs))
        .or_else(|| {
            regorus::unstable::BUILTINS
                .get(name)
                .map(|(_, n)| usize::from(*n))
        })
}

impl Walker<'_> {
    /// Collects the rule's declared variables first, so that they shadow rules everywhere in it.
    fn declare_rule(&mut self, rule: &Ref<Rule>) {
        match rule.as_ref() {
            Rule::Spec { head, bodies, .. } => {
                if let RuleHead::Func { args, .. } = head {
                    for a in args {
                        self.declare_vars(a);
                    }
                }
                for b in bodies {
                    self.declare_query(&b.query);
                }
            }
            Rule::Default { args, value, .. } => {
                for a in args {
                    self.declare_vars(a);
                }
                self.declare_expr(value);
            }
        }
    }

    fn declare_query(&mut self, query: &Ref<Query>) {
        for stmt in &query.stmts {
            match &stmt.literal {
                Literal::SomeVars { vars, .. } => {
                    for v in vars {
                        self.locals.insert(v.text().to_string());
                    }
                }
                Literal::SomeIn { key, value, .. } => {
                    if let Some(k) = key {
                        self.declare_vars(k);
                    }
                    self.declare_vars(value);
                }
                Literal::Every {
                    key, value, query, ..
                } => {
                    if let Some(k) = key {
                        self.locals.insert(k.text().to_string());
                    }
                    self.locals.insert(value.text().to_string());
                    self.declare_query(query);
                }
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => {
                    self.declare_expr(expr);
                }
            }
        }
    }

    /// `x := ...` declares `x`, anywhere in an expression (comprehensions included).
    fn declare_expr(&mut self, expr: &Ref<Expr>) {
        match expr.as_ref() {
            Expr::AssignExpr { op, lhs, rhs, .. } => {
                if matches!(op, regorus::unstable::AssignOp::ColEq) {
                    self.declare_vars(lhs);
                }
                self.declare_expr(rhs);
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.declare_expr(term);
                self.declare_query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.declare_expr(key);
                self.declare_expr(value);
                self.declare_query(query);
            }
            Expr::Call { params: items, .. }
            | Expr::Array { items, .. }
            | Expr::Set { items, .. } => {
                for i in items {
                    self.declare_expr(i);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.declare_expr(k);
                    self.declare_expr(v);
                }
            }
            Expr::UnaryExpr { expr, .. } => self.declare_expr(expr),
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. } => {
                self.declare_expr(lhs);
                self.declare_expr(rhs);
            }
            Expr::Membership { collection, .. } => self.declare_expr(collection),
            _ => {}
        }
    }

    /// Every variable in a pattern (`[a, {"k": b}]`).
    fn declare_vars(&mut self, expr: &Ref<Expr>) {
        match expr.as_ref() {
            Expr::Var { value, .. } => {
                if let Some(name) = text(value) {
                    self.locals.insert(name);
                }
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.declare_vars(i);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, _, v) in fields {
                    self.declare_vars(v);
                }
            }
            _ => {}
        }
    }

    fn rule(&mut self, rule: &Ref<Rule>) {
        match rule.as_ref() {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.head_ref(refr);
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.head_ref(refr);
                        if let Some(k) = key {
                            self.expr(k);
                        }
                    }
                    RuleHead::Func {
                        refr, args, assign, ..
                    } => {
                        self.head_ref(refr);
                        for a in args {
                            self.expr(a);
                        }
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                }
                for b in bodies {
                    if let Some(a) = &b.assign {
                        self.expr(&a.value);
                    }
                    self.query(&b.query);
                }
            }
            Rule::Default { value, .. } => self.expr(value),
        }
    }

    /// Dynamic keys in a head (`result[k] := v`) are expressions.
    fn head_ref(&mut self, refr: &Ref<Expr>) {
        if let Expr::RefBrack { refr, index, .. } = refr.as_ref() {
            self.expr(index);
            self.head_ref(refr);
        } else if let Expr::RefDot { refr, .. } = refr.as_ref() {
            self.head_ref(refr);
        }
    }

    fn query(&mut self, query: &Ref<Query>) {
        for stmt in &query.stmts {
            match &stmt.literal {
                Literal::SomeVars { .. } => {}
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    if let Some(k) = key {
                        self.expr(k);
                    }
                    self.expr(value);
                    self.expr(collection);
                }
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => {
                    // A call that is the whole statement may take its output as one more
                    // argument (`walk(x, [path, value])`).
                    self.output_argument = matches!(expr.as_ref(), Expr::Call { .. });
                    self.expr(expr);
                }
                Literal::Every { domain, query, .. } => {
                    self.expr(domain);
                    self.query(query);
                }
            }
            for w in &stmt.with_mods {
                self.expr(&w.refr);
                self.expr(&w.r#as);
            }
        }
    }

    /// Records a reference (a variable, `data...`, an import alias), then walks its dynamic
    /// parts.
    fn reference(&mut self, expr: &Ref<Expr>) {
        let Some((path, _)) = path_and_rest(expr) else {
            return;
        };
        let Some(root) = path.first() else {
            return;
        };
        let resolved = if root == "data" {
            Some(path.join("."))
        } else if self.locals.contains(root) || root == "input" {
            None
        } else if self.local_rules.contains(root) {
            Some(format!("{}.{}", self.package, path.join(".")))
        } else if let Some(target) = self.imports.get(root) {
            let mut full = target.clone();
            full.extend(path.iter().skip(1).cloned());
            Some(full.join("."))
        } else {
            None
        };
        if let Some(r) = resolved {
            self.refs.insert(r);
        }
    }

    /// A call of a builtin with the wrong number of arguments is a type error at load time, as
    /// in OPA (regorus would answer it at evaluation, differently on each engine). Names that
    /// a rule, an import or a local variable of the module shadows are not builtins here.
    fn arity(&mut self, fcn: &Ref<Expr>, given: usize, output: bool, span: &Span) {
        if self.arity_error.is_some() {
            return;
        }
        let Some((path, false)) = path_and_rest(fcn) else {
            return;
        };
        let Some(root) = path.first() else {
            return;
        };
        if self.locals.contains(root)
            || self.local_rules.contains(root)
            || self.imports.contains_key(root)
            || root == "data"
        {
            return;
        }
        let name = path.join(".");
        let Some(wanted) = builtin_arity(&name) else {
            return;
        };
        if given != wanted && !(output && given == wanted + 1) {
            self.arity_error = Some(format!(
                "{}:{}:{}: rego_type_error: {name}: arity mismatch: have {given} arguments, \
                 want {wanted}",
                span.source.file(),
                span.line,
                span.col
            ));
        }
    }

    fn expr(&mut self, expr: &Ref<Expr>) {
        match expr.as_ref() {
            Expr::Var { .. } => self.reference(expr),
            Expr::RefDot { refr, .. } => {
                self.reference(expr);
                self.dynamic_parts(refr);
            }
            Expr::RefBrack { refr, index, .. } => {
                self.reference(expr);
                self.dynamic_parts(refr);
                self.expr(index);
            }
            Expr::Call {
                fcn, params, span, ..
            } => {
                let output = std::mem::take(&mut self.output_argument);
                self.arity(fcn, params.len(), output, span);
                self.reference(fcn);
                for p in params {
                    self.expr(p);
                }
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.expr(i);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.expr(k);
                    self.expr(v);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term);
                self.query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key);
                self.expr(value);
                self.query(query);
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k);
                }
                self.expr(value);
                self.expr(collection);
            }
            _ => {}
        }
    }

    /// The index expressions inside a reference chain (`a[x].b[f(y)]`).
    fn dynamic_parts(&mut self, expr: &Ref<Expr>) {
        match expr.as_ref() {
            Expr::RefDot { refr, .. } => self.dynamic_parts(refr),
            Expr::RefBrack { refr, index, .. } => {
                self.dynamic_parts(refr);
                self.expr(index);
            }
            Expr::Var { .. } => {}
            _ => self.expr(expr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(modules: &[&str]) -> Result<RulePaths, String> {
        let mut engine = regorus::Engine::new();
        for (i, m) in modules.iter().enumerate() {
            engine
                .add_policy(format!("m{i}.rego"), m.to_string())
                .unwrap();
        }
        check(engine.get_modules())
    }

    #[test]
    fn cycles_are_found_and_named() {
        for (modules, cycle) in [
            (
                &["package p\nf(x) := y if { y := f(x) }\n"][..],
                "data.p.f -> data.p.f",
            ),
            (
                &["package p\nallow if { input.x; not deny }\ndeny if allow\n"],
                "data.p.",
            ),
            (
                &[
                    "package a\nimport data.b\nx if b.y\n",
                    "package b\ny if data.a.x\n",
                ],
                "data.a.x",
            ),
            (
                &["package p\nr[k] := 1 if { some k in data.p.r }\n"],
                "data.p.r",
            ),
            (
                &["package p\nx if { count(data.p) > 0 }\n"],
                "data.p.x -> data.p.x",
            ),
            (
                &["package p\nf(x) := 1 if g(x)\ng(x) := 1 if f(x)\n"],
                "data.p.f",
            ),
        ] {
            let err = check_text(modules).unwrap_err();
            assert!(
                err.contains("rego_recursion_error") && err.contains(cycle),
                "{err}"
            );
            assert!(err.starts_with("m"), "file:line:col first: {err}");
        }
    }

    #[test]
    fn ordinary_policies_pass() {
        for modules in [
            &[
                "package envoy.authz\ndefault allow := false\nallow if { some r in data.roles[input.user]; r == \"admin\" }\nresult[\"allowed\"] := allow\nresult[\"headers\"] := {\"x\": \"y\"}\n",
            ][..],
            // A local variable named like a rule shadows it.
            &[
                "package p\nallow if { some deny in input.l; deny }\ndeny if allow2\nallow2 := true\n",
            ],
            &["package p\nf(allow) := allow\nallow := f(1)\n"],
            // Functions calling others, and a rule using several packages.
            &[
                "package p\nf(x) := g(x) + 1\ng(x) := x * 2\nv := f(3)\n",
                "package q\nw := data.p.v\n",
            ],
            // Builtins named like nothing in the package.
            &["package p\nn := count([1, 2])\n"],
            // Ref heads under one name refer to each other without a cycle.
            &["package t\na.b.c = 1\na.b.d = a.b.e\na.b.e = a.b.c\n"],
            &["package t\ndefault a = [5 | some a; a = 5]\n"],
        ] {
            check_text(modules).unwrap();
        }
    }

    #[test]
    fn rule_paths_tell_decisions_from_data() {
        let paths = check_text(&["package acme
allow := true
result[\"allowed\"] := true
"])
        .unwrap();
        let p = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
        assert!(paths.within_rule(&p("acme/allow")));
        assert!(paths.within_rule(&p("acme/result/allowed")));
        assert!(paths.within_rule(&p("acme/allow/x")));
        assert!(!paths.within_rule(&p("acme")));
        assert!(!paths.within_rule(&p("acme_secret")));
        assert!(!paths.within_rule(&p("acme/result")));
        assert!(paths.above_rules(&p("acme/result")) && paths.above_rules(&p("acme")));
        assert!(!paths.above_rules(&p("acme_secret")) && !paths.above_rules(&p("acme/allow")));
    }

    #[test]
    fn builtins_called_with_the_wrong_arity_are_type_errors() {
        for (rego, name) in [
            ("package p\nx := bits.and(1, 1, 1)\n", "bits.and"),
            ("package p\nx := numbers.range(1)\n", "numbers.range"),
            ("package p\nx if { abs(1, 2, 3) }\n", "abs"),
            ("package p\nx := io.jwt.decode()\n", "io.jwt.decode"),
        ] {
            let err = check_text(&[rego]).unwrap_err();
            assert!(
                err.contains("m0.rego:")
                    && err.contains(&format!("rego_type_error: {name}: arity")),
                "{rego}: {err}"
            );
        }
        // A whole-statement call may bind its output as one more argument; local rules,
        // functions, imports and variables named like builtins are not builtins.
        for rego in [
            "package p\nx if { walk(input, [p, v]); v == 1 }\n",
            "package p\nx if { count(input.l, 2) }\n",
            "package p\nabs(a, b) := a + b\nx := abs(1, 2)\n",
            "package p\nimport data.lib as bits\nx := bits.and(1, 2, 3)\n",
            "package p\nx := print(1, 2, 3)\n",
        ] {
            check_text(&[rego]).unwrap_or_else(|e| panic!("{rego}: {e}"));
        }
    }
}
