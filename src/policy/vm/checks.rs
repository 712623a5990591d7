//! Static checks on a compiled RVM program: constructs regorus 0.14.1's VM would answer
//! wrongly are refused, and missing undefined-value guards are inserted.

use regorus::CompiledPolicy;
use regorus::rvm::Instruction;
use regorus::rvm::instructions::{GuardMode, LoopMode};
use regorus::rvm::program::{Program, RuleType};
use regorus::unstable::{Expr, ExprRef, Literal, Query, Rule, RuleHead};
/// Why the VM could answer where the interpreter (and OPA) reports a conflict, or crash.
///
/// The RVM makes a complete rule or function whose definitions disagree undefined, and lets the
/// last output win when a body yields several values (in a loop, or `walk`) or a partial object
/// or an object comprehension gets a key twice, where OPA raises an error. The check is
/// conservative: it refuses a rule that *could* conflict (several definitions with values not
/// known equal, a non-constant value set in a loop, any object comprehension). A rule called as
/// a function (a rule named like the builtin it calls) recurses until the stack overflows.
pub(super) fn conflict_risk(program: &Program) -> Option<String> {
    // A function is no document: the interpreter answers undefined, the VM would run its body
    // with unbound arguments.
    if let Some(f) = program
        .rule_infos
        .iter()
        .find(|r| r.function_info.is_some() && program.entry_points.contains_key(&r.name))
    {
        return Some(format!("{} is a function", f.name));
    }
    if program.builtin_info_table.iter().any(|b| b.name == "walk") {
        return Some("walk() may yield several outputs".into());
    }
    // An object comprehension that yields one key twice keeps the last value on the VM.
    let object_yield = |i: &Instruction| {
        matches!(
            i,
            Instruction::ComprehensionYield {
                key_reg: Some(_),
                ..
            }
        )
    };
    if program.instructions.iter().any(object_yield) {
        return Some("an object comprehension may yield a key twice".into());
    }
    for params in &program.instruction_data.function_call_params {
        let callee = program.rule_infos.get(usize::from(params.func_rule_index));
        if let Some(rule) = callee.filter(|r| r.function_info.is_none()) {
            return Some(format!("{} is called as a function", rule.name));
        }
    }
    for rule in &program.rule_infos {
        // A loop in any body of an `else` chain makes the VM skip the remaining branches.
        if rule.else_bodies.iter().flatten().any(|&e| e)
            && rule
                .definitions
                .iter()
                .flatten()
                .any(|&pc| body_loops(program, pc as usize))
        {
            return Some(format!("{} has an else chain with a loop", rule.name));
        }
        let several = match rule.rule_type {
            RuleType::Complete => rule.definitions.len() > 1 && !rule.early_exit_on_first_success,
            RuleType::PartialObject => rule.definitions.len() > 1,
            RuleType::PartialSet => continue,
        };
        let mut bodies = rule.definitions.iter().flatten();
        if several || bodies.any(|&pc| yields_in_loop(program, pc as usize, rule.result_reg)) {
            return Some(format!("{} may produce conflicting outputs", rule.name));
        }
    }
    None
}

/// Whether the rule body starting at `start` iterates (`some x in`, `x[_]`, ...).
fn body_loops(program: &Program, start: usize) -> bool {
    program
        .instructions
        .get(start..)
        .unwrap_or_default()
        .iter()
        .skip(1)
        .take_while(|i| !matches!(i, Instruction::RuleReturn {}))
        .any(|i| matches!(i, Instruction::LoopStart { .. }))
}

/// Whether the rule body starting at `start` sets a non-constant result inside a loop.
fn yields_in_loop(program: &Program, start: usize, result: u8) -> bool {
    let body = program.instructions.get(start..).unwrap_or_default();
    let (mut loop_end, mut previous) = (0, None);
    for (pc, instruction) in (start..).zip(body).skip(1) {
        match *instruction {
            Instruction::RuleReturn {} => break,
            Instruction::LoopStart { params_index } => {
                if let Some(p) = program.instruction_data.get_loop_params(params_index)
                    && p.mode != LoopMode::Every
                {
                    loop_end = loop_end.max(usize::from(p.loop_end));
                }
            }
            Instruction::Move { dest, src } if dest == result && pc < loop_end => {
                let constant = matches!(previous,
                    Some(Instruction::Load { dest, .. } | Instruction::LoadBool { dest, .. })
                        if dest == src);
                if !constant {
                    return true;
                }
            }
            Instruction::ObjectSet { obj, .. } if obj == result && pc < loop_end => return true,
            _ => {}
        }
        previous = Some(*instruction);
    }
    false
}

