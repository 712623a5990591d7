//! regorus builtins whose result (or running time) can be far larger than their arguments,
//! checked *before* they allocate, then run by regorus' own implementation.
//!
//! regorus checks its memory and time limits between evaluation steps, not inside one builtin
//! call, and some builtins size their result from their arguments: `numbers.range(1, 4e9)`
//! asks for 96 GB at once, which aborts the process (and with Envoy's `failure_mode_allow`,
//! every request then passes). Each builtin here has a bound on what it may produce; a call
//! beyond it fails the whole evaluation with a limit error, in every error mode (a limit must
//! never turn `not f(x)` true), which the Check path answers as an evaluation error.
//!
//! | builtin | bound |
//! |---|---|
//! | `numbers.range`, `numbers.range_step`, `array.concat`, `split`, `indexof_n`, `net.cidr_expand` | [`MAX_ELEMENTS`] elements |
//! | `regex.split`, `regex.find_n` | a subject of at most [`MAX_ELEMENTS`] bytes |
//! | `concat`, `replace`, `strings.replace_n`, `json.marshal_with_options` | [`MAX_STRING_BYTES`] bytes |
//! | `sprintf` | widths and precisions of at most [`MAX_FORMAT_WIDTH`] |
//! | `bits.lsh` | a shift of at most [`MAX_SHIFT`] bits |
//!
//! The checks cost a pass over the arguments at most (counting matches, summing lengths), never
//! the allocation they prevent.

use std::cell::RefCell;

use regorus::Value;
use regorus::unstable::{BUILTINS, Expr, Literal, Parser, Ref, Source, Span};

use super::{BuiltinError, BuiltinResult};

/// The most elements a guarded builtin may produce.
pub const MAX_ELEMENTS: usize = 1_000_000;
/// The longest string a guarded builtin may produce.
pub const MAX_STRING_BYTES: usize = 16 * 1024 * 1024;
/// The widest `sprintf` field (width or precision).
pub const MAX_FORMAT_WIDTH: usize = 100_000;
/// The largest `bits.lsh` shift.
pub const MAX_SHIFT: u64 = 65_536;

/// The guarded builtins: name, arity, check.
pub(super) const GUARDED: &[(&str, u8, Check)] = &[
    ("numbers.range", 2, range),
    ("numbers.range_step", 3, range_step),
    ("array.concat", 2, array_concat),
    ("split", 2, split),
    ("indexof_n", 2, indexof_n),
    ("net.cidr_expand", 1, cidr_expand),
    ("regex.split", 2, regex_subject),
    ("regex.find_n", 3, regex_subject),
    ("concat", 2, concat),
    ("replace", 3, replace),
    ("strings.replace_n", 2, replace_n),
    ("json.marshal_with_options", 2, marshal_with_options),
    ("sprintf", 2, sprintf),
    ("bits.lsh", 2, lsh),
];

type Check = fn(&[Value]) -> BuiltinResult<()>;

fn limit(name: &str, what: String) -> BuiltinError {
    BuiltinError::limit(format!("{name}: {what}"))
}

fn elements(name: &str, n: u128) -> BuiltinResult<()> {
    if n > MAX_ELEMENTS as u128 {
        return Err(limit(
            name,
            format!("the result would hold {n} elements (at most {MAX_ELEMENTS})"),
        ));
    }
    Ok(())
}

fn bytes(name: &str, n: u128) -> BuiltinResult<()> {
    if n > MAX_STRING_BYTES as u128 {
        return Err(limit(
            name,
            format!("the result would be {n} bytes long (at most {MAX_STRING_BYTES})"),
        ));
    }
    Ok(())
}

fn int(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) if n.is_integer() => n.as_i128(),
        _ => None,
    }
}

fn string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn range(args: &[Value]) -> BuiltinResult<()> {
    if let (Some(a), Some(b)) = (int(&args[0]), int(&args[1])) {
        elements("numbers.range", a.abs_diff(b).saturating_add(1))?;
    }
    Ok(())
}

