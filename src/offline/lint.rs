//! `check --strict`: the checks of OPA's strict mode that can be decided soundly from regorus'
//! parsed modules.
//!
//! | check | message |
//! |---|---|
//! | an import of `data` or `input` nothing in the module uses | `import data.x unused` |
//! | two imports under the same name | `import must not shadow import data.x` |
//! | a local `x := ...` nothing else in the rule mentions | `assigned var x unused` |
//! | a function argument its head and bodies never mention | `unused argument x. (hint: use _ (wildcard variable) instead)` |
//! | a local variable or argument named `input` or `data` | `variables must not shadow input (use a different variable name)` |
//! | a call of a deprecated builtin (`any`, `all`, `re_match`, `set_diff`, `net.cidr_overlap`, `cast_*`) | `deprecated built-in function calls in expression: any` |
//!
//! A name counts as used when it appears anywhere in the rule (or, for imports, the module)
//! other than where it is declared, whatever scope the use is in: a check may miss an unused
//! variable that another scope of the same rule reuses the name of, but never reports a
//! variable that is used.

use std::collections::{BTreeMap, HashMap};

use regorus::unstable::{AssignOp, Expr, Literal, Module, Query, Ref, Rule, RuleHead, Span};

use super::diagnostic::{Location, RegoError};

/// OPA's deprecated builtins.
const DEPRECATED: &[&str] = &[
    "any",
    "all",
    "re_match",
    "set_diff",
    "net.cidr_overlap",
    "cast_array",
    "cast_set",
    "cast_string",
    "cast_boolean",
    "cast_null",
    "cast_object",
];

fn location(span: &Span) -> Location {
    // The character column, a tab counting one (regorus' `col` counts four).
    let text = span.source.contents();
    let start = usize::try_from(span.start).unwrap_or(usize::MAX);
    let col = text
        .get(..start)
        .map(|before| {
            let line = before.rsplit('\n').next().unwrap_or_default();
            u32::try_from(line.chars().count() + 1).unwrap_or(span.col)
        })
        .unwrap_or(span.col);
    Location {
        file: span.source.file().to_string(),
        row: span.line,
        col,
    }
}

fn compile_error(span: &Span, message: String) -> RegoError {
    RegoError::new("rego_compile_error", message, Some(location(span)))
}

/// How a variable occurs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Occurrence {
    Use,
    /// The left side of `:=`.
    Assigned,
    /// `some`, `every`, a function argument.
    Declared,
}

/// Every variable occurrence and builtin call of one rule.
#[derive(Default)]
struct Collector {
    vars: Vec<(String, Span, Occurrence)>,
    calls: Vec<(String, Span)>,
}

/// The dotted name of a call target (`net.cidr_overlap`), when it is a plain reference.
fn call_name(expr: &Ref<Expr>) -> Option<String> {
    match expr.as_ref() {
        Expr::Var { value, .. } => value.as_string().ok().map(|s| s.to_string()),
        Expr::RefDot { refr, field, .. } => {
            let head = call_name(refr)?;
            let field = field.1.as_string().ok()?;
            Some(format!("{head}.{field}"))
        }
        _ => None,
    }
}

impl Collector {
    fn var(&mut self, expr: &Ref<Expr>, how: Occurrence) {
        if let Expr::Var { value, span, .. } = expr.as_ref()
            && let Ok(name) = value.as_string()
        {
            self.vars.push((name.to_string(), span.clone(), how));
        }
    }

    fn span_var(&mut self, span: &Span, how: Occurrence) {
        self.vars.push((span.text().to_string(), span.clone(), how));
    }