/// What the RVM compiler gets wrong that shows only in the syntax tree: it ignores defaults of
/// functions, and compiles `key, value in coll` as `value in coll`.
pub(super) fn syntax_risk(compiled: &CompiledPolicy, program: &Program) -> Option<String> {
    for module in compiled.get_modules() {
        // An import of an escaped name (`data.graph["a.b"]`) resolves to nothing on the VM.
        if let Some(import) = module.imports.iter().find(|i| bracketed(&i.refr)) {
            return Some(format!("import {}", import.refr.span().text()));
        }
        let package = module.package.refr.span().text();
        for rule in &module.policy {
            let (refr, keyed_rule) = match rule.as_ref() {
                Rule::Default {
                    refr, args, value, ..
                } => {
                    let name = format!("data.{package}.{}", refr.span().text());
                    if !args.is_empty() && program.rule_infos.iter().any(|r| r.name == name) {
                        return Some(format!("default function {name}"));
                    }
                    // The VM leaves a default whose value is not a constant undefined; the
                    // interpreter evaluates a comprehension and refuses the rest, as OPA does.
                    if !constant(value) {
                        return Some(format!(
                            "default {name} with a value that is not a constant"
                        ));
                    }
                    continue;
                }
                Rule::Spec { head, bodies, .. } => {
                    let (refr, value) = match head {
                        RuleHead::Compr { refr, assign, .. }
                        | RuleHead::Func { refr, assign, .. } => {
                            (refr, assign.as_ref().map(|a| &a.value))
                        }
                        RuleHead::Set { refr, key, .. } => (refr, key.as_ref()),
                    };
                    let body_keyed = bodies.iter().any(|b| {
                        query_keyed(&b.query) || b.assign.as_ref().is_some_and(|a| keyed(&a.value))
                    });
                    (refr, keyed(refr) || value.is_some_and(keyed) || body_keyed)
                }
            };
            if keyed_rule {
                return Some(format!("key-value membership in {}", refr.span().text()));
            }
        }
    }
    None
}

/// Whether a reference has a `[...]` part.
fn bracketed(expr: &ExprRef) -> bool {
    match expr.as_ref() {
        Expr::RefBrack { .. } => true,
        Expr::RefDot { refr, .. } => bracketed(refr),
        _ => false,
    }
}

/// Whether `expr` is a constant: a scalar, or an array, set or object of constants.
fn constant(expr: &ExprRef) -> bool {
    match expr.as_ref() {
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. } => true,
        Expr::Array { items, .. } | Expr::Set { items, .. } => items.iter().all(constant),
        Expr::Object { fields, .. } => fields.iter().all(|(_, k, v)| constant(k) && constant(v)),
        _ => false,
    }
}

/// Whether `expr` contains a `key, value in collection` membership.
fn keyed(expr: &ExprRef) -> bool {
    let any = |items: &[ExprRef]| items.iter().any(keyed);
    match expr.as_ref() {
        Expr::Membership { key: Some(_), .. } => true,
        Expr::Membership {
            value: lhs,
            collection: rhs,
            ..
        }
        | Expr::RefBrack {
            refr: lhs,
            index: rhs,
            ..
        }
        | Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => keyed(lhs) || keyed(rhs),
        Expr::Array { items, .. } | Expr::Set { items, .. } => any(items),
        Expr::Object { fields, .. } => fields.iter().any(|(_, k, v)| keyed(k) || keyed(v)),
        Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
            keyed(term) || query_keyed(query)
        }
        Expr::ObjectCompr {
            key, value, query, ..
        } => keyed(key) || keyed(value) || query_keyed(query),
        Expr::Call { fcn, params, .. } => keyed(fcn) || any(params),
        Expr::UnaryExpr { expr, .. } | Expr::RefDot { refr: expr, .. } => keyed(expr),
        _ => false,
    }
}

fn query_keyed(query: &Query) -> bool {
    query.stmts.iter().any(|stmt| match &stmt.literal {
        Literal::SomeVars { .. } => false,
        Literal::SomeIn {
            key,
            value,
            collection,
            ..
        } => key.as_ref().is_some_and(keyed) || keyed(value) || keyed(collection),
        Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => keyed(expr),
        Literal::Every { domain, query, .. } => keyed(domain) || query_keyed(query),
    })
}

/// What the RVM gets wrong in suspendable mode only, which extension builtins need: a lookup
/// through rule-defined documents (`data.pkg[x]` over a package of rules) calls those rules
/// the run-to-completion way and comes back undefined, and of a rule's independent bodies
/// (`p[k] { a } { b }`) only the first runs.
pub(super) fn suspendable_risk(program: &Program) -> Option<String> {
    let lookup = |i: &Instruction| matches!(i, Instruction::VirtualDataDocumentLookup { .. });
    if program.instructions.iter().any(lookup) {
        return Some("a lookup through rule-defined documents, with extension builtins".into());
    }
    for rule in &program.rule_infos {
        let is_else = |d: usize, b: usize| rule.else_bodies.get(d).and_then(|e| e.get(b));
        let mut definitions = rule.definitions.iter().enumerate();
        if definitions.any(|(d, bodies)| (1..bodies.len()).any(|b| is_else(d, b) != Some(&true))) {
            return Some(format!(
                "{} has independent bodies, with extension builtins",
                rule.name
            ));
        }
    }
    None
}