fn range_step(args: &[Value]) -> BuiltinResult<()> {
    if let (Some(a), Some(b), Some(step)) = (int(&args[0]), int(&args[1]), int(&args[2]))
        && step > 0
    {
        elements(
            "numbers.range_step",
            (a.abs_diff(b) / step.unsigned_abs()).saturating_add(1),
        )?;
    }
    Ok(())
}

fn len_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::Set(s) => s.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    }
}

fn array_concat(args: &[Value]) -> BuiltinResult<()> {
    elements(
        "array.concat",
        len_of(&args[0]) as u128 + len_of(&args[1]) as u128,
    )
}

/// How many times `pat` occurs in `s` (non-overlapping), as `str::matches` counts; an empty
/// pattern occurs between every two characters and at both ends.
fn occurrences(s: &str, pat: &str) -> usize {
    if pat.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(pat).count()
    }
}

fn split(args: &[Value]) -> BuiltinResult<()> {
    if let (Some(s), Some(d)) = (string(&args[0]), string(&args[1])) {
        elements("split", occurrences(s, d) as u128 + 1)?;
    }
    Ok(())
}

fn indexof_n(args: &[Value]) -> BuiltinResult<()> {
    if let (Some(s), Some(d)) = (string(&args[0]), string(&args[1])) {
        elements("indexof_n", occurrences(s, d) as u128)?;
    }
    Ok(())
}

fn cidr_expand(args: &[Value]) -> BuiltinResult<()> {
    let Some(cidr) = string(&args[0]) else {
        return Ok(());
    };
    let Some((addr, prefix)) = cidr.split_once('/') else {
        return Ok(());
    };
    let bits: u32 = if addr.contains(':') { 128 } else { 32 };
    if let Ok(prefix) = prefix.parse::<u32>()
        && prefix <= bits
    {
        let host_bits = bits - prefix;
        let hosts = if host_bits >= 127 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        elements("net.cidr_expand", hosts)?;
    }
    Ok(())
}

/// Matches of a regular expression are at most one per byte of the subject (plus one).
fn regex_subject(args: &[Value]) -> BuiltinResult<()> {
    if let Some(s) = string(&args[1]) {
        elements("regex", s.len() as u128 + 1)?;
    }
    Ok(())
}

fn concat(args: &[Value]) -> BuiltinResult<()> {
    let Some(delim) = string(&args[0]) else {
        return Ok(());
    };
    let (n, total) = match &args[1] {
        Value::Array(a) => (a.len(), a.iter().filter_map(string).map(str::len).sum()),
        Value::Set(s) => (s.len(), s.iter().filter_map(string).map(str::len).sum()),
        _ => (0, 0usize),
    };
    bytes(
        "concat",
        total as u128 + delim.len() as u128 * n.saturating_sub(1) as u128,
    )
}

fn replace(args: &[Value]) -> BuiltinResult<()> {
    if let (Some(s), Some(old), Some(new)) = (string(&args[0]), string(&args[1]), string(&args[2]))
        && new.len() > old.len()
    {
        let grow = (new.len() - old.len()) as u128 * occurrences(s, old) as u128;
        bytes("replace", s.len() as u128 + grow)?;
    }
    Ok(())
}

fn replace_n(args: &[Value]) -> BuiltinResult<()> {
    let (Value::Object(patterns), Some(s)) = (&args[0], string(&args[1])) else {
        return Ok(());
    };
    let mut total = s.len() as u128;
    for (old, new) in patterns.iter() {
        if let (Some(old), Some(new)) = (string(old), string(new)) {
            total += new.len() as u128 * occurrences(s, old) as u128;
        }
    }
    bytes("strings.replace_n", total)
}