    /// A pattern on the left of `:=` or an argument: its variables are declared.
    fn pattern(&mut self, expr: &Ref<Expr>, how: Occurrence) {
        match expr.as_ref() {
            Expr::Var { .. } => self.var(expr, how),
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.pattern(i, how);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.expr(k);
                    self.pattern(v, how);
                }
            }
            _ => self.expr(expr),
        }
    }

    fn expr(&mut self, expr: &Ref<Expr>) {
        match expr.as_ref() {
            Expr::Var { .. } => self.var(expr, Occurrence::Use),
            Expr::RefDot { refr, .. } => self.expr(refr),
            Expr::RefBrack { refr, index, .. } => {
                self.expr(refr);
                self.expr(index);
            }
            Expr::Call {
                fcn, params, span, ..
            } => {
                if let Some(name) = call_name(fcn) {
                    self.calls.push((name, span.clone()));
                }
                self.expr(fcn);
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
            Expr::AssignExpr { op, lhs, rhs, .. } => {
                if matches!(op, AssignOp::ColEq) {
                    self.pattern(lhs, Occurrence::Assigned);
                } else {
                    self.expr(lhs);
                }
                self.expr(rhs);
            }
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. } => {
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

    fn query(&mut self, query: &Ref<Query>) {
        for stmt in &query.stmts {
            match &stmt.literal {
                Literal::SomeVars { vars, .. } => {
                    for v in vars {
                        self.span_var(v, Occurrence::Declared);
                    }
                }
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    if let Some(k) = key {
                        self.pattern(k, Occurrence::Declared);
                    }
                    self.pattern(value, Occurrence::Declared);
                    self.expr(collection);
                }
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => self.expr(expr),
                Literal::Every {
                    key,
                    value,
                    domain,
                    query,
                    ..
                } => {
                    if let Some(k) = key {
                        self.span_var(k, Occurrence::Declared);
                    }
                    self.span_var(value, Occurrence::Declared);
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

    fn rule(&mut self, rule: &Ref<Rule>) {
        match rule.as_ref() {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.expr(refr);
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.expr(refr);
                        if let Some(k) = key {
                            self.expr(k);
                        }
                    }
                    RuleHead::Func {
                        refr, args, assign, ..
                    } => {
                        self.expr(refr);
                        for a in args {
                            self.pattern(a, Occurrence::Declared);
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
            Rule::Default {
                refr, args, value, ..
            } => {
                self.expr(refr);
                for a in args {
                    self.pattern(a, Occurrence::Declared);
                }
                self.expr(value);
            }
        }
    }

    fn uses(&self) -> HashMap<&str, usize> {
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for (name, _, how) in &self.vars {
            if *how == Occurrence::Use {
                *uses.entry(name.as_str()).or_default() += 1;
            }
        }
        uses
    }
}

/// The function arguments of a rule that are plain variables.
fn argument_names(rule: &Ref<Rule>) -> Vec<(String, Span)> {
    let args = match rule.as_ref() {
        Rule::Spec {
            head: RuleHead::Func { args, .. },
            ..
        } => args,
        _ => return Vec::new(),
    };
    args.iter()
        .filter_map(|a| match a.as_ref() {
            Expr::Var { value, span, .. } => value
                .as_string()
                .ok()
                .map(|s| (s.to_string(), span.clone())),
            _ => None,
        })
        .collect()
}

/// Names a module defines at its top level (rules, functions): a call of one is not a builtin.
fn rule_names(module: &Module) -> Vec<String> {
    module
        .policy
        .iter()
        .filter_map(|r| {
            let refr = match r.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => refr,
                },
                Rule::Default { refr, .. } => refr,
            };
            call_name(refr)
        })
        .collect()
}

/// The strict-mode errors of `modules`, in file order.
pub fn strict(modules: &[Ref<Module>]) -> Vec<RegoError> {
    let mut errors = Vec::new();
    for module in modules {
        module_errors(module, &mut errors);
    }
    errors
}

fn module_errors(module: &Module, errors: &mut Vec<RegoError>) {
    let locals = rule_names(module);
    let mut module_uses: HashMap<String, usize> = HashMap::new();
    for rule in &module.policy {
        let mut c = Collector::default();
        c.rule(rule);
        for (name, count) in c.uses() {
            *module_uses.entry(name.to_string()).or_default() += count;
        }
        // Unused local assignments.
        let uses = c.uses();
        let arguments = argument_names(rule);
        for (name, span, how) in &c.vars {
            if name == "_" || name.starts_with('$') {
                continue;
            }
            if *how != Occurrence::Use && (name == "input" || name == "data") {
                errors.push(compile_error(
                    span,
                    format!("variables must not shadow {name} (use a different variable name)"),
                ));
                continue;
            }
            if *how == Occurrence::Assigned && !uses.contains_key(name.as_str()) {
                errors.push(compile_error(span, format!("assigned var {name} unused")));
            }
        }
        for (name, span) in &arguments {
            if name != "_" && name != "input" && name != "data" && !uses.contains_key(name.as_str())
            {
                errors.push(compile_error(
                    span,
                    format!("unused argument {name}. (hint: use _ (wildcard variable) instead)"),
                ));
            }
        }
        // Deprecated builtins, unless the module defines a function of that name.
        for (name, span) in &c.calls {
            if DEPRECATED.contains(&name.as_str()) && !locals.contains(name) {
                errors.push(compile_error(
                    span,
                    format!("deprecated built-in function calls in expression: {name}"),
                ));
            }
        }
    }
    // Imports: duplicates and unused ones.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for import in &module.imports {
        let path = import.refr.span().text().to_string();
        let root = path.split(['.', '[']).next().unwrap_or_default();
        if root != "data" && root != "input" {
            continue;
        }
        let alias = match &import.r#as {
            Some(a) => a.text().to_string(),
            None => match call_name(&import.refr) {
                Some(name) => name.rsplit('.').next().unwrap_or_default().to_string(),
                None => continue,
            },
        };
        let shown = match &import.r#as {
            Some(a) => format!("{path} as {}", a.text()),
            None => path.clone(),
        };
        if let Some(previous) = seen.get(&alias) {
            errors.push(compile_error(
                &import.span,
                format!("import must not shadow import {previous}"),
            ));
            continue;
        }
        seen.insert(alias.clone(), shown.clone());
        if alias != root && !module_uses.contains_key(&alias) {
            errors.push(compile_error(
                &import.span,
                format!("import {shown} unused"),
            ));
        }
    }
    errors.sort_by(|a, b| {
        let key = |e: &RegoError| e.location.as_ref().map(|l| (l.row, l.col));
        key(a).cmp(&key(b))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(rego: &str) -> Vec<String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("p.rego".into(), rego.into())
            .expect("parses");
        strict(engine.get_modules())
            .into_iter()
            .map(|e| e.text())
            .collect()
    }

    #[test]
    fn each_strict_check_reports_with_its_location() {
        let errors = lint(
            "package p\n\
             import data.lib\n\
             import data.other.lib\n\
             import data.used\n\
             f(x, y) := y\n\
             allow if {\n  a := 1\n  b := used.v\n  b > 0\n}\n\
             g(input) := 1\n\
             old if any([true])\n",
        );
        let want = [
            "p.rego:2:1: rego_compile_error: import data.lib unused",
            "p.rego:3:1: rego_compile_error: import must not shadow import data.lib",
            "p.rego:5:3: rego_compile_error: unused argument x. (hint: use _ (wildcard variable) instead)",
            "p.rego:7:3: rego_compile_error: assigned var a unused",
            "p.rego:11:3: rego_compile_error: variables must not shadow input (use a different variable name)",
            "p.rego:12:8: rego_compile_error: deprecated built-in function calls in expression: any",
        ];
        assert_eq!(errors, want, "{errors:#?}");
    }

    #[test]
    fn used_names_are_not_reported() {
        for rego in [
            "package p\nimport data.lib\nallow if lib.x\n",
            "package p\nimport data.lib as l\nallow if l.x\n",
            "package p\nimport rego.v1\nallow if true\n",
            "package p\nallow if { a := input.x; a > 1 }\n",
            "package p\nr := y if { y := 2 }\n",
            "package p\nf(x) := x + 1\n",
            "package p\nf(_) := 1\n",
            "package p\nxs := [v | some v in input.l; w := v * 2; w > 1]\n",
            "package p\nallow if { [a, b] := [1, 2]; a == b }\n",
            "package p\nany(x) := x\nv := any(1)\n",
            "package p\nallow if { x := 1; x } else := false if { y := 2; y }\n",
            "package p\nallow if { x := 1; true with input.a as x }\n",
        ] {
            assert_eq!(lint(rego), Vec::<String>::new(), "{rego}");
        }
    }
}