/// Adds the undefined checks the RVM compiler leaves out.
///
/// In Rego an undefined expression fails: `x := input.missing` ends the body, a comprehension
/// skips a member that is undefined, a rule body whose value is undefined produces nothing (so
/// an `else` applies). The RVM compiler emits no check for these. This pass inserts a `Guard
/// NotUndefined` after each variable-binding or rule-value `Move` that has none, and before
/// each `ComprehensionYield`, then moves every program counter (jump targets, loop and
/// comprehension bounds, rule bodies, entry points) past the inserted instructions.
pub(super) fn add_undefined_guards(program: &mut Program) -> Result<(), String> {
    let old = std::mem::take(&mut program.instructions);
    let old_spans = std::mem::take(&mut program.instruction_spans);
    let guard = |register| Instruction::Guard {
        register,
        mode: GuardMode::NotUndefined,
    };
    // starts[pc]: where old instruction `pc`, with the guards before it, now starts.
    let mut starts = Vec::with_capacity(old.len() + 1);
    for (pc, &instruction) in old.iter().enumerate() {
        starts.push(program.instructions.len());
        let (before, after) = guards_for(&old, pc);
        let group = before.into_iter().flatten().map(guard);
        let group = group.chain([instruction]).chain(after.map(guard));
        for instruction in group {
            program.instructions.push(instruction);
            program
                .instruction_spans
                .push(old_spans.get(pc).cloned().flatten());
        }
    }
    starts.push(program.instructions.len());
    program.validate_limits()?;
    let at = |pc: usize| {
        starts
            .get(pc)
            .copied()
            .ok_or(format!("pc {pc} out of range"))
    };
    let at16 = |pc: u16| u16::try_from(at(pc.into())?).map_err(|e| e.to_string());
    let at32 = |pc: u32| u32::try_from(at(pc as usize)?).map_err(|e| e.to_string());
    // `end_pc` names the last instruction skipped: skip its guards too.
    let last16 = |pc: u16| {
        let end = at(usize::from(pc) + 1)?.saturating_sub(1);
        u16::try_from(end).map_err(|e| e.to_string())
    };
    for instruction in &mut program.instructions {
        match instruction {
            Instruction::LoopNext {
                body_start,
                loop_end,
            } => {
                *body_start = at16(*body_start)?;
                *loop_end = at16(*loop_end)?;
            }
            Instruction::AnyOfNext { end_pc, .. }
            | Instruction::AllOfNext { end_pc, .. }
            | Instruction::LogicalBlockStart { end_pc, .. } => *end_pc = last16(*end_pc)?,
            _ => {}
        }
    }
    for p in &mut program.instruction_data.loop_params {
        (p.body_start, p.loop_end) = (at16(p.body_start)?, at16(p.loop_end)?);
    }
    for p in &mut program.instruction_data.comprehension_begin_params {
        (p.body_start, p.comprehension_end) = (at16(p.body_start)?, at16(p.comprehension_end)?);
    }
    for pc in program.entry_points.values_mut() {
        *pc = at(*pc)?;
    }
    program.main_entry_point = at32(program.main_entry_point)?;
    for rule in &mut program.rule_infos {
        let definitions = rule.definitions.iter();
        let definitions = definitions.map(|bodies| bodies.iter().map(|&pc| at32(pc)).collect());
        rule.definitions = regorus::Rc::new(definitions.collect::<Result<_, String>>()?);
        for block in rule.destructuring_blocks.iter_mut().flatten() {
            *block = at32(*block)?;
        }
    }
    Ok(())
}

/// The registers to check for undefined before and after instruction `pc`.
fn guards_for(code: &[Instruction], pc: usize) -> ([Option<u8>; 2], Option<u8>) {
    let previous = pc.checked_sub(1).and_then(|p| code.get(p));
    match code.get(pc) {
        Some(&Instruction::ComprehensionYield { value_reg, key_reg }) => {
            ([Some(value_reg), key_reg], None)
        }
        Some(&Instruction::Move { dest, src }) => {
            let checked = match (previous, code.get(pc + 1)) {
                // Already checked: loop variables, function parameters, `=` bindings.
                (_, Some(&Instruction::Guard { register, mode })) if register == dest => {
                    mode != GuardMode::Not
                }
                // A host-await call copying its arguments (undefined ones skip the call).
                (_, Some(&Instruction::Not { operand, .. })) if operand == src => true,
                // An output argument compared inside `not` (the comparison may be undefined).
                (Some(&Instruction::Eq { dest: eq, left, .. }), _) => eq == src && left == dest,
                _ => false,
            };
            ([None, None], (!checked).then_some(dest))
        }
        _ => ([None, None], None),
    }
}