/// Pretty-printed JSON repeats the prefix and the indent (once per level) on every line.
fn marshal_with_options(args: &[Value]) -> BuiltinResult<()> {
    let Value::Object(opts) = &args[1] else {
        return Ok(());
    };
    let opt = |k: &str| {
        opts.get(&Value::from(k))
            .and_then(string)
            .map_or(0, str::len) as u128
    };
    let (prefix, indent) = (opt("prefix"), opt("indent").max(1));
    fn walk(v: &Value, depth: u128, per_line: &dyn Fn(u128) -> u128, total: &mut u128) {
        if *total > MAX_STRING_BYTES as u128 {
            return;
        }
        *total += per_line(depth);
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, depth + 1, per_line, total)),
            Value::Set(s) => s.iter().for_each(|x| walk(x, depth + 1, per_line, total)),
            Value::Object(o) => o.iter().for_each(|(k, x)| {
                *total += len_hint(k);
                walk(x, depth + 1, per_line, total)
            }),
            other => *total += len_hint(other),
        }
    }
    let mut total = 0u128;
    walk(
        &args[0],
        0,
        &|depth| prefix + indent * depth + 1,
        &mut total,
    );
    bytes("json.marshal_with_options", total)
}

fn len_hint(v: &Value) -> u128 {
    match v {
        Value::String(s) => s.len() as u128 + 2,
        _ => 8,
    }
}

/// Checks every `%[flags][width][.precision]verb`: numbers in ASCII digits only (regorus
/// reads any Unicode digit and then fails) and no wider than [`MAX_FORMAT_WIDTH`].
fn sprintf(args: &[Value]) -> BuiltinResult<()> {
    let Some(format) = string(&args[0]) else {
        return Ok(());
    };
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut number: u128 = 0;
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() {
                number = number * 10 + u128::from(d as u8 - b'0');
                if number > MAX_FORMAT_WIDTH as u128 {
                    return Err(limit(
                        "sprintf",
                        format!("a field wider than {MAX_FORMAT_WIDTH}"),
                    ));
                }
            } else if d == '.' {
                number = 0;
            } else if d.is_numeric() {
                return Err(BuiltinError::new("sprintf: a non-ASCII digit in a format"));
            } else {
                break;
            }
            chars.next();
        }
        chars.next();
    }
    Ok(())
}

fn lsh(args: &[Value]) -> BuiltinResult<()> {
    if let Some(shift) = int(&args[1])
        && shift > MAX_SHIFT as i128
    {
        return Err(limit(
            "bits.lsh",
            format!("a shift of more than {MAX_SHIFT} bits"),
        ));
    }
    Ok(())
}

thread_local! {
    /// A call expression with three parameters, to hand regorus' builtins the span and
    /// parameter expressions they use for their error messages.
    static CALL: RefCell<Option<(Span, Vec<Ref<Expr>>)>> = const { RefCell::new(None) };
}

fn call_site() -> Option<(Span, Vec<Ref<Expr>>)> {
    let source = Source::from_contents("builtin".into(), "f(a, b, c)".into()).ok()?;
    let mut parser = Parser::new(&source).ok()?;
    let query = parser.parse_user_query().ok()?;
    let stmt = query.stmts.first()?;
    let Literal::Expr { expr, .. } = &stmt.literal else {
        return None;
    };
    match expr.as_ref() {
        Expr::Call { span, params, .. } => Some((span.clone(), params.clone())),
        _ => None,
    }
}

/// Runs guarded builtin `name` after its check; `Err` from regorus' implementation is a plain
/// builtin failure (undefined in OPA's default mode), regorus' own limit errors stay limits.
pub(super) fn run(name: &'static str, check: Check, args: &[Value]) -> BuiltinResult<Value> {
    check(args)?;
    let Some((builtin, nargs)) = BUILTINS.get(name).copied() else {
        return Err(BuiltinError::new(format!("{name}: not a regorus builtin")));
    };
    if args.len() != usize::from(nargs) {
        return Err(BuiltinError::new(format!(
            "{name}: wrong number of arguments"
        )));
    }
    CALL.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| BuiltinError::new("builtin re-entered"))?;
        if slot.is_none() {
            *slot = call_site();
        }
        let Some((span, params)) = slot.as_ref() else {
            return Err(BuiltinError::new("no call site"));
        };
        builtin(span, &params[..args.len()], args, true).map_err(|e| {
            if e.downcast_ref::<regorus::LimitError>().is_some() {
                BuiltinError::limit(format!("{name}: {e}"))
            } else {
                BuiltinError::new(format!("{name}: {e}"))
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: serde_json::Value) -> Value {
        Value::from(json)
    }

    fn is_limit(r: BuiltinResult<Value>) -> bool {
        matches!(r, Err(e) if e.is_limit())
    }

    fn call(name: &'static str, args: &[Value]) -> BuiltinResult<Value> {
        let (_, _, check) = GUARDED.iter().find(|(n, _, _)| *n == name).unwrap();
        run(name, *check, args)
    }

    #[test]
    fn amplifying_calls_are_refused_before_they_allocate() {
        use serde_json::json;
        assert!(is_limit(call(
            "numbers.range",
            &[v(json!(1)), v(json!(4_000_000_000u64))]
        )));
        assert!(is_limit(call(
            "numbers.range_step",
            &[v(json!(0)), v(json!(1e12)), v(json!(2))]
        )));
        assert!(is_limit(call("net.cidr_expand", &[v(json!("::/0"))])));
        assert!(is_limit(call("net.cidr_expand", &[v(json!("10.0.0.0/8"))])));
        let mb = "x".repeat(1 << 20);
        assert!(is_limit(call(
            "replace",
            &[v(json!(mb)), v(json!("")), v(json!(mb))]
        )));
        assert!(is_limit(call(
            "strings.replace_n",
            &[v(json!({"x": mb})), v(json!(mb))]
        )));
        let many = vec!["a"; 100];
        assert!(is_limit(call("concat", &[v(json!(mb)), v(json!(many))])));
        assert!(is_limit(call(
            "sprintf",
            &[v(json!("%999999999d")), v(json!([1]))]
        )));
        assert!(is_limit(call(
            "sprintf",
            &[v(json!("%.99999999999999999999f")), v(json!([1.5]))]
        )));
        assert!(is_limit(call(
            "bits.lsh",
            &[v(json!(1)), v(json!(4_000_000_000u64))]
        )));
        assert!(is_limit(call(
            "json.marshal_with_options",
            &[
                v(json!(vec![[1, 2]; 20])),
                v(json!({"indent": mb, "pretty": true}))
            ]
        )));
        // A Unicode digit in a width made regorus panic: a plain failure now.
        assert!(
            matches!(call("sprintf", &[v(json!("%٣d")), v(json!([1]))]), Err(e) if !e.is_limit())
        );
    }

    #[test]
    fn ordinary_calls_answer_as_regorus_does() {
        use serde_json::json;
        assert_eq!(
            call("numbers.range", &[v(json!(1)), v(json!(3))]).unwrap(),
            v(json!([1, 2, 3]))
        );
        assert_eq!(
            call("concat", &[v(json!("/")), v(json!(["a", "b"]))]).unwrap(),
            v(json!("a/b"))
        );
        assert_eq!(
            call("sprintf", &[v(json!("%05d|%s")), v(json!([42, "x"]))]).unwrap(),
            v(json!("00042|x"))
        );
        assert_eq!(
            call("replace", &[v(json!("a-b")), v(json!("-")), v(json!("+"))]).unwrap(),
            v(json!("a+b"))
        );
        assert_eq!(
            len_of(&call("net.cidr_expand", &[v(json!("10.0.0.0/30"))]).unwrap()),
            4
        );
        // A type error is a plain failure (undefined in OPA's default mode).
        assert!(matches!(call("concat", &[v(json!(1)), v(json!(["a"]))]), Err(e) if !e.is_limit()));
    }
}
